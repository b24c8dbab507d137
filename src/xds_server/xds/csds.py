"""Client Status Discovery Service (envoy.service.status.v3): the status board over the
standard API, so existing CSDS tools (and ``xdsctl``, from another process) can read it.

One ``ClientConfig`` per proxy (its streams on one connection merged: two connections
with one node id are two configs), with one ``GenericXdsConfig`` per resource of the last
response of each type: type URL, name, version of that response, the resource itself
(unless ``exclude_resource_contents``), ``config_status`` (SYNCED / STALE / NOT_SENT /
ERROR), ``client_status`` (ACKED, NACKED, REQUESTED) and, for a NACK, ``error_state`` with
the proxy's own error text. A type that has no resources appears once with an empty name,
so its status is still visible. The NACK texts are the heads the streams keep
(``status.NACK_TEXT_LIMIT``), cut further when many (or one on many resources) would take
more than ``ANSWER_BUDGET``, so that the answer fits gRPC's default 4 MiB however much the
proxies sent (its resources' contents are another matter: ``exclude_resource_contents``).

The returned node is the one the proxy sent, plus a ``metadata.xds_server`` struct of ours:
``connected_since`` (Unix time), ``api`` (e.g. "ADS Delta"), ``group`` (the profile its
config was translated for), ``peer`` and ``connection`` (the server's id for it: its
first stream's), which CSDS has no field for.

Matching: ``node_matchers[].node_id`` (exact, prefix, suffix, contains, safe_regex;
``ignore_case``). Metadata matchers are not supported (UNIMPLEMENTED).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable
from typing import Any

import grpc
from envoy.admin.v3 import config_dump_shared_pb2 as dump_pb2
from envoy.config.core.v3 import base_pb2
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc
from envoy.type.matcher.v3 import node_pb2, string_pb2
from google.protobuf import timestamp_pb2

from .cache import Entry
from .status import (
    NACKED,
    NOT_SENT,
    STALE,
    SYNCED,
    ProxyRow,
    ProxyStatus,
    StatusBoard,
    by_connection,
    client_version,
    fit_texts,
    shorten,
)

# The Envoy API modules have no type information: its messages are Any to mypy.
Context = grpc.aio.ServicerContext[Any, Any]

# What the NACK texts of one answer may take in all (gRPC's default limit is 4 MiB).
ANSWER_BUDGET = 2 << 20

_CONFIG_STATUS = {
    SYNCED: csds_pb2.SYNCED,
    STALE: csds_pb2.STALE,
    NOT_SENT: csds_pb2.NOT_SENT,
    NACKED: csds_pb2.ERROR,
}
_STATE = {v: k for k, v in _CONFIG_STATUS.items()}
_WORST_FIRST = (NACKED, STALE, NOT_SENT, SYNCED)


def _timestamp(t: float | None) -> timestamp_pb2.Timestamp | None:
    if t is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(t * 1e9))
    return ts


def string_matches(m: string_pb2.StringMatcher, value: str) -> bool:
    """Envoy's StringMatcher, without the extension matchers."""
    kind = m.WhichOneof("match_pattern")
    if kind == "safe_regex":
        flags = re.IGNORECASE if m.ignore_case else 0
        return re.fullmatch(m.safe_regex.regex, value, flags) is not None
    pattern = getattr(m, kind) if kind else ""
    if m.ignore_case:
        pattern, value = pattern.lower(), value.lower()
    if kind == "exact":
        return value == pattern
    if kind == "prefix":
        return value.startswith(pattern)
    if kind == "suffix":
        return value.endswith(pattern)
    if kind == "contains":
        return pattern in value
    return True


def _selected(matchers: list[node_pb2.NodeMatcher], node_id: str) -> bool:
    return not matchers or any(
        not m.HasField("node_id") or string_matches(m.node_id, node_id) for m in matchers
    )


def _node(streams: list[ProxyStatus]) -> base_pb2.Node:
    newest = streams[-1]
    node = base_pb2.Node()
    if newest.node is not None:
        node.CopyFrom(newest.node)
    node.id = newest.node_id
    node.cluster = newest.node_cluster
    ext = node.metadata.fields["xds_server"].struct_value
    ext.update(
        {
            "connected_since": min(p.connected_since for p in streams),
            "api": ", ".join(dict.fromkeys(p.api for p in streams)),
            "group": newest.group,
            "peer": newest.peer,
            "connection": streams[0].stream_id,
        }
    )
    return node


def client_config(
    streams: list[ProxyStatus], include_contents: bool = True, nack_limit: int | None = None
) -> csds_pb2.ClientConfig:
    """One proxy's status as CSDS says it (NACK texts cut to ``nack_limit`` if given)."""
    config = csds_pb2.ClientConfig(node=_node(streams))
    for p in streams:
        for type_url, st in sorted(p.types.items()):
            state = p.state(type_url)
            if state == SYNCED:
                client = dump_pb2.ACKED
            elif state == NACKED:
                client = dump_pb2.NACKED
            elif state == STALE and not st.in_flight:
                client = dump_pb2.ACKED  # ACKed an older version; a newer one is not sent yet
            else:
                client = dump_pb2.REQUESTED
            error = None
            if st.nack is not None:
                error = dump_pb2.UpdateFailureState(
                    details=st.nack if nack_limit is None else shorten(st.nack, nack_limit),
                    version_info=st.sent_version or "",
                    last_update_attempt=_timestamp(st.last_change),
                )
            entries: list[Entry | None] = [st.sent[n] for n in sorted(st.sent)] or [None]
            for entry in entries:
                generic = csds_pb2.ClientConfig.GenericXdsConfig(
                    type_url=type_url,
                    name=entry.name if entry else "",
                    version_info=st.sent_version or "",
                    last_updated=_timestamp(st.last_change),
                    config_status=_CONFIG_STATUS[state],
                    client_status=client,
                    error_state=error,
                )
                if include_contents and entry is not None and entry.any is not None:
                    generic.xds_config.CopyFrom(entry.any)
                config.generic_xds_configs.append(generic)
    return config


def nack_limit(connections: Iterable[list[ProxyStatus]], per_resource: bool) -> int:
    """How many characters of each NACK text one status answer over ``connections`` may
    carry, so that all of them fit ``ANSWER_BUDGET`` (``status.fit_texts``): CSDS carries
    a type's text with each of its resources (``per_resource``), proxy-status once."""
    texts = [
        (st.nack, (len(st.sent) or 1) if per_resource else 1)
        for streams in connections
        for p in streams
        for st in p.types.values()
        if st.nack
    ]
    return fit_texts(texts, ANSWER_BUDGET)


def client_status(
    board: StatusBoard, request: csds_pb2.ClientStatusRequest
) -> csds_pb2.ClientStatusResponse:
    """The CSDS answer for the proxies the request's node matchers select."""
    response = csds_pb2.ClientStatusResponse()
    matchers = list(request.node_matchers)
    chosen = [
        [s.status() for s in streams]  # snapshots of the chosen ones only
        for streams in by_connection(board.streams())
        if _selected(matchers, streams[0].node_id or streams[0].peer)
    ]
    limit = nack_limit(chosen, per_resource=True)
    for streams in chosen:
        response.config.append(client_config(streams, not request.exclude_resource_contents, limit))
    return response


def rows_from_csds(response: csds_pb2.ClientStatusResponse) -> list[ProxyRow]:
    """proxy-status rows from a CSDS answer, for ``format_proxy_status`` in a client."""
    rows = []
    for config in response.config:
        states: dict[str, set[str]] = {}
        errors: dict[str, str] = {}
        for g in config.generic_xds_configs:
            states.setdefault(g.type_url, set()).add(_STATE.get(g.config_status, STALE))
            if g.HasField("error_state") and g.error_state.details:
                errors[g.type_url] = g.error_state.details
        ext = config.node.metadata.fields["xds_server"].struct_value.fields
        since = ext["connected_since"].number_value if "connected_since" in ext else None
        rows.append(
            ProxyRow(
                name=config.node.id or (ext["peer"].string_value if "peer" in ext else ""),
                cluster=config.node.cluster,
                states={
                    t: next(s for s in _WORST_FIRST if s in found) for t, found in states.items()
                },
                errors=errors,
                api=ext["api"].string_value if "api" in ext else "",
                version=client_version(config.node),
                connected_since=since,
                peer=ext["peer"].string_value if "peer" in ext else "",
                connection=int(ext["connection"].number_value) if "connection" in ext else 0,
            )
        )
    return rows


class ClientStatusDiscoveryService(csds_pb2_grpc.ClientStatusDiscoveryServiceServicer):  # type: ignore[misc]
    """CSDS over the status board: one answer per request, Fetch or on a stream."""

    def __init__(self, board: StatusBoard) -> None:
        self.board = board

    async def _check(self, request: csds_pb2.ClientStatusRequest, context: Context) -> None:
        if any(m.node_metadatas for m in request.node_matchers):
            await context.abort(
                grpc.StatusCode.UNIMPLEMENTED, "node_metadatas matchers are not supported"
            )

    async def FetchClientStatus(
        self, request: csds_pb2.ClientStatusRequest, context: Context
    ) -> csds_pb2.ClientStatusResponse:
        await self._check(request, context)
        return client_status(self.board, request)

    async def StreamClientStatus(
        self, request_iterator: AsyncIterator[csds_pb2.ClientStatusRequest], context: Context
    ) -> AsyncIterator[csds_pb2.ClientStatusResponse]:
        async for request in request_iterator:
            await self._check(request, context)
            yield client_status(self.board, request)


def add_csds(server: grpc.aio.Server, service: ClientStatusDiscoveryService) -> None:
    csds_pb2_grpc.add_ClientStatusDiscoveryServiceServicer_to_server(service, server)
