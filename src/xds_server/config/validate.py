"""Istio's semantic rules and cross-references, checked before translation.

Envoy accepts a cluster with no endpoints or a route to a subset nobody defined; it just
drops the traffic. Checking here turns those silent failures into messages that point at
the field to fix. Rules follow https://istio.io/latest/docs/reference/config/networking/.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable, Iterable, Sequence

from .errors import (
    ConfigError,
    Problem,
    Reporter,
    describe,
    errors_of,
    item,
    join,
    known_hint,
    sort_problems,
    warnings_of,
)
from .index import CLUSTER_DOMAIN, ConfigIndex, canonical_host, exported, hosts_match, is_mesh
from .model import (
    DestinationRule,
    Gateway,
    Key,
    KubernetesService,
    L4Match,
    Port,
    Resource,
    RouteDestination,
    ServiceEntry,
    TCPRoute,
    TrafficPolicy,
    VirtualService,
    WorkloadEndpoint,
    WorkloadEntry,
)
from .results import Results, Run
from .routing import MESH, attaches, route_bindings
from .schema import (
    DNS1123_LABEL_RULE,
    ISTIO_LABEL_RULE,
    domain_problem,
    export_to_problems,
    is_dns1123_label,
    is_dns1123_subdomain,
    is_istio_label,
    is_protocol,
    label_problems,
)

MAX_PORT = 65535
# Each number Envoy is sent must fit its type there and in Istio's API: route weights and
# maxConnections are int32 in Istio, endpoint weights uint32; Envoy adds a route's weights
# into a uint32; a duration must fit Go's time.Duration (int64 nanoseconds), the range
# Istio's CRD validation accepts and well inside google.protobuf.Duration's.
INT32_MAX = 2**31 - 1
UINT32_MAX = 2**32 - 1
MAX_DURATION_S = 9223372036.854  # (2**63 - 1) ns, to the ms
MAX_DURATION = "2562047h47m16.854s"  # the same, as Go prints it


# --- Small shared checks -------------------------------------------------------------------


def _number(value: int) -> str:
    """A number for a message: a huge one is shown by its size, not its digits."""
    text = str(value)
    return text if len(text) <= 24 else f"a number of {len(text)} digits"


def _in_range(
    rep: Reporter, parent: str, field: str, value: int | None, low: int, high: int
) -> None:
    """(``parent`` and ``field`` make the path only for a problem: checks run 30k times.)"""
    if value is not None and not low <= value <= high:
        bound = f"{low} or more" if value < low else f"at most {high}"
        rep.add(join(parent, field), f"must be {bound}, got {_number(value)}")


def _port_number(rep: Reporter, parent: str, field: str, number: int | None) -> None:
    if number is not None and not 1 <= number <= MAX_PORT:
        message = f"must be a port number 1..{MAX_PORT}, got {_number(number)}"
        rep.add(join(parent, field), message)


def _port(rep: Reporter, path: str, port: Port) -> None:
    _port_number(rep, path, "number", port.number)
    _port_number(rep, path, "targetPort", port.target_port)


def _subset_name(rep: Reporter, path: str, name: str) -> bool:
    if not name:
        rep.add(path, "required")
    elif not is_istio_label(name):
        rep.add(path, f"{ISTIO_LABEL_RULE}, got {describe(name)}")
    else:
        return True
    return False


def _labels(rep: Reporter, parent: str, field: str, labels: dict[str, str]) -> None:
    for key, message in label_problems(labels):  # (the path only for a problem: at 10k)
        rep.add(join(join(parent, field), key), message)


def _export_to(rep: Reporter, r: Resource, entries: list[str]) -> None:
    service_entry = isinstance(r, ServiceEntry)
    for message in export_to_problems(entries, r.meta.namespace, service_entry):
        rep.add("spec.exportTo", message)


DRY_RUN = "istio.io/dry-run"


def _check_common(r: Resource, rep: Reporter) -> None:
    """What Istio checks on every kind's metadata."""
    if DRY_RUN in r.meta.annotations:  # only AuthorizationPolicy takes it
        message = f"{r.ref} has unsupported annotation {DRY_RUN}, please remove the annotation"
        rep.add(join("metadata.annotations", DRY_RUN), message)


def _is_ip_or_cidr(address: str) -> bool:
    try:
        ipaddress.ip_network(address, strict=False)
    except ValueError:
        return False
    return True


@functools.lru_cache(maxsize=4096)  # a config repeats its addresses; parsing one is ~20 µs
def _is_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


def _ref(resource: Resource) -> str:
    return f"{resource.kind} {resource.ref}"


def _numbers(ports: Sequence[Port]) -> str:
    return ", ".join(str(p.number) for p in ports)


# --- Gateway -------------------------------------------------------------------------------


def _partial_wildcard(host: str) -> str | None:
    """Istio's ValidatePartialWildCard: a wildcard only as ``*`` or a ``*.`` prefix."""
    if "*" in host and host != "*" and not host.startswith("*."):
        return f"partial wildcard {describe(host)} not allowed"
    return None


def _gateway_host(rep: Reporter, path: str, host: str) -> None:
    """Istio's ValidateNamespaceSlashWildcardHostname for a Gateway: ``[ns/]dnsName``, the
    namespace ``*``, ``.`` or a DNS label, the name an FQDN, an IP or ``*``, a wildcard
    only as the whole first label."""
    ns, slash, name = host.rpartition("/") if "/" in host else ("", "", host)
    if slash and (not ns or not name):
        rep.add(path, "config namespace and dnsName in host entry cannot be empty")
        return
    if slash and ns not in ("*", ".") and not is_istio_label(ns):
        rep.add(path, f"invalid namespace value {describe(ns)} in gateway")
    if name != "*" and "." not in name:
        rep.add(path, "short names (non FQDN) are not allowed")
    elif (problem := domain_problem(name)) is not None and not _is_ip(name):
        rep.add(path, problem)
    if (problem := _partial_wildcard(name)) is not None:
        rep.add(path, problem)


def _check_gateway(gw: Gateway, rep: Reporter, index: ConfigIndex) -> None:
    if not is_istio_label(gw.meta.name):
        rep.add("metadata.name", f"invalid gateway name: {describe(gw.meta.name)}")
    if not gw.servers:
        rep.add("spec.servers", "at least one server is required")
    names: dict[str, int] = {}
    for i, server in enumerate(gw.servers):
        path = item("spec.servers", i)
        port = server.port
        _port_number(rep, path, "port.number", port.number)
        if not is_protocol(port.protocol):
            supported = "HTTP, HTTP2, GRPC, GRPC-WEB, MONGO, REDIS, MYSQL, TCP"
            message = f"invalid protocol {describe(port.protocol)}, supported protocols are "
            rep.add(join(path, "port.protocol"), message + supported)
        elif port.protocol.upper() != "TCP":
            message = f"only TCP servers are supported, got {describe(port.protocol)}"
            rep.add(join(path, "port.protocol"), message)
        if port.target_port:
            rep.add(join(path, "port.targetPort"), "targetPort has no impact on Gateways")
        if not port.name:
            rep.add(join(path, "port.name"), "port name must be set")
        elif port.name in names:
            message = f"port names in servers must be unique: duplicate name {port.name}"
            rep.add(join(path, "port.name"), message)
        names.setdefault(port.name, i)
        if server.bind and not server.bind.startswith("unix://") and not _is_ip(server.bind):
            rep.add(join(path, "bind"), f"{server.bind} is not a valid IP")
        if not server.hosts:
            rep.add(join(path, "hosts"), "at least one host is required", 'use ["*"] for any host')
        for j, host in enumerate(server.hosts):
            _gateway_host(rep, item(join(path, "hosts"), j), host)


def _selector(gw: Gateway) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(gw.selector.items()))


def _overlapping(a: Iterable[str], b: Iterable[str]) -> list[str]:
    """The hosts of ``b`` that some host of ``a`` matches (namespaces aside)."""
    names_a = [h.rpartition("/")[2] for h in a]
    return [h for h in b if any(hosts_match(x, h.rpartition("/")[2]) for x in names_a)]


def _may_select_one_proxy(a: Gateway, b: Gateway) -> bool:
    """Whether one proxy's labels can match both selectors (an empty one matches all)."""
    return all(a.selector[k] == b.selector[k] for k in a.selector.keys() & b.selector.keys())


def _check_gateway_ports(index: ConfigIndex, problems: list[Problem]) -> None:
    """One listener serves a port on a proxy. Istio keeps the first server of a port and
    drops the others (for proxies that two Gateways select, as for one Gateway listing a
    port twice); Gateways whose selectors pick different proxies share a port freely."""
    owners: dict[int, list[tuple[Gateway, int]]] = {}
    for gw in index.gateways.values():
        for i, server in enumerate(gw.servers):
            number = server.port.number
            others = owners.setdefault(number, [])
            owner = next((o for o in others if _may_select_one_proxy(o[0], gw)), None)
            others.append((gw, i))
            if owner is None:
                continue
            rep = Reporter.for_resource(gw, problems)
            path, owner_path = item("spec.servers", i), item("spec.servers", owner[1])
            first = owner[0]
            if first is not gw and first.selector == gw.selector:
                hosts = _overlapping(first.servers[owner[1]].hosts, server.hosts)
                if hosts:  # istioctl analyze's IST0145, an error
                    message = f"Conflict with gateways {first.ref} (workload selector "
                    message += f"{_selector(gw)}, port {number}, hosts {', '.join(hosts)})"
                    rep.add(join(path, "port.number"), message, None, "IST0145")
                    continue
            where = owner_path if first is gw else f"{_ref(first)} ({owner_path})"
            if server.bind != first.servers[owner[1]].bind:  # stricter than Istio: see README
                message = f"port {number} is already served by {where}, with another bind: "
                message += "one listener serves a port here, so this bind would get its route"
                rep.add(join(path, "bind"), message, "use another port")
                continue
            message = f"port {number} is already served by {where}: this server is dropped"
            hint = None
            if first is not gw:
                hint = "on a proxy both select, the first Gateway in namespace/name order "
                hint += "serves a port"
            rep.warn(join(path, "port.number"), message, hint)


# --- VirtualService ------------------------------------------------------------------------


def _gateway_refs(
    rep: Reporter, path: str, refs: Sequence[str], vs: VirtualService, index: ConfigIndex
) -> list[Gateway]:
    """The Gateways ``refs`` name; unknown ones are reported and ``mesh`` (sidecars, not
    served here) is skipped. Names are Istio's: ``ns/name``, ``name``, or the legacy
    ``name.ns[.svc.cluster.local]`` (a warning)."""
    found = []
    for i, ref in enumerate(refs):
        if ref == MESH:
            continue
        rpath = item(path, i)
        ns, slash, name = ref.partition("/")
        if slash and (not ns or not name):
            rep.add(rpath, "config namespace and gateway name cannot be empty")
            continue
        if slash and not (is_istio_label(ns) and is_istio_label(name)):
            bad = ("namespace", ns) if not is_istio_label(ns) else ("gateway name", name)
            rep.add(rpath, f"invalid value for {bad[0]}: {describe(bad[1])}")
            continue
        if not slash and (problem := domain_problem(ref, wildcard=False)) is not None:
            rep.add(rpath, problem)
            continue
        if not slash and "." in ref:
            parts = ref.split(".")
            message = f"using legacy gatewayName format {describe(ref)}; prefer the "
            message += f'<namespace>/<name> format: "{parts[1]}/{parts[0]}"'
            rep.warn(rpath, message)
        gw = index.gateway(ref, vs.meta.namespace)
        if gw is None:
            known = [g.ref for g in index.gateways.values()]
            message = f'unknown gateway "{ref}"'
            rep.add(rpath, message, known_hint(ref, known, "gateways"), "IST0101")
        else:
            found.append(gw)
    return found


def _check_match(
    rep: Reporter, mpath: str, match: L4Match, vs: VirtualService, index: ConfigIndex
) -> None:
    ns = vs.meta.namespace
    gateways = []
    if match.gateways:  # they replace spec.gateways for this match, as in Istio
        gateways = _gateway_refs(rep, join(mpath, "gateways"), match.gateways, vs, index)
    if match.port is None:
        return
    _port_number(rep, mpath, "port", match.port)
    if not match.gateways:
        found = (index.gateway(g, ns) for g in vs.gateways if g != MESH)
        gateways = [g for g in found if g is not None]
    if gateways and not any(match.port in index.server_ports(g) for g in gateways):
        ports = [s.port for g in gateways for s in g.servers]
        names = ", ".join(g.ref for g in gateways)
        message = f"no gateway among [{names}] listens on port {match.port}: the match is unused"
        rep.warn(join(mpath, "port"), message, f"server ports: {_numbers(ports)}")


def _check_destination(
    rep: Reporter, path: str, dest: RouteDestination, vs: VirtualService, index: ConfigIndex
) -> None:
    d = dest.destination
    dpath = join(path, "destination")
    ns = vs.meta.namespace
    if d.subset is not None:
        _subset_name(rep, join(dpath, "subset"), d.subset)
    _port_number(rep, dpath, "port.number", d.port)
    _in_range(rep, path, "weight", dest.weight, 0, INT32_MAX)
    if not d.host:
        rep.add(join(dpath, "host"), "required")
        return
    se = index.service(d.host, ns)
    if se is None and (hidden := index.declared_service(d.host, ns)) is not None:
        message = f'host "{d.host}" is not exported to namespace {ns} by {_ref(hidden)}'
        rep.add(join(dpath, "host"), message, "see its spec.exportTo", "IST0101")
        return
    if se is None:  # the hosts as a route in this namespace can name them
        suffix = f".{ns}.{CLUSTER_DOMAIN}"
        hosts = [h.removesuffix(suffix) for h in index.services]
        hint = known_hint(d.host, hosts, "hosts")
        if (literal := index.services.get(d.host)) is not None:  # a short host, read literally
            hint = f'{_ref(literal)} declares "{d.host}", which Istio reads literally, while a '
            hint += f"route's {d.host} means {canonical_host(d.host, ns)}: describe the "
            hint += "service with a Kubernetes Service (kind: Service), or write the full host"
        rep.add(join(dpath, "host"), f'unknown host "{d.host}"', hint, "IST0101")
        return
    if d.host in se.hosts and "." not in d.host and not isinstance(se, KubernetesService):
        message = f'{_ref(se)} declares "{d.host}", which Istio reads literally: Istio finds '
        message += f"no service {canonical_host(d.host, ns)} for this route (IST0101); "
        message += "routed here, as by earlier versions"
        hint = "describe the service with a Kubernetes Service (kind: Service), or write the "
        hint += "full host in both"
        rep.warn(join(dpath, "host"), message, hint)
    if se.resolution == "NONE":  # stricter than Istio, which passes it on to the gateway
        message = f"{_ref(se)} has resolution NONE (the default): a gateway has no address to "
        message += "pass the connection on to"
        hint = "set resolution: STATIC (endpoints or a workloadSelector) or DNS"
        rep.add(join(dpath, "host"), message, hint)
        return
    if d.subset and index.subset(d.host, ns, d.subset) is None:
        rep.add(
            join(dpath, "subset"), f'unknown subset "{d.subset}"', _subsets_hint(d.host, ns, index)
        )
    if index.service_port(se, d.port) is None:
        if d.port is None:
            rep.add(join(dpath, "port"), f"port required: service has ports {_numbers(se.ports)}")
        else:
            message = f"service {d.host} has no port {d.port}"
            rep.add(join(dpath, "port.number"), message, f"ports: {_numbers(se.ports)}")


def _subsets_hint(host: str, namespace: str, index: ConfigIndex) -> str:
    dr = index.destination_rule(host, namespace)
    if dr is None:
        return f"no DestinationRule defines subsets for {host}"
    return f"defined subsets for {host}: {', '.join(s.name for s in dr.subsets)}"


def _check_weights(rep: Reporter, path: str, route: TCPRoute) -> None:
    """A lone destination may omit its weight; among several, omitted weights count as 0
    (Istio's rule), so something must be positive."""
    total = sum(max(d.weight or 0, 0) for d in route.route)
    if len(route.route) > 1 and total <= 0:
        hint = "omitted weights count as 0 when there are several destinations"
        rep.add(join(path, "route"), "weights must sum to more than 0", hint)
    elif total > UINT32_MAX and all(0 <= (d.weight or 0) <= INT32_MAX for d in route.route):
        message = f"weights must sum to at most {UINT32_MAX}, got {_number(total)}"
        rep.add(join(path, "route"), message, "weights are relative: divide them all by one number")


def _destination_key(d: RouteDestination, namespace: str) -> tuple[str, str | None, int | None]:
    dest = d.destination
    return (canonical_host(dest.host, namespace), dest.subset, dest.port)


def _check_route(
    rep: Reporter, path: str, route: TCPRoute, vs: VirtualService, index: ConfigIndex
) -> None:
    for j, match in enumerate(route.match):
        _check_match(rep, item(join(path, "match"), j), match, vs, index)
    if not route.route:
        rep.add(join(path, "route"), "at least one destination is required")
    for j, dest in enumerate(route.route):  # one listed twice: Istio adds the weights up
        _check_destination(rep, item(join(path, "route"), j), dest, vs, index)
    _check_weights(rep, path, route)


def _check_vs_hosts(rep: Reporter, vs: VirtualService) -> None:
    """Istio's rules: each a host name (a wildcard first label allowed) or an IP; ``*`` not
    for the mesh (no gateways, or ``mesh`` among them); no host matching another."""
    if not vs.hosts:
        rep.add("spec.hosts", "at least one host is required", 'use ["*"] for any host')
    mesh = is_mesh(vs)
    valid = True
    for i, host in enumerate(vs.hosts):
        if (problem := domain_problem(host)) is not None and not _is_ip(host):
            rep.add(item("spec.hosts", i), problem)
            valid = False
        elif mesh and host == "*":
            message = (
                "wildcard host * is not allowed for virtual services bound to the mesh gateway"
            )
            rep.add(item("spec.hosts", i), message)
            valid = False
    if valid:
        for i, a in enumerate(vs.hosts):
            for j in range(i + 1, len(vs.hosts)):
                if hosts_match(a, b := vs.hosts[j]):
                    rep.add(item("spec.hosts", j), f"duplicate hosts in virtual service: {a} & {b}")


def _check_virtual_service(vs: VirtualService, rep: Reporter, index: ConfigIndex) -> None:
    _check_vs_hosts(rep, vs)
    _export_to(rep, vs, vs.export_to)
    _gateway_refs(rep, "spec.gateways", vs.gateways, vs, index)
    for i, ref in enumerate(vs.gateways):
        gw = index.gateway(ref, vs.meta.namespace) if ref != MESH else None
        if gw is not None and vs.export_to and not exported(vs, gw.meta.namespace):
            message = f"VirtualService {vs.ref} is not exported to namespace "
            message += f"{gw.meta.namespace} of Gateway {gw.ref}: nothing is routed through it"
            rep.warn(item("spec.gateways", i), message, "see spec.exportTo")
        elif gw is not None and not attaches(vs, gw):  # istioctl analyze's IST0132, a warning
            hosts = ", ".join(vs.hosts)
            message = f"one or more host [{hosts}] defined in VirtualService {vs.ref} not found "
            message += f"in Gateway {gw.ref}: nothing is routed through it"
            rep.warn(item("spec.gateways", i), message, None, "IST0132")
    if not vs.tcp:
        rep.add("spec.tcp", "at least one tcp route is required")
    for i, route in enumerate(vs.tcp):
        _check_route(rep, item("spec.tcp", i), route, vs, index)
    _check_reachable(rep, vs)


def _covers(earlier: L4Match | None, later: L4Match | None) -> bool:
    """Whether every connection ``later`` matches is matched by ``earlier`` (None: a
    route without matches, which takes everything)."""
    if earlier is None:
        return True
    if later is None:
        return False
    port = earlier.port is None or earlier.port == later.port
    gateways = not earlier.gateways or (
        bool(later.gateways) and set(later.gateways) <= set(earlier.gateways)
    )
    return port and gateways


def _check_reachable(rep: Reporter, vs: VirtualService) -> None:
    """istioctl analyze's IST0130 and IST0131: the first matching route takes a
    connection, so a route (or one of its matches) that earlier ones cover is unused."""
    for i, route in enumerate(vs.tcp):
        matches: list[L4Match | None] = list(route.match) or [None]
        covered = []
        for k, m in enumerate(matches):
            by = next(
                (
                    (j, n)
                    for j, before in enumerate(vs.tcp[:i])
                    for n, e in enumerate(list(before.match) or [None])
                    if _covers(e, m)
                ),
                None,
            )
            if by is not None:
                covered.append((k, by))
        if covered and len(covered) == len(matches):
            j = covered[0][1][0]
            why = (
                "only the last rule can have no matches"
                if not vs.tcp[j].match
                else (f"duplicate/overlapping match in rule #{j}")
            )
            rep.warn(
                item("spec.tcp", i), f"VirtualService rule #{i} not used ({why})", None, "IST0130"
            )
        else:
            for k, (j, n) in covered:
                message = f"VirtualService rule #{i} match #{k} of tcp is not used "
                message += f"(duplicate/overlapping match in rule #{j} match #{n})"
                rep.warn(item(join(item("spec.tcp", i), "match"), k), message, None, "IST0131")


Claim = tuple[int, Gateway, int]  # (position in spec.tcp, gateway, server port)
ClaimKey = tuple[Key, int]  # (gateway key, server port)


def _claims(index: ConfigIndex, vs: VirtualService) -> list[Claim]:
    """Each binding of each route."""
    return [
        (i, gw, port)
        for i, route in enumerate(vs.tcp)
        for gw, port in route_bindings(index, vs, route)
    ]


# --- DestinationRule -----------------------------------------------------------------------


def _check_traffic_policy(rep: Reporter, path: str, policy: TrafficPolicy | None) -> None:
    if policy is None:
        return
    tcp = join(path, "connectionPool.tcp")
    timeout = policy.connect_timeout
    if timeout is not None and timeout < 1e-3:  # Istio's ValidateDuration
        rep.add(join(tcp, "connectTimeout"), "duration must be greater than 1ms")
    elif timeout is not None and round(timeout * 1e9) % 1_000_000:
        rep.add(join(tcp, "connectTimeout"), "only durations to ms precision are supported")
    elif timeout is not None and timeout > MAX_DURATION_S:
        rep.add(join(tcp, "connectTimeout"), f"must be at most {MAX_DURATION}")
    _in_range(rep, tcp, "maxConnections", policy.max_connections, 0, INT32_MAX)


def _check_destination_rule(dr: DestinationRule, rep: Reporter, index: ConfigIndex) -> None:
    if not dr.host:
        rep.add("spec.host", "required")
    elif (problem := domain_problem(dr.host)) is not None:
        rep.add("spec.host", problem)
    _export_to(rep, dr, dr.export_to)
    _check_traffic_policy(rep, "spec.trafficPolicy", dr.traffic_policy)
    seen: dict[str, int] = {}
    for i, subset in enumerate(dr.subsets):
        path = item("spec.subsets", i)
        if _subset_name(rep, join(path, "name"), subset.name) and subset.name in seen:
            first = item("spec.subsets", seen[subset.name])
            rep.add(join(path, "name"), f'duplicate subset name "{subset.name}" (also {first})')
        seen.setdefault(subset.name, i)
        _labels(rep, path, "labels", subset.labels)
        _check_traffic_policy(rep, join(path, "trafficPolicy"), subset.traffic_policy)


# --- ServiceEntry and WorkloadEntry --------------------------------------------------------


def _check_workload(
    rep: Reporter,
    path: str,
    ep: WorkloadEndpoint,
    port_names: set[str] | None,
    static_by: str | None,
    port_names_by: str = "",
) -> None:
    """An endpoint, inline or a WorkloadEntry (Istio's validateWorkloadEntry).
    ``port_names``: what ``ports`` keys must be (None: any); ``static_by``: why the
    address must be an IP, if it must; ``port_names_by``: the ServiceEntries that select
    a WorkloadEntry, whose port names its ports should be (a warning: Istio does not
    check them, and a port of another name is not used)."""
    apath = join(path, "address")
    if not ep.address and ep.network:
        rep.warn(apath, f'address is unset with network "{ep.network}": not routed here')
    elif not ep.address:
        rep.add(apath, "required")
    elif static_by and not _is_ip(ep.address):
        message = f"must be an IP address ({static_by}), got {describe(ep.address)}"
        rep.add(apath, message, "use resolution: DNS for host names")
    elif not (_is_ip(ep.address) or is_dns1123_subdomain(ep.address.lower())):
        rep.add(apath, f"must be an IP address or a DNS name, got {describe(ep.address)}")
    for name, number in ep.ports.items():
        ppath = join(join(path, "ports"), name)
        _port_number(rep, join(path, "ports"), name, number)
        if not is_istio_label(name):
            rep.add(ppath, f"invalid port name: {describe(name)}")
        elif port_names is not None and name not in port_names:
            hint = known_hint(name, port_names, "port names")
            message = f'"{name}" is not the name of a service port'
            if port_names_by:
                rep.warn(ppath, f"{message} of {port_names_by}: not used", hint)
            else:
                rep.add(ppath, f"endpoint port {number} is not defined by the service entry", hint)
    _labels(rep, path, "labels", ep.labels)
    _in_range(rep, path, "weight", ep.weight, 0, UINT32_MAX)


def _check_service_ports(rep: Reporter, se: ServiceEntry) -> None:
    names: dict[str, int] = {}
    numbers: dict[int, int] = {}
    for i, port in enumerate(se.ports):
        path = item("spec.ports", i)
        _port(rep, path, port)
        if not port.name:
            rep.add(join(path, "name"), "required", "endpoints map ports by name")
        elif not is_istio_label(port.name):
            rep.add(join(path, "name"), f"invalid port name: {port.name}")
        elif port.name in names:
            rep.add(
                join(path, "name"),
                f'duplicate port name "{port.name}" (also ports[{names[port.name]}])',
            )
        if port.protocol and not is_protocol(port.protocol):
            rep.add(join(path, "protocol"), f"unsupported protocol: {port.protocol}")
        if port.number in numbers:
            message = f"duplicate port number {port.number} (also ports[{numbers[port.number]}])"
            rep.add(join(path, "number"), message)
        names.setdefault(port.name, i)
        numbers.setdefault(port.number, i)


_NOT_TCP = ("HTTP", "HTTPS", "HTTP2", "GRPC", "GRPC-WEB", "HTTP_PROXY", "TLS")


def _check_service_hosts(rep: Reporter, se: ServiceEntry) -> None:
    """Istio's host rules for a ServiceEntry: not ``*``, each a host name with at most a
    wildcard first label; with DNS and no endpoints, FQDNs; several only with HTTP or TLS
    ports (TCP cannot tell them apart), unless the resolution is NONE."""
    if not se.hosts:
        rep.add("spec.hosts", "at least one host is required")
    for i, host in enumerate(se.hosts):
        path = item("spec.hosts", i)
        if host == "*":
            rep.add(path, "invalid host *")
        elif (problem := domain_problem(host)) is not None:
            rep.add(path, problem)
        elif (problem := _partial_wildcard(host)) is not None:
            rep.warn(path, problem)
        elif se.resolution == "DNS" and not se.endpoints and domain_problem(host, wildcard=False):
            message = "hosts must be FQDN or contain only prefix wildcards if no endpoints are "
            rep.add(path, message + "provided for resolution mode DNS")
    tcp = any(p.protocol.upper() not in _NOT_TCP for p in se.ports)
    if se.resolution != "NONE" and len(se.hosts) > 1 and tcp:
        rep.add("spec.hosts", "multiple hosts provided with non-HTTP, non-TLS ports")
    elif (
        se.resolution == "DNS"
        and se.addresses
        and len(se.hosts) > 1
        and any(p.protocol.upper() != "UDP" for p in se.ports)  # carried over TCP
    ):
        message = "service entry can not have more than one host specified "
        rep.warn("spec.hosts", message + "simultaneously with address and tcp port")


def _check_service_entry(se: ServiceEntry, rep: Reporter, index: ConfigIndex) -> None:
    _check_service_hosts(rep, se)
    _check_service_ports(rep, se)
    _export_to(rep, se, se.export_to)
    cidr = False
    for i, address in enumerate(se.addresses):
        cidr = cidr or "/" in address
        if not _is_ip_or_cidr(address):
            what = "CIDR block" if "/" in address else "IP"
            rep.add(item("spec.addresses", i), f"{address} is not a valid {what}")
    if cidr and se.resolution not in ("NONE", "STATIC"):
        message = "CIDR addresses are allowed only for NONE/STATIC resolution types"
        rep.add("spec.addresses", message)
    if se.workload_selector is not None:
        for key, value in se.workload_selector.items():
            spath = join("spec.workloadSelector.labels", key)
            if not key:
                rep.add(spath, f'empty key is not supported in selector: "{key}={value}"')
            if "*" in key or "*" in value:
                rep.add(spath, f'wildcard is not supported in selector: "{key}={value}"')
            if len(value) > 63:
                rep.add(spath, "must be at most 63 characters")
        if not se.workload_selector:
            message = "workload selector specified without labels, will be applied to all "
            rep.warn("spec.workloadSelector", message + "services in namespace")
    if se.endpoints and se.workload_selector is not None:
        rep.add("spec.workloadSelector", "cannot be used together with spec.endpoints")
    if se.resolution == "NONE":
        if se.endpoints:
            message = "no endpoints should be provided for resolution type none"
            hint = "resolution NONE is the default: set resolution: STATIC or DNS"
            rep.add("spec.endpoints", message, hint)
        if se.workload_selector is not None:
            message = "workloadSelector should not be set when resolution mode is NONE"
            rep.warn("spec.workloadSelector", message, "set resolution: STATIC")
        if not se.addresses and any(p.protocol.upper() in ("", "TCP") for p in se.ports):
            message = "addresses are required for ports serving TCP (or unset) protocol when "
            rep.warn("spec.addresses", message + "IP Autoallocation is not enabled")
        return
    static_by = "resolution STATIC" if se.resolution == "STATIC" else None
    port_names = _port_names([se])
    for i, ep in enumerate(se.endpoints):
        _check_workload(rep, item("spec.endpoints", i), ep, port_names, static_by)


def _check_workload_entry(we: WorkloadEntry, rep: Reporter, index: ConfigIndex) -> None:
    """The ServiceEntries that select this entry say which port names it should use."""
    selecting = index.selecting(we)
    port_names = _port_names(selecting) if selecting else None
    static = next((se for se in selecting if se.resolution == "STATIC"), None)
    static_by = None
    if static is not None:
        static_by = f"selected by {_ref(static)}"
        static_by += "" if isinstance(static, KubernetesService) else " with resolution STATIC"
    by = ", ".join(_ref(se) for se in selecting)
    _check_workload(rep, "spec", we.endpoint, port_names, static_by, by)


def _port_names(services: Sequence[ServiceEntry]) -> set[str]:
    return {p.name for se in services for p in se.ports if p.name}


# --- Across resources ----------------------------------------------------------------------


def duplicates(resources: Sequence[Resource]) -> list[Problem]:
    """Two documents for one kind/namespace/name: in one batch, the second would silently
    replace the first."""
    problems: list[Problem] = []
    if len({r.key for r in resources}) != len(resources):  # else none: one set, no report
        _check_duplicates(resources, problems)
    return problems


def _check_duplicates(resources: Sequence[Resource], problems: list[Problem]) -> None:
    first: dict[tuple[str, str, str], Resource] = {}
    for r in resources:
        original = first.setdefault(r.key, r)
        if original is not r:
            where = f"{original.source.file} document {original.source.doc}"
            message = f"duplicate {_ref(r)}: already defined in {where}"
            Reporter.for_resource(r, problems).add("metadata.name", message)


def _check_shared_hosts(index: ConfigIndex, problems: list[Problem]) -> None:
    """One service per host and namespace, as in Istio: a later ServiceEntry adds its
    endpoints (a warning); one in another namespace would be silently ignored here.
    DestinationRules for one host are merged, as istiod merges them: what the merge leaves
    out is a warning."""
    for r, path, host, owner in index.clashes:
        if owner.key != r.key:  # the same key twice: reported as a duplicate
            message = f"host {host} is already declared by {_ref(owner)}"
            hint = None
            if owner.meta.namespace != r.meta.namespace:  # stricter than Istio: see README
                hint = "Istio resolves a host in each client's namespace; one gateway here "
                hint += "serves routes of every namespace, and one cluster cannot hold both"
            Reporter.for_resource(r, problems).add(path, message, hint)
    for r, path, host, owner in index.merged:
        message = f"host {host} is also declared by {_ref(owner)}, which comes first: its "
        message += "ports and resolution are the service's, and these endpoints join it"
        Reporter.for_resource(r, problems).warn(path, message)
    for rules in index.destination_rules.values():
        if len(rules) < 2:
            continue
        names: dict[str, DestinationRule] = {}
        policy: DestinationRule | None = None
        for dr in rules:
            rep = Reporter.for_resource(dr, problems)
            if dr.traffic_policy is not None and policy is not None:
                message = f"{_ref(policy)} sets the host's traffic policy first: this one is unused"
                rep.warn("spec.trafficPolicy", message)
            policy = policy or (dr if dr.traffic_policy is not None else None)
            for i, subset in enumerate(dr.subsets):
                if (first := names.get(subset.name)) is not None and first is not dr:
                    message = f'subset "{subset.name}" is already defined by {_ref(first)}: this '
                    message += "one is unused (DestinationRules for one host are merged)"
                    rep.warn(join(item("spec.subsets", i), "name"), message)
                names.setdefault(subset.name, dr)


def _check_kubernetes_service(svc: KubernetesService, rep: Reporter, index: ConfigIndex) -> None:
    """Kubernetes' own rules for a Service's ports (what kube-apiserver refuses)."""
    if not svc.ports:
        rep.add("spec.ports", "Required value")
    names: dict[str, int] = {}
    numbers: dict[int, int] = {}
    for i, port in enumerate(svc.ports):
        path = item("spec.ports", i)
        _port_number(rep, path, "port", port.number)
        _port_number(rep, path, "targetPort", port.target_port)
        if not port.name and len(svc.ports) > 1:
            rep.add(join(path, "name"), "Required value: when there is more than one port")
        elif port.name and not is_dns1123_label(port.name):
            rep.add(join(path, "name"), f"{DNS1123_LABEL_RULE}, got {describe(port.name)}")
        elif port.name in names:
            rep.add(join(path, "name"), f'Duplicate value: "{port.name}"')
        if port.number in numbers:
            rep.add(join(path, "port"), f"Duplicate value: {port.number}")
        names.setdefault(port.name, i)
        numbers.setdefault(port.number, i)
    _labels(rep, "spec", "selector", svc.workload_selector or {})


CHECKS: dict[type, Callable[..., None]] = {
    KubernetesService: _check_kubernetes_service,
    Gateway: _check_gateway,
    VirtualService: _check_virtual_service,
    DestinationRule: _check_destination_rule,
    ServiceEntry: _check_service_entry,
    WorkloadEntry: _check_workload_entry,
}


CHECK = "check"  # the results slot of a resource's own checks (config/results.py)


class PortClaims:
    """Which VirtualServices claim each (gateway, server port) in the committed config, so
    that a change compares only the claims it touches: those its VirtualServices made
    before or make now."""

    def __init__(self, claimants: dict[ClaimKey, list[Key]] | None = None) -> None:
        self.claimants = claimants  # None: nothing committed, every claim is compared

    def check(self, index: ConfigIndex, run: Run, problems: list[Problem]) -> PortClaims:
        """Warn of every claim that a VirtualService earlier in namespace/name order made
        first (Istio serves one VirtualService per gateway port, and ignores the others),
        among the claims this run may change; returns the claims as they would
        be once the run's proposal is committed."""

        def claims_of(r: Resource) -> list[Claim]:
            return run.get(r.key, CHECK, lambda: _check(r, index))[1]

        if run.stale is None or self.claimants is None:
            claimants: dict[ClaimKey, list[Key]] = {}
            for vs in index.virtual_services:
                for claim in _claim_keys(claims_of(vs)):
                    keys = claimants.setdefault(claim, [])
                    if vs.key not in keys:  # a key twice is reported as a duplicate
                        keys.append(vs.key)
            touched: Iterable[ClaimKey] = claimants
        else:
            changed = {k for k in run.stale if k[0] == VirtualService.kind}
            touched = set()
            now: dict[ClaimKey, list[Key]] = {}  # the changed ones' claims, in this run
            for key in changed:
                before = run.committed(key, CHECK)
                if before is not None:
                    touched.update(_claim_keys(before[1]))
                if (r := index.by_key.get(key)) is not None:
                    for claim in _claim_keys(claims_of(r)):
                        now.setdefault(claim, []).append(key)
            touched |= now.keys()
            claimants = dict(self.claimants)
            for claim in touched:
                kept = [k for k in self.claimants.get(claim, ()) if k not in changed]
                kept += now.get(claim, ())
                if kept:
                    claimants[claim] = sorted(kept)
                else:
                    claimants.pop(claim, None)
        for claim in touched:
            claiming = claimants.get(claim)
            if not claiming:
                continue
            owner, *others = claiming
            for key in others:
                r = index.by_key[key]
                i, gw, port = next(c for c in claims_of(r) if (c[1].key, c[2]) == claim)
                message = f"gateway {gw.ref} port {port} is already routed by "
                message += f"{_ref(index.by_key[owner])}: this route is unused there"
                hint = "the first VirtualService in namespace/name order serves a port"
                Reporter.for_resource(r, problems).warn(item("spec.tcp", i), message, hint)
        return PortClaims(claimants)


def _claim_keys(claims: list[Claim]) -> dict[ClaimKey, None]:
    """The (gateway, port) pairs of ``claims``, each once, in order."""
    return {(gw.key, port): None for _i, gw, port in claims}


def _check(r: Resource, index: ConfigIndex) -> tuple[list[Problem], list[Claim]]:
    found: list[Problem] = []
    rep = Reporter.for_resource(r, found)
    _check_common(r, rep)
    CHECKS[type(r)](r, rep, index)
    return found, _claims(index, r) if isinstance(r, VirtualService) else []


# --- Public API ----------------------------------------------------------------------------


def validate(
    resources: Sequence[Resource],
    index: ConfigIndex | None = None,
    run: Run | None = None,
    claims: PortClaims | None = None,
) -> tuple[list[Problem], PortClaims]:
    """Every problem (errors and warnings) in one consistent set of resources, in reading
    order, and the port claims it makes. ``index``: the look-ups over ``resources``, if
    the caller has built them. ``run``: results kept from the committed config, for a
    proposal that differs from it where ``run.stale`` says; ``claims``: that config's
    port claims. Only what may have changed is checked again: the problems found are the
    same either way."""
    problems: list[Problem] = []
    index = index if index is not None else ConfigIndex(resources)
    if len(index.by_key) != len(resources):  # some key twice: check every document
        _check_duplicates(resources, problems)
        for r in resources:
            problems += _check(r, index)[0]
        run, claims = Results().run(None), None
    else:
        run = run if run is not None else Results().run(None)
        todo: Iterable[Key] = index.by_key if run.stale is None else run.stale
        for key in todo:
            if (found := index.by_key.get(key)) is not None:
                problems += run.get(key, CHECK, functools.partial(_check, found, index))[0]
    claimed = (claims or PortClaims()).check(index, run, problems)
    # A committed config validated clean: with the same Gateways, their ports still do.
    if run.stale is None or any(k[0] == Gateway.kind for k in run.stale):
        _check_gateway_ports(index, problems)
    _check_shared_hosts(index, problems)
    if problems:
        problems = sort_problems(problems, [r.source.file for r in resources])
    return problems, claimed


def check(resources: Sequence[Resource]) -> list[Problem]:
    """Raise ConfigError listing every error, so the user fixes them in one round; else
    the warnings."""
    problems, _claims = validate(resources)
    if errors := errors_of(problems):
        raise ConfigError(errors)
    return warnings_of(problems)
