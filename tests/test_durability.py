"""Applied config survives the control plane: kill -9, restart, same config, same traffic;
a write that fails leaves the old state; many parallel applies end consistent, every push
seen by Envoy in order."""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
import threading
import urllib.parse
from pathlib import Path

import pytest
import yaml
from conftest import ServerProcess, locality_split_ok, serve_once

from xds_server import ControlPlane
from xds_server.admin.client import AdminClient
from xds_server.config import legacy
from xds_server.config.load import load_text
from xds_server.config.model import VirtualService
from xds_server.config.persist import StateDamagedError, StateWriteError
from xds_server.config.sqlite import SqliteStore
from xds_server.lab import traffic
from xds_server.lab.envoy import EnvoyProcess
from xds_server.lab.lab import SAMPLES, Lab
from xds_server.ports import free_port
from xds_server.translate import ENDPOINT, route_cluster_name
from xds_server.waiting import wait_until

ALL_V1 = (SAMPLES / "tcp-echo-all-v1.yaml").read_text()
V2_20 = (SAMPLES / "tcp-echo-20-v2.yaml").read_text()
SERVICE = (SAMPLES / "tcp-echo-services.yaml").read_text().split("---\n")[0]


def weights_yaml(v1: int, v2: int) -> str:
    # One pass: replacing 80 then 20 in turn would turn weights_yaml(20, 81) into 81/81.
    return re.sub(r"weight: (80|20)\b", lambda m: f"weight: {v1 if m[1] == '80' else v2}", V2_20)


def test_kill_9_restart_keeps_config_and_split(tmp_path, echoes):
    state, xds, ingress = tmp_path / "state", free_port(), free_port()
    args = ("--state-dir", str(state), "--xds-port", str(xds), "--admin-port", "0")
    args += ("--port-map", f"31400={ingress}")
    server = ServerProcess(*args)
    admin = f"127.0.0.1:{server.wait_port('admin API')}"
    client = AdminClient(admin)
    envoy = EnvoyProcess(xds)
    try:
        services = "---\n".join([SERVICE, *(e.workload_entry() for e in echoes)])
        client.apply([("services.yaml", services), ("all-v1.yaml", ALL_V1)])
        client.apply([("20-v2.yaml", V2_20)])
        before = {r.ref.name: json.loads(r.json) for r in client.get().resources}
        envoy.start()
        client.wait_synced("ingressgateway")
        assert locality_split_ok(traffic.split(traffic.send_many("127.0.0.1", ingress, 100)))

        server.kill()
        # Envoy keeps its last config while the control plane is gone.
        assert locality_split_ok(traffic.split(traffic.send_many("127.0.0.1", ingress, 100)))

        server = ServerProcess(*args)
        client.close()
        client = AdminClient(f"127.0.0.1:{server.wait_port('admin API')}")
        after = {r.ref.name: json.loads(r.json) for r in client.get().resources}
        for k in before:
            assert after[k] == before[k], (after[k]["metadata"], before[k]["metadata"])
        assert after == before  # resourceVersion, generation, creationTimestamp included
        client.wait_synced("ingressgateway")  # Envoy reconnected by itself and is in sync
        assert locality_split_ok(traffic.split(traffic.send_many("127.0.0.1", ingress, 100)))
    finally:
        envoy.stop()
        client.close()
        server.stop()


def _storm(state: Path, kill_after: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Apply weight pairs one after the other and kill -9 the server after ``kill_after``
    of them: the last pair acknowledged, and the one in flight."""
    args = ("--state-dir", str(state), "--xds-port", "0", "--admin-port", "0")
    server = ServerProcess(*args)
    client = AdminClient(f"127.0.0.1:{server.wait_port('admin API')}")
    if not (state / "state.db").exists() or kill_after == 0:
        client.apply([("s.yaml", SERVICE), ("v1.yaml", ALL_V1)])
    acked = [tuple(d.weight for d in _vs(client).tcp[0].route)]
    stop = threading.Event()
    sent = [acked[0]]

    def storm() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            pair = (i, 1000 - i)
            sent.append(pair)
            try:
                client.apply([("w.yaml", weights_yaml(*pair))])
            except Exception:
                return
            acked.append(pair)

    t = threading.Thread(target=storm)
    t.start()
    with contextlib.suppress(TimeoutError):  # kill after that many applies, at 10 s regardless
        wait_until(lambda: len(acked) > kill_after, 10, interval=0.001, what="applies")
    server.kill()
    stop.set()
    t.join(10)
    client.close()
    return acked[-1], sent[-1]


def _vs(client: AdminClient) -> VirtualService:
    (r,) = load_text(client.get("VirtualService", "tcp-echo").resources[0].json)
    assert isinstance(r, VirtualService)
    return r


def test_kill_9_during_an_apply_storm_leaves_one_whole_batch(tmp_path):
    """20 trials: kill -9 the server at another point of an apply storm each time. What it
    saved is one whole batch: it loads, validates, and is the last acknowledged weight pair
    or the one in flight when the server died."""
    state = tmp_path / "state"
    for trial in range(20):
        acked, in_flight = _storm(state, kill_after=trial % 7 * 3 + trial // 7)
        store = SqliteStore.in_dir(state)
        loaded = store.load()
        store.close()
        ControlPlane().restore(loaded.resources, loaded.revision)  # valid as a whole
        (vs,) = [r for r in loaded.resources if isinstance(r, VirtualService)]
        weights = tuple(d.weight for d in vs.tcp[0].route)
        assert weights in (acked, in_flight), (trial, weights, acked, in_flight)
        assert loaded.revision == int(vs.raw["metadata"]["resourceVersion"]), trial


class FailingCommit:
    """A connection whose COMMIT fails as a full disk makes SQLite fail."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __getattr__(self, name: str) -> object:
        return getattr(self.db, name)

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
        if sql == "COMMIT":
            raise sqlite3.OperationalError("database or disk is full")
        return self.db.execute(sql, *args)


def _rows(cp: ControlPlane) -> dict[tuple[str, str, str], dict]:
    """The database's rows, read through the server's own connection (it holds the lock)."""
    db = cp.state._db
    rows = db.execute("SELECT kind, namespace, name, document FROM resources").fetchall()
    return {(k, ns, n): json.loads(doc) for k, ns, n, doc in rows}


def test_failed_write_changes_nothing(tmp_path, monkeypatch):
    with ControlPlane.start_in_thread(state_dir=tmp_path) as cp:
        cp.apply_yaml(SERVICE)
        cp.apply_yaml(ALL_V1)
        saved = cp.call(_rows, cp.cp)
        versions = cp.call(cp.cp.cache.versions)
        real = cp.cp.state._db
        monkeypatch.setattr(cp.cp.state, "_db", FailingCommit(real))
        monkeypatch.setattr(SqliteStore, "_probe", lambda self: None)
        with pytest.raises(StateWriteError, match="disk is full; the change was not"):
            cp.apply_yaml(V2_20)
        monkeypatch.undo()
        assert not real.in_transaction
        assert cp.call(_rows, cp.cp) == saved
        assert cp.get("VirtualService", "tcp-echo").tcp[0].route[0].weight is None
        assert cp.call(cp.cp.cache.versions) == versions
        cp.apply_yaml(V2_20)  # and the next one is written
        assert cp.call(_rows, cp.cp) != saved


def test_database_rows_are_the_store_and_an_apply_writes_what_it_changed(tmp_path):
    """After applies and a delete, the rows are exactly the documents the store shows;
    a one-weight apply writes one row (and the revision), a restart writes nothing."""
    cp = ControlPlane(state_dir=tmp_path)
    cp.load_state()
    cp.apply_yaml(SERVICE)
    cp.apply_yaml(ALL_V1)
    cp.apply_yaml(V2_20)
    cp.delete("VirtualService", "tcp-echo")
    db = cp.state._db
    before = db.total_changes
    cp.apply_yaml(V2_20.replace("weight: 20", "weight: 25").replace("weight: 80", "weight: 75"))
    assert db.total_changes - before == 3  # the VirtualService's row, format, revision
    store = cp.store
    assert _rows(cp) == {r.key: store.document(r.key) for r in store.resources()}
    revision = store.revision
    assert dict(db.execute("SELECT * FROM meta"))["revision"] == str(revision)
    cp.state.close()

    again = ControlPlane(state_dir=tmp_path)
    again.load_state()
    assert again.state.writes == 0
    assert again.store.revision == revision
    assert {r.key: again.store.document(r.key) for r in again.store.resources()} == {
        r.key: store.document(r.key) for r in store.resources()
    }
    # A delete is a revision too, and a restart keeps it (no resource carries it).
    again.delete("VirtualService", "tcp-echo")
    again.state.close()
    third = ControlPlane(state_dir=tmp_path)
    third.load_state()
    assert third.store.revision == revision + 1
    third.state.close()


def test_old_state_file_is_imported_once_and_kept(tmp_path):
    """A state directory of the old format (config.yaml): imported into state.db at the
    first start, metadata kept, the file left as it was; later starts read the database
    only. A cut-short old file is refused, as before."""
    cp = ControlPlane()
    cp.apply_yaml(SERVICE)
    cp.apply_yaml(ALL_V1)
    cp.apply_yaml(V2_20)
    docs = [cp.store.document(r.key) for r in cp.store.resources()]
    old = legacy.LEGACY_HEADER + "\n" + yaml.safe_dump_all(docs, explicit_start=True)
    (tmp_path / "config.yaml").write_text(old)
    first = ControlPlane(state_dir=tmp_path)
    first.load_state()
    assert {r.key: first.store.document(r.key) for r in first.store.resources()} == {
        r.key: cp.store.document(r.key) for r in cp.store.resources()
    }
    assert first.state.writes == 1  # one transaction, every row
    first.state.close()
    assert (tmp_path / "config.yaml").read_text() == old
    (tmp_path / "config.yaml").write_text(old.replace("weight: 20", "weight: 30"))
    second = ControlPlane(state_dir=tmp_path)
    second.load_state()
    vs = second.store.get("VirtualService", "default", "tcp-echo")
    assert [d.weight for d in vs.tcp[0].route] == [80, 20]  # the database, not the file
    second.state.close()

    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "config.yaml").write_text(legacy.HEADER + "\n" + old.split("\n", 2)[2])
    for _start in range(2):  # refused again: the refusal committed no empty database
        with pytest.raises(StateDamagedError, match="is cut short"):
            ControlPlane(state_dir=cut).state.load()


def test_second_server_on_one_state_dir_is_refused(tmp_path):
    first = ServerProcess("--state-dir", str(tmp_path), "--xds-port", "0", "--admin-port", "0")
    try:
        first.wait_port("admin API")
        result = serve_once(tmp_path)
        assert result.returncode == 1
        (line,) = result.stderr.splitlines()
        assert "is in use by another xds-server" in line, line
    finally:
        first.stop()


def test_parallel_applies_end_consistent_and_envoy_sees_every_push_in_order():
    with Lab(ingress_port=0, xds_port=0, admin_port=0, admin_api=True) as lab:
        lab.apply_yaml(ALL_V1)
        cluster = route_cluster_name(lab.cp.get("VirtualService", "tcp-echo"), 0)
        stat = f"cluster.{cluster}.update_success"

        def eds_updates() -> int:
            pattern = urllib.parse.quote(f"^{re.escape(stat)}$")
            out = lab.envoy.admin_get(f"/stats?format=json&filter={pattern}")
            return json.loads(out)["stats"][0]["value"]

        def server_eds() -> tuple[int, int]:
            """EDS responses the server sent this Envoy, and answers it got back (an answer
            to a response that a newer one already replaced carries a stale nonce)."""
            (proxy,) = [p for p in lab.cp.cp.proxies() if p.node_id == "ingressgateway"]
            st = proxy.types[ENDPOINT]
            return st.pushes, st.acks + st.stale_nonces

        start = eds_updates()
        pushes_before, answers_before = lab.cp.call(server_eds)
        n = 24
        results: dict[int, tuple[int, int]] = {}
        errors: list[BaseException] = []

        def apply(i: int) -> None:
            try:
                with AdminClient(lab.admin_target) as c:
                    rev = c.apply([(f"w{i}.yaml", weights_yaml(i + 1, 100 - i))]).revision
                results[rev] = (i + 1, 100 - i)
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=apply, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not errors
        # Serialized: n distinct revisions, one after the other.
        assert sorted(results) == list(range(min(results), min(results) + n))
        last = results[max(results)]
        lab.cp.wait_synced()
        vs = lab.cp.get("VirtualService", "tcp-echo")
        assert tuple(d.weight for d in vs.tcp[0].route) == last
        dump = yaml.safe_load(
            lab.envoy.admin_get("/config_dump?include_eds&resource=dynamic_endpoint_configs")
        )
        (eds,) = dump["configs"]
        got = [loc["load_balancing_weight"] for loc in eds["endpoint_config"]["endpoints"]]
        assert tuple(got) == last
        # Every push the server made reached Envoy, was accepted, and was answered. Applies
        # that land between two pushes are coalesced (the stream sends the newest version),
        # so there may be fewer pushes than applies; and since the last one Envoy accepted
        # is the last applied, none came out of order.
        pushes, answers = lab.cp.call(server_eds)
        assert 1 <= pushes - pushes_before <= n
        assert eds_updates() - start == pushes - pushes_before == answers - answers_before


TRICKY = {
    "words": "true 123 null ~ 0x1F 2026-11-25 x: y - a a #b",
    "multi": "line one\nline two",
    "quote": "'q' \"q\"",
    "unicode": "日本語 é",
    "tab": "a\tb",
    "long": "x" * 2000,
    "empty": "",
}


def test_documents_come_back_from_the_database_as_they_were_applied(tmp_path):
    """What a row holds is the document, to the value: odd strings, numbers as written."""
    labels = {"version": "v1", "app": "tcp-echo", "x.io/y": "true"}
    se = yaml.safe_load(SERVICE)
    se["metadata"]["annotations"] = TRICKY
    se["metadata"]["labels"] = labels
    cp = ControlPlane(state_dir=tmp_path)
    cp.load_state()
    cp.apply_yaml(yaml.safe_dump(se))
    want = cp.store.document(("Service", "default", "tcp-echo"))
    cp.state.close()
    again = ControlPlane(state_dir=tmp_path)
    again.load_state()
    got = again.store.document(("Service", "default", "tcp-echo"))
    assert got == want and got["metadata"]["annotations"] == TRICKY
    again.state.close()


def test_an_import_that_cannot_be_written_is_served_at_its_own_revision(tmp_path, monkeypatch):
    """An old state file on a disk that refuses the import: served as it was, its newest
    resourceVersion the current revision (the next change goes past it, never back)."""
    cp = ControlPlane()
    cp.apply_yaml(SERVICE)
    cp.apply_yaml(ALL_V1)
    cp.apply_yaml(V2_20)
    docs = [cp.store.document(r.key) for r in cp.store.resources()]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump_all(docs, explicit_start=True))

    def refused(proposal):
        raise StateWriteError(tmp_path / "state.db", "No space left on device", "free space")

    served = ControlPlane(state_dir=tmp_path)
    monkeypatch.setattr(served.store, "persist", refused)
    served.load_state()
    assert documents_of(served) == documents_of(cp)
    assert served.store.revision >= cp.store.revision == 3
    monkeypatch.undo()
    (change,) = served.apply_yaml(V2_20.replace("weight: 20", "weight: 25").replace("80", "75"))
    assert change.resource_version > 3
    served.state.close()


def documents_of(cp: ControlPlane) -> dict:
    return {r.key: cp.store.document(r.key) for r in cp.store.resources()}
