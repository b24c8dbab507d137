"""A blocking client of the admin API, turning gRPC failures into errors a CLI can print."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol, TypeVar, cast

import grpc
from grpc_status import rpc_status

from ..waiting import wait_until
from .v1 import admin_pb2, admin_pb2_grpc

DEFAULT_ADMIN = "127.0.0.1:18001"
# Answers (a `get` of a big config) may be larger than gRPC's default 4 MiB; requests are
# held to the server's max receive message length.
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 256 * 1024 * 1024)]
_CODES = {c.value[0]: c for c in grpc.StatusCode}
_TOO_LARGE = re.compile(r"larger than max \((\d+) vs\. (\d+)\)")

_Request = TypeVar("_Request")
_Response = TypeVar("_Response")
# The responses that can carry a refusal (see AdminClient._refused).
_Refusable = TypeVar("_Refusable", admin_pb2.ApplyResponse, admin_pb2.DeleteResponse)

if TYPE_CHECKING:
    from grpc import UnaryUnaryMultiCallable as _Unary

    class _ConfigAdminStub(Protocol):
        """The types of admin_pb2_grpc.ConfigAdminStub's methods, which the generated (and
        unannotated) module does not say."""

        Apply: _Unary[admin_pb2.ApplyRequest, admin_pb2.ApplyResponse]
        Delete: _Unary[admin_pb2.DeleteRequest, admin_pb2.DeleteResponse]
        Get: _Unary[admin_pb2.GetRequest, admin_pb2.GetResponse]
        ProxyStatus: _Unary[admin_pb2.ProxyStatusRequest, admin_pb2.ProxyStatusResponse]
        ProxyConfig: _Unary[admin_pb2.ProxyConfigRequest, admin_pb2.ProxyConfigResponse]


class AdminError(Exception):
    """The server refused or failed a call. ``problems``: the input problems, if any (as
    many as the server sends, ``more`` the count it left out)."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        problems: Iterable[admin_pb2.Problem] = (),
        more: int = 0,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.problems: list[admin_pb2.Problem] = list(problems)
        self.more = more

    def lines(self) -> list[str]:
        """One line per problem (the message if there are none), then how many more."""
        out = [p.text for p in self.problems] or [self.message]
        if self.more:
            out.append(f"... and {self.more} more")
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())


class ServerUnavailable(AdminError):
    """Nothing answers at the address: the server is not running (or not there)."""


class AdminClient:
    def __init__(self, target: str = DEFAULT_ADMIN, timeout: float = 10.0) -> None:
        self.target = target
        self.timeout = timeout
        self.channel = grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
        self.stub: _ConfigAdminStub = admin_pb2_grpc.ConfigAdminStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: _Unary[_Request, _Response], request: _Request) -> _Response:
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as e:
            raise self._error(e) from None

    def _error(self, e: grpc.RpcError) -> AdminError:
        code = e.code()
        if code == grpc.StatusCode.UNAVAILABLE:
            return ServerUnavailable(code, f"cannot connect to the control plane at {self.target}")
        too_large = _TOO_LARGE.search(e.details() or "")
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED and too_large:
            size, limit = (int(n) / 2**20 for n in too_large.groups())
            return AdminError(
                code,
                f"the request is {size:.1f} MiB, more than the {limit:.0f} MiB the control "
                "plane accepts in one call: apply the files in smaller batches",
            )
        problems: list[admin_pb2.Problem] = []
        # The RpcErrors of a client call are its grpc.Call too (grpc._channel._InactiveRpcError).
        status = rpc_status.from_call(cast(grpc.Call, e))
        if status is not None:
            for detail in status.details:
                plist = admin_pb2.ProblemList()
                if detail.Unpack(plist):
                    problems += plist.problems
        return AdminError(code, e.details() or code.name, problems)

    # --- operations ------------------------------------------------------------------------

    def apply(
        self,
        documents: Iterable[tuple[str, str]],
        *,
        dry_run: bool = False,
        namespace: str = "",
    ) -> admin_pb2.ApplyResponse:
        """``documents``: (file name for errors, YAML text); ``namespace``: as ``kubectl
        apply -n`` (empty: each document's own, or default)."""
        docs = [admin_pb2.Document(file=f, yaml=t) for f, t in documents]
        request = admin_pb2.ApplyRequest(documents=docs, dry_run=dry_run, namespace=namespace)
        return self._refused(self._call(self.stub.Apply, request))

    @staticmethod
    def _refused(response: _Refusable) -> _Refusable:
        """The response, or AdminError if it carries a refusal (see admin.proto: problems
        travel in the body, not in the 16 KiB trailer)."""
        if response.HasField("refusal"):
            r = response.refusal
            code = _CODES.get(r.code, grpc.StatusCode.UNKNOWN)
            raise AdminError(code, r.message, r.problems, r.more)
        return response

    def delete(
        self,
        documents: Iterable[tuple[str, str]] = (),
        refs: Iterable[tuple[str, str, str]] = (),
        *,
        ignore_not_found: bool = False,
        dry_run: bool = False,
        namespace: str = "",
    ) -> admin_pb2.DeleteResponse:
        request = admin_pb2.DeleteRequest(
            namespace=namespace,
            documents=[admin_pb2.Document(file=f, yaml=t) for f, t in documents],
            refs=[admin_pb2.ResourceRef(kind=k, namespace=ns, name=n) for k, ns, n in refs],
            ignore_not_found=ignore_not_found,
            dry_run=dry_run,
        )
        return self._refused(self._call(self.stub.Delete, request))

    def get(self, kind: str = "", name: str = "", namespace: str = "") -> admin_pb2.GetResponse:
        request = admin_pb2.GetRequest(kind=kind, name=name, namespace=namespace)
        return self._call(self.stub.Get, request)

    def proxy_status(self) -> admin_pb2.ProxyStatusResponse:
        return self._call(self.stub.ProxyStatus, admin_pb2.ProxyStatusRequest())

    def wait_synced(
        self, node_id: str | None = None, timeout: float = 20.0, min_proxies: int = 1
    ) -> admin_pb2.ProxyStatusResponse:
        """Poll proxy-status until the proxies (with that node id) have ACKed the current
        config; also waits through a server restart. Raises TimeoutError with the status."""

        def synced(status: admin_pb2.ProxyStatusResponse) -> bool:
            mine = [p for p in status.proxies if node_id is None or p.node_id == node_id]
            return len(mine) >= min_proxies and all(p.synced for p in mine)

        return wait_until(
            self.proxy_status,
            timeout,
            check=synced,
            interval=0.02,
            ignore=ServerUnavailable,
            what="the proxies in sync" if node_id is None else f"{node_id!r}'s proxies in sync",
        )

    def proxy_config(self, node_id: str, type_url: str) -> admin_pb2.ProxyConfigResponse:
        request = admin_pb2.ProxyConfigRequest(node_id=node_id, type_url=type_url)
        return self._call(self.stub.ProxyConfig, request)
