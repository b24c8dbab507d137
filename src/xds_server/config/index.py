"""Look-ups across resources (host -> service, subset, gateway), shared by validation and
translation so that both resolve a reference the same way."""

from __future__ import annotations

from collections.abc import Iterable

from .model import (
    DestinationRule,
    Gateway,
    Port,
    Resource,
    ServiceEntry,
    Subset,
    VirtualService,
    WorkloadEndpoint,
    WorkloadEntry,
)

CLUSTER_DOMAIN = "svc.cluster.local"


def canonical_host(host: str, namespace: str) -> str:
    """Kubernetes short names (``tcp-echo``) mean ``tcp-echo.<ns>.svc.cluster.local``."""
    return host if "." in host else f"{host}.{namespace}.{CLUSTER_DOMAIN}"


def split_ref(ref: str, namespace: str) -> tuple[str, str]:
    """``ns/name`` or ``name`` (in the referrer's namespace) -> (ns, name)."""
    if "/" in ref:
        ns, name = ref.split("/", 1)
        return ns, name
    return namespace, ref


def selects(labels: dict[str, str], selector: dict[str, str]) -> bool:
    """A selector matches when every one of its labels is present with the same value."""
    return all(labels.get(k) == v for k, v in selector.items())


class ConfigIndex:
    """An immutable view over one set of resources. Where validation reports a clash
    (a duplicate name, two rules for one host), the first in namespace/name order wins."""

    def __init__(self, resources: Iterable[Resource]) -> None:
        self.resources = list(resources)
        self.gateways: dict[tuple[str, str], Gateway] = {}
        self.virtual_services: list[VirtualService] = []
        self.destination_rules: dict[str, DestinationRule] = {}
        self.services: dict[str, ServiceEntry] = {}
        self.workload_entries: list[WorkloadEntry] = []
        for r in sorted(self.resources, key=lambda r: r.key):
            if isinstance(r, Gateway):
                self.gateways.setdefault((r.meta.namespace, r.meta.name), r)
            elif isinstance(r, VirtualService):
                self.virtual_services.append(r)
            elif isinstance(r, DestinationRule):
                self.destination_rules.setdefault(canonical_host(r.host, r.meta.namespace), r)
            elif isinstance(r, ServiceEntry):
                for h in r.hosts:
                    self.services.setdefault(canonical_host(h, r.meta.namespace), r)
            elif isinstance(r, WorkloadEntry):
                self.workload_entries.append(r)

    def gateway(self, ref: str, namespace: str) -> Gateway | None:
        return self.gateways.get(split_ref(ref, namespace))

    def service(self, host: str, namespace: str) -> ServiceEntry | None:
        return self.services.get(canonical_host(host, namespace))

    def destination_rule(self, host: str, namespace: str) -> DestinationRule | None:
        return self.destination_rules.get(canonical_host(host, namespace))

    def subset(self, host: str, namespace: str, name: str) -> Subset | None:
        dr = self.destination_rule(host, namespace)
        if dr is None:
            return None
        return next((s for s in dr.subsets if s.name == name), None)

    @staticmethod
    def service_port(se: ServiceEntry, number: int | None) -> Port | None:
        """The service port a destination means; with one port, ``number`` may be left out."""
        if number is None:
            return se.ports[0] if len(se.ports) == 1 else None
        return next((p for p in se.ports if p.number == number), None)

    def endpoints(self, se: ServiceEntry) -> list[WorkloadEndpoint]:
        """Inline endpoints, or the WorkloadEntries its ``workloadSelector`` picks."""
        if se.workload_selector is None:
            return list(se.endpoints)
        return [
            we.endpoint
            for we in self.workload_entries
            if we.meta.namespace == se.meta.namespace
            and selects(we.endpoint.labels, se.workload_selector)
        ]

    def subset_endpoints(
        self, se: ServiceEntry, port: Port, labels: dict[str, str]
    ) -> list[tuple[str, int, int | None]]:
        """(address, port, weight) of each endpoint whose labels include ``labels``."""
        out = []
        for ep in self.endpoints(se):
            if selects(ep.labels, labels):
                number = ep.ports.get(port.name) or port.target_port or port.number
                out.append((ep.address, number, ep.weight))
        return out
