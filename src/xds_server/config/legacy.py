"""The state file of earlier servers (``DIR/config.yaml``), read once to import it.

Those servers kept every resource in one YAML file closed by a seal line (how many
documents, their bytes and a checksum). The import refuses what would shrink the config:
a file with the server's header and no seal is cut short, and a file with no resource
that the server did not seal so is empty or emptied. A file without a seal or header was
edited by hand and is loaded like an apply. The file is left where it is.
"""

from __future__ import annotations

import re
import zlib
from pathlib import Path

from .load import load_paths, load_text
from .model import Resource
from .persist import StateDamagedError

STATE_FILE = "config.yaml"
HEADER = "# xds-server state (sealed): every applied resource."
LEGACY_HEADER = (
    "# xds-server state: every applied resource. Written by the server on each change\n"
    "# (atomically); you may edit it by hand, the server applies the edit when it is valid."
)
_DOCUMENT = re.compile(r"^(?=---)", re.M)  # where a document of the file starts
_SEAL = re.compile(
    r"^# xds-server seal: (\d+) documents, (\d+) bytes, checksum ([0-9a-f]{8})\n", re.M
)


def _sealed(seal: re.Match[str], chunks: list[str]) -> bool:
    """Whether ``chunks`` (the documents, seal left out) are what the seal says."""
    count, size, checksum = int(seal[1]), int(seal[2]), int(seal[3], 16)
    if count != len(chunks):
        return False
    encoded = [c.encode() for c in chunks]
    total = sum(map(len, encoded)), sum(map(zlib.crc32, encoded)) & 0xFFFFFFFF
    return total == (size, checksum)


def read_state_file(file: Path) -> list[Resource]:
    """The resources of an old state file, server metadata included. Raises ConfigError if
    a document is bad, StateDamagedError if the file is cut short or holds nothing."""
    try:
        text = file.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return load_paths([file])  # which reports it as every reader does
    seals = list(_SEAL.finditer(text))
    seal = seals[-1] if seals else None  # the last one counts
    if seal is None and text.startswith(HEADER):
        raise StateDamagedError(
            file, "is cut short: it has the server's header but not its seal line"
        )
    resources = load_text(text, str(file))
    chunks = _DOCUMENT.split(_SEAL.sub("", text) if seal else text)[1:]
    sealed = seal is not None and seal.end() == len(text) and _sealed(seal, chunks)
    if not resources and not sealed and text.strip() != LEGACY_HEADER:
        what = "is empty" if not text.strip() else "holds no resource (only comments)"
        raise StateDamagedError(file, what)
    return resources
