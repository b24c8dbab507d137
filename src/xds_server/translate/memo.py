"""Translation results kept from one run to the next, so that a change rebuilds (and the
snapshot cache re-serializes) only the resources whose inputs changed.

A result is found by what it builds (a resource name) and reused only when every input is
the same object or equal to it (dataclass equality on the Istio model, which covers every
field translation reads): the answer is the one a fresh translation would give, sooner.
What a run did not use is dropped when the next run ends, so the memo holds one config.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from ..config.index import same
from ..config.reuse import Reuse
from ..config.routing import BoundRoute

T = TypeVar("T")


class Memo:
    """One per kind of proxy (its translations differ); see ControlPlane._push."""

    def __init__(self) -> None:
        self._last: dict[Hashable, tuple[tuple, Any]] = {}
        self._now: dict[Hashable, tuple[tuple, Any]] = {}
        self.built = self.reused = 0  # in the last run, for benchmarks and tests
        self.routes: Reuse[list[BoundRoute]] = Reuse()  # each VirtualService's bound routes

    def get(self, key: Hashable, inputs: tuple, build: Callable[[], T]) -> T:
        hit = self._last.get(key)
        if hit is not None and same(hit[0], inputs):
            self.reused += 1
            result = hit[1]
        else:
            self.built += 1
            result = build()
        self._now[key] = (inputs, result)
        return result

    def start_run(self) -> None:
        self._last, self._now = self._now, {}
        self.built = self.reused = 0
