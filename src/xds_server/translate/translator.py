"""Config -> Envoy resources. Pure: the same config and options always give the same
protos, so the output can be golden-tested and diffed to find what changed."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import replace
from typing import Any, NamedTuple

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
from .types import CLUSTER, ENDPOINT, LISTENER, Patch, Resources


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
        options = replace(
            options,
            eds_api_type=node.transport,
            xds_cluster=node.xds_cluster or options.xds_cluster,
        )
    memo.start_run(index.by_key, options, hint)
    phases = [*(ISTIO_SHAPE if options.split == ISTIO else LOCALITY_SHAPE)]
    if node.proxyless:
        phases.append(PROXYLESS)
    try:
        out = _patch(index, phases, options, memo) or _assemble(index, phases, options, memo)
    except BaseException:
        memo.units.abandon()
        raise
    memo.last = out
    return out


def translation_key(index: ConfigIndex, node: NodeProfile) -> Hashable:
    """What ``translate`` reads of ``node`` over ``index``: proxies whose keys are equal get
    the same resources, so they can share one translation (an Envoy labelled for the only
    Gateway gets what a proxy without labels gets)."""
    gateways = index.gateways
    served = frozenset(k for k, gw in gateways.items() if node.selects(gw.selector))
    served_key = None if len(served) == len(gateways) else served
    return (served_key, node.proxyless, node.transport, node.xds_cluster)


# --- Assembly ----------------------------------------------------------------------------
#
# Each output comes from one resource: what it translates to is kept in memo.units, so a
# change translates only the resources it touched. The outputs come in groups (a route's
# listener, cluster and assignment), and a shape is the groups of its phases' resources in
# namespace/name order.

Output = tuple[str, str, Message]  # (type URL, name, message)
Outputs = list[tuple[Output, ...]]  # a resource's groups


class Phase(NamedTuple):
    work: Callable[..., Outputs]  # (index, resource, options, memo) -> its groups
    members: Callable[[ConfigIndex], list[Any]]  # the resources it translates, in order
    member: Callable[[Resource], bool]  # whether it translates this one (no host clash)
    first_wins: bool  # a group whose first name is taken is left out (else it overwrites)


def _assemble(
    index: ConfigIndex, phases: list[Phase], options: TranslateOptions, memo: Memo
) -> Resources:
    """Every group of every phase. Notes what each resource made, and whether any name was
    made by two (then later changes assemble everything again: see _patch). Owners are
    told apart by key: equal outputs of two resources may be one object (Memo.settle)."""
    out = Resources()
    by_type = out.by_type()
    owners: dict[str, dict[str, Key]] = {t: {} for t in by_type}
    made: dict[Key, list[Outputs]] = {}
    exclusive = True
    for phase in phases:
        for r in phase.members(index):
            key = r.key
            groups = memo.units.get(r, index, phase.work, index, r, options, memo)
            made.setdefault(key, []).append(groups)
            for group in groups:
                first_type, first_name, _msg = group[0]
                if phase.first_wins and first_name in by_type[first_type]:
                    exclusive = False  # another resource came first (validation reports it)
                    continue
                for type_url, name, msg in group:
                    if owners[type_url].setdefault(name, key) != key:
                        exclusive = False
                    by_type[type_url][name] = msg
    memo.made, memo.exclusive = made, exclusive
    return out


def _patch(
    index: ConfigIndex, phases: list[Phase], options: TranslateOptions, memo: Memo
) -> Resources | None:
    """The last output with the groups of the resources this run may change replaced, or
    None if it cannot be: nothing kept, or a name made by two resources (before or now),
    where order decides which one is sent. A weight change in a 10k-service config then
    costs one VirtualService, not 10k dictionary entries."""
    keys = memo.units.pending
    if keys is None or not memo.exclusive or index.clashes:
        return None
    last = memo.last
    out = Resources(dict(last.listeners), dict(last.clusters), dict(last.endpoints))
    by_type = out.by_type()
    touched: dict[str, set[str]] = {t: set() for t in by_type}
    for key in keys:
        for groups in memo.made.get(key, ()):
            for group in groups:
                for type_url, name, _msg in group:
                    by_type[type_url].pop(name, None)
                    touched[type_url].add(name)
    made: dict[Key, list[Outputs]] = {}
    for key in sorted(keys):
        r = index.by_key.get(key)
        if r is None:
            continue
        mine: list[Outputs] = []
        made[key], names = mine, set()
        for phase in phases:
            if not phase.member(r):
                continue
            groups = memo.units.get(r, index, phase.work, index, r, options, memo)
            mine.append(groups)
            for group in groups:
                for type_url, name, msg in group:
                    if name in by_type[type_url] and (type_url, name) not in names:
                        return None  # made by another resource too: order decides
                    by_type[type_url][name] = msg
                    touched[type_url].add(name)
                    names.add((type_url, name))
    for key in keys:
        memo.made.pop(key, None)
    memo.made.update(made)
    out.patch = Patch(last, touched)
    return out


def _route_clusters(
    index: ConfigIndex, vs: VirtualService, options: TranslateOptions, memo: Memo
) -> Outputs:
    """Locality mode: (listener, cluster, assignment) per gateway port of one
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
        listener = _tcp_listener(br.port, options, [(cluster.name, 1)], memo)
        out.append(((LISTENER, listener.name, listener), *_cluster_outputs(cluster, cla)))
    return out


def _subset_clusters(
    index: ConfigIndex, se: ServiceEntry, options: TranslateOptions, memo: Memo
) -> Outputs:
    """Istio mode: like Istio, a cluster for every service port and subset, referenced or
    not, so that a route change never waits for a new cluster."""
    out = []
    for host in se.hosts:
        dr = index.destination_rule(host, se.meta.namespace)
        dr_subsets: list[Subset | None] = [None, *(dr.subsets if dr else [])]
        for port in se.ports:
            for subset in dr_subsets:
                b = Backend(host, se, port, subset, 1)
                name = subset_cluster_name(port.number, b.subset_name, host)
                groups, policy = [_group(index, b, None)], effective_policy(dr, subset)
                cluster, cla = _cluster(name, groups, policy, options, memo, _is_dns(se), False)
                out.append(_cluster_outputs(cluster, cla))
    return out


def _weighted_listeners(
    index: ConfigIndex, vs: VirtualService, options: TranslateOptions, memo: Memo
) -> Outputs:
    """Istio mode: a listener per gateway port, weighting the destinations' clusters."""
    out = []
    for br in vs_routes(index, vs):
        clusters = [
            (subset_cluster_name(b.port.number, b.subset_name, b.host), b.weight)
            for b in br.backends
        ]
        listener = _tcp_listener(br.port, options, clusters, memo)
        out.append(((LISTENER, listener.name, listener),))
    return out


def _grpc_targets(
    index: ConfigIndex, se: ServiceEntry, options: TranslateOptions, memo: Memo
) -> Outputs:
    """What a gRPC library client asks for: an API listener ``host:port`` per service port
    (the name in its ``xds:///host:port`` target), routing everything to Istio's
    ``outbound|port||host`` cluster. gRPC ignores localities without a weight, so each
    gets weight 1. DNS services are left out: gRPC has no STRICT_DNS clusters."""
    out = []
    for host in se.hosts:
        dr = index.destination_rule(host, se.meta.namespace)
        for port in se.ports:
            b = Backend(host, se, port, None, 1)
            name = subset_cluster_name(port.number, "", host)
            groups, policy = [_group(index, b, 1)], effective_policy(dr, None)
            cluster, cla = _cluster(name, groups, policy, options, memo, False, True)
            target = f"{host}:{port.number}"
            listener = memo.settle(memo.last.listeners, target, build_api_listener(target, name))
            out.append((*_cluster_outputs(cluster, cla), (LISTENER, target, listener)))
    return out


def _is_service(r: Resource) -> bool:
    return isinstance(r, ServiceEntry) and bool(r.hosts)


def _is_route(r: Resource) -> bool:
    return isinstance(r, VirtualService)


def _virtual_services(index: ConfigIndex) -> list[VirtualService]:
    return index.virtual_services


def _grpc_services(index: ConfigIndex) -> list[ServiceEntry]:
    return [se for se in _services(index) if not _is_dns(se)]


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


def _cluster_outputs(cluster: Message, cla: Message | None) -> tuple[Output, ...]:
    if cla is None:
        return ((CLUSTER, cluster.name, cluster),)
    return (CLUSTER, cluster.name, cluster), (ENDPOINT, cluster.name, cla)


def _tcp_listener(
    port: int, options: TranslateOptions, clusters: list[tuple[str, int]], memo: Memo
) -> Message:
    listener = build_tcp_listener(port, options.listener_address, options.bind_port(port), clusters)
    return memo.settle(memo.last.listeners, listener.name, listener)


def _is_dns(se: ServiceEntry) -> bool:
    return se.resolution == "DNS"


LOCALITY_SHAPE = (Phase(_route_clusters, _virtual_services, _is_route, True),)
ISTIO_SHAPE = (
    Phase(_subset_clusters, _services, _is_service, True),
    Phase(_weighted_listeners, _virtual_services, _is_route, True),
)
PROXYLESS = Phase(_grpc_targets, _grpc_services, lambda r: _is_service(r) and not _is_dns(r), False)
