"""Config -> Envoy resources. Pure: the same config and options always give the same
protos, so the output can be golden-tested and diffed to find what changed."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace

from google.protobuf.message import Message

from ..config.index import ConfigIndex
from ..config.model import Gateway, Resource, ServiceEntry, Subset, TrafficPolicy, VirtualService
from ..config.routing import Backend, BoundRoute, bind_routes
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
) -> Resources:
    """Translate a validated config for one kind of proxy (``node``: see translate/node.py;
    the default is a proxy without labels, served every Gateway). Invalid references are
    skipped, not reported: validation runs first and owns the messages. ``memo``: the
    previous run's results for this kind of proxy, reused where their inputs are unchanged
    (the output is the same either way; unchanged resources are the same objects)."""
    memo = memo or Memo()
    memo.start_run()
    index = config if isinstance(config, ConfigIndex) else ConfigIndex(config)
    if node.labels is not None:  # only the Gateways whose selector matches the proxy
        index = ConfigIndex(
            r for r in index.resources if not isinstance(r, Gateway) or node.selects(r.selector)
        )
    if node.transport != ADS:
        options = replace(options, eds_api_type=node.transport)
    memo.routes.start_run(index.resources)
    routes = bind_routes(index, memo.routes)
    out = Resources()
    if options.split == ISTIO:
        _istio_shape(index, routes, options, out, memo)
    else:
        _locality_shape(index, routes, options, out, memo)
    if node.proxyless:
        _proxyless(index, options, out, memo)
    return out


def _proxyless(index: ConfigIndex, options: TranslateOptions, out: Resources, memo: Memo) -> None:
    """What a gRPC library client asks for: an API listener ``host:port`` per service port
    (the name in its ``xds:///host:port`` target), routing everything to Istio's
    ``outbound|port||host`` cluster. gRPC ignores localities without a weight, so each
    gets weight 1. DNS services are left out: gRPC has no STRICT_DNS clusters."""
    services = {se.key: se for se in index.services.values()}
    for _key, se in sorted(services.items()):
        if _is_dns(se):
            continue
        for host in se.hosts:
            for port in se.ports:
                b = Backend(host, se, port, None, 1)
                name = subset_cluster_name(port.number, "", host)
                dr = index.destination_rule(host, se.meta.namespace)
                _add_cluster(
                    out, memo, name, (b, dr, *index.selected(se)), options,
                    lambda b=b, dr=dr: ([_group(index, b, 1)], effective_policy(dr, None)),
                    dns=False, weighted=True,
                )  # fmt: skip
                target = f"{host}:{port.number}"
                out.listeners[target] = memo.get(
                    ("api", target), (name,), lambda t=target, n=name: build_api_listener(t, n)
                )


def _group(index: ConfigIndex, b: Backend, weight: int | None) -> LocalityGroup:
    labels = b.subset.labels if b.subset else {}
    eps = tuple(index.subset_endpoints(b.service, b.port, labels))
    return LocalityGroup(b.host, b.subset_name, str(b.port.number), eps, weight)


def _add_cluster(
    out: Resources,
    memo: Memo,
    name: str,
    inputs: tuple,
    options: TranslateOptions,
    plan: Callable[[], tuple[list[LocalityGroup], TrafficPolicy]],
    *,
    dns: bool,
    weighted: bool,
) -> None:
    """The cluster ``name`` (and its ClusterLoadAssignment), rebuilt only if ``inputs``
    (what ``plan`` reads, besides the options) changed since the last run."""

    def build() -> tuple[Message, Message]:
        groups, policy = plan()
        cluster = build_cluster(name, policy, options, weighted_localities=weighted, dns=dns)
        cla = build_load_assignment(name, groups)
        if dns:  # no EDS for names: the assignment travels inside the cluster
            cluster.load_assignment.CopyFrom(cla)
        return cluster, cla

    cluster, cla = memo.get(("cluster", name), (options, dns, weighted, *inputs), build)
    if not dns:
        out.endpoints[name] = cla
    out.clusters[name] = cluster


def _add_tcp_listener(
    out: Resources,
    memo: Memo,
    port: int,
    options: TranslateOptions,
    clusters: list[tuple[str, int]],
) -> None:
    address, bind = options.listener_address, options.bind_port(port)
    listener = memo.get(
        ("tcp", port),
        (address, bind, *clusters),
        lambda: build_tcp_listener(port, address, bind, clusters),
    )
    out.listeners[listener.name] = listener


def _is_dns(se: ServiceEntry) -> bool:
    return se.resolution == "DNS"


def _locality_shape(
    index: ConfigIndex,
    routes: list[BoundRoute],
    options: TranslateOptions,
    out: Resources,
    memo: Memo,
) -> None:
    for br in routes:
        name = route_cluster_name(br.vs, br.index)
        if name not in out.clusters:
            rules = [index.destination_rule(b.host, b.service.meta.namespace) for b in br.backends]

            def plan(br=br, rules=rules) -> tuple[list[LocalityGroup], TrafficPolicy]:
                policy = merge_policies(
                    effective_policy(dr, b.subset) for b, dr in zip(br.backends, rules, strict=True)
                )
                return [_group(index, b, b.weight) for b in br.backends], policy

            inputs = (*br.backends, *rules, *_workloads(index, br.backends))
            dns = any(_is_dns(b.service) for b in br.backends)
            _add_cluster(out, memo, name, inputs, options, plan, dns=dns, weighted=True)
        _add_tcp_listener(out, memo, br.port, options, [(name, 1)])


def _workloads(index: ConfigIndex, backends: Iterable[Backend]) -> list:
    """The WorkloadEntries behind some backends: endpoints are inputs too."""
    return [we for b in backends for we in index.selected(b.service)]


def _istio_shape(
    index: ConfigIndex,
    routes: list[BoundRoute],
    options: TranslateOptions,
    out: Resources,
    memo: Memo,
) -> None:
    # Like Istio, a cluster for every service port and subset, referenced or not, so that a
    # route change never waits for a new cluster.
    for se in sorted(index.services.values(), key=lambda s: s.key):
        workloads = index.selected(se)
        for host in se.hosts:
            dr = index.destination_rule(host, se.meta.namespace)
            dr_subsets: list[Subset | None] = [None, *(dr.subsets if dr else [])]
            for port in se.ports:
                for subset in dr_subsets:
                    b = Backend(host, se, port, subset, 1)
                    name = subset_cluster_name(port.number, b.subset_name, host)
                    if name in out.clusters:
                        continue

                    def plan(b=b, dr=dr) -> tuple[list[LocalityGroup], TrafficPolicy]:
                        return [_group(index, b, None)], effective_policy(dr, b.subset)

                    inputs = (b, dr, *workloads)
                    _add_cluster(
                        out, memo, name, inputs, options, plan, dns=_is_dns(se), weighted=False
                    )
    for br in routes:
        clusters = [
            (subset_cluster_name(b.port.number, b.subset_name, b.host), b.weight)
            for b in br.backends
        ]
        _add_tcp_listener(out, memo, br.port, options, clusters)
