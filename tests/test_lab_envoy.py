"""The seed scenario on real processes: tcp-echo v1/v2, the control plane, a real Envoy."""

from __future__ import annotations

import json

import pytest
from conftest import locality_split_ok

from xds_server.lab import traffic
from xds_server.lab.demo import binomial_bounds
from xds_server.lab.lab import SAMPLES, Lab

ALL_V1 = SAMPLES / "tcp-echo-all-v1.yaml"
V2_20 = SAMPLES / "tcp-echo-20-v2.yaml"

VS_WEIGHTS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: tcp-echo}}
spec:
  hosts: ["*"]
  gateways: [tcp-echo-gateway]
  tcp:
  - match: [{{port: 31400}}]
    route:
    - destination: {{host: tcp-echo, port: {{number: 9000}}, subset: v1}}
      weight: {v1}
    - destination: {{host: tcp-echo, port: {{number: 9000}}, subset: v2}}
      weight: {v2}
"""


def start_lab(**kwargs) -> Lab:
    return Lab(ingress_port=0, xds_port=0, admin_port=0, **kwargs)


@pytest.fixture
def lab():
    with start_lab() as lab:
        yield lab


def stat(lab: Lab, name: str) -> int:
    stats = json.loads(lab.envoy.admin_get(f"/stats?format=json&filter=^{name}$"))["stats"]
    return int(stats[0]["value"]) if stats else 0


def test_all_v1_every_connection_answered_by_v1(lab):
    lab.apply([ALL_V1])
    replies = lab.send(20)
    assert len(replies) == 20
    assert {traffic.version_of(r) for r in replies} == {"one"}
    assert all(r.startswith("one ") and len(r) > 4 for r in replies)  # the date came back


def test_80_20_split_is_exact_to_one_connection_in_locality_mode(lab):
    lab.apply([ALL_V1])
    lab.apply([V2_20])
    counts = traffic.split(lab.send(100))
    assert locality_split_ok(counts), counts


def test_0_100_sends_everything_to_v2(lab):
    lab.apply([ALL_V1])
    lab.apply_yaml(VS_WEIGHTS.format(v1=0, v2=100))
    assert traffic.split(lab.send(20)) == {"two": 20}


def test_istio_shape_splits_within_binomial_bound():
    with start_lab(split="istio") as lab:
        lab.apply([ALL_V1])
        lab.apply([V2_20])
        n = 200
        counts = traffic.split(lab.send(n))
        low, high = binomial_bounds(n, 0.2)
        assert set(counts) == {"one", "two"}
        assert low <= counts["two"] <= high, counts
        # Istio's shape: the weights live on the listener, not in EDS.
        dump = lab.envoy.admin_get("/config_dump?resource=dynamic_listeners")
        assert '"weighted_clusters"' in dump


DRAIN_S = 1


@pytest.mark.parametrize(
    ("split", "survives"),
    [("locality", True), ("istio", False)],
    ids=["locality-keeps-connection", "istio-shape-drains-it"],
)
def test_open_connection_across_weight_change(split, survives):
    """A connection opened on the all-v1 config is held across the 80/20 change and past
    Envoy's drain time. The locality mode must keep it; Istio's shape closes it (the known
    Istio behaviour, which shows this test can tell the difference)."""
    with start_lab(split=split, drain_time_s=DRAIN_S) as lab:
        lab.apply([ALL_V1])
        with traffic.HeldConnection("127.0.0.1", lab.ingress_port) as conn:
            assert conn.echo("before") == "one before"
            lab.apply([V2_20])
            # Not a readiness wait: the condition under test is "still open after the drain
            # time", so the clock has to pass it.
            closed = conn.wait_closed(DRAIN_S + 1.5)
            if survives:
                assert not closed
                assert conn.echo("after") == "one after"
                assert stat(lab, "listener_manager.listener_in_place_updated") == 0
            else:
                assert closed
        # And the new split is live for new connections.
        assert "two" in traffic.split(lab.send(20))
