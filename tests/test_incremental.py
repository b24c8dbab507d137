"""Incremental work gives the answers a fresh run gives: translation reused through a Memo,
per-resource checks reused through a CheckMemory, packed resources reused by the snapshot
cache. Each step of a sequence of changes (weights, endpoints, policies, ports, deletions)
is compared with a from-scratch run, and the reuse itself is counted."""

from __future__ import annotations

import pytest
from envoy.config.cluster.v3.cluster_pb2 import Cluster

from xds_server import ControlPlane
from xds_server.bench.common import BASE_PORT, config_yaml, route_yaml
from xds_server.config.errors import ConfigError
from xds_server.config.index import ConfigIndex
from xds_server.config.load import load_text
from xds_server.config.reuse import Reuse
from xds_server.config.store import ConfigStore
from xds_server.config.validate import CheckMemory, validate
from xds_server.lab.lab import SAMPLES
from xds_server.translate import (
    ANY_NODE,
    ISTIO,
    LOCALITY,
    PUSH_ORDER,
    NodeProfile,
    TranslateOptions,
    translate,
)
from xds_server.translate.memo import Memo
from xds_server.translate.types import CLUSTER, ENDPOINT, LISTENER, Patch, Resources
from xds_server.xds.cache import SnapshotCache, content_version

SERVICES = (SAMPLES / "tcp-echo-services.yaml").read_text()
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
HOSTS, RENAMED = "  hosts:\n  - tcp-echo\n", "  hosts:\n  - tcp-echo-renamed\n"
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
SECOND_ENTRY = """\
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: tcp-echo-again}
spec:
  hosts: [tcp-echo]
  ports: [{number: 9000, name: tcp, protocol: TCP}]
  endpoints: [{address: 127.0.0.1}]
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
    ("the gateway port moved (invalid)", config(all_v1=ALL_V1.replace(PORT, "number: 31401"))),
    ("the task, port back", config()),
    ("the service renamed (invalid)", config(services=SERVICES.replace(HOSTS, RENAMED))),
    ("the task, name back", config()),
    ("a service port renamed (invalid)", config(services=SERVICES.replace(OTHER, SECOND))),
    ("the task, port name back", config()),
    ("no gateway (invalid)", without("Gateway")),
    ("a second entry for the host (invalid)", config() + SECOND_ENTRY),
    ("v2's workload relabelled v1", config(services=SERVICES.replace("version: v2", V1))),
    ("the task after relabelling", config()),
    ("the selector picks nothing", config(services=SERVICES.replace(SELECTOR, PICKS_NOTHING))),
    ("the task, selected again", config()),
    ("no workload entries", without("WorkloadEntry")),
    ("the task once more", config()),
    # Two VirtualServices for one gateway port: the first in namespace/name order serves
    # it and the other is reported, also when the other is the unchanged one.
    ("a route for the port, sorted first (invalid)", docs(config(), route_named("a-first"))),
    ("a route for the port, sorted last (invalid)", docs(config(), route_named("z-last"))),
    ("a gateway port more, routed by another", docs(TWO, route_named("z-last", 31401))),
    ("the other moves onto the task's port (invalid)", docs(TWO, route_named("z-last"))),
    ("the port more removed under it (invalid)", docs(config(), route_named("z-last", 31401))),
    ("the task's route deleted", docs(TWO_BARE, route_named("z-last", 31401))),
    ("the other takes the task's port", docs(TWO_BARE, route_named("z-last"))),
    ("the task's route back, sorted first (invalid)", docs(TWO, route_named("z-last"))),
    ("the other deleted", TWO_BARE),
    # A route without a port match claims every port of its gateway: a gateway change
    # alone changes what it claims, and the next claim must be compared with that.
    ("a route for every port", docs(without("VirtualService"), EVERY_PORT)),
    ("a gateway port more under it", docs(TWO_BARE, EVERY_PORT)),
    ("a route for it, sorted first (invalid)", docs(TWO_BARE, EVERY_PORT, route_named("a", 31401))),
    ("the every-port route deleted", TWO_BARE),
    ("a second server on one port (invalid)", without("VirtualService", ONE_PORT_TWICE)),
    ("the task at last", config()),
]  # fmt: skip


def serialized(resources) -> dict:
    return {
        t: {n: m.SerializeToString(deterministic=True) for n, m in msgs.items()}
        for t, msgs in resources.by_type().items()
    }


def test_the_steps_change_what_they_say():
    """The sequence is worth comparing: each valid step that follows a valid one differs
    from it (in Istio's shape, where every service port has clusters)."""
    options = TranslateOptions(split=ISTIO)
    outputs = [
        None if "(invalid)" in label else serialized(translate(load_text(text), options))
        for label, text in STEPS
    ]
    pairs = [(a, b) for a, b in zip(outputs, outputs[1:], strict=False) if a and b]
    assert len(pairs) >= 10 and all(a != b for a, b in pairs)


def through_a_store():
    """Each step replaces the whole config of one ConfigStore, as a reloaded config
    directory does: unchanged resources keep their objects, so the memories reuse what
    they can. Yields (label, the step's resources, what the store found wrong, store)."""
    store = ConfigStore()
    for label, text in STEPS:
        resources = load_text(text)
        try:
            store.replace(resources)
        except ConfigError as e:
            yield label, resources, e.problems, store
        else:
            yield label, resources, [], store


def test_check_memory_finds_what_a_fresh_validation_finds():
    checked = {}
    for label, resources, problems, store in through_a_store():
        assert problems == validate(resources), label
        checked[label] = store.checks.checked
    invalid = [label for label, text in STEPS if validate(load_text(text))]
    assert invalid == [label for label, _ in STEPS if "(invalid)" in label]
    assert len(invalid) == 13
    # Not fresh runs in disguise: a weight change checks its VirtualService only.
    assert checked["a weight change"] == 1


def test_check_memory_rechecks_an_unchanged_resource_whose_reference_went_away():
    memory = CheckMemory()
    resources = load_text(config())
    assert validate(resources, memory) == []
    no_subsets = [r for r in resources if r.kind != "DestinationRule"]
    problems = validate(no_subsets, memory)  # the same VirtualService object
    assert [p.field for p in problems] == [
        f"spec.tcp[0].route[{i}].destination.subset" for i in (0, 1)
    ]
    assert validate(resources, memory) == []
    # The VirtualService (its subsets are back) and the rule (absent from the last run).
    assert memory.checked == 2 and memory.reused == len(resources) - 2


NODES = [
    ANY_NODE,
    NodeProfile(labels=(("istio", "ingressgateway"),), transport="GRPC"),
    NodeProfile(proxyless=True),  # in Istio's shape, it makes a cluster name twice
]


@pytest.mark.parametrize("split", [LOCALITY, ISTIO])
@pytest.mark.parametrize("node", NODES)
def test_memo_translation_equals_a_fresh_one(split, node):
    options = TranslateOptions(split=split)
    memo = Memo()
    for label, resources, problems, store in through_a_store():
        if problems:
            continue  # translation runs on valid configs only
        assert serialized(translate(store.index, options, node, memo)) == serialized(
            translate(resources, options, node)
        ), label


@pytest.mark.parametrize("split", [LOCALITY, ISTIO])
def test_a_route_shadowed_by_another_stays_shadowed_through_changes(split):
    """Translation skips what validation rejects: of two routes for one port (or two
    entries for one host), the first in namespace/name order is served. Which one that is
    depends on order, so a change to either must not be patched into the last output."""
    options = TranslateOptions(split=split)
    memo = Memo()
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
    held: dict = {}
    for i, text in enumerate(steps):
        # Unchanged documents keep their objects, as in the store: their results are kept.
        fresh = load_text(text)
        held = {r.key: held[r.key] if _same(held.get(r.key), r) else r for r in fresh}
        ours = translate(list(held.values()), options, ANY_NODE, memo)
        assert serialized(ours) == serialized(translate(fresh, options)), i


def _same(old, new) -> bool:
    return old is not None and old.raw == new.raw


def test_a_weight_change_builds_one_assignment_and_keeps_the_rest():
    """Translated again (new objects in, so nothing is reused whole), the route's cluster
    and listener come out equal and are the earlier objects; the assignment is new."""
    memo = Memo()
    first = translate(load_text(STEPS[0][1]), TranslateOptions(), ANY_NODE, memo)
    second = translate(load_text(STEPS[1][1]), TranslateOptions(), ANY_NODE, memo)
    assert (memo.built, memo.kept) == (1, 2)
    [name] = first.clusters
    assert second.endpoints[name] is not first.endpoints[name]
    assert second.clusters[name] is first.clusters[name]
    assert all(second.listeners[n] is first.listeners[n] for n in first.listeners)


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
    assert cp.store.checks.checked == 1  # only the changed VirtualService was checked again
    [memo] = cp._memos.values()
    assert memo.units.computed == 1  # and translated again


def test_a_patch_is_repacked_only_against_the_translation_it_patches():
    """A translation that says how it differs from another is repacked at those names only
    by a group that took that other one; any other group packs it whole."""
    cache = SnapshotCache()
    cache.set_resources(Resources(clusters={"a": Cluster(name="a")}))
    base = Resources(clusters={"a": Cluster(name="a"), "b": Cluster(name="b")})
    only_c = {CLUSTER: {"b", "c"}, ENDPOINT: set(), LISTENER: set()}
    patched = Resources(clusters={"c": Cluster(name="c")}, patch=Patch(base, only_c))
    cache.set_resources(patched)  # the group took {a}, not base: whole
    assert set(cache.snapshot(CLUSTER).entries) == {"c"}
    cache.set_resources(base)
    cache.set_resources(patched)  # now the group took base: b and c looked at, a kept
    assert set(cache.snapshot(CLUSTER).entries) == {"a", "c"}


def test_reuse_works_again_when_a_selected_workload_changes():
    """A result that read a ServiceEntry's selected WorkloadEntries depends on every entry
    of the namespace: reused while they are the same objects, worked out again when one
    changes."""
    resources = load_text(config())
    [se] = [r for r in resources if r.kind == "ServiceEntry"]
    reuse: Reuse[list] = Reuse()
    for _ in range(2):
        index = ConfigIndex(resources)
        reuse.start_run(index.by_key)
        first = reuse.get(se, index, ConfigIndex.selected, index, se)
    assert (reuse.computed, reuse.reused) == (0, 1)
    relabelled = load_text(config(services=SERVICES.replace("version: v2", V1)))
    changed = [r for r in resources if r.kind != "WorkloadEntry"] + [
        r for r in relabelled if r.kind == "WorkloadEntry"
    ]
    index = ConfigIndex(changed)
    reuse.start_run(index.by_key)
    again = reuse.get(se, index, ConfigIndex.selected, index, se)
    assert reuse.computed == 1 and again != first
    assert [we.endpoint.labels["version"] for we in again] == ["v1", "v1"]


def test_a_run_stopped_by_an_exception_leaves_no_resource_unchecked():
    """A run that stops half way (a check raised) has not worked out the resources after
    the failing one: the next run must, though nothing changed in between."""
    seen: list = []

    def work(r, fail: bool):
        if fail:
            raise RuntimeError("boom")
        seen.append(r.key)
        return r.key

    first = {r.key: r for r in load_text(config())}
    reuse: Reuse[tuple] = Reuse()
    reuse.start_run(first)
    for r in reuse.missing(work):
        reuse.get(r, ConfigIndex(first.values()), work, r, False)
    routes = [k for k in first if k[0] == "VirtualService"]
    changed = {**first, **{r.key: r for r in load_text(config()) if r.key[0] == "Gateway"}}
    index = ConfigIndex(changed.values())
    reuse.start_run(changed, hint={k for k in changed if k[0] == "Gateway"})
    todo = reuse.missing(work)
    assert [r.key[0] for r in todo] == ["Gateway"]
    with pytest.raises(RuntimeError):
        reuse.get(todo[0], index, work, todo[0], True)
    seen.clear()
    reuse.start_run(changed, hint=set())
    for r in reuse.missing(work):
        reuse.get(r, index, work, r, False)
    assert [k for k in seen if k[0] == "Gateway"] == [todo[0].key]
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
            assert _what(e.problems) == _what(validate(list(target.values()))), label
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
    assert len(cp._memos) == 2


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
    31400 conflicts with the first."""
    cp = ControlPlane()
    cp.apply(load_text(config(route=every_port("tcp-echo"))))
    gateway = next(d for d in ALL_V1.split("---\n") if "kind: Gateway" in d)
    with pytest.raises(ConfigError):  # the rule is bad; the VirtualService checks clean
        cp.apply(load_text(gateway.replace(PORT, "number: 31402") + "---\n" + BAD_RULE))
    with pytest.raises(ConfigError) as e:
        cp.apply(load_text(route_named("tcp-echo-second")))
    committed = [r for r in cp.store.resources()] + load_text(route_named("tcp-echo-second"))
    assert _what(e.value.problems) == _what(validate(committed))
    assert any("already routed by" in p.message for p in e.value.problems)
