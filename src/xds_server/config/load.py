"""Read Istio YAML into the model, collecting every problem with its file, document and line.

load.py checks shape: YAML syntax, types, unknown and unsupported fields, apiVersion and kind.
Rules that need other fields or other resources live in validate.py, which reuses the
helpers at the top of this module so both report problems the same way.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..text import shorten
from . import yamldata
from .errors import ConfigError, Problem, Source
from .model import (
    API_VERSIONS,
    DEFAULT_NAMESPACE,
    KINDS,
    Destination,
    DestinationRule,
    Gateway,
    GatewayServer,
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
)

YAML_SUFFIXES = (".yaml", ".yml")

# --- Helpers shared with validate.py -------------------------------------------------------

_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_LABEL = re.compile(_LABEL)
_DNS1123_SUBDOMAIN = re.compile(rf"{_LABEL}(\.{_LABEL})*")
DNS1123_LABEL_RULE = "must be a DNS-1123 label (at most 63 lowercase letters, digits and '-')"
DNS1123_SUBDOMAIN_RULE = "must be a DNS-1123 subdomain (lowercase letters, digits, '-' and '.')"


def is_dns1123_label(value: str) -> bool:
    """Kubernetes namespaces and Istio subset names must be DNS-1123 labels."""
    return len(value) <= 63 and _DNS1123_LABEL.fullmatch(value) is not None


def is_dns1123_subdomain(value: str) -> bool:
    """Kubernetes object names (and host names) must be DNS-1123 subdomains."""
    return len(value) <= 253 and _DNS1123_SUBDOMAIN.fullmatch(value) is not None


join, item = yamldata.join, yamldata.item  # field paths: ``spec.tcp[0].route``


_LAST_STEP = re.compile(r"(\.[^.\[]*|\[\d+\])$")


def line_of(lines: Mapping[str, int], path: str, default: int | None) -> int | None:
    """Line of ``path``, or of its nearest recorded parent: a missing field is reported on
    the line of the mapping that should hold it."""
    while path:
        if path in lines:
            return lines[path]
        parent = _LAST_STEP.sub("", path)
        path = "" if parent == path else parent
    return default


SHOWN_CHARS = 100  # of a long value in a message: a problem list must stay readable


def describe(value: object) -> str:
    """A value the way the user wrote it in YAML, for ``got ...`` in messages; a long one
    as its head and its size, so that a message about a 1 MB name is short. A string is
    cut before it is quoted: its escapes and closing quote stay whole."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return json.dumps(shorten(value, SHOWN_CHARS))
    if isinstance(value, bool | int | float) or value is None:
        return shorten(json.dumps(value), SHOWN_CHARS)
    return shorten(str(value), SHOWN_CHARS)


def known_hint(word: str, choices: Iterable[str], what: str) -> str:
    """'did you mean "x"?' for a near miss, else the list of valid choices."""
    choices = sorted(set(choices))
    close = difflib.get_close_matches(word, choices, n=1)
    if close:
        return f'did you mean "{close[0]}"?'
    return f"known {what}: {', '.join(choices)}" if choices else f"no {what} are defined"


def sort_problems(problems: list[Problem], files_in_order: Iterable[str] = ()) -> list[Problem]:
    """Problems in reading order: files in the order given (else as first seen), then
    document, then line."""
    files: dict[str, int] = {}
    for file in files_in_order:
        files.setdefault(file, len(files))
    for p in problems:
        files.setdefault(p.source.file, len(files))
    return sorted(problems, key=lambda p: (files[p.source.file], p.source.doc, p.source.line or 0))


@dataclass
class Reporter:
    """Collects problems about one document, pinning each to the line of its field."""

    source: Source
    problems: list[Problem]
    lines: dict[str, int] = field(default_factory=dict)
    kind: str | None = None
    name: str | None = None  # "namespace/name"

    @classmethod
    def for_resource(cls, resource: Resource, problems: list[Problem]) -> Reporter:
        return cls(resource.source, problems, resource.lines, resource.kind, resource.ref)

    def add(self, path: str, message: str, hint: str | None = None) -> None:
        line = line_of(self.lines, path, self.source.line)
        self.problems.append(
            Problem(self.source.at(line), message, self.kind, self.name, path or None, hint)
        )


# --- Durations -----------------------------------------------------------------------------

_DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|m|s|us|µs)")
_DURATION = re.compile(rf"(?:{_DURATION_PART.pattern})+")


def parse_duration(text: str) -> float | None:
    """Seconds in a Go/protobuf style duration ("10s", "250ms", "1.5s", "1m30s"), or None."""
    if not _DURATION.fullmatch(text):
        return None
    return sum(float(n) * _DURATION_UNITS[unit] for n, unit in _DURATION_PART.findall(text))


# --- Which keys each mapping may hold ------------------------------------------------------

NOT_SUPPORTED = "not supported by this control plane"
TCP_ONLY = "not supported: this control plane routes TCP only (spec.tcp)"
TCP_POOL_ONLY = "not supported: only trafficPolicy.connectionPool.tcp is implemented"


@dataclass(frozen=True)
class Shape:
    """The keys a mapping may hold: parsed ones, Istio ones accepted and ignored, and Istio
    ones rejected with a reason. Anything else is a typo, as Istio's strict decoding says."""

    parsed: tuple[str, ...]
    ignored: tuple[str, ...] = ()
    unsupported: Mapping[str, str] = field(default_factory=dict)

    @property
    def all(self) -> tuple[str, ...]:
        return (*self.parsed, *self.ignored, *self.unsupported)


def _shape(parsed: str, ignored: str = "", unsupported: Mapping[str, str] | None = None) -> Shape:
    return Shape(tuple(parsed.split()), tuple(ignored.split()), dict(unsupported or {}))


def _all(keys: str, message: str) -> dict[str, str]:
    return dict.fromkeys(keys.split(), message)


DOCUMENT = _shape("apiVersion kind metadata spec", ignored="status")
METADATA = _shape(
    "name namespace labels annotations",
    ignored="uid resourceVersion generation creationTimestamp deletionTimestamp "
    "deletionGracePeriodSeconds managedFields ownerReferences finalizers generateName selfLink",
)
PORT = _shape("number name protocol targetPort")
GATEWAY = _shape("selector servers")
SERVER = _shape(
    "port hosts",
    ignored="bind name",
    unsupported={"tls": "not supported: only plain TCP servers", "defaultEndpoint": NOT_SUPPORTED},
)
VIRTUAL_SERVICE = _shape(
    "hosts gateways tcp", ignored="exportTo", unsupported=_all("http tls", TCP_ONLY)
)
TCP_ROUTE = _shape("match route")
L4_MATCH = _shape(
    "port gateways",
    unsupported=_all("destinationSubnets sourceLabels sourceNamespace sourceSubnet", NOT_SUPPORTED),
)
ROUTE_DESTINATION = _shape("destination weight")
DESTINATION = _shape("host subset port")
PORT_SELECTOR = _shape("number")
DESTINATION_RULE = _shape(
    "host trafficPolicy subsets",
    ignored="exportTo",
    unsupported={"workloadSelector": NOT_SUPPORTED},
)
TRAFFIC_POLICY = _shape(
    "connectionPool",
    unsupported=_all(
        "loadBalancer outlierDetection tls portLevelSettings tunnel proxyProtocol", TCP_POOL_ONLY
    ),
)
CONNECTION_POOL = _shape("tcp", unsupported={"http": TCP_POOL_ONLY})
TCP_SETTINGS = _shape(
    "connectTimeout maxConnections",
    unsupported=_all("tcpKeepalive idleTimeout maxConnectionDuration", NOT_SUPPORTED),
)
SUBSET = _shape("name labels trafficPolicy")
SERVICE_ENTRY = _shape(
    "hosts ports resolution location endpoints workloadSelector",
    ignored="addresses exportTo subjectAltNames",
)
WORKLOAD = _shape("address ports labels weight", ignored="network locality serviceAccount")
WORKLOAD_SELECTOR = _shape("labels")

RESOLUTIONS = ("STATIC", "DNS", "NONE")
LOCATIONS = ("MESH_INTERNAL", "MESH_EXTERNAL")


# --- Typed reading of one document ---------------------------------------------------------


class Reader:
    """Typed access to a document's fields: a wrong type is reported and read as absent, so
    one pass finds every problem. ``null`` means "not written", as in Kubernetes."""

    def __init__(self, rep: Reporter) -> None:
        self.rep = rep

    def mapping(self, value: Any, path: str, shape: Shape) -> dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.rep.add(path, f"must be a mapping, got {describe(value)}")
            return {}
        for key in value:
            self._check_key(str(key), path, shape)
        return value

    def _check_key(self, key: str, path: str, shape: Shape) -> None:
        if key in shape.parsed or key in shape.ignored:
            return
        if key in shape.unsupported:
            self.rep.add(join(path, key), shape.unsupported[key])
        else:
            self.rep.add(
                join(path, key), f'unknown field "{key}"', known_hint(key, shape.all, "fields")
            )

    def _typed(
        self, obj: dict, path: str, key: str, ok: type, expected: str, required: bool
    ) -> Any:
        value = obj.get(key)
        if value is None:
            if required:
                self.rep.add(join(path, key), "required")
            return None
        if isinstance(value, ok) and not (ok is int and isinstance(value, bool)):
            return value
        self._wrong_type(join(path, key), value, expected)
        return None

    def _wrong_type(self, path: str, value: Any, expected: str) -> None:
        quotable = expected == "a string" and isinstance(value, int | float | bool)
        hint = f'quote it: "{describe(value)}"' if quotable else None
        self.rep.add(path, f"must be {expected}, got {describe(value)}", hint)

    def string(self, obj: dict, path: str, key: str, required: bool = False) -> str | None:
        return self._typed(obj, path, key, str, "a string", required)

    def integer(self, obj: dict, path: str, key: str, required: bool = False) -> int | None:
        return self._typed(obj, path, key, int, "an integer", required)

    def items(self, obj: dict, path: str, key: str) -> list[tuple[str, Any]]:
        """(field path, element) of a list, so callers can report on each element."""
        values = self._typed(obj, path, key, list, "a list", False) or []
        return [(item(join(path, key), i), v) for i, v in enumerate(values)]

    def strings(self, obj: dict, path: str, key: str) -> list[str]:
        out = []
        for p, value in self.items(obj, path, key):
            if isinstance(value, str):
                out.append(value)
            else:
                self._wrong_type(p, value, "a string")
        return out

    def string_map(self, obj: dict, path: str, key: str) -> dict[str, str]:
        return self._map(obj, path, key, str, "a string")

    def int_map(self, obj: dict, path: str, key: str) -> dict[str, int]:
        return self._map(obj, path, key, int, "an integer")

    def _map(self, obj: dict, path: str, key: str, ok: type, expected: str) -> dict:
        values = self._typed(obj, path, key, dict, "a mapping", False) or {}
        out = {}
        for k, v in values.items():
            if not isinstance(k, str):
                self._wrong_type(join(path, key), k, "a mapping with string keys")
            elif isinstance(v, ok) and not isinstance(v, bool):
                out[k] = v
            else:
                self._wrong_type(join(join(path, key), k), v, expected)
        return out

    def choice(self, obj: dict, path: str, key: str, choices: tuple[str, ...]) -> str | None:
        value = self.string(obj, path, key)
        if value is None or value in choices:
            return value
        hint = known_hint(value.upper(), choices, "values")
        self.rep.add(
            join(path, key), f"must be one of {', '.join(choices)}, got {describe(value)}", hint
        )
        return None

    def duration(self, obj: dict, path: str, key: str) -> float | None:
        value = obj.get(key)
        seconds = parse_duration(value) if isinstance(value, str) else None
        if value is not None and seconds is None:
            expected = 'a duration like "10s", "250ms" or "1m"'
            self.rep.add(join(path, key), f"must be {expected}, got {describe(value)}")
        return seconds


# --- One parser per kind: spec -> model fields ---------------------------------------------


def _port(rd: Reader, value: Any, path: str) -> Port:
    if value is None:
        rd.rep.add(path, "required")
        return Port(number=0)
    m = rd.mapping(value, path, PORT)
    return Port(
        number=rd.integer(m, path, "number", required=isinstance(value, dict)) or 0,
        name=rd.string(m, path, "name") or "",
        protocol=rd.string(m, path, "protocol") or "TCP",
        target_port=rd.integer(m, path, "targetPort"),
    )


def _gateway(rd: Reader, spec: Any) -> dict:
    m = rd.mapping(spec, "spec", GATEWAY)
    servers = []
    for path, value in rd.items(m, "spec", "servers"):
        s = rd.mapping(value, path, SERVER)
        port = _port(rd, s.get("port"), join(path, "port"))
        servers.append(GatewayServer(port=port, hosts=tuple(rd.strings(s, path, "hosts"))))
    return {"selector": rd.string_map(m, "spec", "selector"), "servers": servers}


def _destination(rd: Reader, value: Any, path: str) -> Destination:
    d = rd.mapping(value, path, DESTINATION)
    port = rd.mapping(d.get("port"), join(path, "port"), PORT_SELECTOR)
    return Destination(
        host=rd.string(d, path, "host") or "",
        subset=rd.string(d, path, "subset"),
        port=rd.integer(port, join(path, "port"), "number"),
    )


def _tcp_route(rd: Reader, value: Any, path: str) -> TCPRoute:
    r = rd.mapping(value, path, TCP_ROUTE)
    matches = []
    for mpath, mvalue in rd.items(r, path, "match"):
        m = rd.mapping(mvalue, mpath, L4_MATCH)
        gateways = tuple(rd.strings(m, mpath, "gateways"))
        matches.append(L4Match(port=rd.integer(m, mpath, "port"), gateways=gateways))
    routes = []
    for dpath, dvalue in rd.items(r, path, "route"):
        d = rd.mapping(dvalue, dpath, ROUTE_DESTINATION)
        if d.get("destination") is None:
            rd.rep.add(join(dpath, "destination"), "required")
        destination = _destination(rd, d.get("destination"), join(dpath, "destination"))
        routes.append(RouteDestination(destination, rd.integer(d, dpath, "weight")))
    return TCPRoute(match=tuple(matches), route=tuple(routes))


def _virtual_service(rd: Reader, spec: Any) -> dict:
    m = rd.mapping(spec, "spec", VIRTUAL_SERVICE)
    return {
        "hosts": rd.strings(m, "spec", "hosts"),
        "gateways": rd.strings(m, "spec", "gateways"),
        "tcp": [_tcp_route(rd, v, p) for p, v in rd.items(m, "spec", "tcp")],
    }


def _traffic_policy(rd: Reader, value: Any, path: str) -> TrafficPolicy | None:
    if value is None:
        return None
    tp = rd.mapping(value, path, TRAFFIC_POLICY)
    pool_path = join(path, "connectionPool")
    pool = rd.mapping(tp.get("connectionPool"), pool_path, CONNECTION_POOL)
    tcp_path = join(pool_path, "tcp")
    tcp = rd.mapping(pool.get("tcp"), tcp_path, TCP_SETTINGS)
    return TrafficPolicy(
        connect_timeout=rd.duration(tcp, tcp_path, "connectTimeout"),
        max_connections=rd.integer(tcp, tcp_path, "maxConnections"),
    )


def _destination_rule(rd: Reader, spec: Any) -> dict:
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
    }


def _workload(rd: Reader, value: Any, path: str) -> WorkloadEndpoint:
    w = rd.mapping(value, path, WORKLOAD)
    return WorkloadEndpoint(
        address=rd.string(w, path, "address") or "",
        ports=rd.int_map(w, path, "ports"),
        labels=rd.string_map(w, path, "labels"),
        weight=rd.integer(w, path, "weight"),
    )


def _service_entry(rd: Reader, spec: Any) -> dict:
    """A missing ``resolution`` means STATIC here, not Istio's NONE: endpoints are always
    given (inline or as WorkloadEntries) and there is no original-destination to fall
    back to."""
    m = rd.mapping(spec, "spec", SERVICE_ENTRY)
    selector = None
    if m.get("workloadSelector") is not None:
        ws = rd.mapping(m["workloadSelector"], "spec.workloadSelector", WORKLOAD_SELECTOR)
        selector = rd.string_map(ws, "spec.workloadSelector", "labels")
    return {
        "hosts": rd.strings(m, "spec", "hosts"),
        "ports": [_port(rd, v, p) for p, v in rd.items(m, "spec", "ports")],
        "resolution": rd.choice(m, "spec", "resolution", RESOLUTIONS) or "STATIC",
        "location": rd.choice(m, "spec", "location", LOCATIONS) or "MESH_INTERNAL",
        "endpoints": [_workload(rd, v, p) for p, v in rd.items(m, "spec", "endpoints")],
        "workload_selector": selector,
    }


def _workload_entry(rd: Reader, spec: Any) -> dict:
    return {"endpoint": _workload(rd, spec, "spec")}


PARSERS = {
    Gateway: _gateway,
    VirtualService: _virtual_service,
    DestinationRule: _destination_rule,
    ServiceEntry: _service_entry,
    WorkloadEntry: _workload_entry,
}


# --- Envelope: apiVersion, kind, metadata ---------------------------------------------------


def _kind(rd: Reader, doc: dict) -> type[Resource] | None:
    kind = rd.string(doc, "", "kind", required=True)
    if kind is None:
        return None
    if kind not in KINDS:
        hint = f"supported kinds: {', '.join(sorted(KINDS))}"
        rd.rep.add("kind", f'unknown kind "{kind}"', hint)
        return None
    rd.rep.kind = kind
    return KINDS[kind]


def _meta(rd: Reader, value: Any) -> Meta:
    m = value if isinstance(value, dict) else {}
    name = rd.string(m, "metadata", "name", required=isinstance(value, dict)) or ""
    namespace = rd.string(m, "metadata", "namespace") or DEFAULT_NAMESPACE
    if name:
        rd.rep.name = f"{namespace}/{name}"
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


def _api_version(rd: Reader, doc: dict) -> str:
    api_version = rd.string(doc, "", "apiVersion", required=True)
    if api_version is not None and api_version not in API_VERSIONS:
        hint = f"use one of {', '.join(API_VERSIONS)}"
        rd.rep.add("apiVersion", f'unsupported apiVersion "{api_version}"', hint)
    return api_version or ""


def _resource(doc: Any, rep: Reporter) -> Resource | None:
    """The resource in one document, or None when it cannot be built (problems say why)."""
    if not isinstance(doc, dict):
        rep.add("", f"must be a mapping (an Istio resource), got {describe(doc)}")
        return None
    rd = Reader(rep)
    cls = _kind(rd, doc)
    meta = _meta(rd, doc.get("metadata"))
    api_version = _api_version(rd, doc)
    rd.mapping(doc, "", DOCUMENT)
    if cls is None:
        return None
    fields = PARSERS[cls](rd, doc.get("spec"))
    if "status" in doc:  # owned by the server, as in Kubernetes: dropped on apply
        doc = {k: v for k, v in doc.items() if k != "status"}
    return cls(
        api_version=api_version, meta=meta, raw=doc, source=rep.source, lines=rep.lines, **fields
    )


# --- YAML with line numbers ----------------------------------------------------------------


_MARKER = re.compile(r"^---", re.MULTILINE)


def _document_at(text: str, position: int) -> int:
    """The document holding ``position``: one more than the ``---`` markers before it,
    the first not counted if only comments precede it."""
    starts = [m.start() for m in _MARKER.finditer(text, 0, position)]
    before = text[: starts[0]].splitlines() if starts else []
    if starts and all(not t.strip() or t.lstrip().startswith("#") for t in before):
        return len(starts)
    return len(starts) + 1


def _syntax_problem(error: Exception, text: str, file: str, doc: int) -> Problem:
    mark = getattr(error, "problem_mark", None)
    if isinstance(error, RecursionError):
        return Problem(Source(file, doc), "YAML nested too deeply to read")
    if isinstance(error, yaml.reader.ReaderError):  # a character YAML does not allow
        doc = _document_at(text, error.position)  # libyaml checks the whole text first
        line = text.count("\n", 0, error.position) + 1
        column = error.position - text.rfind("\n", 0, error.position)
        message = f"YAML syntax error: {error.reason}, got #x{error.character:04x}"
        return Problem(Source(file, doc, line), f"{message} (column {column})")
    if mark is None:
        return Problem(Source(file, doc), f"YAML syntax error: {str(error).splitlines()[0]}")
    text = getattr(error, "problem", None) or str(error)
    return Problem(
        Source(file, doc, mark.line + 1), f"YAML syntax error: {text} (column {mark.column + 1})"
    )


def _refused(d: yamldata.Document, rep: Reporter) -> None:
    """One problem per refused part of a document, naming the resource if it can."""
    data = d.data if isinstance(d.data, dict) else {}
    meta = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
    if isinstance(data.get("kind"), str):
        rep.kind = data["kind"]
    if isinstance(meta.get("name"), str):
        rep.name = f"{meta.get('namespace') or DEFAULT_NAMESPACE}/{meta['name']}"
    for r in d.refusals:
        rep.problems.append(
            Problem(rep.source.at(r.line), r.message, rep.kind, rep.name, r.path or None)
        )


def _load(text: str, file: str, problems: list[Problem]) -> list[Resource]:
    resources = []
    for d in yamldata.documents(text):
        if d.error is not None:
            problems.append(_syntax_problem(d.error, text, file, d.index))
            break
        rep = Reporter(Source(file, d.index, d.line), problems, d.lines)
        if d.refusals:
            _refused(d, rep)
            continue
        resource = _resource(d.data, rep)
        for path in d.dups:
            rep.add(path, "duplicate key: YAML keeps only the last value")
        if resource is not None:
            resources.append(resource)
    return resources


# --- Public API ----------------------------------------------------------------------------


def load_text(text: str, file: str = "<input>") -> list[Resource]:
    """Resources in a multi-document YAML text; raises ConfigError listing every problem."""
    problems: list[Problem] = []
    resources = _load(text, file, problems)
    if problems:
        raise ConfigError(sort_problems(problems))
    return resources


def _expand(path: Path, problems: list[Problem]) -> list[Path]:
    """A directory stands for its *.yaml/*.yml files (sorted, not recursive)."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in YAML_SUFFIXES and p.is_file())
        if not files:
            problems.append(Problem(Source(str(path)), "no *.yaml or *.yml files in directory"))
        return files
    if not path.exists():
        problems.append(Problem(Source(str(path)), "no such file or directory"))
        return []
    return [path]


def load_paths(paths: Iterable[str | Path]) -> list[Resource]:
    """Resources from files and directories, in order; raises ConfigError listing every
    problem in every file."""
    problems: list[Problem] = []
    resources: list[Resource] = []
    for path in paths:
        for file in _expand(Path(path), problems):
            try:
                text = file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as e:
                problems.append(Problem(Source(str(file)), f"cannot read file: {e}"))
                continue
            resources += _load(text, str(file), problems)
    if problems:
        raise ConfigError(sort_problems(problems))
    return resources
