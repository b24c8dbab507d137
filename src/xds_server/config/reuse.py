"""Results worked out from one resource and look-ups in the index, kept from one run to the
next: a resource's checks, what a VirtualService or ServiceEntry translates to.

A result is kept with the deps of its look-ups (config/index.py). When a run starts, the
resources added, removed or changed since the last run mark dirty the deps they can answer
(``provides``), and the results that read a dirty dep are dropped, found through an index
from dep to results; a result is also dropped with its resource. What is left is true for
the new run: a weight change in a 10k-service config drops one VirtualService's results,
and the work of a run is proportional to what changed, not to the config.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from .index import ConfigIndex, Dep, provides
from .model import Key, Resource

T = TypeVar("T")
Unit = tuple[Callable[..., Any], Key]  # (work, resource key): one result


class Reuse(Generic[T]):
    def __init__(self) -> None:
        self._seen: Mapping[Key, Resource] = {}  # the last run's resources
        self._hint: set[Key] | None = None  # the keys the last run was told of
        self._kept: dict[Unit, tuple[Resource, set[Dep], T]] = {}
        self._readers: dict[Dep, set[Unit]] = {}  # dep -> the kept results that read it
        self._works: set[Callable[..., Any]] = set()  # the kinds of result kept
        # The keys that may have no kept result (None: any): those changed, added or
        # removed, those whose results were dropped, and those worked out but not kept.
        self._pending: set[Key] | None = None
        self._unkept: set[Key] = set()  # worked out in this run and not kept
        self._broken = False  # a run stopped on an exception: compare everything next time
        self.computed = self.reused = 0  # in the current run, for benchmarks and tests

    def start_run(self, resources: Mapping[Key, Resource], hint: set[Key] | None = None) -> None:
        """A new run over ``resources`` (every resource of this run's index, by key).
        ``hint``: the keys in which ``resources`` may differ from the last state the caller
        committed (the store knows them); without it, every key is compared."""
        pending: set[Key] | None = set(self._unkept)
        if not self._kept or self._broken:
            keys: Any = self._seen.keys() | resources.keys() if self._kept else ()
            pending = None
        elif hint is None or self._hint is None:
            keys = self._seen.keys() | resources.keys()
        else:  # unless committed, the last run was a proposal: its keys may differ too
            keys = hint | self._hint
        dirty: set[Dep] = set()
        for key in keys:
            old, new = self._seen.get(key), resources.get(key)
            if old is not new:  # an equal copy counts as changed
                for work in self._works:
                    if (work, key) in self._kept:
                        self._drop((work, key))
                if old is not None:
                    dirty.update(provides(old))
                if new is not None:
                    dirty.update(provides(new))
                if pending is not None:
                    pending.add(key)
        for dep in dirty:
            for unit in list(self._readers.get(dep, ())):
                self._drop(unit)
                if pending is not None:
                    pending.add(unit[1])
        self._seen, self._hint, self._pending = resources, hint, pending
        self._unkept, self._broken = set(), False
        self.computed = self.reused = 0

    def abandon(self) -> None:
        """The current run stopped half way (an exception): which results it left out is
        not known, so the next run looks at every resource."""
        self._broken = True

    @property
    def pending(self) -> set[Key] | None:
        """The keys of this run whose results may have been dropped, or never worked out
        (None: any key): every other key's results are kept from earlier runs."""
        return self._pending

    def committed(self) -> None:
        """The last run's resources are now the caller's state: the next run's hint is
        relative to them, with nothing else to compare (after a run that was not
        committed, a rejected proposal, its keys are compared too)."""
        self._hint = set()

    def _drop(self, unit: Unit) -> None:
        _r, deps, _result = self._kept.pop(unit)
        for dep in deps:
            readers = self._readers[dep]
            readers.discard(unit)
            if not readers:
                del self._readers[dep]

    def kept(self, r: Resource, work: Callable[..., T]) -> T | None:
        """The kept result of ``work`` for ``r`` (None if there is none)."""
        hit = self._kept.get((work, r.key))
        return hit[2] if hit is not None and hit[0] is r else None

    def missing(
        self, work: Callable[..., T], resources: Sequence[Resource] | None = None
    ) -> list[Resource]:
        """The resources of this run with no kept result of ``work``: what a run must work
        out, for a caller that works out every resource in every run (so that only the keys
        a run changed, or whose results it dropped, need a look). ``resources``: the run's
        list instead, if it may hold a key twice (the mapping of start_run holds one)."""
        kept, seen = self._kept, self._seen
        if resources is None and self._pending is not None:
            pool: Sequence[Resource] = [seen[k] for k in sorted(self._pending) if k in seen]
            total = len(seen)
        else:
            pool = resources if resources is not None else list(seen.values())
            total = len(pool)
        out = [r for r in pool if (h := kept.get((work, r.key))) is None or h[0] is not r]
        self.reused += total - len(out)
        return out

    def get(
        self,
        r: Resource,
        index: ConfigIndex,
        work: Callable[..., T],
        *args: Any,
        keep: Callable[[T], bool] | None = None,
    ) -> T:
        """``work(*args)`` for ``r`` (it reads ``r`` and looks things up in ``index``), or
        its kept result. ``keep``: whether a new result may be kept. Results are kept by
        resource and ``work``: one Reuse can hold several kinds for one resource."""
        unit = (work, r.key)
        hit = self._kept.get(unit)
        if hit is not None and hit[0] is r:
            self.reused += 1
            return hit[2]
        self.computed += 1
        deps = index.track()
        try:
            result = work(*args)
        except BaseException:
            self._broken = True
            raise
        finally:
            complete = index.untrack()
        if hit is not None:
            self._drop(unit)
        if complete and (keep is None or keep(result)):
            unique = set(deps)
            self._kept[unit] = (r, unique, result)
            readers = self._readers
            for dep in unique:
                if dep in readers:
                    readers[dep].add(unit)
                else:
                    readers[dep] = {unit}
            self._works.add(work)
        else:
            self._unkept.add(r.key)
        return result
