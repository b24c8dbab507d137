"""What each resource translates to: pure functions from one resource (and look-ups in the
index) to its Envoy protos, and the shapes that say which resources a kind of proxy gets.
The same config and options always give the same protos; translate/assemble.py puts the
outputs together and works out what a change changed."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.endpoint.v3.endpoint_pb2 import ClusterLoadAssignment
from envoy.config.listener.v3.listener_pb2 import Listener
from google.protobuf.message import Message

from ..config.index import ConfigIndex, service_host
from ..config.model import (
    DestinationRule,
    Port,
    Resource,
    ServiceEntry,
    Subset,
    TrafficPolicy,
    VirtualService,
)
from ..config.routing import Backend, mesh_backends, vs_routes
from .clusters import build_cluster, effective_policy, merge_policies
from .endpoints import LocalityGroup, build_load_assignment
from .listeners import build_api_listener, build_tcp_listener
from .options import TranslateOptions
from .types import CLUSTER, ENDPOINT, LISTENER


def route_cluster_name(vs: VirtualService, index: int) -> str:
    """Locality mode: one cluster per route, named after the route, so that changing the
    route's destinations or weights never renames the cluster the listener points at."""
    return f"route|{vs.meta.namespace}/{vs.meta.name}|tcp[{index}]"


def subset_cluster_name(port: int, subset: str, host: str) -> str:
    """Istio's outbound cluster name, after the service host (a Kubernetes Service's
    fully qualified: config/index.py service_host), so two hosts never share a cluster."""
    return f"outbound|{port}|{subset}|{host}"


def _cluster_of(b: Backend) -> str:
    return subset_cluster_name(b.port.number, b.subset_name, b.host)


# --- Outputs ------------------------------------------------------------------------------
#
# Each output comes from one resource. The outputs come in groups (a route's listener,
# cluster and assignment), and a shape is the groups of its phases' resources in
# namespace/name order.

Output = tuple[str, str, Message]  # (type URL, name, message)
Outputs = list[tuple[Output, ...]]  # a resource's groups


class Phase(NamedTuple):
    work: Callable[[ConfigIndex, Any, TranslateOptions], Outputs]  # one resource's groups
    members: Callable[[ConfigIndex], list[Any]]  # the resources it translates, in order
    member: Callable[[Resource], bool]  # whether it translates this one (no host clash)
    first_wins: bool  # a group whose first name is taken is left out (else it overwrites)


def _route_clusters(index: ConfigIndex, vs: VirtualService, options: TranslateOptions) -> Outputs:
    """Locality mode: (listener, cluster, assignment) per gateway port of one
    VirtualService; a route's cluster carries its destinations as weighted localities."""
    clusters: dict[int, tuple[Cluster, ClusterLoadAssignment | None]] = {}
    out: Outputs = []
    for br in vs_routes(index, vs):
        if br.position not in clusters:
            rules = [index.rule(b.host, b.service.meta.namespace) for b in br.backends]
            policy = merge_policies(
                effective_policy(dr, b.subset) for b, dr in zip(br.backends, rules, strict=True)
            )
            groups = [_group(index, b, b.weight) for b in br.backends]
            dns = any(_is_dns(b.service) for b in br.backends)
            name = route_cluster_name(vs, br.position)
            clusters[br.position] = _cluster(name, groups, policy, options, dns, weighted=True)
        cluster, cla = clusters[br.position]
        listener = _tcp_listener(br.port, options, [(cluster.name, 1)])
        out.append(((LISTENER, listener.name, listener), *_cluster_outputs(cluster, cla)))
    return out


def _port_subsets(
    index: ConfigIndex, se: ServiceEntry
) -> Iterator[tuple[str, Port, DestinationRule | None, list[Backend]]]:
    """Istio's clusters of a service: for each of its hosts (as declared) and ports, a
    backend for the port and one for each subset of the host's DestinationRule."""
    for declared in se.hosts:
        host = service_host(se, declared)
        dr = index.rule(host, se.meta.namespace)
        subsets: list[Subset | None] = [None, *(dr.subsets if dr else [])]
        for port in se.ports:
            yield declared, port, dr, [Backend(host, se, port, s, 1) for s in subsets]


def _subset_clusters(index: ConfigIndex, se: ServiceEntry, options: TranslateOptions) -> Outputs:
    """Istio mode: like Istio, a cluster for every service port and subset, referenced or
    not, so that a route change never waits for a new cluster."""
    out: Outputs = []
    for _declared, _port, dr, backends in _port_subsets(index, se):
        for b in backends:
            groups, policy = [_group(index, b, None)], effective_policy(dr, b.subset)
            cluster, cla = _cluster(
                _cluster_of(b), groups, policy, options, _is_dns(se), False, True
            )
            out.append(_cluster_outputs(cluster, cla))
    return out


def _weighted_listeners(
    index: ConfigIndex, vs: VirtualService, options: TranslateOptions
) -> Outputs:
    """Istio mode: a listener per gateway port, weighting the destinations' clusters."""
    out: Outputs = []
    for br in vs_routes(index, vs):
        clusters = [(_cluster_of(b), b.weight) for b in br.backends]
        # Istio's stat_prefix: the cluster's name, or the VirtualService's for several
        stat = clusters[0][0] if len(clusters) == 1 else f"{vs.meta.name}.{vs.meta.namespace}"
        listener = _tcp_listener(br.port, options, clusters, stat)
        out.append(((LISTENER, listener.name, listener),))
    return out


def _grpc_targets(index: ConfigIndex, se: ServiceEntry, options: TranslateOptions) -> Outputs:
    """What a gRPC library client asks for: an API listener ``host:port`` per service port
    (the name in its ``xds:///host:port`` target), and Istio's clusters for the port and
    each subset. The listener routes to ``outbound|port||host``, or, when a mesh
    VirtualService routes the host, to its route's destinations with their weights
    (weighted clusters, gRFC A28: gRPC picks one per call). gRPC ignores localities without
    a weight, so each gets weight 1. DNS services are left out: gRPC has no STRICT_DNS
    clusters."""
    out: Outputs = []
    for declared, port, dr, backends in _port_subsets(index, se):
        group: list[Output] = []
        for b in backends:
            groups, policy = [_group(index, b, 1)], effective_policy(dr, b.subset)
            group += _cluster_outputs(
                *_cluster(_cluster_of(b), groups, policy, options, False, True)
            )
        routes = [(_cluster_of(backends[0]), 1)]
        vs = index.mesh_route(backends[0].host)
        if vs is not None and (weighted := mesh_backends(index, vs, port.number)):
            routes = [(_cluster_of(b), b.weight) for b in weighted]
        target = f"{declared}:{port.number}"
        out.append((*group, (LISTENER, target, build_api_listener(target, routes))))
    return out


def _is_service(r: Resource) -> bool:
    """A ServiceEntry with something to route to (NONE passes connections on as they came:
    validation refuses routes to it)."""
    return isinstance(r, ServiceEntry) and bool(r.hosts) and r.resolution != "NONE"


def _is_route(r: Resource) -> bool:
    return isinstance(r, VirtualService)


def _virtual_services(index: ConfigIndex) -> list[VirtualService]:
    return index.virtual_services


def _grpc_services(index: ConfigIndex) -> list[ServiceEntry]:
    return [se for se in _services(index) if not _is_dns(se)]


# --- Pieces ----------------------------------------------------------------------------------


def _services(index: ConfigIndex) -> list[ServiceEntry]:
    """The ServiceEntries that own a host, each once, in namespace/name order."""
    found = {se.key: se for se in index.services.values() if _is_service(se)}
    return sorted(found.values(), key=lambda r: r.key)


def _group(index: ConfigIndex, b: Backend, weight: int | None) -> LocalityGroup:
    labels = b.subset.labels if b.subset else {}
    eps = tuple(index.subset_endpoints(b.service, b.port, labels))
    return LocalityGroup(b.host, b.subset_name, str(b.port.number), eps, weight)


def _cluster(
    name: str,
    groups: list[LocalityGroup],
    policy: TrafficPolicy,
    options: TranslateOptions,
    dns: bool,
    weighted: bool,
    istio: bool = False,
) -> tuple[Cluster, ClusterLoadAssignment | None]:
    """A cluster and its ClusterLoadAssignment (None for DNS: no EDS for names, the
    assignment travels inside the cluster). ``istio``: with Istio's defaults."""
    cluster = build_cluster(
        name, policy, options, weighted_localities=weighted, dns=dns, least_request=istio
    )
    cla: ClusterLoadAssignment | None = build_load_assignment(name, groups)
    if dns:
        cluster.load_assignment.CopyFrom(cla)
        cla = None
    return cluster, cla


def _cluster_outputs(cluster: Cluster, cla: ClusterLoadAssignment | None) -> tuple[Output, ...]:
    if cla is None:
        return ((CLUSTER, cluster.name, cluster),)
    return (CLUSTER, cluster.name, cluster), (ENDPOINT, cluster.name, cla)


def _tcp_listener(
    port: int, options: TranslateOptions, clusters: list[tuple[str, int]], stat: str | None = None
) -> Listener:
    address, bind = options.listener_address, options.bind_port(port)
    listener: Listener = build_tcp_listener(port, address, bind, clusters, stat)
    return listener


def _is_dns(se: Resource) -> bool:
    return isinstance(se, ServiceEntry) and se.resolution == "DNS"


LOCALITY_SHAPE = (Phase(_route_clusters, _virtual_services, _is_route, True),)
ISTIO_SHAPE = (
    Phase(_subset_clusters, _services, _is_service, True),
    Phase(_weighted_listeners, _virtual_services, _is_route, True),
)
PROXYLESS = Phase(_grpc_targets, _grpc_services, lambda r: _is_service(r) and not _is_dns(r), False)
