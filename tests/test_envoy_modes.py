"""A real Envoy in every xDS mode we serve: the seed scenario, a NACKed change, two Envoys
with different roles. (ADS state of the world is also covered by test_lab_envoy.py.)"""

from __future__ import annotations

import json
import socket

import grpc
import pytest
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc

from xds_server.controlplane import ControlPlane
from xds_server.lab import traffic
from xds_server.lab.envoy import EnvoyProcess
from xds_server.lab.lab import SAMPLES, Lab
from xds_server.ports import free_port
from xds_server.translate import CLUSTER, ENDPOINT, LISTENER
from xds_server.xds.status import NACKED, SYNCED

ALL_V1 = SAMPLES / "tcp-echo-all-v1.yaml"
V2_20 = SAMPLES / "tcp-echo-20-v2.yaml"

MODES = {
    "ads-delta": ({"api_type": "DELTA_GRPC"}, {"ADS Delta"}),
    "per-type-sotw": ({"ads": False}, {"CDS SotW", "EDS SotW", "LDS SotW"}),
    "per-type-delta": (
        {"api_type": "DELTA_GRPC", "ads": False},
        {"CDS Delta", "EDS Delta", "LDS Delta"},
    ),
}

# A second gateway port on the ingress, routed to v2: the test binds it first.
BUSY = """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: {name}-gateway}}
spec:
  selector: {{istio: {role}}}
  servers: [{{port: {{number: {port}, name: tcp, protocol: TCP}}, hosts: ["*"]}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}}}
spec:
  hosts: ["*"]
  gateways: [{name}-gateway]
  tcp:
  - match: [{{port: {port}}}]
    route: [{{destination: {{host: tcp-echo, port: {{number: 9000}}, subset: v2}}}}]
"""


def start_lab(**kwargs) -> Lab:
    return Lab(ingress_port=0, xds_port=0, admin_port=0, **kwargs)


def board_wait(lab: Lab, predicate, timeout: float = 10) -> None:
    """Wait on the control plane's status board; ``predicate(proxies)`` runs on its loop."""
    cp = lab.cp
    cp._run(cp.cp.board.wait_for(lambda: predicate(cp.cp.proxies()), timeout))


def assert_80_20(lab: Lab, n: int = 100) -> None:
    """The locality split: Envoy's weighted locality scheduler sends 4 of every 5
    connections to v1. It starts at a random pick (seen with Envoy 1.40) and floating
    point breaks the 4:1 ties either way, so 100 connections hold 20 +- 1 for v2
    (measured); a random 20% split would vary by +-16 (4 sigma)."""
    counts = traffic.split(lab.send(n))
    assert set(counts) == {"one", "two"} and sum(counts.values()) == n, counts
    assert abs(counts["two"] - n // 5) <= 1, counts


@pytest.mark.parametrize("mode", sorted(MODES))
def test_seed_scenario(mode):
    kwargs, apis = MODES[mode]
    with start_lab(**kwargs) as lab:
        lab.apply([ALL_V1])
        assert {p.api for p in lab.cp.proxies()} == apis
        assert traffic.split(lab.send(20)) == {"one": 20}
        lab.apply([V2_20])
        assert_80_20(lab)


def test_delta_envoy_reconnects_with_what_it_has_and_gets_only_the_change():
    """The control plane restarts (same port) with new weights. Envoy reconnects with
    initial_resource_versions; versions are content hashes, so only the changed endpoints
    are sent, and the listener and cluster are not sent again."""
    with start_lab(api_type="DELTA_GRPC") as lab:
        lab.apply([ALL_V1])
        old = lab.cp
        config = old.cp.store.resources()
        old.stop()
        lab.cp = ControlPlane.start_in_thread(xds_port=old.port, options=old.cp.options)
        lab.cp.replace(config)
        lab.apply([V2_20], wait=False)  # changed while Envoy was away
        lab.cp.wait_synced()
        (p,) = lab.cp.proxies()
        sent = {t: (st.pushes, st.last_resources) for t, st in p.types.items()}
        assert sent == {CLUSTER: (1, 0), LISTENER: (1, 0), ENDPOINT: (1, 1)}
        assert_80_20(lab)


@pytest.mark.parametrize("api_type", ["GRPC", "DELTA_GRPC"], ids=["sotw", "delta"])
def test_nacked_listener_is_parked_traffic_flows_and_the_next_change_applies(api_type):
    with start_lab(api_type=api_type) as lab, socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        lab.apply([ALL_V1])
        (p,) = lab.cp.proxies()
        lds_pushes = p.types[LISTENER].pushes

        # Envoy cannot bind the new listener's port and rejects LDS.
        lab.apply_yaml(BUSY.format(name="bad", role="ingressgateway", port=port), wait=False)
        board_wait(lab, lambda ps: ps[0].state(LISTENER) == NACKED)
        (p,) = lab.cp.proxies()  # a status is a snapshot: read it again
        nack = p.types[LISTENER].nack
        assert "cannot bind" in nack and f":{port}" in nack, nack
        assert p.state(CLUSTER) == p.state(ENDPOINT) == SYNCED
        with grpc.insecure_channel(f"127.0.0.1:{lab.cp.port}") as channel:
            stub = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(channel)
            (config,) = stub.FetchClientStatus(csds_pb2.ClientStatusRequest(), timeout=5).config
        errors = {
            g.error_state.details for g in config.generic_xds_configs if g.type_url == LISTENER
        }
        assert errors == {nack}
        # Envoy keeps its last good listener: traffic flows.
        assert traffic.split(lab.send(10)) == {"one": 10}

        # Parked: a later, different change (EDS only) is pushed and ACKed, and the rejected
        # listeners were not sent again before or since.
        lab.apply([V2_20], wait=False)
        board_wait(lab, lambda ps: ps[0].state(ENDPOINT) == SYNCED)  # new weights ACKed
        (p,) = lab.cp.proxies()
        assert p.types[LISTENER].pushes == lds_pushes + 1
        assert p.state(LISTENER) == NACKED
        assert_80_20(lab)

        # The next valid change is applied, and the unused cluster goes after the listener.
        lab.cp.delete("VirtualService", "bad")
        lab.cp.delete("Gateway", "bad-gateway")
        lab.cp.wait_synced()
        (p,) = lab.cp.proxies()
        assert p.state(LISTENER) == SYNCED and p.types[LISTENER].nack is None
        clusters = json.loads(lab.envoy.admin_get("/clusters?format=json"))["cluster_statuses"]
        assert "route|default/bad|tcp[0]" not in {c["name"] for c in clusters}
        counts = traffic.split(lab.send(50))
        assert set(counts) == {"one", "two"} and sum(counts.values()) == 50


def test_two_envoys_with_different_roles_get_different_listeners():
    """The ingress Envoy carries istio=ingressgateway, the egress one istio=egressgateway;
    each gets only the listeners of the Gateways that select it."""
    with start_lab() as lab:
        lab.apply([ALL_V1])
        egress_port = free_port("127.0.0.1")
        lab.apply_yaml(BUSY.format(name="egress", role="egressgateway", port=egress_port))
        with EnvoyProcess(
            lab.cp.port,
            node_id="egressgateway",
            node_cluster="egressgateway",
            labels={"istio": "egressgateway"},
        ) as egress:
            egress.wait_live()
            lab.cp.wait_synced(min_proxies=2)
            assert set(lab.envoy.listener_ports()) == {"0.0.0.0_31400"}
            assert set(egress.listener_ports()) == {f"0.0.0.0_{egress_port}"}
            assert traffic.split(lab.send(10)) == {"one": 10}
            replies = traffic.send_many("127.0.0.1", egress_port, 10)
            assert traffic.split(replies) == {"two": 10}
