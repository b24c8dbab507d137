"""The Istio resource model: only the fields the TCP traffic-shifting task needs.

Field names follow Istio's (snake_case here, camelCase in YAML). Every resource keeps the
spec exactly as written (``raw``) so that ``get -o yaml`` shows what the user applied.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .errors import Source

GROUP = "networking.istio.io"
API_VERSIONS = (f"{GROUP}/v1", f"{GROUP}/v1beta1", f"{GROUP}/v1alpha3")
DEFAULT_NAMESPACE = "default"
Key = tuple[str, str, str]  # kind, namespace, name: a resource's identity (Resource.key)


@dataclass(frozen=True)
class Meta:
    name: str
    namespace: str = DEFAULT_NAMESPACE
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass
class Resource:
    """Common envelope of every Istio document."""

    kind: ClassVar[str] = ""
    api_version: str
    meta: Meta
    raw: dict[str, Any] = field(repr=False, compare=False)
    source: Source = field(default_factory=Source, compare=False)
    lines: dict[str, int] = field(default_factory=dict, repr=False, compare=False)
    """Field path (``spec.tcp[0].route``) -> 1-based line, so problems point at the field."""

    @functools.cached_property
    def key(self) -> Key:
        """kind, namespace, name (kept: it is looked up a few times per resource and apply)."""
        return (self.kind, self.meta.namespace, self.meta.name)

    @property  # not cached: functools.cached_property takes a lock, dearer than this
    def ref(self) -> str:
        """``namespace/name``, the way istioctl prints a resource."""
        return f"{self.meta.namespace}/{self.meta.name}"


# --- Gateway -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Port:
    number: int
    name: str = ""
    protocol: str = ""  # "": not written (a ServiceEntry port is then TCP)
    target_port: int | None = None


@dataclass(frozen=True)
class GatewayServer:
    port: Port
    hosts: tuple[str, ...] = ("*",)
    bind: str = ""


@dataclass
class Gateway(Resource):
    kind: ClassVar[str] = "Gateway"
    selector: dict[str, str] = field(default_factory=dict)
    servers: list[GatewayServer] = field(default_factory=list)


# --- VirtualService ------------------------------------------------------------------------


@dataclass(frozen=True)
class Destination:
    host: str
    subset: str | None = None
    port: int | None = None


@dataclass(frozen=True)
class RouteDestination:
    destination: Destination
    weight: int | None = None  # None: not written; relative weights, see translate


@dataclass(frozen=True)
class L4Match:
    """Fields inside one match are AND'd; several matches are OR'd."""

    port: int | None = None
    gateways: tuple[str, ...] = ()


@dataclass(frozen=True)
class TCPRoute:
    match: tuple[L4Match, ...] = ()
    route: tuple[RouteDestination, ...] = ()


@dataclass
class VirtualService(Resource):
    kind: ClassVar[str] = "VirtualService"
    hosts: list[str] = field(default_factory=list)
    gateways: list[str] = field(default_factory=list)
    tcp: list[TCPRoute] = field(default_factory=list)
    export_to: list[str] = field(default_factory=list)


# --- DestinationRule -----------------------------------------------------------------------


@dataclass(frozen=True)
class TrafficPolicy:
    """connectionPool.tcp: the part of Istio's traffic policy that matters for raw TCP."""

    connect_timeout: float | None = None  # seconds
    max_connections: int | None = None


@dataclass(frozen=True)
class Subset:
    name: str
    labels: dict[str, str] = field(default_factory=dict)
    traffic_policy: TrafficPolicy | None = None

    def __hash__(self) -> int:
        return hash((self.name, tuple(sorted(self.labels.items())), self.traffic_policy))


@dataclass
class DestinationRule(Resource):
    kind: ClassVar[str] = "DestinationRule"
    host: str = ""
    traffic_policy: TrafficPolicy | None = None
    subsets: list[Subset] = field(default_factory=list)
    export_to: list[str] = field(default_factory=list)


# --- Endpoints: ServiceEntry and WorkloadEntry ---------------------------------------------


@dataclass(frozen=True)
class WorkloadEndpoint:
    """One backend instance: an address, a port per service-port name, and labels."""

    address: str
    ports: dict[str, int] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    weight: int | None = None
    network: str = ""

    def __hash__(self) -> int:
        return hash(
            (self.address, tuple(sorted(self.ports.items())), tuple(sorted(self.labels.items())))
        )


@dataclass
class ServiceEntry(Resource):
    kind: ClassVar[str] = "ServiceEntry"
    hosts: list[str] = field(default_factory=list)
    ports: list[Port] = field(default_factory=list)
    resolution: str = "NONE"  # STATIC | DNS | NONE (Istio's default)
    location: str = "MESH_INTERNAL"
    endpoints: list[WorkloadEndpoint] = field(default_factory=list)
    workload_selector: dict[str, str] | None = None
    addresses: list[str] = field(default_factory=list)
    export_to: list[str] = field(default_factory=list)


@dataclass
class KubernetesService(ServiceEntry):
    """A Kubernetes ``v1`` Service, read as the registry's service the way Istio reads one:
    the host ``<name>.<namespace>.svc.cluster.local``, its ports, and as endpoints the
    WorkloadEntries its selector picks (Istio lets a Service select WorkloadEntries).
    It serves as a STATIC ServiceEntry would, so everything after parsing treats it so."""

    kind: ClassVar[str] = "Service"


@dataclass
class WorkloadEntry(Resource):
    kind: ClassVar[str] = "WorkloadEntry"
    endpoint: WorkloadEndpoint = field(default_factory=lambda: WorkloadEndpoint(address=""))


PLURALS = {
    "Service": "services",
    "VirtualService": "virtualservices",
    "DestinationRule": "destinationrules",
    "Gateway": "gateways",
    "ServiceEntry": "serviceentries",
    "WorkloadEntry": "workloadentries",
}


CORE_API_VERSIONS = ("v1",)  # Kubernetes' core group: no group in the name
CORE_KINDS = ("Service",)


def api_versions(kind: str) -> tuple[str, ...]:
    return CORE_API_VERSIONS if kind in CORE_KINDS else API_VERSIONS


def resource_type(kind: str) -> str:
    """kubectl's name for a kind's resource type, e.g. ``virtualservices.networking.istio.io``
    (``services`` for the core group's)."""
    plural = PLURALS.get(kind, kind.lower() + "s")
    return plural if kind in CORE_KINDS else f"{plural}.{GROUP}"


def qualified_kind(kind: str) -> str:
    """How kubectl names one object's kind in its answers: ``virtualservice.networking.istio.io``
    or ``service``."""
    return kind.lower() if kind in CORE_KINDS else f"{kind.lower()}.{GROUP}"


KINDS: dict[str, type[Resource]] = {
    cls.kind: cls
    for cls in (
        Gateway,
        VirtualService,
        DestinationRule,
        ServiceEntry,
        WorkloadEntry,
        KubernetesService,
    )
}
