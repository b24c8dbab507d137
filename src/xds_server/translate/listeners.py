"""Listener builders: one listener per gateway port, a tcp_proxy to the route's cluster(s)."""

from __future__ import annotations

from collections.abc import Sequence

from envoy.config.listener.v3 import api_listener_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from google.protobuf import any_pb2

TCP_PROXY = "envoy.filters.network.tcp_proxy"


def listener_name(gateway_port: int) -> str:
    """Istio's gateway listener name."""
    return f"0.0.0.0_{gateway_port}"


def build_tcp_listener(
    gateway_port: int,
    address: str,
    bind_port: int,
    clusters: Sequence[tuple[str, int]],
    stat_prefix: str | None = None,
) -> listener_pb2.Listener:
    """``clusters``: (name, weight); one entry routes everything there without weights.
    ``stat_prefix``: the tcp_proxy's (default ``tcp_<port>``)."""
    proxy = tcp_proxy_pb2.TcpProxy(stat_prefix=stat_prefix or f"tcp_{gateway_port}")
    if len(clusters) == 1:
        proxy.cluster = clusters[0][0]
    else:
        for name, weight in clusters:
            proxy.weighted_clusters.clusters.add(name=name, weight=weight)
    # Fields set in place (half the time of building sub-messages and copying them in).
    listener = listener_pb2.Listener(name=listener_name(gateway_port))
    socket = listener.address.socket_address
    socket.address, socket.port_value = address, bind_port
    tcp_filter = listener.filter_chains.add().filters.add(name=TCP_PROXY)
    tcp_filter.typed_config.Pack(proxy, deterministic=True)
    return listener


def build_api_listener(name: str, clusters: list[tuple[str, int]]) -> listener_pb2.Listener:
    """The listener a gRPC library client asks for by its target name: an API listener
    whose HTTP connection manager routes every request to the one cluster, or picks one of
    several by weight (route config inline, so no RDS round trip; the router filter last,
    as gRPC requires)."""
    router = any_pb2.Any()
    router.Pack(router_pb2.Router())
    action = route_components_pb2.RouteAction()
    if len(clusters) == 1:
        action.cluster = clusters[0][0]
    else:
        for cluster, weight in clusters:
            entry = action.weighted_clusters.clusters.add(name=cluster)
            entry.weight.value = weight
    route = route_components_pb2.Route(
        match=route_components_pb2.RouteMatch(prefix=""), route=action
    )
    hcm = hcm_pb2.HttpConnectionManager(
        stat_prefix=name,
        route_config=route_pb2.RouteConfiguration(
            name=name,
            virtual_hosts=[
                route_components_pb2.VirtualHost(name=name, domains=["*"], routes=[route])
            ],
        ),
        http_filters=[hcm_pb2.HttpFilter(name="envoy.filters.http.router", typed_config=router)],
    )
    typed = any_pb2.Any()
    typed.Pack(hcm)
    return listener_pb2.Listener(
        name=name, api_listener=api_listener_pb2.ApiListener(api_listener=typed)
    )
