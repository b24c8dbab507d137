"""The ADS server spoken to in raw gRPC, one rule of the protocol per test.

Where a test must show that something is *not* sent, it triggers a later, different push
and checks that this one comes next: the stream handles events in order, so a resend would
have come first. No test waits on the clock for an absence.
"""

from __future__ import annotations

import pytest
from xds_client import XdsClient as Client
from xds_client import names

from xds_server.config.load import load_paths, load_text
from xds_server.controlplane import ControlPlane
from xds_server.lab.lab import SAMPLES
from xds_server.translate import CLUSTER, ENDPOINT, LISTENER
from xds_server.xds.status import NACKED

SERVICES = SAMPLES / "tcp-echo-services.yaml"
ALL_V1 = SAMPLES / "tcp-echo-all-v1.yaml"
V2_20 = SAMPLES / "tcp-echo-20-v2.yaml"
ROUTE_CLUSTER = "route|default/tcp-echo|tcp[0]"


@pytest.fixture
def client(cp):
    c = Client(cp.port)
    yield c
    c.close()


def envoy_start(client: Client) -> None:
    """Envoy's own opening: CDS, EDS by name, CDS ACK, LDS, EDS ACK, LDS ACK."""
    cds = (client.request(CLUSTER), client.recv())[1]
    client.request(ENDPOINT, [ROUTE_CLUSTER])
    eds = client.recv()
    client.ack(cds)
    client.request(LISTENER)
    lds = client.recv()
    client.ack(eds, [ROUTE_CLUSTER])
    client.ack(lds)
    assert (cds.type_url, eds.type_url, lds.type_url) == (CLUSTER, ENDPOINT, LISTENER)


def wait_state(cp, type_url: str, predicate, node="test-proxy") -> None:
    """Poll the status board (the server's own readiness signal) until ``predicate``."""

    def check():
        return any(
            p.node_id == node and type_url in p.types and predicate(p.types[type_url])
            for p in cp.cp.proxies()
        )

    cp._run(cp.cp.board.wait_for(check, 5))


def test_envoy_opening_sequence_gets_every_type(cp, client):
    envoy_start(client)
    assert names(client.last[CLUSTER]) == [ROUTE_CLUSTER]
    assert names(client.last[ENDPOINT]) == [ROUTE_CLUSTER]
    assert names(client.last[LISTENER]) == ["0.0.0.0_31400"]
    cp.wait_synced(node_id="test-proxy")


def test_eds_sends_only_requested_names(cp, client):
    client.request(CLUSTER)
    client.recv()
    client.request(ENDPOINT, ["no-such-cluster"])
    assert names(client.recv()) == []


def test_weight_change_is_an_eds_only_push(cp, client):
    envoy_start(client)
    cp.apply(load_paths([V2_20]))
    push = client.recv()
    assert push.type_url == ENDPOINT
    client.ack(push, [ROUTE_CLUSTER])
    cp.wait_synced(node_id="test-proxy")


def test_listener_waits_for_cluster_and_endpoints_ack():
    """Make before break: a new route cluster is sent, then its endpoints, and only after
    both are ACKed the listener that points at it."""
    with ControlPlane.start_in_thread() as cp:
        cp.apply(load_paths([SERVICES]))  # no route yet: no cluster, no listener
        client = Client(cp.port)
        try:
            client.request(CLUSTER)
            client.ack(client.recv())
            client.request(LISTENER)
            client.ack(client.recv())
            cp.wait_synced(node_id="test-proxy")
            empty_lds = client.last[LISTENER].version_info

            cp.apply(load_paths([ALL_V1]))
            cds = client.recv()
            assert cds.type_url == CLUSTER and names(cds) == [ROUTE_CLUSTER]
            client.request(ENDPOINT, [ROUTE_CLUSTER])  # as Envoy does for a new EDS cluster
            eds = client.recv()
            assert eds.type_url == ENDPOINT and names(eds) == [ROUTE_CLUSTER]
            client.ack(cds)
            wait_state(cp, CLUSTER, lambda st: st.acked_version == cds.version_info)
            # CDS is ACKed, EDS is not: the listener is still held back.
            (proxy,) = cp.proxies()
            assert proxy.types[LISTENER].sent_version == empty_lds
            client.ack(eds, [ROUTE_CLUSTER])
            lds = client.recv()
            assert lds.type_url == LISTENER and names(lds) == ["0.0.0.0_31400"]
        finally:
            client.close()


def test_nack_is_recorded_and_not_resent(cp, client):
    envoy_start(client)
    cp.apply(load_paths([V2_20]))
    push = client.recv()
    client.request(ENDPOINT, [ROUTE_CLUSTER], push.nonce, "old", error="bad endpoints")
    wait_state(cp, ENDPOINT, lambda st: st.nack == "bad endpoints")
    (p,) = [p for p in cp.proxies() if p.node_id == "test-proxy"]
    assert p.types[ENDPOINT].state(push.version_info) == NACKED
    # The next real change is pushed; no resend of the rejected version came before it.
    cp.apply(load_text(V2_20.read_text().replace("80", "70")))
    nxt = client.recv()
    assert nxt.type_url == ENDPOINT and nxt.version_info != push.version_info
    client.ack(nxt, [ROUTE_CLUSTER])
    cp.wait_synced(node_id="test-proxy")


def test_stale_nonce_is_ignored(cp, client):
    envoy_start(client)
    cp.apply(load_paths([V2_20]))
    push = client.recv()
    # A request with an older nonce (gRPC's xDS client sends such) is ignored whole: had its
    # new name list been taken, an EDS response for it would come before the push below.
    client.request(ENDPOINT, [ROUTE_CLUSTER, "other"], "1", "whatever")
    client.ack(push, [ROUTE_CLUSTER])
    wait_state(cp, ENDPOINT, lambda st: st.acked_version == push.version_info)
    cp.apply(load_text(V2_20.read_text().replace("80", "70")))
    nxt = client.recv()
    assert nxt.type_url == ENDPOINT and nxt.version_info != push.version_info
    assert names(nxt) == [ROUTE_CLUSTER]


def test_reconnect_with_current_version_is_not_resent(cp, client):
    envoy_start(client)
    versions = {t: client.last[t].version_info for t in (CLUSTER, ENDPOINT, LISTENER)}
    client.close()
    again = Client(cp.port, node_id="test-proxy")
    try:
        again.request(CLUSTER, version=versions[CLUSTER])
        again.request(ENDPOINT, [ROUTE_CLUSTER], version=versions[ENDPOINT])
        again.request(LISTENER, version=versions[LISTENER])
        cp.apply(load_paths([V2_20]))  # the only thing that may come now is this EDS push
        push = again.recv()
        assert push.type_url == ENDPOINT and push.version_info != versions[ENDPOINT]
    finally:
        again.close()
