"""Incremental work gives the answers a fresh run gives: per-resource results (checks and
translations) kept in config/results.py while the change sets leave them true, outputs
patched by the translation's Assembler, packed resources reused by the snapshot cache.
Each step of a sequence of changes (weights, endpoints, policies, ports, deletions) is
compared with a from-scratch run, and the reuse itself is counted."""

from __future__ import annotations

import pytest
from conftest import TCP_ECHO_ENTRY
from envoy.config.cluster.v3.cluster_pb2 import Cluster

from xds_server import ControlPlane
from xds_server.bench.common import BASE_PORT, config_yaml, route_yaml
from xds_server.config.errors import ConfigError, errors_of, warnings_of
from xds_server.config.index import ConfigIndex
from xds_server.config.load import load_text
from xds_server.config.results import Results
from xds_server.config.store import ConfigStore
from xds_server.config.validate import CHECK, validate
from xds_server.lab.lab import SAMPLES
from xds_server.translate import (
    ANY_NODE,
    ISTIO,
    LOCALITY,
    PUSH_ORDER,
    Assembler,
    NodeProfile,
    TranslateOptions,
    translate,
)
from xds_server.translate.types import CLUSTER, ENDPOINT, LISTENER
from xds_server.xds.cache import TypeSnapshot, content_version

# The samples' WorkloadEntries, selected by a ServiceEntry rather than the samples'
# Kubernetes Service: the steps edit it.
SAMPLE_SERVICES = (SAMPLES / "tcp-echo-services.yaml").read_text()
SERVICES = TCP_ECHO_ENTRY + "---\n" + SAMPLE_SERVICES.split("---\n", 1)[1]
ALL_V1 = (SAMPLES / "tcp-echo-all-v1.yaml").read_text()
V2_20 = (SAMPLES / "tcp-echo-20-v2.yaml").read_text()
POLICY = """\
  trafficPolicy:
    connectionPool:
      tcp: {connectTimeout: 3s, maxConnections: 7}
"""
SUBSET_POLICY = "".join("  " + line + "\n" for line in POLICY.splitlines())


def config(services: str = SERVICES, all_v1: str = ALL_V1, route: str = V2_20) -> str:
    """The task's config; the VirtualService of ``route`` replaces all-v1's."""
    docs = [d for d in all_v1.split("---\n") if "kind: VirtualService" not in d]
    return "---\n".join([services, *docs, route])


def without(kind: str, text: str | None = None) -> str:
    docs = (text or config()).split("---\n")
    return "---\n".join(d for d in docs if f"kind: {kind}\n" not in d)


def route_named(name: str, port: int = 31400) -> str:
    """The task's 80/20 VirtualService under another name, on ``port``."""
    return V2_20.replace("name: tcp-echo\n", f"name: {name}\n").replace("31400", str(port))


V2 = "      version: v2\n"
HOST = "  host: tcp-echo\n"
SUBSET_V2 = "  - name: v2\n    labels:\n" + V2
MORE_PORTS = "  - {number: 9009, name: tcp-more, protocol: TCP}\n  resolution: STATIC"
PORT, V1 = "number: 31400", "version: v1"
HOSTS, RENAMED = "  - tcp-echo.default.svc.cluster.local\n", "  - tcp-echo-renamed.example\n"
OTHER, SECOND = "name: tcp-other", "name: tcp-second"
SELECTOR = "  workloadSelector:\n    labels:\n      app: tcp-echo\n"
PICKS_NOTHING = SELECTOR.replace("tcp-echo", "nothing")
MORE_SERVER = """\
  - port:
      number: 31401
      name: tcp-more
      protocol: TCP
    hosts:
    - "*"
"""


def every_port(name: str) -> str:
    """The task's 80/20 VirtualService under another name, on every port of its gateway."""
    return route_named(name).replace("  - match:\n    - port: 31400\n    route:", "  - route:")


EVERY_PORT = every_port("z-all")


def docs(*texts: str) -> str:
    return "---\n".join(texts)


GATEWAY_HOSTS = '    hosts:\n    - "*"\n'
TWO_PORTS = ALL_V1.replace(GATEWAY_HOSTS, GATEWAY_HOSTS + MORE_SERVER, 1)
TWO = config(all_v1=TWO_PORTS)  # the task, and a second port on its gateway
TWO_BARE = without("VirtualService", TWO)
ONE_PORT_TWICE = config(all_v1=TWO_PORTS.replace("31401", "31400"))
OTHER_GATEWAY = """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: z-gateway}
spec:
  selector: {}  # every proxy: the task's too, where the task's Gateway comes first
  servers: [{port: {number: 31401, name: tcp, protocol: TCP}, hosts: ["*"]}]
"""
ON_OTHER_GATEWAY = route_named("z-route", 31401).replace("- tcp-echo-gateway", "- z-gateway")
WILDCARD = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: wild}
spec:
  hosts: ["*.wild.example.com"]
  ports: [{number: 9000, name: tcp, protocol: TCP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1}]
"""
# A destination that only the wildcard host answers for.
ON_WILDCARD = route_named("z-wild", 31401).replace("host: tcp-echo", "host: a.wild.example.com")
ON_WILDCARD = ON_WILDCARD.replace("subset: v1", "").replace("subset: v2", "")
V1_AGAIN = "      version: v1\n"


def mesh_route(v1: int, v2: int) -> str:
    """A VirtualService for the mesh's clients (no gateways): what gRPC clients get."""
    return f"""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: mesh-route}}
spec:
  hosts: [tcp-echo]
  tcp:
  - route:
    - {{destination: {{host: tcp-echo, subset: v1, port: {{number: 9000}}}}, weight: {v1}}}
    - {{destination: {{host: tcp-echo, subset: v2, port: {{number: 9000}}}}, weight: {v2}}}
"""


def other_service(port: int) -> str:
    return f"""\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: other}}
spec:
  hosts: [other.default.svc.cluster.local]
  ports: [{{number: {port}, name: tcp, protocol: TCP}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.3}}]
"""


# The mesh's connections to tcp-echo go to other: tcp-echo's gRPC listener names other's
# cluster, which changes with other's port (the route's port is left to other's only one).
MESH_TO_OTHER = (
    mesh_route(1, 1).split("  tcp:")[0] + "  tcp:\n  - route: [{destination: {host: other}}]\n"
)
# Merged with the task's rule: its subset v3 and its policy (the task's rule has none).
SECOND_RULE = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: zz-rule}
spec:
  host: tcp-echo
  trafficPolicy: {connectionPool: {tcp: {maxConnections: 7}}}
  subsets: [{name: v3, labels: {version: v2}}]
"""
SECOND_RULE_CHANGED = SECOND_RULE.replace("7", "9").replace("v2}", "v1}")
# A ServiceEntry host that Istio reads literally, routed as earlier versions read it.
SHORT_ENTRY = (
    WILDCARD.replace("name: wild", "name: short")
    .replace('"*.wild.example.com"', "short")
    .replace("127.0.0.1", "127.0.0.4")
)
ON_SHORT = ON_WILDCARD.replace("z-wild", "z-short").replace("a.wild.example.com", "short")
SECOND_ENTRY = """\
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: tcp-echo-again}
spec:
  hosts: [tcp-echo.default.svc.cluster.local]
  ports: [{number: 9000, name: tcp, protocol: TCP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.9, labels: {version: v2}}]
"""

# Each step is the whole config after one more change.
STEPS = [
    ("the task at 80/20", config()),
    ("a weight change", config(route=V2_20.replace("weight: 80", "weight: 50"))),
    ("back to 80/20", config()),
    ("an endpoint port", config(services=SERVICES.replace("tcp: 9002", "tcp: 9012"))),
    ("a subset policy", config(all_v1=ALL_V1.replace(V2, V2 + SUBSET_POLICY))),
    ("a rule-wide policy", config(all_v1=ALL_V1.replace(HOST, HOST + POLICY))),
    ("a service port more", config(services=SERVICES.replace("  resolution: STATIC", MORE_PORTS))),
    ("the task again", config()),
    # An invalid step after a valid one: an unchanged resource whose check was clean and
    # whose reference changed under it must be checked again.
    ("no v2 subset (invalid)", config(all_v1=ALL_V1.replace(SUBSET_V2, ""))),
    ("the task, subset back", config()),
    ("the gateway port moved (warned)", config(all_v1=ALL_V1.replace(PORT, "number: 31401"))),
    ("the task, port back", config()),
    ("the service renamed (invalid)", config(services=SERVICES.replace(HOSTS, RENAMED))),
    ("the task, name back", config()),
    ("a service port renamed (warned)", config(services=SERVICES.replace(OTHER, SECOND))),
    ("the task, port name back", config()),
    ("no gateway (invalid)", without("Gateway")),
    ("a second entry for the host (warned)", config() + SECOND_ENTRY),
    ("the task, without it", config()),
    ("v2's workload relabelled v1", config(services=SERVICES.replace("version: v2", V1))),
    ("the task after relabelling", config()),
    ("the selector picks nothing", config(services=SERVICES.replace(SELECTOR, PICKS_NOTHING))),
    ("the task, selected again", config()),
    ("no workload entries", without("WorkloadEntry")),
    ("the task once more", config()),
    # Two VirtualServices for one gateway port: the first in namespace/name order serves
    # it and the other is reported, also when the other is the unchanged one.
    ("a route for the port, sorted first (warned)", docs(config(), route_named("a-first"))),
    ("the task, the first route deleted", config()),
    ("a route for the port, sorted last (warned)", docs(config(), route_named("z-last"))),
    ("a gateway port more, routed by another", docs(TWO, route_named("z-last", 31401))),
    ("the other moves onto the task's port (warned)", docs(TWO, route_named("z-last"))),
    ("the port more removed under it (warned)", docs(config(), route_named("z-last", 31401))),
    ("the port more back", docs(TWO, route_named("z-last", 31401))),
    ("the task's route deleted", docs(TWO_BARE, route_named("z-last", 31401))),
    ("the other takes the task's port", docs(TWO_BARE, route_named("z-last"))),
    ("the task's route back, sorted first (warned)", docs(TWO, route_named("z-last"))),
    ("the other deleted", TWO_BARE),
    # A route without a port match claims every port of its gateway: a gateway change
    # alone changes what it claims, and the next claim must be compared with that.
    ("a route for every port", docs(without("VirtualService"), EVERY_PORT)),
    ("a gateway port more under it", docs(TWO_BARE, EVERY_PORT)),
    ("a route for it, sorted first (warned)", docs(TWO_BARE, EVERY_PORT, route_named("a", 31401))),
    ("the every-port route deleted", TWO_BARE),
    ("a second server on one port (warned)", without("VirtualService", ONE_PORT_TWICE)),
    ("another gateway, on a port of its own", docs(config(), OTHER_GATEWAY, ON_OTHER_GATEWAY)),
    ("the task's gateway takes its port (warned)", docs(TWO, OTHER_GATEWAY, ON_OTHER_GATEWAY)),
    ("and gives it back", docs(config(), OTHER_GATEWAY, ON_OTHER_GATEWAY)),
    ("the task at last", config()),
    ("a wildcard service, routed", docs(TWO, WILDCARD, ON_WILDCARD)),
    ("its endpoint moves", docs(TWO, WILDCARD.replace("127.0.0.1", "127.0.0.2"), ON_WILDCARD)),
    ("the wildcard service goes", TWO),
    ("a mesh route for the service", docs(TWO, mesh_route(80, 20))),
    ("its weights change", docs(TWO, mesh_route(50, 50))),
    ("a subset it routes to moves", docs(TWO.replace(V2, V1_AGAIN), mesh_route(50, 50))),
    ("the mesh route goes", TWO.replace(V2, V1_AGAIN)),
    ("a mesh route to another service", docs(TWO, other_service(9100), MESH_TO_OTHER)),
    ("that service's port changes", docs(TWO, other_service(9101), MESH_TO_OTHER)),
    ("the other service goes", TWO),
    ("a second rule for the host", docs(TWO, SECOND_RULE)),
    ("its policy and subset change", docs(TWO, SECOND_RULE_CHANGED)),
    ("the second rule goes", TWO),
    ("a short host, read as before (warned)", docs(TWO, SHORT_ENTRY, ON_SHORT)),
    ("its endpoint moves (warned)", docs(TWO, SHORT_ENTRY.replace(".4", ".5"), ON_SHORT)),
]  # fmt: skip


def serialized(resources) -> dict:
    return {
        t: {n: m.SerializeToString(deterministic=True) for n, m in msgs.items()}
        for t, msgs in resources.by_type().items()
    }


def test_the_steps_change_what_they_say():
    """The sequence is worth comparing: each valid step that follows a valid one differs
    from it, in Istio's shape, where every service port has clusters, for a proxy that is
    also a gRPC client (mesh routes reach those only; a warned step may not differ: it
    can add what is left unused)."""
    options = TranslateOptions(split=ISTIO)
    outputs = [
        None
        if "(invalid)" in label or "(warned)" in label
        else serialized(translate(load_text(text), options, NODES[2]))
        for label, text in STEPS
    ]
    pairs = [(a, b) for a, b in zip(outputs, outputs[1:], strict=False) if a and b]
    assert len(pairs) >= 10 and all(a != b for a, b in pairs)


def through_a_store():
    """Each step replaces the whole config of one ConfigStore, as a reloaded config
    directory does: the store works out what changed, and only that is worked out again.
    Yields (label, the step's resources, the errors the store found, the warnings it gave,
    the keys the step changed, store)."""
    store = ConfigStore()
    committed: dict = {}
    for label, text in STEPS:
        resources = load_text(text)
        changed = {r.key for r in resources if r.raw != getattr(committed.get(r.key), "raw", 0)}
        try:
            applied = store.replace(resources)
        except ConfigError as e:
            yield label, resources, e.problems, [], changed, store
        else:
            committed = {r.key: r for r in resources}
            yield label, resources, [], applied.warnings, changed, store


def _about(what: tuple) -> tuple:
    kind, name = what[:2]
    return (kind, *name.split("/", 1))


def test_check_memory_finds_what_a_fresh_validation_finds():
    """The errors of a rejected step, and the warnings about what an accepted step
    changed, are what a fresh validation finds."""
    checked = {}
    for label, resources, errors, warnings, changed, store in through_a_store():
        fresh = validate(resources)[0]
        assert errors == errors_of(fresh), label
        if not errors:  # every warning about what changed, and none that is not fresh
            about = {w for w in _what(warnings_of(fresh)) if _about(w) in changed}
            assert about <= set(_what(warnings)) <= set(_what(warnings_of(fresh))), label
        checked[label] = store.last_run.computed[CHECK]
    outcome = [validate(load_text(text))[0] for _label, text in STEPS]
    invalid = [label for (label, _), found in zip(STEPS, outcome, strict=True) if errors_of(found)]
    assert invalid == [label for label, _ in STEPS if "(invalid)" in label]
    assert len(invalid) == 3
    warned = [label for (label, _), found in zip(STEPS, outcome, strict=True) if found]
    assert warned == [label for label, _ in STEPS if "(invalid)" in label or "(warned)" in label]
    assert len(warned) == 16
    # Not fresh runs in disguise: a weight change checks its VirtualService only.
    assert checked["a weight change"] == 1


def test_check_memory_rechecks_an_unchanged_resource_whose_reference_went_away():
    store = ConfigStore()
    resources = load_text(config())
    store.apply(resources)
    [rule] = [r.key for r in resources if r.kind == "DestinationRule"]
    with pytest.raises(ConfigError) as e:
        store.delete([rule])  # the VirtualService is unchanged, its subsets gone
    assert [p.field for p in e.value.problems] == [
        f"spec.tcp[0].route[{i}].destination.subset" for i in (0, 1)
    ]
    # The VirtualService and the ServiceEntry require the rule: they alone were checked again.
    assert store.last_run.computed[CHECK] == 2
    assert store.apply(load_text(config()))[0].action == "unchanged"


NODES = [
    ANY_NODE,
    NodeProfile(labels=(("istio", "ingressgateway"),), transport="GRPC"),
    NodeProfile(proxyless=True),  # in Istio's shape, it makes a cluster name twice
]


class Translating:
    """What the control plane does with one kind of proxy: an Assembler fed the store's
    proposals, committed with them."""

    def __init__(self, options, node) -> None:
        self.assembler = Assembler(options, node)
        self.pending = None

    def prepare(self, proposal) -> None:
        self.pending = self.assembler.propose(proposal.index, proposal.run)

    def committed(self) -> None:
        if self.pending is not None:
            self.assembler.commit(self.pending)
        self.pending = None


@pytest.mark.parametrize("split", [LOCALITY, ISTIO])
@pytest.mark.parametrize("node", NODES)
def test_memo_translation_equals_a_fresh_one(split, node):
    options = TranslateOptions(split=split)
    translating = Translating(options, node)
    store = ConfigStore(prepare=translating.prepare)
    for label, text in STEPS:
        resources = load_text(text)
        try:
            store.replace(resources)
        except ConfigError:
            translating.pending = None
            continue  # translation runs on valid configs only
        translating.committed()
        assert serialized(translating.assembler.resources) == serialized(
            translate(resources, options, node)
        ), label


def changed_keys(before: ConfigIndex | None, after: ConfigIndex) -> set:
    """The change set from ``before`` to ``after``, as the store works it out."""
    old = before.by_key if before is not None else {}
    return {
        k
        for k in old.keys() | after.by_key.keys()
        if k not in old or k not in after.by_key or old[k].raw != after.by_key[k].raw
    }


@pytest.mark.parametrize("split", [LOCALITY, ISTIO])
def test_a_route_shadowed_by_another_stays_shadowed_through_changes(split):
    """Translation skips what validation rejects: of two routes for one port (or two
    entries for one host), the first in namespace/name order is served. Which one that is
    depends on order, so a change to either must not be patched into the last output."""
    options = TranslateOptions(split=split)
    shadowed = V2_20.replace("weight: 80", "weight: 50").replace("weight: 20", "weight: 50")
    steps = [
        docs(config(), route_named("a-first")),  # a-first serves 31400
        docs(config(route=shadowed), route_named("a-first")),  # the shadowed one changed
        config(route=shadowed),  # a-first gone: tcp-echo serves
        docs(config(route=shadowed), route_named("a-first")),  # a-first back
        config(),
        docs(config(), route_named("z-last")),  # tcp-echo keeps the port
        config(),
        # A second entry for the host, on another port: left out, though no name clashes.
        config() + SECOND_ENTRY.replace("number: 9000", "number: 9099"),
    ]
    results, assembler, before = Results(), Assembler(options, ANY_NODE), None
    for i, text in enumerate(steps):
        fresh = load_text(text)
        index = ConfigIndex(fresh)
        stale = None if before is None else index.stale(changed_keys(before, index), before)
        run = results.run(stale)
        assembler.commit(assembler.propose(index, run))
        run.commit()
        before = index
        assert serialized(assembler.resources) == serialized(translate(fresh, options)), i


def test_a_weight_change_builds_one_assignment_and_keeps_the_rest():
    """Translated again from scratch (nothing kept), the route's cluster and listener come
    out equal to what was committed and are not sent again; the assignment is."""
    assembler = Assembler(TranslateOptions(), ANY_NODE)
    first = assembler.propose(ConfigIndex(load_text(STEPS[0][1])), Results().run(None))
    assembler.commit(first)
    second = assembler.propose(ConfigIndex(load_text(STEPS[1][1])), Results().run(None))
    [name] = first.upserts[CLUSTER]
    assert {t: set(m) for t, m in second.upserts.items()} == {
        CLUSTER: set(),
        ENDPOINT: {name},
        LISTENER: set(),
    }
    assert not any(second.removals.values())


def test_one_weight_among_many_services_repacks_one_resource():
    """20 services (the config-size benchmark's); one weight changes: one
    ClusterLoadAssignment is re-serialized and every other packed resource is the same
    object as before."""
    cp = ControlPlane(options=TranslateOptions(port_map={BASE_PORT + i: 0 for i in range(20)}))
    cp.apply(load_text(config_yaml(20)))
    before = {t: dict(cp.cache.snapshot(t).entries) for t in PUSH_ORDER}
    cp.apply(load_text(route_yaml(7, 30)))
    changed = {
        t: [n for n, e in cp.cache.snapshot(t).entries.items() if before[t][n] is not e]
        for t in PUSH_ORDER
    }
    assert sum(len(names) for names in changed.values()) == 1
    [(type_url, [name])] = [(t, n) for t, n in changed.items() if n]
    assert type_url.endswith("ClusterLoadAssignment") and name == "route|default/svc-00007|tcp[0]"
    run = cp.store.last.run
    assert run.computed[CHECK] == 1  # only the changed VirtualService was checked again
    assert sum(n for slot, n in run.computed.items() if slot != CHECK) == 1  # translated


def test_an_updated_snapshot_packs_only_the_names_it_is_given():
    """``TypeSnapshot.updated`` serializes the upserts, drops the removals, keeps every
    other entry as the same object, and keeps its version the content version."""
    base = TypeSnapshot.of({n: Cluster(name=n) for n in "abc"})
    new = base.updated({"c": Cluster(name="c", alt_stat_name="x"), "d": Cluster(name="d")}, ["a"])
    assert set(new.entries) == {"b", "c", "d"}
    assert new.entries["b"] is base.entries["b"]
    assert new.entries["c"].version != base.entries["c"].version
    assert (
        new.version
        == content_version(new.entries)
        == TypeSnapshot.of(
            {
                "b": Cluster(name="b"),
                "c": Cluster(name="c", alt_stat_name="x"),
                "d": Cluster(name="d"),
            }
        ).version
    )
    assert [e.name for e in new.changed_since(base.entries)] == ["c", "d"]
    assert new.gone_since(base.entries) == ["a"]


def test_reuse_works_again_when_a_selected_workload_changes():
    """A ServiceEntry with a selector requires the WorkloadEntries of its namespace: its
    results are kept while they are unchanged and worked out again when one changes, and
    so are the results of the VirtualService routing to its host."""
    resources = load_text(config())
    [se] = [r for r in resources if r.kind == "ServiceEntry"]
    [vs] = [r for r in resources if r.kind == "VirtualService"]
    results = Results()
    for stale in (None, set()):
        index = ConfigIndex(resources)
        run = results.run(stale)
        first = run.get(se.key, "selected", lambda index=index: index.selected(se))
        run.commit()
    assert (run.computed["selected"], run.reused["selected"]) == (0, 1)
    relabelled = load_text(config(services=SERVICES.replace("version: v2", V1)))
    changed = [r for r in resources if r.kind != "WorkloadEntry"] + [
        r for r in relabelled if r.kind == "WorkloadEntry"
    ]
    new_index = ConfigIndex(changed)
    stale = new_index.stale(changed_keys(index, new_index), index)
    assert se.key in stale and vs.key in stale
    run = results.run(stale)
    again = run.get(se.key, "selected", lambda: new_index.selected(se))
    assert run.computed["selected"] == 1 and again != first
    assert [we.endpoint.labels["version"] for we in again] == ["v1", "v1"]


def test_a_run_stopped_by_an_exception_leaves_no_resource_unchecked():
    """A run that stops half way (a check raised) is not committed: the next run works out
    what it had not, though nothing changed in between, and keeps the rest."""
    seen: list = []

    def work(r, fail: bool):
        if fail:
            raise RuntimeError("boom")
        seen.append(r.key)
        return r.key

    first = {r.key: r for r in load_text(config())}
    results = Results()
    run = results.run(None)
    for r in first.values():
        run.get(r.key, "work", lambda r=r: work(r, False))
    run.commit()
    routes = [k for k in first if k[0] == "VirtualService"]
    gateways = {k for k in first if k[0] == "Gateway"}
    run = results.run(gateways)
    with pytest.raises(RuntimeError):
        for r in first.values():
            run.get(r.key, "work", lambda r=r: work(r, r.key in gateways))
    seen.clear()
    run = results.run(gateways)
    for r in first.values():
        run.get(r.key, "work", lambda r=r: work(r, False))
    assert set(seen) == gateways
    assert not [k for k in seen if k in routes]  # the rest is kept, not worked out again


@pytest.mark.parametrize("split", [LOCALITY, ISTIO])
def test_snapshot_versions_follow_changes_as_a_fresh_control_plane_has_them(split):
    """Each type's version is kept up to date change by change (not hashed again from all
    resources): it is always the version a fresh control plane gives the same config, and
    the content version of exactly what the snapshot holds. (Istio's shape adds and
    removes clusters with a service port.)"""
    options = TranslateOptions(split=split)
    cp = ControlPlane(options=options)
    for label, text in STEPS:
        if "(invalid)" in label:
            continue
        cp.replace(load_text(text))
        fresh = ControlPlane(options=options)
        fresh.replace(load_text(text))
        for t in PUSH_ORDER:
            snapshot = cp.cache.snapshot(t)
            assert snapshot.version == fresh.cache.snapshot(t).version, (label, t)
            assert snapshot.version == content_version(snapshot.entries), (label, t)


def _what(problems) -> list[tuple]:
    return sorted((p.kind, p.name, p.field, p.message) for p in problems)


@pytest.mark.parametrize("split", [LOCALITY, ISTIO])
def test_steps_as_applies_and_deletes_give_what_a_fresh_run_gives(split):
    """The steps as a user would take them: apply what changed, delete what went. Each
    commit tells the memories which keys changed (a rejected one too), so they compare only
    those: what is rejected, and what each proxy is sent, must still be a fresh run's."""
    options = TranslateOptions(split=split)
    cp = ControlPlane(options=options)
    committed: dict = {}
    for label, text in STEPS:
        target = {r.key: r for r in load_text(text)}
        batch = [r for k, r in target.items() if k not in committed or committed[k].raw != r.raw]
        gone = [k for k in committed if k not in target]
        assert not (batch and gone), label  # one commit per step
        try:
            if batch:
                cp.apply(batch)
            if gone:
                cp.delete_keys(gone)
        except ConfigError as e:
            assert "(invalid)" in label
            assert _what(e.problems) == _what(errors_of(validate(list(target.values()))[0])), label
            continue
        assert "(invalid)" not in label
        committed = target
        fresh = ControlPlane(options=options)
        fresh.replace(list(target.values()))
        for t in PUSH_ORDER:
            ours, theirs = cp.cache.snapshot(t).entries, fresh.cache.snapshot(t).entries
            assert {n: e.any.value for n, e in ours.items()} == {
                n: e.any.value for n, e in theirs.items()
            }, (label, t)


def test_an_index_updated_for_virtual_services_is_the_index_built_afresh():
    """A traffic shift re-indexes only VirtualServices: added, changed and removed ones land
    where a fresh index puts them (namespace/name order), and the other tables are shared."""
    resources = load_text(config_yaml(6))
    index = ConfigIndex(resources)
    by_key = dict(index.by_key)
    routes = [r for r in resources if r.kind == "VirtualService"]
    del by_key[routes[2].key]  # removed
    [changed] = load_text(route_yaml(4, 50))
    by_key[changed.key] = changed
    [added] = load_text(route_yaml(4, 50).replace("svc-00004", "svc-00003a"))
    by_key[added.key] = added
    keys = {routes[2].key, changed.key, added.key}
    updated = index.updated(by_key, keys)
    fresh = ConfigIndex(by_key.values())
    assert [v.key for v in updated.virtual_services] == [v.key for v in fresh.virtual_services]
    assert updated.virtual_services[3] is added and updated.virtual_services[4] is changed
    assert updated.by_key is by_key and updated.resources == list(by_key.values())
    assert updated.destination_rules is index.destination_rules
    # Anything else changed: indexed afresh.
    rule = next(r for r in resources if r.kind == "DestinationRule")
    without_rule = {k: r for k, r in index.by_key.items() if k != rule.key}
    rebuilt = index.updated(without_rule, [rule.key])
    assert rebuilt.destination_rules is not index.destination_rules
    assert len(rebuilt.destination_rules) == len(index.destination_rules) - 1


def test_kinds_of_proxy_served_the_same_share_one_translation_and_its_snapshots():
    """An Envoy labelled for the only Gateway gets what a proxy without labels gets: one
    translation and the same packed snapshots serve both; a proxy no Gateway selects gets
    its own (empty) one."""
    cp = ControlPlane()
    cp.apply(load_text(config()))
    ingress = cp.cache.acquire(NodeProfile.of({"istio": "ingressgateway"}))
    nobody = cp.cache.acquire(NodeProfile.of({"istio": "nobody"}))
    default = cp.cache.groups[ANY_NODE]
    for _ in range(2):  # as acquired, then after a change
        assert all(ingress.types[t] is default.types[t] for t in PUSH_ORDER)
        assert ingress.snapshot(PUSH_ORDER[0]).entries  # not empty: the task's cluster
        assert not any(nobody.snapshot(t).entries for t in PUSH_ORDER)
        cp.apply(load_text(V2_20.replace("weight: 80", "weight: 50")))
    assert len(cp._assemblers) == 2


BAD_RULE = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: broken}
spec:
  host: tcp-echo
  subsets: [{name: v1}, {name: v2}, {name: v1}]  # v1 twice; the routes' subsets exist
"""


def test_what_a_rejected_proposal_was_checked_against_is_not_reused():
    """A rejected apply was still checked: a result worked out against it (a VirtualService
    on every Gateway port claiming the port the rejected Gateway had instead of 31400)
    must not outlive it. The next apply sees the committed Gateway: the second route on
    31400 is shadowed by the first (a warning)."""
    cp = ControlPlane()
    cp.apply(load_text(config(route=every_port("tcp-echo"))))
    gateway = next(d for d in ALL_V1.split("---\n") if "kind: Gateway" in d)
    with pytest.raises(ConfigError):  # the rule is bad; the VirtualService checks clean
        cp.apply(load_text(gateway.replace(PORT, "number: 31402") + "---\n" + BAD_RULE))
    applied = cp.apply(load_text(route_named("tcp-echo-second")))
    assert _what(applied.warnings) == _what(validate(list(cp.store.resources()))[0])
    assert any("already routed by" in p.message for p in applied.warnings)


def test_new_options_serve_what_a_fresh_translation_gives():
    """Options read by every translation start new assemblers: their first output replaces
    what the old ones packed, names that went included (locality -> Istio shape and back)."""
    cp = ControlPlane()
    cp.apply(load_text(config()))
    for split in (ISTIO, LOCALITY):
        cp.set_options(TranslateOptions(split=split))
        fresh = ControlPlane(options=TranslateOptions(split=split))
        fresh.apply(load_text(config()))
        for t in PUSH_ORDER:
            ours, theirs = cp.cache.snapshot(t).entries, fresh.cache.snapshot(t).entries
            assert {n: e.any.value for n, e in ours.items()} == {
                n: e.any.value for n, e in theirs.items()
            }, (split, t)
