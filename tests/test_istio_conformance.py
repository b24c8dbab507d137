"""Istio's verdict on Istio's own cases: tests/conformance/istio_cases.yaml re-expresses,
case by case, what Istio's validation tests, CRD rules and analyzers decide (each case
names the Istio test and case it comes from). A case Istio rejects must be rejected here,
with a problem on the field Istio's rule is about; one it accepts must be accepted; one
it accepts with a warning must be accepted with a warning. Where this project is stricter
on purpose, the case is in DELIBERATE with the reason (the README lists them too)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from xds_server.config.errors import ConfigError, Problem, errors_of, warnings_of
from xds_server.config.load import load_text
from xds_server.config.validate import validate

CASES = yaml.safe_load((Path(__file__).parent / "conformance" / "istio_cases.yaml").read_text())

# Stricter than Istio where Istio would route somewhere else than written, silently.
DELIBERATE: dict[str, str] = {}


def verdict(case: dict) -> tuple[list[Problem], list[Problem]]:
    """(errors, warnings) this project gives the case's documents."""
    try:
        problems = validate(load_text(case["yaml"], f"{case['id']}.yaml"))[0]
    except ConfigError as e:
        problems = e.problems
    return errors_of(problems), warnings_of(problems)


def _names(field: str | None, problems: list[Problem]) -> bool:
    """Whether a problem is about ``field`` (the field itself, or a part of it)."""
    return field is None or any(
        p.field and (p.field == field or p.field.startswith(field)) for p in problems
    )


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_istio_verdict(case: dict) -> None:
    errors, warnings = verdict(case)
    shown = [str(p) for p in errors + warnings]
    if case["id"] in DELIBERATE:
        assert errors, shown
    elif case["verdict"] == "invalid":
        assert errors and _names(case.get("field"), errors), shown
    elif case["verdict"] == "warning":
        assert not errors and warnings, shown
        if case.get("code"):
            assert any(w.code == case["code"] for w in warnings), shown
    else:
        assert not errors, shown


def test_the_table_is_istios_own_material() -> None:
    """Every case cites the Istio test or rule it re-expresses, and the table is the size
    the README gives."""
    assert len(CASES) == 250 and len({c["id"] for c in CASES}) == len(CASES)
    assert all(c["source"].startswith("istio/") for c in CASES)
    assert set(DELIBERATE) <= {c["id"] for c in CASES}
