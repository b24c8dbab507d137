"""Look-ups across resources (host -> service, subset, gateway), shared by validation and
translation so that both resolve a reference the same way.

What a resource's results (its checks, what it translates to) can depend on is declared
here, beside the look-ups: ``requires`` names the deps a resource looks up (a ``Dep``: the
gateway ``ns/name``, the service or rule of a host, the selectors or workloads of a
namespace), ``provides`` the deps it answers. ``ConfigIndex.stale`` turns a change set
(the keys a commit changed) into every key whose results may no longer hold."""

from __future__ import annotations

import bisect
import functools
from collections.abc import Callable, Hashable, Iterable

from .model import (
    DestinationRule,
    Gateway,
    GatewayServer,
    Key,
    KubernetesService,
    Port,
    Resource,
    ServiceEntry,
    Subset,
    VirtualService,
    WorkloadEndpoint,
    WorkloadEntry,
)

CLUSTER_DOMAIN = "svc.cluster.local"

Dep = tuple[str, Hashable]
"""What a look-up's answer depends on: ("gateway", (ns, name)), ("port", number or
ANY_PORT), ("host", host), ("rule", host), ("selectors", ns) or ("workloads", ns); hosts
are canonical."""

ANY_PORT = "*"  # the dep of a route that takes every port of its gateways


def canonical_host(host: str, namespace: str) -> str:
    """A host a VirtualService or DestinationRule names: Kubernetes short names
    (``tcp-echo``) mean ``tcp-echo.<ns>.svc.cluster.local``."""
    return host if "." in host else f"{host}.{namespace}.{CLUSTER_DOMAIN}"


def vs_host(host: str, namespace: str) -> str:
    """A VirtualService host as Istio matches it: a short name in the VirtualService's
    namespace; ``*`` and IPv6 addresses as written (an IPv4 one has dots)."""
    return host if host == "*" or ":" in host else canonical_host(host, namespace)


def service_host(se: ServiceEntry, host: str) -> str:
    """A host of the registry, as Istio reads it: a ServiceEntry's literally (its short
    name ``tcp-echo`` is not ``tcp-echo.<ns>.svc.cluster.local``), a Kubernetes
    Service's as its fully qualified name."""
    return canonical_host(host, se.meta.namespace) if isinstance(se, KubernetesService) else host


def hosts_match(a: str, b: str) -> bool:
    """Istio's host.Name.Matches: equal, or one a wildcard (``*``, ``*.example.com``)
    whose suffix the other ends with (for two wildcards, the longer ends with the
    shorter's)."""
    if a.startswith("*"):
        if b.startswith("*"):
            return b[1:].endswith(a[1:]) if len(a) < len(b) else a[1:].endswith(b[1:])
        return b.endswith(a[1:])
    if b.startswith("*"):
        return a.endswith(b[1:])
    return a == b


def exported(r: ServiceEntry | DestinationRule | VirtualService, namespace: str) -> bool:
    """Whether ``r`` is visible in ``namespace`` (exportTo: none written is ``*``). A
    gateway proxy here has no namespace of its own: it sees what its Gateway's namespace
    sees, which is where Istio's gateway deployments usually run."""
    entries = r.export_to or ("*",)
    own = r.meta.namespace
    return "*" in entries or any((own if e == "." else e) == namespace for e in entries)


WILDCARDS: Dep = ("host", "*")  # what every wildcard host of a ServiceEntry provides


def merge_rules(rules: list[DestinationRule]) -> DestinationRule:
    """Several DestinationRules for one host as one: the first, with the first top-level
    traffic policy written and every subset whose name no earlier rule has."""
    first = rules[0]
    subsets = list(first.subsets)
    names = {s.name for s in subsets}
    for dr in rules[1:]:
        subsets += [s for s in dr.subsets if s.name not in names]
        names.update(s.name for s in dr.subsets)
    policy = next((dr.traffic_policy for dr in rules if dr.traffic_policy is not None), None)
    merged = object.__new__(DestinationRule)
    merged.__dict__.update(first.__dict__)  # the first's key and source name it
    merged.subsets, merged.traffic_policy = subsets, policy
    return merged


MESH = "mesh"  # Istio's reserved gateway name: the mesh's clients (here gRPC ones)


def is_mesh(vs: VirtualService) -> bool:
    """Bound to the mesh: no gateways written, or ``mesh`` among them."""
    return not vs.gateways or MESH in vs.gateways


def route_dep(host: str, namespace: str) -> str:
    """The dep a mesh route for ``host`` provides: its FQDN, ``*`` for a wildcard."""
    return "*" if "*" in host else canonical_host(host, namespace)


def split_ref(ref: str, namespace: str) -> tuple[str, str]:
    """A gateway reference as Istio reads it -> (ns, name): ``ns/name``, ``name`` (in the
    referrer's namespace), or the legacy ``name.ns[.svc.cluster.local]``."""
    if "/" in ref:
        ns, name = ref.split("/", 1)
        return ns, name
    if "." in ref:
        name, ns = ref.split(".")[:2]
        return ns, name
    return namespace, ref


def selects(labels: dict[str, str], selector: dict[str, str]) -> bool:
    """A selector matches when every one of its labels is present with the same value."""
    return all(labels.get(k) == v for k, v in selector.items())


def _key(r: Resource) -> tuple[str, str, str]:
    return r.key


def provides(r: Resource) -> list[Dep]:
    """The deps whose answer ``r`` can be (or change, by coming or going): one resource
    changed means only the look-ups with these deps may answer differently."""
    ns = r.meta.namespace
    if isinstance(r, Gateway):  # its ports decide which Gateway serves a port first
        ports: list[Dep] = [("port", n) for n in dict.fromkeys(s.port.number for s in r.servers)]
        return [("gateway", (ns, r.meta.name)), ("port", ANY_PORT), *ports]
    if isinstance(r, ServiceEntry):
        deps: list[Dep] = [("host", service_host(r, h)) for h in r.hosts]
        if any(h.startswith("*") for h in r.hosts):  # it may answer for any host
            deps.append(WILDCARDS)
        return deps + [("selectors", ns)] if r.workload_selector is not None else deps
    if isinstance(r, DestinationRule):
        return [("rule", canonical_host(r.host, ns))]
    if isinstance(r, WorkloadEntry):
        return [("workloads", ns)]
    if isinstance(r, VirtualService) and is_mesh(r):  # its hosts' routes, for gRPC clients
        return [("route", route_dep(h, ns)) for h in r.hosts]
    return []  # nothing looks a gateway's VirtualService up


def requires(r: Resource) -> list[Dep]:
    """The deps of every look-up that checking or translating ``r`` makes (besides ``r``
    itself), declared from the document alone. A ServiceEntry's endpoints and subsets reach
    the VirtualServices routing to it through its host (see ``ConfigIndex.stale``)."""
    ns = r.meta.namespace
    if isinstance(r, VirtualService):
        deps: list[Dep] = []
        refs = [*r.gateways, *(g for route in r.tcp for m in route.match for g in m.gateways)]
        deps += [("gateway", split_ref(ref, ns)) for ref in refs]
        for route in r.tcp:
            ports = {m.port if m and m.port else ANY_PORT for m in route.match or (None,)}
            deps += [("port", port) for port in ports]
            for dest in route.route:
                host = canonical_host(dest.destination.host, ns)
                deps += [("host", host), ("rule", host)]
                if host != dest.destination.host:  # a ServiceEntry's literal short host
                    deps.append(("host", dest.destination.host))
        return [*deps, WILDCARDS]  # a wildcard host may answer for any of them
    if isinstance(r, ServiceEntry):
        deps = [("rule", service_host(r, h)) for h in r.hosts]
        deps += [("host", service_host(r, h)) for h in r.hosts]  # another entry's endpoints
        deps += [("route", service_host(r, h)) for h in r.hosts] + [("route", "*")]
        return deps + [("workloads", ns)] if r.workload_selector is not None else deps
    if isinstance(r, WorkloadEntry):
        return [("selectors", ns)]
    return []


class ConfigIndex:
    """An immutable view over one set of resources. Where validation reports a clash
    (a duplicate name, two rules for one host), the first in namespace/name order wins."""

    def __init__(self, resources: Iterable[Resource]) -> None:
        self.resources = list(resources)
        self.by_key = {r.key: r for r in self.resources}
        self._gateways: dict[tuple[str, str], Gateway] = {}
        self.virtual_services: list[VirtualService] = []
        self.destination_rules: dict[str, list[DestinationRule]] = {}
        self._merged: dict[tuple[Key, ...], DestinationRule] = {}
        self._services: dict[str, ServiceEntry] = {}
        self._extras: dict[str, list[ServiceEntry]] = {}
        self.merged: list[tuple[Resource, str, str, Resource]] = []
        self._wildcards = False  # a host of a ServiceEntry is one (*.example.com)
        self.workload_entries: list[WorkloadEntry] = []
        self._ports: dict[Key, dict[int, GatewayServer]] = {}
        # (resource, field path, host, the resource that declared it first): a second
        # ServiceEntry for one host in another namespace, which the tables leave out, and
        # one in the same namespace, whose endpoints join the first's (``_extras``).
        self.clashes: list[tuple[Resource, str, str, Resource]] = []
        for r in sorted(self.resources, key=_key):
            ns = r.meta.namespace
            if isinstance(r, Gateway):
                self._gateways.setdefault((ns, r.meta.name), r)
            elif isinstance(r, VirtualService):
                self.virtual_services.append(r)
            elif isinstance(r, DestinationRule):  # several for a host are merged
                self.destination_rules.setdefault(canonical_host(r.host, ns), []).append(r)
            elif isinstance(r, ServiceEntry):
                self._wildcards = self._wildcards or any(h.startswith("*") for h in r.hosts)
                for i, h in enumerate(r.hosts):
                    host = service_host(r, h)
                    owner = self._services.setdefault(host, r)
                    if owner is r:
                        continue
                    if owner.meta.namespace == ns and owner.key != r.key:  # merged, as Istio
                        self._extras.setdefault(host, []).append(r)
                        self.merged.append((r, f"spec.hosts[{i}]", h, owner))
                    else:
                        self.clashes.append((r, f"spec.hosts[{i}]", h, owner))
            elif isinstance(r, WorkloadEntry):
                self.workload_entries.append(r)
        # (namespace, label, value) -> the WorkloadEntries carrying it: a selector looks up
        # its rarest label instead of scanning every entry.
        self._by_label: dict[tuple[str, str, str], list[WorkloadEntry]] = {}
        for we in self.workload_entries:
            for k, v in we.endpoint.labels.items():
                self._by_label.setdefault((we.meta.namespace, k, v), []).append(we)
        self._selected: dict[Key, list[WorkloadEntry]] = {}
        # The reverse: WorkloadEntry key -> the ServiceEntries picking it.
        self._selecting: dict[Key, list[ServiceEntry]] = {}
        if self.workload_entries:
            for se in sorted(self.all_services(), key=_key):
                for picked in self.selected(se):
                    self._selecting.setdefault(picked.key, []).append(se)

    def _view(self, by_key: dict[Key, Resource]) -> ConfigIndex:
        """A new index over ``by_key`` sharing this one's tables (the caller replaces what
        differs; the shared caches hold what the shared tables say)."""
        view = ConfigIndex.__new__(ConfigIndex)
        view.__dict__.update(self.__dict__)
        view.__dict__.pop("_requirers", None)
        view.__dict__.pop("_mesh_routes", None)
        view.by_key, view.resources = by_key, list(by_key.values())
        return view

    def updated(self, by_key: dict[Key, Resource], keys: Iterable[Key]) -> ConfigIndex:
        """The index of ``by_key``, which differs from this index's resources at most in
        ``keys``. When only VirtualServices differ (a traffic shift), it shares every
        other table with this one instead of indexing 30k resources again."""
        if not self.by_key:  # the first config: nothing to share
            return ConfigIndex(by_key.values())
        changed = [k for k in keys if self.by_key.get(k) is not by_key.get(k)]
        if any(k[0] != VirtualService.kind for k in changed):
            return ConfigIndex(by_key.values())
        view = self._view(by_key)
        services = view.virtual_services = list(self.virtual_services)
        for key in changed:
            at = bisect.bisect_left(services, key, key=_key)
            if at < len(services) and services[at].key == key:
                del services[at]
            if (vs := by_key.get(key)) is not None:
                services.insert(at, vs)  # type: ignore[arg-type]  # a VirtualService's key
        return view

    def for_gateways(self, selects: Callable[[Gateway], bool]) -> ConfigIndex:
        """This index with only the Gateways ``selects`` (what one proxy is served)."""
        dropped = [k for k, gw in self._gateways.items() if not selects(gw)]
        if not dropped:
            return self
        by_key = dict(self.by_key)
        for ns, name in dropped:
            del by_key[(Gateway.kind, ns, name)]
        view = self._view(by_key)
        view.__dict__.pop("_port_owners", None)
        view._gateways = {k: gw for k, gw in self._gateways.items() if selects(gw)}
        return view

    @property
    def gateways(self) -> dict[tuple[str, str], Gateway]:
        return self._gateways

    @property
    def services(self) -> dict[str, ServiceEntry]:
        """Host -> the ServiceEntry that declares it."""
        return self._services

    def stale(self, changed: Iterable[Key], before: ConfigIndex) -> set[Key]:
        """The keys whose results may differ from those worked out over ``before``, when
        this index differs from it at ``changed``: those keys, the resources requiring a
        dep one of them provides (before or now), and, through a ServiceEntry made stale
        so (its endpoints or subsets moved), those requiring its hosts, and through a mesh
        VirtualService made stale so (its backends moved), those requiring its routes."""
        stale = set(changed)
        deps: set[Dep] = set()
        for key in stale:
            for index in (before, self):
                if (r := index.by_key.get(key)) is not None:
                    deps.update(provides(r))
        while deps:  # (a change of VirtualServices alone provides none: no table built)
            requirers = self._requirers
            found = {k for dep in deps for k in requirers.get(dep, ())} - stale
            stale |= found
            # What a ServiceEntry's hosts answer includes its endpoints and subsets, and what
            # a mesh route answers includes its backends.
            deps = {
                dep
                for k in found
                for dep in provides(self.by_key[k])
                if dep[0] in ("host", "route")
            }
        return stale

    @functools.cached_property
    def _requirers(self) -> dict[Dep, list[Key]]:
        """Dep -> the keys requiring it (built when a change set first needs it)."""
        out: dict[Dep, list[Key]] = {}
        for r in self.resources:
            for dep in requires(r):
                out.setdefault(dep, []).append(r.key)
        return out

    @functools.cached_property
    def _mesh_routes(
        self,
    ) -> tuple[dict[str, tuple[int, VirtualService]], list[tuple[int, str, VirtualService]]]:
        """The mesh VirtualServices by host (the first of each), and those of wildcard
        hosts, each with its place in namespace/name order."""
        exact: dict[str, tuple[int, VirtualService]] = {}
        wildcards: list[tuple[int, str, VirtualService]] = []
        for at, vs in enumerate(self.virtual_services):
            if is_mesh(vs):
                for h in vs.hosts:
                    host = vs_host(h, vs.meta.namespace)
                    if "*" in host:
                        wildcards.append((at, host, vs))
                    else:
                        exact.setdefault(host, (at, vs))
        return exact, wildcards

    def mesh_route(self, wanted: str) -> VirtualService | None:
        """The VirtualService that routes the mesh's connections to the service host
        ``wanted`` (one of its hosts matches it): the first in namespace/name order, as
        Istio takes one."""
        exact, wildcards = self._mesh_routes
        found = [exact[wanted]] if wanted in exact else []
        found += [(at, vs) for at, host, vs in wildcards if hosts_match(host, wanted)][:1]
        return min(found, key=lambda f: f[0])[1] if found else None

    def gateway(self, ref: str, namespace: str) -> Gateway | None:
        return self._gateways.get(split_ref(ref, namespace))

    def server_ports(self, gw: Gateway) -> dict[int, GatewayServer]:
        """A gateway's server port numbers, each once, in order, with the first server of
        each (a dict: ordered, and a look-up costs the same for a gateway of 10k servers
        as for one of two)."""
        ports = self._ports.get(gw.key)
        if ports is None:
            ports = {}
            for server in gw.servers:
                ports.setdefault(server.port.number, server)
            self._ports[gw.key] = ports
        return ports

    @functools.cached_property
    def _port_owners(self) -> dict[Key, dict[int, GatewayServer]]:
        """Gateway key -> the server ports it serves first, in namespace/name order."""
        owners: dict[int, Key] = {}
        served: dict[Key, dict[int, GatewayServer]] = {}
        for gw in self._gateways.values():
            ports = self.server_ports(gw)
            mine = {n: v for n, v in ports.items() if owners.setdefault(n, gw.key) == gw.key}
            served[gw.key] = ports if len(mine) == len(ports) else mine
        return served

    def served_ports(self, gw: Gateway) -> dict[int, GatewayServer]:
        """The server ports ``gw`` serves: one listener serves a port, so where Gateways
        share one (on a proxy they both select: this index), the first serves it, as
        Istio keeps a port's first server and drops the others."""
        return self._port_owners.get(gw.key, {})

    def service(self, host: str, namespace: str) -> ServiceEntry | None:
        """The ServiceEntry of ``host`` as seen from ``namespace``: declared for the host,
        else for the longest wildcard that matches it (``*.example.com``), and exported
        to the namespace."""
        se = self.declared_service(host, namespace)
        return se if se is not None and exported(se, namespace) else None

    def declared_service(self, host: str, namespace: str) -> ServiceEntry | None:
        """The ServiceEntry of ``host``, exported to ``namespace`` or not. A short host
        that only a ServiceEntry of that namespace declares, literally, is found too:
        Istio would not (validation warns), but configs written for this project's
        earlier versions, which read it so, keep routing."""
        wanted = canonical_host(host, namespace)
        found = self._services.get(wanted)
        if found is None and self._wildcards:
            labels = wanted.split(".")
            for i in range(1, len(labels)):
                found = self._services.get("*." + ".".join(labels[i:]))
                if found is not None:
                    break
        if found is None and wanted != host and (legacy := self._services.get(host)) is not None:
            found = legacy if legacy.meta.namespace == namespace else None
        return found

    def destination_rule(self, host: str, namespace: str) -> DestinationRule | None:
        """The DestinationRule for a host a VirtualService in ``namespace`` names."""
        return self.rule(canonical_host(host, namespace), namespace)

    def rule(self, host: str, namespace: str) -> DestinationRule | None:
        """The DestinationRule of the service host ``host`` as seen from ``namespace``:
        those exported to it, merged as istiod merges them (in namespace/name order: the
        first's top-level policy, if it has one, else the next's; every subset, the first
        of a name)."""
        rules = self.destination_rules.get(host)
        if not rules:
            return None
        visible = [dr for dr in rules if exported(dr, namespace)]
        if len(visible) <= 1:
            return visible[0] if visible else None
        keys = tuple(dr.key for dr in visible)
        merged = self._merged.get(keys)
        if merged is None:
            merged = self._merged[keys] = merge_rules(visible)
        return merged

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
        """Inline endpoints, or the WorkloadEntries its ``workloadSelector`` picks, and
        those of the later ServiceEntries of its hosts in its namespace (Istio keeps one
        service per host and namespace, the first, and gathers every entry's endpoints)."""
        found = self._own_endpoints(se)
        if self._extras:
            for h in se.hosts:
                for extra in self._extras.get(service_host(se, h), ()):
                    found += self._own_endpoints(extra)
        return found

    def _own_endpoints(self, se: ServiceEntry) -> list[WorkloadEndpoint]:
        if se.workload_selector is None:
            return list(se.endpoints)
        return [we.endpoint for we in self.selected(se)]

    def selected(self, se: ServiceEntry) -> list[WorkloadEntry]:
        """The WorkloadEntries a ServiceEntry's ``workloadSelector`` picks, in key order."""
        selector = se.workload_selector
        if selector is None:
            return []
        found = self._selected.get(se.key)
        if found is None:
            ns = se.meta.namespace
            if selector:
                buckets = [self._by_label.get((ns, k, v), []) for k, v in selector.items()]
                candidates = min(buckets, key=len)
            else:  # an empty selector picks every entry of the namespace
                candidates = [we for we in self.workload_entries if we.meta.namespace == ns]
            found = [we for we in candidates if selects(we.endpoint.labels, selector)]
            self._selected[se.key] = found
        return found

    def selecting(self, we: WorkloadEntry) -> list[ServiceEntry]:
        """The ServiceEntries whose ``workloadSelector`` picks ``we``."""
        return self._selecting.get(we.key, [])

    def all_services(self) -> list[ServiceEntry]:
        """Every ServiceEntry, including those a host clash leaves out of ``services``."""
        return [r for r in self.resources if isinstance(r, ServiceEntry)]

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
