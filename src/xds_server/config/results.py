"""The results worked out per resource (its checks, what it translates to for each kind of
proxy), kept while they hold, in one cache keyed by resource.

A result of a resource depends on the resource and on the deps it ``requires``
(config/index.py). A commit knows which keys it changed, and the index turns those into
the keys whose results may be stale (``ConfigIndex.stale``); a run over a proposal drops
exactly those, works out what it needs on top of the committed results, and becomes them
only if the proposal is committed. A run that is not (a rejected batch, a failed write, an
exception half way) leaves nothing behind.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Iterable
from typing import Any, TypeVar

from .model import Key

T = TypeVar("T")
Slot = Hashable  # which result of a resource: "check", or a translation's scope


class Results:
    """The committed config's results, by key and slot."""

    def __init__(self) -> None:
        self._by_key: dict[Key, dict[Slot, Any]] = {}

    def run(self, stale: Iterable[Key] | None) -> Run:
        """A run over a proposal that differs from the committed config at ``stale``
        (None: anywhere, nothing is reused)."""
        return Run(self, None if stale is None else set(stale))

    def _commit(self, run: Run) -> None:
        if run.stale is None:
            self._by_key = {}
        else:
            for key in run.stale:
                self._by_key.pop(key, None)
        by_key = self._by_key
        for (key, slot), value in run.new.items():
            slots = by_key.get(key)
            if slots is None:
                by_key[key] = {slot: value}
            else:
                slots[slot] = value

    def drop(self, which: Callable[[Slot], bool]) -> None:
        """Forget the results of the slots ``which`` picks (a kind of proxy no longer
        served)."""
        for slots in self._by_key.values():
            for slot in [s for s in slots if which(s)]:
                del slots[slot]


class Run:
    """Results for one proposal: the committed ones that still hold, and new ones."""

    def __init__(self, results: Results, stale: set[Key] | None) -> None:
        self.results = results
        self.stale = stale
        self.new: dict[tuple[Key, Slot], Any] = {}
        # Results worked out and reused, by slot: for tests and benchmarks.
        self.computed: Counter[Slot] = Counter()
        self.reused: Counter[Slot] = Counter()

    def get(self, key: Key, slot: Slot, work: Callable[[], T]) -> T:
        """The result of ``slot`` for ``key``: kept if it still holds, else ``work()``."""
        hit = self.new.get((key, slot), _MISSING)
        if hit is _MISSING and (self.stale is not None and key not in self.stale):
            hit = self.results._by_key.get(key, _NONE).get(slot, _MISSING)
        if hit is not _MISSING:
            self.reused[slot] += 1
            return hit  # type: ignore[no-any-return]
        self.computed[slot] += 1
        value = self.new[(key, slot)] = work()
        return value

    def committed(self, key: Key, slot: Slot) -> Any:
        """The committed result, stale or not (None if there is none)."""
        return self.results._by_key.get(key, _NONE).get(slot)

    def commit(self) -> None:
        """The proposal became the committed config: its results are the committed ones."""
        self.results._commit(self)


_MISSING: Any = object()
_NONE: dict[Slot, Any] = {}
