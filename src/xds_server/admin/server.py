"""The ConfigAdmin gRPC service (proto/xds_server/admin/v1/admin.proto) over a ControlPlane.

Reads run on the control plane's event loop. Applies and deletes are parsed, validated,
saved and translated in a thread (``ControlPlane.in_thread``), so the streams and other
calls go on meanwhile; the control plane takes one change at a time, so parallel applies
are serialized, each validated against the result of the one before and pushed before the
next begins.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, NoReturn

import grpc
from google.protobuf import json_format
from google.rpc import code_pb2, status_pb2
from grpc_status import rpc_status

from ..config.errors import ConfigError, Problem
from ..config.load import load_text
from ..config.model import DEFAULT_NAMESPACE, KINDS, resource_type
from ..config.persist import Shared, StateWriteError
from ..config.store import Change, ConflictError, NotFoundError
from ..text import shorten
from ..xds.csds import nack_limit
from ..xds.status import by_connection, node_synced, proxy_rows
from ..xds.status import shorten as shorten_nack
from .v1 import admin_pb2, admin_pb2_grpc

if TYPE_CHECKING:
    from ..config.model import Resource
    from ..controlplane import ControlPlane

Context = grpc.aio.ServicerContext[Any, Any]

# The largest apply or delete one call may carry: a 10k-service config is about 10 MiB of
# YAML, past gRPC's default 4 MiB. Each document is bounded on its own (config/yamldata.py).
MAX_REQUEST_BYTES = 32 * 2**20


class ReadOnlyError(Exception):
    """Config comes from files (--config): the API must not fight with them."""


MAX_PROBLEMS = 1000  # in one answer; beyond them, how many more
FIELD_CHARS = 300  # of a problem's file, name, field and hint
MESSAGE_CHARS = 1000  # of a problem's message, and of an error's (a trailer holds 16 KiB)


def printable(text: str) -> str:
    """Control characters (a key written as "\\r") escaped: one problem is one line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else json.dumps(c)[1:-1] for c in text)


def bounded(p: Problem) -> Problem:
    """The problem with every part shortened and printable, so that a list of many stays
    small and one line each; load.py already shortens the values it quotes, this also
    covers names and fields."""

    def cut(text: str | None, limit: int = FIELD_CHARS) -> str | None:
        return printable(shorten(text, limit)) if text else text

    return replace(
        p,
        source=replace(p.source, file=cut(p.source.file) or ""),
        message=cut(p.message, MESSAGE_CHARS) or "",
        kind=cut(p.kind),
        name=cut(p.name),
        field=cut(p.field),
        hint=cut(p.hint),
    )


def problem_pb(p: Problem) -> admin_pb2.Problem:
    p = bounded(p)
    return admin_pb2.Problem(
        file=p.source.file,
        document=p.source.doc,
        line=p.source.line or 0,
        kind=p.kind or "",
        name=p.name or "",
        field=p.field or "",
        message=p.message,
        hint=p.hint or "",
        text=str(p),
    )


def change_pb(c: Change) -> admin_pb2.Change:
    return admin_pb2.Change(
        ref=admin_pb2.ResourceRef(kind=c.kind, namespace=c.namespace, name=c.name),
        action=c.action,
        resource_version=c.resource_version,
    )


def refusal_pb(code: int, problems: list[Problem]) -> admin_pb2.Refusal:
    """A refused batch, for the response body: every problem (up to MAX_PROBLEMS), which
    the 16 KiB trailer of a gRPC error could not carry."""
    shown = [problem_pb(p) for p in problems[:MAX_PROBLEMS]]
    one = len(problems) == 1
    message = shown[0].text if one else f"{len(problems)} problems, nothing changed"
    return admin_pb2.Refusal(
        code=code, message=message, problems=shown, more=max(0, len(problems) - MAX_PROBLEMS)
    )


async def _abort(context: Context, code: int, message: str) -> NoReturn:
    """Fail the call with a short message: it travels in a trailer, capped at 16 KiB."""
    status = status_pb2.Status(code=code, message=printable(shorten(message, MESSAGE_CHARS)))
    await context.abort_with_status(rpc_status.to_status(status))
    raise AssertionError("abort_with_status returned")  # it raises


class ConfigAdminService(admin_pb2_grpc.ConfigAdminServicer):
    def __init__(self, cp: ControlPlane, *, read_only: str | None = None) -> None:
        self.cp = cp
        self.read_only = read_only  # why writes are refused, or None

    async def _guard(
        self, context: Context, call: Callable[[], tuple[list[admin_pb2.Change], int]]
    ) -> tuple[list[admin_pb2.Change], int, admin_pb2.Refusal | None]:
        """The changes ``call`` made (as protos) and their revision, or why it made none: a
        refusal for the response body when the input is at fault (see admin.proto), a gRPC
        error otherwise."""
        if self.read_only:
            await _abort(context, code_pb2.FAILED_PRECONDITION, self.read_only)
        try:  # parsed, validated, saved and translated off the event loop: streams go on
            changes, revision = await self.cp.in_thread(call)
            return changes, revision, None
        except ConfigError as e:
            return [], self.cp.store.revision, refusal_pb(code_pb2.INVALID_ARGUMENT, e.problems)
        except ConflictError as e:
            return [], self.cp.store.revision, refusal_pb(code_pb2.ABORTED, e.problems)
        except NotFoundError as e:
            await _abort(context, code_pb2.NOT_FOUND, str(e))
        except StateWriteError as e:  # disk full or read-only: the change was not applied
            # In the body, like any refusal: UNAVAILABLE as a gRPC status would read as "no
            # server there", and FAILED_PRECONDITION is the read-only server's (--config).
            message = printable(shorten(str(e), MESSAGE_CHARS))
            return (
                [],
                self.cp.store.revision,
                admin_pb2.Refusal(code=code_pb2.UNAVAILABLE, message=message),
            )

    @staticmethod
    def _parse(documents: Iterable[admin_pb2.Document], namespace: str) -> list[Resource]:
        resources: list[Resource] = []
        problems: list[Problem] = []
        for doc in documents:
            try:
                resources += load_text(doc.yaml, doc.file or "<stdin>", namespace or None)
            except ConfigError as e:
                problems += e.problems
        if problems:
            raise ConfigError(problems)
        return resources

    async def Apply(
        self, request: admin_pb2.ApplyRequest, context: Context
    ) -> admin_pb2.ApplyResponse:
        warnings: list[str] = []

        def call() -> tuple[list[admin_pb2.Change], int]:
            resources = self._parse(request.documents, request.namespace)
            with self.cp.lock:  # the revision this change made, not a later one's
                changes = self.cp.apply(resources, dry_run=request.dry_run)
                revision = self.cp.store.revision
            warnings.extend(printable(shorten(str(w), MESSAGE_CHARS)) for w in changes.warnings)
            return [change_pb(c) for c in changes], revision

        changes, revision, refusal = await self._guard(context, call)
        return admin_pb2.ApplyResponse(
            changes=changes, revision=revision, refusal=refusal, warnings=warnings
        )

    async def Delete(
        self, request: admin_pb2.DeleteRequest, context: Context
    ) -> admin_pb2.DeleteResponse:
        def call() -> tuple[list[admin_pb2.Change], int]:
            keys = [r.key for r in self._parse(request.documents, request.namespace)]
            for ref in request.refs:
                keys.append((ref.kind, ref.namespace or DEFAULT_NAMESPACE, ref.name))
            with self.cp.lock:
                changes = self.cp.delete_keys(
                    keys, ignore_not_found=request.ignore_not_found, dry_run=request.dry_run
                )
                revision = self.cp.store.revision
            return [change_pb(c) for c in changes], revision

        changes, revision, refusal = await self._guard(context, call)
        return admin_pb2.DeleteResponse(
            changes=changes,
            revision=revision,
            refusal=refusal,
        )

    async def Get(self, request: admin_pb2.GetRequest, context: Context) -> admin_pb2.GetResponse:
        store = self.cp.store
        if request.kind and request.kind not in KINDS:
            await _abort(context, code_pb2.INVALID_ARGUMENT, f"unknown kind {request.kind!r}")
        if request.kind and request.namespace and request.name:  # one look-up, not a scan
            one = store.get(request.kind, request.namespace, request.name)
            found = [one] if one is not None else []
        else:
            found = [
                r
                for r in store.of_kind(request.kind or None)
                if (not request.namespace or r.meta.namespace == request.namespace)
                and (not request.name or r.meta.name == request.name)
            ]
        if request.name and not found:
            ns = request.namespace or DEFAULT_NAMESPACE
            await _abort(
                context,
                code_pb2.NOT_FOUND,
                f'{resource_type(request.kind)} "{request.name}" not found in namespace "{ns}"',
            )
        out = []
        for r in found:
            st = store.state(r.key)
            out.append(
                admin_pb2.Resource(
                    ref=admin_pb2.ResourceRef(
                        kind=r.kind, namespace=r.meta.namespace, name=r.meta.name
                    ),
                    json=json.dumps(store.document(r.key)),
                    resource_version=st.resource_version,
                    generation=st.generation,
                    creation_timestamp=st.created,
                )
            )
        return admin_pb2.GetResponse(resources=out, revision=store.revision)

    async def ProxyStatus(
        self, request: admin_pb2.ProxyStatusRequest, context: Context
    ) -> admin_pb2.ProxyStatusResponse:
        # One Proxy per connection (two with one node id are two rows), with NACK texts cut
        # to what fits gRPC's 4 MiB however many proxies sent how much.
        connections = by_connection(self.cp.proxies())
        limit = nack_limit(connections, per_resource=False)
        proxies = []
        for streams in connections:
            (row,) = proxy_rows(streams)
            types = []
            for type_url, state in sorted(row.states.items()):
                stream = next(p for p in reversed(streams) if type_url in p.types)
                st = stream.types[type_url]
                types.append(
                    admin_pb2.TypeStatus(
                        type_url=type_url,
                        state=state,
                        sent_version=st.sent_version or "",
                        acked_version=st.acked_version or "",
                        error=shorten_nack(row.errors.get(type_url, ""), limit),
                        last_change=st.last_change or 0.0,
                    )
                )
            proxies.append(
                admin_pb2.Proxy(
                    node_id=row.name,
                    node_cluster=row.cluster,
                    peer=row.peer,
                    connected_since=row.connected_since or 0.0,
                    types=types,
                    synced=node_synced(streams),
                    api=row.api,
                    version=row.version,
                )
            )
        replicas = []
        if isinstance(self.cp.state, Shared):
            me = self.cp.replica
            others = [r for r in self.cp.state.replicas() if r.id != me.id]
            replicas = [admin_pb2.Replica(id=r.id, admin=r.admin, xds=r.xds) for r in [me, *others]]
        return admin_pb2.ProxyStatusResponse(
            proxies=proxies, versions=self.cp.cache.versions(), replicas=replicas
        )

    async def ProxyConfig(
        self, request: admin_pb2.ProxyConfigRequest, context: Context
    ) -> admin_pb2.ProxyConfigResponse:
        if not any(p.node_id == request.node_id for p in self.cp.proxies()):
            known = ", ".join(sorted({p.node_id for p in self.cp.proxies()})) or "none"
            await _abort(
                context,
                code_pb2.NOT_FOUND,
                f"no proxy {request.node_id!r} is connected (connected: {known})",
            )
        version, entries = self.cp.proxy_config(request.node_id, request.type_url)
        # The node as the proxy's newest stream sent it (istioctl proxy-config bootstrap).
        node = next(
            (
                p.node
                for p in sorted(self.cp.proxies(), key=lambda p: -p.stream_id)
                if p.node_id == request.node_id and p.node is not None
            ),
            None,
        )
        node_json = (
            json_format.MessageToJson(node, preserving_proto_field_name=True, indent=None)
            if node is not None
            else ""
        )
        return admin_pb2.ProxyConfigResponse(
            node_json=node_json,
            node_id=request.node_id,
            type_url=request.type_url,
            version=version,
            names=[name for name, _ in entries],
            json=[
                json_format.MessageToJson(msg, preserving_proto_field_name=True, indent=None)
                for _, msg in entries
            ],
        )


def add_to_server(server: grpc.aio.Server, service: ConfigAdminService) -> None:
    admin_pb2_grpc.add_ConfigAdminServicer_to_server(service, server)
