"""Listener builders: one listener per gateway port, a tcp_proxy to the route's cluster(s)."""

from __future__ import annotations

from collections.abc import Sequence

from envoy.config.core.v3 import address_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
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
) -> listener_pb2.Listener:
    """``clusters``: (name, weight); one entry routes everything there without weights."""
    proxy = tcp_proxy_pb2.TcpProxy(stat_prefix=f"tcp_{gateway_port}")
    if len(clusters) == 1:
        proxy.cluster = clusters[0][0]
    else:
        for name, weight in clusters:
            proxy.weighted_clusters.clusters.add(name=name, weight=weight)
    typed = any_pb2.Any()
    typed.Pack(proxy)
    chain = listener_components_pb2.FilterChain(
        filters=[listener_components_pb2.Filter(name=TCP_PROXY, typed_config=typed)]
    )
    return listener_pb2.Listener(
        name=listener_name(gateway_port),
        address=address_pb2.Address(
            socket_address=address_pb2.SocketAddress(address=address, port_value=bind_port)
        ),
        filter_chains=[chain],
    )
