"""The embedding API: a control plane in your own program.

``ControlPlane`` is asyncio-native. ``ControlPlane.start_in_thread()`` runs one on its own
event loop in a background thread and returns a handle with blocking methods, for
synchronous programs and tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any, TypeVar

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc
from google.protobuf import symbol_database
from google.protobuf.message import Message

from .config.errors import ConfigError
from .config.load import load_paths, load_text
from .config.model import Resource
from .config.persist import StateDir
from .config.store import Change, ConfigStore
from .ports import port_is_free
from .translate import PUSH_ORDER, TranslateOptions, translate
from .xds import AggregatedDiscoveryService, ProxyStatus, SnapshotCache, StatusBoard
from .xds.status import SYNCED

log = logging.getLogger("xds_server")
T = TypeVar("T")


class PortInUseError(OSError):
    """The xDS port could not be bound."""


def _bind(server: grpc.aio.Server, address: str, port: int, what: str, flag: str) -> int:
    target = f"{address}:{port}"
    bound = 0
    # Checked first so that the user sees our one line, not gRPC core's log line too.
    if port == 0 or port_is_free(port, address):
        with contextlib.suppress(RuntimeError):
            bound = server.add_insecure_port(target)
    if not bound:
        raise PortInUseError(
            f"cannot listen for {what} on {target}: address in use or not available "
            f"(pick another with {flag}, or 0 for any free port)"
        )
    return bound


class ControlPlane:
    """Config store -> translation -> snapshot cache -> ADS server, wired together."""

    def __init__(
        self,
        *,
        xds_address: str = "127.0.0.1",
        xds_port: int = 0,
        options: TranslateOptions | None = None,
        state_dir: str | os.PathLike[str] | None = None,
        admin_address: str = "127.0.0.1",
        admin_port: int | None = None,
        read_only: str | None = None,
    ) -> None:
        """``state_dir``: where applied config is kept across restarts (None: memory only).
        ``admin_port``: serve the admin API (xdsctl) there; None: no admin API.
        ``read_only``: refuse admin writes, with this reason (config comes from files)."""
        self.xds_address = xds_address
        self.requested_port = xds_port
        self.options = options or TranslateOptions()
        self.state = StateDir(state_dir) if state_dir is not None else None
        self.store = ConfigStore(persist=self.state.save if self.state else None)
        self.cache = SnapshotCache()
        self.board = StatusBoard()
        self.port: int | None = None
        self.admin_address = admin_address
        self.requested_admin_port = admin_port
        self.admin_port: int | None = None
        self.read_only = read_only
        self._servers: list[grpc.aio.Server] = []

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the saved state (if any), then serve xDS and, if asked, the admin API.
        Raises ConfigError if the saved state is invalid, PortInUseError if a port is."""
        if self.state is not None:
            self.restore(self.state.load())
        xds = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(
            AggregatedDiscoveryService(self.cache, self.board), xds
        )
        self.port = _bind(xds, self.xds_address, self.requested_port, "xDS", "--xds-port")
        servers = [xds]
        if self.requested_admin_port is not None:
            from .admin.server import ConfigAdminService, add_to_server

            admin = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
            add_to_server(admin, ConfigAdminService(self, read_only=self.read_only))
            self.admin_port = _bind(
                admin,
                self.admin_address,
                self.requested_admin_port,
                "the admin API",
                "--admin-port",
            )
            servers.append(admin)
        for server in servers:
            await server.start()
        self._servers = servers
        log.info("xDS (ADS, state of the world) listening on %s:%d", self.xds_address, self.port)
        if self.admin_port:
            log.info("admin API listening on %s:%d", self.admin_address, self.admin_port)

    async def stop(self, grace: float | None = 0.5) -> None:
        for server in self._servers:
            await server.stop(grace)
        self._servers = []

    async def __aenter__(self) -> ControlPlane:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- config ----------------------------------------------------------------------------

    def apply(self, resources: Iterable[Resource], *, dry_run: bool = False) -> list[Change]:
        """kubectl apply: all-or-nothing; raises ConfigError (or ConflictError for a stale
        resourceVersion) and changes nothing if the batch is not good."""
        changes = self.store.apply(resources, dry_run=dry_run)
        if not dry_run:
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

    def restore(self, resources: Iterable[Resource]) -> list[Change]:
        """Load saved resources, keeping their resourceVersions (start-up from a state dir)."""
        changes = self.store.restore(resources)
        self._push()
        return changes

    def delete(self, kind: str, name: str, namespace: str = "default") -> list[Change]:
        return self.delete_keys([(kind, namespace, name)])

    def delete_keys(
        self, keys: Iterable[tuple[str, str, str]], *, ignore_not_found: bool = False
    ) -> list[Change]:
        """kubectl delete: all or none; a missing resource raises NotFoundError."""
        changes = self.store.delete(keys, ignore_not_found=ignore_not_found)
        self._push()
        return changes

    async def watch(
        self, stop: asyncio.Event, paths: Iterable[str | os.PathLike[str]] = ()
    ) -> None:
        """Reload when the config changes on disk: the state directory's file, or else the
        given files and directories. The files hold the whole config, so a reload replaces it; a
        bad change is logged and the last good config keeps being served."""
        from watchfiles import awatch

        if self.state is not None:
            state = self.state
            watched, load = [state.path], state.load
            only = str(state.file)
        else:
            watched = [Path(p) for p in paths]
            only = None

            def load() -> list[Resource]:
                return load_paths(watched)

        async for _ in awatch(
            *watched,
            stop_event=stop,
            debounce=50,
            step=20,
            watch_filter=(lambda _c, path: path == only) if only else None,
        ):
            try:
                applied = self.replace(load())
            except ConfigError as e:
                log.error(
                    "rejected config change, still serving revision %d:\n%s",
                    self.store.revision,
                    e,
                )
                continue
            changed = [str(c) for c in applied if c.action != "unchanged"]
            if changed:
                log.info("reloaded revision %d: %s", self.store.revision, "; ".join(changed))

    def proxy_config(self, node_id: str, type_url: str) -> tuple[str, list[tuple[str, Message]]]:
        """The resources of one type the control plane has for a proxy (the names it asked
        for, or all for a wildcard subscription), unpacked, and their version."""
        proxy = next(p for p in self.proxies() if p.node_id == node_id)
        st = proxy.types.get(type_url)
        snap = self.cache.snapshot(type_url)
        if st is None:
            return "", []
        wanted = sorted(snap.entries) if st.names is None else sorted(st.names)
        out = []
        for name in wanted:
            entry = snap.entries.get(name)
            if entry is not None:
                cls = symbol_database.Default().GetSymbol(type_url.split("/", 1)[1])
                msg = cls()
                entry.any.Unpack(msg)
                out.append((name, msg))
        return snap.version, out

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
