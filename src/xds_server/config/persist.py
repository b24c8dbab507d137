"""The state directory: the durable form of the config store.

One file, ``config.yaml``, holds every resource of one store revision, so a crash can
leave only the old file or the new one, never a mix: it is written to a temp file in the
same directory, fsync'ed, renamed over the old one, and the directory is fsync'ed so the
rename itself survives power loss. Editing the file by hand is allowed; the server watches
it and applies the edit like any other change.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import yaml

from .load import load_paths
from .model import Resource

STATE_FILE = "config.yaml"
HEADER = (
    "# xds-server state: every applied resource. Written by the server on each change\n"
    "# (atomically); you may edit it by hand, the server applies the edit when it is valid.\n"
)


class StateDir:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.file = self.path / STATE_FILE

    def load(self) -> list[Resource]:
        """The saved resources ([] on first start). Raises ConfigError if the file is bad."""
        self.path.mkdir(parents=True, exist_ok=True)
        if not self.file.exists():
            return []
        return load_paths([self.file])

    def save(self, documents: list[dict]) -> None:
        """Replace the state file atomically."""
        text = HEADER + yaml.safe_dump_all(documents, sort_keys=False, explicit_start=True)
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=".config.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.file)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
