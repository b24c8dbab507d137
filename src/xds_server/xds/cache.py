"""Snapshot cache: the resources each kind of proxy should have, versioned by content.

Proxies are grouped by ``NodeProfile`` (their labels, whether they are gRPC library clients,
whether they use ADS). The cache is passive: it holds what it is given. The control plane
translates once per profile a connected proxy has, packs each change with
``TypeSnapshot.updated(upserts, removals)`` (each resource serialized and packed into an
``Any`` once, shared by every stream of the group and every response) and swaps the new
snapshots in with ``install``. A group lives while a stream uses it; one just acquired is
not ready until its snapshots are installed (its streams wait; the cache tells its
``on_new`` listeners that it is wanted). The default group (``ANY_NODE``: no labels, served
every Gateway) always exists and is what ``version()``/``snapshot()`` answer without a group.

Versions are content hashes, so a restarted control plane gives the same version for the
same config and a proxy that reconnects with what it already has is not sent it again.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import threading
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field, replace

from google.protobuf import any_pb2
from google.protobuf.message import Message

from ..translate import ANY_NODE, PUSH_ORDER, NodeProfile, Resources, references


@dataclass(frozen=True)
class Entry:
    """One resource as sent. ``any`` is None for a resource a Delta client reported having
    (``initial_resource_versions``) in a version we no longer hold: we know its name and
    version, not its content."""

    name: str
    version: str  # hash of this resource's bytes
    any: any_pb2.Any | None
    source: Message | None = field(default=None, compare=False, repr=False)
    """The message it was packed from, for the names it needs."""

    @functools.cached_property
    def refs(self) -> frozenset[str]:
        """The names it needs (see translate/refs.py): worked out when a removal asks."""
        return references(self.source) if self.source is not None else frozenset()


@dataclass(frozen=True)
class TypeSnapshot:
    version: str
    entries: Mapping[str, Entry] = field(default_factory=dict)
    total: int = 0  # the sum behind ``version`` (see content_version)
    # Updated from ``base``'s entries, which differ from these only at ``touched``: what
    # changed since the last snapshot is worked out from those names, not from all.
    base: Mapping[str, Entry] | None = field(default=None, compare=False, repr=False)
    touched: frozenset[str] = field(default=frozenset(), compare=False, repr=False)

    @functools.cached_property
    def names(self) -> frozenset[str]:
        return frozenset(self.entries)

    @functools.cached_property
    def anys(self) -> tuple[any_pb2.Any, ...]:
        """Every resource, in name order: a SotW response's body, built once per version."""
        entries = self.entries  # all packed: a snapshot holds only what it packed
        return tuple(a for n in sorted(entries) if (a := entries[n].any) is not None)

    def changed_since(self, old: Mapping[str, Entry]) -> list[Entry]:
        """``changed_entries(old, self.entries)``, computed once for every stream that had
        the same ``old`` (the streams of a group move from snapshot to snapshot together)."""
        memo = self.__dict__.get("_changed")
        if memo is None or memo[0] is not old:
            if old is self.entries:
                changed = []
            elif old is self.base:
                entries = self.entries
                new = {n: entries[n] for n in self.touched if n in entries}
                changed = changed_entries(old, new)
            else:
                changed = changed_entries(old, self.entries)
            memo = self.__dict__["_changed"] = (old, changed)
        return memo[1]

    def gone_since(self, old: Mapping[str, Entry]) -> list[str]:
        """The names of ``old`` that are not here."""
        if old is self.entries:
            return []
        if old is self.base:
            return [n for n in self.touched if n in old and n not in self.entries]
        return [n for n in old if n not in self.entries]

    @property
    def size(self) -> int:
        return sum(e.any.ByteSize() for e in self.entries.values() if e.any is not None)

    def updated(self, upserts: Mapping[str, Message], removals: Iterable[str]) -> TypeSnapshot:
        """This snapshot with ``upserts`` packed in and ``removals`` gone (only those
        resources are serialized). Pure: safe to call off the event loop."""
        entries = dict(self.entries)
        total = self.total
        touched = set(upserts)
        for name in removals:
            prev = entries.pop(name, None)
            if prev is not None:
                total -= _mark(name, prev.version)
                touched.add(name)
        for name, msg in upserts.items():
            entries[name], moved = _entry(name, msg, entries.get(name))
            total += moved
        total %= _MOD
        new = TypeSnapshot(_version_of(total), entries, total, self.entries, frozenset(touched))
        if len(entries) == len(self.entries) and all(n in self.entries for n in touched):
            new.__dict__["names"] = self.names  # the same names: streams that ask for all still do
        return new

    @classmethod
    def of(cls, resources: Mapping[str, Message], old: TypeSnapshot | None = None) -> TypeSnapshot:
        """A snapshot of exactly ``resources`` (``old``: a snapshot whose packed bytes are
        reused where equal): ``old`` updated with all of them, and without the rest."""
        old = old or _EMPTY
        return old.updated(resources, [n for n in old.entries if n not in resources])


def changed_entries(old: Mapping[str, Entry], new: Mapping[str, Entry]) -> list[Entry]:
    """The entries of ``new`` that ``old`` lacks or holds in another version, in name order
    (an unchanged resource is the same Entry object, so most are passed over by identity)."""
    changed = [
        e
        for n, e in new.items()
        if (was := old.get(n)) is not e and (was is None or was.version != e.version)
    ]
    changed.sort(key=lambda e: e.name)
    return changed


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


_MOD = 1 << 128


def _mark(name: str, version: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{name}\0{version}".encode()).digest()[:16], "big")


def _version_of(total: int) -> str:
    return hashlib.sha256(total.to_bytes(16, "big")).hexdigest()[:16]


def content_version(entries: Mapping[str, Entry]) -> str:
    """The version of a set of resources: a hash of their names and versions. A response's
    version is the content version of exactly what it carries. It hashes the sum of one
    hash per resource, so that a snapshot's version follows a change of one resource in
    one step instead of hashing all 10k names again (see TypeSnapshot.updated)."""
    return _version_of(sum(_mark(n, e.version) for n, e in entries.items()) % _MOD)


EMPTY_VERSION = content_version({})
_EMPTY = TypeSnapshot(EMPTY_VERSION)


Snapshots = dict[str, TypeSnapshot]  # by type URL


class Group:
    """The snapshots for one node profile; replaced whole on the event loop, so holders
    see updates and never a half-installed change.

    Two views: what the streams are served (``types``, ``ready``, ``scope``: swapped on the
    loop) and what was installed last (``latest``), which the next change is packed
    against. They differ only between an install from the change's thread and the swap it
    schedules on the loop."""

    def __init__(self, profile: NodeProfile) -> None:
        self.profile = profile
        self.types: Snapshots = {t: _EMPTY for t in PUSH_ORDER}
        self.users = 0
        self.ready = False  # snapshots installed: its streams may be answered
        self.scope: Hashable = None  # what packed its snapshots (the control plane's Assembler)
        self.pending: tuple[Hashable, Snapshots] | None = None  # installed, not swapped in

    @property
    def latest(self) -> tuple[Hashable, Snapshots] | None:
        """(scope, snapshots) as installed last; None before the first install."""
        if self.pending is not None:
            return self.pending
        return (self.scope, self.types) if self.ready else None

    def snapshot(self, type_url: str) -> TypeSnapshot:
        return self.types.get(type_url, _EMPTY)

    def version(self, type_url: str) -> str:
        return self.snapshot(type_url).version

    def versions(self) -> dict[str, str]:
        return {t: s.version for t, s in self.types.items()}


def _entry(name: str, msg: Message, prev: Entry | None) -> tuple[Entry, int]:
    """``msg`` packed (or ``prev`` if the bytes are the same), and what it adds to the
    snapshot's sum of hashes."""
    data = msg.SerializeToString(deterministic=True)
    version = _digest(data)
    if prev is not None and prev.version == version:
        return replace(prev, source=msg), 0
    packed = any_pb2.Any(type_url="type.googleapis.com/" + msg.DESCRIPTOR.full_name, value=data)
    moved = _mark(name, version) - (_mark(name, prev.version) if prev is not None else 0)
    return Entry(name, version, packed, msg), moved


class SnapshotCache:
    """One set of snapshots per node profile in use; tells watchers what changed.

    ``install`` may be called from any thread: watchers are called on the event loop the
    cache was ``bind``-ed to (if any), where the streams run."""

    def __init__(self) -> None:
        self.groups: dict[NodeProfile, Group] = {ANY_NODE: Group(ANY_NODE)}
        self.groups[ANY_NODE].ready = True
        self._watchers: list[Callable[[set[str]], None]] = []
        self.on_new: list[Callable[[NodeProfile], None]] = []  # a profile wants snapshots
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Run watchers on ``loop`` (the streams' event loop)."""
        self._loop, self._loop_thread = loop, threading.get_ident()

    # --- the default group (proxies without labels), for callers that have no node -------

    def version(self, type_url: str) -> str:
        return self.groups[ANY_NODE].version(type_url)

    def snapshot(self, type_url: str) -> TypeSnapshot:
        return self.groups[ANY_NODE].snapshot(type_url)

    def versions(self) -> dict[str, str]:
        return self.groups[ANY_NODE].versions()

    # --- groups ----------------------------------------------------------------------------

    def acquire(self, profile: NodeProfile) -> Group:
        """The group for a profile; a new one is not ready until installed."""
        group = self.groups.get(profile)
        if group is None:
            group = self.groups[profile] = Group(profile)
            for wanted in list(self.on_new):
                wanted(profile)
        group.users += 1
        return group

    def release(self, group: Group) -> None:
        group.users -= 1
        if group.users <= 0 and group.profile != ANY_NODE:
            self.groups.pop(group.profile, None)

    # --- updates ---------------------------------------------------------------------------

    def install(self, snapshots: Mapping[NodeProfile, tuple[Hashable, Snapshots]]) -> set[str]:
        """Install new snapshots (profile -> (scope, snapshots by type URL)); returns the
        type URLs whose version changed in any group. A profile no stream uses any more is
        skipped. From another thread (a change worked out off the loop), the swap into
        what streams see is scheduled on the loop and this returns at once: the loop then
        answers the streams while that thread is done, instead of both contending for
        the GIL."""
        changed: set[str] = set()
        for profile, (scope, types) in snapshots.items():
            group = self.groups.get(profile)
            if group is None:
                continue
            latest = group.latest
            base = latest[1] if latest is not None else group.types
            new = {**base, **types}
            if latest is None:
                changed |= set(new)  # its streams waited: answer them
            else:
                changed |= {t for t, snap in new.items() if snap.version != base[t].version}
            group.pending = (scope, new)
        loop = self._loop
        if loop is None or threading.get_ident() == self._loop_thread:
            self._swap()
        elif not loop.is_closed():
            loop.call_soon_threadsafe(self._swap)
        return changed

    def _swap(self) -> None:
        """Serve what was installed, and wake the streams whose snapshots changed."""
        changed: set[str] = set()
        for group in list(self.groups.values()):
            if group.pending is None:
                continue
            (scope, new), group.pending = group.pending, None
            if not group.ready:
                changed |= set(new)
            else:
                changed |= {t for t, snap in new.items() if snap.version != group.version(t)}
            group.types, group.scope, group.ready = new, scope, True
        if changed:
            for notify in list(self._watchers):
                notify(changed)

    def set_resources(self, resources: Resources) -> set[str]:
        """The same resources for every proxy (no per-node selection): for tests and tools
        that have no control plane."""
        snaps = {t: TypeSnapshot.of(m) for t, m in resources.by_type().items()}
        return self.install({p: (None, snaps) for p in self.groups})

    def watch(self, callback: Callable[[set[str]], None]) -> None:
        self._watchers.append(callback)

    def unwatch(self, callback: Callable[[set[str]], None]) -> None:
        if callback in self._watchers:
            self._watchers.remove(callback)
