"""validate.py: Istio's rules and cross-references, each problem naming resource and field."""

from __future__ import annotations

from dataclasses import replace
from textwrap import dedent, indent

import pytest

from xds_server.config.errors import ConfigError, Problem
from xds_server.config.index import ConfigIndex
from xds_server.config.load import load_text
from xds_server.config.routing import route_bindings
from xds_server.config.validate import check, validate

GATEWAY = """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: tcp-echo-gateway}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 31400, name: tcp, protocol: TCP}
    hosts: ["*"]
"""

RULE = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: tcp-echo-destination}
spec:
  host: tcp-echo
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"""

SERVICE = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: tcp-echo}
spec:
  hosts: [tcp-echo.default.svc.cluster.local]  # literal: what a route's tcp-echo means
  ports:
  - {number: 9000, name: tcp, protocol: TCP}
  - {number: 9001, name: tcp-other, protocol: TCP}
  resolution: STATIC
  workloadSelector: {labels: {app: tcp-echo}}
"""

WORKLOADS = """\
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: tcp-echo-v1}
spec:
  address: 127.0.0.1
  labels: {app: tcp-echo, version: v1}
  ports: {tcp: 9000, tcp-other: 9001}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: tcp-echo-v2}
spec:
  address: 127.0.0.1
  labels: {app: tcp-echo, version: v2}
  ports: {tcp: 9002, tcp-other: 9003}
"""

BASE = (GATEWAY, RULE, SERVICE, WORKLOADS)  # five documents: extra ones start at 6
ROUTE_V1 = "- route: [{destination: {host: tcp-echo, subset: v1, port: {number: 9000}}}]"


def virtual_service(tcp: str = ROUTE_V1, name: str = "tcp-echo", spec: str = "") -> str:
    """A VirtualService bound to tcp-echo-gateway; ``spec`` adds or overrides fields."""
    spec = spec or "hosts: ['*']\ngateways: [tcp-echo-gateway]"
    return (
        f"apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}}}\n"
        f"spec:\n{indent(dedent(spec), '  ')}\n  tcp:\n{indent(dedent(tcp), '    ')}\n"
    )


def resource(kind: str, name: str, spec: str) -> str:
    return (
        f"apiVersion: networking.istio.io/v1\nkind: {kind}\nmetadata: {{name: {name}}}\n"
        f"spec:\n{indent(dedent(spec), '  ')}\n"
    )


def run(*docs: str, base: tuple[str, ...] = BASE) -> list[Problem]:
    text = "---\n".join((*base, *docs))
    return validate(load_text(text, "mesh.yaml"))[0]


def brief(p: Problem) -> str:
    """The message without its line number, which the layout of a test's YAML decides."""
    text = str(replace(p, source=replace(p.source, line=None)))
    return f"Warning: {text}" if p.warning else text


def briefs(*docs: str, base: tuple[str, ...] = BASE) -> list[str]:
    return [brief(p) for p in run(*docs, base=base)]


VS = "mesh.yaml: document 6 (VirtualService default/tcp-echo)"


# --- Happy paths ---------------------------------------------------------------------------


def test_the_tcp_echo_setup_is_valid() -> None:
    assert run(virtual_service()) == []


def test_weighted_split_is_valid() -> None:
    tcp = """\
        - match: [{port: 31400}]
          route:
          - {destination: {host: tcp-echo, subset: v1, port: {number: 9000}}, weight: 80}
          - {destination: {host: tcp-echo, subset: v2, port: {number: 9000}}, weight: 20}
        """
    assert run(virtual_service(tcp)) == []


def test_an_omitted_weight_among_several_counts_as_zero() -> None:
    tcp = """\
        - route:
          - {destination: {host: tcp-echo, subset: v1, port: {number: 9000}}, weight: 100}
          - {destination: {host: tcp-echo, subset: v2, port: {number: 9000}}}
        """
    assert run(virtual_service(tcp)) == []


def test_mesh_gateway_is_allowed_and_ignored() -> None:
    spec = "hosts: [tcp-echo.example.com]\ngateways: [mesh, default/tcp-echo-gateway]"
    assert run(virtual_service(spec=spec)) == []


def test_any_host_is_not_for_the_mesh() -> None:
    """Istio: ``*`` would take every host of the mesh's sidecars."""
    spec = "hosts: ['*']\ngateways: [mesh, default/tcp-echo-gateway]"
    assert briefs(virtual_service(spec=spec)) == [
        f"{VS}: spec.hosts[0]: wildcard host * is not allowed for virtual services bound to"
        " the mesh gateway"
    ]


def test_first_matching_route_wins_inside_one_virtual_service() -> None:
    """The second route is never used: istioctl analyze's IST0130."""
    tcp = ROUTE_V1 + "\n" + ROUTE_V1.replace("v1", "v2")
    assert briefs(virtual_service(tcp)) == [
        f"Warning: {VS}: spec.tcp[1]: VirtualService rule #1 not used (only the last rule can"
        " have no matches) [IST0130]"
    ]


def test_check_raises_with_every_problem() -> None:
    resources = load_text("---\n".join((*BASE, virtual_service("- route: []"))), "mesh.yaml")
    check(load_text("---\n".join(BASE)))
    with pytest.raises(ConfigError) as info:
        check(resources)
    assert str(info.value) == (
        f"mesh.yaml:{resources[-1].lines['spec.tcp[0].route']}: document 6 (VirtualService"
        " default/tcp-echo): spec.tcp[0].route: at least one destination is required"
    )


def test_problem_points_at_the_line_of_the_field() -> None:
    [p] = run(virtual_service(ROUTE_V1.replace("v1", "v9")))
    lines = "---\n".join((*BASE, virtual_service(ROUTE_V1.replace("v1", "v9")))).splitlines()
    assert "subset: v9" in lines[p.source.line - 1]
    assert (p.source.file, p.source.doc) == ("mesh.yaml", 6)


# --- Duplicates ----------------------------------------------------------------------------


def test_duplicate_resource_names_the_first() -> None:
    assert briefs(virtual_service(), virtual_service()) == [
        "mesh.yaml: document 7 (VirtualService default/tcp-echo): metadata.name: duplicate"
        " VirtualService default/tcp-echo: already defined in mesh.yaml document 6"
    ]


# --- Gateway -------------------------------------------------------------------------------


def gateway(servers: str, name: str = "gw") -> str:
    return resource("Gateway", name, f"servers:\n{servers}")


def test_gateway_needs_a_server() -> None:
    assert briefs(resource("Gateway", "gw", "selector: {istio: ingressgateway}")) == [
        "mesh.yaml: document 6 (Gateway default/gw): spec.servers: at least one server is required"
    ]


@pytest.mark.parametrize(
    ("port", "field", "value"),
    [
        ("{number: 0}", "spec.servers[0].port.number", 0),
        ("{number: 65536}", "spec.servers[0].port.number", 65536),
    ],
)
def test_gateway_port_range(port: str, field: str, value: int) -> None:
    assert briefs(
        gateway(f"- {{port: {port[:-1]}, name: tcp, protocol: TCP}}, hosts: ['*']}}")
    ) == [
        f"mesh.yaml: document 6 (Gateway default/gw): {field}: must be a port number"
        f" 1..65535, got {value}"
    ]


def test_gateway_server_must_be_tcp() -> None:
    assert briefs(gateway("- {port: {number: 80, name: a, protocol: HTTP}, hosts: ['*']}")) == [
        "mesh.yaml: document 6 (Gateway default/gw): spec.servers[0].port.protocol:"
        ' only TCP servers are supported, got "HTTP"'
    ]


def test_gateway_protocol_is_case_insensitive() -> None:
    assert run(gateway("- {port: {number: 80, name: a, protocol: tcp}, hosts: ['*']}")) == []


def test_gateway_port_needs_a_name_and_a_protocol_and_no_target_port() -> None:
    """Istio's validateServerPort."""
    assert briefs(gateway("- {port: {number: 80, targetPort: 8080}, hosts: ['*']}")) == [
        "mesh.yaml: document 6 (Gateway default/gw): spec.servers[0].port.protocol: invalid"
        ' protocol "", supported protocols are HTTP, HTTP2, GRPC, GRPC-WEB, MONGO, REDIS, MYSQL,'
        " TCP",
        "mesh.yaml: document 6 (Gateway default/gw): spec.servers[0].port.targetPort:"
        " targetPort has no impact on Gateways",
        "mesh.yaml: document 6 (Gateway default/gw): spec.servers[0].port.name: port name must"
        " be set",
    ]


def test_gateway_hosts_required() -> None:
    assert briefs(gateway("- {port: {number: 80, name: a, protocol: TCP}, hosts: []}")) == [
        "mesh.yaml: document 6 (Gateway default/gw): spec.servers[0].hosts:"
        ' at least one host is required (hint: use ["*"] for any host)'
    ]


def test_same_port_twice_in_one_gateway() -> None:
    """Istio accepts it and drops the second server: a warning."""
    servers = "- {port: {number: 80, name: a, protocol: TCP}, hosts: ['*']}\n"
    servers += "- {port: {number: 80, name: b, protocol: TCP}, hosts: [a.example.com]}"
    assert briefs(gateway(servers)) == [
        "Warning: mesh.yaml: document 6 (Gateway default/gw): spec.servers[1].port.number:"
        " port 80 is already served by spec.servers[0]: this server is dropped"
    ]


def test_same_port_in_two_gateways() -> None:
    """A selector-less Gateway and the task's may select one proxy: the first one serves
    the port there (a warning on the other)."""
    server = "- {port: {number: 31400, name: tcp, protocol: TCP}, hosts: ['*']}"
    assert briefs(gateway(server, name="zz-gw")) == [
        "Warning: mesh.yaml: document 6 (Gateway default/zz-gw): spec.servers[0].port.number:"
        " port 31400 is already served by Gateway default/tcp-echo-gateway (spec.servers[0]):"
        " this server is dropped (hint: on a proxy both select, the first Gateway in"
        " namespace/name order serves a port)"
    ]


def test_same_port_in_gateways_of_different_proxies() -> None:
    servers = "selector: {istio: egressgateway}\n"
    servers += "servers: [{port: {number: 31400, name: tcp, protocol: TCP}, hosts: ['*']}]"
    assert run(resource("Gateway", "other", servers)) == []


# --- VirtualService: shape -----------------------------------------------------------------


def test_virtual_service_needs_tcp_routes() -> None:
    assert briefs(virtual_service("[]")) == [f"{VS}: spec.tcp: at least one tcp route is required"]


def test_virtual_service_needs_hosts() -> None:
    spec = "gateways: [tcp-echo-gateway]"
    assert briefs(virtual_service(spec=spec)) == [
        f'{VS}: spec.hosts: at least one host is required (hint: use ["*"] for any host)'
    ]


def test_route_needs_a_destination() -> None:
    assert briefs(virtual_service("- route: []")) == [
        f"{VS}: spec.tcp[0].route: at least one destination is required"
    ]


def test_destination_host_required() -> None:
    assert briefs(virtual_service("- route: [{destination: {subset: v1}}]")) == [
        f"{VS}: spec.tcp[0].route[0].destination.host: required"
    ]


def test_negative_weight() -> None:
    tcp = """\
        - route:
          - {destination: {host: tcp-echo, subset: v1, port: {number: 9000}}, weight: 110}
          - {destination: {host: tcp-echo, subset: v2, port: {number: 9000}}, weight: -10}
        """
    assert briefs(virtual_service(tcp)) == [
        f"{VS}: spec.tcp[0].route[1].weight: must be 0 or more, got -10"
    ]


@pytest.mark.parametrize(("w1", "w2"), [("", ""), (", weight: 0", ", weight: 0")])
def test_weights_must_sum_to_more_than_zero(w1: str, w2: str) -> None:
    tcp = f"""\
        - route:
          - {{destination: {{host: tcp-echo, subset: v1, port: {{number: 9000}}}}{w1}}}
          - {{destination: {{host: tcp-echo, subset: v2, port: {{number: 9000}}}}{w2}}}
        """
    assert briefs(virtual_service(tcp)) == [
        f"{VS}: spec.tcp[0].route: weights must sum to more than 0 (hint: omitted weights"
        " count as 0 when there are several destinations)"
    ]


def test_subset_name_must_be_dns_1123_label() -> None:
    tcp = "- route: [{destination: {host: tcp-echo, subset: V_1, port: {number: 9000}}}]"
    problems = briefs(virtual_service(tcp))
    assert problems[0] == (
        f"{VS}: spec.tcp[0].route[0].destination.subset: must be a DNS label (at most 63"
        """ letters, digits and '-'), got "V_1\""""
    )


def test_duplicate_destination() -> None:
    """Istio takes it: the weights add up (translation merges them)."""
    tcp = """\
        - route:
          - {destination: {host: tcp-echo, subset: v1, port: {number: 9000}}, weight: 50}
          - {destination: {host: tcp-echo, subset: v1, port: {number: 9000}}, weight: 50}
        """
    assert briefs(virtual_service(tcp)) == []


# --- VirtualService: cross references ------------------------------------------------------


def test_unknown_host_suggests_known_hosts() -> None:
    tcp = "- route: [{destination: {host: tcp-ech, port: {number: 9000}}}]"
    assert briefs(virtual_service(tcp)) == [
        f'{VS}: spec.tcp[0].route[0].destination.host: unknown host "tcp-ech" [IST0101]'
        ' (hint: did you mean "tcp-echo"?)'
    ]
    tcp = "- route: [{destination: {host: zzz, port: {number: 9000}}}]"
    assert run(virtual_service(tcp))[0].hint == "known hosts: tcp-echo"


def test_unknown_subset_lists_defined_subsets() -> None:
    assert briefs(virtual_service(ROUTE_V1.replace("v1", "v3"))) == [
        f'{VS}: spec.tcp[0].route[0].destination.subset: unknown subset "v3"'
        " (hint: defined subsets for tcp-echo: v1, v2)"
    ]


def test_subset_without_destination_rule() -> None:
    assert briefs(virtual_service(), base=(GATEWAY, SERVICE, WORKLOADS)) == [
        "mesh.yaml: document 5 (VirtualService default/tcp-echo): spec.tcp[0].route[0]"
        '.destination.subset: unknown subset "v1" (hint: no DestinationRule defines subsets'
        " for tcp-echo)"
    ]


def test_destination_port_must_be_a_service_port() -> None:
    assert briefs(virtual_service(ROUTE_V1.replace("9000", "9002"))) == [
        f"{VS}: spec.tcp[0].route[0].destination.port.number: service tcp-echo has no port 9002"
        " (hint: ports: 9000, 9001)"
    ]


def test_destination_port_required_when_service_has_several() -> None:
    tcp = "- route: [{destination: {host: tcp-echo, subset: v1}}]"
    assert briefs(virtual_service(tcp)) == [
        f"{VS}: spec.tcp[0].route[0].destination.port: port required: service has ports 9000, 9001"
    ]


def test_destination_port_may_be_omitted_when_service_has_one() -> None:
    one_port = SERVICE.replace("  - {number: 9001, name: tcp-other, protocol: TCP}\n", "")
    tcp = "- route: [{destination: {host: tcp-echo, subset: v1}}]"
    assert run(virtual_service(tcp), base=(GATEWAY, RULE, one_port)) == []


def test_destination_port_range() -> None:
    problems = briefs(virtual_service(ROUTE_V1.replace("9000", "0")))
    assert problems[0] == (
        f"{VS}: spec.tcp[0].route[0].destination.port.number: must be a port number 1..65535, got 0"
    )


def test_unknown_gateway() -> None:
    spec = "hosts: ['*']\ngateways: [tcp-echo-gw]"
    assert briefs(virtual_service(spec=spec)) == [
        f'{VS}: spec.gateways[0]: unknown gateway "tcp-echo-gw" [IST0101]'
        ' (hint: did you mean "default/tcp-echo-gateway"?)'
    ]


def test_unknown_match_gateway() -> None:
    tcp = (
        "- match: [{gateways: [other]}]\n"
        + "  route: [{destination: {host: tcp-echo, port: {number: 9000}}}]"
    )
    assert briefs(virtual_service(tcp)) == [
        f'{VS}: spec.tcp[0].match[0].gateways[0]: unknown gateway "other" [IST0101]'
        " (hint: known gateways: default/tcp-echo-gateway)",
    ]


def test_match_gateways_replace_spec_gateways() -> None:
    """As in Istio, a match's gateways need not be listed in spec.gateways: they replace
    them for that match (this one claims gw's port 80, not the task's 31400)."""
    tcp = (
        "- match: [{gateways: [gw]}]\n"
        + "  route: [{destination: {host: tcp-echo, port: {number: 9000}}}]"
    )
    gw = gateway("- {port: {number: 80, name: tcp, protocol: TCP}, hosts: ['*']}")
    resources = load_text("---\n".join((*BASE, gw, virtual_service(tcp, name="vs"))))
    assert validate(resources)[0] == []
    [vs] = [r for r in resources if r.kind == "VirtualService"]
    index = ConfigIndex(resources)
    assert [(g.meta.name, p) for g, p in route_bindings(index, vs, vs.tcp[0])] == [("gw", 80)]


def test_match_port_must_be_a_gateway_port() -> None:
    tcp = (
        "- match: [{port: 31401}]\n"
        + "  route: [{destination: {host: tcp-echo, port: {number: 9000}}}]"
    )
    assert briefs(virtual_service(tcp)) == [
        f"Warning: {VS}: spec.tcp[0].match[0].port: no gateway among [default/tcp-echo-gateway]"
        " listens on port 31401: the match is unused (hint: server ports: 31400)"
    ]


def test_match_port_range() -> None:
    tcp = (
        "- match: [{port: 65536}]\n"
        + "  route: [{destination: {host: tcp-echo, port: {number: 9000}}}]"
    )
    assert briefs(virtual_service(tcp))[0] == (
        f"{VS}: spec.tcp[0].match[0].port: must be a port number 1..65535, got 65536"
    )


def test_match_port_zero_is_not_written() -> None:
    """Istio's protos: 0 means unset, so the match takes every port of its gateways."""
    tcp = "- match: [{port: 0}]\n  route: [{destination: {host: tcp-echo, port: {number: 9000}}}]"
    assert run(virtual_service(tcp)) == []


# --- VirtualService: ambiguity -------------------------------------------------------------


def test_two_virtual_services_on_one_gateway_port() -> None:
    """Istio accepts both and serves one (pilot serves a gateway port from one
    VirtualService): a warning on the one left unused."""
    assert briefs(virtual_service(name="other"), virtual_service()) == [
        "Warning: mesh.yaml: document 7 (VirtualService default/tcp-echo): spec.tcp[0]: gateway"
        " default/tcp-echo-gateway port 31400 is already routed by VirtualService default/other:"
        " this route is unused there (hint: the first VirtualService in namespace/name order"
        " serves a port)"
    ]


def test_two_virtual_services_on_different_ports_are_fine() -> None:
    second = gateway("- {port: {number: 31401, name: tcp, protocol: TCP}, hosts: ['*']}")
    tcp = (
        "- match: [{port: 31401}]\n"
        + "  route: [{destination: {host: tcp-echo, port: {number: 9000}}}]"
    )
    spec = "hosts: ['*']\ngateways: [tcp-echo-gateway, gw]"
    first = virtual_service("- match: [{port: 31400}]\n  " + ROUTE_V1.removeprefix("- "), spec=spec)
    assert run(second, first, virtual_service(tcp, name="other", spec=spec)) == []


# --- DestinationRule -----------------------------------------------------------------------


def rule(spec: str, name: str = "dr") -> str:
    return resource("DestinationRule", name, spec)


DR = "mesh.yaml: document 6 (DestinationRule default/dr)"


def test_destination_rule_host_required() -> None:
    assert briefs(rule("subsets: []")) == [f"{DR}: spec.host: required"]


def test_two_destination_rules_for_one_host_are_merged() -> None:
    """As istiod merges them: the subsets of both (a route may name either), the first
    top-level policy; what the merge leaves out is a warning."""
    spec = """\
        host: tcp-echo.default.svc.cluster.local
        trafficPolicy: {connectionPool: {tcp: {maxConnections: 5}}}
        subsets: [{name: v1, labels: {version: v2}}, {name: v3, labels: {version: v2}}]
        """
    tcp = ROUTE_V1.replace("v1", "v3")
    assert briefs(rule(spec, name="zz"), virtual_service(tcp)) == [
        "Warning: mesh.yaml: document 6 (DestinationRule default/zz): spec.subsets[0].name:"
        ' subset "v1" is already defined by DestinationRule default/tcp-echo-destination: this'
        " one is unused (DestinationRules for one host are merged)",
    ]
    resources = load_text("---\n".join((*BASE, rule(spec, name="zz"))))
    merged = ConfigIndex(resources).destination_rule("tcp-echo", "default")
    assert [(s.name, s.labels) for s in merged.subsets] == [
        ("v1", {"version": "v1"}),
        ("v2", {"version": "v2"}),
        ("v3", {"version": "v2"}),
    ]
    assert merged.traffic_policy.max_connections == 5  # the first written


def test_subset_names_unique_and_dns_labels() -> None:
    # Istio's DNS labels take capitals: V2 is a name; V_2 is not.
    spec = (
        "host: other\nsubsets: [{name: v1}, {name: v1}, {name: V2}, {labels: {a: b}}, {name: V_2}]"
    )
    assert briefs(rule(spec)) == [
        f'{DR}: spec.subsets[1].name: duplicate subset name "v1" (also spec.subsets[0])',
        f"{DR}: spec.subsets[3].name: required",
        f"{DR}: spec.subsets[4].name: must be a DNS label (at most 63 letters, digits and '-'),"
        ' got "V_2"',
    ]


def test_connection_pool_limits() -> None:
    spec = """\
        host: other
        trafficPolicy: {connectionPool: {tcp: {connectTimeout: 0s, maxConnections: 0}}}
        subsets:
        - {name: v1, trafficPolicy: {connectionPool: {tcp: {maxConnections: -1}}}}
        - {name: v2, trafficPolicy: {connectionPool: {tcp: {connectTimeout: 1500us}}}}
        """
    # Istio's: at least 1 ms, in whole ms; maxConnections 0 is not written
    assert briefs(rule(spec)) == [
        f"{DR}: spec.trafficPolicy.connectionPool.tcp.connectTimeout: duration must be greater"
        " than 1ms",
        f"{DR}: spec.subsets[0].trafficPolicy.connectionPool.tcp.maxConnections:"
        " must be 0 or more, got -1",
        f"{DR}: spec.subsets[1].trafficPolicy.connectionPool.tcp.connectTimeout: only durations"
        " to ms precision are supported",
    ]


# --- ServiceEntry --------------------------------------------------------------------------


def service(spec: str) -> str:
    """A ServiceEntry; STATIC unless ``spec`` says (Istio's default NONE takes no routes)."""
    spec = dedent(spec)
    return resource(
        "ServiceEntry", "db", spec + ("" if "resolution:" in spec else "\nresolution: STATIC")
    )


SE = "mesh.yaml: document 6 (ServiceEntry default/db)"


def test_service_entry_needs_hosts() -> None:
    """Ports it may go without (Istio's CRD tests: "Weird case but we allow it")."""
    assert briefs(service("resolution: DNS")) == [
        f"{SE}: spec.hosts: at least one host is required",
    ]


def test_service_entry_ports() -> None:
    spec = """\
        hosts: [db]
        ports:
        - {number: 5432, name: pg}
        - {number: 5432, name: pg}
        - {number: 70000, name: admin, targetPort: 0}
        - {number: 5433}
        """
    assert briefs(service(spec)) == [
        f'{SE}: spec.ports[1].name: duplicate port name "pg" (also ports[0])',
        f"{SE}: spec.ports[1].number: duplicate port number 5432 (also ports[0])",
        f"{SE}: spec.ports[2].number: must be a port number 1..65535, got 70000",
        f"{SE}: spec.ports[2].targetPort: must be a port number 1..65535, got 0",
        f"{SE}: spec.ports[3].name: required (hint: endpoints map ports by name)",
    ]


def test_static_endpoints_need_ip_addresses() -> None:
    spec = "hosts: [db]\nports: [{number: 5432, name: pg}]\nendpoints: [{address: db.example}]"
    assert briefs(service(spec)) == [
        f"{SE}: spec.endpoints[0].address: must be an IP address (resolution STATIC), got"
        ' "db.example" (hint: use resolution: DNS for host names)'
    ]


def test_dns_endpoints_may_be_host_names_but_not_garbage() -> None:
    spec = """\
        hosts: [db]
        ports: [{number: 5432, name: pg}]
        resolution: DNS
        endpoints: [{address: db.example}, {address: "::1"}, {address: "db_1!"}, {ports: {pg: 1}}]
        """
    assert briefs(service(spec)) == [
        f'{SE}: spec.endpoints[2].address: must be an IP address or a DNS name, got "db_1!"',
        f"{SE}: spec.endpoints[3].address: required",
    ]


def test_endpoints_and_workload_selector_are_exclusive() -> None:
    spec = """\
        hosts: [db]
        ports: [{number: 5432, name: pg}]
        endpoints: [{address: 10.0.0.1}]
        workloadSelector: {labels: {app: db}}
        """
    assert briefs(service(spec)) == [
        f"{SE}: spec.workloadSelector: cannot be used together with spec.endpoints"
    ]


def test_endpoint_ports_and_weight() -> None:
    spec = """\
        hosts: [db]
        ports: [{number: 5432, name: pg}]
        endpoints: [{address: 10.0.0.1, ports: {pgx: 6432, pg: 0}, weight: 0}]
        """
    assert briefs(service(spec)) == [
        f"{SE}: spec.endpoints[0].ports.pgx: endpoint port 6432 is not defined by the service"
        ' entry (hint: did you mean "pg"?)',
        f"{SE}: spec.endpoints[0].ports.pg: must be a port number 1..65535, got 0",
    ]  # weight 0: not written


def test_two_service_entries_for_one_host() -> None:
    """As in Istio: one service per host and namespace, the first's ports (db < tcp-echo),
    every entry's endpoints; in another namespace, refused (stricter: see README)."""
    spec = "hosts: [tcp-echo.default.svc.cluster.local]\nports: [{number: 9000, name: tcp}]"
    spec += "\nendpoints: [{address: 10.0.0.7}]"
    assert briefs(service(spec)) == [
        "Warning: mesh.yaml: document 3 (ServiceEntry default/tcp-echo): spec.hosts[0]: host"
        " tcp-echo.default.svc.cluster.local is also declared by ServiceEntry default/db,"
        " which comes first: its ports and resolution are the service's, and these endpoints"
        " join it"
    ]
    resources = load_text("---\n".join((*BASE, service(spec))))
    index = ConfigIndex(resources)
    first = index.service("tcp-echo", "default")
    assert first.meta.name == "db"
    assert [e.address for e in index.endpoints(first)] == ["10.0.0.7", "127.0.0.1", "127.0.0.1"]
    other = resource("ServiceEntry", "db", "").replace("{name: db}", "{name: db, namespace: app}")
    other += "  " + spec.replace("\n", "\n  ") + "\n  resolution: STATIC\n"
    assert briefs(other)[0].startswith(
        "mesh.yaml: document 3 (ServiceEntry default/tcp-echo): spec.hosts[0]: host"
        " tcp-echo.default.svc.cluster.local is already declared by ServiceEntry app/db"
    )


def test_a_short_service_entry_host_is_literal() -> None:
    """As in Istio: a route's tcp-echo means tcp-echo.default.svc.cluster.local, which a
    ServiceEntry host tcp-echo is not (a Kubernetes Service named tcp-echo is). One in the
    route's own namespace still routes, with a warning, as earlier versions read it; in
    another namespace it is not found."""
    short = SERVICE.replace("[tcp-echo.default.svc.cluster.local]", "[tcp-echo]")
    assert briefs(virtual_service(), base=(GATEWAY, RULE, short, WORKLOADS)) == [
        "Warning: mesh.yaml: document 6 (VirtualService default/tcp-echo): spec.tcp[0]"
        '.route[0].destination.host: ServiceEntry default/tcp-echo declares "tcp-echo", which'
        " Istio reads literally: Istio finds no service tcp-echo.default.svc.cluster.local for"
        " this route (IST0101); routed here, as by earlier versions (hint: describe the service"
        " with a Kubernetes Service (kind: Service), or write the full host in both)"
    ]
    elsewhere = short.replace(
        "metadata: {name: tcp-echo}", "metadata: {name: tcp-echo, namespace: app}"
    )
    assert briefs(virtual_service(), base=(GATEWAY, RULE, elsewhere))[0] == (
        "mesh.yaml: document 4 (VirtualService default/tcp-echo): spec.tcp[0].route[0]"
        '.destination.host: unknown host "tcp-echo" [IST0101] (hint: ServiceEntry'
        ' app/tcp-echo declares "tcp-echo", which Istio reads literally, while a route\'s'
        " tcp-echo means tcp-echo.default.svc.cluster.local: describe the service with a"
        " Kubernetes Service (kind: Service), or write the full host)"
    )
    service = "apiVersion: v1\nkind: Service\nmetadata: {name: tcp-echo}\n"
    service += "spec: {ports: [{name: tcp, port: 9000}, {name: tcp-other, port: 9001}],"
    service += " selector: {app: tcp-echo}}\n"
    assert run(virtual_service(), base=(GATEWAY, RULE, service, WORKLOADS)) == []


# --- WorkloadEntry -------------------------------------------------------------------------


WE = "mesh.yaml: document 6 (WorkloadEntry default/we)"


def test_workload_entry_address_required() -> None:
    assert briefs(resource("WorkloadEntry", "we", "labels: {app: other}")) == [
        f"{WE}: spec.address: required"
    ]


def test_workload_entry_address_must_be_ip_or_dns_name() -> None:
    assert briefs(resource("WorkloadEntry", "we", "address: 'not an address'")) == [
        f'{WE}: spec.address: must be an IP address or a DNS name, got "not an address"'
    ]


def test_workload_entry_selected_by_static_service_needs_ip() -> None:
    spec = "address: echo.local\nlabels: {app: tcp-echo}"
    assert briefs(resource("WorkloadEntry", "we", spec)) == [
        f"{WE}: spec.address: must be an IP address (selected by ServiceEntry default/tcp-echo"
        ' with resolution STATIC), got "echo.local" (hint: use resolution: DNS for host names)'
    ]


def test_workload_entry_ports_name_selecting_service_ports() -> None:
    spec = "address: 127.0.0.1\nlabels: {app: tcp-echo}\nports: {tpc: 9000, tcp: 99999}\nweight: 0"
    """Istio checks a WorkloadEntry alone: a port name no selecting service has is not
    used (a warning)."""
    assert briefs(resource("WorkloadEntry", "we", spec)) == [
        f'Warning: {WE}: spec.ports.tpc: "tpc" is not the name of a service port of'
        ' ServiceEntry default/tcp-echo: not used (hint: did you mean "tcp"?)',
        f"{WE}: spec.ports.tcp: must be a port number 1..65535, got 99999",
    ]


def test_unselected_workload_entry_may_name_any_port() -> None:
    assert run(resource("WorkloadEntry", "we", "address: 10.0.0.1\nports: {anything: 1}")) == []


# --- Numbers out of their Envoy/Istio type's range ----------------------------------------


@pytest.mark.parametrize("weight", [2**31, 2**32, 2**64, 10**40])
def test_weight_must_fit_int32(weight: int) -> None:
    tcp = f"""\
        - route:
          - {{destination: {{host: tcp-echo, subset: v1, port: {{number: 9000}}}}, weight: 1}}
          - {{destination: {{host: tcp-echo, subset: v2, port: {{number: 9000}}}},
              weight: {weight}}}
        """
    shown = str(weight) if weight < 10**24 else f"a number of {len(str(weight))} digits"
    assert briefs(virtual_service(tcp)) == [
        f"{VS}: spec.tcp[0].route[1].weight: must be at most 2147483647, got {shown}"
    ]


def test_weights_must_sum_within_uint32() -> None:
    """Each weight fits Istio's int32, but Envoy adds them up into a uint32."""
    dest = "- {{destination: {{host: tcp-echo, subset: {s}, port: {{number: {p}}}}}, weight: {w}}}"
    big = 2**31 - 1
    tcp = "- route:\n" + "\n".join(
        "  " + dest.format(s=s, p=p, w=big) for s, p in (("v1", 9000), ("v2", 9000), ("v1", 9001))
    )
    assert briefs(virtual_service(tcp)) == [
        f"{VS}: spec.tcp[0].route: weights must sum to at most 4294967295, got {3 * big}"
        " (hint: weights are relative: divide them all by one number)"
    ]
    assert briefs(virtual_service(tcp.replace(f"weight: {big}", "weight: 1431655765"))) == []


def test_connection_pool_numbers_in_range() -> None:
    spec = """\
        host: other
        trafficPolicy:
          connectionPool: {tcp: {connectTimeout: 1000000000000s, maxConnections: 2147483648}}
        subsets:
        - {name: v1, trafficPolicy: {connectionPool: {tcp: {connectTimeout: 2562047h}}}}
        """
    assert briefs(rule(spec)) == [
        f"{DR}: spec.trafficPolicy.connectionPool.tcp.connectTimeout:"
        " must be at most 2562047h47m16.854s",
        f"{DR}: spec.trafficPolicy.connectionPool.tcp.maxConnections:"
        " must be at most 2147483647, got 2147483648",
    ]


def test_endpoint_weight_and_port_in_range() -> None:
    spec = """\
        hosts: [db]
        ports: [{number: 5432, name: pg}]
        endpoints: [{address: 10.0.0.1, ports: {pg: 18446744073709551616}, weight: 4294967296}]
        """
    assert briefs(service(spec)) == [
        f"{SE}: spec.endpoints[0].ports.pg: must be a port number 1..65535,"
        " got 18446744073709551616",
        f"{SE}: spec.endpoints[0].weight: must be at most 4294967295, got 4294967296",
    ]


def test_one_port_with_two_binds_is_refused() -> None:
    """Stricter than Istio, which listens on each bind: one listener serves a port here, so
    connections to the second bind would take the first server's route."""
    servers = "- {port: {number: 80, name: a, protocol: TCP}, hosts: ['*'], bind: 10.0.0.1}\n"
    servers += "- {port: {number: 80, name: b, protocol: TCP}, hosts: ['*'], bind: 10.0.0.2}"
    assert briefs(gateway(servers)) == [
        "mesh.yaml: document 6 (Gateway default/gw): spec.servers[1].bind: port 80 is already"
        " served by spec.servers[0], with another bind: one listener serves a port here, so"
        " this bind would get its route (hint: use another port)"
    ]


def test_a_virtual_service_not_exported_to_its_gateway_routes_nothing_there() -> None:
    """Istio applies a VirtualService to the proxies of the namespaces it is exported to;
    a gateway proxy here sees what its Gateway's namespace sees."""
    hidden = virtual_service(spec="hosts: ['*']\ngateways: [tcp-echo-gateway]\nexportTo: [app]")
    assert briefs(hidden) == [
        f"Warning: {VS}: spec.gateways[0]: VirtualService default/tcp-echo is not exported to"
        " namespace default of Gateway default/tcp-echo-gateway: nothing is routed through it"
        " (hint: see spec.exportTo)"
    ]
    for text, claims in ((hidden, []), (hidden.replace("[app]", "[.]"), [31400])):
        resources = load_text("---\n".join((*BASE, text)))
        [vs] = [r for r in resources if r.kind == "VirtualService"]
        ports = [p for _g, p in route_bindings(ConfigIndex(resources), vs, vs.tcp[0])]
        assert ports == claims
