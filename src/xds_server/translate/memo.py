"""Translation results kept from one run to the next, so that a change rebuilds (and the
snapshot cache re-serializes) only what it touched.

Two levels. What one resource translates to (a VirtualService's routes, clusters and
listeners; a ServiceEntry's clusters) is kept with the deps of its look-ups
(config/reuse.py) and reused whole while they are unchanged: a weight change in a
10k-service config translates one VirtualService. A resource translated again keeps the
earlier object of every output that came out equal, so the snapshot cache sees by identity
that it is unchanged and does not serialize it again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from google.protobuf.message import Message

from ..config.model import Key, Resource
from ..config.reuse import Reuse
from .options import TranslateOptions
from .types import Resources

M = TypeVar("M", bound=Message)


class Memo:
    """One per translation in use (kinds of proxy served the same share one: see
    translation_key and ControlPlane._translate)."""

    def __init__(self) -> None:
        self.units: Reuse = Reuse()
        self.last = Resources()  # the previous run's output
        self._options: TranslateOptions | None = None
        self.built = self.kept = 0  # outputs of the resources translated again, last run
        # What the last output came from (see translator._assemble): each resource's
        # groups of outputs, and whether no name came from two resources.
        self.made: dict[Key, list] = {}
        self.exclusive = False

    def start_run(
        self,
        resources: Mapping[Key, Resource],
        options: TranslateOptions,
        hint: set[Key] | None = None,
    ) -> None:
        if options != self._options:  # every result read the options: none still holds
            self.units, self._options = Reuse(), options
        self.units.start_run(resources, hint)
        self.built = self.kept = 0

    def committed(self) -> None:
        """The last run's config became the store's: the next run's hint is relative to it.
        Until then (a proposal translated and not committed: a write that failed) the next
        run also looks again at what this one was told changed (see Reuse.committed)."""
        self.units.committed()

    def settle(self, earlier: dict[str, Message], name: str, new: M) -> M:
        """``new``, or the earlier output of that name if equal to it."""
        old = earlier.get(name)
        if old is not None and old == new:
            self.kept += 1
            return old  # type: ignore[return-value]
        self.built += 1
        return new
