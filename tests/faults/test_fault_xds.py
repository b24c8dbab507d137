"""xDS faults on real Envoys and raw streams: a cluster update (CDS) must not wait for
Envoy's initial_fetch_timeout, a removal must end SYNCED, two streams with one node id
must both be visible, and huge NACK texts must not take status down."""

from __future__ import annotations

import json
import time

import pytest

from xds_server.lab import traffic
from xds_server.lab.lab import SAMPLES, Lab
from xds_server.waiting import wait_until
from xds_server.xds.metrics import LATENCY_BUCKETS
from xds_server.xds.status import SYNCED

ALL_V1 = SAMPLES / "tcp-echo-all-v1.yaml"

MODES = {
    "ads-sotw": {},
    "ads-delta": {"api_type": "DELTA_GRPC"},
    "per-type-sotw": {"ads": False},
    "per-type-delta": {"api_type": "DELTA_GRPC", "ads": False},
}

# The sample's DestinationRule with a connect timeout: every cluster of the route changes
# (CDS), its endpoints do not (EDS).
DR_TIMEOUT = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: tcp-echo-destination}}
spec:
  host: tcp-echo
  trafficPolicy: {{connectionPool: {{tcp: {{connectTimeout: {timeout}}}}}}}
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
"""

# Well under Envoy's initial_fetch_timeout (15 s), which is what a cluster update took when
# its unchanged endpoints were not sent again.
DEADLINE = 3.0


def envoy_clusters(lab: Lab) -> tuple[dict[str, str], list[str]]:
    """Envoy's dynamic clusters (name -> connect_timeout) and the names still warming."""
    assert lab.envoy is not None
    dump = json.loads(lab.envoy.admin_get("/config_dump?resource=dynamic_active_clusters"))
    active = {
        c["cluster"]["name"]: c["cluster"].get("connect_timeout", "")
        for c in dump.get("configs", [])
    }
    dump = json.loads(lab.envoy.admin_get("/config_dump?resource=dynamic_warming_clusters"))
    warming = [c["cluster"]["name"] for c in dump.get("configs", [])]
    return active, warming


def wait_cluster_timeout(lab: Lab, timeout: str, deadline: float) -> float:
    """Seconds until every dynamic cluster in Envoy has ``timeout`` and none is warming."""
    start = time.monotonic()
    wait_until(
        lambda: envoy_clusters(lab),
        deadline,
        check=lambda c: c[0] and not c[1] and set(c[0].values()) == {timeout},
        interval=0.005,
        what=f"every cluster at connect_timeout {timeout}, none warming (active, warming)",
    )
    return time.monotonic() - start


@pytest.mark.parametrize("split", ["locality", "istio"])
@pytest.mark.parametrize("mode", sorted(MODES))
def test_cluster_update_is_synced_without_waiting_for_the_fetch_timeout(mode, split, fault_figure):
    """A DestinationRule change updates the route's EDS clusters (CDS) and leaves their
    endpoints as they are. Envoy warms each updated cluster until it gets its
    ClusterLoadAssignment, so the server must send it again (go-control-plane #245)."""
    with Lab(ingress_port=0, xds_port=0, admin_port=0, split=split, **MODES[mode]) as lab:
        lab.apply([ALL_V1])
        assert lab.cp is not None
        took = synced = 0.0
        for timeout in ("3s", "4s"):  # twice: the second update is no special case
            start = time.monotonic()
            lab.apply_yaml(DR_TIMEOUT.format(timeout=timeout), wait=False)
            took = max(took, wait_cluster_timeout(lab, timeout, DEADLINE))
            lab.cp.wait_synced(timeout=DEADLINE - (time.monotonic() - start))
            synced = max(synced, time.monotonic() - start)
            assert all_synced(lab)
        fault_figure("DR change -> Envoy cluster active, max of 2 (s)", took)
        fault_figure("DR change -> synced, max of 2 (s)", synced)
        assert traffic.split(lab.send(10)) == {"one": 10}


def all_synced(lab: Lab) -> bool:
    assert lab.cp is not None
    return all(p.state(t) == SYNCED for p in lab.cp.proxies() for t in p.types)


def slowest_ack(lab: Lab, kind: str) -> float:
    """The upper bound of the slowest push -> ACK the server measured for ``kind``."""
    assert lab.cp is not None
    registry = lab.cp.cp.metrics.registry
    total = registry.get_sample_value("xds_push_ack_seconds_count", {"type": kind}) or 0
    for bound in LATENCY_BUCKETS:
        got = registry.get_sample_value(
            "xds_push_ack_seconds_bucket", {"type": kind, "le": str(float(bound))}
        )
        if got == total:
            return bound
    return float("inf")


@pytest.mark.parametrize("mode", sorted(MODES))
def test_deleting_a_route_ends_synced_and_the_next_change_acks_at_once(mode, fault_figure):
    """Deleting the only route takes the last EDS cluster away: Envoy's SotW EDS request then
    names nothing and Envoy answers no response to it, so none may be sent (it stayed
    unanswered: EDS STALE until the next change, whose ACK then timed it at 17.6 s)."""
    with Lab(ingress_port=0, xds_port=0, admin_port=0, **MODES[mode]) as lab:
        assert lab.cp is not None
        lab.apply([ALL_V1])
        start = time.monotonic()
        lab.cp.delete("VirtualService", "tcp-echo")
        lab.cp.wait_synced(timeout=DEADLINE)
        fault_figure("route deleted -> synced (s)", time.monotonic() - start)
        assert all_synced(lab)
        assert lab.envoy is not None and not lab.envoy.listener_ports()
        lab.apply([ALL_V1], wait=False)
        lab.cp.wait_synced(timeout=DEADLINE)
        assert traffic.split(lab.send(10)) == {"one": 10}
        assert slowest_ack(lab, "EDS") <= 0.25


def test_a_second_stream_with_the_envoys_node_id_hides_nothing(fault_figure):
    """A client borrows the real Envoy's node id (it asks for listeners and never ACKs):
    both are rows of their own, told apart, and waiting for the Envoy still works."""
    from xds_client import XdsClient

    from xds_server.translate import LISTENER
    from xds_server.xds.status import format_proxy_status, proxy_rows

    with Lab(ingress_port=0, xds_port=0, admin_port=0) as lab:
        assert lab.cp is not None
        lab.apply([ALL_V1])
        (envoy,) = lab.cp.proxies()
        with XdsClient(lab.cp.port, envoy.node_id) as borrower:
            borrower.request(LISTENER)
            borrower.recv()
            start = time.monotonic()
            lab.apply_yaml(DR_TIMEOUT.format(timeout="3s"), wait=False)
            lab.cp.wait_synced(timeout=DEADLINE, node_id=envoy.node_id)
            fault_figure("change -> the Envoy synced, id borrowed (s)", time.monotonic() - start)
            rows = proxy_rows(lab.cp.proxies())
            assert [r.name for r in rows] == [envoy.node_id] * 2
            assert rows[0].connection == envoy.stream_id and rows[0].version.startswith("envoy")
            table = format_proxy_status(lab.cp.proxies())
            assert f"{envoy.node_id}#{envoy.stream_id}: connection {envoy.stream_id} from " in table
        assert traffic.split(lab.send(10)) == {"one": 10}
