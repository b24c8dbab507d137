"""Where the config store keeps its state across restarts: the interface every durable
store meets, the errors it raises, and ``open_durable`` to pick one from the command line.

A durable store holds one row per resource (the document ``get -o yaml`` shows, server
metadata included) and the store revision of the last change. ``save`` writes a proposal
as one transaction, only the keys it changed, before the change is served; ``load`` reads
it back at start-up. Two stores meet it: SQLite on one machine (sqlite.py, the default
under ``--state-dir``) and etcd for several replicas.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from .errors import Source
from .load import load_documents
from .model import Key, Resource
from .store import Proposal


class StateError(Exception):
    """The state cannot be used as it is; the message is one line naming where it is and
    what to do."""


class StateWriteError(StateError):
    """The state could not be written (disk full, read-only, database down): nothing
    changed, so the change was not applied."""

    def __init__(self, where: str | os.PathLike[str], reason: str, todo: str) -> None:
        self.file, self.reason, self.todo = where, reason, todo
        super().__init__(
            f"cannot write the state {_named(where)}: {reason}; the change was not applied: "
            f"{todo}, then apply again"
        )


class StateDamagedError(StateError):
    """The saved state is missing, empty, cut short or not ours: loading it would serve a
    smaller config, so nothing is loaded."""

    def __init__(self, where: str | os.PathLike[str], problem: str) -> None:
        self.file, self.problem = where, problem
        super().__init__(
            f"state {_named(where)} {problem}; nothing was loaded: restore it from a backup "
            "(xdsctl apply -f of a `get -A -o yaml` export), or delete it to start with an "
            "empty config"
        )


class StoreBehindError(StateError):
    """A shared store holds a change this replica has not taken yet: the batch was not
    written. Take that change (``Shared.wait_for``) and run the batch again."""

    def __init__(self, where: str, revision: int) -> None:
        self.where, self.revision = where, revision
        super().__init__(f"{where} changed meanwhile (at revision {revision})")


def _named(where: str | os.PathLike[str]) -> str:
    """``database /x/state.db``, ``file /x/config.yaml`` or what a network store says."""
    if isinstance(where, Path):
        return f"{'database' if where.suffix == '.db' else 'file'} {where}"
    return str(where)


def dump_document(document: object) -> str:
    """A stored document's text: JSON, compact, as every store keeps it."""
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"))


def read_documents(
    where: str | os.PathLike[str], rows: Iterable[tuple[str, str | bytes, Source]]
) -> list[Resource]:
    """The resources of stored documents, each row (what it is, its text, where it came
    from). A row that is not JSON is StateDamagedError naming it; a document that is no
    longer a valid resource, ConfigError as for any input."""
    documents = []
    for what, text, source in rows:
        try:
            documents.append((json.loads(text), source))
        except ValueError as e:
            raise StateDamagedError(where, f"has a row it cannot read ({what}: {e})") from None
    return load_documents(documents)


@dataclass(frozen=True)
class Loaded:
    """What a durable store holds: its resources (server metadata in each document), the
    store revision of its last change, and whether it came from a file of the old format
    (then the control plane saves it once, into the new store)."""

    resources: list[Resource]
    revision: int = 0
    imported: bool = False


class Durable(Protocol):
    """A durable config store, as the control plane uses it."""

    where: str  # for messages: ``database /x/state.db``

    @property
    def read_only(self) -> StateWriteError | None:
        """Why writes are refused now (a full or read-only disk at start), or None."""

    def load(self) -> Loaded:
        """The saved state at start-up. Raises StateError, or ConfigError if a saved
        document is no longer valid."""

    def save(self, proposal: Proposal) -> None:
        """Write what the proposal changed as one transaction; raises StateWriteError (and
        changes nothing) if it cannot."""

    def moved(self) -> str | None:
        """What became of a store kept in a file, if it was deleted, emptied or replaced
        under the server (the next save writes it whole), else None."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class Replicated:
    """A change another replica wrote to a shared store: resources written (documents
    with their metadata) and keys deleted, at a store revision; ``whole``: the upserts are
    the whole config (a listing, after the store lost the history in between)."""

    upserts: list[Resource]
    gone: list[Key]
    revision: int
    revision_mod: int  # the shared store's own mark for it (see etcdstore.py)
    etcd_revision: int
    whole: bool = False


@dataclass(frozen=True)
class Replica:
    """A control plane sharing the store, as it announced itself: where its admin API and
    xDS listen, so that xdsctl can ask each one for its proxies."""

    id: str
    admin: str  # HOST:PORT, "" if it serves no admin API
    xds: str


@runtime_checkable
class Shared(Durable, Protocol):
    """A durable store that several control planes share (etcd): each takes what the
    others write."""

    def follow(self, apply: Callable[[Replicated], None]) -> None:
        """Start following the others: ``apply`` is called, from another thread, with each
        change; it takes it (``ConfigStore.sync``) and then calls ``applied``."""

    def applied(self, change: Replicated) -> None: ...

    def wait_for(self, etcd_revision: int, timeout: float) -> bool:
        """Whether the changes up to that revision are taken within ``timeout`` seconds."""

    def announce(self, me: Replica) -> None:
        """Tell the other replicas this one is there, for as long as it runs."""

    def replicas(self) -> list[Replica]:
        """The replicas there now (this one included), as of a second ago at most."""


# What to do about a write that failed with this errno.
WHAT_TO_DO = {
    errno.ENOSPC: "free space on that file system",
    errno.EDQUOT: "free space within the quota",
    errno.EROFS: "mount it read-write",
    errno.EACCES: "make the directory writable by this user",
    errno.EPERM: "make the directory writable by this user",
}


def open_durable(state_dir: str | os.PathLike[str] | None, url: str | None) -> Durable | None:
    """The durable store that ``--state-dir DIR`` or ``--store URL`` name (None: neither,
    memory only). ``sqlite:PATH`` is a database file; ``etcd://HOST:PORT[,...][/prefix]``
    an etcd cluster. Raises StateError for a URL of no known store."""
    from .sqlite import SqliteStore

    if url is None:
        return SqliteStore.in_dir(Path(state_dir)) if state_dir is not None else None
    if url.startswith("sqlite:"):
        path = url.removeprefix("sqlite:").removeprefix("//")
        if not path:
            raise StateError("--store sqlite:PATH needs a path, e.g. sqlite:state/state.db")
        return SqliteStore(Path(path))
    if url.startswith("etcd://"):
        from .etcdstore import EtcdStore

        return EtcdStore(url)
    raise StateError(
        f"--store {url}: unknown store; use sqlite:PATH or etcd://HOST:PORT[,HOST:PORT...]"
    )
