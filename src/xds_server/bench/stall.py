"""Scenario 5, stall: how long a big apply keeps the server from answering anyone else.

``xds-server serve --state-dir`` runs in its own process (as a user runs it: every apply
is parsed, validated, written and fsynced, translated and pushed by that process). It holds
one small, unrelated config (``stall-probe``: its own Gateway on its own port, a
ServiceEntry, a DestinationRule, a VirtualService). Then, from this process:

- **xDS probe**: one ADS Delta stream with its own node id (``stall-proxy``) subscribed by
  name to the probe's ClusterLoadAssignment and ACKing it, so the big config is never
  sent to it. Each probe is one DeltaDiscoveryRequest that ACKs the previous response,
  unsubscribes the name the previous probe asked for and subscribes to a new name that
  does not exist; the server must answer it (a response whose ``removed_resources`` says
  the name is not there). Timed from the request written to that response read.
- **admin probe**: ``Get ServiceEntry stall-probe`` on its own admin API connection (one
  small resource, not the config), timed from the call to its answer.

Each probe loop runs in its own thread, one probe after another with a pause of
``PAUSE`` between them (so a stall is seen to within that pause plus a quiet round trip).
A child process (a second admin client, so that building and sending the request shares
no GIL with the probes) applies a config of ``size`` services (``common.config_yaml``: a
Gateway with ``size`` ports; per service a ServiceEntry, a DestinationRule and a
VirtualService; about 10 MiB of YAML at 10k) in one ``Apply`` call, like ``xdsctl apply``.

The window is from the child's call to its answer, plus ``TAIL`` after it (work the server
does once it has answered). A probe counts if its round trip overlaps the window;
``stall_xds_max_ms`` and ``stall_admin_max_ms`` are the longest round trip of each kind,
``stall_max_ms`` the longer of the two: the longest the server left a proxy's request
(with its ACK) or an admin read unanswered during the apply. ``stall_apply_ms`` is the
apply's own round trip as the child timed it, ``stall_*_probes`` how many probes counted,
and ``stall_idle_max_ms`` the longest round trip of either probe on the quiet server just
before (the floor the figure cannot go below on this machine).
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from ..admin.client import AdminClient
from ..translate import ENDPOINT
from .common import HOST, BenchServer, config_yaml

PAUSE = 0.001  # between two probes of one kind, seconds
TAIL = 0.5  # after the apply answered, seconds still watched (the watcher, GC)
IDLE = 0.5  # probes on the quiet server before the apply, seconds
NODE_ID = "stall-proxy"
PROBE = "stall-probe"
PROBE_PORT = 19999  # the probe's gateway port; the bench config's start at 20000
PROBE_EDS = f"route|default/{PROBE}|tcp[0]"  # what translate names its one route's cluster

PROBE_YAML = f"""\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: {PROBE}}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {PROBE_PORT}, name: tcp-probe, protocol: TCP}}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {PROBE}}}
spec:
  hosts: [{PROBE}.default.svc.cluster.local]
  ports: [{{number: 9000, name: tcp, protocol: TCP}}]
  resolution: STATIC
  endpoints:
  - {{address: 127.0.0.1, ports: {{tcp: 9100}}, labels: {{version: v1}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {PROBE}}}
spec:
  host: {PROBE}
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {PROBE}}}
spec:
  hosts: ["*"]
  gateways: [{PROBE}]
  tcp:
  - match: [{{port: {PROBE_PORT}}}]
    route:
    - {{destination: {{host: {PROBE}, port: {{number: 9000}}, subset: v1}}}}
"""


@dataclass
class Probes:
    """One probe loop's round trips, each as (sent, answered) on the monotonic clock."""

    name: str
    samples: list[tuple[float, float]] = field(default_factory=list)
    error: BaseException | None = None

    def during(self, start: float, end: float) -> list[float]:
        """Round trips (seconds) of the probes that overlap [start, end]."""
        return [b - a for a, b in self.samples if b >= start and a <= end]


def _loop(probes: Probes, once: Callable[[], None], stop: threading.Event) -> None:
    try:
        while not stop.is_set():
            sent = time.monotonic()
            once()
            probes.samples.append((sent, time.monotonic()))
            time.sleep(PAUSE)
    except BaseException as e:  # reported by run(): a dead probe must not read as no stall
        probes.error = e


class DeltaProbe:
    """A Delta ADS stream subscribed to the probe's endpoints, each probe one request."""

    def __init__(self, port: int) -> None:
        self.channel = grpc.insecure_channel(f"{HOST}:{port}")
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel)
        self.requests: queue.Queue[discovery_pb2.DeltaDiscoveryRequest | None] = queue.Queue()
        self.responses: Iterator[discovery_pb2.DeltaDiscoveryResponse] = (
            stub.DeltaAggregatedResources(iter(self.requests.get, None))
        )
        self.count = 0
        self.asked = ""  # the name the previous probe subscribed to
        self.requests.put(
            discovery_pb2.DeltaDiscoveryRequest(
                node=base_pb2.Node(id=NODE_ID, cluster="bench"),
                type_url=ENDPOINT,
                resource_names_subscribe=[PROBE_EDS],
            )
        )
        first = next(self.responses)
        if [r.name for r in first.resources] != [PROBE_EDS]:
            raise RuntimeError(f"the probe proxy was sent {first} instead of {PROBE_EDS}")
        self.nonce = first.nonce

    def once(self) -> None:
        self.count += 1
        name = f"stall-missing-{self.count}"
        self.requests.put(
            discovery_pb2.DeltaDiscoveryRequest(
                type_url=ENDPOINT,
                response_nonce=self.nonce,  # ACKs the previous response
                resource_names_subscribe=[name],
                resource_names_unsubscribe=[self.asked] if self.asked else [],
            )
        )
        response = next(self.responses)
        if list(response.removed_resources) != [name] or response.resources:
            raise RuntimeError(f"probe {name}: unexpected answer {response}")
        self.nonce, self.asked = response.nonce, name

    def close(self) -> None:
        self.requests.put(None)
        self.channel.close()


def _apply_child(target: str, size: int) -> None:
    """The second admin client (``python -m xds_server.bench.stall apply TARGET SIZE``):
    prints ``ready`` once the YAML is built and its channel is connected, applies when a
    line arrives on stdin, prints {start, end, changes} on the monotonic clock."""
    text = config_yaml(size)
    with AdminClient(target, timeout=600) as admin:
        admin.get("Gateway", PROBE)  # connected before the timed call
        print("ready", flush=True)
        sys.stdin.readline()
        start = time.monotonic()
        response = admin.apply([("<bench>", text)])
        end = time.monotonic()
    print(json.dumps({"start": start, "end": end, "changes": len(response.changes)}), flush=True)


def _apply_in_child(target: str, size: int) -> dict[str, float]:
    child = subprocess.Popen(
        [sys.executable, "-m", "xds_server.bench.stall", "apply", target, str(size)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        if child.stdout.readline().strip() != "ready":
            raise RuntimeError("the applying client did not start")
        return _finish(child)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()


def _finish(child: subprocess.Popen[str]) -> dict[str, float]:
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write("go\n")
    child.stdin.flush()
    line = child.stdout.readline()
    if child.wait(60) != 0 or not line:
        raise RuntimeError(f"the apply failed (exit code {child.returncode})")
    result: dict[str, float] = json.loads(line)
    if not result["changes"]:
        raise RuntimeError("the apply changed nothing")
    return result


def run(size: int, say: Callable[[str], None] = print) -> dict[str, float | int]:
    with BenchServer() as server:
        server.admin.apply([("<probe>", PROBE_YAML)])
        proxy = DeltaProbe(server.xds_port)
        admin = AdminClient(f"{HOST}:{server.admin_port}", timeout=600)
        admin.get("ServiceEntry", PROBE)
        xds, adm = Probes("xDS"), Probes("admin")
        stop = threading.Event()
        threads = [
            threading.Thread(target=_loop, args=(xds, proxy.once, stop), daemon=True),
            threading.Thread(
                target=_loop,
                args=(adm, lambda: admin.get("ServiceEntry", PROBE), stop),
                daemon=True,
            ),
        ]
        try:
            idle_from = time.monotonic()
            for t in threads:
                t.start()
            time.sleep(IDLE)
            idle_to = time.monotonic()
            applied = _apply_in_child(f"{HOST}:{server.admin_port}", size)
            time.sleep(max(0.0, applied["end"] + TAIL - time.monotonic()))
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=60)
            proxy.close()
            admin.close()
    for p in (xds, adm):
        if p.error is not None:
            raise RuntimeError(f"the {p.name} probe failed") from p.error
    window = (applied["start"], applied["end"] + TAIL)
    rtt = {p.name: p.during(*window) for p in (xds, adm)}
    if not all(rtt.values()):
        raise RuntimeError(f"no probe ran during the apply: {rtt}")
    idle = [d for p in (xds, adm) for d in p.during(idle_from, idle_to)]
    out: dict[str, float | int] = {
        "stall_xds_max_ms": max(rtt["xDS"]) * 1000,
        "stall_admin_max_ms": max(rtt["admin"]) * 1000,
        "stall_apply_ms": (applied["end"] - applied["start"]) * 1000,
        "stall_xds_probes": len(rtt["xDS"]),
        "stall_admin_probes": len(rtt["admin"]),
        "stall_idle_max_ms": max(idle) * 1000,
        "stall_services": size,
    }
    out["stall_max_ms"] = max(out["stall_xds_max_ms"], out["stall_admin_max_ms"])
    say(
        f"stall S={size}: longest unanswered {out['stall_max_ms']:.0f} ms (xDS "
        f"{out['stall_xds_max_ms']:.0f}, admin {out['stall_admin_max_ms']:.0f}) during an "
        f"apply of {out['stall_apply_ms']:.0f} ms; idle {out['stall_idle_max_ms']:.1f} ms"
    )
    return out


if __name__ == "__main__":
    if sys.argv[1:2] != ["apply"] or len(sys.argv) != 4:
        raise SystemExit("usage: python -m xds_server.bench.stall apply TARGET SIZE")
    _apply_child(sys.argv[2], int(sys.argv[3]))
