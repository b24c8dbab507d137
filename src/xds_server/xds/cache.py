"""Snapshot cache: the resources each kind of proxy should have, versioned by content.

Proxies are grouped by ``NodeProfile`` (their labels, whether they are gRPC library clients,
whether they use ADS): the config is translated once per profile that a connected proxy
has, and each resource is serialized and packed into an ``Any`` once per group and content
version; the same object is shared by every stream of the group and every response.
A group lives while a stream uses it; the default group (``ANY_NODE``: no labels, served
every Gateway) always exists and is what ``version()``/``snapshot()`` answer without a group.

Versions are content hashes, so a restarted control plane gives the same version for the
same config and a proxy that reconnects with what it already has is not sent it again.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

from google.protobuf import any_pb2
from google.protobuf.message import Message

from ..translate import ANY_NODE, PUSH_ORDER, NodeProfile, Resources, references

Build = Callable[[NodeProfile], Resources]


@dataclass(frozen=True)
class Entry:
    """One resource as sent. ``any`` is None for a resource a Delta client reported having
    (``initial_resource_versions``) in a version we no longer hold: we know its name and
    version, not its content."""

    name: str
    version: str  # hash of this resource's bytes
    any: any_pb2.Any | None
    source: Message | None = field(default=None, compare=False, repr=False)
    """The message it was packed from: the same object next time means the same bytes."""

    @functools.cached_property
    def refs(self) -> frozenset[str]:
        """The names it needs (see translate/refs.py): worked out when a removal asks."""
        return references(self.source) if self.source is not None else frozenset()


@dataclass(frozen=True)
class TypeSnapshot:
    version: str
    entries: Mapping[str, Entry] = field(default_factory=dict)
    total: int = 0  # the sum behind ``version`` (see content_version)
    # Repacked from ``base``'s entries, which differ from these only at ``touched``: what
    # changed since the last snapshot is worked out from those names, not from all.
    base: Mapping[str, Entry] | None = field(default=None, compare=False, repr=False)
    touched: frozenset[str] = field(default=frozenset(), compare=False, repr=False)

    @functools.cached_property
    def names(self) -> frozenset[str]:
        return frozenset(self.entries)

    @functools.cached_property
    def anys(self) -> tuple[any_pb2.Any, ...]:
        """Every resource, in name order: a SotW response's body, built once per version."""
        return tuple(self.entries[n].any for n in sorted(self.entries))

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
    one step instead of hashing all 10k names again (see _pack)."""
    return _version_of(sum(_mark(n, e.version) for n, e in entries.items()) % _MOD)


EMPTY_VERSION = content_version({})
_EMPTY = TypeSnapshot(EMPTY_VERSION)


class Group:
    """The snapshot for one node profile; replaced in place, so holders see updates."""

    def __init__(self, profile: NodeProfile) -> None:
        self.profile = profile
        self.types: dict[str, TypeSnapshot] = {t: _EMPTY for t in PUSH_ORDER}
        self.users = 0
        self.resources: Resources | None = None  # the translation last taken

    def snapshot(self, type_url: str) -> TypeSnapshot:
        return self.types.get(type_url, _EMPTY)

    def version(self, type_url: str) -> str:
        return self.snapshot(type_url).version

    def versions(self) -> dict[str, str]:
        return {t: s.version for t, s in self.types.items()}

    def update(self, resources: Resources) -> set[str]:
        """Take a new translation; returns the type URLs whose content changed. Unchanged
        resources keep their packed bytes."""
        changed: set[str] = set()
        patch = resources.patch
        if patch is None or patch.base is not self.resources:
            patch = None  # not a change of what this group took last: every name
        for type_url, by_name in resources.by_type().items():
            old = self.types.get(type_url)
            if patch is None:
                new = _pack(old, by_name.items())
            elif patch.names[type_url]:
                new = _repack(old, by_name, patch.names[type_url])
            else:
                continue
            if new.version != self.version(type_url):
                self.types[type_url] = new
                changed.add(type_url)
        self.resources = resources
        return changed

    def share(self, twin: Group) -> set[str]:
        """Take what ``twin`` packed from the very same translation (kinds of proxy that
        get the same resources share the snapshots, not just the translation)."""
        changed = {t for t, s in twin.types.items() if s.version != self.version(t)}
        self.types, self.resources = dict(twin.types), twin.resources
        return changed


def _pack(old: TypeSnapshot | None, items: Iterable[tuple[str, Message]]) -> TypeSnapshot:
    old = old or _EMPTY
    entries: dict[str, Entry] = {}
    total = old.total
    for name, msg in items:
        prev = old.entries.get(name)
        if prev is not None and prev.source is msg:  # translation reused it: not re-serialized
            entries[name] = prev
        else:
            entries[name], moved = _entry(name, msg, prev)
            total += moved
    for name in old.entries.keys() - entries.keys():  # removed
        total -= _mark(name, old.entries[name].version)
    total %= _MOD
    return TypeSnapshot(_version_of(total), entries, total)


def _repack(
    old: TypeSnapshot | None, by_name: Mapping[str, Message], names: Iterable[str]
) -> TypeSnapshot:
    """``_pack`` of ``by_name`` when it differs from what ``old`` was packed from only at
    ``names``: the other entries are taken as they are, without a look."""
    old = old or _EMPTY
    entries = dict(old.entries)
    total = old.total
    for name in names:
        prev, msg = entries.get(name), by_name.get(name)
        if msg is None:
            if prev is not None:
                del entries[name]
                total -= _mark(name, prev.version)
        elif prev is None or prev.source is not msg:
            entries[name], moved = _entry(name, msg, prev)
            total += moved
    total %= _MOD
    new = TypeSnapshot(_version_of(total), entries, total, old.entries, frozenset(names))
    if len(entries) == len(old.entries) and all(n in old.entries for n in names):
        new.__dict__["names"] = old.names  # the same names: streams that ask for all still do
    return new


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
    """One snapshot per node profile in use; tells watchers when anything changed."""

    def __init__(self, build: Build | None = None) -> None:
        self._build: Build = build or (lambda _profile: Resources())
        self.groups: dict[NodeProfile, Group] = {ANY_NODE: Group(ANY_NODE)}
        self.groups[ANY_NODE].update(self._build(ANY_NODE))
        self._watchers: list[Callable[[set[str]], None]] = []

    # --- the default group (proxies without labels), for callers that have no node -------

    def version(self, type_url: str) -> str:
        return self.groups[ANY_NODE].version(type_url)

    def snapshot(self, type_url: str) -> TypeSnapshot:
        return self.groups[ANY_NODE].snapshot(type_url)

    def versions(self) -> dict[str, str]:
        return self.groups[ANY_NODE].versions()

    # --- groups ----------------------------------------------------------------------------

    def acquire(self, profile: NodeProfile) -> Group:
        """The group for a profile, translated now if no stream had it yet."""
        group = self.groups.get(profile)
        if group is None:
            group = self.groups[profile] = Group(profile)
            self._take(group, self._build(profile), list(self.groups.values()))
        group.users += 1
        return group

    @staticmethod
    def _take(group: Group, resources: Resources, others: Iterable[Group]) -> set[str]:
        twin = next((g for g in others if g is not group and g.resources is resources), None)
        return group.share(twin) if twin is not None else group.update(resources)

    def release(self, group: Group) -> None:
        group.users -= 1
        if group.users <= 0 and group.profile != ANY_NODE:
            self.groups.pop(group.profile, None)

    # --- updates ---------------------------------------------------------------------------

    def update(self, build: Build) -> set[str]:
        """New config: re-translate every group in use with ``build`` (kept for groups that
        appear later). Returns the type URLs that changed in any group."""
        self._build = build
        changed: set[str] = set()
        done: list[Group] = []
        for group in list(self.groups.values()):
            changed |= self._take(group, build(group.profile), done)
            done.append(group)
        if changed:
            for notify in list(self._watchers):
                notify(changed)
        return changed

    def set_resources(self, resources: Resources) -> set[str]:
        """The same resources for every proxy (no per-node selection)."""
        return self.update(lambda _profile: resources)

    def watch(self, callback: Callable[[set[str]], None]) -> None:
        self._watchers.append(callback)

    def unwatch(self, callback: Callable[[set[str]], None]) -> None:
        if callback in self._watchers:
            self._watchers.remove(callback)
