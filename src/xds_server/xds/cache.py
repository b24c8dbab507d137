"""Snapshot cache: the resources every proxy should have, versioned by content.

Each resource is serialized and packed into an ``Any`` once per content version and the
same object is shared by every stream and every response. Versions are content hashes,
so a restarted control plane gives the same version for the same config and a proxy that
reconnects with what it already has is not sent it again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from google.protobuf import any_pb2
from google.protobuf.message import Message

from ..translate import PUSH_ORDER, Resources


@dataclass(frozen=True)
class Entry:
    name: str
    version: str  # hash of this resource's bytes
    any: any_pb2.Any


@dataclass(frozen=True)
class TypeSnapshot:
    version: str
    entries: Mapping[str, Entry] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return sum(e.any.ByteSize() for e in self.entries.values())


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _type_version(entries: Mapping[str, Entry]) -> str:
    h = hashlib.sha256()
    for name in sorted(entries):
        h.update(name.encode() + b"\0" + entries[name].version.encode() + b"\0")
    return h.hexdigest()[:16]


EMPTY_VERSION = _type_version({})


class SnapshotCache:
    """Holds one snapshot per type URL and tells watchers when a type changed."""

    def __init__(self) -> None:
        self._types: dict[str, TypeSnapshot] = {t: TypeSnapshot(EMPTY_VERSION) for t in PUSH_ORDER}
        self._watchers: list[Callable[[set[str]], None]] = []

    def version(self, type_url: str) -> str:
        return self._types.get(type_url, TypeSnapshot(EMPTY_VERSION)).version

    def snapshot(self, type_url: str) -> TypeSnapshot:
        return self._types.get(type_url, TypeSnapshot(EMPTY_VERSION))

    def versions(self) -> dict[str, str]:
        return {t: s.version for t, s in self._types.items()}

    def set_resources(self, resources: Resources) -> set[str]:
        """Replace everything; returns the type URLs whose content changed (and so got a new
        version). Unchanged resources keep their packed bytes."""
        changed: set[str] = set()
        for type_url, by_name in resources.by_type().items():
            new = self._pack(self._types.get(type_url), by_name.items())
            if new.version != self.version(type_url):
                self._types[type_url] = new
                changed.add(type_url)
        if changed:
            for notify in list(self._watchers):
                notify(changed)
        return changed

    @staticmethod
    def _pack(old: TypeSnapshot | None, items: Iterable[tuple[str, Message]]) -> TypeSnapshot:
        entries: dict[str, Entry] = {}
        for name, msg in items:
            data = msg.SerializeToString(deterministic=True)
            version = _digest(data)
            prev = old.entries.get(name) if old else None
            if prev is not None and prev.version == version:
                entries[name] = prev
                continue
            packed = any_pb2.Any(
                type_url="type.googleapis.com/" + msg.DESCRIPTOR.full_name, value=data
            )
            entries[name] = Entry(name, version, packed)
        return TypeSnapshot(_type_version(entries), entries)

    def watch(self, callback: Callable[[set[str]], None]) -> None:
        self._watchers.append(callback)

    def unwatch(self, callback: Callable[[set[str]], None]) -> None:
        if callback in self._watchers:
            self._watchers.remove(callback)
