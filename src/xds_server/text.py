"""Plain-text presentation shared by the CLIs and the server: kubectl-style tables, ages,
and long texts cut to their head."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell, three spaces apart, as kubectl prints them."""
    table = [list(headers), *([str(c) for c in r] for r in rows)]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    return "\n".join(
        "   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in table
    )


def age(since: float | None, now: float | None = None) -> str:
    """kubectl's AGE: 42s, 5m, 3h, 2d (``-`` when unknown)."""
    if since is None:
        return "-"
    s = max(0, int((now if now is not None else time.time()) - since))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"


BYTES = "... ({size} bytes)"  # shorten()'s marker: the head, then the full size


def shorten(text: str, limit: int, marker: str = BYTES, *, recut: bool = False) -> str:
    """``text`` if it is at most ``limit`` characters, else its head and its full size in
    UTF-8 bytes, as ``marker`` says it (``{size}``). With ``recut``, a text that already
    ends with ``marker`` is taken for one cut before: it keeps the size first given."""
    head, size = text, None
    if recut:
        before, _, after = marker.partition("{size}")
        cut = re.fullmatch(rf"(.*){re.escape(before)}(\d+){re.escape(after)}", text, re.DOTALL)
        if cut:
            head, size = cut[1], int(cut[2])
    if len(head) <= limit and size is None:
        return text
    if size is None:
        size = len(text.encode("utf-8", "replace"))
    return f"{head[:limit]}{marker.format(size=size)}"
