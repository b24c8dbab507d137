"""The embedding API: a control plane in your own program.

``ControlPlane`` is asyncio-native. ``ControlPlane.start_in_thread()`` runs one on its own
event loop in a background thread and returns a handle with blocking methods, for
synchronous programs and tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import os
import socket
import threading
from collections.abc import Callable, Coroutine, Hashable, Iterable
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import grpc
from google.protobuf import symbol_database
from google.protobuf.message import Message

from .config.errors import ConfigError, Problem, Source
from .config.index import ConfigIndex
from .config.load import load_paths, load_text
from .config.model import Resource
from .config.persist import (
    Durable,
    Replica,
    Replicated,
    Shared,
    StateWriteError,
    StoreBehindError,
    open_durable,
)
from .config.results import Run
from .config.store import Applied, Change, ConfigStore, Proposal
from .ports import port_is_free
from .translate import (
    PUSH_ORDER,
    Assembler,
    NodeProfile,
    TranslateOptions,
    Update,
    translation_key,
)
from .xds import ProxyStatus, SnapshotCache, StatusBoard, add_xds_services
from .xds.cache import Snapshots, TypeSnapshot
from .xds.metrics import XdsMetrics

log = logging.getLogger("xds_server")
T = TypeVar("T")


class Translation(NamedTuple):
    """A config translated for one kind of proxy (a scope: see translation_key), not yet
    committed or in the cache; ``profiles``: the connected ones it serves."""

    assembler: Assembler
    update: Update
    profiles: list[NodeProfile]


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


def _collector_paused(method: Callable[..., T]) -> Callable[..., T]:
    """A config change allocates much and leaves no cyclic garbage (checked: a collection
    after hundreds of applies, rejected ones too, finds nothing), and the cyclic
    collector's passes over the growing heap took a quarter of its time. Worse, a pass is
    one C call that holds the GIL: run in the change's thread over a 10k-service heap, it
    stalls every stream for a second. So the collector is paused for the change, and what
    the change left behind is frozen (``gc.freeze``: moved out of the collector's sight)
    before it runs again, so that its later passes see only newer objects."""

    @functools.wraps(method)
    def paused(*args: Any, **kwargs: Any) -> T:
        if not gc.isenabled():
            return method(*args, **kwargs)
        gc.disable()
        try:
            return method(*args, **kwargs)
        finally:
            gc.freeze()
            gc.enable()

    return paused


def _of_scope(scope: Hashable, slot: Hashable) -> bool:
    """Whether a result slot is one of a translation's (see Assembler)."""
    return isinstance(slot, tuple) and slot[0] == scope


def _dialable(address: str) -> str:
    """An address others can reach this host at: a wildcard stands for the host's name."""
    return socket.gethostname() if address in ("0.0.0.0", "::", "") else address


def _log_changes(applied: list[Change], what: str) -> None:
    """One line for a change that came from elsewhere than an apply (a file, a replica)."""
    changed = [str(c) for c in applied if c.action != "unchanged"]
    if changed:
        log.info("%s: %s", what, "; ".join(changed))


class ControlPlane:
    """Config store -> translation -> snapshot cache -> ADS server, wired together."""

    def __init__(
        self,
        *,
        xds_address: str = "127.0.0.1",
        xds_port: int = 0,
        options: TranslateOptions | None = None,
        state_dir: str | os.PathLike[str] | None = None,
        store: str | None = None,
        admin_address: str = "127.0.0.1",
        admin_port: int | None = None,
        read_only: str | None = None,
        metrics_address: str = "127.0.0.1",
        metrics_port: int | None = None,
    ) -> None:
        """``state_dir``: where applied config is kept across restarts (its ``state.db``);
        ``store``: a durable store by URL instead (``sqlite:PATH``; see config/persist.py);
        neither: memory only.
        ``admin_port``: serve the admin API (xdsctl) there; None: no admin API.
        ``read_only``: refuse admin writes, with this reason (config comes from files).
        ``metrics_port``: serve Prometheus metrics (/metrics) there; None: off, 0: any free."""
        self.xds_address = xds_address
        self.requested_port = xds_port
        self.options = options or TranslateOptions()
        self.state: Durable | None = open_durable(state_dir, store)
        self.store = ConfigStore(
            persist=self.state.save if self.state else None, prepare=self._prepare
        )
        self.cache = SnapshotCache()
        self.cache.on_new.append(self._profile_wanted)
        self.board = StatusBoard()
        self.metrics = XdsMetrics(self.cache, self.board)
        self.metrics_address = metrics_address
        self.requested_metrics_port = metrics_port
        self.metrics_port: int | None = None
        self.port: int | None = None
        self.admin_address = admin_address
        self.requested_admin_port = admin_port
        self.admin_port: int | None = None
        self.read_only = read_only
        self._servers: list[grpc.aio.Server] = []
        # The committed translation per kind of proxy connected, by translation_key.
        self._assemblers: dict[Hashable, Assembler] = {}
        self._prepared: dict[Hashable, Translation] | None = None  # the proposal's
        # One change at a time, whichever thread it comes from (the admin API and the file
        # watcher work them out off the event loop).
        self.lock = threading.RLock()
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind every port, then load the saved state (if any), then serve xDS and, if asked,
        the admin API and metrics. Ports come first so that a taken one fails before anything
        touches the disk (the state directory is not even created). Raises ConfigError if
        the saved state is invalid, StateError (persist.py) if it is cut short or empty or
        the directory unusable, PortInUseError if a port is taken."""
        self._loop = asyncio.get_running_loop()
        self.cache.bind(self._loop)
        xds = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        add_xds_services(xds, self.cache, self.board, self.metrics)
        servers = [xds]
        try:
            self.port = _bind(xds, self.xds_address, self.requested_port, "xDS", "--xds-port")
            if self.requested_admin_port is not None:
                from .admin.server import MAX_REQUEST_BYTES, ConfigAdminService, add_to_server

                admin = grpc.aio.server(
                    options=[
                        ("grpc.so_reuseport", 0),
                        ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
                    ]
                )
                servers.append(admin)
                add_to_server(admin, ConfigAdminService(self, read_only=self.read_only))
                self.admin_port = _bind(
                    admin,
                    self.admin_address,
                    self.requested_admin_port,
                    "the admin API",
                    "--admin-port",
                )
            if self.requested_metrics_port is not None:  # metrics of nothing, until restored
                self.metrics_port = self._serve_metrics(self.requested_metrics_port)
            if self.state is not None:  # bound, not serving yet: no proxy sees a half state
                self.load_state()
                if isinstance(self.state, Shared):
                    self.state.follow(self._take)
                    self.state.announce(self.replica)
            for server in servers:
                await server.start()
        except BaseException:
            for server in servers:  # release the bound ports
                await server.stop(None)
            self.metrics.close()
            raise
        self._servers = servers
        log.info(
            "xDS (ADS and per-type, SotW and Delta; CSDS) listening on %s:%d",
            self.xds_address,
            self.port,
        )
        if self.metrics_port:
            log.info("metrics on http://%s:%d/metrics", self.metrics_address, self.metrics_port)
        if self.admin_port:
            log.info("admin API listening on %s:%d", self.admin_address, self.admin_port)

    @property
    def replica(self) -> Replica:
        """This control plane as the other replicas of a shared store see it."""
        admin = f"{_dialable(self.admin_address)}:{self.admin_port}" if self.admin_port else ""
        xds = f"{_dialable(self.xds_address)}:{self.port}"
        return Replica(f"{socket.gethostname()}-{os.getpid()}", admin, xds)

    @_collector_paused
    def _take(self, change: Replicated) -> None:
        """Take what another replica wrote to the shared store (in its follow thread)."""
        state = self.state
        assert isinstance(state, Shared)
        with self.lock:
            if change.upserts or change.gone or change.whole:
                try:
                    applied = self._commit_once(
                        functools.partial(
                            self.store.sync,
                            change.upserts,
                            change.gone,
                            change.revision,
                            whole=change.whole,
                        )
                    )
                except ConfigError as e:  # written by a replica of other rules
                    log.error(
                        "cannot take revision %d from %s:\n%s", change.revision, state.where, e
                    )
                    return
                _log_changes(applied, f"revision {change.revision} from {state.where}")
            state.applied(change)

    @_collector_paused
    def load_state(self) -> None:
        """Load the saved state (``start`` does; an embedder that never starts the servers
        calls it before its first change). It is served as it was saved (its revision,
        nothing written again), except an old-format file, which is saved once into the new
        store. A disk that cannot be written (full, read-only) does not keep the saved
        config from being served: applies are refused, one clear line each, until it is
        fixed."""
        state = self.state
        if state is None:
            return
        loaded = state.load()
        if loaded.imported:
            try:
                self.restore(loaded.resources)
                return
            except StateWriteError as e:
                log.warning("cannot import into %s: %s", state.where, e)
                refused: StateWriteError | None = e
        else:
            refused = state.read_only
        # An old file keeps no store revision: its documents' newest then counts.
        revision = None if loaded.imported else loaded.revision
        self._commit(functools.partial(self.store.sync, loaded.resources, (), revision, whole=True))
        if refused is not None:
            log.warning(
                "cannot write the state %s (%s): serving its %d resources; applies and "
                "deletes are refused until you %s",
                state.where,
                refused.reason,
                len(loaded.resources),
                refused.todo,
            )

    def _serve_metrics(self, port: int) -> int:
        if port and not port_is_free(port, self.metrics_address):
            raise PortInUseError(
                f"cannot serve metrics on {self.metrics_address}:{port}: address in use "
                "(pick another with --metrics-port, or 0 for any free port)"
            )
        return self.metrics.serve(port, self.metrics_address)

    async def stop(self, grace: float | None = 0.5) -> None:
        for server in self._servers:
            await server.stop(grace)
        self._servers = []
        self.metrics.close()
        if isinstance(self.state, Shared):
            self.state.close()  # its follow thread may be waiting for the lock
        elif self.state is not None:
            with self.lock:  # after a change still being worked out in a thread
                self.state.close()

    async def __aenter__(self) -> ControlPlane:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- config ----------------------------------------------------------------------------

    @_collector_paused
    def apply(self, resources: Iterable[Resource], *, dry_run: bool = False) -> Applied:
        """kubectl apply: all-or-nothing; raises ConfigError (or ConflictError for a stale
        resourceVersion) and changes nothing if the batch is not good."""
        return self._commit(functools.partial(self.store.apply, resources, dry_run=dry_run))

    def apply_yaml(self, text: str, file: str = "<input>") -> Applied:
        return self.apply(load_text(text, file))

    def apply_paths(self, paths: Iterable[str]) -> Applied:
        return self.apply(load_paths(paths))

    @_collector_paused
    def replace(self, resources: Iterable[Resource]) -> Applied:
        """Make the config exactly ``resources`` (what a watched directory holds)."""
        return self._commit(functools.partial(self.store.replace, resources))

    @_collector_paused
    def restore(self, resources: Iterable[Resource], revision: int | None = None) -> Applied:
        """Load saved resources, keeping their resourceVersions (start-up from a state dir);
        ``revision``: the saved store revision, which becomes the current one."""
        return self._commit(functools.partial(self.store.restore, resources, revision))

    def delete(self, kind: str, name: str, namespace: str = "default") -> Applied:
        return self.delete_keys([(kind, namespace, name)])

    @_collector_paused
    def delete_keys(
        self,
        keys: Iterable[tuple[str, str, str]],
        *,
        ignore_not_found: bool = False,
        dry_run: bool = False,
    ) -> Applied:
        """kubectl delete: all or none; a missing resource raises NotFoundError.
        ``dry_run``: report what would be deleted (validated), change nothing."""
        return self._commit(
            functools.partial(
                self.store.delete, keys, ignore_not_found=ignore_not_found, dry_run=dry_run
            )
        )

    async def watch(
        self, stop: asyncio.Event, paths: Iterable[str | os.PathLike[str]] = ()
    ) -> None:
        """Reload when the given config files or directories change. They hold the whole
        config, so a reload replaces it; a bad change is logged and the last good config
        keeps being served, and so is a file that is emptied.

        Directories are watched, not files: an editor or ``sed -i`` saves by renaming a new
        file over the old one, and a watch on the old file would end there. Events are
        filtered by real path, since the watcher reports absolute ones."""
        from watchfiles import awatch

        from .config.load import YAML_SUFFIXES

        given = [Path(p) for p in paths]
        if not given:  # config from a durable store: changed through the admin API only
            if self.state is not None:
                await self._keep_state(self.state, stop)
            await stop.wait()
            return
        targets = {os.path.realpath(p) for p in given}
        dirs = {t if os.path.isdir(t) else os.path.dirname(t) for t in targets}

        def wanted(_change: object, path: str) -> bool:
            real = os.path.realpath(path)
            if real in targets:
                return True
            # A file in a watched config directory (not the directory's parent).
            return os.path.dirname(real) in targets and real.endswith(YAML_SUFFIXES)

        watching = False
        async for changes in awatch(
            *sorted(dirs),
            stop_event=stop,
            debounce=50,
            step=20,
            watch_filter=wanted,
            recursive=False,
            rust_timeout=500,
            yield_on_timeout=True,  # the first yield says the watch is in place
        ):
            if not watching:
                watching = True
                log.info("watching %s for changes", ", ".join(sorted(targets)))
            if changes:
                await self._reload_files(given)

    STATE_CHECK_S = 1.0  # how often the state's file is checked for being deleted under us

    async def _keep_state(self, state: Durable, stop: asyncio.Event) -> None:
        """Write the state back if its file is deleted, emptied or replaced while the server
        runs, so that a restart does not start from nothing (or refuse a damaged file)."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.STATE_CHECK_S)
            if not stop.is_set() and state.moved() is not None:
                await self.in_thread(self._write_back, state)

    def _write_back(self, state: Durable) -> None:
        with self.lock:
            if state.moved() is None:
                return
            current = {r.key: r for r in self.store.resources()}
            states = {k: self.store.state(k) for k in current}
            try:
                state.save(Proposal(current, states, None, revision=self.store.revision))
            except StateWriteError as e:
                log.error("%s", e)
                return
            log.info("state %s written back (revision %d)", state.where, self.store.revision)

    async def _reload_files(self, paths: list[Path]) -> None:
        try:
            resources = await self.in_thread(load_paths, paths)
        except ConfigError as e:
            self._rejected(e)
            return
        empty = self._emptied_files(resources)
        if empty:
            log.error(
                "rejected config change, still serving revision %d: %s holds no resource "
                "(emptied, or being written?): delete the file to remove its resources",
                self.store.revision,
                ", ".join(empty),
            )
            return
        await self._reload(resources)

    async def _reload(self, resources: list[Resource]) -> None:
        try:
            applied = await self.in_thread(self.replace, resources)
        except (ConfigError, StateWriteError) as e:
            self._rejected(e)
            return
        _log_changes(applied, f"reloaded revision {self.store.revision}")
        for warning in applied.warnings:  # no one else would see them
            log.warning("Warning: %s", warning)

    def _rejected(self, e: Exception) -> None:
        log.error("rejected config change, still serving revision %d:\n%s", self.store.revision, e)

    def _emptied_files(self, resources: list[Resource]) -> list[str]:
        """The files that held served resources, are still there, and hold none in
        ``resources``: emptied, or being written. (A file removed from a config directory
        takes its resources with it; one that never held any, notes or a placeholder, is
        no reason to refuse the rest.)"""
        used = {os.path.realpath(r.source.file) for r in resources}
        served = {os.path.realpath(r.source.file): r.source.file for r in self.store.resources()}
        return sorted(
            name for real, name in served.items() if real not in used and os.path.isfile(real)
        )

    def proxy_config(self, node_id: str, type_url: str) -> tuple[str, list[tuple[str, Message]]]:
        """The resources of one type the control plane has for a proxy (the names it asked
        for, or all for a wildcard subscription), unpacked, and their version."""
        # The newest stream of that proxy carrying the type (without ADS, one per type); its
        # resources come from the proxy's own group (its labels select the Gateways).
        streams = [p for p in self.proxies() if p.node_id == node_id and type_url in p.types]
        if not streams:
            return "", []
        proxy = streams[-1]
        entries = proxy.desired(type_url)
        cls = symbol_database.Default().GetSymbol(type_url.split("/", 1)[1])
        out = []
        for name in sorted(entries):
            packed = entries[name].any
            if packed is not None:  # a snapshot's entries are all packed
                msg = cls()
                packed.Unpack(msg)
                out.append((name, msg))
        return proxy.current_version(type_url), out

    @_collector_paused
    def set_options(self, options: TranslateOptions) -> None:
        with self.lock:
            old, self.options = self.options, options
            self._assemblers = {}  # every translation read the options
            try:
                run = self.store.results.run(None)
                translations = self._translate(self.store.index, run)
            except BaseException:
                self.options = old
                raise
            run.commit()
            self._publish(translations)

    async def in_thread(self, change: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a change (``apply``, ``delete_keys``, ...) off the event loop, so that the
        streams and the admin API go on meanwhile; the new snapshots are swapped in as one
        when it is done (see SnapshotCache.install)."""
        return await asyncio.to_thread(_collector_paused(change), *args, **kwargs)

    CATCH_UP_S = 5.0  # how long a change waits for another replica's change to arrive
    RETRIES = 5

    def _commit(self, change: Callable[[], Applied]) -> Applied:
        """Run a store change; the store calls ``_prepare`` (translation) before it persists
        and commits, so nothing that translation finds wrong is ever committed or saved,
        and the cache gets the new translation only once the store holds its config. On
        a shared store that another replica wrote first, take its change and run this
        one again, on top of it (where a stale resourceVersion is a conflict)."""
        for _ in range(self.RETRIES - 1):
            try:
                return self._commit_once(change)
            except StoreBehindError as e:
                state = self.state
                assert isinstance(state, Shared)
                if not state.wait_for(e.revision, self.CATCH_UP_S):
                    break
        try:
            return self._commit_once(change)
        except StoreBehindError as e:
            raise StateWriteError(
                e.where,
                "other replicas kept changing the config, or this one cannot follow them",
                "apply again",
            ) from None

    def _commit_once(self, change: Callable[[], Applied]) -> Applied:
        with self.lock:
            self._prepared = None
            try:
                changes = change()
            finally:  # a proposal translated and then not committed (persist failed) is dropped
                translations, self._prepared = self._prepared, None
            if translations is not None and self.store.last is not None:
                self._publish(translations)
            return changes

    def _prepare(self, proposal: Proposal) -> None:
        """The store's ``prepare`` hook: translate the validated proposal for every kind of
        proxy connected. An exception here is a bug of ours (validation should have caught
        what the config lacks), and it must not leave a commit behind: it is reported as
        a problem with the batch, and the store stays as it was."""
        assert proposal.index is not None and proposal.run is not None
        try:
            self._prepared = self._translate(proposal.index, proposal.run)
        except Exception as e:  # the run is dropped with the proposal
            log.error("translation failed, nothing applied: %s: %s", type(e).__name__, e)
            log.debug("translation failure", exc_info=True)
            changed = sorted(proposal.changed or ())
            what = f"{changed[0][0]} {changed[0][1]}/{changed[0][2]}" if changed else "the config"
            if len(changed) > 1:
                what += f" and {len(changed) - 1} more"
            problem = Problem(
                Source("<server>", 0),
                f"a change to {what} could not be translated for Envoy "
                f"({type(e).__name__}: {e}); nothing was applied",
                hint="this is a bug in xds-server: please report it with the input",
            )
            raise ConfigError([problem]) from None

    def _translate(self, index: ConfigIndex, run: Run) -> dict[Hashable, Translation]:
        """Translate ``index`` once per kind of proxy connected (node labels, gRPC or Envoy:
        see xds/cache.py), once for kinds that would get the same (translation_key)."""
        scopes: dict[Hashable, list[NodeProfile]] = {}
        for profile in list(self.cache.groups):
            scopes.setdefault(translation_key(index, profile), []).append(profile)
        out = {}
        for scope, profiles in scopes.items():
            assembler = self._assemblers.get(scope) or Assembler(self.options, profiles[0], scope)
            out[scope] = Translation(assembler, assembler.propose(index, run), profiles)
        return out

    def _publish(self, translations: dict[Hashable, Translation]) -> None:
        """Hand a committed config's translations to the cache: each change packed once
        per scope, and swapped in for every kind of proxy it serves."""
        installs: dict[NodeProfile, tuple[Hashable, Snapshots]] = {}
        for assembler, update, profiles in translations.values():
            assembler.commit(update)
            packed: dict[tuple[int, str], TypeSnapshot] = {}
            for profile in profiles:
                group = self.cache.groups.get(profile)
                if group is None:
                    continue
                latest = group.latest  # what the last change installed, maybe not yet served
                packer, had = latest if latest is not None else (None, group.types)
                types = {}
                for t in PUSH_ORDER:
                    old = had[t]
                    if (id(old), t) not in packed:
                        # The update is relative to what this very assembler committed: it
                        # applies only to what that assembler packed (a new one, for a new
                        # scope or new options, starts from nothing).
                        if packer is not assembler:
                            new = TypeSnapshot.of(assembler.resources.by_type()[t], old)
                        elif update.upserts[t] or update.removals[t]:
                            new = old.updated(update.upserts[t], update.removals[t])
                        else:  # untouched: the very snapshot, so streams see nothing to do
                            new = old
                        packed[(id(old), t)] = new
                    types[t] = packed[(id(old), t)]
                installs[profile] = (assembler, types)
        self._keep(translations)
        changed = self.cache.install(installs)
        if changed:
            log.info(
                "config revision %d: new versions for %s",
                self.store.revision,
                ", ".join(sorted(t.rsplit(".", 1)[-1] for t in changed)),
            )

    def _keep(self, translations: dict[Hashable, Translation]) -> None:
        """Keep the assemblers in use; forget the results of the others."""
        for gone in self._assemblers.keys() - translations.keys():
            self.store.results.drop(functools.partial(_of_scope, gone))
        self._assemblers = {scope: t.assembler for scope, t in translations.items()}

    def _profile_wanted(self, profile: NodeProfile) -> None:
        """A proxy of a kind not served yet connected: translate for it, off the event loop
        when there is one (its streams wait for the cache to be ready)."""
        loop = self._loop
        if loop is not None and loop.is_running():
            loop.run_in_executor(None, self._serve_profile, profile)
        else:
            self._serve_profile(profile)

    def _serve_profile(self, profile: NodeProfile) -> None:
        with self.lock:
            group = self.cache.groups.get(profile)
            if group is None or group.latest is not None:
                return  # gone already, or served by a commit meanwhile
            index = self.store.index
            scope = translation_key(index, profile)
            assembler = self._assemblers.get(scope)
            twin = next(
                (
                    latest[1]
                    for g in list(self.cache.groups.values())
                    if (latest := g.latest) is not None and latest[0] is assembler
                ),
                None,
            )
            if assembler is not None and twin is not None:  # its packed snapshots, shared
                self.cache.install({profile: (assembler, dict(twin))})
                return
            if assembler is None:
                assembler = Assembler(self.options, profile, scope)
                run = self.store.results.run(())
                assembler.commit(assembler.propose(index, run))
                run.commit()
                self._assemblers[scope] = assembler
            types = {t: TypeSnapshot.of(m) for t, m in assembler.resources.by_type().items()}
            self.cache.install({profile: (assembler, types)})

    # --- status ----------------------------------------------------------------------------

    def proxies(self) -> list[ProxyStatus]:
        return list(self.board.proxies.values())

    def synced(self, node_id: str | None = None, min_proxies: int = 1) -> bool:
        """Have the proxies ACKed what they should have of CDS, EDS and LDS? A proxy is one
        connection (its streams counted as one; two with one node id are two). Without
        ``node_id``: all of them, and at least ``min_proxies``. With it: at least
        ``min_proxies`` of those with that node id (another connection borrowing the id
        neither hides nor blocks it)."""
        return self.board.synced(node_id, min_proxies)

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
        if not self.board.streams():
            lines.append("  no proxy connected")
        for p in sorted(self.proxies(), key=lambda p: p.stream_id):
            who = f"{p.node_id} ({p.api} stream {p.stream_id} from {p.peer})"
            if not p.types:
                lines.append(f"  {who}: asked for nothing yet")
            for type_url, st in p.types.items():
                state = p.state(type_url)
                detail = f": {st.nack}" if st.nack else ""
                lines.append(f"  {who} {type_url.rsplit('.', 1)[-1]} {state}{detail}")
        return "\n".join(lines)

    # --- threads ---------------------------------------------------------------------------

    @classmethod
    def start_in_thread(cls, **kwargs: Any) -> BackgroundControlPlane:
        """Start a control plane on its own event loop in a daemon thread."""
        return BackgroundControlPlane(cls(**kwargs))


class BackgroundControlPlane:
    """Blocking handle on a ControlPlane whose event loop runs in a background thread.

    Not anyio's blocking portal, which does the same job: its loop runs in a non-daemon
    executor thread, so a handle never stopped keeps the interpreter from exiting (tried:
    a script that starts one and ends hangs at exit); this thread is a daemon."""

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
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError(
                "a blocking BackgroundControlPlane method was called on its own event loop "
                "(it would wait forever): use the ControlPlane itself, `.cp`, there"
            )
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a plain function on the control plane's loop (its state is not thread-safe)."""

        async def _call() -> T:
            return fn(*args)

        return self._run(_call())

    # Changes run in the calling thread, not on the loop: the streams go on meanwhile (the
    # control plane takes one change at a time, and swaps the new snapshots in as one).

    def apply(self, resources: Iterable[Resource]) -> Applied:
        return self.cp.apply(list(resources))

    def apply_yaml(self, text: str, file: str = "<input>") -> Applied:
        return self.apply(load_text(text, file))

    def apply_paths(self, paths: Iterable[str]) -> Applied:
        return self.apply(load_paths(paths))

    def replace(self, resources: Iterable[Resource]) -> Applied:
        return self.cp.replace(list(resources))

    def delete(self, kind: str, name: str, namespace: str = "default") -> Applied:
        return self.cp.delete(kind, name, namespace)

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
