"""Config -> Envoy resources. Pure: the same config and options always give the same
protos, so the output can be golden-tested and diffed to find what changed."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.endpoint.v3.endpoint_pb2 import ClusterLoadAssignment
from envoy.config.listener.v3.listener_pb2 import Listener
from google.protobuf.message import Message

from ..config.index import ConfigIndex
from ..config.model import Key, Resource, ServiceEntry, Subset, TrafficPolicy, VirtualService
from ..config.results import Results, Run
from ..config.routing import Backend, vs_routes
from .clusters import build_cluster, effective_policy, merge_policies
from .endpoints import LocalityGroup, build_load_assignment
from .listeners import build_api_listener, build_tcp_listener
from .node import ADS, ANY_NODE, NodeProfile
from .options import ISTIO, TranslateOptions
from .types import CLUSTER, ENDPOINT, LISTENER, PUSH_ORDER, Resources


def route_cluster_name(vs: VirtualService, index: int) -> str:
    """Locality mode: one cluster per route, named after the route, so that changing the
    route's destinations or weights never renames the cluster the listener points at."""
    return f"route|{vs.meta.namespace}/{vs.meta.name}|tcp[{index}]"


def subset_cluster_name(port: int, subset: str, host: str) -> str:
    """Istio's outbound cluster name."""
    return f"outbound|{port}|{subset}|{host}"


def profile_options(options: TranslateOptions, node: NodeProfile) -> TranslateOptions:
    """The options as ``node`` needs them (its EDS source, when it has no ADS)."""
    if node.transport == ADS:
        return options
    return replace(
        options, eds_api_type=node.transport, xds_cluster=node.xds_cluster or options.xds_cluster
    )


def profile_index(index: ConfigIndex, node: NodeProfile) -> ConfigIndex:
    """``index`` with only the Gateways whose selector matches the proxy."""
    if node.labels is None:
        return index
    return index.for_gateways(lambda gw: node.selects(gw.selector))


def translate(
    config: Iterable[Resource] | ConfigIndex,
    options: TranslateOptions,
    node: NodeProfile = ANY_NODE,
) -> Resources:
    """Translate a validated config for one kind of proxy (``node``: see translate/node.py;
    the default is a proxy without labels, served every Gateway). Invalid references are
    skipped, not reported: validation runs first and owns the messages."""
    index = config if isinstance(config, ConfigIndex) else ConfigIndex(config)
    out = Assembler(options, node).propose(index, Results().run(None)).resources
    assert out is not None  # a run with nothing kept assembles everything
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
# Each output comes from one resource, and what a resource translates to is a result of
# it (config/results.py), kept while the resource and what it requires are unchanged. The
# outputs come in groups (a route's listener, cluster and assignment), and a shape is the
# groups of its phases' resources in namespace/name order.

Output = tuple[str, str, Message]  # (type URL, name, message)
Outputs = list[tuple[Output, ...]]  # a resource's groups


class Phase(NamedTuple):
    work: Callable[[ConfigIndex, Any, TranslateOptions], Outputs]  # one resource's groups
    members: Callable[[ConfigIndex], list[Any]]  # the resources it translates, in order
    member: Callable[[Resource], bool]  # whether it translates this one (no host clash)
    first_wins: bool  # a group whose first name is taken is left out (else it overwrites)


@dataclass
class Update:
    """What one translation changes: the resources it gives, and how they differ from the
    ones its assembler last committed (by type URL: name -> message, and names gone)."""

    resources: Resources | None  # None for a patch: the committed ones, updated
    upserts: dict[str, dict[str, Message]]
    removals: dict[str, set[str]]
    owners: dict[str, dict[str, Key]] | None = None
    exclusive: bool = True

    @property
    def empty(self) -> bool:
        return not any(self.upserts.values()) and not any(self.removals.values())


class Assembler:
    """The translation for one kind of proxy: its resources as last committed, and who made
    each name. A change re-translates the stale resources (those of the change set, and
    those requiring what it changed) and replaces their outputs; where two resources make
    one name (a shadowed route, a host declared twice), order decides, so the whole output
    is assembled again."""

    def __init__(self, options: TranslateOptions, node: NodeProfile, scope: Hashable = None):
        self.options = profile_options(options, node)
        self.node = node
        self.scope = scope
        self.phases = [*(ISTIO_SHAPE if options.split == ISTIO else LOCALITY_SHAPE)]
        if node.proxyless:
            self.phases.append(PROXYLESS)
        self.resources = Resources()  # as last committed
        self.owners: dict[str, dict[str, Key]] = {t: {} for t in PUSH_ORDER}
        self.exclusive = False  # no name made by two resources: a change can be patched in

    def _outputs(self, phase: Phase, index: ConfigIndex, r: Resource, run: Run) -> Outputs:
        slot = (self.scope, phase.work.__name__)
        return run.get(r.key, slot, lambda: phase.work(index, r, self.options))

    def propose(self, config: ConfigIndex, run: Run) -> Update:
        """The translation of ``config``, which differs from the committed one where
        ``run.stale`` says."""
        index = profile_index(config, self.node)
        if run.stale is not None and self.exclusive and not index.clashes:
            update = self._patch(index, run)
            if update is not None:
                return update
        return self._assemble(index, run)

    def commit(self, update: Update) -> None:
        """``update`` is now what the proxies of this kind are served."""
        if update.resources is not None:
            self.resources, self.exclusive = update.resources, update.exclusive
            self.owners = update.owners or {t: {} for t in PUSH_ORDER}
            return
        by_type, owners = self.resources.by_type(), update.owners or {}
        for type_url, names in update.removals.items():
            for name in names:
                by_type[type_url].pop(name, None)
                self.owners[type_url].pop(name, None)
        for type_url, msgs in update.upserts.items():
            by_type[type_url].update(msgs)
        for type_url, made in owners.items():
            self.owners[type_url].update(made)

    def _assemble(self, index: ConfigIndex, run: Run) -> Update:
        """Every group of every phase, and how that differs from the committed output."""
        out = Resources()
        by_type = out.by_type()
        owners: dict[str, dict[str, Key]] = {t: {} for t in by_type}
        exclusive = True
        for phase in self.phases:
            for r in phase.members(index):
                key = r.key
                for group in self._outputs(phase, index, r, run):
                    first_type, first_name, _msg = group[0]
                    if phase.first_wins and first_name in by_type[first_type]:
                        exclusive = False  # another resource came first (validation reports it)
                        continue
                    for type_url, name, msg in group:
                        if owners[type_url].setdefault(name, key) != key:
                            exclusive = False
                        by_type[type_url][name] = msg
        before = self.resources.by_type()
        upserts = {t: {} for t in by_type}  # type: dict[str, dict[str, Message]]
        removals = {t: set() for t in by_type}  # type: dict[str, set[str]]
        for type_url, msgs in by_type.items():
            old = before[type_url]
            upserts[type_url] = {n: m for n, m in msgs.items() if old.get(n) != m}
            removals[type_url] = {n for n in old if n not in msgs}
        return Update(out, upserts, removals, owners, exclusive)

    def _patch(self, index: ConfigIndex, run: Run) -> Update | None:
        """The committed output with the groups of the stale resources replaced, or None
        if it cannot be: a name made by another resource too, where order decides which
        one is sent. A weight change in a 10k-service config then costs one
        VirtualService, not 10k dictionary entries."""
        assert run.stale is not None
        current = self.resources.by_type()
        removals: dict[str, set[str]] = {t: set() for t in current}
        for key in run.stale:
            for phase in self.phases:
                for group in run.committed(key, (self.scope, phase.work.__name__)) or ():
                    for type_url, name, _msg in group:
                        removals[type_url].add(name)
        upserts: dict[str, dict[str, Message]] = {t: {} for t in current}
        owners: dict[str, dict[str, Key]] = {t: {} for t in current}
        for key in sorted(run.stale):
            r = index.by_key.get(key)
            if r is None:
                continue
            for phase in self.phases:
                if not phase.member(r):
                    continue
                for group in self._outputs(phase, index, r, run):
                    for type_url, name, msg in group:
                        owner = owners[type_url].setdefault(name, key)
                        if owner != key or (
                            name not in removals[type_url] and name in current[type_url]
                        ):
                            return None  # made by another resource too: order decides
                        if current[type_url].get(name) != msg:
                            upserts[type_url][name] = msg
                        else:  # as committed (an earlier phase's version is overwritten)
                            upserts[type_url].pop(name, None)
        for type_url, made in owners.items():
            removals[type_url] -= made.keys()
        return Update(None, upserts, removals, owners)


def _route_clusters(index: ConfigIndex, vs: VirtualService, options: TranslateOptions) -> Outputs:
    """Locality mode: (listener, cluster, assignment) per gateway port of one
    VirtualService; a route's cluster carries its destinations as weighted localities."""
    clusters: dict[int, tuple[Cluster, ClusterLoadAssignment | None]] = {}
    out: Outputs = []
    for br in vs_routes(index, vs):
        if br.position not in clusters:
            rules = [index.destination_rule(b.host, b.service.meta.namespace) for b in br.backends]
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


def _subset_clusters(index: ConfigIndex, se: ServiceEntry, options: TranslateOptions) -> Outputs:
    """Istio mode: like Istio, a cluster for every service port and subset, referenced or
    not, so that a route change never waits for a new cluster."""
    out: Outputs = []
    for host in se.hosts:
        dr = index.destination_rule(host, se.meta.namespace)
        dr_subsets: list[Subset | None] = [None, *(dr.subsets if dr else [])]
        for port in se.ports:
            for subset in dr_subsets:
                b = Backend(host, se, port, subset, 1)
                name = subset_cluster_name(port.number, b.subset_name, host)
                groups, policy = [_group(index, b, None)], effective_policy(dr, subset)
                cluster, cla = _cluster(name, groups, policy, options, _is_dns(se), False)
                out.append(_cluster_outputs(cluster, cla))
    return out


def _weighted_listeners(
    index: ConfigIndex, vs: VirtualService, options: TranslateOptions
) -> Outputs:
    """Istio mode: a listener per gateway port, weighting the destinations' clusters."""
    out: Outputs = []
    for br in vs_routes(index, vs):
        clusters = [
            (subset_cluster_name(b.port.number, b.subset_name, b.host), b.weight)
            for b in br.backends
        ]
        listener = _tcp_listener(br.port, options, clusters)
        out.append(((LISTENER, listener.name, listener),))
    return out


def _grpc_targets(index: ConfigIndex, se: ServiceEntry, options: TranslateOptions) -> Outputs:
    """What a gRPC library client asks for: an API listener ``host:port`` per service port
    (the name in its ``xds:///host:port`` target), routing everything to Istio's
    ``outbound|port||host`` cluster. gRPC ignores localities without a weight, so each
    gets weight 1. DNS services are left out: gRPC has no STRICT_DNS clusters."""
    out: Outputs = []
    for host in se.hosts:
        dr = index.destination_rule(host, se.meta.namespace)
        for port in se.ports:
            b = Backend(host, se, port, None, 1)
            name = subset_cluster_name(port.number, "", host)
            groups, policy = [_group(index, b, 1)], effective_policy(dr, None)
            cluster, cla = _cluster(name, groups, policy, options, False, True)
            target = f"{host}:{port.number}"
            listener = build_api_listener(target, name)
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
    dns: bool,
    weighted: bool,
) -> tuple[Cluster, ClusterLoadAssignment | None]:
    """A cluster and its ClusterLoadAssignment (None for DNS: no EDS for names, the
    assignment travels inside the cluster)."""
    cluster = build_cluster(name, policy, options, weighted_localities=weighted, dns=dns)
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
    port: int, options: TranslateOptions, clusters: list[tuple[str, int]]
) -> Listener:
    address, bind = options.listener_address, options.bind_port(port)
    listener: Listener = build_tcp_listener(port, address, bind, clusters)
    return listener


def _is_dns(se: Resource) -> bool:
    return isinstance(se, ServiceEntry) and se.resolution == "DNS"


LOCALITY_SHAPE = (Phase(_route_clusters, _virtual_services, _is_route, True),)
ISTIO_SHAPE = (
    Phase(_subset_clusters, _services, _is_service, True),
    Phase(_weighted_listeners, _virtual_services, _is_route, True),
)
PROXYLESS = Phase(_grpc_targets, _grpc_services, lambda r: _is_service(r) and not _is_dns(r), False)
