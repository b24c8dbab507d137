"""load.py: YAML -> model, with every problem pointing at file, document, line and field."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from textwrap import dedent

import pytest
import yaml

from xds_server.config.errors import ConfigError, Problem, describe
from xds_server.config.load import load_paths, load_text
from xds_server.config.model import (
    API_VERSIONS,
    Destination,
    DestinationRule,
    Gateway,
    KubernetesService,
    L4Match,
    RouteDestination,
    TrafficPolicy,
    VirtualService,
    WorkloadEndpoint,
    WorkloadEntry,
)
from xds_server.config.schema import parse_duration
from xds_server.config.validate import validate

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "tcp-echo"


def problems(text: str, file: str = "test.yaml") -> list[Problem]:
    with pytest.raises(ConfigError) as info:
        load_text(dedent(text), file)
    return info.value.problems


def one(text: str) -> Problem:
    found = problems(text)
    assert len(found) == 1, [str(p) for p in found]
    return found[0]


def brief(p: Problem) -> str:
    """The message without its line number, which the layout of a test's YAML decides."""
    return str(replace(p, source=replace(p.source, line=None)))


def virtual_service(spec: str, api_version: str = "networking.istio.io/v1") -> str:
    return (
        f"apiVersion: {api_version}\n"
        "kind: VirtualService\n"
        "metadata:\n"
        "  name: tcp-echo\n"
        "spec:\n" + "".join(f"  {line}\n" for line in dedent(spec).splitlines())
    )


# --- Happy path ----------------------------------------------------------------------------


def test_samples_load_in_file_and_document_order() -> None:
    resources = load_paths([SAMPLES / "tcp-echo-all-v1.yaml", SAMPLES / "tcp-echo-services.yaml"])
    assert [(r.kind, r.ref, r.source.doc) for r in resources] == [
        ("Gateway", "default/tcp-echo-gateway", 1),
        ("DestinationRule", "default/tcp-echo-destination", 2),
        ("VirtualService", "default/tcp-echo", 3),
        ("Service", "default/tcp-echo", 1),
        ("WorkloadEntry", "default/tcp-echo-v1", 2),
        ("WorkloadEntry", "default/tcp-echo-v2", 3),
    ]
    gw, dr, vs, se, v1, v2 = resources
    assert isinstance(gw, Gateway)
    assert gw.selector == {"istio": "ingressgateway"}
    assert [(s.port.number, s.port.name, s.port.protocol, s.hosts) for s in gw.servers] == [
        (31400, "tcp", "TCP", ("*",))
    ]
    assert isinstance(dr, DestinationRule)
    assert dr.host == "tcp-echo"
    assert [(s.name, s.labels) for s in dr.subsets] == [
        ("v1", {"version": "v1"}),
        ("v2", {"version": "v2"}),
    ]
    assert isinstance(vs, VirtualService)
    assert vs.gateways == ["tcp-echo-gateway"]
    assert vs.tcp[0].match == (L4Match(port=31400),)
    assert vs.tcp[0].route == (RouteDestination(Destination("tcp-echo", "v1", 9000)),)
    assert isinstance(se, KubernetesService)  # read as the service it describes
    assert se.hosts == ["tcp-echo"] and se.api_version == "v1"
    assert [(p.number, p.name) for p in se.ports] == [(9000, "tcp"), (9001, "tcp-other")]
    assert (se.resolution, se.location, se.workload_selector) == (
        "STATIC",
        "MESH_INTERNAL",
        {"app": "tcp-echo"},
    )
    assert isinstance(v1, WorkloadEntry) and isinstance(v2, WorkloadEntry)
    assert v1.endpoint == WorkloadEndpoint(
        "127.0.0.1", {"tcp": 9000, "tcp-other": 9001}, {"app": "tcp-echo", "version": "v1"}
    )
    assert v2.endpoint.ports == {"tcp": 9002, "tcp-other": 9003}
    assert validate(resources)[0] == []


def test_samples_20_v2_replaces_the_virtual_service() -> None:
    base = load_paths([SAMPLES / "tcp-echo-all-v1.yaml", SAMPLES / "tcp-echo-services.yaml"])
    (shifted,) = load_paths([SAMPLES / "tcp-echo-20-v2.yaml"])
    applied = [shifted if r.key == shifted.key else r for r in base]
    assert isinstance(shifted, VirtualService)
    assert [(d.destination.subset, d.weight) for d in shifted.tcp[0].route] == [
        ("v1", 80),
        ("v2", 20),
    ]
    assert validate(applied)[0] == []


def test_directory_means_its_yaml_files_sorted(tmp_path: Path) -> None:
    (tmp_path / "b.yml").write_text((SAMPLES / "tcp-echo-services.yaml").read_text())
    (tmp_path / "a.yaml").write_text((SAMPLES / "tcp-echo-all-v1.yaml").read_text())
    (tmp_path / "notes.txt").write_text("not yaml: [")
    resources = load_paths([tmp_path])
    assert [Path(r.source.file).name for r in resources] == ["a.yaml"] * 3 + ["b.yml"] * 3


def test_raw_is_the_plain_document_as_written() -> None:
    (vs,) = load_text((SAMPLES / "tcp-echo-20-v2.yaml").read_text())
    assert set(vs.raw) == {"apiVersion", "kind", "metadata", "spec"}
    assert vs.raw["spec"]["tcp"][0]["route"][1] == {
        "destination": {"host": "tcp-echo", "port": {"number": 9000}, "subset": "v2"},
        "weight": 20,
    }
    assert yaml.safe_load(yaml.safe_dump(vs.raw)) == vs.raw  # plain types only


@pytest.mark.parametrize("api_version", API_VERSIONS)
def test_every_istio_api_version_is_accepted(api_version: str) -> None:
    (vs,) = load_text(virtual_service("hosts: ['*']", api_version))
    assert vs.api_version == api_version


def test_defaults_namespace_and_takes_metadata() -> None:
    text = """\
        apiVersion: networking.istio.io/v1
        kind: Gateway
        metadata:
          name: gw
          namespace: edge
          labels: {team: net}
          uid: 1234  # kubectl output carries server-set fields; they are ignored
        """
    (gw,) = load_text(dedent(text))
    assert (gw.ref, gw.meta.labels) == ("edge/gw", {"team": "net"})


def test_empty_documents_are_skipped_but_counted() -> None:
    text = "---\n---\n# nothing\n---\n" + virtual_service("hosts: ['*']") + "---\n"
    (vs,) = load_text(text, "x.yaml")
    assert (vs.source.file, vs.source.doc, vs.source.line) == ("x.yaml", 3, 5)


def test_field_lines_are_recorded() -> None:
    vs = load_text((SAMPLES / "tcp-echo-all-v1.yaml").read_text())[2]
    text = (SAMPLES / "tcp-echo-all-v1.yaml").read_text().splitlines()
    assert text[vs.lines["spec.tcp[0].route[0].destination.subset"] - 1].strip() == "subset: v1"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10s", 10.0), ("250ms", 0.25), ("1.5s", 1.5), ("1m", 60.0), ("1m30s", 90.0), ("1h", 3600.0)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["10", "s", "10 s", "-1s", "1d", ""])
def test_bad_durations(text: str) -> None:
    assert parse_duration(text) is None


def test_destination_rule_traffic_policy() -> None:
    text = """\
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: tcp-echo}
        spec:
          host: tcp-echo
          trafficPolicy:
            connectionPool:
              tcp: {connectTimeout: 250ms, maxConnections: 10}
          subsets:
          - name: v1
            labels: {version: v1}
            trafficPolicy: {connectionPool: {tcp: {connectTimeout: 1.5s}}}
        """
    (dr,) = load_text(dedent(text))
    assert dr.traffic_policy == TrafficPolicy(connect_timeout=0.25, max_connections=10)
    assert dr.subsets[0].traffic_policy == TrafficPolicy(connect_timeout=1.5)


def test_service_entry_resolution_defaults_to_none_and_reads_endpoints() -> None:
    """Istio's default resolution is NONE (validation then refuses the endpoints)."""
    text = """\
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: db}
        spec:
          hosts: [db.internal]
          addresses: [10.0.0.9]
          ports: [{number: 5432, name: pg, protocol: TCP, targetPort: 15432}]
          endpoints:
          - {address: 10.0.0.1, ports: {pg: 6432}, labels: {zone: a}, weight: 3}
        """
    (se,) = load_text(dedent(text))
    assert se.resolution == "NONE" and se.addresses == ["10.0.0.9"]
    assert se.ports[0].target_port == 15432
    assert se.endpoints == [WorkloadEndpoint("10.0.0.1", {"pg": 6432}, {"zone": "a"}, 3)]


# --- YAML and envelope errors --------------------------------------------------------------


def test_yaml_syntax_error_points_at_line_and_column() -> None:
    text = virtual_service("hosts: ['*']") + "---\nkind: Gateway\nmetadata:\n  name: x: y\n"
    [p] = problems(text, "tcp-echo.yaml")
    # libyaml says "in this context", PyYAML's pure-Python parser "here"
    assert re.fullmatch(
        r"tcp-echo\.yaml:10: document 2: YAML syntax error: mapping values are not allowed "
        r"(here|in this context) \(column 10\)",
        str(p),
    )


def test_yaml_syntax_error_in_a_file(tmp_path: Path) -> None:
    path = tmp_path / "tcp-echo.yaml"
    path.write_text("a: [1\n")
    with pytest.raises(ConfigError) as info:
        load_paths([path])
    assert str(info.value).startswith(f"{path}:2: document 1: YAML syntax error: ")
    assert "expected ',' or ']'" in str(info.value)


def test_document_must_be_a_mapping() -> None:
    p = one("- a\n- b\n")
    assert str(p) == "test.yaml:1: document 1: must be a mapping (an Istio resource), got a list"


def test_unknown_kind_lists_the_supported_ones() -> None:
    p = one("apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: x}\n")
    assert str(p) == (
        'test.yaml:2: document 1: kind: unknown kind "Sidecar" (hint: supported kinds:'
        " DestinationRule, Gateway, Service, ServiceEntry, VirtualService, WorkloadEntry)"
    )


def test_a_service_is_in_the_core_group() -> None:
    p = one("apiVersion: networking.istio.io/v1\nkind: Service\nmetadata: {name: x}\n")
    assert str(p) == (
        "test.yaml:1: document 1 (Service default/x): apiVersion: unsupported apiVersion"
        ' "networking.istio.io/v1" (hint: use v1)'
    )


def test_a_deployment_says_what_to_do_instead() -> None:
    p = one("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n")
    assert str(p) == (
        "test.yaml:2: document 1 (Deployment default/x): kind: a Deployment is not run here:"
        " run the workload yourself and describe each instance with a WorkloadEntry (its"
        " address, labels and ports) (hint: a Service selecting those labels finds the"
        " WorkloadEntries)"
    )


def test_missing_kind() -> None:
    p = one("apiVersion: networking.istio.io/v1\nmetadata: {name: x}\n")
    assert brief(p) == "test.yaml: document 1: kind: required"


def test_unsupported_api_version() -> None:
    p = one(virtual_service("hosts: ['*']", "networking.istio.io/v2"))
    assert str(p) == (
        "test.yaml:1: document 1 (VirtualService default/tcp-echo): apiVersion: unsupported"
        ' apiVersion "networking.istio.io/v2" (hint: use one of networking.istio.io/v1,'
        " networking.istio.io/v1beta1, networking.istio.io/v1alpha3)"
    )


def test_metadata_name_required() -> None:
    p = one("apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {namespace: x}\n")
    assert str(p) == "test.yaml:3: document 1 (Gateway): metadata.name: required"


def test_metadata_name_must_be_dns_1123_subdomain() -> None:
    p = one("apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: TCP_echo}\n")
    assert brief(p) == (
        "test.yaml: document 1 (Gateway default/TCP_echo): metadata.name: must be a DNS-1123"
        " subdomain (lowercase letters, digits, '-' and '.'), got \"TCP_echo\""
    )


def test_namespace_must_be_dns_1123_label() -> None:
    p = one(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g, namespace: a.b}\n"
    )
    assert p.field == "metadata.namespace"
    assert p.message.startswith("must be a DNS-1123 label")


def test_duplicate_keys_are_reported() -> None:
    p = one(virtual_service("hosts: ['*']\nhosts: [a]"))
    assert str(p) == (
        "test.yaml:7: document 1 (VirtualService default/tcp-echo): spec.hosts:"
        " duplicate key: YAML keeps only the last value"
    )


# --- Field errors --------------------------------------------------------------------------


def test_wrong_type_names_field_path_and_value() -> None:
    spec = """\
        tcp:
        - route:
          - destination: {host: tcp-echo, subset: v1}
            weight: 20
          - destination: {host: tcp-echo, subset: v2}
            weight: eighty
        """
    p = one(virtual_service(spec))
    assert str(p) == (
        "test.yaml:11: document 1 (VirtualService default/tcp-echo):"
        ' spec.tcp[0].route[1].weight: must be an integer, got "eighty"'
    )


def test_number_where_a_string_is_expected_suggests_quotes() -> None:
    p = one(virtual_service("tcp: [{route: [{destination: {host: tcp-echo, subset: 1}}]}]"))
    assert brief(p) == (
        "test.yaml: document 1 (VirtualService default/tcp-echo):"
        ' spec.tcp[0].route[0].destination.subset: must be a string, got 1 (hint: quote it: "1")'
    )


def test_list_expected() -> None:
    p = one(virtual_service("hosts: '*'"))
    assert (p.field, p.message) == ("spec.hosts", 'must be a list, got "*"')


def test_unknown_field_suggests_the_close_match() -> None:
    p = one(virtual_service("tcp: [{route: [{destination: {host: tcp-echo}, wieght: 1}]}]"))
    assert brief(p) == (
        "test.yaml: document 1 (VirtualService default/tcp-echo): spec.tcp[0].route[0].wieght:"
        ' unknown field "wieght" (hint: did you mean "weight"?)'
    )


def test_unknown_field_without_close_match_lists_fields() -> None:
    p = one(virtual_service("tcp: [{route: [{destination: {host: tcp-echo}, zzz: 1}]}]"))
    assert p.hint == "known fields: destination, weight"


def test_unknown_top_level_field() -> None:
    p = one(virtual_service("hosts: ['*']") + "specs: {}\n")
    assert (p.field, p.message) == ("specs", 'unknown field "specs"')


@pytest.mark.parametrize("field", ["http", "tls"])
def test_virtual_service_http_and_tls_are_not_supported(field: str) -> None:
    p = one(virtual_service(f"{field}: []"))
    assert brief(p) == (
        f"test.yaml: document 1 (VirtualService default/tcp-echo): spec.{field}:"
        " not supported: this control plane routes TCP only (spec.tcp)"
    )


@pytest.mark.parametrize(
    "field", ["destinationSubnets", "sourceLabels", "sourceNamespace", "sourceSubnet"]
)
def test_unsupported_match_fields(field: str) -> None:
    p = one(virtual_service(f"tcp: [{{match: [{{{field}: x}}], route: []}}]"))
    assert (p.field, p.message) == (
        f"spec.tcp[0].match[0].{field}",
        "not supported by this control plane",
    )


def gateway(server: str) -> str:
    return (
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw}\n"
        f"spec:\n  servers:\n  - {server}\n"
    )


def test_gateway_tls_is_not_supported_but_bind_and_name_are_ignored() -> None:
    p = one(
        gateway("{port: {number: 443}, hosts: ['*'], tls: {mode: SIMPLE}, bind: 0.0.0.0, name: x}")
    )
    assert brief(p) == (
        "test.yaml: document 1 (Gateway default/gw): spec.servers[0].tls:"
        " not supported: only plain TCP servers"
    )


def test_port_number_required() -> None:
    p = one(gateway("{port: {name: tcp}, hosts: ['*']}"))
    assert (p.field, p.message) == ("spec.servers[0].port.number", "required")


def test_server_port_required() -> None:
    p = one(gateway("{hosts: ['*']}"))
    assert (p.field, p.message) == ("spec.servers[0].port", "required")


def destination_rule(spec: str) -> str:
    body = "".join(f"  {line}\n" for line in dedent(spec).splitlines())
    return (
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: dr}\n"
        f"spec:\n  host: tcp-echo\n{body}"
    )


@pytest.mark.parametrize(
    ("policy", "field"),
    [
        ("{loadBalancer: {simple: ROUND_ROBIN}}", "spec.trafficPolicy.loadBalancer"),
        ("{outlierDetection: {}}", "spec.trafficPolicy.outlierDetection"),
        ("{tls: {mode: ISTIO_MUTUAL}}", "spec.trafficPolicy.tls"),
        ("{portLevelSettings: []}", "spec.trafficPolicy.portLevelSettings"),
        ("{connectionPool: {http: {}}}", "spec.trafficPolicy.connectionPool.http"),
    ],
)
def test_unsupported_traffic_policy_fields(policy: str, field: str) -> None:
    p = one(destination_rule(f"trafficPolicy: {policy}"))
    assert brief(p) == (
        f"test.yaml: document 1 (DestinationRule default/dr): {field}:"
        " not supported: only trafficPolicy.connectionPool.tcp is implemented"
    )


@pytest.mark.parametrize(("value", "shown"), [("10", "10"), ("'10'", '"10"'), ("ten", '"ten"')])
def test_bad_connect_timeout(value: str, shown: str) -> None:
    p = one(
        destination_rule(f"trafficPolicy: {{connectionPool: {{tcp: {{connectTimeout: {value}}}}}}}")
    )
    assert brief(p) == (
        "test.yaml: document 1 (DestinationRule default/dr):"
        " spec.trafficPolicy.connectionPool.tcp.connectTimeout:"
        f' must be a duration like "10s", "250ms" or "1m", got {shown}'
    )


def test_subset_traffic_policy_is_checked_too() -> None:
    p = one(
        destination_rule(
            "subsets: [{name: v1, trafficPolicy: {connectionPool: {tcp: {maxConnections: x}}}}]"
        )
    )
    assert p.field == "spec.subsets[0].trafficPolicy.connectionPool.tcp.maxConnections"


def service_entry(spec: str) -> str:
    body = "".join(f"  {line}\n" for line in dedent(spec).splitlines())
    return (
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: se}\n"
        f"spec:\n  hosts: [tcp-echo]\n{body}"
    )


def test_resolution_must_be_known() -> None:
    p = one(service_entry("resolution: static"))
    assert brief(p) == (
        "test.yaml: document 1 (ServiceEntry default/se): spec.resolution: must be one of"
        ' STATIC, DNS, NONE, got "static" (hint: did you mean "STATIC"?)'
    )


def test_endpoint_ports_must_map_names_to_integers() -> None:
    p = one(service_entry("endpoints: [{address: 10.0.0.1, ports: {tcp: '9000'}}]"))
    assert (p.field, p.message) == ("spec.endpoints[0].ports.tcp", 'must be an integer, got "9000"')


def test_workload_entry_labels_must_be_strings() -> None:
    text = """\
        apiVersion: networking.istio.io/v1
        kind: WorkloadEntry
        metadata: {name: we}
        spec:
          address: 127.0.0.1
          labels: {version: 2, canary: yes}
        """
    found = problems(text)
    assert [(p.field, p.message, p.hint) for p in found] == [
        ("spec.labels.version", "must be a string, got 2", 'quote it: "2"'),
        ("spec.labels.canary", "must be a string, got true", 'quote it: "true"'),
    ]


# --- Collecting problems -------------------------------------------------------------------


def test_all_problems_across_documents_and_files_are_collected(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(virtual_service("hosts: 1") + "---\n" + gateway("{tls: {}}"))
    (tmp_path / "b.yaml").write_text("kind: Nope\n")
    with pytest.raises(ConfigError) as info:
        load_paths([tmp_path / "a.yaml", tmp_path / "b.yaml", tmp_path / "missing.yaml"])
    assert [brief(p).replace(f"{tmp_path}/", "") for p in info.value.problems] == [
        "a.yaml: document 1 (VirtualService default/tcp-echo): spec.hosts: must be a list, got 1",
        "a.yaml: document 2 (Gateway default/gw): spec.servers[0].tls:"
        " not supported: only plain TCP servers",
        "a.yaml: document 2 (Gateway default/gw): spec.servers[0].port: required",
        'b.yaml: document 1: kind: unknown kind "Nope" (hint: supported kinds: DestinationRule,'
        " Gateway, Service, ServiceEntry, VirtualService, WorkloadEntry)",
        "b.yaml: document 1: metadata: required",
        "b.yaml: document 1: apiVersion: required",
        "missing.yaml: document 1: no such file or directory",
    ]
    assert str(info.value).startswith("7 problems:\n  - ")


def test_empty_directory_is_a_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_paths([tmp_path])
    assert str(info.value) == f"{tmp_path}: document 1: no *.yaml or *.yml files in directory"


# Plain YAML the one-pass reader must build as PyYAML's SafeLoader does.
PLAIN_YAML = [
    "a: 1\nb: -2\nc: 0x1f\nd: 1_000\ne: 1.5\ng: 1e3\n",
    "t: true\nf: false\ny: yes\nn: no\no: on\nnull1: null\nnull2: ~\nempty:\n",
    "q1: '1'\nq2: \"true\"\nplain: hello world\nexplicit: !!str 5\n",
    "nested: {a: [1, 2, {b: c}], d: []}\nlist:\n- x\n- - y\n  - z\n- {}\n",
    "base: &b {x: 1, y: [1, 2]}\nuse: *b\nagain: *b\n",
    "base: &b {x: 1, z: 0}\nmerged:\n  <<: *b\n  y: 2\n  z: 3\n",
    "a: &a {x: 1}\nb: &b {x: 2, y: 2}\nm:\n  <<: [*a, *b]\n",
    "dup: 1\ndup: 2\nok: 3\n",
    "multi: |\n  line one\n  line two\nfolded: >\n  a\n  b\n",
]


@pytest.mark.parametrize("text", PLAIN_YAML)
def test_plain_yaml_is_read_as_pyyaml_reads_it(text: str) -> None:
    from xds_server.config import yamldata

    [doc] = yamldata.documents(text)
    assert not doc.refusals and doc.data == yaml.load(text, Loader=yaml.SafeLoader)
    if text.startswith("dup:"):
        assert doc.dups == ["dup"] and doc.lines["ok"] == 3


def test_timestamps_and_scalar_keys_stay_strings_as_in_json() -> None:
    """kube-apiserver turns YAML into JSON: a timestamp is the string written, a key that
    reads as a number or boolean is its text. Stored as datetimes they broke `get`."""
    from xds_server.config import yamldata

    [doc] = yamldata.documents("ts: 2026-11-25T08:00:00Z\nd: 2026-11-25\n80: http\ntrue: x\n")
    assert doc.data == {"ts": "2026-11-25T08:00:00Z", "d": "2026-11-25", "80": "http", "true": "x"}


RESOURCE = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec: {}\n"

# (text after RESOURCE, field, start of the message): YAML that is not plain data.
NOT_PLAIN = [
    ("status: !!binary aGVsbG8=\n", "status", 'YAML tag "!!binary" is not supported'),
    ("status: !!set {a, b}\n", "status", 'YAML tag "!!set" is not supported'),
    ("status: !!omap [{a: 1}]\n", "status", 'YAML tag "!!omap" is not supported'),
    ("status: !!python/tuple [1]\n", "status", 'YAML tag "!!python/tuple" is not supported'),
    ("status: {x: !custom 1}\n", "status.x", 'YAML tag "!custom" is not supported'),
    ("status: {? [a, b] : c}\n", "status", "keys must be strings, got a collection"),
    ("status: {x: .inf}\n", "status.x", "must be a finite number, got .inf"),
    ("status: {x: .nan}\n", "status.x", "must be a finite number, got .nan"),
    ("status: {x: 1.0e+400}\n", "status.x", "must be a finite number, got 1.0e+400"),
    ("status: {x: " + "9" * 5000 + "}\n", "status.x", "number with 5000 digits is out of range"),
    ("status: &s {x: [*s]}\n", "status.x[0]", "an alias of a node it is inside of"),
]


@pytest.mark.parametrize(("tail", "path", "message"), NOT_PLAIN)
def test_yaml_that_is_not_plain_data_is_one_clear_problem(tail, path, message) -> None:
    """Such values used to be stored (even under the ignored `status`) and then `get` failed
    with "bytes is not JSON serializable"; a 5000-digit number raised a ValueError."""
    [p] = problems(RESOURCE + tail)
    assert (p.source.file, p.source.doc, p.source.line) == ("test.yaml", 1, 5)
    assert (p.kind, p.name, p.field) == ("Gateway", "default/g", path)
    assert p.message.startswith(message) and len(str(p)) < 300


def test_an_alias_inside_itself_is_a_clear_problem_not_a_crash():
    """YAML allows a node to contain an alias of itself; reading lines used to recurse
    until Python gave up, and stored it broke `get` (no JSON form)."""
    [p] = problems(RESOURCE.replace("spec: {}\n", "") + "spec: &s\n  servers: [*s]\n")
    assert p.field == "spec.servers[0]" and "inside of" in p.message


@pytest.mark.parametrize("style", ["block", "flow"])
def test_deep_nesting_is_one_problem_not_a_recursion_error(style: str) -> None:
    """999 levels are valid YAML (libyaml stops at 1000): they used to end in a
    RecursionError traceback."""
    n = 999
    if style == "block":
        deep = "".join(" " * (i + 2) + "k:\n" for i in range(n - 1))
    else:
        deep = "  k: " + "[" * (n - 1) + "]" * (n - 1) + "\n"
    [p] = problems(RESOURCE + "status:\n" + deep)
    assert p.kind == "Gateway" and p.field.startswith("status.k")
    assert p.message == "nested more than 100 levels deep" and len(str(p)) < 1000


def test_a_field_is_read_at_the_deepest_allowed_level() -> None:
    from xds_server.config import yamldata

    text = "a: " + "[" * (yamldata.MAX_DEPTH - 1) + "]" * (yamldata.MAX_DEPTH - 1)
    [doc] = yamldata.documents(text)
    assert not doc.refusals
    [doc] = yamldata.documents(text.replace("a: ", "a: [") + "]")
    assert [r.message for r in doc.refusals] == ["nested more than 100 levels deep"]


def bomb(levels: int, width: int = 10) -> str:
    """An alias bomb ("billion laughs") of a few hundred bytes: width**levels leaves."""
    lines = ["  l0: &l0 [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"  l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]")
    return "status:\n" + "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_before_it_expands() -> None:
    """796 bytes under `status:` used to expand to 4.8 M leaves (47 s, 3 GB RSS, stored in
    the state file). 10**6 leaves here: refused after building MAX_ALIAS_NODES of them."""
    text = RESOURCE + bomb(6)
    assert len(text) < 1000
    [p] = problems(text)
    assert (p.kind, p.name, p.source.doc) == ("Gateway", "default/g", 1)
    assert p.field.startswith("status.l") and p.source.line is not None
    assert p.message.startswith("YAML aliases expand to more than 10000 nodes")


def test_aliases_within_the_bound_are_read() -> None:
    [gateway] = load_text(RESOURCE + bomb(3))  # 1000 leaves, under `status`, dropped
    assert "status" not in gateway.raw


def test_status_is_dropped_on_apply_as_kubernetes_does() -> None:
    """The server owns `status`: a document's is never stored (nor shown by `get`)."""
    [gateway] = load_text(RESOURCE + "status: {conditions: [{type: Ready}]}\n")
    assert set(gateway.raw) == {"apiVersion", "kind", "metadata", "spec"}


def test_an_oversized_document_is_refused_and_the_next_one_read() -> None:
    from xds_server.config import yamldata

    big = RESOURCE + "status: {x: '" + "a" * yamldata.MAX_DOCUMENT_CHARS + "'}\n"
    with pytest.raises(ConfigError) as e:
        load_text(big + "---\n" + RESOURCE + "---\n" + RESOURCE.replace("{name: g}", "[]"))
    first, second = e.value.problems
    assert (first.source.doc, first.source.line) == (1, 1)
    assert re.fullmatch(
        r"the document is 314\d{4} characters long, more than the 3145728 "
        "allowed: split it",
        first.message,
    )
    assert second.source.doc == 3 and second.field == "metadata"


def test_long_values_are_shortened_in_messages() -> None:
    """A 1 MB name gave a 1 MB message (and a problem list too big for gRPC's trailers)."""
    name = "x" * 1_000_000
    [p] = problems(RESOURCE.replace("{name: g}", f"{{name: {name.upper()}}}"))
    assert p.field == "metadata.name" and len(p.message) < 300
    assert p.message.endswith('got "' + "X" * 100 + '... (1000000 bytes)"')


def test_a_value_is_cut_before_it_is_quoted() -> None:
    """A short string whose JSON form is long (non-ASCII escapes) was cut in the middle of
    an escape and lost its closing quote; a long one is cut on its characters."""
    short = "é" * 60  # 60 characters, 362 in JSON
    assert describe(short) == json.dumps(short)
    long = "é" * 150
    assert describe(long) == '"' + "\\u00e9" * 100 + '... (300 bytes)"'
    assert describe("x" * 150) == '"' + "x" * 100 + '... (150 bytes)"'
    assert describe(10**120) == str(10**120)[:100] + "... (121 bytes)"
    looks_cut = "y" * 150 + "... (7 bytes)"  # the user's own text: its real size is told
    assert describe(looks_cut) == '"' + "y" * 100 + '... (163 bytes)"'


def test_a_syntax_error_names_its_document() -> None:
    [p] = problems(RESOURCE + "---\n---\n" + "a: [\n")
    assert p.source.doc == 3 and p.message.startswith("YAML syntax error")
