"""Delta xDS (incremental) in raw gRPC: per-resource versions, wildcard and named
subscriptions, subscribe/unsubscribe mid-stream, removed_resources, reconnect with
initial_resource_versions, nonces, NACK parking and removal ordering.

Absences are shown the same way as in the SotW tests: a later, different push (or a
request that must be answered) comes next, so anything wrongly sent would have come first.
"""

from __future__ import annotations

import pytest
from test_xds_sotw import (
    DR_TIMEOUT,
    ROUTE,
    SECOND,
    SECOND_ROUTE,
    proxy,
    renamed_config,
    wait,
)
from xds_client import XdsClient, names, unpack

from xds_server.config.load import load_paths
from xds_server.lab.lab import SAMPLES
from xds_server.translate import CLUSTER, ENDPOINT, LISTENER
from xds_server.xds.status import NACKED, STALE, SYNCED

SERVICES = SAMPLES / "tcp-echo-services.yaml"
ALL_V1 = SAMPLES / "tcp-echo-all-v1.yaml"
V2_20 = SAMPLES / "tcp-echo-20-v2.yaml"
RENAMED = "route|default/tcp-echo-renamed|tcp[0]"
LISTENER_NAME = "0.0.0.0_31400"


@pytest.fixture
def client(cp):
    with XdsClient(cp.port, delta=True) as c:
        yield c


def delta_start(client: XdsClient, cp, initial=None) -> dict:
    """Envoy's Delta opening: CDS and LDS as wildcards, EDS by name. Returns the
    responses by type."""
    initial = initial or {}
    client.subscribe(CLUSTER, initial=initial.get(CLUSTER))
    cds = client.recv()
    client.subscribe(ENDPOINT, [ROUTE], initial=initial.get(ENDPOINT))
    eds = client.recv()
    client.ack(cds)
    client.subscribe(LISTENER, initial=initial.get(LISTENER))
    lds = client.recv()
    client.ack(eds)
    client.ack(lds)
    assert (cds.type_url, eds.type_url, lds.type_url) == (CLUSTER, ENDPOINT, LISTENER)
    cp.wait_synced(node_id=client.node.id)
    return {CLUSTER: cds, ENDPOINT: eds, LISTENER: lds}


def versions(response) -> dict[str, str]:
    return {r.name: r.version for r in response.resources}


def test_opening_sends_every_resource_with_its_own_version(cp, client):
    got = delta_start(client, cp)
    assert names(got[CLUSTER]) == [ROUTE]
    assert names(got[ENDPOINT]) == [ROUTE]
    assert names(got[LISTENER]) == [LISTENER_NAME]
    for response in got.values():
        assert not response.removed_resources
        (resource,) = response.resources
        assert len(resource.version) == 16 and resource.resource.type_url == response.type_url
    cp.wait_synced(node_id="test-proxy")
    assert proxy(cp).api == "ADS Delta"


def test_only_the_changed_resource_is_sent(cp, client):
    cp.apply_yaml(SECOND_ROUTE.format(v1=50, v2=50))
    client.subscribe(CLUSTER)
    cds = client.recv()
    assert names(cds) == [SECOND, ROUTE]
    client.ack(cds)
    client.subscribe(ENDPOINT, [ROUTE, SECOND])
    eds = client.recv()
    before = versions(eds)
    client.ack(eds)
    wait(cp, lambda c: proxy(c).state(ENDPOINT) == SYNCED)
    cp.apply(load_paths([V2_20]))  # changes ROUTE's endpoints only
    push = client.recv()
    assert push.type_url == ENDPOINT and names(push) == [ROUTE]  # not SECOND
    assert push.resources[0].version != before[ROUTE]
    assert not push.removed_resources
    weights = [
        loc.load_balancing_weight.value
        for loc in unpack(push.resources[0].resource, ENDPOINT).endpoints
    ]
    assert weights == [80, 20]


def test_subscribe_and_unsubscribe_during_the_stream(cp, client):
    delta_start(client, cp)
    # A name that does not exist: the answer says so (removed), so the proxy need not wait.
    client.subscribe(ENDPOINT, ["no-such-cluster"])
    missing = client.recv()
    assert missing.type_url == ENDPOINT and names(missing) == []
    assert list(missing.removed_resources) == ["no-such-cluster"]
    client.ack(missing)
    # Unsubscribe ROUTE: no answer is due, and its next change is not sent.
    client.subscribe(ENDPOINT, unsubscribe=[ROUTE])
    wait(cp, lambda c: ROUTE not in proxy(c).types[ENDPOINT].explicit)
    cp.apply(load_paths([V2_20]))
    cp.apply_yaml(SECOND_ROUTE.format(v1=50, v2=50))  # a CDS change comes next instead
    nxt = client.recv()
    assert nxt.type_url == CLUSTER and names(nxt) == [SECOND]  # only the new cluster
    # Subscribe again: it is sent at once, in its current version.
    client.subscribe(ENDPOINT, [ROUTE])
    again = client.recv()
    assert again.type_url == ENDPOINT and names(again) == [ROUTE]
    assert proxy(cp).types[ENDPOINT].explicit == {ROUTE, "no-such-cluster"}


def test_wildcard_by_star_and_back_to_names(cp, client):
    cp.apply_yaml(SECOND_ROUTE.format(v1=50, v2=50))
    client.subscribe(ENDPOINT, [ROUTE])
    first = client.recv()
    assert names(first) == [ROUTE]
    client.subscribe(ENDPOINT, ["*"], nonce=first.nonce)  # now everything
    star = client.recv()
    assert names(star) == [SECOND]  # ROUTE it has already
    client.subscribe(ENDPOINT, unsubscribe=["*"], nonce=star.nonce)
    wait(cp, lambda c: not proxy(c).types[ENDPOINT].wildcard)
    # Back to ROUTE only: SECOND's changes no longer come, ROUTE's do.
    cp.apply_yaml(SECOND_ROUTE.format(v1=10, v2=90))
    cp.apply(load_paths([V2_20]))
    push = client.recv()
    assert push.type_url == ENDPOINT and names(push) == [ROUTE]


def test_removal_order_listener_then_cluster_then_endpoints(cp, client):
    delta_start(client, cp)
    cp.delete("VirtualService", "tcp-echo")
    lds = client.recv()
    assert lds.type_url == LISTENER and list(lds.removed_resources) == [LISTENER_NAME]
    assert proxy(cp).state(CLUSTER) == STALE  # held: the proxy's listener still uses it
    client.ack(lds)
    cds = client.recv()
    assert cds.type_url == CLUSTER and list(cds.removed_resources) == [ROUTE]
    client.ack(cds)
    eds = client.recv()
    assert eds.type_url == ENDPOINT and list(eds.removed_resources) == [ROUTE]
    client.ack(eds)
    cp.wait_synced(node_id="test-proxy")


def test_cluster_update_sends_its_unchanged_endpoints_again_at_once(cp, client):
    """Envoy warms an updated EDS cluster until it gets its endpoints again and sends no
    request for them in Delta: the unchanged assignment follows the CDS push at once."""
    got = delta_start(client, cp)
    cp.apply_yaml(DR_TIMEOUT)
    cds = client.recv()
    assert cds.type_url == CLUSTER and names(cds) == [ROUTE]
    eds = client.recv()  # nothing ACKed yet
    assert eds.type_url == ENDPOINT and not eds.removed_resources
    assert versions(eds) == versions(got[ENDPOINT])
    client.ack(cds)
    client.ack(eds)
    cp.wait_synced(node_id="test-proxy")


def test_reconnect_with_an_old_cluster_gets_its_endpoints_again(cp):
    """A proxy that reconnects holding an older version of a cluster is sent the new one,
    and so warms it: its endpoints come too, though the proxy has their version."""
    with XdsClient(cp.port, delta=True) as first:
        got = delta_start(first, cp)
    initial = {t: versions(r) for t, r in got.items()}
    cp.apply_yaml(DR_TIMEOUT)
    with XdsClient(cp.port, delta=True) as client:
        client.subscribe(CLUSTER, initial=initial[CLUSTER])
        cds = client.recv()
        assert cds.type_url == CLUSTER and names(cds) == [ROUTE]
        client.subscribe(ENDPOINT, [ROUTE], initial=initial[ENDPOINT])
        eds = client.recv()
        assert eds.type_url == ENDPOINT and versions(eds) == initial[ENDPOINT]
        client.ack(cds)
        client.ack(eds)
        client.subscribe(LISTENER, initial=initial[LISTENER])
        lds = client.recv()
        assert lds.type_url == LISTENER and not lds.resources  # it has the listener
        client.ack(lds)
        cp.wait_synced(node_id="test-proxy")


def test_replacing_a_cluster_adds_before_it_removes(cp, client):
    delta_start(client, cp)
    cp.replace(renamed_config())
    cds = client.recv()
    assert cds.type_url == CLUSTER and names(cds) == [RENAMED] and not cds.removed_resources
    client.subscribe(ENDPOINT, [RENAMED])
    eds = client.recv()
    assert eds.type_url == ENDPOINT and names(eds) == [RENAMED] and not eds.removed_resources
    client.ack(cds)
    client.ack(eds)
    lds = client.recv()
    assert lds.type_url == LISTENER and names(lds) == [LISTENER_NAME]
    client.ack(lds)
    cds2 = client.recv()
    assert cds2.type_url == CLUSTER and list(cds2.removed_resources) == [ROUTE]
    assert not cds2.resources


def test_reconnect_with_initial_resource_versions_gets_only_what_changed(cp, client):
    got = delta_start(client, cp)
    have = {t: versions(r) for t, r in got.items()}
    client.close()
    cp.apply(load_paths([V2_20]))  # while disconnected: ROUTE's endpoints change
    with XdsClient(cp.port, delta=True) as again:
        after = delta_start(again, cp, initial=have)
        assert names(after[CLUSTER]) == [] and not after[CLUSTER].removed_resources
        assert names(after[LISTENER]) == [] and not after[LISTENER].removed_resources
        assert names(after[ENDPOINT]) == [ROUTE]
        assert after[ENDPOINT].resources[0].version != have[ENDPOINT][ROUTE]
        assert proxy(cp).types[CLUSTER].pushes == 1  # the opening answer, nothing more


def test_reconnect_learns_what_was_removed_meanwhile(cp, client):
    got = delta_start(client, cp)
    have = {t: versions(r) for t, r in got.items()}
    client.close()
    cp.delete("VirtualService", "tcp-echo")
    with XdsClient(cp.port, delta=True) as again:
        again.subscribe(LISTENER, initial=have[LISTENER])
        lds = again.recv()
        assert names(lds) == [] and list(lds.removed_resources) == [LISTENER_NAME]


def test_nack_is_parked_and_the_next_change_is_pushed(cp, client):
    delta_start(client, cp)
    cp.apply(load_paths([V2_20]))
    push = client.recv()
    client.nack(push, "endpoints rejected")
    wait(cp, lambda c: proxy(c).types[ENDPOINT].nacks == 1)
    assert proxy(cp).state(ENDPOINT) == NACKED
    assert proxy(cp).types[ENDPOINT].nack == "endpoints rejected"
    # A stale ACK does not count and resends nothing; a request that must be answered
    # shows that nothing else was queued before it.
    client.subscribe(ENDPOINT, nonce="1-1")
    client.subscribe(ENDPOINT, ["no-such-cluster"])
    answer = client.recv()
    assert answer.type_url == ENDPOINT and list(answer.removed_resources) == ["no-such-cluster"]
    assert proxy(cp).types[ENDPOINT].pushes == 3  # opening, rejected, this answer
    client.ack(answer)
    cp.apply_yaml(V2_20.read_text().replace("80", "70"))
    nxt = client.recv()
    assert nxt.type_url == ENDPOINT and names(nxt) == [ROUTE]
    client.ack(nxt)
    cp.wait_synced(node_id="test-proxy")


@pytest.mark.parametrize("service", ["LDS", "CDS", "EDS"])
def test_per_type_delta_service(cp, service):
    type_url = {"LDS": LISTENER, "CDS": CLUSTER, "EDS": ENDPOINT}[service]
    with XdsClient(cp.port, "per-type", delta=True, service=service) as c:
        c.subscribe(type_url, [ROUTE] if type_url == ENDPOINT else [])
        first = c.recv()
        assert first.type_url == type_url
        assert names(first) == ([LISTENER_NAME] if type_url == LISTENER else [ROUTE])
        c.ack(first)
        cp.delete("VirtualService", "tcp-echo")
        gone = c.recv()  # one type per stream: nothing to order against, removed at once
        assert list(gone.removed_resources) == names(first)
