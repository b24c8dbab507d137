"""A rejected batch changes nothing: not the store, not the versions served, not the state
file, whichever step rejects it (validation, translation, the write to disk).

Translation runs before the commit (the store's ``prepare`` hook), so a bug there stops the
batch instead of leaving a change behind that was never pushed. The test of that path
injects a failure into translation: validation catches every known cause first."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from faults.conftest import state_bytes
from xds_server import ConfigError, ControlPlane
from xds_server.admin.client import AdminClient, AdminError
from xds_server.controlplane import BackgroundControlPlane
from xds_server.lab.lab import SAMPLES
from xds_server.translate import ANY_NODE, Assembler, translate

SERVICES = (SAMPLES / "tcp-echo-services.yaml").read_text()
ALL_V1 = (SAMPLES / "tcp-echo-all-v1.yaml").read_text()
V2_20 = (SAMPLES / "tcp-echo-20-v2.yaml").read_text()


def weights(v1: int | str, v2: int | str) -> str:
    return V2_20.replace("weight: 80", f"weight: {v1}").replace("weight: 20", f"weight: {v2}")


@pytest.fixture
def cp(tmp_path: Path) -> Iterator[BackgroundControlPlane]:
    with ControlPlane.start_in_thread(state_dir=tmp_path, admin_port=0) as cp:
        cp.apply_yaml(SERVICES)
        cp.apply_yaml(ALL_V1)
        yield cp


def snapshot(cp: BackgroundControlPlane) -> tuple:
    """Everything a rejected batch must leave as it was."""
    store = cp.cp.store
    state = state_bytes(cp.cp.state.path.parent) if cp.cp.state else b""
    documents = cp.call(lambda: {r.key: store.document(r.key) for r in store.resources()})
    return store.revision, documents, cp.call(cp.cp.cache.versions), state


def served_matches_a_fresh_translation(cp: BackgroundControlPlane) -> bool:
    """What the cache serves is what translating the store's config from scratch gives."""

    def compare() -> bool:
        fresh = translate(cp.cp.store.index, cp.cp.options, ANY_NODE)
        group = cp.cp.cache.groups[ANY_NODE]
        for type_url, by_name in fresh.by_type().items():
            entries = group.snapshot(type_url).entries
            if set(entries) != set(by_name):
                return False
            for name, msg in by_name.items():
                if entries[name].any.value != msg.SerializeToString(deterministic=True):
                    return False
        return True

    return cp.call(compare)


def test_out_of_range_numbers_are_rejected_through_the_admin_api(cp, fault_figure) -> None:
    """Weights of 2^31..2^64 and an endless connectTimeout used to be committed, then fail in
    translation (a traceback in the log, UNKNOWN at the client) or be NACKed by Envoy."""
    before = snapshot(cp)
    client = AdminClient(f"127.0.0.1:{cp.cp.admin_port}")
    bad = [
        ("weight 2^31", weights(1, 2**31)),
        ("weight 2^64", weights(2**64, 1)),
        (
            "connectTimeout 1e9 h",
            ALL_V1.replace(
                "subsets:",
                "trafficPolicy: {connectionPool: {tcp: {connectTimeout: 1000000000h}}}\n  subsets:",
                1,
            ),
        ),
    ]
    try:
        for what, text in bad:
            with pytest.raises(AdminError) as err:
                client.apply([("bad.yaml", text)])
            message = str(err.value)
            assert "bad.yaml" in message and "document" in message, (what, message)
            assert "must be at most" in message, (what, message)
            assert "Traceback" not in message and "Unexpected" not in message
            assert snapshot(cp) == before, what
    finally:
        client.close()
    fault_figure("out-of-range batches rejected, nothing changed", len(bad))


def test_a_translation_failure_commits_nothing(cp, monkeypatch) -> None:
    before = snapshot(cp)
    real = Assembler.propose

    def failing(self, index, run):
        vs = index.by_key.get(("VirtualService", "default", "tcp-echo"))
        if vs is not None and vs.tcp[0].route[-1].weight == 33:
            raise ValueError("Value out of range: 4294967296")
        return real(self, index, run)

    monkeypatch.setattr(Assembler, "propose", failing)
    with pytest.raises(ConfigError) as err:
        cp.apply_yaml(weights(67, 33), "shift.yaml")
    message = str(err.value)
    assert "VirtualService default/tcp-echo" in message
    assert "could not be translated" in message and "nothing was applied" in message
    assert "Value out of range" in message
    assert snapshot(cp) == before
    # The failed run left no trace in what is reused: the next change serves what a fresh
    # translation of the committed config gives.
    cp.apply_yaml(weights(50, 50))
    assert cp.get("VirtualService", "tcp-echo").tcp[0].route[1].weight == 50
    assert served_matches_a_fresh_translation(cp)


def test_a_failed_write_after_translation_leaves_no_trace(cp) -> None:
    """The proposal was translated, then the state file could not be written: the memos of
    that translation must not make a later, unrelated change serve the rejected weights."""
    before = snapshot(cp)
    store = cp.cp.store
    persist = store.persist
    assert persist is not None

    def full_disk(proposal):
        raise OSError(28, "No space left on device")

    store.persist = full_disk
    try:
        with pytest.raises(OSError):
            cp.apply_yaml(weights(50, 50))
    finally:
        store.persist = persist
    assert snapshot(cp) == before
    # A change elsewhere (a service no route uses): the route's weights must stay all-v1.
    cp.apply_yaml(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: db}\n"
        "spec:\n  hosts: [db]\n  ports: [{number: 5432, name: pg}]\n  resolution: STATIC\n"
        "  endpoints: [{address: 10.0.0.1}]\n"
    )
    assert served_matches_a_fresh_translation(cp)
