"""Plain-text presentation shared by the CLIs: kubectl-style tables and ages."""

from __future__ import annotations

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
