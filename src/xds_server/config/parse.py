"""One YAML document's data -> one model resource, reporting every problem of shape.

The envelope (apiVersion, kind, metadata) and one parser per kind, each reading its spec
through schema.py's ``Reader``: a wrong type, an unknown or unsupported field is reported
and the rest is still read, so one pass finds every problem in a document.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .errors import Reporter, describe, join
from .model import (
    API_VERSIONS,
    DEFAULT_NAMESPACE,
    KINDS,
    Destination,
    DestinationRule,
    Gateway,
    GatewayServer,
    KubernetesService,
    L4Match,
    Meta,
    Port,
    Resource,
    RouteDestination,
    ServiceEntry,
    Subset,
    TCPRoute,
    TrafficPolicy,
    VirtualService,
    WorkloadEndpoint,
    WorkloadEntry,
    api_versions,
)
from .schema import (
    CONNECTION_POOL,
    DESTINATION,
    DESTINATION_RULE,
    DNS1123_LABEL_RULE,
    DNS1123_SUBDOMAIN_RULE,
    DOCUMENT,
    GATEWAY,
    K8S_PROTOCOLS,
    K8S_SERVICE,
    K8S_SERVICE_PORT,
    K8S_WORKLOADS,
    L4_MATCH,
    LOCATIONS,
    METADATA,
    PORT,
    PORT_SELECTOR,
    RESOLUTIONS,
    ROUTE_DESTINATION,
    SERVER,
    SERVICE_ENTRY,
    SUBSET,
    TCP_ROUTE,
    TCP_SETTINGS,
    TRAFFIC_POLICY,
    VIRTUAL_SERVICE,
    WORKLOAD,
    WORKLOAD_SELECTOR,
    Reader,
    is_dns1123_label,
    is_dns1123_subdomain,
)

Fields = dict[str, Any]  # a kind's own fields, as keyword arguments of its model class

# --- One parser per kind: spec -> model fields ---------------------------------------------


def _port(rd: Reader, value: Any, path: str) -> Port:
    if value is None:
        rd.rep.add(path, "required")
        return Port(number=0)
    m = rd.mapping(value, path, PORT)
    return Port(
        number=rd.integer(m, path, "number", required=isinstance(value, dict)) or 0,
        name=rd.string(m, path, "name") or "",
        protocol=rd.string(m, path, "protocol") or "",
        target_port=rd.integer(m, path, "targetPort"),
    )


def _gateway(rd: Reader, spec: Any) -> Fields:
    m = rd.mapping(spec, "spec", GATEWAY)
    servers = []
    for path, value in rd.items(m, "spec", "servers"):
        s = rd.mapping(value, path, SERVER)
        port = _port(rd, s.get("port"), join(path, "port"))
        hosts = tuple(rd.strings(s, path, "hosts"))
        servers.append(GatewayServer(port, hosts, rd.string(s, path, "bind") or ""))
    return {"selector": rd.string_map(m, "spec", "selector"), "servers": servers}


def _destination(rd: Reader, value: Any, path: str) -> Destination:
    """``subset: ""`` is not written, as in Istio's protos; ``port: {}`` is port 0."""
    d = rd.mapping(value, path, DESTINATION)
    port = rd.mapping(d.get("port"), join(path, "port"), PORT_SELECTOR)
    number = rd.integer(port, join(path, "port"), "number")
    return Destination(
        host=rd.string(d, path, "host") or "",
        subset=rd.string(d, path, "subset") or None,
        port=0 if number is None and isinstance(d.get("port"), dict) else number,
    )


def _tcp_route(rd: Reader, value: Any, path: str) -> TCPRoute:
    r = rd.mapping(value, path, TCP_ROUTE)
    matches = []
    for mpath, mvalue in rd.items(r, path, "match"):
        m = rd.mapping(mvalue, mpath, L4_MATCH)
        gateways = tuple(rd.strings(m, mpath, "gateways"))
        port = rd.integer(m, mpath, "port") or None  # 0: not written, as in Istio's protos
        matches.append(L4Match(port=port, gateways=gateways))
    routes = []
    for dpath, dvalue in rd.items(r, path, "route"):
        d = rd.mapping(dvalue, dpath, ROUTE_DESTINATION)
        if d.get("destination") is None:
            rd.rep.add(join(dpath, "destination"), "required")
        destination = _destination(rd, d.get("destination"), join(dpath, "destination"))
        routes.append(RouteDestination(destination, rd.integer(d, dpath, "weight")))
    return TCPRoute(match=tuple(matches), route=tuple(routes))


def _virtual_service(rd: Reader, spec: Any) -> Fields:
    m = rd.mapping(spec, "spec", VIRTUAL_SERVICE)
    return {
        "hosts": rd.strings(m, "spec", "hosts"),
        "gateways": rd.strings(m, "spec", "gateways"),
        "tcp": [_tcp_route(rd, v, p) for p, v in rd.items(m, "spec", "tcp")],
        "export_to": rd.strings(m, "spec", "exportTo"),
    }


def _traffic_policy(rd: Reader, value: Any, path: str) -> TrafficPolicy | None:
    """Istio refuses an empty policy or pool: each must set something."""
    if value is None:
        return None
    tp = rd.mapping(value, path, TRAFFIC_POLICY)
    if value == {}:
        rd.rep.add(path, "traffic policy must have at least one field")
    pool_path = join(path, "connectionPool")
    pool = rd.mapping(tp.get("connectionPool"), pool_path, CONNECTION_POOL)
    if tp.get("connectionPool") == {}:
        rd.rep.add(pool_path, "connection pool must have at least one field")
    tcp_path = join(pool_path, "tcp")
    tcp = rd.mapping(pool.get("tcp"), tcp_path, TCP_SETTINGS)
    return TrafficPolicy(
        connect_timeout=rd.duration(tcp, tcp_path, "connectTimeout"),
        max_connections=rd.integer(tcp, tcp_path, "maxConnections") or None,  # 0: unset
    )


def _destination_rule(rd: Reader, spec: Any) -> Fields:
    m = rd.mapping(spec, "spec", DESTINATION_RULE)
    subsets = []
    for path, value in rd.items(m, "spec", "subsets"):
        s = rd.mapping(value, path, SUBSET)
        subsets.append(
            Subset(
                name=rd.string(s, path, "name") or "",
                labels=rd.string_map(s, path, "labels"),
                traffic_policy=_traffic_policy(
                    rd, s.get("trafficPolicy"), join(path, "trafficPolicy")
                ),
            )
        )
    return {
        "host": rd.string(m, "spec", "host") or "",
        "traffic_policy": _traffic_policy(rd, m.get("trafficPolicy"), "spec.trafficPolicy"),
        "subsets": subsets,
        "export_to": rd.strings(m, "spec", "exportTo"),
    }


def _workload(rd: Reader, value: Any, path: str) -> WorkloadEndpoint:
    w = rd.mapping(value, path, WORKLOAD)
    return WorkloadEndpoint(
        address=rd.string(w, path, "address") or "",
        ports=rd.int_map(w, path, "ports"),
        labels=rd.string_map(w, path, "labels"),
        weight=rd.integer(w, path, "weight") or None,  # 0: not written
        network=rd.string(w, path, "network") or "",
    )


def _service_entry(rd: Reader, spec: Any) -> Fields:
    """A missing ``resolution`` means NONE, as in Istio."""
    m = rd.mapping(spec, "spec", SERVICE_ENTRY)
    selector = None
    if m.get("workloadSelector") is not None:
        ws = rd.mapping(m["workloadSelector"], "spec.workloadSelector", WORKLOAD_SELECTOR)
        selector = rd.string_map(ws, "spec.workloadSelector", "labels")
    return {
        "hosts": rd.strings(m, "spec", "hosts"),
        "ports": [_port(rd, v, p) for p, v in rd.items(m, "spec", "ports")],
        "resolution": rd.choice(m, "spec", "resolution", RESOLUTIONS) or "NONE",
        "location": rd.choice(m, "spec", "location", LOCATIONS) or "MESH_INTERNAL",
        "endpoints": [_workload(rd, v, p) for p, v in rd.items(m, "spec", "endpoints")],
        "workload_selector": selector,
        "addresses": rd.strings(m, "spec", "addresses"),
        "export_to": rd.strings(m, "spec", "exportTo"),
    }


def _workload_entry(rd: Reader, spec: Any) -> Fields:
    return {"endpoint": _workload(rd, spec, "spec")}


def _target_port(rd: Reader, p: dict[str, Any], path: str) -> int | None:
    """A number, or a port name (left to the WorkloadEntries' ``ports``, which map service
    port names)."""
    target = p.get("targetPort")
    if isinstance(target, int) and not isinstance(target, bool):
        return target
    if target is not None and not isinstance(target, str):
        rd.rep.add(
            join(path, "targetPort"), f"must be a number or a port name, got {describe(target)}"
        )
    return None


def _kubernetes_service(rd: Reader, spec: Any) -> Fields:
    """The service a Kubernetes Service describes (its host, its name, is set by
    parse_resource): its ports, and as endpoints the WorkloadEntries its selector picks."""
    m = rd.mapping(spec, "spec", K8S_SERVICE)
    ports = []
    for path, value in rd.items(m, "spec", "ports"):
        p = rd.mapping(value, path, K8S_SERVICE_PORT)
        ports.append(
            Port(
                number=rd.integer(p, path, "port", required=True) or 0,
                name=rd.string(p, path, "name") or "",
                protocol=rd.choice(p, path, "protocol", K8S_PROTOCOLS) or "TCP",
                target_port=_target_port(rd, p, path),
            )
        )
    selector = rd.string_map(m, "spec", "selector")
    return {
        "ports": ports,
        "resolution": "STATIC",
        "workload_selector": selector or None,  # none: no endpoints (not every workload)
    }


PARSERS: dict[type[Resource], Callable[[Reader, Any], Fields]] = {
    KubernetesService: _kubernetes_service,
    Gateway: _gateway,
    VirtualService: _virtual_service,
    DestinationRule: _destination_rule,
    ServiceEntry: _service_entry,
    WorkloadEntry: _workload_entry,
}


# --- Envelope: apiVersion, kind, metadata ---------------------------------------------------


def _kind(rd: Reader, doc: dict[str, Any]) -> type[Resource] | None:
    kind = rd.string(doc, "", "kind", required=True)
    if kind is None:
        return None
    if kind in K8S_WORKLOADS:  # reported by parse_resource, once the name is known
        rd.rep.kind = kind
        return None
    if kind not in KINDS:
        hint = f"supported kinds: {', '.join(sorted(KINDS))}"
        rd.rep.add("kind", f'unknown kind "{kind}"', hint)
        return None
    rd.rep.kind = kind
    return KINDS[kind]


def _meta(rd: Reader, value: Any, given: str | None) -> Meta:
    m: dict[str, Any] = value if isinstance(value, dict) else {}
    name = rd.string(m, "metadata", "name", required=isinstance(value, dict)) or ""
    written = rd.string(m, "metadata", "namespace")
    namespace = written or given or DEFAULT_NAMESPACE
    if name:
        rd.rep.name = f"{namespace}/{name}"
    if written and given and written != given:  # kubectl's rule for apply -n
        message = f'the namespace from the provided object "{written}" does not match the '
        message += f'namespace "{given}"'
        rd.rep.add("metadata.namespace", message, f"pass --namespace={written}, or leave it out")
    if value is None:
        rd.rep.add("metadata", "required")
    rd.mapping(value, "metadata", METADATA)
    if name and not is_dns1123_subdomain(name):
        rd.rep.add("metadata.name", f"{DNS1123_SUBDOMAIN_RULE}, got {describe(name)}")
    if not is_dns1123_label(namespace):
        rd.rep.add("metadata.namespace", f"{DNS1123_LABEL_RULE}, got {describe(namespace)}")
    labels = rd.string_map(m, "metadata", "labels")
    annotations = rd.string_map(m, "metadata", "annotations")
    return Meta(name=name, namespace=namespace, labels=labels, annotations=annotations)


def _api_version(rd: Reader, doc: dict[str, Any], cls: type[Resource] | None) -> str:
    api_version = rd.string(doc, "", "apiVersion", required=True)
    versions = api_versions(cls.kind) if cls is not None else API_VERSIONS
    if cls is not None and api_version is not None and api_version not in versions:
        hint = f"use {versions[0]}" if len(versions) == 1 else f"use one of {', '.join(versions)}"
        rd.rep.add("apiVersion", f'unsupported apiVersion "{api_version}"', hint)
    return api_version or ""


def parse_resource(doc: Any, rep: Reporter, namespace: str | None = None) -> Resource | None:
    """The resource in one document, or None when it cannot be built (problems say why).
    ``namespace``: the one a request names (``apply -n``): a document without one is in
    it, and a document naming another is refused."""
    if not isinstance(doc, dict):
        rep.add("", f"must be a mapping (an Istio resource), got {describe(doc)}")
        return None
    rd = Reader(rep)
    cls = _kind(rd, doc)
    meta = _meta(rd, doc.get("metadata"), namespace)
    if rd.rep.kind in K8S_WORKLOADS:
        message = f"a {rd.rep.kind} is not run here: run the workload yourself and describe "
        message += "each instance with a WorkloadEntry (its address, labels and ports)"
        rd.rep.add("kind", message, "a Service selecting those labels finds the WorkloadEntries")
        return None
    api_version = _api_version(rd, doc, cls)
    rd.mapping(doc, "", DOCUMENT)
    if cls is None:
        return None
    fields = PARSERS[cls](rd, doc.get("spec"))
    if cls is KubernetesService:  # its host is its name, in its namespace
        fields["hosts"] = [meta.name] if meta.name else []
    if "status" in doc:  # owned by the server, as in Kubernetes: dropped on apply
        doc = {k: v for k, v in doc.items() if k != "status"}
    return cls(
        api_version=api_version, meta=meta, raw=doc, source=rep.source, lines=rep.lines, **fields
    )
