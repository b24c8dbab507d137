"""The xDS gRPC services over grpc.aio, all served from one cache and one status board.

- ADS: ``StreamAggregatedResources`` (state of the world) and ``DeltaAggregatedResources``.
- Per type, for a proxy bootstrapped without ADS: LDS, CDS and EDS, each with its SotW
  stream, its Delta stream and the unary Fetch.
- CSDS (``envoy.service.status.v3``): see csds.py.

Every stream runs the same loop: one task reads requests into a queue, and the stream's
generator is the only code that touches the stream's state (stream.py), so requests and
cache changes are handled one at a time, in order, without locks.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator

import grpc
from envoy.service.cluster.v3 import cds_pb2_grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from envoy.service.endpoint.v3 import eds_pb2_grpc
from envoy.service.listener.v3 import lds_pb2_grpc
from google.protobuf.message import Message

from ..translate import CLUSTER, ENDPOINT, LISTENER, SHORT_NAMES
from .cache import SnapshotCache
from .metrics import XdsMetrics
from .status import ProxyStatus, StatusBoard
from .stream import Stream, StreamError

log = logging.getLogger("xds_server.xds")

_EOF = object()
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
        requests: AsyncIterator[Message],
        context: grpc.aio.ServicerContext,
        *,
        delta: bool,
        types: tuple[str, ...] | None = None,
    ) -> AsyncIterator[Message]:
        """One stream: ``types`` None for ADS, else the one type of a per-type service."""
        service = "ADS" if types is None else SHORT_NAMES.get(types[0], types[0])
        status = ProxyStatus(
            stream_id=next(_stream_ids),
            peer=context.peer(),
            api=f"{service} {'Delta' if delta else 'SotW'}",
        )
        stream = Stream(self.cache, status, delta=delta, types=types, metrics=self.metrics)
        events: asyncio.Queue = asyncio.Queue()

        def on_change(_types: set[str]) -> None:
            events.put_nowait(None)

        async def pump() -> None:
            try:
                async for req in requests:
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
                changed = False
                if event is not None:
                    try:
                        changed = stream.on_request(event)
                    except StreamError as e:
                        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
                responses = stream.responses()
                if changed or responses:
                    self.board.touch()
                for response in responses:
                    yield response
        finally:
            self.cache.unwatch(on_change)
            self.board.remove(status)
            stream.close()
            reader.cancel()
            log.info("%s disconnected (%s)", status.node_id or status.peer, status.api)

    async def fetch(
        self, request: discovery_pb2.DiscoveryRequest, context: grpc.aio.ServicerContext, type_url
    ) -> discovery_pb2.DiscoveryResponse:
        """Unary SotW fetch: a one-request stream that is not on the status board."""
        status = ProxyStatus(stream_id=0, peer=context.peer(), api="Fetch")
        stream = Stream(self.cache, status, delta=False, types=(type_url,))
        responses: list[Message] = []
        try:
            stream.on_request(request)
            responses = stream.responses()
        except StreamError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        finally:
            stream.close()
        return responses[0] if responses else discovery_pb2.DiscoveryResponse(type_url=type_url)


class AggregatedDiscoveryService(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    """ADS: every type on one stream, SotW or Delta."""

    def __init__(
        self, cache: SnapshotCache, board: StatusBoard, metrics: XdsMetrics | None = None
    ) -> None:
        self.xds = XdsServer(cache, board, metrics)

    async def StreamAggregatedResources(self, request_iterator, context):
        async for response in self.xds.serve(request_iterator, context, delta=False):
            yield response

    async def DeltaAggregatedResources(self, request_iterator, context):
        async for response in self.xds.serve(request_iterator, context, delta=True):
            yield response


class ListenerDiscoveryService(lds_pb2_grpc.ListenerDiscoveryServiceServicer):
    def __init__(self, xds: XdsServer) -> None:
        self.xds = xds

    async def StreamListeners(self, request_iterator, context):
        async for r in self.xds.serve(request_iterator, context, delta=False, types=(LISTENER,)):
            yield r

    async def DeltaListeners(self, request_iterator, context):
        async for r in self.xds.serve(request_iterator, context, delta=True, types=(LISTENER,)):
            yield r

    async def FetchListeners(self, request, context):
        return await self.xds.fetch(request, context, LISTENER)


class ClusterDiscoveryService(cds_pb2_grpc.ClusterDiscoveryServiceServicer):
    def __init__(self, xds: XdsServer) -> None:
        self.xds = xds

    async def StreamClusters(self, request_iterator, context):
        async for r in self.xds.serve(request_iterator, context, delta=False, types=(CLUSTER,)):
            yield r

    async def DeltaClusters(self, request_iterator, context):
        async for r in self.xds.serve(request_iterator, context, delta=True, types=(CLUSTER,)):
            yield r

    async def FetchClusters(self, request, context):
        return await self.xds.fetch(request, context, CLUSTER)


class EndpointDiscoveryService(eds_pb2_grpc.EndpointDiscoveryServiceServicer):
    def __init__(self, xds: XdsServer) -> None:
        self.xds = xds

    async def StreamEndpoints(self, request_iterator, context):
        async for r in self.xds.serve(request_iterator, context, delta=False, types=(ENDPOINT,)):
            yield r

    async def DeltaEndpoints(self, request_iterator, context):
        async for r in self.xds.serve(request_iterator, context, delta=True, types=(ENDPOINT,)):
            yield r

    async def FetchEndpoints(self, request, context):
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
