"""Where the test lab's Envoy and echo servers run, and whether containers can run here.

Stdlib only at import time: the pytest plugin imports this in every pytest session of every
project that has xds-server installed, so docker and testcontainers are imported on use.
"""

from __future__ import annotations

import os

__all__ = [
    "CI_ENV",
    "DOCKER",
    "PROCESS",
    "RUNTIMES",
    "RUNTIME_ENV",
    "docker_unavailable_reason",
    "in_ci",
    "require_docker",
]

PROCESS = "process"
DOCKER = "docker"
RUNTIMES = (PROCESS, DOCKER)
RUNTIME_ENV = "XDS_ENVOY_RUNTIME"
"""Environment variable choosing the runtime when ``--envoy-runtime`` is not given."""
CI_ENV = "CI"


def in_ci() -> bool:
    """CI sets CI=true: there a container test that cannot run is a failure, not a skip."""
    return os.environ.get(CI_ENV, "").strip().lower() in ("1", "true", "yes")


def docker_unavailable_reason() -> str | None:
    """None when testcontainers is installed and a Docker engine answers; otherwise one line
    saying what is missing, fit for a skip message."""
    try:
        import docker  # noqa: F401 - testcontainers' dependency
        import testcontainers  # noqa: F401
    except ImportError:
        return "testcontainers is not installed (pip install 'xds-server[docker]')"
    import docker

    where = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    if where.startswith("unix://") and not os.path.exists(where.removeprefix("unix://")):
        return f"no Docker engine: {where} does not exist (start dockerd, or set DOCKER_HOST)"
    try:
        client = docker.from_env(timeout=5)
    except docker.errors.DockerException as exc:
        return f"no Docker engine reachable at {where}: {_first_line(exc)}"
    try:
        client.ping()
    except Exception as exc:  # requests' and docker's errors alike: all mean "not here"
        return f"no Docker engine reachable at {where}: {_first_line(exc)}"
    finally:
        client.close()
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def require_docker() -> None:
    """Skip the calling test when containers cannot run here, with one line saying why; in
    CI (CI=true) fail instead, so that container tests can never be skipped silently there."""
    import pytest

    reason = docker_unavailable_reason()
    if reason is None:
        return
    if in_ci():
        pytest.fail(f"{CI_ENV}=true but {reason}", pytrace=False)
    pytest.skip(reason)
