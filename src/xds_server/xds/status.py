"""What each connected proxy was sent and what it answered, in Istio's vocabulary.

The streams own their state (stream.py: a ``TypeState`` per type). What is reported is a
snapshot of it: ``Stream.status()`` makes a ``ProxyStatus`` with a ``TypeStatus`` per type,
its state (SYNCED, STALE, NOT SENT, NACKED) worked out against what the proxy should have
when the snapshot is taken. A snapshot shares the stream's mappings (which the stream
replaces, never changes in place), so taking one copies none of them; it is not updated
afterwards: take another (a stream gives its last one again while nothing it is made of
has changed). The ``StatusBoard`` holds the live streams and answers from snapshots taken
when asked.

``format_proxy_status()`` prints the board like ``istioctl proxy-status``; it takes
``ProxyStatus`` snapshots, or ``ProxyRow``s rebuilt from a CSDS answer
(``xds.csds.rows_from_csds``) by a process that is not the server.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TypeVar

from ..text import age, format_table
from ..text import shorten as shorten_text
from ..translate import CLUSTER, ENDPOINT, LISTENER, PUSH_ORDER, SHORT_NAMES
from .cache import EMPTY_VERSION

if TYPE_CHECKING:
    from envoy.config.core.v3 import base_pb2

    from .cache import Entry, TypeSnapshot
    from .stream import Stream

SYNCED = "SYNCED"  # ACKed what we have for it now
STALE = "STALE"  # sent, not ACKed yet (or ACKed an older one, or a removal still held)
NOT_SENT = "NOT SENT"
NACKED = "NACKED"

# What is kept of a NACK's text (its head, in characters): a proxy may send megabytes
# (a 3 MB error_detail from two proxies made a 6 MB status answer, over gRPC's 4 MB).
NACK_TEXT_LIMIT = 4096


NACK_CUT = "... [cut: {size} bytes in all]"


def shorten(text: str, limit: int = NACK_TEXT_LIMIT) -> str:
    """A NACK text: ``text`` if it is at most ``limit`` characters, else its head and its
    full size (of the text first given, when a shortened one is cut again)."""
    return shorten_text(text, limit, NACK_CUT, recut=True)


def fit_texts(texts: Iterable[tuple[str, int]], room: int) -> int:
    """A limit per text (for ``shorten``) so that ``texts`` (each text, and how many times
    an answer carries it) take at most about ``room`` bytes: what a status answer with many
    NACKing proxies can give each of them."""
    size = count = 0
    for text, times in texts:
        size += len(text.encode("utf-8", "replace")) * times
        count += times
    if size <= room:
        return NACK_TEXT_LIMIT
    return max(room // count // 4 - 40, 0)  # UTF-8: up to 4 bytes a character


@dataclass(slots=True, eq=False)
class TypeStatus:
    """One type on one stream as reported: a snapshot of the stream's ``TypeState`` (the
    same names, without what only the stream needs), with what the proxy should have of
    the type at that moment (``desired``, ``current_version``). Read-only: its mappings
    and name set are the stream's own."""

    wildcard: bool
    explicit: AbstractSet[str]  # asked for by name
    # The proxy's state once it applied our last response, and at its last ACK.
    sent: Mapping[str, Entry]
    acked: Mapping[str, Entry]
    sent_version: str | None
    acked_version: str | None
    nonce: str | None
    in_flight: bool  # sent and neither ACKed nor NACKed yet
    nack: str | None  # the proxy's error text for sent_version
    last_change: float | None  # wall-clock time of the last push, ACK or NACK
    pushes: int
    last_resources: int  # resources in the last response (Delta: the changed ones)
    acks: int
    nacks: int
    stale_nonces: int  # requests ignored (SotW) or ACKs voided (Delta) for an old nonce
    desired: Mapping[str, Entry]  # what the subscription covers of the current snapshot
    current_version: str  # its version: what the proxy should have now

    @property
    def names(self) -> frozenset[str] | None:
        """The names asked for; None for a wildcard subscription."""
        return None if self.wildcard else frozenset(self.explicit)

    def state(self, current_version: str | None = None) -> str:
        """SYNCED, STALE, NOT SENT or NACKED, against ``current_version`` (the version
        the proxy should have; default: the snapshot's own)."""
        if self.nack is not None:
            return NACKED
        if self.sent_version is None:
            return NOT_SENT
        if current_version is None:
            current_version = self.current_version
        if self.acked_version == current_version and not self.in_flight:
            return SYNCED
        return STALE


@dataclass(slots=True, eq=False)
class ProxyStatus:
    """One stream as reported, a snapshot (``Stream.status()``); one with no types is a
    stream before its first request (the server makes that one to open the stream). A
    proxy bootstrapped without ADS has one stream per type, with one node id."""

    stream_id: int
    peer: str
    node_id: str = ""
    node_cluster: str = ""
    connected_since: float = field(default_factory=time.time)
    types: Mapping[str, TypeStatus] = field(default_factory=dict)
    api: str = "ADS SotW"  # service and variant: "ADS Delta", "CDS SotW", ...
    node: base_pb2.Node | None = None
    group: str = ""  # the node profile its config was translated for
    # Its group's snapshots by type URL when taken (None: no group yet). The cache replaces
    # a group's mapping whole, never changes it in place.
    snapshots: Mapping[str, TypeSnapshot] | None = field(default=None, repr=False)

    def current_version(self, type_url: str) -> str:
        """The version of what the proxy should have of ``type_url``."""
        st = self.types.get(type_url)
        return st.current_version if st is not None else EMPTY_VERSION

    def desired(self, type_url: str) -> Mapping[str, Entry]:
        """What the proxy should have of ``type_url`` (what its subscription covers)."""
        st = self.types.get(type_url)
        return st.desired if st is not None else {}

    def state(self, type_url: str) -> str:
        st = self.types.get(type_url)
        return st.state() if st is not None else NOT_SENT

    def has_resources(self, type_url: str) -> bool:
        """Should the proxy have some of this type? (True while its group is not known.)"""
        if self.snapshots is None:
            return True
        snapshot = self.snapshots.get(type_url)
        return snapshot is not None and bool(snapshot.entries)

    @property
    def client_version(self) -> str:
        """The proxy's software, e.g. ``envoy 1.40.0`` or ``grpc 1.85.3``."""
        return client_version(self.node)


def client_version(node: base_pb2.Node | None) -> str:
    if node is None or not node.user_agent_name:
        return ""
    name = node.user_agent_name.split()[0].lower()
    if node.HasField("user_agent_build_version"):
        v = node.user_agent_build_version.version
        return f"{name} {v.major_number}.{v.minor_number}.{v.patch}"
    return f"{name} {node.user_agent_version.split()[-1]}" if node.user_agent_version else name


def node_synced(streams: Iterable[ProxyStatus], type_urls: Iterable[str] = PUSH_ORDER) -> bool:
    """Has this proxy (all its streams) ACKed what it should have of every type? A type no
    stream asked for counts only if there is something of it to have (Envoy asks for
    endpoints once a cluster needs them)."""
    streams = list(streams)
    for type_url in type_urls:
        having = [p for p in streams if type_url in p.types]
        if not having:
            if any(p.has_resources(type_url) for p in streams):
                return False
        elif any(p.state(type_url) != SYNCED for p in having):
            return False
    return True


class Connected(Protocol):
    """Who a stream is, which tells connections apart: a ``ProxyStatus``, or a live
    stream (to group streams without taking snapshots)."""

    stream_id: int
    api: str
    node_id: str
    peer: str


_C = TypeVar("_C", bound=Connected)


def by_connection(proxies: Iterable[_C]) -> list[list[_C]]:
    """Streams grouped by proxy, oldest stream first; the first one's id names the
    connection. As in istioctl, each ADS stream is a proxy of its own (an Envoy opens one),
    so two with one node id (a restarted Envoy whose old stream lingers, a client that
    borrowed the id) are two rows. Per-type streams (an Envoy without ADS opens several,
    on one gRPC connection) are grouped by node id and peer address, with that peer's
    newest ADS stream of the node id if it has one."""
    streams = sorted(proxies, key=lambda p: p.stream_id)
    ads: dict[tuple[str, str], int] = {}  # (node id, peer) -> its newest ADS stream
    for p in streams:
        if p.api.startswith("ADS"):
            ads[(p.node_id or p.peer, p.peer)] = p.stream_id
    out: dict[tuple[str, str, int], list[_C]] = {}
    for p in streams:
        base = (p.node_id or p.peer, p.peer)
        key = (*base, p.stream_id if p.api.startswith("ADS") else ads.get(base, 0))
        out.setdefault(key, []).append(p)
    return sorted(out.values(), key=lambda s: (s[0].node_id or s[0].peer, s[0].stream_id))


def _snapshots(streams: Iterable[Stream]) -> list[ProxyStatus]:
    return [s.status() for s in streams]


class StatusBoard:
    """All connected streams; answers from snapshots of them, taken when asked, and lets
    callers wait until a condition over them holds."""

    def __init__(self) -> None:
        self._streams: dict[int, Stream] = {}
        self._event = asyncio.Event()

    def add(self, stream: Stream) -> None:
        self._streams[stream.stream_id] = stream
        self.touch()

    def remove(self, stream: Stream) -> None:
        self._streams.pop(stream.stream_id, None)
        self.touch()

    def streams(self) -> list[Stream]:
        """The live streams, for what needs only who they are (``by_connection``): no
        snapshot taken. (One step under the GIL: safe to call from another thread.)"""
        return list(self._streams.values())

    @property
    def proxies(self) -> dict[int, ProxyStatus]:
        """A snapshot of every stream, by stream id, as of now."""
        return {s.stream_id: s.status() for s in self.streams()}

    def touch(self) -> None:
        """Wake every waiter: called on each push, ACK, NACK, connect and disconnect."""
        self._event.set()
        self._event = asyncio.Event()

    def synced(self, node_id: str | None = None, min_proxies: int = 1) -> bool:
        """Have the proxies ACKed what they should have of CDS, EDS and LDS? A proxy is one
        connection (see ``by_connection``). Without ``node_id``: every proxy, and there are
        at least ``min_proxies``. With it: at least ``min_proxies`` of the proxies with that
        node id, so that another connection using the same id (never synced, or on its
        way out) neither hides nor blocks the one waited for. Snapshots are taken only of
        the proxies looked at (without ``node_id``: up to the first one out of sync)."""
        connections = by_connection(self.streams())
        if node_id is None:
            return len(connections) >= min_proxies and all(
                node_synced(_snapshots(s)) for s in connections
            )
        having = [s for s in connections if (s[0].node_id or s[0].peer) == node_id]
        return sum(1 for s in having if node_synced(_snapshots(s))) >= min_proxies

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> None:
        """Wait for ``predicate`` to hold, re-checking after each status change."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError
            await asyncio.wait_for(self._event.wait(), remaining)


# --- proxy-status table ---------------------------------------------------------------------

COLUMNS = (CLUSTER, LISTENER, ENDPOINT)  # istioctl's order: CDS, LDS, EDS


@dataclass(frozen=True)
class ProxyRow:
    """One proxy (connection) in the table: its streams merged, states by type URL."""

    name: str
    cluster: str
    states: Mapping[str, str]
    errors: Mapping[str, str] = field(default_factory=dict)  # type URL -> NACK text
    api: str = ""
    version: str = ""  # the proxy's software
    connected_since: float | None = None
    peer: str = ""  # its connection's address, e.g. "ipv4:127.0.0.1:40312"
    connection: int = 0  # the server's id for it: its first stream's (0: unknown)
    replica: str = ""  # the control plane serving it, when several share a store


def proxy_rows(proxies: Iterable[ProxyStatus]) -> list[ProxyRow]:
    """One row per proxy (connection); a type served on several streams shows the newest
    stream's."""
    rows = []
    for streams in by_connection(proxies):
        first = streams[0]
        name = first.node_id or first.peer
        states: dict[str, str] = {}
        errors: dict[str, str] = {}
        for p in streams:  # oldest first: newer streams win
            for type_url, st in p.types.items():
                states[type_url] = p.state(type_url)
                if st.nack is not None:
                    errors[type_url] = st.nack
                else:
                    errors.pop(type_url, None)
        rows.append(
            ProxyRow(
                name=name,
                cluster=first.node_cluster,
                states=states,
                errors=errors,
                api=", ".join(dict.fromkeys(p.api for p in streams)),
                version=streams[-1].client_version,
                connected_since=min(p.connected_since for p in streams),
                peer=first.peer,
                connection=first.stream_id,
            )
        )
    return rows


def _labels(rows: list[ProxyRow]) -> list[str]:
    """NAME cells: the node id, and where several proxies share it, ``id#connection`` (or
    ``id@peer`` when the connection id is not known) so that each can be told apart."""
    count: dict[str, int] = {}
    for r in rows:
        count[r.name] = count.get(r.name, 0) + 1
    return [
        r.name
        if count[r.name] == 1
        else f"{r.name}#{r.connection}"
        if r.connection
        else f"{r.name}@{r.peer or i + 1}"
        for i, r in enumerate(rows)
    ]


def format_proxy_status(
    proxies: Iterable[ProxyStatus] | Iterable[ProxyRow], now: float | None = None
) -> str:
    """A table like ``istioctl proxy-status``: NAME, CLUSTER, CDS, LDS, EDS, API, VERSION,
    CONNECTED (and REPLICA when rows name one, as istioctl's ISTIOD), one row per proxy
    (connection: a node id connected twice has two rows, ``id#connection``, each followed
    by a line with its peer address); then one line per NACK with the proxy's own error
    text."""
    items = list(proxies)
    rows = [r for r in items if isinstance(r, ProxyRow)]
    rows += proxy_rows(p for p in items if isinstance(p, ProxyStatus))
    if not rows:
        return "No proxies connected."
    headers = ["NAME", "CLUSTER", *(SHORT_NAMES[t] for t in COLUMNS), "API", "VERSION"]
    headers.append("CONNECTED")
    replicas = any(r.replica for r in rows)
    if replicas:
        headers.append("REPLICA")
    table = []
    errors = []
    rows.sort(key=lambda r: (r.name, r.connected_since or 0.0, r.connection, r.peer))
    peers = []
    for r, label in zip(rows, _labels(rows), strict=True):
        cells = [label, r.cluster or "-"]
        cells += [r.states.get(t, NOT_SENT) for t in COLUMNS]
        cells += [r.api or "-", r.version or "-", age(r.connected_since, now)]
        if replicas:
            cells.append(r.replica or "-")
        table.append(cells)
        if label != r.name:
            peers.append(f"{label}: connection {r.connection or '?'} from {r.peer or '?'}")
        for type_url, text in sorted(r.errors.items()):
            errors.append(f"{label} {SHORT_NAMES.get(type_url, type_url)} NACKED: {text}")
    return "\n".join([format_table(headers, table), *peers, *errors])
