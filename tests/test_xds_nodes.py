"""Per-node config: a Gateway's selector is matched against the node's metadata labels, as
Istio matches ``istio: ingressgateway`` against the gateway pod's labels."""

from __future__ import annotations

import pytest
from xds_client import XdsClient, names

from xds_server.config.load import load_paths, load_text
from xds_server.controlplane import ControlPlane
from xds_server.lab.lab import SAMPLES
from xds_server.translate import (
    ANY_NODE,
    CLUSTER,
    LISTENER,
    NodeProfile,
    TranslateOptions,
    translate,
)
from xds_server.xds.status import SYNCED

SERVICES = SAMPLES / "tcp-echo-services.yaml"
ALL_V1 = SAMPLES / "tcp-echo-all-v1.yaml"

EGRESS = """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: egress-gateway}
spec:
  selector: {istio: egressgateway}
  servers: [{port: {number: 31500, name: tcp, protocol: TCP}, hosts: ["*"]}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: everywhere}
spec:
  servers: [{port: {number: 31600, name: tcp, protocol: TCP}, hosts: ["*"]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: egress}
spec:
  hosts: ["*"]
  gateways: [egress-gateway, everywhere]
  tcp:
  - match: [{port: 31500}]
    route: [{destination: {host: tcp-echo, port: {number: 9000}, subset: v2}}]
  - match: [{port: 31600}]
    route: [{destination: {host: tcp-echo, port: {number: 9000}, subset: v1}}]
"""

INGRESS = {"istio": "ingressgateway"}


def config():
    return load_paths([SERVICES, ALL_V1]) + load_text(EGRESS)


@pytest.mark.parametrize(
    ("labels", "listeners"),
    [
        (INGRESS, ["0.0.0.0_31400", "0.0.0.0_31600"]),
        ({"istio": "egressgateway", "app": "x"}, ["0.0.0.0_31500", "0.0.0.0_31600"]),
        ({}, ["0.0.0.0_31600"]),  # labels, none matching: only the selector-less Gateway
        (None, ["0.0.0.0_31400", "0.0.0.0_31500", "0.0.0.0_31600"]),  # no labels at all
    ],
    ids=["ingress", "egress", "empty-labels", "no-labels"],
)
def test_translation_selects_gateways_by_node_labels(labels, listeners):
    out = translate(config(), TranslateOptions(), NodeProfile.of(labels))
    assert sorted(out.listeners) == listeners
    # Clusters follow the routes that are bound for this node.
    assert len(out.clusters) == len(listeners)


def test_two_proxies_with_different_roles_get_different_listeners():
    with ControlPlane.start_in_thread() as cp:
        cp.replace(config())
        ingress = XdsClient(cp.port, "ingress-1", labels=INGRESS)
        ingress_2 = XdsClient(cp.port, "ingress-2", labels=INGRESS)
        egress = XdsClient(cp.port, "egress-1", labels={"istio": "egressgateway"})
        try:
            got = {}
            for c in (ingress, ingress_2, egress):
                c.request(LISTENER)
                lds = c.recv()
                got[c.node.id] = names(lds)
                c.ack(lds)
                c.request(CLUSTER)
                c.ack(c.recv())
            cp._run(
                cp.cp.board.wait_for(
                    lambda: (
                        sum(
                            p.state(LISTENER) == p.state(CLUSTER) == SYNCED for p in cp.cp.proxies()
                        )
                        == 3
                    ),
                    5,
                )
            )
            assert got == {
                "ingress-1": ["0.0.0.0_31400", "0.0.0.0_31600"],
                "ingress-2": ["0.0.0.0_31400", "0.0.0.0_31600"],
                "egress-1": ["0.0.0.0_31500", "0.0.0.0_31600"],
            }
            # Translated once per label set, not per proxy: the two ingress proxies share
            # one group (the same packed resources); the default group always exists.
            groups = cp.call(lambda: dict(cp.cp.cache.groups))
            assert len(groups) == 3 and ANY_NODE in groups
            (ingress_group,) = [
                g for p, g in groups.items() if p.labels == frozenset(INGRESS.items())
            ]
            assert ingress_group.users == 2
            # A change reaches each role's proxies with that role's config.
            cp.delete("VirtualService", "egress")
            assert names(egress.recv()) == []
            assert names(ingress.recv()) == ["0.0.0.0_31400"]
        finally:
            for c in (ingress, ingress_2, egress):
                c.close()
        # Groups of disconnected proxies are dropped.
        cp._run(cp.cp.board.wait_for(lambda: not cp.cp.board.proxies, 5))
        assert list(cp.call(lambda: list(cp.cp.cache.groups))) == [ANY_NODE]
