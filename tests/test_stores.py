"""The durable stores, one suite for both (SQLite in a state directory, a real etcd), then
what only a shared store does: replicas that follow each other, conflicts between them,
etcd down and back, a compacted watch."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import TCP_ECHO_ENTRY

from xds_server import ControlPlane
from xds_server.config.etcdstore import EtcdStore
from xds_server.config.load import load_text
from xds_server.config.persist import StateDamagedError, StateWriteError
from xds_server.config.store import ConflictError
from xds_server.controlplane import BackgroundControlPlane
from xds_server.lab.lab import SAMPLES
from xds_server.testing.etcd import EtcdCluster
from xds_server.waiting import wait_until

SERVICES = (SAMPLES / "tcp-echo-services.yaml").read_text()
ALL_V1 = (SAMPLES / "tcp-echo-all-v1.yaml").read_text()
V2_20 = (SAMPLES / "tcp-echo-20-v2.yaml").read_text()
VS = ("VirtualService", "default", "tcp-echo")


def weights(v1: int, v2: int) -> str:
    return V2_20.replace("weight: 80", f"weight: {v1}").replace("weight: 20", f"weight: {v2}")


def documents(cp: ControlPlane) -> dict:
    return {r.key: cp.store.document(r.key) for r in cp.store.resources()}


@pytest.fixture(params=["sqlite", "etcd"])
def store_kwargs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict]:
    """How to open the same, empty store again and again."""
    if request.param == "sqlite":
        yield {"state_dir": tmp_path / "state"}
        return
    with EtcdCluster(1, tmp_path / "etcd") as etcd:
        yield {"store": etcd.url("/test")}


def _opened(**kwargs: object) -> ControlPlane:
    cp = ControlPlane(**kwargs)  # type: ignore[arg-type]
    cp.load_state()
    return cp


def _closed(cp: ControlPlane) -> None:
    assert cp.state is not None
    cp.state.close()


def test_a_store_gives_back_what_was_applied(store_kwargs):
    """Applies and a delete, then a restart: the same documents (metadata included), the
    same revision, the same versions served; a delete's revision survives too."""
    cp = _opened(**store_kwargs)
    cp.apply_yaml(SERVICES)
    cp.apply_yaml(ALL_V1)
    cp.apply_yaml(V2_20)
    cp.apply_yaml(weights(70, 30))
    want, revision, versions = documents(cp), cp.store.revision, cp.cache.versions()
    assert want[VS]["metadata"]["generation"] == 3
    _closed(cp)
    again = _opened(**store_kwargs)
    assert documents(again) == want
    assert again.store.revision == revision
    assert again.cache.versions() == versions
    again.delete(*VS[:1], VS[2])
    _closed(again)
    third = _opened(**store_kwargs)
    assert VS not in documents(third)
    assert third.store.revision == revision + 1
    third.apply_yaml(V2_20)  # created again: generation 1, the next revision
    assert third.store.state(VS).generation == 1
    assert third.store.state(VS).resource_version == revision + 2
    _closed(third)


def test_a_rejected_batch_writes_nothing(store_kwargs):
    cp = _opened(**store_kwargs)
    cp.apply_yaml(SERVICES)
    cp.apply_yaml(ALL_V1)
    want, revision = documents(cp), cp.store.revision
    bad = V2_20.replace("subset: v2", "subset: v9")  # no such subset
    with pytest.raises(Exception, match="v9"):
        cp.apply_yaml(bad)
    _closed(cp)
    again = _opened(**store_kwargs)
    assert documents(again) == want and again.store.revision == revision
    _closed(again)


# --- shared: etcd --------------------------------------------------------------------------


@pytest.fixture
def replicas(etcd) -> Iterator[tuple[BackgroundControlPlane, BackgroundControlPlane]]:
    url = etcd.url("/replicas")
    with ControlPlane.start_in_thread(store=url) as a, ControlPlane.start_in_thread(store=url) as b:
        yield a, b


def _same(a: BackgroundControlPlane, b: BackgroundControlPlane) -> None:
    """b holds what a holds: the same documents, revision and versions."""
    wait_until(
        lambda: a.call(documents, a.cp) == b.call(documents, b.cp),
        10,
        what="the replicas to hold the same config",
    )
    assert a.cp.store.revision == b.cp.store.revision
    assert a.call(a.cp.cache.versions) == b.call(b.cp.cache.versions)


def test_replicas_follow_each_other(replicas):
    a, b = replicas
    a.apply_yaml(SERVICES)
    a.apply_yaml(ALL_V1)
    _same(a, b)
    b.apply_yaml(V2_20)
    _same(a, b)
    assert a.get(*VS[:1], VS[2]).tcp[0].route[1].weight == 20
    a.delete(*VS[:1], VS[2])
    _same(a, b)
    assert b.get(*VS[:1], VS[2]) is None


def test_two_replicas_changing_one_resource_at_once_one_gets_conflict(replicas):
    """Both apply the VirtualService as they read it (its resourceVersion in it): one wins,
    the other is a Conflict, however the two race. Changes to other resources at the same
    time both land (the second one is run again on top of the first)."""
    a, b = replicas
    a.apply_yaml(SERVICES)
    a.apply_yaml(ALL_V1)
    a.apply_yaml(V2_20)
    _same(a, b)
    for trial in range(5):
        rv = a.cp.store.state(VS).resource_version
        results: dict[str, object] = {}
        barrier = threading.Barrier(2)

        def apply(
            name: str,
            cp: BackgroundControlPlane,
            v1: int,
            rv: int = rv,
            barrier: threading.Barrier = barrier,
            results: dict[str, object] = results,
        ) -> None:
            doc = weights(v1, 100 - v1).replace(
                "name: tcp-echo\n", f'name: tcp-echo\n  resourceVersion: "{rv}"\n', 1
            )
            barrier.wait()
            try:
                results[name] = cp.apply_yaml(doc)
            except ConflictError as e:
                results[name] = e

        threads = [
            threading.Thread(target=apply, args=("a", a, 60 + trial)),
            threading.Thread(target=apply, args=("b", b, 40 - trial)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        conflicts = [n for n, r in results.items() if isinstance(r, ConflictError)]
        assert len(results) == 2 and len(conflicts) == 1, results
        _same(a, b)
        won = "b" if conflicts == ["a"] else "a"
        want = 60 + trial if won == "a" else 40 - trial
        assert a.get(*VS[:1], VS[2]).tcp[0].route[0].weight == want

    # Unrelated changes, at once from both: both land.
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def other(cp: BackgroundControlPlane, name: str) -> None:
        barrier.wait()
        try:
            cp.apply_yaml(SERVICES.replace("name: tcp-echo-v1", f"name: {name}", 1))
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=other, args=(cp, n)) for cp, n in ((a, "we-a"), (b, "we-b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    _same(a, b)
    names = {r.meta.name for r in a.cp.store.of_kind("WorkloadEntry")}
    assert {"we-a", "we-b"} <= names


def test_etcd_down_refuses_writes_and_serves_then_catches_up(etcd, tmp_path):
    url = etcd.url("/down")
    with ControlPlane.start_in_thread(store=url) as a, ControlPlane.start_in_thread(store=url) as b:
        a.apply_yaml(SERVICES)
        a.apply_yaml(ALL_V1)
        _same(a, b)
        versions = a.call(a.cp.cache.versions)
        (member,) = etcd.members
        etcd.kill(member)
        with pytest.raises(StateWriteError) as refused:
            a.apply_yaml(V2_20)
        (line,) = str(refused.value).splitlines()
        assert "etcd at" in line and "the change was not applied" in line, line
        assert a.call(a.cp.cache.versions) == versions  # still served, unchanged
        assert a.get(*VS[:1], VS[2]).tcp[0].route[0].weight is None
        etcd.restart(member)
        wait_until(lambda: _try(a, V2_20), 20, what="an apply once etcd is back")
        _same(a, b)
        assert b.get(*VS[:1], VS[2]).tcp[0].route[1].weight == 20


def _try(cp: BackgroundControlPlane, text: str) -> bool:
    try:
        cp.apply_yaml(text)
    except StateWriteError:
        return False
    return True


def test_a_compacted_watch_lists_again(etcd):
    """A replica whose watch revision is compacted away (it was cut off while others wrote
    and etcd compacted) lists the prefix again and holds the same config."""
    url = etcd.url("/compact")
    with ControlPlane.start_in_thread(store=url) as a, ControlPlane.start_in_thread(store=url) as b:
        a.apply_yaml(SERVICES)
        a.apply_yaml(ALL_V1)
        _same(a, b)
        state = b.cp.state
        assert isinstance(state, EtcdStore)
        state.close()  # b stops following (as if cut off) ...
        for v1 in (90, 80, 70):
            a.apply_yaml(weights(v1, 100 - v1))
        client = etcd.client()
        client.compact(client.status().revision)
        state.client = type(state.client)(etcd.endpoints)  # ... and comes back
        state.follow(b.cp._take)
        _same(a, b)
        assert b.get(*VS[:1], VS[2]).tcp[0].route[0].weight == 70
        client.close()


def test_a_batch_too_big_for_one_etcd_transaction_is_refused_whole(etcd):
    """etcd's --max-txn-ops (128 by default here): 200 resources in one apply are refused in
    one line, and none of them is written."""
    many = "---\n".join(
        TCP_ECHO_ENTRY.replace("name: tcp-echo\n", f"name: se-{i}\n", 1).replace(
            "  - tcp-echo.default", f"  - se-{i}.default"
        )
        for i in range(200)
    )
    resources = load_text(many)
    assert len(resources) == 200
    cp = _opened(store=etcd.url("/big"))
    with pytest.raises(StateWriteError, match="smaller batches"):
        cp.apply(resources)
    _closed(cp)
    again = _opened(store=etcd.url("/big"))
    assert again.store.resources() == []
    _closed(again)


def test_a_row_that_is_not_a_document_is_refused_naming_it(store_kwargs):
    cp = _opened(**store_kwargs)
    cp.apply_yaml(SERVICES)
    cp.apply_yaml(ALL_V1)
    _closed(cp)
    if "state_dir" in store_kwargs:
        db = sqlite3.connect(Path(store_kwargs["state_dir"]) / "state.db")
        with db:
            db.execute("UPDATE resources SET document = '{', object = NULL WHERE kind = 'Gateway'")
        db.close()
        named = "Gateway default/tcp-echo-gateway"
    else:
        store = EtcdStore(store_kwargs["store"])
        named = f"{store.prefix}/resources/Gateway/default/tcp-echo-gateway"
        store.client.put(named, "{")
        store.close()
    with pytest.raises(StateDamagedError, match=f"has a row it cannot read \\({named}: "):
        ControlPlane(**store_kwargs).load_state()


def test_a_bad_document_from_elsewhere_is_logged_and_following_goes_on(replicas, etcd, caplog):
    """A value under the prefix that is not a document (written by some other tool): each
    replica says so and keeps its config, and what is applied next still reaches both."""
    a, b = replicas
    a.apply_yaml(SERVICES)
    a.apply_yaml(ALL_V1)
    _same(a, b)
    state = a.cp.state
    assert isinstance(state, EtcdStore)
    client = etcd.client()
    client.put(f"{state.prefix}/resources/Gateway/default/bad", "{")
    wait_until(
        lambda: sum("cannot take a change" in r.getMessage() for r in caplog.records) >= 2,
        10,
        what="both replicas to log the bad value",
    )
    a.apply_yaml(V2_20)
    _same(a, b)
    assert b.get(*VS[:1], VS[2]).tcp[0].route[1].weight == 20


def _pair(i: int) -> str:
    """One batch of two ServiceEntries: a half-applied batch would show one of them."""
    return "---\n".join(
        TCP_ECHO_ENTRY.replace("name: tcp-echo\n", f"name: se-{i}-{half}\n", 1).replace(
            "  - tcp-echo.default", f"  - se-{i}-{half}.default"
        )
        for half in ("a", "b")
    )


def test_etcd_leader_killed_during_an_apply_storm_loses_no_acknowledged_apply(etcd_cluster):
    """Applies one after the other on a replica of a 3-member etcd; the leader is killed
    with kill -9 in the middle. Every apply that was acknowledged is in etcd afterwards,
    and no batch is there by half; the storm goes on on the new leader."""
    url = etcd_cluster.url("/storm")
    acked: list[int] = []
    refused: list[int] = []
    with ControlPlane.start_in_thread(store=url) as cp:
        for i in range(60):
            if i == 20:
                etcd_cluster.kill(etcd_cluster.leader())
            try:
                cp.apply_yaml(_pair(i))
            except StateWriteError:
                refused.append(i)  # the election: refused in one line, maybe written
            else:
                acked.append(i)
        held = {r.meta.name for r in cp.cp.store.of_kind("ServiceEntry")}
    print(
        f"[etcd leader killed mid-storm: {len(acked)} applies acknowledged, {len(refused)} refused]"
    )
    assert len(acked) >= 50, (acked, refused)
    assert any(i > 20 for i in acked)  # the storm went on after the kill
    again = _opened(store=url)  # what etcd holds, read afresh
    names = {r.meta.name for r in again.store.of_kind("ServiceEntry")}
    _closed(again)
    for i in acked:
        assert {f"se-{i}-a", f"se-{i}-b"} <= names, i
    for i in range(60):
        assert (f"se-{i}-a" in names) == (f"se-{i}-b" in names), i
    assert held <= names
