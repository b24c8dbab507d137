"""xds_server.config.etcd against real etcd servers (the `etcd` fixtures): no mocks."""

from __future__ import annotations

import re
import time

import pytest

from xds_server.config import etcd as etcd_module
from xds_server.config.etcd import (
    CompactedError,
    EtcdClient,
    EtcdError,
    EtcdUnavailableError,
    EventType,
    compare_missing,
    compare_mod_revision,
    compare_value,
    delete_op,
    parse_etcd_url,
    put_op,
)
from xds_server.waiting import wait_until


def take_events(watch, n, timeout=5.0):
    """The next n events of a watch, with the revision of the batch each came in."""
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < n:
        batch = watch.get(timeout=max(deadline - time.monotonic(), 0))
        assert batch is not None, f"only {len(got)} of {n} events came: {got}"
        got.extend((batch.revision, e) for e in batch.events)
    return got


def assert_caught_up(client, watch):
    """Nothing more is on its way: etcd answers a progress request after every event it
    has to send, with an empty batch at the current revision."""
    watch.request_progress()
    batch = watch.get(timeout=5)
    assert batch is not None and batch.events == (), batch
    assert batch.revision == client.status().revision


def test_parse_etcd_url():
    assert parse_etcd_url("etcd://127.0.0.1:2379") == (["127.0.0.1:2379"], "")
    assert parse_etcd_url("etcd://a:1,b:2,c:3/xds/") == (["a:1", "b:2", "c:3"], "/xds/")
    assert parse_etcd_url("etcd://[::1]:2379/p") == (["[::1]:2379"], "/p")
    for url, message in [
        ("http://a:1", "is not an etcd URL"),
        ("etcd://", "names no endpoint"),
        ("etcd:///xds", "names no endpoint"),
        ("etcd://a", "'a' is not host:port"),
        ("etcd://a:1,,b:2", "'' is not host:port"),
        ("etcd://a:http", "the port must be a number"),
        ("etcd://a:70000", "the port must be a number"),
        ("etcd://a:1/x?y=1", "only endpoints and a /prefix"),
        ("etcd://user@a:1", "only endpoints and a /prefix"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            parse_etcd_url(url)
    with pytest.raises(ValueError):
        EtcdClient([])


@pytest.mark.parametrize("page_size", [1000, 2])
def test_put_get_prefix(etcd, monkeypatch, page_size):
    monkeypatch.setattr(etcd_module, "PAGE_SIZE", page_size)  # 2: the listing takes 3 pages
    client = etcd.client()
    client.put("/cfgx", "neighbour")  # shares the string prefix but not the "directory"
    revs = [client.put(k, f"value of {k}") for k in ("/cfg/b", "/cfg/a", "/cfg/c/d", "/cfg/e")]
    client.put("/other", "o")
    assert revs == sorted(revs) and len(set(revs)) == 4  # one revision per write

    revision, kvs = client.get_prefix("/cfg/")
    assert revision == revs[-1] + 1  # the store's revision when listed: /other's put
    assert [kv.key for kv in kvs] == ["/cfg/a", "/cfg/b", "/cfg/c/d", "/cfg/e"]
    assert [kv.value for kv in kvs] == [f"value of {kv.key}".encode() for kv in kvs]
    assert [kv.mod_revision for kv in kvs] == [revs[1], revs[0], revs[2], revs[3]]

    a = client.get("/cfg/a")
    assert a is not None and a.value == b"value of /cfg/a" and a.version == 1
    assert client.get("/cfg/missing") is None
    assert [kv.key for kv in client.get_prefix("")[1]] == [
        "/cfg/a", "/cfg/b", "/cfg/c/d", "/cfg/e", "/cfgx", "/other"
    ]  # fmt: skip

    deleted_at, deleted = client.delete_prefix("/cfg/")
    assert deleted == 4 and deleted_at == revision + 1  # all four in one revision
    assert client.get_prefix("/cfg/") == (deleted_at, [])
    assert client.get("/cfgx") is not None


def test_txn_compares_guard_the_writes(etcd):
    client = etcd.client()
    r1 = client.put("/t/k", "v1")
    r2 = client.put("/t/k", "v2")

    stale = client.txn(
        [compare_mod_revision("/t/k", r1)], [put_op("/t/k", "bad"), put_op("/t/n", "x")]
    )
    assert (stale.succeeded, stale.revision, stale.responses) == (False, r2, [])
    k = client.get("/t/k")
    assert k is not None and (k.value, k.mod_revision) == (b"v2", r2)
    assert client.get("/t/n") is None
    assert client.status().revision == r2  # nothing was written

    fresh = client.txn(
        [compare_mod_revision("/t/k", r2), compare_value("/t/k", "v2"), compare_missing("/t/n")],
        [put_op("/t/k", "v3"), put_op("/t/n", "x")],
    )
    assert (fresh.succeeded, fresh.revision, len(fresh.responses)) == (True, r2 + 1, 2)
    assert {kv.key: kv.mod_revision for kv in client.get_prefix("/t/")[1]} == {
        "/t/k": r2 + 1,
        "/t/n": r2 + 1,
    }

    # A failed compare runs the failure ops; "missing" is create_revision == 0.
    other = client.txn([compare_missing("/t/k")], [put_op("/t/k", "no")], [delete_op("/t/n")])
    assert (other.succeeded, other.revision) == (False, r2 + 2)
    assert client.get("/t/n") is None and client.get("/t/k").value == b"v3"

    # etcd's refusals are errors of their own, one line, not retried elsewhere.
    with pytest.raises(EtcdError, match=r"^etcd at \S+: etcdserver: too many operations") as e:
        client.txn([], [put_op(f"/t/many/{i}", "v") for i in range(129)])
    assert e.value.code == "INVALID_ARGUMENT" and not isinstance(e.value, EtcdUnavailableError)


def test_watch_delivers_exactly_the_later_events(etcd):
    client = etcd.client()
    listed = client.put("/w/a", "1")
    a2 = client.put("/w/a", "2")
    client.put("/x/outside", "o")
    b1 = client.put("/w/b", "1")
    deleted, _ = client.delete("/w/a")

    with client.watch("/w/", listed + 1) as watch:
        got = [(e.type, e.key, e.value, e.mod_revision) for _, e in take_events(watch, 3)]
        assert got == [
            (EventType.PUT, "/w/a", b"2", a2),
            (EventType.PUT, "/w/b", b"1", b1),
            (EventType.DELETE, "/w/a", b"", deleted),
        ]
        assert_caught_up(client, watch)

        # Live: the writes of one txn come in one batch, at the txn's revision.
        done = client.txn([], [put_op("/w/c", "1"), put_op("/w/d", "1"), put_op("/x/y", "1")])
        batch = watch.get(timeout=5)
        assert batch is not None and batch.revision == done.revision
        assert [(e.key, e.mod_revision) for e in batch.events] == [
            ("/w/c", done.revision),
            ("/w/d", done.revision),
        ]
        assert_caught_up(client, watch)
    assert watch.get(timeout=1) is None  # closed: ends quietly
    assert list(watch) == []


def test_watch_from_a_compacted_revision(etcd):
    client = etcd.client()
    revs = [client.put("/c/k", str(i)) for i in range(3)]
    client.compact(revs[2])

    with client.watch("/c/", revs[0]) as watch:
        with pytest.raises(CompactedError) as e:
            watch.get(timeout=5)
        assert e.value.compact_revision == revs[2]
        with pytest.raises(CompactedError):  # and it stays ended
            list(watch)

    # What the caller does next: list again (at a revision etcd still has) and watch on.
    revision, kvs = client.get_prefix("/c/")
    assert revision == revs[2] and [kv.value for kv in kvs] == [b"2"]
    with client.watch("/c/", revs[2]) as watch:  # the compact revision itself is kept
        [(_, event)] = take_events(watch, 1)
        assert (event.value, event.mod_revision) == (b"2", revs[2])


def test_failover_across_a_cluster(etcd_cluster):
    leader = etcd_cluster.leader()
    others = [m for m in etcd_cluster.members if m is not leader]
    # The client starts on the leader, so killing it means an election too.
    client = EtcdClient([leader.endpoint, *(m.endpoint for m in others)])
    listed = client.put("/f/a", "1")
    assert client.endpoint == leader.endpoint
    watch = client.watch("/f/", listed + 1)
    assert watch.endpoint == leader.endpoint

    etcd_cluster.kill(leader)
    started = time.monotonic()
    written = client.put("/f/b", "2")
    assert time.monotonic() - started < 3.0
    assert client.endpoint != leader.endpoint
    assert client.get("/f/b").value == b"2"

    # The watch on the dead member ends with an error, at once; a new one from the last
    # revision seen loses nothing.
    with pytest.raises(EtcdUnavailableError, match=re.escape(leader.endpoint)):
        watch.get(timeout=5)
    watch.close()
    with client.watch("/f/", listed + 1) as watch:
        [(_, event)] = take_events(watch, 1)
        assert (event.key, event.mod_revision) == ("/f/b", written)

    for m in others:
        etcd_cluster.kill(m)
    with pytest.raises(EtcdUnavailableError) as e:
        client.get("/f/b")
    message = str(e.value)
    endpoints = ", ".join(client.endpoints)  # all three, in the client's order
    assert message == f"etcd at {endpoints} is unreachable: connection refused"
    assert e.value.__context__ is None and e.value.__cause__ is None  # no gRPC error inside

    etcd_cluster.restart(others[0], leader)  # two of three: a quorum again
    kv = wait_until(lambda: client.get("/f/b"), 10, ignore=EtcdUnavailableError)
    assert kv.value == b"2"
    assert client.put("/f/c", "3") > written


def test_single_member_down_and_back(etcd):
    [member] = etcd.members
    client = etcd.client(timeout=1.0)
    client.put("/s/k", "kept")
    etcd.kill(member)
    with pytest.raises(EtcdUnavailableError) as e:
        client.put("/s/k", "lost")
    assert str(e.value) == f"etcd at {member.endpoint} is unreachable: connection refused"
    with pytest.raises(EtcdUnavailableError):
        client.watch("/s/", 1)

    etcd.restart(member)
    kv = wait_until(lambda: client.get("/s/k"), 10, ignore=EtcdUnavailableError)
    assert kv.value == b"kept"
    assert parse_etcd_url(etcd.url("/s/")) == ([member.endpoint], "/s/")


def test_a_silent_member_ends_the_watch(etcd):
    """A member that stops answering without closing its connections (frozen, cut off):
    keepalive pings find it, so the watch ends in an error rather than waiting for ever."""
    [member] = etcd.members
    client = etcd.client(timeout=1.0)
    watch = client.watch("/q/", 1)
    etcd.pause(member)
    try:
        started = time.monotonic()
        with pytest.raises(EtcdUnavailableError, match="the watch stream broke"):
            watch.get(timeout=20)  # a ping after 10 s of silence, unanswered for 1 s
        assert time.monotonic() - started < 15
        with pytest.raises(EtcdUnavailableError, match=r"is unreachable: no answer within 1s$"):
            client.get("/q/k")
    finally:
        etcd.resume(member)
        watch.close()
