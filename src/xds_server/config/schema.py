"""What an Istio document may hold: its fields, their types and the rules of their values.

The keys each mapping may hold (``Shape``: parsed, ignored, or rejected with a reason; any
other key is a typo), the DNS-1123 naming rules, durations and the enumerations, and
``Reader``, which reads a field with the type it must have and reports one that is wrong.
Rules that need other fields or other resources are Istio's, in validate.py.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .errors import Reporter, describe, item, join, known_hint

_T = TypeVar("_T")

# --- Names ---------------------------------------------------------------------------------

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


# --- Istio's names: hosts, labels, exportTo, protocols ------------------------------------
#
# Istio's own rules (pkg/config/validation, pkg/config/labels), which differ from
# Kubernetes' for some names: a subset, port or host label may hold capitals.

_ISTIO_LABEL = re.compile(r"[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?")
_WILDCARD_LABEL = re.compile(r"\*|(\*|\*-)?[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?")
_LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
ISTIO_LABEL_RULE = "must be a DNS label (at most 63 letters, digits and '-')"


@functools.lru_cache(maxsize=8192)  # names repeat across a config (ports, subsets)
def is_istio_label(value: str) -> bool:
    """Istio's DNS-1123 label, which takes either case (subset and port names)."""
    return len(value) <= 63 and _ISTIO_LABEL.fullmatch(value) is not None


@functools.lru_cache(maxsize=65536)
def domain_problem(domain: str, *, wildcard: bool = True) -> str | None:
    """Why ``domain`` is not a host name Istio takes (None: it is one). ``wildcard``: the
    first label may be ``*`` or start with it (Istio's ValidateWildcardDomain), else an
    FQDN's labels (ValidateFQDN)."""
    if len(domain) > 255:
        return "domain name too long (max 255)"
    if not domain:
        return "empty domain name not allowed"
    if not wildcard:
        return _labels_problem(domain)
    first, dot, rest = domain.partition(".")
    if len(first) > 63 or _WILDCARD_LABEL.fullmatch(first) is None:
        return f"domain name {describe(domain)} invalid (label {describe(first)} invalid)"
    return _labels_problem(rest, domain) if dot else None


def _labels_problem(labels: str, domain: str | None = None) -> str | None:
    domain = domain or labels
    parts = labels.split(".")
    if parts[-1].isdigit():
        top = describe(parts[-1])
        return (
            f"domain name {describe(domain)} invalid (top level domain {top} cannot be all-numeric)"
        )
    for i, label in enumerate(parts):
        if i == len(parts) - 1 and label == "":  # a trailing dot: istio.io.
            return None
        if not is_istio_label(label):
            return f"domain name {describe(domain)} invalid (label {describe(label)} invalid)"
    return None


def label_problems(labels: Mapping[str, str]) -> list[tuple[str, str]]:
    """(key, message) for each label Istio refuses (labels.Instance.Validate): a key is an
    optional DNS prefix and ``/`` and a name of at most 63 characters; a value may be
    empty, and has no length limit in Istio."""
    return [(key, message) for key, value in labels.items() for message in _label(key, value)]


@functools.lru_cache(maxsize=8192)  # labels repeat across a config (app, version)
def _label(key: str, value: str) -> tuple[str, ...]:
    out = []
    prefix, slash, name = key.rpartition("/")
    bad_prefix = slash and (not prefix or not is_dns1123_subdomain(prefix))
    if bad_prefix or len(name) > 63 or _LABEL_NAME.fullmatch(name) is None:
        out.append(f"invalid tag key: {describe(key)}")
    if _LABEL_VALUE.fullmatch(value) is None:
        out.append(f"invalid tag value: {describe(value)}")
    return tuple(out)


# Istio's protocol.Parse, which ignores case
PROTOCOLS: tuple[str, ...] = ("TCP", "UDP", "GRPC", "GRPC-WEB", "HTTP", "HTTP_PROXY", "HTTP2")
PROTOCOLS += ("HTTPS", "TLS", "MONGO", "REDIS", "MYSQL")


def is_protocol(value: str) -> bool:
    return value.upper() in PROTOCOLS


def export_to_problems(entries: list[str], namespace: str, service_entry: bool) -> list[str]:
    """Istio's validateExportTo: ``.`` (this namespace), ``*`` (every one, alone), a
    namespace, or for a ServiceEntry ``~`` (no one, alone); no entry twice."""
    problems = []
    seen: set[str] = set()
    for e in entries:
        key = namespace if e == "." else e
        if key in seen:
            if key != e:
                problems.append(
                    f"duplicate entries in exportTo: . and current namespace {namespace}"
                )
            else:
                problems.append(f"duplicate entries in exportTo for entry {e}")
            continue
        if (service_entry and e == "~") or key == "*" or is_istio_label(key):
            seen.add(key)
        else:
            rule = "only ., * or a valid DNS 1123 label is allowed as exportTo entry"
            problems.append(f"{rule}, got {describe(e)}")
    if "*" in seen and len(entries) > 1:
        problems.append("cannot have both public (*) and non-public exportTo values for a resource")
    if "~" in seen and len(entries) > 1:
        problems.append("cannot export service entry to no one (~) and someone")
    return problems


# --- Durations -----------------------------------------------------------------------------

_DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|m|s|us|µs|ns)")
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
    "port hosts bind",
    ignored="name",
    unsupported={"tls": "not supported: only plain TCP servers", "defaultEndpoint": NOT_SUPPORTED},
)
VIRTUAL_SERVICE = _shape("hosts gateways tcp exportTo", unsupported=_all("http tls", TCP_ONLY))
TCP_ROUTE = _shape("match route")
L4_MATCH = _shape(
    "port gateways",
    unsupported=_all("destinationSubnets sourceLabels sourceNamespace sourceSubnet", NOT_SUPPORTED),
)
ROUTE_DESTINATION = _shape("destination weight")
DESTINATION = _shape("host subset port")
PORT_SELECTOR = _shape("number")
DESTINATION_RULE = _shape(
    "host trafficPolicy subsets exportTo",
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
    "hosts ports resolution location endpoints workloadSelector addresses exportTo",
    ignored="subjectAltNames",
)
WORKLOAD = _shape("address ports labels weight network", ignored="locality serviceAccount")
WORKLOAD_SELECTOR = _shape("labels")

K8S_SERVICE = _shape(
    "ports selector",
    ignored="type clusterIP clusterIPs ipFamilies ipFamilyPolicy sessionAffinity "
    "sessionAffinityConfig internalTrafficPolicy externalTrafficPolicy publishNotReadyAddresses "
    "allocateLoadBalancerNodePorts loadBalancerClass trafficDistribution",
    unsupported={
        "externalName": "not supported: an ExternalName service is a DNS alias; describe the "
        "host with a ServiceEntry (resolution: DNS)",
    },
)
K8S_SERVICE_PORT = _shape("port name protocol targetPort appProtocol", ignored="nodePort")
K8S_WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Pod", "Job")
K8S_PROTOCOLS = ("TCP", "UDP", "SCTP")

RESOLUTIONS = ("STATIC", "DNS", "NONE")
LOCATIONS = ("MESH_INTERNAL", "MESH_EXTERNAL")


# --- Typed reading of one document ---------------------------------------------------------


class Reader:
    """Typed access to a document's fields: a wrong type is reported and read as absent, so
    one pass finds every problem. ``null`` means "not written", as in Kubernetes."""

    def __init__(self, rep: Reporter) -> None:
        self.rep = rep

    def mapping(self, value: Any, path: str, shape: Shape) -> dict[str, Any]:
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
        self,
        obj: dict[str, Any],
        path: str,
        key: str,
        ok: type[_T],
        expected: str,
        required: bool,
    ) -> _T | None:
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

    def string(
        self, obj: dict[str, Any], path: str, key: str, required: bool = False
    ) -> str | None:
        return self._typed(obj, path, key, str, "a string", required)

    def integer(
        self, obj: dict[str, Any], path: str, key: str, required: bool = False
    ) -> int | None:
        return self._typed(obj, path, key, int, "an integer", required)

    def items(self, obj: dict[str, Any], path: str, key: str) -> list[tuple[str, Any]]:
        """(field path, element) of a list, so callers can report on each element."""
        values = self._typed(obj, path, key, list, "a list", False) or []
        return [(item(join(path, key), i), v) for i, v in enumerate(values)]

    def strings(self, obj: dict[str, Any], path: str, key: str) -> list[str]:
        out = []
        for p, value in self.items(obj, path, key):
            if isinstance(value, str):
                out.append(value)
            else:
                self._wrong_type(p, value, "a string")
        return out

    def string_map(self, obj: dict[str, Any], path: str, key: str) -> dict[str, str]:
        return self._map(obj, path, key, str, "a string")

    def int_map(self, obj: dict[str, Any], path: str, key: str) -> dict[str, int]:
        return self._map(obj, path, key, int, "an integer")

    def _map(
        self, obj: dict[str, Any], path: str, key: str, ok: type[Any], expected: str
    ) -> dict[str, Any]:
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

    def choice(
        self, obj: dict[str, Any], path: str, key: str, choices: tuple[str, ...]
    ) -> str | None:
        value = self.string(obj, path, key)
        if value is None or value in choices:
            return value
        hint = known_hint(value.upper(), choices, "values")
        self.rep.add(
            join(path, key), f"must be one of {', '.join(choices)}, got {describe(value)}", hint
        )
        return None

    def duration(self, obj: dict[str, Any], path: str, key: str) -> float | None:
        value = obj.get(key)
        seconds = parse_duration(value) if isinstance(value, str) else None
        if value is not None and seconds is None:
            expected = 'a duration like "10s", "250ms" or "1m"'
            self.rep.add(join(path, key), f"must be {expected}, got {describe(value)}")
        return seconds
