"""State-of-the-world rules in raw gRPC, over ADS and the per-type services.

Where a test must show that something is *not* sent, it triggers a later, different push
and checks that this one comes next: the stream handles events in order, so a wrong
response would have come first. No test waits on the clock for an absence.
"""

from __future__ import annotations

import grpc
import pytest
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.listener.v3 import lds_pb2_grpc
from xds_client import XdsClient, names, unpack

from xds_server.config.load import load_paths, load_text
from xds_server.lab.lab import SAMPLES
from xds_server.translate import CLUSTER, ENDPOINT, LISTENER
from xds_server.xds.status import NACKED, STALE, SYNCED

SERVICES = SAMPLES / "tcp-echo-services.yaml"
ALL_V1 = SAMPLES / "tcp-echo-all-v1.yaml"
V2_20 = SAMPLES / "tcp-echo-20-v2.yaml"
ROUTE = "route|default/tcp-echo|tcp[0]"
RENAMED = "route|default/tcp-echo-renamed|tcp[0]"
SECOND = "route|default/second|tcp[0]"
LISTENER_NAME = "0.0.0.0_31400"
BOTH = sorted([ROUTE, RENAMED])

# The sample's DestinationRule with a connect timeout: the route's cluster changes (CDS),
# its endpoints do not.
DR_TIMEOUT = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: tcp-echo-destination}
spec:
  host: tcp-echo
  trafficPolicy: {connectionPool: {tcp: {connectTimeout: 3s}}}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"""

SECOND_ROUTE = """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: second-gateway}}
spec:
  selector: {{istio: ingressgateway}}
  servers: [{{port: {{number: 31401, name: tcp, protocol: TCP}}, hosts: ["*"]}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: second}}
spec:
  hosts: ["*"]
  gateways: [second-gateway]
  tcp:
  - match: [{{port: 31401}}]
    route:
    - destination: {{host: tcp-echo, port: {{number: 9000}}, subset: v1}}
      weight: {v1}
    - destination: {{host: tcp-echo, port: {{number: 9000}}, subset: v2}}
      weight: {v2}
"""


def renamed_config():
    """The all-v1 config with the VirtualService renamed: its route cluster is replaced."""
    text = ALL_V1.read_text().replace("name: tcp-echo\n", "name: tcp-echo-renamed\n")
    return load_paths([SERVICES]) + load_text(text)


@pytest.fixture
def client(cp):
    with XdsClient(cp.port) as c:
        yield c


def envoy_start(client: XdsClient, cp, eds=(ROUTE,)) -> None:
    """Envoy's own opening: CDS, EDS by name, CDS ACK, LDS, EDS ACK, LDS ACK; then wait
    until the server has taken the ACKs (so a change applied next comes after them)."""
    client.request(CLUSTER)
    cds = client.recv()
    client.request(ENDPOINT, eds)
    eds_response = client.recv()
    client.ack(cds)
    client.request(LISTENER)
    lds = client.recv()
    client.ack(eds_response, eds)
    client.ack(lds)
    assert (cds.type_url, eds_response.type_url, lds.type_url) == (CLUSTER, ENDPOINT, LISTENER)
    cp.wait_synced(node_id=client.node.id)


def proxy(cp, node="test-proxy"):
    """The stream of ``node`` (``cp``: the blocking handle, or the ControlPlane itself)."""
    (p,) = [p for p in cp.proxies() if p.node_id == node]
    return p


def wait(cp, predicate) -> None:
    """Wait on the status board (the server's own readiness signal) until
    ``predicate(control_plane)`` holds; it runs on the server's loop."""
    cp._run(cp.cp.board.wait_for(lambda: predicate(cp.cp), 5))


# --- per-type services ---------------------------------------------------------------------


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_per_type_services_serve_what_ads_serves(cp, delta):
    """An Envoy without ADS opens one stream per type; each gets what ADS would send."""
    with XdsClient(cp.port, "ads-proxy") as ads:
        envoy_start(ads, cp)
        want = {t: (names(ads.last[t]), ads.last[t].version_info) for t in ads.last}
    streams = {
        t: XdsClient(cp.port, "per-type", delta=delta, service=s)
        for t, s in ((CLUSTER, "CDS"), (ENDPOINT, "EDS"), (LISTENER, "LDS"))
    }
    try:
        for type_url, c in streams.items():
            if delta:
                c.subscribe(type_url, [ROUTE] if type_url == ENDPOINT else [])
            else:
                c.request(type_url, [ROUTE] if type_url == ENDPOINT else [])
            response = c.recv()
            version = response.system_version_info if delta else response.version_info
            assert response.type_url == type_url
            assert names(response) == want[type_url][0]
            if type_url == CLUSTER:
                # Not over ADS: its clusters name the per-type EDS service (same variant).
                cluster = unpack(response.resources[0], CLUSTER) if not delta else None
                if delta:
                    cluster = unpack(response.resources[0].resource, CLUSTER)
                source = cluster.eds_cluster_config.eds_config.api_config_source
                assert source.api_type == (source.DELTA_GRPC if delta else source.GRPC)
                assert source.grpc_services[0].envoy_grpc.cluster_name == "xds_cluster"
            else:
                assert version == want[type_url][1]  # the very same resources
            c.ack(response, [ROUTE] if type_url == ENDPOINT else [])
        cp.wait_synced(node_id="per-type")
        apis = sorted(p.api for p in cp.proxies() if p.node_id == "per-type")
        variant = "Delta" if delta else "SotW"
        assert apis == [f"{s} {variant}" for s in ("CDS", "EDS", "LDS")]
        # The same cache: a weight change reaches the EDS stream.
        cp.apply(load_paths([V2_20]))
        push = streams[ENDPOINT].recv()
        assert push.type_url == ENDPOINT and names(push) == [ROUTE]
    finally:
        for c in streams.values():
            c.close()


def test_per_type_service_refuses_another_type(cp):
    with XdsClient(cp.port, service="LDS") as c:
        c.request(CLUSTER)
        with pytest.raises(grpc.RpcError) as err:
            c.recv()
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_fetch_listeners(cp):
    with grpc.insecure_channel(f"127.0.0.1:{cp.port}") as channel:
        stub = lds_pb2_grpc.ListenerDiscoveryServiceStub(channel)
        response = stub.FetchListeners(discovery_pb2.DiscoveryRequest(), timeout=5)
    assert names(response) == [LISTENER_NAME]
    assert response.version_info == cp.call(cp.cp.cache.version, LISTENER)


# --- named subscriptions, no needless responses --------------------------------------------


def test_eds_change_a_proxy_did_not_ask_for_is_not_sent(cp, client):
    cp.apply_yaml(SECOND_ROUTE.format(v1=50, v2=50))
    envoy_start(client, cp, eds=(ROUTE,))  # asks for one cluster's endpoints only
    assert names(client.last[ENDPOINT]) == [ROUTE]
    cp.apply_yaml(SECOND_ROUTE.format(v1=10, v2=90))  # only SECOND's endpoints change
    cp.apply(load_paths([V2_20]))  # then ROUTE's
    push = client.recv()
    assert push.type_url == ENDPOINT and names(push) == [ROUTE]
    weights = [
        loc.load_balancing_weight.value for loc in unpack(push.resources[0], ENDPOINT).endpoints
    ]
    assert weights == [80, 20]


def test_sotw_eds_push_carries_what_differs_from_the_acked_state(cp, client):
    """Endpoints are asked for by name, so a SotW EDS response may carry only what changed
    (a proxy keeps the ones it does not carry). Against what the proxy ACKed: after a NACK,
    the next push carries the rejected change again."""
    cp.apply_yaml(SECOND_ROUTE.format(v1=50, v2=50))
    envoy_start(client, cp, eds=(ROUTE, SECOND))
    assert names(client.last[ENDPOINT]) == [SECOND, ROUTE]  # the opening: everything
    cp.apply_yaml(SECOND_ROUTE.format(v1=10, v2=90))
    push = client.recv()
    assert push.type_url == ENDPOINT and names(push) == [SECOND]
    client.nack(push, "rejected", [ROUTE, SECOND], client.last[ENDPOINT].version_info)
    wait(cp, lambda c: proxy(c).state(ENDPOINT) == NACKED)
    cp.apply(load_paths([V2_20]))  # now ROUTE's weights change too
    again = client.recv()
    assert again.type_url == ENDPOINT and names(again) == [SECOND, ROUTE]
    client.ack(again, [ROUTE, SECOND])
    wait(cp, lambda c: proxy(c).state(ENDPOINT) == SYNCED)
    # Asking again (a new subscription) is answered in full.
    client.request(ENDPOINT, [ROUTE, SECOND, "other"], again.nonce)
    full = client.recv()
    assert full.type_url == ENDPOINT and names(full) == [SECOND, ROUTE]


def test_repeated_request_and_old_ack_send_nothing(cp, client):
    envoy_start(client, cp)
    lds = client.last[LISTENER]
    client.ack(lds)  # the same ACK again: nothing changed, nothing to send
    client.request(LISTENER, nonce="no-such-nonce", version="x")  # stale: ignored whole
    cds = client.last[CLUSTER]
    client.ack(cds)  # a second ACK of an answered response: nothing to send
    client.request(CLUSTER, nonce="1-0")  # an older nonce: ignored, no resend
    # A request that must be answered: its answer is the first thing sent after the opening.
    client.request(ENDPOINT, [ROUTE, "other"], client.last[ENDPOINT].nonce)
    push = client.recv()
    assert push.type_url == ENDPOINT and names(push) == [ROUTE]
    p = proxy(cp)
    assert (p.types[LISTENER].stale_nonces, p.types[CLUSTER].stale_nonces) == (1, 1)
    assert (p.types[LISTENER].pushes, p.types[CLUSTER].pushes) == (1, 1)


def test_new_names_are_answered_even_while_a_push_is_unanswered(cp, client):
    envoy_start(client, cp)
    cp.apply_yaml(SECOND_ROUTE.format(v1=50, v2=50))
    cds = client.recv()
    assert cds.type_url == CLUSTER and names(cds) == [SECOND, ROUTE]
    client.request(ENDPOINT, [ROUTE, SECOND], client.last[ENDPOINT].nonce)  # before CDS ACK
    eds = client.recv()
    assert eds.type_url == ENDPOINT and names(eds) == [SECOND, ROUTE]


# --- ordering ------------------------------------------------------------------------------


def test_removal_waits_until_no_listener_needs_the_cluster(cp, client):
    """Replace a route's cluster: the new one is added first (CDS, EDS, then LDS points at
    it), and the old one is removed only after the proxy ACKed the listener that no longer
    uses it; its endpoints go last."""
    envoy_start(client, cp)
    cp.replace(renamed_config())
    cds = client.recv()
    assert cds.type_url == CLUSTER and names(cds) == BOTH  # old one kept
    client.request(ENDPOINT, [ROUTE, RENAMED], client.last[ENDPOINT].nonce)
    eds = client.recv()
    assert eds.type_url == ENDPOINT and names(eds) == BOTH  # kept too
    client.ack(cds)
    client.ack(eds, [ROUTE, RENAMED])
    lds = client.recv()
    assert lds.type_url == LISTENER
    chain = unpack(lds.resources[0], LISTENER).filter_chains[0]
    assert RENAMED.encode() in chain.filters[0].typed_config.value
    assert proxy(cp).state(CLUSTER) == STALE  # the removal is still to come
    client.ack(lds)
    final = client.recv()
    assert final.type_url == CLUSTER and names(final) == [RENAMED]
    client.request(ENDPOINT, [RENAMED], eds.nonce)  # Envoy drops the removed cluster's EDS
    client.ack(final)
    eds_final = client.recv()
    assert eds_final.type_url == ENDPOINT and names(eds_final) == [RENAMED]
    client.ack(eds_final, [RENAMED])
    cp.wait_synced(node_id="test-proxy")


def test_deleting_a_route_removes_listener_then_cluster_then_endpoints(cp, client):
    envoy_start(client, cp)
    cp.delete("VirtualService", "tcp-echo")
    lds = client.recv()
    assert lds.type_url == LISTENER and names(lds) == []
    client.ack(lds)
    cds = client.recv()
    assert cds.type_url == CLUSTER and names(cds) == []
    client.ack(cds)
    eds = client.recv()  # still asked for by name, but no cluster needs it any more
    assert eds.type_url == ENDPOINT and names(eds) == []
    client.ack(eds, [ROUTE])
    cp.wait_synced(node_id="test-proxy")


def test_envoy_dropping_its_last_eds_cluster_is_synced_without_a_response(cp, client):
    """Once no cluster needs endpoints, Envoy's EDS request names nothing (on its last EDS
    nonce), and Envoy answers no response to a type it watches nothing of: none is sent,
    and the proxy is SYNCED (it was STALE until the next change)."""
    envoy_start(client, cp)
    eds = client.last[ENDPOINT]
    cp.delete("VirtualService", "tcp-echo")
    lds = client.recv()
    client.ack(lds)
    cds = client.recv()
    assert cds.type_url == CLUSTER and names(cds) == []
    client.request(ENDPOINT, [], eds.nonce, eds.version_info)  # what Envoy 1.40 sends
    client.ack(cds)
    cp.wait_synced(node_id="test-proxy")
    assert {t: st for t, st in proxy(cp).types.items() if proxy(cp).state(t) != SYNCED} == {}
    # Nothing was sent for EDS: the next response is the next change's (a new cluster).
    cp.apply(load_paths([ALL_V1]))
    assert client.recv().type_url == CLUSTER


def test_cluster_update_sends_its_unchanged_endpoints_again_at_once(cp, client):
    """Envoy warms an updated EDS cluster until it gets its endpoints again, and answers the
    CDS response only then: the unchanged assignment follows the CDS push without waiting
    for its ACK, in the version the proxy has."""
    envoy_start(client, cp)
    eds_before = client.last[ENDPOINT]
    cp.apply_yaml(DR_TIMEOUT)
    cds = client.recv()
    assert cds.type_url == CLUSTER
    assert unpack(cds.resources[0], CLUSTER).connect_timeout.seconds == 3
    eds = client.recv()  # nothing ACKed yet
    assert eds.type_url == ENDPOINT and names(eds) == [ROUTE]
    assert (eds.version_info, list(eds.resources)) == (
        eds_before.version_info,
        list(eds_before.resources),
    )
    # Envoy repeats its EDS request (same names, version and nonce): it asks for nothing new.
    client.request(ENDPOINT, [ROUTE], eds_before.nonce, eds_before.version_info)
    client.ack(eds, [ROUTE])
    client.ack(cds)
    cp.wait_synced(node_id="test-proxy")
    cp.apply(load_paths([V2_20]))  # the next response is this change's
    weights = client.recv()
    assert weights.type_url == ENDPOINT and weights.version_info != eds.version_info


def test_cluster_unchanged_sends_no_endpoints_again(cp, client):
    """Only an updated cluster's endpoints are sent again: a new route's cluster has its
    endpoints asked for, the existing one's are not sent."""
    envoy_start(client, cp)
    cp.apply_yaml(SECOND_ROUTE.format(v1=50, v2=50))
    cds = client.recv()
    assert cds.type_url == CLUSTER and names(cds) == sorted([ROUTE, SECOND])
    client.request(ENDPOINT, sorted([ROUTE, SECOND]), client.last[ENDPOINT].nonce)
    eds = client.recv()
    assert eds.type_url == ENDPOINT and names(eds) == sorted([ROUTE, SECOND])  # asked: all
    client.ack(cds)
    client.ack(eds, sorted([ROUTE, SECOND]))
    lds = client.recv()
    assert lds.type_url == LISTENER
    client.ack(lds)
    cp.wait_synced(node_id="test-proxy")


# --- NACK ----------------------------------------------------------------------------------


def test_nacked_listener_is_parked_and_keeps_its_clusters(cp, client):
    """The proxy rejects the listener that moves to a new cluster. Nothing is resent, the
    old cluster (which the proxy's listener still uses) is not removed, the status says
    NACKED with the proxy's text, and the next change is pushed normally."""
    envoy_start(client, cp)
    cp.replace(renamed_config())
    cds = client.recv()
    client.request(ENDPOINT, [ROUTE, RENAMED], client.last[ENDPOINT].nonce)
    eds = client.recv()
    client.ack(cds)
    client.ack(eds, [ROUTE, RENAMED])
    old_lds = client.last[LISTENER]
    lds = client.recv()
    client.nack(lds, "bad listener: port in use", version=cds.version_info)
    wait(cp, lambda c: proxy(c).types[LISTENER].nacks == 1)
    p = proxy(cp)
    assert p.state(LISTENER) == NACKED
    assert p.types[LISTENER].nack == "bad listener: port in use"
    assert p.state(CLUSTER) == STALE  # the old cluster's removal is held
    # A later, different change: the EDS push comes first; no LDS resend, no CDS removal.
    renamed_20 = V2_20.read_text().replace("name: tcp-echo\n", "name: tcp-echo-renamed\n")
    cp.apply_yaml(renamed_20)
    push = client.recv()
    # (SotW EDS carries what changed: the renamed route's weights, not the parked route)
    assert push.type_url == ENDPOINT and names(push) == [RENAMED]
    client.ack(push, [ROUTE, RENAMED])
    # (taken before the next change, which would otherwise race the ACK)
    wait(cp, lambda c: proxy(c).types[ENDPOINT].acked_version == push.version_info)
    # The next good listener is pushed normally; then the unused cluster goes.
    cp.replace(load_paths([SERVICES, ALL_V1]))
    nxt = client.recv()
    assert nxt.type_url == LISTENER and nxt.version_info == old_lds.version_info
    client.ack(nxt)
    cds_final = client.recv()
    assert cds_final.type_url == CLUSTER and names(cds_final) == [ROUTE]
    client.ack(cds_final)
    eds_final = client.recv()  # no cluster needs the old endpoints any more
    assert eds_final.type_url == ENDPOINT and names(eds_final) == [ROUTE]
    client.ack(eds_final, [ROUTE, RENAMED])
    cp.wait_synced(node_id="test-proxy")
    assert proxy(cp).types[LISTENER].pushes == 3  # opening, rejected, good: no resend
    assert proxy(cp).state(LISTENER) == SYNCED


def test_reconnect_after_nack_sends_the_current_config(cp, client):
    envoy_start(client, cp)
    versions = {t: client.last[t].version_info for t in (CLUSTER, ENDPOINT, LISTENER)}
    cp.apply(load_paths([V2_20]))
    push = client.recv()
    client.nack(push, "rejected", [ROUTE], versions[ENDPOINT])
    wait(cp, lambda c: proxy(c).state(ENDPOINT) == NACKED)
    client.close()
    with XdsClient(cp.port) as again:
        # It still has the old endpoints, so it says so; it gets the current ones again.
        again.request(ENDPOINT, [ROUTE], version=versions[ENDPOINT])
        response = again.recv()
        assert response.type_url == ENDPOINT and response.version_info == push.version_info


# --- sharing -------------------------------------------------------------------------------


def test_streams_of_one_kind_of_proxy_share_the_snapshot(cp):
    """Two Envoys with the same labels: what each was sent, and the EDS names each asked
    for, are the group's own objects, not per-stream copies; a change moves both on."""
    with XdsClient(cp.port, "proxy-a") as a, XdsClient(cp.port, "proxy-b") as b:
        envoy_start(a, cp)
        envoy_start(b, cp)
        pa, pb = proxy(cp, "proxy-a"), proxy(cp, "proxy-b")
        for t in (CLUSTER, ENDPOINT, LISTENER):
            assert pa.types[t].sent is pb.types[t].sent
            assert pa.types[t].sent is cp.cp.cache.snapshot(t).entries
        assert pa.types[ENDPOINT].explicit is pb.types[ENDPOINT].explicit
        cp.apply(load_paths([V2_20]))
        for client in (a, b):
            push = client.recv()
            assert push.type_url == ENDPOINT
            client.ack(push, [ROUTE])
        for node in ("proxy-a", "proxy-b"):  # a status is a snapshot: read it again
            wait(cp, lambda c, node=node: proxy(c, node).state(ENDPOINT) == SYNCED)
        pa = proxy(cp, "proxy-a")
        assert pa.types[ENDPOINT].sent is cp.cp.cache.snapshot(ENDPOINT).entries
