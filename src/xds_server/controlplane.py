"""The embedding API: a control plane in your own program.

``ControlPlane`` is asyncio-native. ``ControlPlane.start_in_thread()`` runs one on its own
event loop in a background thread and returns a handle with blocking methods, for
synchronous programs and tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, TypeVar

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc

from .config.errors import ConfigError
from .config.load import load_paths, load_text
from .config.model import Resource
from .config.store import Change, ConfigStore
from .ports import port_is_free
from .translate import PUSH_ORDER, TranslateOptions, translate
from .xds import AggregatedDiscoveryService, ProxyStatus, SnapshotCache, StatusBoard
from .xds.status import SYNCED

log = logging.getLogger("xds_server")
T = TypeVar("T")


class PortInUseError(OSError):
    """The xDS port could not be bound."""


class ControlPlane:
    """Config store -> translation -> snapshot cache -> ADS server, wired together."""

    def __init__(
        self,
        *,
        xds_address: str = "127.0.0.1",
        xds_port: int = 0,
        options: TranslateOptions | None = None,
    ) -> None:
        self.xds_address = xds_address
        self.requested_port = xds_port
        self.options = options or TranslateOptions()
        self.store = ConfigStore()
        self.cache = SnapshotCache()
        self.board = StatusBoard()
        self.port: int | None = None
        self._server: grpc.aio.Server | None = None

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(
            AggregatedDiscoveryService(self.cache, self.board), server
        )
        target = f"{self.xds_address}:{self.requested_port}"
        port = 0
        # Checked first so that the user sees our one line, not gRPC core's log line too.
        if self.requested_port == 0 or port_is_free(self.requested_port, self.xds_address):
            with contextlib.suppress(RuntimeError):
                port = server.add_insecure_port(target)
        if not port:
            raise PortInUseError(
                f"cannot listen for xDS on {target}: address in use or not available "
                "(pick another with --xds-port, or 0 for any free port)"
            )
        await server.start()
        self._server, self.port = server, port
        log.info("xDS (ADS, state of the world) listening on %s:%d", self.xds_address, port)

    async def stop(self, grace: float | None = 0.5) -> None:
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None

    async def __aenter__(self) -> ControlPlane:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- config ----------------------------------------------------------------------------

    def apply(self, resources: Iterable[Resource]) -> list[Change]:
        """kubectl apply: all-or-nothing; raises ConfigError and changes nothing if invalid."""
        changes = self.store.apply(resources)
        self._push()
        return changes

    def apply_yaml(self, text: str, file: str = "<input>") -> list[Change]:
        return self.apply(load_text(text, file))

    def apply_paths(self, paths: Iterable[str]) -> list[Change]:
        return self.apply(load_paths(paths))

    def replace(self, resources: Iterable[Resource]) -> list[Change]:
        """Make the config exactly ``resources`` (what a watched directory holds)."""
        changes = self.store.replace(resources)
        self._push()
        return changes

    def delete(self, kind: str, name: str, namespace: str = "default") -> list[Change]:
        changes = self.store.delete([(kind, namespace, name)])
        self._push()
        return changes

    def set_options(self, options: TranslateOptions) -> None:
        self.options = options
        self._push()

    def _push(self) -> set[str]:
        changed = self.cache.set_resources(translate(self.store.resources(), self.options))
        if changed:
            log.info(
                "config revision %d: new versions for %s",
                self.store.revision,
                ", ".join(sorted(t.rsplit(".", 1)[-1] for t in changed)),
            )
        return changed

    # --- status ----------------------------------------------------------------------------

    def proxies(self) -> list[ProxyStatus]:
        return list(self.board.proxies.values())

    def synced(self, node_id: str | None = None, min_proxies: int = 1) -> bool:
        """True when at least ``min_proxies`` proxies (with that node id, if given) have
        ACKed the current version of CDS, EDS and LDS."""
        proxies = [p for p in self.proxies() if node_id is None or p.node_id == node_id]
        if len(proxies) < min_proxies:
            return False
        for p in proxies:
            for type_url in PUSH_ORDER:
                st = p.types.get(type_url)
                if st is None:
                    # Envoy asks for endpoints only once a cluster needs them.
                    if self.cache.snapshot(type_url).entries:
                        return False
                elif st.state(self.cache.version(type_url)) != SYNCED:
                    return False
        return True

    async def wait_synced(
        self, timeout: float = 10.0, node_id: str | None = None, min_proxies: int = 1
    ) -> None:
        """Wait until the proxies have ACKed the current config (readiness for tests)."""
        try:
            await self.board.wait_for(lambda: self.synced(node_id, min_proxies), timeout)
        except TimeoutError:
            raise TimeoutError(self._sync_report(timeout)) from None

    def _sync_report(self, timeout: float) -> str:
        lines = [f"proxies not in sync after {timeout:g}s:"]
        if not self.board.proxies:
            lines.append("  no proxy connected")
        for p in self.proxies():
            for type_url, st in p.types.items():
                state = st.state(self.cache.version(type_url))
                detail = f": {st.nack}" if st.nack else ""
                lines.append(f"  {p.node_id} {type_url.rsplit('.', 1)[-1]} {state}{detail}")
        return "\n".join(lines)

    # --- threads ---------------------------------------------------------------------------

    @classmethod
    def start_in_thread(cls, **kwargs: Any) -> BackgroundControlPlane:
        """Start a control plane on its own event loop in a daemon thread."""
        return BackgroundControlPlane(cls(**kwargs))


class BackgroundControlPlane:
    """Blocking handle on a ControlPlane whose event loop runs in a background thread."""

    def __init__(self, cp: ControlPlane) -> None:
        self.cp = cp
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="xds", daemon=True)
        self._thread.start()
        try:
            self._run(cp.start())
        except BaseException:
            self._shutdown_loop()
            raise

    @property
    def port(self) -> int:
        assert self.cp.port is not None
        return self.cp.port

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a plain function on the control plane's loop (its state is not thread-safe)."""

        async def _call() -> T:
            return fn(*args)

        return self._run(_call())

    def apply(self, resources: Iterable[Resource]) -> list[Change]:
        return self.call(self.cp.apply, list(resources))

    def apply_yaml(self, text: str, file: str = "<input>") -> list[Change]:
        return self.apply(load_text(text, file))

    def apply_paths(self, paths: Iterable[str]) -> list[Change]:
        return self.apply(load_paths(paths))

    def replace(self, resources: Iterable[Resource]) -> list[Change]:
        return self.call(self.cp.replace, list(resources))

    def delete(self, kind: str, name: str, namespace: str = "default") -> list[Change]:
        return self.call(self.cp.delete, kind, name, namespace)

    def get(self, kind: str, name: str, namespace: str = "default") -> Resource | None:
        return self.call(self.cp.store.get, kind, namespace, name)

    def synced(self, node_id: str | None = None, min_proxies: int = 1) -> bool:
        return self.call(self.cp.synced, node_id, min_proxies)

    def wait_synced(
        self, timeout: float = 10.0, node_id: str | None = None, min_proxies: int = 1
    ) -> None:
        self._run(self.cp.wait_synced(timeout, node_id, min_proxies))

    def proxies(self) -> list[ProxyStatus]:
        return self.call(self.cp.proxies)

    def stop(self) -> None:
        if self.loop.is_running():
            try:
                self._run(self.cp.stop(), timeout=10)
            finally:
                self._shutdown_loop()

    def _shutdown_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()

    def __enter__(self) -> BackgroundControlPlane:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["BackgroundControlPlane", "ConfigError", "ControlPlane", "PortInUseError"]
