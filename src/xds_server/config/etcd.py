"""A small synchronous etcd v3 client over etcd's own gRPC API.

The stubs in ``etcdpb/`` are compiled from etcd's protos (see proto/xds_server/config/etcdpb/):
the Python etcd libraries are either unmaintained and broken with current protobuf, or speak
the JSON gateway. This module adds what a config store needs on top of the bare stubs:

- failover: one channel per endpoint; a unary call that finds its endpoint unreachable
  (UNAVAILABLE, DEADLINE_EXCEEDED) is tried on the next one, and the endpoint that answered is
  tried first afterwards. When none answers, ``EtcdUnavailableError`` says so in one line;
  no gRPC error escapes this module.
- watches that end loudly: a ``Watch`` delivers its end (a compacted start revision, a broken
  stream, a member that lost its leader) as an exception to its reader, who relists or
  re-watches from the last revision it saw. It never goes quiet while still looking alive.

Keys are ``str`` (UTF-8 on the wire), values ``bytes`` (``str`` is accepted and encoded).
Revisions are etcd's: one counter for the whole key space, bumped once per write request.

    with EtcdClient(["127.0.0.1:2379"]) as etcd:
        revision, kvs = etcd.get_prefix("/xds/")
        watch = etcd.watch("/xds/", revision + 1)
        for batch in watch:
            ...
"""

from __future__ import annotations

import enum
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast
from urllib.parse import urlsplit

import grpc

from .etcdpb import kv_pb2, rpc_pb2, rpc_pb2_grpc

__all__ = [
    "CompactedError",
    "EtcdClient",
    "EtcdError",
    "EtcdStatus",
    "EtcdUnavailableError",
    "EventType",
    "KeyValue",
    "Member",
    "TxnResult",
    "Watch",
    "WatchBatch",
    "WatchEvent",
    "compare_missing",
    "compare_mod_revision",
    "compare_value",
    "delete_op",
    "delete_prefix_op",
    "parse_etcd_url",
    "put_op",
]

_RETRY_ELSEWHERE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


def _channel_options(timeout: float) -> list[tuple[str, int]]:
    return [
        # A big prefix comes back in pages of PAGE_SIZE keys, but a page of big values can
        # still outgrow gRPC's default 4 MiB.
        ("grpc.max_receive_message_length", 256 * 1024 * 1024),
        # A member that comes back is reconnected to within a second, not after gRPC's
        # default backoff, which grows to two minutes.
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1000),
        # Pings find a connection whose peer is gone without a reset (a frozen process, a
        # host or network gone), so that a watch on it ends in an error: a ping after 10 s
        # of silence (etcd refuses pings more often than every 5 s, its
        # --grpc-keepalive-min-time, and pings with no call open), and the connection is
        # closed if the answer takes longer than a call may. grpcio 1.85 waits for a ping's
        # answer for ping_timeout_ms (a minute by default), whatever keepalive_timeout_ms
        # says, so both are set.
        ("grpc.keepalive_time_ms", 10_000),
        ("grpc.keepalive_timeout_ms", int(timeout * 1000)),
        ("grpc.http2.ping_timeout_ms", int(timeout * 1000)),
        ("grpc.http2.max_pings_without_data", 0),
    ]


# etcd's "require leader" metadata (clientv3.WithRequireLeader). On a KV call, a member
# without a leader refuses at once ("etcdserver: no leader") where it would otherwise hold
# the call until the deadline (a write it cannot propose is dropped): the call goes on to
# the next member, and is known not to have been applied. On a watch, a member that has
# lost its leader for a few election timeouts ends the stream instead of keeping it open
# with nothing to send.
_REQUIRE_LEADER = (("hasleader", "true"),)
# The pause between two rounds over the endpoints, so that a cluster electing a leader is
# not asked hundreds of times a second.
_ROUND_PAUSE = 0.05
PAGE_SIZE = 1000

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")

if TYPE_CHECKING:
    from grpc import StreamStreamMultiCallable as _Stream
    from grpc import UnaryUnaryMultiCallable as _Unary

    class _KV(Protocol):
        Range: _Unary[rpc_pb2.RangeRequest, rpc_pb2.RangeResponse]
        Put: _Unary[rpc_pb2.PutRequest, rpc_pb2.PutResponse]
        DeleteRange: _Unary[rpc_pb2.DeleteRangeRequest, rpc_pb2.DeleteRangeResponse]
        Txn: _Unary[rpc_pb2.TxnRequest, rpc_pb2.TxnResponse]
        Compact: _Unary[rpc_pb2.CompactionRequest, rpc_pb2.CompactionResponse]

    class _Watch(Protocol):
        Watch: _Stream[rpc_pb2.WatchRequest, rpc_pb2.WatchResponse]

    class _Maintenance(Protocol):
        Status: _Unary[rpc_pb2.StatusRequest, rpc_pb2.StatusResponse]

    class _Cluster(Protocol):
        MemberList: _Unary[rpc_pb2.MemberListRequest, rpc_pb2.MemberListResponse]

    class _Lease(Protocol):
        LeaseGrant: _Unary[rpc_pb2.LeaseGrantRequest, rpc_pb2.LeaseGrantResponse]
        LeaseRevoke: _Unary[rpc_pb2.LeaseRevokeRequest, rpc_pb2.LeaseRevokeResponse]
        LeaseKeepAlive: _Stream[rpc_pb2.LeaseKeepAliveRequest, rpc_pb2.LeaseKeepAliveResponse]


class _Stubs:
    """The generated stubs of one endpoint's channel, typed (the generated module is not)."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.kv: _KV = rpc_pb2_grpc.KVStub(channel)
        self.watch: _Watch = rpc_pb2_grpc.WatchStub(channel)
        self.maintenance: _Maintenance = rpc_pb2_grpc.MaintenanceStub(channel)
        self.cluster: _Cluster = rpc_pb2_grpc.ClusterStub(channel)
        self.lease: _Lease = rpc_pb2_grpc.LeaseStub(channel)


# ---------------------------------------------------------------------------- errors


class EtcdError(Exception):
    """etcd refused or failed a request. The message is one line, fit to show a user;
    ``code`` is the gRPC status code's name (e.g. ``INVALID_ARGUMENT``), "" if none."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class EtcdUnavailableError(EtcdError):
    """No endpoint answered (or the stream of a watch broke): etcd is down, unreachable, or
    without a quorum."""

    def __init__(self, endpoints: Sequence[str], reasons: Sequence[str]) -> None:
        distinct = list(dict.fromkeys(reasons))
        if len(distinct) == 1:
            why = distinct[0]
        else:
            why = "; ".join(f"{e}: {r}" for e, r in zip(endpoints, reasons, strict=True))
        super().__init__(f"etcd at {', '.join(endpoints)} is unreachable: {why}", "UNAVAILABLE")
        self.endpoints = list(endpoints)


class CompactedError(EtcdError):
    """The revision asked for is older than etcd's history (``compact_revision``, the oldest
    revision etcd still has): the changes since are lost; list again and watch from there."""

    def __init__(self, compact_revision: int) -> None:
        super().__init__(
            f"etcd has compacted its history up to revision {compact_revision}", "OUT_OF_RANGE"
        )
        self.compact_revision = compact_revision


def _reason(e: grpc.RpcError, timeout: float) -> str:
    """One short line for a gRPC failure (its details can span lines and repeat the address)."""
    if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"no answer within {timeout:g}s"
    details = " ".join((e.details() or e.code().name).split())
    if "Connection refused" in details:
        return "connection refused"
    return details


# ---------------------------------------------------------------------------- values


def _bytes(s: str | bytes) -> bytes:
    return s.encode() if isinstance(s, str) else s


def _key(b: bytes) -> str:
    return b.decode(errors="surrogateescape")


def _prefix_range(prefix: str) -> tuple[bytes, bytes]:
    """etcd's (key, range_end) for every key that starts with prefix: the end is the prefix
    with its last byte incremented, after dropping trailing 0xff bytes; (\\0, \\0) means every
    key (an empty prefix)."""
    key = _bytes(prefix)
    end = key.rstrip(b"\xff")
    if not end:
        return (key or b"\0"), b"\0"
    return key, end[:-1] + bytes([end[-1] + 1])


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int

    @classmethod
    def of(cls, kv: kv_pb2.KeyValue) -> KeyValue:
        return cls(_key(kv.key), kv.value, kv.create_revision, kv.mod_revision, kv.version)


class EventType(enum.Enum):
    PUT = "PUT"
    DELETE = "DELETE"


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change. A DELETE has an empty value and, as mod_revision, the deletion's revision."""

    type: EventType
    key: str
    value: bytes
    mod_revision: int


@dataclass(frozen=True, slots=True)
class WatchBatch:
    """The events of one watch response, in revision order; every event of one write (a txn)
    comes in the same batch. ``revision``: the store's revision when it was sent, which the
    events do not exceed. A batch without events is a progress report: nothing under the
    prefix changed up to ``revision``."""

    revision: int
    events: tuple[WatchEvent, ...]


@dataclass(frozen=True, slots=True)
class TxnResult:
    """``revision``: the store's revision after the txn. If it wrote anything that is the
    mod_revision of everything it wrote; if it wrote nothing (compares failed and no failure
    ops, or only reads) it is the revision it read at. ``responses``: one per op of the
    branch that ran."""

    succeeded: bool
    revision: int
    responses: list[rpc_pb2.ResponseOp]


@dataclass(frozen=True, slots=True)
class EtcdStatus:
    """One member's view: ``member_id`` of the member that answered, ``leader`` the member id
    it follows (0: none), ``revision`` its store revision."""

    endpoint: str
    member_id: int
    leader: int
    revision: int
    raft_term: int
    version: str


@dataclass(frozen=True, slots=True)
class Member:
    id: int
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]


# ---------------------------------------------------------------------------- txn parts


def compare_mod_revision(key: str, revision: int) -> rpc_pb2.Compare:
    """The key was last written at ``revision`` (0: the key does not exist)."""
    return rpc_pb2.Compare(
        key=_bytes(key),
        target=rpc_pb2.Compare.MOD,
        result=rpc_pb2.Compare.EQUAL,
        mod_revision=revision,
    )


def compare_value(key: str, value: str | bytes) -> rpc_pb2.Compare:
    """The key exists and holds ``value``."""
    return rpc_pb2.Compare(
        key=_bytes(key),
        target=rpc_pb2.Compare.VALUE,
        result=rpc_pb2.Compare.EQUAL,
        value=_bytes(value),
    )


def compare_missing(key: str) -> rpc_pb2.Compare:
    """The key does not exist (its create_revision is 0)."""
    return rpc_pb2.Compare(
        key=_bytes(key),
        target=rpc_pb2.Compare.CREATE,
        result=rpc_pb2.Compare.EQUAL,
        create_revision=0,
    )


def put_op(key: str, value: str | bytes, lease: int = 0) -> rpc_pb2.RequestOp:
    """A put; ``lease``: the key goes when that lease expires or is revoked (0: never)."""
    request = rpc_pb2.PutRequest(key=_bytes(key), value=_bytes(value), lease=lease)
    return rpc_pb2.RequestOp(request_put=request)


def delete_op(key: str) -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=_bytes(key)))


def delete_prefix_op(prefix: str) -> rpc_pb2.RequestOp:
    key, end = _prefix_range(prefix)
    return rpc_pb2.RequestOp(
        request_delete_range=rpc_pb2.DeleteRangeRequest(key=key, range_end=end)
    )


# ---------------------------------------------------------------------------- endpoints


def _check_endpoint(endpoint: str) -> str:
    host, sep, port = endpoint.rpartition(":")
    if not sep or not host:
        raise ValueError(f"etcd endpoint {endpoint!r} is not host:port")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"etcd endpoint {endpoint!r}: the port must be a number 1-65535")
    return endpoint


def parse_etcd_url(url: str) -> tuple[list[str], str]:
    """``etcd://h1:p1,h2:p2[/prefix]`` -> (["h1:p1", "h2:p2"], "/prefix"); the prefix is the
    path as written ("" without one)."""
    parts = urlsplit(url)
    if parts.scheme != "etcd":
        raise ValueError(f"{url!r} is not an etcd URL (etcd://host:port[,host:port...][/prefix])")
    if parts.query or parts.fragment or "@" in parts.netloc:
        raise ValueError(f"etcd URL {url!r}: only endpoints and a /prefix are allowed")
    if not parts.netloc:
        raise ValueError(f"etcd URL {url!r} names no endpoint (etcd://host:port[/prefix])")
    endpoints = [_check_endpoint(e) for e in parts.netloc.split(",")]
    return endpoints, parts.path


# ---------------------------------------------------------------------------- the client


class EtcdClient:
    """A blocking etcd client with failover over ``endpoints`` (``host:port``). Safe to
    share between threads.

    A call tries the endpoints in turn, starting with the one that answered last, each for
    at most ``timeout`` seconds, and goes round again (after a short pause) while less than
    ``timeout`` has passed since the call began: a dead member costs nothing (its connection
    is refused), an election costs the time it takes, and a member that swallows requests
    costs ``timeout``. When nobody answered, EtcdUnavailableError: after about ``timeout``
    seconds if the members refuse, up to len(endpoints) * ``timeout`` if they hang.

    Writes: a member without a leader refuses them before proposing (safe to retry); one
    sent through a follower just as the leader dies is dropped by etcd, unanswered, and
    costs ``timeout`` before the next member is tried. A write retried elsewhere after
    DEADLINE_EXCEEDED (or a connection lost mid-call) may still have been applied by the
    first member: a txn whose compares guard its writes then reports succeeded=False for its
    own earlier success, so read back before concluding a conflict.
    """

    def __init__(self, endpoints: Sequence[str], *, timeout: float = 2.0) -> None:
        if isinstance(endpoints, str) or not endpoints:
            raise ValueError("EtcdClient needs a list of host:port endpoints")
        self.endpoints = [_check_endpoint(e) for e in endpoints]
        self.timeout = timeout
        options = _channel_options(timeout)
        self._channels = [grpc.insecure_channel(e, options=options) for e in self.endpoints]
        self._stubs = [_Stubs(c) for c in self._channels]
        self._current = 0

    @property
    def endpoint(self) -> str:
        """The endpoint that answered last, which the next call tries first."""
        return self.endpoints[self._current]

    def close(self) -> None:
        for channel in self._channels:
            channel.close()

    def __enter__(self) -> EtcdClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _attempts(self) -> Iterator[int]:
        """The endpoints (indexes) one call tries, in order: see the class doc."""
        n = len(self.endpoints)
        first = self._current
        deadline = time.monotonic() + self.timeout
        while True:
            yield from ((first + step) % n for step in range(n))
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(_ROUND_PAUSE, left))

    def _unavailable(self, reasons: dict[str, str]) -> EtcdUnavailableError:
        endpoints = [e for e in self.endpoints if e in reasons]
        return EtcdUnavailableError(endpoints, [reasons[e] for e in endpoints])

    def _call(
        self,
        method: Callable[[_Stubs], _Unary[_Req, _Resp]],
        request: _Req,
        *,
        require_leader: bool = True,
    ) -> _Resp:
        metadata = _REQUIRE_LEADER if require_leader else None
        reasons: dict[str, str] = {}
        for i in self._attempts():
            try:
                response = method(self._stubs[i])(request, timeout=self.timeout, metadata=metadata)
            except grpc.RpcError as e:
                if e.code() not in _RETRY_ELSEWHERE:
                    message = f"etcd at {self.endpoints[i]}: {_reason(e, self.timeout)}"
                    raise EtcdError(message, e.code().name) from None
                reasons[self.endpoints[i]] = _reason(e, self.timeout)
                continue
            self._current = i
            return response
        raise self._unavailable(reasons)

    # -- reads

    def get(self, key: str) -> KeyValue | None:
        r = self._call(lambda s: s.kv.Range, rpc_pb2.RangeRequest(key=_bytes(key)))
        return KeyValue.of(r.kvs[0]) if r.kvs else None

    def get_prefix(self, prefix: str) -> tuple[int, list[KeyValue]]:
        """Every key under prefix, in key order, and the revision they were read at (watch
        from revision + 1 to follow them). Read in pages of PAGE_SIZE keys, all at the first
        page's revision, so the list is one consistent snapshot; if that revision is
        compacted between pages, the listing starts over."""
        key, end = _prefix_range(prefix)
        while True:
            try:
                return self._list(key, end)
            except EtcdError as e:
                if e.code != "OUT_OF_RANGE":
                    raise

    def _list(self, key: bytes, end: bytes) -> tuple[int, list[KeyValue]]:
        revision = 0
        kvs: list[KeyValue] = []
        while True:
            request = rpc_pb2.RangeRequest(
                key=key, range_end=end, limit=PAGE_SIZE, revision=revision
            )
            r = self._call(lambda s: s.kv.Range, request)
            revision = revision or r.header.revision
            kvs.extend(KeyValue.of(kv) for kv in r.kvs)
            if not r.more:
                return revision, kvs
            key = r.kvs[-1].key + b"\0"

    def status(self) -> EtcdStatus:
        """The status of the member the client uses (Status is answered by that member
        itself, even without a leader)."""
        r = self._call(
            lambda s: s.maintenance.Status, rpc_pb2.StatusRequest(), require_leader=False
        )
        return EtcdStatus(
            self.endpoint, r.header.member_id, r.leader, r.header.revision, r.raftTerm, r.version
        )

    def member_list(self) -> list[Member]:
        r = self._call(
            lambda s: s.cluster.MemberList, rpc_pb2.MemberListRequest(), require_leader=False
        )
        return [Member(m.ID, m.name, tuple(m.peerURLs), tuple(m.clientURLs)) for m in r.members]

    # -- writes

    def put(self, key: str, value: str | bytes, lease: int = 0) -> int:
        """Write one key (``lease``: see put_op); returns the revision of the write."""
        request = rpc_pb2.PutRequest(key=_bytes(key), value=_bytes(value), lease=lease)
        return self._call(lambda s: s.kv.Put, request).header.revision

    # -- leases: keys that go with their writer

    def lease_grant(self, ttl: int) -> int:
        """A new lease of ``ttl`` seconds; its id."""
        request = rpc_pb2.LeaseGrantRequest(TTL=ttl)
        return self._call(lambda s: s.lease.LeaseGrant, request).ID

    def lease_keepalive(self, lease: int) -> int:
        """Renew a lease; the seconds it has left then (0: it had expired, and its keys are
        gone). One request on etcd's keep-alive stream, which is then closed."""
        request = rpc_pb2.LeaseKeepAliveRequest(ID=lease)

        def once(
            s: _Stubs,
        ) -> _Unary[rpc_pb2.LeaseKeepAliveRequest, rpc_pb2.LeaseKeepAliveResponse]:
            def call(r: rpc_pb2.LeaseKeepAliveRequest, **kw: Any) -> rpc_pb2.LeaseKeepAliveResponse:
                responses = s.lease.LeaseKeepAlive(iter([r]), **kw)
                try:
                    return next(responses)
                finally:
                    responses.cancel()

            # Called as _call calls a unary method: (request, timeout=..., metadata=...).
            return cast(
                "_Unary[rpc_pb2.LeaseKeepAliveRequest, rpc_pb2.LeaseKeepAliveResponse]", call
            )

        return max(0, self._call(once, request).TTL)

    def lease_revoke(self, lease: int) -> None:
        """End a lease now, and delete its keys."""
        self._call(lambda s: s.lease.LeaseRevoke, rpc_pb2.LeaseRevokeRequest(ID=lease))

    def delete(self, key: str) -> tuple[int, int]:
        """(revision, keys deleted). Deleting nothing does not bump the revision."""
        request = rpc_pb2.DeleteRangeRequest(key=_bytes(key))
        r = self._call(lambda s: s.kv.DeleteRange, request)
        return r.header.revision, r.deleted

    def delete_prefix(self, prefix: str) -> tuple[int, int]:
        """(revision, keys deleted) for every key under prefix, deleted in one revision."""
        key, end = _prefix_range(prefix)
        request = rpc_pb2.DeleteRangeRequest(key=key, range_end=end)
        r = self._call(lambda s: s.kv.DeleteRange, request)
        return r.header.revision, r.deleted

    def txn(
        self,
        compares: Iterable[rpc_pb2.Compare],
        success: Iterable[rpc_pb2.RequestOp],
        failure: Iterable[rpc_pb2.RequestOp] = (),
    ) -> TxnResult:
        """If every compare holds, apply ``success``, else ``failure``: atomically, in one
        revision. etcd refuses (EtcdError, INVALID_ARGUMENT) a txn of more ops than its
        --max-txn-ops (128 by default), one that writes a key twice, and a request larger
        than --max-request-bytes (1.5 MiB by default)."""
        request = rpc_pb2.TxnRequest(compare=compares, success=success, failure=failure)
        r = self._call(lambda s: s.kv.Txn, request)
        return TxnResult(r.succeeded, r.header.revision, list(r.responses))

    def compact(self, revision: int, *, physical: bool = False) -> None:
        """Drop the history before ``revision``: reads and watches of older revisions fail
        with CompactedError from then on. ``physical``: return only once the space is freed."""
        request = rpc_pb2.CompactionRequest(revision=revision, physical=physical)
        self._call(lambda s: s.kv.Compact, request)

    # -- watches

    def watch(self, prefix: str, start_revision: int, *, progress_notify: bool = True) -> Watch:
        """Follow the changes under prefix from ``start_revision`` on (inclusive, as etcd
        counts: pass the revision of a listing + 1). Opened on the first endpoint that
        accepts it; the Watch then stays on that endpoint, and when its stream breaks the
        reader gets EtcdUnavailableError and watches again from its last revision + 1 (this
        client will try another endpoint). ``progress_notify``: etcd sends an empty batch
        now and then while nothing changes (every 10 minutes by default), so that the
        reader's revision keeps up."""
        key, end = _prefix_range(prefix)
        create = rpc_pb2.WatchCreateRequest(
            key=key, range_end=end, start_revision=start_revision, progress_notify=progress_notify
        )
        reasons: dict[str, str] = {}
        for i in self._attempts():
            w = Watch(self._stubs[i].watch.Watch, create, self.endpoints[i])
            started = w._started.wait(self.timeout)
            if started and not isinstance(w._error, EtcdUnavailableError):
                self._current = i
                return w
            w.close()
            reasons[self.endpoints[i]] = (
                w._reason if started else f"no answer within {self.timeout:g}s"
            )
        raise self._unavailable(reasons)


_Item = WatchBatch | EtcdError | None


class Watch:
    """One watch stream; its responses are read by a thread of its own into a queue, so
    that the reader can wait with a timeout (``get``) or iterate.

    The watch ends with an exception, raised by ``get`` and the iteration (and again on
    every later call): CompactedError if the start revision is compacted; EtcdUnavailableError
    if the stream broke (the member died, a keepalive ping went unanswered, or the member
    lost its leader); EtcdError if etcd canceled it for another reason. ``close()`` ends it
    quietly: the iteration stops, ``get`` returns None.
    """

    def __init__(
        self,
        method: _Stream[rpc_pb2.WatchRequest, rpc_pb2.WatchResponse],
        create: rpc_pb2.WatchCreateRequest,
        endpoint: str,
    ) -> None:
        self.endpoint = endpoint
        self._items: queue.Queue[_Item] = queue.Queue()
        self._requests: queue.Queue[rpc_pb2.WatchRequest | None] = queue.Queue()
        self._requests.put(rpc_pb2.WatchRequest(create_request=create))
        self._started = threading.Event()  # created, or ended before that
        self._closed = threading.Event()
        self._error: EtcdError | None = None
        self._reason = ""
        self._call = method(self._send(), metadata=_REQUIRE_LEADER)
        self._thread = threading.Thread(target=self._read, name=f"etcd watch {endpoint}")
        self._thread.daemon = True
        self._thread.start()

    def _send(self) -> Iterator[rpc_pb2.WatchRequest]:
        # The request side stays open until close(): etcd would take its end for the
        # client's.
        while (request := self._requests.get()) is not None:
            yield request

    def _read(self) -> None:
        try:
            for r in self._call:
                if r.compact_revision:
                    return self._end(CompactedError(r.compact_revision))
                if r.canceled:
                    why = r.cancel_reason or "no reason given"
                    return self._end(EtcdError(f"etcd at {self.endpoint} ended the watch: {why}"))
                if r.created:
                    self._started.set()
                    continue
                events = tuple(_event(e) for e in r.events)
                self._items.put(WatchBatch(r.header.revision, events))
            self._reason = "the watch stream ended"  # etcd does not end one without an error
        except grpc.RpcError as e:
            if self._closed.is_set():
                return
            self._reason = _reason(e, 0)
            if self._started.is_set():
                self._reason = f"the watch stream broke: {self._reason}"
            if e.code() not in _RETRY_ELSEWHERE:
                return self._end(
                    EtcdError(f"etcd at {self.endpoint}: {self._reason}", e.code().name)
                )
        self._end(EtcdUnavailableError([self.endpoint], [self._reason]))

    def _end(self, error: EtcdError) -> None:
        self._error = error
        self._items.put(error)
        self._started.set()
        self._requests.put(None)  # the stream is done with, closed or not
        self._call.cancel()

    def request_progress(self) -> None:
        """Ask etcd for a progress report now: an empty batch at the current revision (once
        this watch has caught up), so a reader can tell a quiet stream from a dead one."""
        self._requests.put(rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest()))

    def get(self, timeout: float | None = None) -> WatchBatch | None:
        """The next batch, waiting up to ``timeout`` seconds (None: for ever); None if none
        came in time or the watch is closed. Raises the error that ended the watch."""
        try:
            item = self._items.get(timeout=timeout)
        except queue.Empty:
            return None
        if item is None or isinstance(item, EtcdError):
            self._items.put(item)  # for the next call, too
        if isinstance(item, EtcdError):
            raise item
        return item

    def __iter__(self) -> Iterator[WatchBatch]:
        while (batch := self.get()) is not None:
            yield batch

    def close(self) -> None:
        """End the watch: cancel the stream and stop the thread."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._requests.put(None)
        self._call.cancel()
        self._items.put(None)
        self._thread.join(timeout=5)

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _event(e: kv_pb2.Event) -> WatchEvent:
    kind = EventType.DELETE if e.type == kv_pb2.Event.DELETE else EventType.PUT
    return WatchEvent(kind, _key(e.kv.key), e.kv.value, e.kv.mod_revision)
