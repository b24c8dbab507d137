"""The state directory: the durable form of the config store.

One file, ``config.yaml``, holds every resource of one store revision, so a crash can
leave only the old file or the new one, never a mix: it is written to a temp file in the
same directory, fsync'ed, renamed over the old one, and the directory is fsync'ed so the
rename itself survives power loss. Editing the file by hand is allowed; the server watches
it and applies the edit like any other change.

The server never shrinks the config from a damaged or missing file. What it writes starts
with its header and ends with a seal line (how many documents, their bytes and a checksum),
so that what it reads falls in one of these cases:

- sealed, and the seal matches: the server's own file;
- a seal that does not match, or no header at all: a hand edit (or a file written by an
  older server), applied like an apply when valid, deleted documents included;
- the header without a seal: cut short (a truncated copy, a half-written edit). Refused;
- no resource at all (empty, emptied, only comments), unless the server wrote it so (sealed
  with 0 documents): refused; to remove everything, use ``xdsctl delete``;
- no file: a first start; while the server runs, a deletion, refused.

Refused at start, the server does not start, and says which file and what to do; refused
while it runs, it keeps serving the last good config and writes the file back.

A failed write (disk full, read-only) raises StateWriteError: the store does not commit, so
the change is not applied and the caller gets one line naming the file.

Each resource's YAML is rendered once per change of that resource (with libyaml when
PyYAML has it) and the file is the texts joined: an apply that changes one weight of a
10k-resource config renders one document, not 10k. The seal sums a checksum kept per
document, so it costs what changed, not the whole file.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import hashlib
import logging
import os
import re
import tempfile
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from .load import load_paths, load_text
from .model import Key, Resource
from .store import ObjectState, Proposal

log = logging.getLogger("xds_server")
STATE_FILE = "config.yaml"
TMP_PREFIX, TMP_SUFFIX = ".config.", ".tmp"
HEADER = (
    "# xds-server state (sealed): every applied resource. Written by the server on each\n"
    "# change (atomically) and closed by a seal line. You may edit it by hand: the server\n"
    "# applies the edit when it is valid, and seals the file again. A file whose header\n"
    "# is here but whose seal is gone is taken as cut short and refused.\n"
)
# The header of servers before the seal: their files are loaded as hand edits.
LEGACY_HEADER = (
    "# xds-server state: every applied resource. Written by the server on each change\n"
    "# (atomically); you may edit it by hand, the server applies the edit when it is valid.\n"
)
_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_HEADER = HEADER.encode()
_DOCUMENT = re.compile(r"^(?=---)", re.M)  # where a document of the file starts
_SEAL = re.compile(
    r"^# xds-server seal: (\d+) documents, (\d+) bytes, checksum ([0-9a-f]{8})\n", re.M
)


def _seal(count: int, size: int, checksum: int) -> bytes:
    return f"# xds-server seal: {count} documents, {size} bytes, checksum {checksum:08x}\n".encode()


class StateError(Exception):
    """The state directory cannot be used as it is; the message is one line naming the path
    and what to do."""


class StateWriteError(StateError):
    """The state file could not be written (disk full, read-only, ...): nothing changed."""

    def __init__(self, file: Path, reason: str, todo: str) -> None:
        self.file, self.reason, self.todo = file, reason, todo
        super().__init__(
            f"cannot write the state file {file}: {reason}; the change was not applied: "
            f"{todo}, then apply again"
        )


class StateDamagedError(StateError):
    """The state file is missing, empty or cut short: loading it would shrink the config."""

    def __init__(self, file: Path, problem: str) -> None:
        self.file, self.problem = file, problem
        super().__init__(
            f"state file {file} {problem}; nothing was loaded: restore it from a backup, "
            "or delete it to start with an empty config"
        )


def render(document: dict[str, Any]) -> str:
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


def _documents(
    resources: list[Resource], chunks: list[str]
) -> dict[Key, tuple[dict[str, Any], str]]:
    """Each loaded resource's document and its text in the file, so that saving the same
    state again (the restore at start-up, a reload after a hand edit) reuses the text
    instead of rendering 30k documents. Empty if the file is not one text per document,
    each starting with ``---``."""
    if len(chunks) != len(resources):
        return {}
    return {r.key: (r.raw, chunk) for r, chunk in zip(resources, chunks, strict=True)}


def _sealed(seal: re.Match[str], chunks: list[str]) -> bool:
    """Whether ``chunks`` (the documents, seal left out) are what the seal says."""
    count, size, checksum = int(seal[1]), int(seal[2]), int(seal[3], 16)
    if count != len(chunks):
        return False
    encoded = [c.encode() for c in chunks]
    total = sum(map(len, encoded)), sum(map(zlib.crc32, encoded)) & 0xFFFFFFFF
    return total == (size, checksum)


def _digest(path: Path) -> bytes | None:
    try:
        return hashlib.sha256(path.read_bytes()).digest()
    except OSError:
        return None


_WHAT_TO_DO = {
    errno.ENOSPC: "free space on that file system",
    errno.EDQUOT: "free space within the quota",
    errno.EROFS: "mount it read-write",
    errno.EACCES: "make the directory writable by this user",
    errno.EPERM: "make the directory writable by this user",
}


class StateDir:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.file = self.path / STATE_FILE
        self._texts: dict[Key, bytes] = {}  # each resource's document as written
        # The seal sums each document's size and CRC-32: the CRC of each text is kept.
        self._crcs: dict[Key, int] = {}
        self._totals = (0, 0)  # the seal of _texts: their bytes, and their CRCs summed
        self._made: dict[Key, tuple[Resource, ObjectState]] = {}  # what it was rendered from
        self._order: list[Key] = []  # the keys of _texts, sorted: the file's order
        # What we last wrote, and its digest once a watcher asked (see edited).
        self._written: tuple[list[bytes], bytes | None] | None = None
        self.writes = 0  # how many times we wrote the file
        self._loaded: dict[Key, tuple[dict[str, Any], str]] = {}  # see _documents
        self.sealed = False  # whether the file last read was our own, seal matching

    def load(self) -> list[Resource]:
        """The saved resources at start-up ([] on first start). Raises ConfigError if the
        file is bad, StateDamagedError if it is empty or cut short, StateError if the
        directory cannot be used."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise StateError(
                f"state directory {self.path} is a file, not a directory: pick another "
                "--state-dir, or move the file away"
            ) from None
        except OSError as e:
            raise StateError(
                f"cannot create the state directory {self.path}: {e.strerror}: pick another "
                "--state-dir, or create that directory first"
            ) from None
        for tmp in self.path.glob(f"{TMP_PREFIX}*{TMP_SUFFIX}"):
            with contextlib.suppress(OSError):  # read-only: left for a later start
                tmp.unlink(missing_ok=True)  # a write cut short (kill -9): never the state
        return self.read(missing_ok=True)

    def read(self, *, missing_ok: bool = False) -> list[Resource]:
        """The resources in the file now (after a hand edit). Safe beside a write: it
        touches no temp file. Raises StateDamagedError rather than shrink the config from a
        file that is gone (unless ``missing_ok``: a first start), empty or cut short."""
        try:
            text = self.file.read_bytes().decode("utf-8")
        except FileNotFoundError:
            if missing_ok:
                return []
            raise StateDamagedError(self.file, "was deleted") from None
        except (OSError, UnicodeDecodeError):
            return load_paths([self.file])  # which reports it as every reader does
        seals = list(_SEAL.finditer(text))
        seal = seals[-1] if seals else None  # the last one counts
        if seal is None and text.startswith(HEADER.split("\n", 1)[0]):
            raise StateDamagedError(
                self.file, "is cut short: it has the server's header but not its seal line"
            )
        resources = load_text(text, str(self.file))
        chunks = _DOCUMENT.split(_SEAL.sub("", text) if seal else text)[1:]
        self.sealed = seal is not None and seal.end() == len(text) and _sealed(seal, chunks)
        if not resources and not self.sealed and text.strip() != LEGACY_HEADER.strip():
            what = "is empty" if not text.strip() else "holds no resource (only comments)"
            raise StateDamagedError(self.file, what)
        self._loaded = _documents(resources, chunks)
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
        change are rendered again; the file is the texts joined in key order, sealed.
        Raises StateWriteError, and changes nothing, if the file cannot be written."""
        texts, crcs, made = dict(self._texts), dict(self._crcs), dict(self._made)
        size, checksum = self._totals
        changed = proposal.changed
        whole = changed is None or not self._order
        keys: Iterable[Key]
        if whole or changed is None:  # (the second test only narrows changed's type)
            keys = texts.keys() | proposal.resources.keys()
            order = sorted(proposal.resources)
        else:
            keys, order = changed, list(self._order)
        for key in keys:
            if key not in proposal.resources:
                if (gone := texts.pop(key, None)) is not None:
                    if not whole:
                        del order[bisect.bisect_left(order, key)]
                    size, checksum = size - len(gone), checksum - crcs.pop(key)
                made.pop(key, None)
                continue
            s = proposal.stored(key)
            hit = made.get(key)
            if hit is None and not whole:
                bisect.insort(order, key)
            if hit is None or hit[0] is not s.resource or hit[1] != s.state:
                doc, loaded = s.document(), self._loaded.get(key)
                text = loaded[1] if loaded is not None and loaded[0] == doc else render(doc)
                old = texts.get(key, b"")
                chunk = texts[key] = text.encode()
                made[key] = (s.resource, s.state)
                crc = zlib.crc32(chunk)
                size += len(chunk) - len(old)
                checksum += crc - crcs.get(key, 0)
                crcs[key] = crc
        seal = _seal(len(order), size, checksum & 0xFFFFFFFF)
        self._write([_HEADER, *map(texts.__getitem__, order), seal])
        self._texts, self._crcs, self._made, self._order = texts, crcs, made, order
        self._totals = (size, checksum)
        self._loaded = {}

    def _error(self, e: OSError) -> StateWriteError:
        todo = _WHAT_TO_DO.get(e.errno or 0, "fix that")
        return StateWriteError(self.file, e.strerror or str(e), todo)

    def _write(self, chunks: list[bytes]) -> None:
        try:
            fd, tmp = tempfile.mkstemp(dir=self.path, prefix=TMP_PREFIX, suffix=TMP_SUFFIX)
        except OSError as e:
            raise self._error(e) from None
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(b"".join(chunks))  # one copy of the file, already encoded
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.file)
            self._written = (chunks, None)
            self.writes += 1
        except BaseException as e:
            with contextlib.suppress(OSError):
                Path(tmp).unlink(missing_ok=True)
            if isinstance(e, OSError):
                raise self._error(e) from None
            raise
        try:
            dir_fd = os.open(self.path, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as e:  # the new file is in place: the change stands
            log.warning("state file %s written, but not its directory's entry: %s", self.file, e)
