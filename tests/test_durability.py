"""Applied config survives the control plane: kill -9, restart, same config, same traffic;
a write that fails leaves the old state; many parallel applies end consistent, every push
seen by Envoy in order."""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import urllib.parse
import zlib

import pytest
import yaml
from conftest import ServerProcess, locality_split_ok

from xds_server import ControlPlane
from xds_server.admin.client import AdminClient
from xds_server.config import persist
from xds_server.config.persist import StateDir, StateWriteError
from xds_server.lab import traffic
from xds_server.lab.envoy import EnvoyProcess
from xds_server.lab.lab import SAMPLES, Lab
from xds_server.ports import free_port
from xds_server.translate import ENDPOINT, route_cluster_name
from xds_server.waiting import wait_until

ALL_V1 = (SAMPLES / "tcp-echo-all-v1.yaml").read_text()
V2_20 = (SAMPLES / "tcp-echo-20-v2.yaml").read_text()
SERVICE_ENTRY = (SAMPLES / "tcp-echo-services.yaml").read_text().split("---\n")[0]


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
        services = "---\n".join([SERVICE_ENTRY, *(e.workload_entry() for e in echoes)])
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


def test_kill_9_during_an_apply_storm_leaves_one_whole_revision(tmp_path):
    state = tmp_path / "state"
    args = ("--state-dir", str(state), "--xds-port", "0", "--admin-port", "0")
    server = ServerProcess(*args)
    client = AdminClient(f"127.0.0.1:{server.wait_port('admin API')}")
    client.apply([("s.yaml", SERVICE_ENTRY), ("v1.yaml", ALL_V1)])
    applied = {(100, 0)}
    last = [0]  # the storm's last acknowledged apply
    stop = threading.Event()

    def storm() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            try:
                client.apply([("w.yaml", weights_yaml(i, 1000 - i))])
            except Exception:
                return
            applied.add((i, 1000 - i))
            last[0] = i

    t = threading.Thread(target=storm)
    t.start()
    with contextlib.suppress(TimeoutError):  # kill at the 30th apply, or at 10 s regardless
        wait_until(lambda: len(applied) >= 30, 10, interval=0.005, what="30 applies")
    server.kill()
    stop.set()
    t.join(10)
    client.close()

    # The state file is one whole revision: it loads, validates, and is the last
    # acknowledged weight pair or the one in flight when the server died.
    resources = StateDir(state).load()
    vs = next(r for r in resources if r.kind == "VirtualService")
    weights = tuple(d.weight for d in vs.tcp[0].route)
    acked = (last[0], 1000 - last[0]) if last[0] else (100, 0)
    in_flight = (last[0] + 1, 999 - last[0])  # persisted, but killed before it answered
    assert weights in (acked, in_flight)
    # A write cut short leaves its temp file; the next start removes it.
    (state / ".config.cut-short.tmp").write_text("apiVersion: networking.istio.io/v1\nkind:")
    server = ServerProcess(*args)
    try:
        server.wait_port("admin API")
        assert not [p for p in os.listdir(state) if p.endswith(".tmp")]
    finally:
        server.stop()


def test_failed_write_changes_nothing(tmp_path, monkeypatch):
    with ControlPlane.start_in_thread(state_dir=tmp_path) as cp:
        cp.apply_yaml(SERVICE_ENTRY)
        cp.apply_yaml(ALL_V1)
        saved = (tmp_path / "config.yaml").read_text()
        versions = cp.call(cp.cp.cache.versions)

        def broken(*a, **k):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "replace", broken)
        with pytest.raises(StateWriteError, match="No space left on device; the change was not"):
            cp.apply_yaml(V2_20)
        monkeypatch.undo()
        assert (tmp_path / "config.yaml").read_text() == saved
        assert cp.get("VirtualService", "tcp-echo").tcp[0].route[0].weight is None
        assert cp.call(cp.cp.cache.versions) == versions
        assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_state_file_is_every_resource_rendered_once_per_change(tmp_path):
    """The file joins texts rendered per resource: after applies and a delete it is exactly
    the whole store rendered afresh, and only a changed resource was rendered again."""
    cp = ControlPlane(state_dir=tmp_path)
    cp.apply_yaml(SERVICE_ENTRY)
    cp.apply_yaml(ALL_V1)
    cp.apply_yaml(V2_20)
    cp.delete("VirtualService", "tcp-echo")
    rendered = []
    real = persist.render
    with pytest.MonkeyPatch.context() as m:
        m.setattr(persist, "render", lambda doc: rendered.append(doc["kind"]) or real(doc))
        cp.apply_yaml(V2_20.replace("weight: 20", "weight: 25").replace("weight: 80", "weight: 75"))
    assert rendered == ["VirtualService"]
    store = cp.store
    docs = [
        persist.render(store.document(r.key)).encode()
        for r in sorted(store.resources(), key=lambda r: r.key)
    ]
    checksum = sum(map(zlib.crc32, docs)) & 0xFFFFFFFF
    seal = f"# xds-server seal: {len(docs)} documents, {len(b''.join(docs))} bytes, "
    whole = persist.HEADER + b"".join(docs).decode() + seal + f"checksum {checksum:08x}\n"
    assert (tmp_path / "config.yaml").read_text() == whole
    assert [r.key for r in StateDir(tmp_path).load()] == sorted(r.key for r in store.resources())
    # Our own write is not an edit; anyone else's is.
    assert not cp.state.edited()
    (tmp_path / "config.yaml").write_text(whole.replace("weight: 25", "weight: 26"))
    assert cp.state.edited()


def test_restart_reuses_the_saved_texts(tmp_path):
    """Restoring the state at start-up saves it again without rendering a document (the
    texts in the file are reused), and the file comes out as it was."""
    cp = ControlPlane(state_dir=tmp_path)
    cp.apply_yaml(SERVICE_ENTRY)
    cp.apply_yaml(ALL_V1)
    cp.apply_yaml(V2_20)
    before = (tmp_path / "config.yaml").read_text()
    again = ControlPlane(state_dir=tmp_path)
    rendered = []
    real = persist.render
    with pytest.MonkeyPatch.context() as m:
        m.setattr(persist, "render", lambda doc: rendered.append(doc["kind"]) or real(doc))
        again.restore(again.state.load())
        assert rendered == []
        # A document edited by hand is rendered again, the others are not.
        edited = before.replace("weight: 20", "weight: 30").replace("weight: 80", "weight: 70")
        (tmp_path / "config.yaml").write_text(edited)
        again.replace(again.state.load())
    assert rendered == ["VirtualService"]
    assert (tmp_path / "config.yaml").read_text().count("weight: 30") == 1
    assert sorted(r.key for r in again.store.resources()) == sorted(
        r.key for r in cp.store.resources()
    )


@pytest.mark.parametrize("relative", [False, True], ids=["absolute", "relative"])
def test_hand_edit_of_state_file_is_applied(tmp_path, relative):
    """A valid hand edit is applied, a bad one refused; with a relative --state-dir too
    (the watcher reports absolute paths, which a relative one must match)."""
    state_dir = tmp_path / "state"
    given = os.path.relpath(state_dir) if relative else str(state_dir)
    assert os.path.isabs(given) != relative
    server = ServerProcess("--state-dir", given, "--xds-port", "0", "--admin-port", "0")
    try:
        with AdminClient(f"127.0.0.1:{server.wait_port('admin API')}") as client:
            client.apply([("s.yaml", SERVICE_ENTRY), ("v1.yaml", ALL_V1)])
            client.apply([("w.yaml", V2_20)])
            server.wait_line("watching")
            state = state_dir / "config.yaml"
            state.write_text(state.read_text().replace("weight: 20", "weight: 30"))
            server.wait_line("reloaded revision")
            vs = json.loads(client.get("VirtualService", "tcp-echo").resources[0].json)
            assert [d["weight"] for d in vs["spec"]["tcp"][0]["route"]] == [80, 30]
            assert vs["metadata"]["generation"] == 3
            # A bad hand edit is refused; the last good config stays.
            state.write_text(state.read_text().replace("weight: 30", "weight: -1"))
            server.wait_line("rejected config change")
            vs = json.loads(client.get("VirtualService", "tcp-echo").resources[0].json)
            assert [d["weight"] for d in vs["spec"]["tcp"][0]["route"]] == [80, 30]
    finally:
        server.stop()


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
    "words": ["true", "123", "", "null", "~", "0x1F", "2026-11-25", "x: y", "- a", "a #b"],
    "text": {"multi": "line one\nline two", "quote": "'q'", "unicode": "日本語 é", "tab": "a\tb"},
    "numbers": [0, -5, 10**30],
    "flags": [True, False, None],
    "empty": [[], {}],
    "nested": [{"a": [1, {"b": None}], "long": "x" * 200}],
}


@pytest.mark.parametrize("document", [TRICKY, {"float": 1.5}, {"tuple": (1, 2)}])
def test_state_file_documents_are_what_yaml_dump_writes(document):
    """The state file's renderer builds PyYAML's nodes itself for plain data: the text must
    be yaml.dump's, to the byte (other types are left to yaml.dump)."""
    expected = yaml.dump(document, Dumper=persist._Dumper, sort_keys=False, explicit_start=True)
    assert persist.render(document) == expected
    cp = ControlPlane()
    cp.apply_yaml(SERVICE_ENTRY)
    cp.apply_yaml(ALL_V1)
    for r in cp.store.resources():
        doc = cp.store.document(r.key)
        assert persist.render(doc) == yaml.dump(
            doc, Dumper=persist._Dumper, sort_keys=False, explicit_start=True
        )
