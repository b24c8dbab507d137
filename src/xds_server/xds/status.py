"""What each connected proxy was sent and what it answered, in Istio's vocabulary."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

SYNCED = "SYNCED"  # ACKed the latest version we have
STALE = "STALE"  # sent, not ACKed yet (or ACKed an older one)
NOT_SENT = "NOT SENT"
NACKED = "NACKED"


@dataclass
class TypeStatus:
    """One proxy's view of one resource type."""

    subscribed: bool = False
    names: frozenset[str] | None = None  # None: wildcard
    sent_version: str | None = None
    nonce: str | None = None
    in_flight: bool = False  # sent and neither ACKed nor NACKed yet
    sent_at: float | None = None
    acked_version: str | None = None
    nack: str | None = None  # Envoy's error text for sent_version
    last_change: float | None = None  # wall-clock time of the last ACK or NACK

    def state(self, current_version: str) -> str:
        if self.nack is not None:
            return NACKED
        if self.sent_version is None:
            return NOT_SENT
        if self.acked_version == current_version and not self.in_flight:
            return SYNCED
        return STALE


@dataclass
class ProxyStatus:
    stream_id: int
    peer: str
    node_id: str = ""
    node_cluster: str = ""
    connected_since: float = field(default_factory=time.time)
    types: dict[str, TypeStatus] = field(default_factory=dict)


class StatusBoard:
    """All connected proxies; lets callers wait until a condition over them holds."""

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
        """Wake every waiter: called on each ACK, NACK, connect and disconnect."""
        self._event.set()
        self._event = asyncio.Event()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> None:
        """Wait for ``predicate`` to hold, re-checking after each status change."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError
            await asyncio.wait_for(self._event.wait(), remaining)
