"""What each connected proxy was sent and what it answered, in Istio's vocabulary.

A ``TypeStatus`` is both the status of one type on one stream and that stream's state for
the type (what it subscribed to, what was sent, what was ACKed): one record, so what the
status says is what the stream acts on. Only the stream's own generator writes it.

``format_proxy_status()`` prints the board like ``istioctl proxy-status``; it takes the
board's ``ProxyStatus`` objects, or ``ProxyRow``s rebuilt from a CSDS answer
(``xds.csds.rows_from_csds``) by a process that is not the server.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from ..text import age, format_table
from ..translate import CLUSTER, ENDPOINT, LISTENER, PUSH_ORDER, SHORT_NAMES

if TYPE_CHECKING:
    from envoy.config.core.v3 import base_pb2

    from .cache import Entry

SYNCED = "SYNCED"  # ACKed what we have for it now
STALE = "STALE"  # sent, not ACKed yet (or ACKed an older one, or a removal still held)
NOT_SENT = "NOT SENT"
NACKED = "NACKED"


@dataclass
class TypeStatus:
    """One proxy's view of one resource type, and the stream's state for it."""

    subscribed: bool = False
    wildcard: bool = False
    explicit: AbstractSet[str] = field(default_factory=set)  # asked for by name (read-only)
    # The proxy's state once it applied our last response, and at its last ACK.
    sent: Mapping[str, Entry] = field(default_factory=dict)  # may be a snapshot's: read-only
    acked: Mapping[str, Entry] = field(default_factory=dict)
    sent_version: str | None = None
    nonce: str | None = None
    in_flight: bool = False  # sent and neither ACKed nor NACKed yet
    sent_at: float | None = None  # monotonic, for push -> ACK latency
    acked_version: str | None = None
    nack: str | None = None  # the proxy's error text for sent_version
    last_change: float | None = None  # wall-clock time of the last push, ACK or NACK
    pushes: int = 0
    last_resources: int = 0  # resources in the last response (Delta: the changed ones)
    acks: int = 0
    nacks: int = 0
    stale_nonces: int = 0  # requests ignored (SotW) or ACKs voided (Delta) for an old nonce

    @property
    def names(self) -> frozenset[str] | None:
        """The names asked for; None for a wildcard subscription."""
        return None if self.wildcard else frozenset(self.explicit)

    def wants(self, name: str) -> bool:
        return self.wildcard or name in self.explicit

    def state(self, current_version: str) -> str:
        """``current_version``: the version of what the proxy should have now."""
        if self.nack is not None:
            return NACKED
        if self.sent_version is None:
            return NOT_SENT
        if self.acked_version == current_version and not self.in_flight:
            return SYNCED
        return STALE


class StreamView(Protocol):
    """What the status needs from a live stream: what the proxy should have."""

    def desired(self, type_url: str) -> dict[str, Entry]: ...

    def desired_version(self, type_url: str) -> str: ...

    def has_resources(self, type_url: str) -> bool: ...


@dataclass
class ProxyStatus:
    """One stream. A proxy bootstrapped without ADS has one per type, with one node id."""

    stream_id: int
    peer: str
    node_id: str = ""
    node_cluster: str = ""
    connected_since: float = field(default_factory=time.time)
    types: dict[str, TypeStatus] = field(default_factory=dict)
    api: str = "ADS SotW"  # service and variant: "ADS Delta", "CDS SotW", ...
    node: base_pb2.Node | None = None
    group: str = ""  # the node profile its config was translated for
    view: StreamView | None = field(default=None, repr=False)

    def current_version(self, type_url: str) -> str:
        return self.view.desired_version(type_url) if self.view else ""

    def state(self, type_url: str) -> str:
        st = self.types.get(type_url)
        return st.state(self.current_version(type_url)) if st else NOT_SENT

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
            if any(p.view and p.view.has_resources(type_url) for p in streams):
                return False
        elif any(p.state(type_url) != SYNCED for p in having):
            return False
    return True


def by_node(proxies: Iterable[ProxyStatus]) -> dict[str, list[ProxyStatus]]:
    """Streams grouped by proxy (node id; the peer address if it sent none)."""
    out: dict[str, list[ProxyStatus]] = {}
    for p in sorted(proxies, key=lambda p: p.stream_id):
        out.setdefault(p.node_id or p.peer, []).append(p)
    return out


class StatusBoard:
    """All connected streams; lets callers wait until a condition over them holds."""

    def __init__(self) -> None:
        self.proxies: dict[int, ProxyStatus] = {}
        self._event = asyncio.Event()

    def add(self, proxy: ProxyStatus) -> None:
        self.proxies[proxy.stream_id] = proxy
        self.touch()

    def remove(self, proxy: ProxyStatus) -> None:
        self.proxies.pop(proxy.stream_id, None)
        self.touch()

    def touch(self) -> None:
        """Wake every waiter: called on each push, ACK, NACK, connect and disconnect."""
        self._event.set()
        self._event = asyncio.Event()

    def synced(self, node_id: str | None = None, min_proxies: int = 1) -> bool:
        """True when at least ``min_proxies`` proxies (with that node id, if given) have
        ACKed the current version of CDS, EDS and LDS."""
        nodes = by_node(self.proxies.values())
        if node_id is not None:
            nodes = {k: v for k, v in nodes.items() if k == node_id}
        return len(nodes) >= min_proxies and all(node_synced(s) for s in nodes.values())

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
    """One proxy in the table: its streams merged, states by type URL."""

    name: str
    cluster: str
    states: Mapping[str, str]
    errors: Mapping[str, str] = field(default_factory=dict)  # type URL -> NACK text
    api: str = ""
    version: str = ""  # the proxy's software
    connected_since: float | None = None


def proxy_rows(proxies: Iterable[ProxyStatus]) -> list[ProxyRow]:
    """One row per proxy; a type served on several streams shows the newest stream's."""
    rows = []
    for name, streams in sorted(by_node(proxies).items()):
        states: dict[str, str] = {}
        errors: dict[str, str] = {}
        for p in streams:  # oldest first: newer streams win
            for type_url, st in p.types.items():
                states[type_url] = p.state(type_url)
                if st.nack is not None:
                    errors[type_url] = st.nack
                else:
                    errors.pop(type_url, None)
        first = streams[0]
        rows.append(
            ProxyRow(
                name=name,
                cluster=first.node_cluster,
                states=states,
                errors=errors,
                api=", ".join(dict.fromkeys(p.api for p in streams)),
                version=streams[-1].client_version,
                connected_since=min(p.connected_since for p in streams),
            )
        )
    return rows


def format_proxy_status(
    proxies: Iterable[ProxyStatus] | Iterable[ProxyRow], now: float | None = None
) -> str:
    """A table like ``istioctl proxy-status``: NAME, CLUSTER, CDS, LDS, EDS, API, VERSION,
    CONNECTED; then one line per NACK with the proxy's own error text."""
    items = list(proxies)
    rows = [r for r in items if isinstance(r, ProxyRow)]
    rows += proxy_rows(p for p in items if isinstance(p, ProxyStatus))
    if not rows:
        return "No proxies connected."
    headers = ["NAME", "CLUSTER", *(SHORT_NAMES[t] for t in COLUMNS), "API", "VERSION"]
    headers.append("CONNECTED")
    table = []
    errors = []
    for r in sorted(rows, key=lambda r: r.name):
        cells = [r.name, r.cluster or "-"]
        cells += [r.states.get(t, NOT_SENT) for t in COLUMNS]
        cells += [r.api or "-", r.version or "-", age(r.connected_since, now)]
        table.append(cells)
        for type_url, text in sorted(r.errors.items()):
            errors.append(f"{r.name} {SHORT_NAMES.get(type_url, type_url)} NACKED: {text}")
    return "\n".join([format_table(headers, table), *errors])
