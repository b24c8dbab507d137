"""The state on one machine: an SQLite database (``DIR/state.db``), one row per resource.

An apply is one transaction that writes the rows it changed and the store revision, so a
write costs what it changes, and a crash at any instant leaves the old batch or the new
one (SQLite's write-ahead log, ``synchronous=FULL``: the commit is on disk before the
change is served). A row holds the document as ``get -o yaml`` shows it, as JSON: a
restart reads rows, not YAML line by line.

The database is opened in exclusive locking mode, so a second server on the same
directory is refused rather than served a config the first one goes on changing (and no
shared-memory file is needed, which lets a full disk still be read).

What the server never does is serve a smaller config from a damaged store: a file that is
empty, not a database, fails SQLite's check or has rows this server cannot read is
refused at start with one line. A database whose schema was made and no batch committed
is a first start. A disk that is full or read-only at start is served read-only: the saved
config is served, and each write is refused in one line until the disk is fixed.

``DIR/config.yaml``, the state file of earlier servers, is imported once into a new
database and left in place.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import pickle
import sqlite3
import tempfile
import threading
from pathlib import Path
from typing import Any

from . import model
from .errors import Source
from .legacy import STATE_FILE, read_state_file
from .model import Resource
from .persist import (
    WHAT_TO_DO,
    Loaded,
    StateDamagedError,
    StateError,
    StateWriteError,
    dump_document,
    read_documents,
)
from .store import Proposal

log = logging.getLogger("xds_server")
DB_FILE = "state.db"
FORMAT = "1"
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS resources (
    kind TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    revision INTEGER NOT NULL,  -- the store revision of the row's last change
    document TEXT NOT NULL,     -- JSON: the resource as `get -o yaml` shows it
    object BLOB,                -- the parsed resource, pickled (see MODEL)
    PRIMARY KEY (kind, namespace, name)
) WITHOUT ROWID;
"""
_UPSERT = "INSERT OR REPLACE INTO resources VALUES (?, ?, ?, ?, ?, ?)"
_DELETE = "DELETE FROM resources WHERE kind = ? AND namespace = ? AND name = ?"
_SET = "INSERT OR REPLACE INTO meta VALUES (?, ?)"
_FULL = {"SQLITE_FULL"}
_WRITES_REFUSED = ("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_IOERR", "SQLITE_PERM")


# Rows keep each resource parsed as well as its document, so that a restart does not run
# 30k documents through the schema again; they are used only by the model they were made
# by (this tag, of the model's source), and parsed from their documents otherwise.
MODEL = hashlib.sha256(Path(model.__file__).read_bytes()).hexdigest()[:16]


def _pickled(resource: Resource, document: dict[str, Any]) -> bytes:
    """The resource as parsing its row's document would give it (server metadata in its
    ``raw``, as the store's restore expects; no lines, which point into a file)."""
    kept = object.__new__(type(resource))
    kept.__dict__.update(resource.__dict__, raw=document, lines={})
    return pickle.dumps(kept, protocol=pickle.HIGHEST_PROTOCOL)


class SqliteStore:
    """The durable store in one SQLite file (see the module's doc)."""

    def __init__(self, path: Path, legacy: Path | None = None) -> None:
        self.path = path
        self.where = f"database {path}"
        self.legacy = legacy  # an old state file to import into a new database
        self._db: sqlite3.Connection | None = None
        self._identity: tuple[int, int] | None = None  # (device, inode) of what we opened
        self._refused: StateWriteError | None = None
        self._reopen = False  # whether _db must be opened again to write (read-only, gone)
        self._lock = threading.Lock()  # the connection is used from worker threads
        self.writes = 0  # batches committed
        self._stale_model = False  # whether rows hold objects of another model

    @classmethod
    def in_dir(cls, path: Path) -> SqliteStore:
        return cls(path / DB_FILE, legacy=path / STATE_FILE)

    @property
    def read_only(self) -> StateWriteError | None:
        return self._refused

    # --- opening -----------------------------------------------------------------------

    def load(self) -> Loaded:
        directory = self.path.parent
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise StateError(
                f"state directory {directory} is a file, not a directory: pick another "
                "--state-dir, or move the file away"
            ) from None
        except OSError as e:
            raise StateError(
                f"cannot create the state directory {directory}: {e.strerror}: pick another "
                "--state-dir, or create that directory first"
            ) from None
        if self.path.is_dir():
            raise StateError(f"state database {self.path} is a directory: pick another path")
        existed = self.path.exists()
        if existed and self.path.stat().st_size == 0:
            raise StateDamagedError(self.path, "is empty (0 bytes)")
        try:
            db = self._open()
        except sqlite3.Error as e:
            if not existed:
                raise self._write_error(e) from None  # nothing to serve read-only
            db = self._open_read_only(e)
        else:
            # Reading a full disk works, and the first write would fail: say so at start.
            if (code := self._probe()) is not None:
                self._refused = self._errno_error(code)
        self._db = db
        st = os.stat(self.path)
        self._identity = (st.st_dev, st.st_ino)
        try:
            return self._read(db)
        except sqlite3.DatabaseError as e:
            self.close()
            raise StateDamagedError(self.path, f"is not a state database ({e})") from None
        except BaseException:
            self.close()  # and its lock: nothing is served from it
            raise

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            # Exclusive before WAL: then SQLite never makes the shared-memory index.
            db.execute("PRAGMA locking_mode = EXCLUSIVE")
            if db.execute("PRAGMA journal_mode = WAL").fetchone()[0] != "wal":
                raise sqlite3.OperationalError("cannot use a write-ahead log here")
            db.execute("PRAGMA synchronous = FULL")
            self._check(db)
            if not self._has_schema(db):
                db.executescript(SCHEMA)
            db.execute("BEGIN EXCLUSIVE")  # takes the file's lock, held until close
            db.execute("COMMIT")
        except sqlite3.OperationalError as e:
            db.close()
            if "locked" in str(e):
                raise StateError(
                    f"state database {self.path} is in use by another xds-server: stop it, "
                    "or give this one another --state-dir"
                ) from None
            raise
        except sqlite3.DatabaseError as e:
            db.close()
            raise StateDamagedError(self.path, f"is not a state database ({e})") from None
        return db

    def _open_read_only(self, cause: sqlite3.Error) -> sqlite3.Connection:
        """The saved state of a disk that cannot be written, to serve; writes refused."""
        wal = self.path.with_name(self.path.name + "-wal")
        if wal.exists() and wal.stat().st_size:
            raise StateError(
                f"state database {self.path} has batches in its write-ahead log ({wal}) that "
                f"cannot be replayed: {self._reason(cause)[0]}; fix that and start again"
            ) from None
        try:
            db = sqlite3.connect(
                f"{self.path.resolve().as_uri()}?immutable=1",
                uri=True,
                isolation_level=None,
                check_same_thread=False,
            )
            self._check(db)
        except sqlite3.DatabaseError as e:
            raise StateDamagedError(self.path, f"is not a state database ({e})") from None
        self._refused, self._reopen = self._write_error(cause), True
        return db

    def _check(self, db: sqlite3.Connection) -> None:
        """SQLite's own check of the file (pages, indexes): a damaged one is refused."""
        problems = [row[0] for row in db.execute("PRAGMA quick_check")]
        if problems != ["ok"]:
            raise sqlite3.DatabaseError(f"damaged: {problems[0]}")

    @staticmethod
    def _has_schema(db: sqlite3.Connection) -> bool:
        names = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if names and not {"meta", "resources"} <= names:
            raise sqlite3.DatabaseError("it has tables of another program")
        return bool(names)

    def _read(self, db: sqlite3.Connection) -> Loaded:
        meta = dict(db.execute("SELECT name, value FROM meta").fetchall())
        if "format" not in meta:  # a schema and no batch: a first start
            if db.execute("SELECT count(*) FROM resources").fetchone()[0]:
                raise StateDamagedError(self.path, "has rows but no format record")
            return self._import()
        if meta["format"] != FORMAT:
            raise StateError(
                f"state database {self.path} is of format {meta['format']}, this server reads "
                f"format {FORMAT}: run the server version that wrote it"
            )
        rows = db.execute(
            "SELECT kind, namespace, name, document, object FROM resources ORDER BY 1, 2, 3"
        ).fetchall()
        revision = int(meta.get("revision", 0))
        if meta.get("model") == MODEL:
            try:
                resources = [pickle.loads(row[4]) for row in rows]
            except Exception:  # noqa: BLE001 - any doubt: the documents say what it is
                log.warning("state database %s: parsing its documents again", self.path)
            else:
                if all(isinstance(r, Resource) for r in resources):
                    return Loaded(resources, revision)
        resources = read_documents(
            self.path,
            (
                (f"{kind} {ns}/{name}", text, Source(str(self.path), i + 1))
                for i, (kind, ns, name, text, _) in enumerate(rows)
            ),
        )
        self._stale_model = True  # the next save writes every row's object again
        return Loaded(resources, revision)

    def _import(self) -> Loaded:
        legacy = self.legacy
        if legacy is None or not legacy.exists():
            return Loaded([])
        resources = read_state_file(legacy)  # cut short or empty: refused, as ever
        log.info(
            "importing %d resources from %s (the old state file, kept as it is) into %s",
            len(resources),
            legacy,
            self.path,
        )
        return Loaded(resources, imported=True)

    # --- writing -----------------------------------------------------------------------

    def save(self, proposal: Proposal) -> None:
        with self._lock:
            db, whole = self._writable()
            changed = None if whole or self._stale_model else proposal.changed
            upserts, deletes = [], []
            for key in proposal.resources if changed is None else changed:
                if key in proposal.resources:
                    s = proposal.stored(key)
                    document = s.document()
                    obj = _pickled(s.resource, document)
                    upserts.append((*key, s.state.resource_version, dump_document(document), obj))
                else:
                    deletes.append(key)
            upserts.sort()  # in the table's key order: a B-tree filled in order splits least
            try:
                db.execute("BEGIN IMMEDIATE")
                if changed is None:
                    db.execute("DELETE FROM resources")
                db.executemany(_DELETE, deletes)
                db.executemany(_UPSERT, upserts)
                meta = [("format", FORMAT), ("revision", str(proposal.revision))]
                db.executemany(_SET, [*meta, ("model", MODEL)] if changed is None else meta)
                db.execute("COMMIT")
            except sqlite3.Error as e:
                with contextlib.suppress(sqlite3.Error):
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                raise self._write_error(e) from None
            self.writes += 1
            self._stale_model = False

    def moved(self) -> str | None:
        """What became of the file under the server (``deleted``, ``emptied``, ``replaced``),
        or None if it is still the one it opened."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return "deleted"
        if (st.st_dev, st.st_ino) != self._identity:
            return "replaced"
        return "emptied" if st.st_size == 0 else None

    def _writable(self) -> tuple[sqlite3.Connection, bool]:
        """The connection to write with, and whether it must get every row: a database
        deleted, emptied or replaced under the server is made again, whole, from what the
        server holds (its rows would go to a file nobody opens again, or leave a log with
        no database). A disk refused at start is tried again: reopened once it is fixed."""
        if self._db is None:
            raise StateError(
                f"state database {self.path} is not loaded: call ControlPlane.start() or "
                "load_state() before the first change"
            )
        what = self.moved()
        if what is not None:
            log.error(
                "state database %s was %s while the server ran: writing it again, whole",
                self.path,
                what,
            )
            self._db.close()
            for suffix in ("", "-wal", "-journal"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"{self.path}{suffix}")
            self._refused = StateWriteError(self.path, f"it was {what}", "fix that")
            self._reopen = True
        if self._refused is None:
            return self._db, False
        if not self._reopen:
            if (code := self._probe()) is not None:
                raise self._errno_error(code)
        else:
            try:
                db = self._open()
            except (sqlite3.Error, StateError):
                raise self._refused from None
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db, self._reopen = db, False
            st = os.stat(self.path)
            self._identity = (st.st_dev, st.st_ino)
        self._refused = None
        log.info("state database %s is writable", self.path)
        return self._db, what is not None

    def _write_error(self, e: sqlite3.Error) -> StateWriteError:
        reason, todo = self._reason(e)
        return StateWriteError(self.path, reason, todo)

    def _errno_error(self, code: int) -> StateWriteError:
        return StateWriteError(self.path, os.strerror(code), WHAT_TO_DO.get(code, "fix that"))

    def _reason(self, e: sqlite3.Error) -> tuple[str, str]:
        """What the disk says, in the words of the OS error (``No space left on device``)
        and what to do: SQLite's own messages do not say why a write was refused."""
        name = getattr(e, "sqlite_errorname", "")
        code = errno.ENOSPC if name in _FULL else self._probe()
        if code is None:
            return str(e), "fix that"
        return os.strerror(code), WHAT_TO_DO.get(code, "fix that")

    def _probe(self) -> int | None:
        """The errno of writing a small file beside the database, if that fails."""
        try:
            with tempfile.TemporaryFile(dir=self.path.parent) as f:
                f.write(b"\0" * 65536)
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            return e.errno
        return None

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._db.close()
                self._db = None
