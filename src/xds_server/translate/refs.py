"""Which resources a resource needs: the dependency graph behind make-before-break.

A listener needs the clusters its proxy filters route to; an EDS cluster needs its
ClusterLoadAssignment. The xDS server keeps a resource the proxy still needs (by the
resources it has of the referring type) instead of removing it early.
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message

from .types import CLUSTER, ENDPOINT, LISTENER

# Referring type -> the type its references name.
REFERS_TO = {LISTENER: CLUSTER, CLUSTER: ENDPOINT}

_TCP_PROXY = tcp_proxy_pb2.TcpProxy.DESCRIPTOR.full_name
_HCM = hcm_pb2.HttpConnectionManager.DESCRIPTOR.full_name


def references(msg: Message) -> frozenset[str]:
    """Names (of type ``REFERS_TO[type]``) that ``msg`` needs; empty for other types."""
    if isinstance(msg, listener_pb2.Listener):
        return frozenset(_listener_clusters(msg))
    if isinstance(msg, cluster_pb2.Cluster) and msg.type == cluster_pb2.Cluster.EDS:
        return frozenset([msg.eds_cluster_config.service_name or msg.name])
    return frozenset()


def _listener_clusters(listener: listener_pb2.Listener) -> set[str]:
    out: set[str] = set()
    if listener.HasField("api_listener"):
        out |= _typed_clusters(listener.api_listener.api_listener)
    chains = list(listener.filter_chains)
    if listener.HasField("default_filter_chain"):
        chains.append(listener.default_filter_chain)
    for chain in chains:
        for f in chain.filters:
            out |= _typed_clusters(f.typed_config)
    return out


def _typed_clusters(typed: any_pb2.Any) -> set[str]:
    name = typed.type_url.rsplit("/", 1)[-1]
    if name == _TCP_PROXY:
        proxy = tcp_proxy_pb2.TcpProxy()
        typed.Unpack(proxy)
        if proxy.cluster:
            return {proxy.cluster}
        return {c.name for c in proxy.weighted_clusters.clusters}
    if name == _HCM:
        hcm = hcm_pb2.HttpConnectionManager()
        typed.Unpack(hcm)
        out: set[str] = set()
        for vhost in hcm.route_config.virtual_hosts:
            for route in vhost.routes:
                out |= _route_clusters(route.route)
        return out
    return set()


def _route_clusters(action: route_components_pb2.RouteAction) -> set[str]:
    if action.cluster:
        return {action.cluster}
    return {c.name for c in action.weighted_clusters.clusters}
