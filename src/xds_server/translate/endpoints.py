"""ClusterLoadAssignment builders: endpoints grouped into localities."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2


@dataclass(frozen=True)
class LocalityGroup:
    """The endpoints of one destination; ``weight`` is its share of the route (None: no
    locality weighting)."""

    region: str  # the service host
    zone: str  # the subset
    sub_zone: str  # the service port
    endpoints: tuple[tuple[str, int, int | None], ...]  # (address, port, endpoint weight)
    weight: int | None = None


def build_load_assignment(
    cluster: str, groups: Iterable[LocalityGroup]
) -> endpoint_pb2.ClusterLoadAssignment:
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=cluster)
    for g in groups:
        loc = cla.endpoints.add()
        loc.locality.CopyFrom(base_pb2.Locality(region=g.region, zone=g.zone, sub_zone=g.sub_zone))
        if g.weight is not None:
            loc.load_balancing_weight.value = g.weight
        for address, port, weight in g.endpoints:
            lb = loc.lb_endpoints.add()
            lb.endpoint.CopyFrom(
                endpoint_components_pb2.Endpoint(
                    address=address_pb2.Address(
                        socket_address=address_pb2.SocketAddress(address=address, port_value=port)
                    )
                )
            )
            if weight:
                lb.load_balancing_weight.value = weight
    return cla
