"""The state in etcd, shared by several control-plane replicas (``--store etcd://...``).

Keys live under one prefix: ``PREFIX/resources/KIND/NAMESPACE/NAME`` holds a resource's
document (JSON, as ``get -o yaml`` shows it), ``PREFIX/revision`` the store revision of
the last change. An apply is one etcd transaction that writes the keys it changed and the
revision key, if the revision key is still at the mod revision this replica last saw:
a replica writes only on top of the config it validated the batch against. If another
replica wrote first, the transaction changes nothing and the control plane catches up
(the watch brings the other write) and runs the batch again on the newer config, where a
document that carries a stale ``resourceVersion`` is the usual Conflict. So every
replica's store revision, resourceVersions and documents are the same, and so are the
versions they send (content hashes): an Envoy that fails over is not sent again what it
has.

Each replica watches the prefix from the etcd revision it has, and applies what others
write as one commit per etcd revision. A watch on a compacted revision lists the prefix
again. While etcd is unreachable, the replica goes on serving its last config, refuses
writes in one line, and watches again (from where it was) until etcd is back.

etcd takes a transaction of at most ``--max-txn-ops`` operations (128 by default) and
``--max-request-bytes`` (1.5 MiB): a bigger batch is refused as a whole, with a line
saying so.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from .errors import ConfigError, Source
from .etcd import (
    CompactedError,
    EtcdClient,
    EtcdError,
    EtcdUnavailableError,
    EventType,
    KeyValue,
    WatchEvent,
    compare_mod_revision,
    delete_op,
    parse_etcd_url,
    put_op,
)
from .model import Key, Resource
from .persist import (
    Loaded,
    Replica,
    Replicated,
    StateError,
    StateWriteError,
    StoreBehindError,
    dump_document,
    read_documents,
)
from .store import Proposal


def _replica(value: bytes) -> Replica:
    """A replica's entry; what is not one (written by another tool) reads as unnamed."""
    try:
        fields = json.loads(value)
        return Replica(str(fields["id"]), str(fields["admin"]), str(fields["xds"]))
    except (ValueError, KeyError, TypeError):
        return Replica("?", "", "")


log = logging.getLogger("xds_server")
DEFAULT_PREFIX = "/xds-server"
RETRY_S = (0.05, 0.1, 0.2, 0.5, 1.0)  # pauses between watches while etcd is unreachable
LEASE_S = 5  # a replica that died leaves the list of replicas within this (etcd's lease)
BEAT_S = 1.0  # how often a replica renews its lease and reads the list


class EtcdStore:
    """The durable store in etcd (see the module's doc)."""

    def __init__(self, url: str, *, timeout: float = 2.0) -> None:
        try:
            endpoints, prefix = parse_etcd_url(url)
        except ValueError as e:
            raise StateError(f"--store {url}: {e}") from None
        self.prefix = (prefix or DEFAULT_PREFIX).rstrip("/")
        self.where = f"etcd at {', '.join(endpoints)} (prefix {self.prefix})"
        self.client = EtcdClient(endpoints, timeout=timeout)
        self._revision_key = f"{self.prefix}/revision"
        self._resources = f"{self.prefix}/resources/"
        self.revision_mod = 0  # the revision key's mod revision in the config held (0: none)
        self.etcd_revision = 0  # the etcd revision the config held reflects
        self._keys: set[Key] = set()  # the keys held, as etcd has them at etcd_revision
        self._caught_up = threading.Condition()
        # Held by a write from its transaction until etcd_revision says it is held, and by
        # the follow thread while it sorts a batch's events: so that a replica's own write,
        # which its watch brings back too, is never taken for another replica's.
        self._writing = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._announcer: threading.Thread | None = None
        self._replicas: list[Replica] = []

    @property
    def read_only(self) -> StateWriteError | None:
        return None  # asked of etcd at each write

    def moved(self) -> str | None:
        return None

    # --- reading -----------------------------------------------------------------------

    def _key(self, key: Key) -> str:
        return self._resources + "/".join(key)

    def _of(self, kv_key: str) -> Key | None:
        if not kv_key.startswith(self._resources):
            return None
        parts = kv_key[len(self._resources) :].split("/")
        return (parts[0], parts[1], parts[2]) if len(parts) == 3 else None

    def _decode(self, kvs: list[KeyValue]) -> tuple[list[Resource], int, int]:
        """The resources of a listing, the store revision and its key's mod revision."""
        rows, revision, revision_mod = [], 0, 0
        for kv in kvs:
            if kv.key == self._revision_key:
                revision, revision_mod = int(kv.value), kv.mod_revision
            elif self._of(kv.key) is not None:
                rows.append(self._row(kv.key, kv.value))
        return read_documents(self.where, rows), revision, revision_mod

    @staticmethod
    def _row(key: str, value: bytes) -> tuple[str, bytes, Source]:
        return key, value, Source(f"etcd:{key}", 0)

    def load(self) -> Loaded:
        try:
            etcd_revision, kvs = self.client.get_prefix(self.prefix + "/")
        except EtcdError as e:
            raise StateError(f"cannot read the config from {self.where}: {e}") from None
        resources, revision, self.revision_mod = self._decode(kvs)
        self.etcd_revision = etcd_revision
        self._keys = {r.key for r in resources}
        return Loaded(resources, revision)

    # --- writing -----------------------------------------------------------------------

    def save(self, proposal: Proposal) -> None:
        changed = proposal.changed
        keys = proposal.resources.keys() | self._keys if changed is None else changed
        written = [k for k in keys if k in proposal.resources]
        deleted = [k for k in keys if k not in proposal.resources and k in self._keys]
        ops = [put_op(self._key(k), dump_document(proposal.stored(k).document())) for k in written]
        ops += [delete_op(self._key(k)) for k in deleted]
        ops.append(put_op(self._revision_key, str(proposal.revision)))
        compare = compare_mod_revision(self._revision_key, self.revision_mod)
        with self._writing:
            try:
                result = self.client.txn([compare], ops)
            except EtcdUnavailableError as e:
                raise StateWriteError(self.where, str(e), "bring etcd back") from None
            except EtcdError as e:
                raise StateWriteError(
                    self.where,
                    str(e),
                    "apply it in smaller batches, or raise etcd's --max-txn-ops and "
                    "--max-request-bytes",
                ) from None
            if not result.succeeded:
                raise StoreBehindError(self.where, result.revision)
            self.revision_mod = self.etcd_revision = result.revision
        if changed is None:
            self._keys = set(proposal.resources)
        else:
            self._keys.update(written)
            self._keys.difference_update(deleted)

    # --- following the other replicas --------------------------------------------------

    def follow(self, apply: Callable[[Replicated], None]) -> None:
        """Watch the prefix in a thread of its own; ``apply`` gets what other replicas
        wrote (it must take the control plane's lock and call ``applied``)."""
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._follow, args=(apply,), name="etcd follow", daemon=True
        )
        self._thread.start()

    def applied(self, change: Replicated) -> None:
        """``change`` is now the config held (called by ``apply``, under its lock)."""
        if change.whole:
            self._keys = {r.key for r in change.upserts}
        else:
            self._keys |= {r.key for r in change.upserts}
            self._keys -= set(change.gone)
        self.revision_mod = max(self.revision_mod, change.revision_mod)
        self.etcd_revision = max(self.etcd_revision, change.etcd_revision)
        with self._caught_up:
            self._caught_up.notify_all()

    def wait_for(self, etcd_revision: int, timeout: float) -> bool:
        """Whether the config held reaches ``etcd_revision`` within ``timeout`` seconds."""
        with self._caught_up:
            return self._caught_up.wait_for(
                lambda: self.etcd_revision >= etcd_revision, timeout=timeout
            )

    def _follow(self, apply: Callable[[Replicated], None]) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                watch = self.client.watch(self.prefix + "/", self.etcd_revision + 1)
            except EtcdError as e:
                failures = self._unreachable(failures, e)
                continue
            if failures:
                log.info("%s is back: following its changes", self.where)
                failures = 0
            try:
                while not self._stop.is_set():
                    batch = watch.get(timeout=0.5)
                    if batch is not None and batch.events:
                        with self._writing:
                            change = self._read(self._change, batch.events, batch.revision)
                        if change is not None:
                            apply(change)
            except CompactedError:
                log.warning("%s: the watch's revision was compacted: listing it again", self.where)
                try:
                    if (listing := self._read(self._listing)) is not None:
                        apply(listing)
                except EtcdError as e:
                    failures = self._unreachable(failures, e)
            except EtcdError as e:
                failures = self._unreachable(failures, e)
            finally:
                watch.close()

    def _read(self, read: Callable[..., Replicated], *args: Any) -> Replicated | None:
        """What another replica wrote, or None (logged) if a document of it is not one this
        replica can take: the last good config stays."""
        try:
            return read(*args)
        except (ConfigError, StateError) as e:
            log.error(
                "cannot take a change from %s, still serving the last config:\n%s", self.where, e
            )
            return None

    def _unreachable(self, failures: int, e: EtcdError) -> int:
        if not failures:
            log.error(
                "%s: %s; serving the last config, writes refused until it is back", self.where, e
            )
        self._stop.wait(RETRY_S[min(failures, len(RETRY_S) - 1)])
        return failures + 1

    def _change(self, events: tuple[WatchEvent, ...], etcd_revision: int) -> Replicated:
        """One change of what a batch brings (it may span several writes: the last event
        of each key counts), leaving out what is held already (this replica's writes)."""
        latest: dict[Key, WatchEvent] = {}
        revision, revision_mod = 0, 0
        for e in events:
            if e.mod_revision <= self.etcd_revision:
                continue
            if e.key == self._revision_key and e.type is EventType.PUT:
                revision, revision_mod = int(e.value), e.mod_revision
            elif (key := self._of(e.key)) is not None:
                latest[key] = e
        upserts = [self._row(e.key, e.value) for e in latest.values() if e.type is EventType.PUT]
        gone = [k for k, e in latest.items() if e.type is EventType.DELETE]
        last = max((e.mod_revision for e in events), default=etcd_revision)
        return Replicated(read_documents(self.where, upserts), gone, revision, revision_mod, last)

    def _listing(self) -> Replicated:
        etcd_revision, kvs = self.client.get_prefix(self.prefix + "/")
        resources, revision, revision_mod = self._decode(kvs)
        return Replicated(resources, [], revision, revision_mod, etcd_revision, whole=True)

    # --- the replicas there ----------------------------------------------------------

    def announce(self, me: Replica) -> None:
        """Keep ``PREFIX/replicas/ID`` (this replica's addresses) under a lease renewed every
        BEAT_S, and read the others' at the same pace (see replicas)."""
        self._replicas = [me]
        self._announcer = threading.Thread(
            target=self._announce, args=(me,), name="etcd announce", daemon=True
        )
        self._announcer.start()

    def replicas(self) -> list[Replica]:
        return list(self._replicas)

    def _announce(self, me: Replica) -> None:
        key, lease = f"{self.prefix}/replicas/{me.id}", 0
        while not self._stop.is_set():
            try:
                if not lease or not self.client.lease_keepalive(lease):
                    lease = self.client.lease_grant(LEASE_S)
                    self.client.put(key, dump_document(dataclasses.asdict(me)), lease=lease)
                _, kvs = self.client.get_prefix(f"{self.prefix}/replicas/")
                self._replicas = [_replica(kv.value) for kv in kvs] or [me]
            except EtcdError:
                pass  # etcd down: the follow thread says so; the list is as it was
            self._stop.wait(BEAT_S)
        if lease:
            with contextlib.suppress(EtcdError):
                self.client.lease_revoke(lease)  # gone from the list at once

    def close(self) -> None:
        self._stop.set()
        for thread in (self._thread, self._announcer):
            if thread is not None:
                thread.join(timeout=5)
        self._thread = self._announcer = None
        self.client.close()
