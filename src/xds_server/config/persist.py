"""The state directory: the durable form of the config store.

One file, ``config.yaml``, holds every resource of one store revision, so a crash can
leave only the old file or the new one, never a mix: it is written to a temp file in the
same directory, fsync'ed, renamed over the old one, and the directory is fsync'ed so the
rename itself survives power loss. Editing the file by hand is allowed; the server watches
it and applies the edit like any other change.

Each resource's YAML is rendered once per change of that resource (with libyaml when
PyYAML has it) and the file is the texts joined: an apply that changes one weight of a
10k-resource config renders one document, not 10k.
"""

from __future__ import annotations

import bisect
import hashlib
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path

import yaml

from .load import load_paths, load_text
from .model import Key, Resource
from .store import ObjectState, Proposal

STATE_FILE = "config.yaml"
TMP_PREFIX, TMP_SUFFIX = ".config.", ".tmp"
HEADER = (
    "# xds-server state: every applied resource. Written by the server on each change\n"
    "# (atomically); you may edit it by hand, the server applies the edit when it is valid.\n"
)
_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_HEADER = HEADER.encode()
_DOCUMENT = re.compile(r"^(?=---)", re.M)  # where a document of the file starts


def render(document: dict) -> str:
    """One YAML document, ``---`` first, keys in the order written: the text yaml.dump
    gives, from nodes built here for plain data (PyYAML's representer is most of the cost
    of a state file of 30k documents), or from yaml.dump itself for anything else."""
    try:
        node = _node(document)
    except TypeError:
        return yaml.dump(document, Dumper=_Dumper, sort_keys=False, explicit_start=True)
    return yaml.serialize(node, Dumper=_Dumper, explicit_start=True)


_TAG = "tag:yaml.org,2002:"


def _node(value: object) -> yaml.Node:
    """The node SafeRepresenter makes of plain data (block style, no aliases: documents
    here share no objects); TypeError for any other type."""
    kind = type(value)
    if kind is str:
        return yaml.ScalarNode(_TAG + "str", value)
    if kind is dict:
        pairs = [(_node(k), _node(v)) for k, v in value.items()]  # type: ignore[attr-defined]
        return yaml.MappingNode(_TAG + "map", pairs, flow_style=False)
    if kind is list:
        items = [_node(v) for v in value]  # type: ignore[attr-defined]
        return yaml.SequenceNode(_TAG + "seq", items, flow_style=False)
    if kind is bool:
        return yaml.ScalarNode(_TAG + "bool", "true" if value else "false")
    if kind is int:
        return yaml.ScalarNode(_TAG + "int", str(value))
    if value is None:
        return yaml.ScalarNode(_TAG + "null", "null")
    raise TypeError(kind)


def _documents(resources: list[Resource], text: str) -> dict[Key, tuple[dict, str]]:
    """Each loaded resource's document and its text in the file, so that saving the same
    state again (the restore at start-up, a reload after a hand edit) reuses the text
    instead of rendering 30k documents. Empty if the file is not one text per document,
    each starting with ``---``."""
    chunks = _DOCUMENT.split(text)[1:]
    if len(chunks) != len(resources):
        return {}
    return {r.key: (r.raw, chunk) for r, chunk in zip(resources, chunks, strict=True)}


def _digest(path: Path) -> bytes | None:
    try:
        return hashlib.sha256(path.read_bytes()).digest()
    except OSError:
        return None


class StateDir:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.file = self.path / STATE_FILE
        self._texts: dict[Key, bytes] = {}  # each resource's document as written
        self._made: dict[Key, tuple[Resource, ObjectState]] = {}  # what it was rendered from
        self._order: list[Key] = []  # the keys of _texts, sorted: the file's order
        # What we last wrote, and its digest once a watcher asked (see edited).
        self._written: tuple[list[bytes], bytes | None] | None = None
        self.writes = 0  # how many times we wrote the file
        self._loaded: dict[Key, tuple[dict, str]] = {}  # see _documents

    def load(self) -> list[Resource]:
        """The saved resources at start-up ([] on first start). Raises ConfigError if the
        file is bad."""
        self.path.mkdir(parents=True, exist_ok=True)
        for tmp in self.path.glob(f"{TMP_PREFIX}*{TMP_SUFFIX}"):
            tmp.unlink(missing_ok=True)  # a write cut short (kill -9): never the state
        return self.read()

    def read(self) -> list[Resource]:
        """The resources in the file now (after a hand edit). Safe beside a write: it
        touches no temp file."""
        if not self.file.exists():
            return []
        try:
            text = self.file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return load_paths([self.file])  # which reports it as every reader does
        resources = load_text(text, str(self.file))
        self._loaded = _documents(resources, text)
        return resources

    def edited(self) -> bool:
        """Whether the file is no longer the one this object last wrote (someone edited,
        replaced or removed it), so that a watcher can skip the events of our own writes."""
        written = self._written
        if written is None:
            return True
        chunks, digest = written
        if digest is None:  # hashed when first asked, not on every save
            digest = hashlib.sha256(b"".join(chunks)).digest()
            self._written = (chunks, digest)
        return _digest(self.file) != digest

    def save(self, proposal: Proposal) -> None:
        """Replace the state file atomically. Only the resources the proposal may have
        changed are looked at (all of them on the first save), and only those that did
        change are rendered again; the file is the texts joined in key order."""
        texts, made = dict(self._texts), dict(self._made)
        whole = proposal.changed is None or not self._order
        if whole:
            keys: Iterable[Key] = texts.keys() | proposal.resources.keys()
            order = sorted(proposal.resources)
        else:
            keys, order = proposal.changed, list(self._order)
        for key in keys:
            if key not in proposal.resources:
                if texts.pop(key, None) is not None and not whole:
                    del order[bisect.bisect_left(order, key)]
                made.pop(key, None)
                continue
            s = proposal.stored(key)
            hit = made.get(key)
            if hit is None and not whole:
                bisect.insort(order, key)
            if hit is None or hit[0] is not s.resource or hit[1] != s.state:
                doc, loaded = s.document(), self._loaded.get(key)
                text = loaded[1] if loaded is not None and loaded[0] == doc else render(doc)
                texts[key], made[key] = text.encode(), (s.resource, s.state)
        self._write([_HEADER, *map(texts.__getitem__, order)])
        self._texts, self._made, self._order = texts, made, order
        self._loaded = {}

    def _write(self, chunks: list[bytes]) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=TMP_PREFIX, suffix=TMP_SUFFIX)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(b"".join(chunks))  # one copy of the file, already encoded
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.file)
            self._written = (chunks, None)
            self.writes += 1
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
