"""The fault suite (``pytest -m faults``): kill -9, restarts, churn, disk faults and hostile
input. Every test here is marked ``faults`` and records the figures it measured with
``fault_figure``; they are printed as one table at the end of the run (the README's
"Reliability" section quotes them)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

_FIGURES: list[tuple[str, str, str]] = []  # (test, figure, value)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/faults/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.faults)


@pytest.fixture
def fault_figure(request: pytest.FixtureRequest) -> Callable[[str, object], None]:
    """Record one measured figure (e.g. ``fault_figure("connections cut", 0)``)."""

    def record(name: str, value: object) -> None:
        text = f"{value:.3g}" if isinstance(value, float) else str(value)
        _FIGURES.append((request.node.name, name, text))

    return record


@pytest.fixture
def fuzz_examples(request: pytest.FixtureRequest) -> Callable[[int], int]:
    """How many hypothesis examples to run: ``--fuzz-examples N`` or the test's CI size."""

    def examples(ci_default: int) -> int:
        given = request.config.getoption("--fuzz-examples")
        return int(given) if given else ci_default

    return examples


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _FIGURES:
        return
    terminalreporter.section("fault suite figures")
    width = max(len(f"{t}: {n}") for t, n, _ in _FIGURES)
    for test, name, value in _FIGURES:
        terminalreporter.write_line(f"{f'{test}: {name}':<{width}}  {value}")


def state_bytes(state_dir: Path) -> bytes:
    """The state database's bytes, its write-ahead log's included: a batch that changed
    nothing wrote neither."""
    return b"".join(
        p.read_bytes() if p.exists() else b"-"
        for p in (state_dir / "state.db", state_dir / "state.db-wal")
    )
