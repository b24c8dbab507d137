"""A kind of proxy's translation as a whole: the outputs of every resource its shape
includes (translate/translator.py), put together in order, and what a change set changes
in them (``Update``: upserts and removals by type URL), for the cache to pack."""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass, replace

from google.protobuf.message import Message

from ..config.index import ConfigIndex
from ..config.model import Key, Resource
from ..config.results import Results, Run
from .node import ADS, ANY_NODE, NodeProfile
from .options import ISTIO, TranslateOptions
from .translator import ISTIO_SHAPE, LOCALITY_SHAPE, PROXYLESS, Outputs, Phase
from .types import Resources


def profile_options(options: TranslateOptions, node: NodeProfile) -> TranslateOptions:
    """The options as ``node`` needs them (its EDS source, when it has no ADS)."""
    if node.transport == ADS:
        return options
    return replace(
        options, eds_api_type=node.transport, xds_cluster=node.xds_cluster or options.xds_cluster
    )


def profile_index(index: ConfigIndex, node: NodeProfile) -> ConfigIndex:
    """``index`` with only the Gateways whose selector matches the proxy."""
    if node.labels is None:
        return index
    return index.for_gateways(lambda gw: node.selects(gw.selector))


def translate(
    config: Iterable[Resource] | ConfigIndex,
    options: TranslateOptions,
    node: NodeProfile = ANY_NODE,
) -> Resources:
    """Translate a validated config for one kind of proxy (``node``: see translate/node.py;
    the default is a proxy without labels, served every Gateway). Invalid references are
    skipped, not reported: validation runs first and owns the messages."""
    index = config if isinstance(config, ConfigIndex) else ConfigIndex(config)
    out = Assembler(options, node).propose(index, Results().run(None)).resources
    assert out is not None  # a run with nothing kept assembles everything
    return out


def translation_key(index: ConfigIndex, node: NodeProfile) -> Hashable:
    """What ``translate`` reads of ``node`` over ``index``: proxies whose keys are equal get
    the same resources, so they can share one translation (an Envoy labelled for the only
    Gateway gets what a proxy without labels gets)."""
    gateways = index.gateways
    served = frozenset(k for k, gw in gateways.items() if node.selects(gw.selector))
    served_key = None if len(served) == len(gateways) else served
    return (served_key, node.proxyless, node.transport, node.xds_cluster)


@dataclass
class Update:
    """What one translation changes: the resources it gives, and how they differ from the
    ones its assembler last committed (by type URL: name -> message, and names gone)."""

    resources: Resources | None  # None for a patch: the committed ones, updated
    upserts: dict[str, dict[str, Message]]
    removals: dict[str, set[str]]
    exclusive: bool = True  # no name made by two resources (see Assembler)


class Assembler:
    """The translation for one kind of proxy: its resources as last committed. A change
    re-translates the stale resources (those of the change set, and those requiring what
    it changed) and replaces their outputs; where two resources make one name (a shadowed
    route, a host declared twice), order decides, so the whole output is assembled again."""

    def __init__(self, options: TranslateOptions, node: NodeProfile, scope: Hashable = None):
        self.options = profile_options(options, node)
        self.node = node
        self.scope = scope
        self.phases = [*(ISTIO_SHAPE if options.split == ISTIO else LOCALITY_SHAPE)]
        if node.proxyless:
            self.phases.append(PROXYLESS)
        self.resources = Resources()  # as last committed
        self.exclusive = False  # no name made by two resources: a change can be patched in

    def _slot(self, phase: Phase) -> tuple[Hashable, str]:
        """Where a resource's outputs of ``phase`` are kept (config/results.py)."""
        return (self.scope, phase.work.__name__)

    def _outputs(self, phase: Phase, index: ConfigIndex, r: Resource, run: Run) -> Outputs:
        return run.get(r.key, self._slot(phase), lambda: phase.work(index, r, self.options))

    def propose(self, config: ConfigIndex, run: Run) -> Update:
        """The translation of ``config``, which differs from the committed one where
        ``run.stale`` says."""
        index = profile_index(config, self.node)
        if run.stale is not None and self.exclusive and not (index.clashes or index.merged):
            update = self._patch(index, run)
            if update is not None:
                return update
        return self._assemble(index, run)

    def commit(self, update: Update) -> None:
        """``update`` is now what the proxies of this kind are served."""
        if update.resources is not None:
            self.resources, self.exclusive = update.resources, update.exclusive
            return
        by_type = self.resources.by_type()
        for type_url, names in update.removals.items():
            for name in names:
                by_type[type_url].pop(name, None)
        for type_url, msgs in update.upserts.items():
            by_type[type_url].update(msgs)

    def _assemble(self, index: ConfigIndex, run: Run) -> Update:
        """Every group of every phase, and how that differs from the committed output."""
        out = Resources()
        by_type = out.by_type()
        owners: dict[str, dict[str, Key]] = {t: {} for t in by_type}
        exclusive = True
        for phase in self.phases:
            for r in phase.members(index):
                key = r.key
                for group in self._outputs(phase, index, r, run):
                    first_type, first_name, _msg = group[0]
                    if phase.first_wins and first_name in by_type[first_type]:
                        exclusive = False  # another resource came first (validation reports it)
                        continue
                    for type_url, name, msg in group:
                        if owners[type_url].setdefault(name, key) != key:
                            exclusive = False
                        by_type[type_url][name] = msg
        before = self.resources.by_type()
        upserts = {t: {} for t in by_type}  # type: dict[str, dict[str, Message]]
        removals = {t: set() for t in by_type}  # type: dict[str, set[str]]
        for type_url, msgs in by_type.items():
            old = before[type_url]
            upserts[type_url] = {n: m for n, m in msgs.items() if old.get(n) != m}
            removals[type_url] = {n for n in old if n not in msgs}
        return Update(out, upserts, removals, exclusive)

    def _patch(self, index: ConfigIndex, run: Run) -> Update | None:
        """The committed output with the groups of the stale resources replaced, or None
        if it cannot be: a name made by another resource too, where order decides which
        one is sent. A weight change in a 10k-service config then costs one
        VirtualService, not 10k dictionary entries."""
        assert run.stale is not None
        current = self.resources.by_type()
        removals: dict[str, set[str]] = {t: set() for t in current}
        for key in run.stale:
            for phase in self.phases:
                for group in run.committed(key, self._slot(phase)) or ():
                    for type_url, name, _msg in group:
                        removals[type_url].add(name)
        upserts: dict[str, dict[str, Message]] = {t: {} for t in current}
        owners: dict[str, dict[str, Key]] = {t: {} for t in current}
        for key in sorted(run.stale):
            r = index.by_key.get(key)
            if r is None:
                continue
            for phase in self.phases:
                if not phase.member(r):
                    continue
                for group in self._outputs(phase, index, r, run):
                    for type_url, name, msg in group:
                        owner = owners[type_url].setdefault(name, key)
                        if owner != key or (
                            name not in removals[type_url] and name in current[type_url]
                        ):
                            return None  # made by another resource too: order decides
                        if current[type_url].get(name) != msg:
                            upserts[type_url][name] = msg
                        else:  # as committed (an earlier phase's version is overwritten)
                            upserts[type_url].pop(name, None)
        for type_url, made in owners.items():
            removals[type_url] -= made.keys()
        return Update(None, upserts, removals)
