"""Config -> Envoy resources. Pure: the same config and options always give the same
protos, so the output can be golden-tested and diffed to find what changed."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from ..config.index import ConfigIndex
from ..config.model import Gateway, Resource, ServiceEntry, Subset, TrafficPolicy, VirtualService
from ..config.routing import Backend, BoundRoute, bind_routes
from .clusters import build_cluster, effective_policy, merge_policies
from .endpoints import LocalityGroup, build_load_assignment
from .listeners import build_api_listener, build_tcp_listener
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
) -> Resources:
    """Translate a validated config for one kind of proxy (``node``: see translate/node.py;
    the default is a proxy without labels, served every Gateway). Invalid references are
    skipped, not reported: validation runs first and owns the messages."""
    index = config if isinstance(config, ConfigIndex) else ConfigIndex(config)
    if node.labels is not None:  # only the Gateways whose selector matches the proxy
        index = ConfigIndex(
            r for r in index.resources if not isinstance(r, Gateway) or node.selects(r.selector)
        )
    if node.transport != ADS:
        options = replace(options, eds_api_type=node.transport)
    routes = bind_routes(index)
    out = Resources()
    if options.split == ISTIO:
        _istio_shape(index, routes, options, out)
    else:
        _locality_shape(index, routes, options, out)
    if node.proxyless:
        _proxyless(index, options, out)
    return out


def _proxyless(index: ConfigIndex, options: TranslateOptions, out: Resources) -> None:
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
                policy = effective_policy(index.destination_rule(host, se.meta.namespace), None)
                groups = [_group(index, b, 1)]
                _add_cluster(out, name, groups, policy, options, dns=False, weighted=True)
                listener = build_api_listener(f"{host}:{port.number}", name)
                out.listeners[listener.name] = listener


def _group(index: ConfigIndex, b: Backend, weight: int | None) -> LocalityGroup:
    labels = b.subset.labels if b.subset else {}
    eps = tuple(index.subset_endpoints(b.service, b.port, labels))
    return LocalityGroup(b.host, b.subset_name, str(b.port.number), eps, weight)


def _add_cluster(
    out: Resources,
    name: str,
    groups: list[LocalityGroup],
    policy: TrafficPolicy,
    options: TranslateOptions,
    *,
    dns: bool,
    weighted: bool,
) -> None:
    cluster = build_cluster(name, policy, options, weighted_localities=weighted, dns=dns)
    cla = build_load_assignment(name, groups)
    if dns:  # no EDS for names: the assignment travels inside the cluster
        cluster.load_assignment.CopyFrom(cla)
    else:
        out.endpoints[name] = cla
    out.clusters[name] = cluster


def _is_dns(se: ServiceEntry) -> bool:
    return se.resolution == "DNS"


def _locality_shape(
    index: ConfigIndex, routes: list[BoundRoute], options: TranslateOptions, out: Resources
) -> None:
    for br in routes:
        name = route_cluster_name(br.vs, br.index)
        if name not in out.clusters:
            policy = merge_policies(
                effective_policy(index.destination_rule(b.host, b.service.meta.namespace), b.subset)
                for b in br.backends
            )
            groups = [_group(index, b, b.weight) for b in br.backends]
            dns = any(_is_dns(b.service) for b in br.backends)
            _add_cluster(out, name, groups, policy, options, dns=dns, weighted=True)
        listener = build_tcp_listener(
            br.port, options.listener_address, options.bind_port(br.port), [(name, 1)]
        )
        out.listeners[listener.name] = listener


def _istio_shape(
    index: ConfigIndex, routes: list[BoundRoute], options: TranslateOptions, out: Resources
) -> None:
    # Like Istio, a cluster for every service port and subset, referenced or not, so that a
    # route change never waits for a new cluster.
    for se in sorted(index.services.values(), key=lambda s: s.key):
        for host in se.hosts:
            dr = index.destination_rule(host, se.meta.namespace)
            dr_subsets: list[Subset | None] = [None, *(dr.subsets if dr else [])]
            for port in se.ports:
                for subset in dr_subsets:
                    b = Backend(host, se, port, subset, 1)
                    name = subset_cluster_name(port.number, b.subset_name, host)
                    if name in out.clusters:
                        continue
                    groups = [_group(index, b, None)]
                    policy = effective_policy(dr, subset)
                    _add_cluster(
                        out, name, groups, policy, options, dns=_is_dns(se), weighted=False
                    )
    for br in routes:
        clusters = [
            (subset_cluster_name(b.port.number, b.subset_name, b.host), b.weight)
            for b in br.backends
        ]
        listener = build_tcp_listener(
            br.port, options.listener_address, options.bind_port(br.port), clusters
        )
        out.listeners[listener.name] = listener
