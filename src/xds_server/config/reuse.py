"""Results worked out from one resource and look-ups in the index, kept from one run to the
next: a resource's checks, a VirtualService's bound routes.

A result is reused while its resource is the same object and no resource that could answer
one of its look-ups (config/index.py: ``provides``) was added, removed or changed since the
last run. Telling that costs a set test per result instead of repeating the look-ups, so a
weight change in a 10k-service config works out one VirtualService again, not 30k results.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

from .index import ConfigIndex, Dep, provides
from .model import Resource

T = TypeVar("T")
Key = tuple[str, str, str]


class Reuse(Generic[T]):
    def __init__(self) -> None:
        self._seen: dict[Key, Resource] = {}  # the last run's resources
        self._dirty: set[Dep] = set()  # deps that may answer differently in this run
        self._last: dict[tuple, tuple[Resource, list[Dep], T]] = {}
        self._now: dict[tuple, tuple[Resource, list[Dep], T]] = {}
        self.computed = self.reused = 0  # in the current run, for benchmarks and tests

    def start_run(self, resources: Iterable[Resource]) -> None:
        """A new run over ``resources`` (every resource the index of this run holds)."""
        seen = {r.key: r for r in resources}
        dirty: set[Dep] = set()
        for key, r in seen.items() if self._now else ():  # nothing kept: nothing to test
            old = self._seen.get(key)
            if old is not r:  # new or changed: an equal copy counts as changed
                dirty.update(provides(r))
                if old is not None:
                    dirty.update(provides(old))
        for key, old in self._seen.items():
            if key not in seen:
                dirty.update(provides(old))
        self._seen, self._dirty = seen, dirty
        self._last, self._now = self._now, {}
        self.computed = self.reused = 0

    def get(
        self,
        r: Resource,
        index: ConfigIndex,
        work: Callable[..., T],
        *args: Any,
        keep: Callable[[T], bool] | None = None,
    ) -> T:
        """``work(*args)`` for ``r`` (it reads ``r`` and looks things up in ``index``), or
        its result from an earlier run when still true. ``keep``: whether a new result may
        be reused later. Results are kept by resource and ``work``: one Reuse can hold
        several kinds of result for one resource."""
        key = (work, r.key)
        hit = self._last.get(key)
        if hit is not None and hit[0] is r and self._dirty.isdisjoint(hit[1]):
            self._now[key] = hit
            self.reused += 1
            return hit[2]
        self.computed += 1
        deps = index.track()
        try:
            result = work(*args)
        finally:
            complete = index.untrack()
        if complete and (keep is None or keep(result)):
            self._now[key] = (r, deps, result)
        return result
