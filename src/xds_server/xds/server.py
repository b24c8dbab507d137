"""The xDS gRPC services over grpc.aio, all served from one cache and one status board.

- ADS: ``StreamAggregatedResources`` (state of the world) and ``DeltaAggregatedResources``.
- Per type, for a proxy bootstrapped without ADS: LDS, CDS and EDS, each with its SotW
  stream, its Delta stream and the unary Fetch.
- CSDS (``envoy.service.status.v3``): see csds.py.

Every stream runs the same loop (``XdsServer.serve``): read a request, answer it; a cache
change schedules one answer of its own. Both go through the stream's lock, so the stream's
state (stream.py) sees requests and changes one at a time, in order.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
from envoy.service.cluster.v3 import cds_pb2_grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from envoy.service.endpoint.v3 import eds_pb2_grpc
from envoy.service.listener.v3 import lds_pb2_grpc

from ..translate import CLUSTER, ENDPOINT, LISTENER, SHORT_NAMES
from .cache import SnapshotCache
from .metrics import XdsMetrics
from .status import ProxyStatus, StatusBoard
from .stream import Request, Response, Stream, StreamError

log = logging.getLogger("xds_server.xds")

# The Envoy API modules have no type information: requests and responses are Any to mypy.
Context = grpc.aio.ServicerContext[Any, Any]
Requests = AsyncIterator[Any]  # the handlers read with context.read() instead

_stream_ids = itertools.count(1)


class XdsServer:
    """Runs streams of every flavour against one cache and one status board."""

    def __init__(
        self, cache: SnapshotCache, board: StatusBoard, metrics: XdsMetrics | None = None
    ) -> None:
        self.cache = cache
        self.board = board
        self.metrics = metrics

    async def serve(
        self,
        context: Context,
        *,
        delta: bool,
        types: tuple[str, ...] | None = None,
    ) -> None:
        """One stream: ``types`` None for ADS, else the one type of a per-type service.

        The handler reads requests with ``context.read()`` and answers each; a cache change
        schedules one flush task (at most one pending per stream). Every change of the
        stream's state and every write happens under the stream's lock, so requests and
        changes are taken one at a time, in order. An idle stream is this one coroutine
        waiting on its read: no reader task, no queue (server memory per stream)."""
        service = "ADS" if types is None else SHORT_NAMES.get(types[0], types[0])
        opened = ProxyStatus(
            stream_id=next(_stream_ids),
            peer=context.peer(),
            api=f"{service} {'Delta' if delta else 'SotW'}",
        )
        stream = Stream(self.cache, opened, delta=delta, types=types, metrics=self.metrics)
        lock = asyncio.Lock()
        loop = asyncio.get_running_loop()
        flush: asyncio.Task[None] | None = None

        async def answer(request: Request | None) -> None:
            async with lock:
                changed = stream.on_request(request) if request is not None else False
                responses = stream.responses()
                if changed or responses:
                    self.board.touch()
                for response in responses:
                    await context.write(response)

        async def flush_once() -> None:
            nonlocal flush
            flush = None
            try:
                await answer(None)
            except Exception as e:  # the stream is gone; its read loop ends it
                log.debug("stream %d: push not written: %r", stream.stream_id, e)

        def on_change(_types: set[str]) -> None:
            nonlocal flush
            if flush is None:
                flush = loop.create_task(flush_once())

        self.cache.watch(on_change)
        self.board.add(stream)
        try:
            while (request := await context.read()) is not grpc.aio.EOF:
                try:
                    await answer(request)
                except StreamError as e:
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except (grpc.aio.AioRpcError, asyncio.CancelledError):
            pass
        finally:
            self.cache.unwatch(on_change)
            if flush is not None:
                flush.cancel()
            self.board.remove(stream)
            stream.close()
            log.info("%s disconnected (%s)", stream.node_id or stream.peer, stream.api)

    async def fetch(
        self, request: discovery_pb2.DiscoveryRequest, context: Context, type_url: str
    ) -> discovery_pb2.DiscoveryResponse:
        """Unary SotW fetch: a one-request stream that is not on the status board."""
        opened = ProxyStatus(stream_id=0, peer=context.peer(), api="Fetch")
        stream = Stream(self.cache, opened, delta=False, types=(type_url,))
        responses: list[Response] = []
        try:
            stream.on_request(request)
            if not stream.ready:  # a kind of proxy not served yet: its translation is on its way
                await self._until_ready(stream)
            responses = stream.responses()
        except StreamError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        finally:
            stream.close()
        return responses[0] if responses else discovery_pb2.DiscoveryResponse(type_url=type_url)

    FETCH_WAIT_S = 10.0  # the longest a Fetch waits for its kind of proxy's translation

    async def _until_ready(self, stream: Stream) -> None:
        ready = asyncio.Event()

        def on_change(_types: set[str]) -> None:
            if stream.ready:
                ready.set()

        self.cache.watch(on_change)
        try:
            await asyncio.wait_for(ready.wait(), self.FETCH_WAIT_S)
        except TimeoutError:
            pass  # answered with what there is: nothing
        finally:
            self.cache.unwatch(on_change)


class AggregatedDiscoveryService(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    """ADS: every type on one stream, SotW or Delta."""

    def __init__(
        self, cache: SnapshotCache, board: StatusBoard, metrics: XdsMetrics | None = None
    ) -> None:
        self.xds = XdsServer(cache, board, metrics)

    async def StreamAggregatedResources(self, request_iterator: Requests, context: Context) -> None:
        await self.xds.serve(context, delta=False)

    async def DeltaAggregatedResources(self, request_iterator: Requests, context: Context) -> None:
        await self.xds.serve(context, delta=True)


class ListenerDiscoveryService(lds_pb2_grpc.ListenerDiscoveryServiceServicer):  # type: ignore[misc]
    def __init__(self, xds: XdsServer) -> None:
        self.xds = xds

    async def StreamListeners(self, request_iterator: Requests, context: Context) -> None:
        await self.xds.serve(context, delta=False, types=(LISTENER,))

    async def DeltaListeners(self, request_iterator: Requests, context: Context) -> None:
        await self.xds.serve(context, delta=True, types=(LISTENER,))

    async def FetchListeners(
        self, request: discovery_pb2.DiscoveryRequest, context: Context
    ) -> discovery_pb2.DiscoveryResponse:
        return await self.xds.fetch(request, context, LISTENER)


class ClusterDiscoveryService(cds_pb2_grpc.ClusterDiscoveryServiceServicer):  # type: ignore[misc]
    def __init__(self, xds: XdsServer) -> None:
        self.xds = xds

    async def StreamClusters(self, request_iterator: Requests, context: Context) -> None:
        await self.xds.serve(context, delta=False, types=(CLUSTER,))

    async def DeltaClusters(self, request_iterator: Requests, context: Context) -> None:
        await self.xds.serve(context, delta=True, types=(CLUSTER,))

    async def FetchClusters(
        self, request: discovery_pb2.DiscoveryRequest, context: Context
    ) -> discovery_pb2.DiscoveryResponse:
        return await self.xds.fetch(request, context, CLUSTER)


class EndpointDiscoveryService(eds_pb2_grpc.EndpointDiscoveryServiceServicer):  # type: ignore[misc]
    def __init__(self, xds: XdsServer) -> None:
        self.xds = xds

    async def StreamEndpoints(self, request_iterator: Requests, context: Context) -> None:
        await self.xds.serve(context, delta=False, types=(ENDPOINT,))

    async def DeltaEndpoints(self, request_iterator: Requests, context: Context) -> None:
        await self.xds.serve(context, delta=True, types=(ENDPOINT,))

    async def FetchEndpoints(
        self, request: discovery_pb2.DiscoveryRequest, context: Context
    ) -> discovery_pb2.DiscoveryResponse:
        return await self.xds.fetch(request, context, ENDPOINT)


def add_xds_services(
    server: grpc.aio.Server,
    cache: SnapshotCache,
    board: StatusBoard,
    metrics: XdsMetrics | None = None,
) -> XdsServer:
    """Register ADS, LDS, CDS, EDS (SotW and Delta each) and CSDS on ``server``."""
    from .csds import ClientStatusDiscoveryService, add_csds

    ads = AggregatedDiscoveryService(cache, board, metrics)
    xds = ads.xds
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(ads, server)
    lds_pb2_grpc.add_ListenerDiscoveryServiceServicer_to_server(
        ListenerDiscoveryService(xds), server
    )
    cds_pb2_grpc.add_ClusterDiscoveryServiceServicer_to_server(ClusterDiscoveryService(xds), server)
    eds_pb2_grpc.add_EndpointDiscoveryServiceServicer_to_server(
        EndpointDiscoveryService(xds), server
    )
    add_csds(server, ClientStatusDiscoveryService(board))
    return xds
