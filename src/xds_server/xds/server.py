"""State-of-the-world ADS over grpc.aio.

One task per stream reads requests into a queue; the stream's generator is the only code
that touches the stream's state, so requests and cache changes are handled one at a time
without locks.

Ordering (make before break): a push of a type waits while a type earlier in
CDS -> EDS -> LDS has a response that is neither ACKed nor NACKed. So a listener that
names a new cluster is sent only after Envoy has ACKed the cluster and its endpoints.
Responses to a change in what the proxy asks for are not held back: the proxy asked.

NACK: the rejected version is recorded and not sent again; the next new version is.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from ..translate import CLUSTER, LISTENER, PUSH_ORDER, SHORT_NAMES
from .cache import SnapshotCache
from .status import ProxyStatus, StatusBoard, TypeStatus

log = logging.getLogger("xds_server.xds")

# Types Envoy asks for with an empty name list meaning "everything".
WILDCARD_TYPES = (CLUSTER, LISTENER)
_EOF = object()
_stream_ids = itertools.count(1)
_nonces = itertools.count(1)


class SotwStream:
    """The state of one ADS stream, driven by requests and cache changes."""

    def __init__(self, cache: SnapshotCache, status: ProxyStatus) -> None:
        self.cache = cache
        self.status = status
        self.force: set[str] = set()  # types whose requested names changed

    def _type(self, type_url: str) -> TypeStatus:
        return self.status.types.setdefault(type_url, TypeStatus())

    def on_request(self, req: discovery_pb2.DiscoveryRequest) -> bool:
        """Record a request; returns True if it changed anything worth a status update."""
        if req.HasField("node") and not self.status.node_id:
            self.status.node_id = req.node.id
            self.status.node_cluster = req.node.cluster
        st = self._type(req.type_url)
        kind = SHORT_NAMES.get(req.type_url, req.type_url)
        if req.response_nonce and req.response_nonce != st.nonce:
            log.debug(
                "%s %s: ignoring stale nonce %s", self.status.node_id, kind, req.response_nonce
            )
            return False
        if req.response_nonce:
            st.in_flight = False
            st.last_change = time.time()
            if req.HasField("error_detail"):
                st.nack = req.error_detail.message
                log.warning(
                    "%s rejected %s version %s: %s",
                    self.status.node_id,
                    kind,
                    st.sent_version,
                    req.error_detail.message,
                )
            else:
                st.acked_version = st.sent_version
                st.nack = None
        names = frozenset(req.resource_names)
        if req.type_url in WILDCARD_TYPES and (not names or "*" in names):
            names = None
        if not st.subscribed or names != st.names:
            first = not st.subscribed
            st.subscribed = True
            st.names = names
            if first and req.version_info and req.version_info == self.cache.version(req.type_url):
                # A reconnecting proxy that already has this version: nothing to send.
                st.sent_version = st.acked_version = req.version_info
            else:
                self.force.add(req.type_url)
        return True

    def responses(self) -> list[discovery_pb2.DiscoveryResponse]:
        """What to send now, in push order, holding back pushes behind unanswered ones."""
        out = []
        blocked = False
        types = list(PUSH_ORDER) + [t for t in self.status.types if t not in PUSH_ORDER]
        for type_url in types:
            st = self.status.types.get(type_url)
            if st is None or not st.subscribed:
                continue
            forced = type_url in self.force
            changed = self.cache.version(type_url) != st.sent_version
            if forced or (changed and not blocked):
                out.append(self._respond(type_url, st))
            if st.in_flight:
                blocked = True
        return out

    def _respond(self, type_url: str, st: TypeStatus) -> discovery_pb2.DiscoveryResponse:
        self.force.discard(type_url)
        snap = self.cache.snapshot(type_url)
        if st.names is None:
            entries = [snap.entries[n] for n in sorted(snap.entries)]
        else:
            entries = [snap.entries[n] for n in sorted(st.names) if n in snap.entries]
        nonce = str(next(_nonces))
        st.sent_version, st.nonce, st.in_flight, st.sent_at = snap.version, nonce, True, time.time()
        st.nack = None
        log.debug(
            "%s <- %s version %s (%d resources, nonce %s)",
            self.status.node_id,
            SHORT_NAMES.get(type_url, type_url),
            snap.version,
            len(entries),
            nonce,
        )
        return discovery_pb2.DiscoveryResponse(
            version_info=snap.version,
            resources=[e.any for e in entries],
            type_url=type_url,
            nonce=nonce,
        )


class AggregatedDiscoveryService(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    """ADS, state of the world. Delta is not served yet (UNIMPLEMENTED)."""

    def __init__(self, cache: SnapshotCache, board: StatusBoard) -> None:
        self.cache = cache
        self.board = board

    async def StreamAggregatedResources(
        self, request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest], context
    ) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        events: asyncio.Queue = asyncio.Queue()
        status = ProxyStatus(stream_id=next(_stream_ids), peer=context.peer())
        stream = SotwStream(self.cache, status)

        def on_change(_types: set[str]) -> None:
            events.put_nowait(None)

        async def pump() -> None:
            try:
                async for req in request_iterator:
                    events.put_nowait(req)
            except (grpc.aio.AioRpcError, asyncio.CancelledError):
                pass
            finally:
                events.put_nowait(_EOF)

        self.cache.watch(on_change)
        self.board.add(status)
        reader = asyncio.create_task(pump())
        try:
            while True:
                event = await events.get()
                if event is _EOF:
                    break
                changed = event is not None and stream.on_request(event)
                responses = stream.responses()
                if changed or responses:
                    self.board.touch()
                for response in responses:
                    yield response
        finally:
            self.cache.unwatch(on_change)
            self.board.remove(status)
            reader.cancel()
            log.info("%s disconnected", status.node_id or status.peer)
