"""Config -> Envoy resources. Pure: the same config and options always give the same
protos, so the output can be golden-tested and diffed to find what changed."""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import replace

from google.protobuf.message import Message

from ..config.index import ConfigIndex
from ..config.model import Key, Resource, ServiceEntry, Subset, TrafficPolicy, VirtualService
from ..config.routing import Backend, vs_routes
from .clusters import build_cluster, effective_policy, merge_policies
from .endpoints import LocalityGroup, build_load_assignment
from .listeners import build_api_listener, build_tcp_listener
from .memo import Memo
from .node import ADS, ANY_NODE, NodeProfile
from .options import ISTIO, TranslateOptions
from .types import Resources


def route_cluster_name(vs: VirtualService, index: int) -> str:
    """Locality mode: one cluster per route, named after the route, so that changing the
    route's destinations or weights never renames the cluster the listener points at."""
    return f"route|{vs.meta.namespace}/{vs.meta.name}|tcp[{index}]"


def subset_cluster_name(port: int, subset: str, host: str) -> str:
    """Istio's outbound cluster name."""
    return f"outbound|{port}|{subset}|{host}"


def translate(
    config: Iterable[Resource] | ConfigIndex,
    options: TranslateOptions,
    node: NodeProfile = ANY_NODE,
    memo: Memo | None = None,
    hint: set[Key] | None = None,
) -> Resources:
    """Translate a validated config for one kind of proxy (``node``: see translate/node.py;
    the default is a proxy without labels, served every Gateway). Invalid references are
    skipped, not reported: validation runs first and owns the messages. ``memo``: the
    previous runs' results for this kind of proxy, reused where still true (the output is
    the same either way; unchanged resources are the same objects). ``hint``: the keys in
    which the config may differ from the one of the memo's last run (None: any)."""
    memo = memo or Memo()
    index = config if isinstance(config, ConfigIndex) else ConfigIndex(config)
    if node.labels is not None:  # only the Gateways whose selector matches the proxy
        index = index.for_gateways(lambda gw: node.selects(gw.selector))
    if node.transport != ADS:
        options = replace(options, eds_api_type=node.transport)
    memo.start_run(index.by_key, options, hint)
    out = Resources()
    if options.split == ISTIO:
        _istio_shape(index, options, out, memo)
    else:
        _locality_shape(index, options, out, memo)
    if node.proxyless:
        _proxyless(index, options, out, memo)
    memo.last = out
    return out


def translation_key(index: ConfigIndex, node: NodeProfile) -> Hashable:
    """What ``translate`` reads of ``node`` over ``index``: proxies whose keys are equal get
    the same resources, so they can share one translation (an Envoy labelled for the only
    Gateway gets what a proxy without labels gets)."""
    gateways = index.gateways
    served = frozenset(k for k, gw in gateways.items() if node.selects(gw.selector))
    return (None if len(served) == len(gateways) else served, node.proxyless, node.transport)


# Each shape is assembled from what single resources translate to (kept in memo.units,
# so a change translates only the resources it touched), in namespace/name order.


def _locality_shape(index: ConfigIndex, options: TranslateOptions, out: Resources, memo: Memo):
    for vs in index.virtual_services:
        for cluster, cla, listener in memo.units.get(
            vs, index, _route_clusters, index, vs, options, memo
        ):
            if listener.name in out.listeners:
                continue  # another VirtualService came first (validation reports it)
            out.listeners[listener.name] = listener
            _add_cluster(out, cluster, cla)


def _route_clusters(
    index: ConfigIndex, vs: VirtualService, options: TranslateOptions, memo: Memo
) -> list[tuple[Message, Message | None, Message]]:
    """Locality mode: (cluster, assignment, listener) per gateway port of one
    VirtualService; a route's cluster carries its destinations as weighted localities."""
    clusters: dict[int, tuple[Message, Message | None]] = {}
    out = []
    for br in vs_routes(index, vs):
        if br.index not in clusters:
            rules = [index.destination_rule(b.host, b.service.meta.namespace) for b in br.backends]
            policy = merge_policies(
                effective_policy(dr, b.subset) for b, dr in zip(br.backends, rules, strict=True)
            )
            groups = [_group(index, b, b.weight) for b in br.backends]
            dns = any(_is_dns(b.service) for b in br.backends)
            name = route_cluster_name(vs, br.index)
            clusters[br.index] = _cluster(name, groups, policy, options, memo, dns, weighted=True)
        cluster, cla = clusters[br.index]
        out.append((cluster, cla, _tcp_listener(br.port, options, [(cluster.name, 1)], memo)))
    return out


def _istio_shape(index: ConfigIndex, options: TranslateOptions, out: Resources, memo: Memo):
    # Like Istio, a cluster for every service port and subset, referenced or not, so that a
    # route change never waits for a new cluster.
    for se in _services(index):
        for cluster, cla in memo.units.get(se, index, _subset_clusters, index, se, options, memo):
            if cluster.name not in out.clusters:
                _add_cluster(out, cluster, cla)
    for vs in index.virtual_services:
        for listener in memo.units.get(vs, index, _weighted_listeners, index, vs, options, memo):
            out.listeners.setdefault(listener.name, listener)


def _subset_clusters(
    index: ConfigIndex, se: ServiceEntry, options: TranslateOptions, memo: Memo
) -> list[tuple[Message, Message | None]]:
    out = []
    for host in se.hosts:
        dr = index.destination_rule(host, se.meta.namespace)
        dr_subsets: list[Subset | None] = [None, *(dr.subsets if dr else [])]
        for port in se.ports:
            for subset in dr_subsets:
                b = Backend(host, se, port, subset, 1)
                name = subset_cluster_name(port.number, b.subset_name, host)
                groups, policy = [_group(index, b, None)], effective_policy(dr, subset)
                out.append(_cluster(name, groups, policy, options, memo, _is_dns(se), False))
    return out


def _weighted_listeners(
    index: ConfigIndex, vs: VirtualService, options: TranslateOptions, memo: Memo
) -> list[Message]:
    """Istio mode: a listener per gateway port, weighting the destinations' clusters."""
    out = []
    for br in vs_routes(index, vs):
        clusters = [
            (subset_cluster_name(b.port.number, b.subset_name, b.host), b.weight)
            for b in br.backends
        ]
        out.append(_tcp_listener(br.port, options, clusters, memo))
    return out


def _proxyless(index: ConfigIndex, options: TranslateOptions, out: Resources, memo: Memo) -> None:
    """What a gRPC library client asks for: an API listener ``host:port`` per service port
    (the name in its ``xds:///host:port`` target), routing everything to Istio's
    ``outbound|port||host`` cluster. gRPC ignores localities without a weight, so each
    gets weight 1. DNS services are left out: gRPC has no STRICT_DNS clusters."""
    for se in _services(index):
        if _is_dns(se):
            continue
        for cluster, cla, listener in memo.units.get(
            se, index, _grpc_targets, index, se, options, memo
        ):
            _add_cluster(out, cluster, cla)
            out.listeners[listener.name] = listener


def _grpc_targets(
    index: ConfigIndex, se: ServiceEntry, options: TranslateOptions, memo: Memo
) -> list[tuple[Message, Message | None, Message]]:
    out = []
    for host in se.hosts:
        dr = index.destination_rule(host, se.meta.namespace)
        for port in se.ports:
            b = Backend(host, se, port, None, 1)
            name = subset_cluster_name(port.number, "", host)
            groups, policy = [_group(index, b, 1)], effective_policy(dr, None)
            cluster, cla = _cluster(name, groups, policy, options, memo, False, True)
            target = f"{host}:{port.number}"
            listener = build_api_listener(target, name)
            out.append((cluster, cla, memo.settle(memo.last.listeners, target, listener)))
    return out


# --- Pieces ----------------------------------------------------------------------------------


def _services(index: ConfigIndex) -> list[ServiceEntry]:
    """The ServiceEntries that own a host, each once, in namespace/name order."""
    return sorted({se.key: se for se in index.services.values()}.values(), key=lambda r: r.key)


def _group(index: ConfigIndex, b: Backend, weight: int | None) -> LocalityGroup:
    labels = b.subset.labels if b.subset else {}
    eps = tuple(index.subset_endpoints(b.service, b.port, labels))
    return LocalityGroup(b.host, b.subset_name, str(b.port.number), eps, weight)


def _cluster(
    name: str,
    groups: list[LocalityGroup],
    policy: TrafficPolicy,
    options: TranslateOptions,
    memo: Memo,
    dns: bool,
    weighted: bool,
) -> tuple[Message, Message | None]:
    """A cluster and its ClusterLoadAssignment (None for DNS: no EDS for names, the
    assignment travels inside the cluster), each the earlier object if unchanged."""
    cluster = build_cluster(name, policy, options, weighted_localities=weighted, dns=dns)
    cla: Message | None = build_load_assignment(name, groups)
    if dns:
        cluster.load_assignment.CopyFrom(cla)
        cla = None
    else:
        cla = memo.settle(memo.last.endpoints, name, cla)
    return memo.settle(memo.last.clusters, name, cluster), cla


def _add_cluster(out: Resources, cluster: Message, cla: Message | None) -> None:
    out.clusters[cluster.name] = cluster
    if cla is not None:
        out.endpoints[cluster.name] = cla


def _tcp_listener(
    port: int, options: TranslateOptions, clusters: list[tuple[str, int]], memo: Memo
) -> Message:
    listener = build_tcp_listener(port, options.listener_address, options.bind_port(port), clusters)
    return memo.settle(memo.last.listeners, listener.name, listener)


def _is_dns(se: ServiceEntry) -> bool:
    return se.resolution == "DNS"
