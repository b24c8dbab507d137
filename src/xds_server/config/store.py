"""The config store: applies a batch all-or-nothing.

A batch is merged into a copy of the current set, the whole result is validated (so a
reference to a resource applied earlier, or removed by this batch, is checked), handed to
the ``prepare`` hook (the control plane translates it there: whatever translation finds
wrong stops the batch too), then to the ``persist`` hook (which may write it to disk and
may fail), and only then does the copy become current. A batch that fails at any step
leaves the store, and the state on disk, exactly as they were.

Like Kubernetes, the store owns ``metadata.resourceVersion`` (the revision of the last
change), ``generation`` (bumped when the document changes) and ``creationTimestamp``. A
document that carries a ``resourceVersion`` is applied only if it is still the current one:
a stale one is a conflict, never silently merged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, NamedTuple

from .errors import ConfigError, Problem, errors_of
from .index import ConfigIndex
from .model import Key, Resource, qualified_kind, resource_type
from .results import Results, Run
from .validate import PortClaims, duplicates, validate

CREATED, CONFIGURED, UNCHANGED, DELETED = "created", "configured", "unchanged", "deleted"
SERVER_FIELDS = ("resourceVersion", "generation", "creationTimestamp", "uid")


class Change(NamedTuple):  # a named tuple: an apply of 30k resources makes 30k of them
    """One line of kubectl's answer: ``virtualservice.networking.istio.io/tcp-echo configured``."""

    kind: str
    namespace: str
    name: str
    action: str
    resource_version: int = 0

    def __str__(self) -> str:
        return f"{qualified_kind(self.kind)}/{self.name} {self.action}"


class Applied(list[Change]):
    """What a change did, one Change per resource, and the warnings (what Istio accepts and
    then ignores or works around; kubectl's ``Warning:``) about the resources the change
    set reaches: those it wrote, and those whose checks depend on them (a route it
    shadows)."""

    def __init__(self, changes: Iterable[Change] = (), warnings: Iterable[Problem] = ()) -> None:
        super().__init__(changes)
        self.warnings = list(warnings)


@dataclass(frozen=True)
class ObjectState:
    """What the store adds to a resource, as Kubernetes' ObjectMeta does."""

    generation: int  # bumped when the document changes
    resource_version: int  # the store revision of the last change
    created: str  # RFC 3339


@dataclass(frozen=True)
class Stored:
    """A resource as the store holds it, for the ``persist`` hook."""

    resource: Resource
    state: ObjectState

    @property
    def key(self) -> Key:
        return self.resource.key

    def document(self) -> dict[str, Any]:
        """The resource as ``kubectl get -o yaml`` shows it: the applied document plus the
        metadata the store keeps."""
        r, st = self.resource, self.state
        meta = dict(r.raw.get("metadata") or {})
        meta.update(
            creationTimestamp=st.created,
            generation=st.generation,
            resourceVersion=str(st.resource_version),
        )
        rest = {k: v for k, v in r.raw.items() if k not in ("apiVersion", "kind", "metadata")}
        return {"apiVersion": r.api_version, "kind": r.kind, "metadata": meta, **rest}


@dataclass(frozen=True)
class Proposal:
    """A validated state about to become current, for the ``prepare`` and ``persist``
    hooks. ``changed``: the keys in which it differs from the current state, the change
    set (None: it may differ anywhere, as the first config does), so that a hook redoes
    only those. ``run``: the per-resource results of this proposal (config/results.py),
    kept from the current state where they still hold; a hook adds its own."""

    resources: Mapping[Key, Resource]
    state: Mapping[Key, ObjectState]
    changed: frozenset[Key] | None = None
    index: ConfigIndex | None = None
    run: Run | None = None
    revision: int = 0

    def stored(self, key: Key) -> Stored:
        return Stored(self.resources[key], self.state[key])


class ConflictError(Exception):
    """An apply carried a resourceVersion that is no longer current."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class NotFoundError(KeyError):
    """A delete named a resource the store does not have."""

    def __str__(self) -> str:
        return str(self.args[0])


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _strip_server_fields(r: Resource) -> tuple[Resource, dict[str, Any]]:
    """The resource without store-owned metadata, and those fields as they were written."""
    meta = dict(r.raw.get("metadata") or {})
    given = {k: meta.pop(k) for k in SERVER_FIELDS if k in meta}
    meta["namespace"] = r.meta.namespace  # written or not, the same document
    # A shallow copy with another raw: dataclasses.replace re-runs __init__ and copy.copy
    # goes through __reduce_ex__, each several times slower over 30k resources.
    clean = object.__new__(type(r))
    clean.__dict__.update(r.__dict__)
    clean.raw = {**r.raw, "metadata": meta}
    return clean, given


Hook = Callable[[Proposal], None]


class ConfigStore:
    """The current, always-valid set of resources, and a revision that counts commits.

    ``prepare``, if given, receives each validated Proposal before ``persist`` does. If
    either raises, nothing changes.
    """

    def __init__(self, persist: Hook | None = None, prepare: Hook | None = None) -> None:
        # The current resources and their state, swapped as one: a reader on another thread
        # (the admin API, while a change is worked out off the event loop) sees one or the
        # other commit, never half of each. A current dict is never written to.
        self._current: tuple[dict[Key, Resource], dict[Key, ObjectState]] = ({}, {})
        self.revision = 0
        self.persist = persist
        self.prepare = prepare
        self.results = Results()  # per-resource results of the current state
        self.claims = PortClaims()  # its VirtualServices' claims on gateway ports
        self.last: Proposal | None = None  # the last proposal committed
        self.last_run: Run | None = None  # the results of the last proposal validated
        self.index = ConfigIndex([])  # look-ups over the current set, for translation too

    @property
    def _resources(self) -> dict[Key, Resource]:
        return self._current[0]

    @property
    def _state(self) -> dict[Key, ObjectState]:
        return self._current[1]

    # --- reading ---------------------------------------------------------------------------

    def document(self, key: Key) -> dict[str, Any]:
        """The resource as ``kubectl get -o yaml`` shows it."""
        resources, state = self._current
        return Stored(resources[key], state[key]).document()

    def state(self, key: Key) -> ObjectState:
        return self._state[key]

    def resources(self) -> list[Resource]:
        return list(self._resources.values())

    def get(self, kind: str, namespace: str, name: str) -> Resource | None:
        return self._resources.get((kind, namespace, name))

    def of_kind(self, kind: str | None = None) -> list[Resource]:
        return sorted(
            (r for r in self._resources.values() if kind is None or r.kind == kind),
            key=lambda r: r.key,
        )

    # --- writing ---------------------------------------------------------------------------

    def apply(self, batch: Iterable[Resource], *, dry_run: bool = False) -> Applied:
        """Create or update each resource of the batch (kubectl apply)."""
        batch = list(batch)
        self._reject_duplicates(batch)
        proposed = dict(self._resources)
        conflicts = []
        for r in batch:
            clean, given = _strip_server_fields(r)
            wanted = given.get("resourceVersion")
            current = self._state.get(r.key)
            if wanted not in (None, "") and (
                current is None or str(wanted) != str(current.resource_version)
            ):
                conflicts.append(self._conflict(r, current))
            proposed[r.key] = clean
        if conflicts:
            raise ConflictError(conflicts)
        return self._commit(proposed, [r.key for r in batch], dry_run=dry_run)

    def replace(self, resources: Iterable[Resource]) -> Applied:
        """Make the store hold exactly ``resources`` (a config directory reloaded)."""
        resources = list(resources)
        self._reject_duplicates(resources)
        proposed = {r.key: _strip_server_fields(r)[0] for r in resources}
        gone = [k for k in self._resources if k not in proposed]
        return self._commit(proposed, list(proposed), gone)

    def restore(self, resources: Iterable[Resource], revision: int | None = None) -> Applied:
        """Load a saved state: like ``replace``, but keep the resourceVersion, generation and
        creationTimestamp the documents carry, so that they survive a restart. ``revision``:
        the saved store revision, which the commit takes (None: one past the newest
        document's, as for a file that kept no revision)."""
        return self._adopt(resources, (), revision, whole=True, persist=True)

    def sync(
        self,
        upserts: Iterable[Resource],
        gone: Iterable[Key],
        revision: int | None,
        *,
        whole: bool = False,
    ) -> Applied:
        """Take a change the durable store holds already (another replica's, or the saved
        state at start-up; its documents carry their metadata) at its store revision (None:
        as ``restore``), without persisting it. ``whole``: ``upserts`` is the whole config."""
        return self._adopt(upserts, gone, revision, whole=whole, persist=False)

    def _adopt(
        self,
        resources: Iterable[Resource],
        gone: Iterable[Key],
        revision: int | None,
        *,
        whole: bool,
        persist: bool,
    ) -> Applied:
        resources = list(resources)
        self._reject_duplicates(resources)
        proposed: dict[Key, Resource] = {} if whole else dict(self._resources)
        saved = {}
        for r in resources:
            clean, given = _strip_server_fields(r)
            proposed[r.key] = clean
            try:
                saved[r.key] = ObjectState(
                    int(given["generation"]),
                    int(given["resourceVersion"]),
                    str(given["creationTimestamp"]),
                )
            except (KeyError, ValueError):
                continue  # written by hand: gets fresh metadata like any new resource
        for key in gone:
            proposed.pop(key, None)
        removed = [k for k in self._resources if k not in proposed]
        touched = [r.key for r in resources]
        if revision is None:
            self.revision = max([self.revision, *(s.resource_version for s in saved.values())])
        changes = self._commit(
            proposed, touched, removed, saved=saved, revision=revision, persist=persist
        )
        if revision is not None:
            self.revision = max(self.revision, revision)  # also when nothing changed
        return changes

    def delete(
        self, keys: Iterable[Key], *, ignore_not_found: bool = False, dry_run: bool = False
    ) -> Applied:
        """Delete by key, all or none; a missing resource is kubectl's NotFound. ``dry_run``:
        validate what is left (a rule still naming a deleted host fails) and change nothing."""
        proposed = dict(self._resources)
        changes = Applied()
        for key in keys:
            if proposed.pop(key, None) is None:
                if ignore_not_found:
                    continue
                kind, ns, name = key
                raise NotFoundError(
                    f'{kind.lower()}.networking.istio.io "{name}" not found in namespace "{ns}"'
                )
            changes.append(Change(*key, DELETED))
        if changes:
            gone = [(c.kind, c.namespace, c.name) for c in changes]
            self._commit(proposed, [], gone, dry_run=dry_run)
        return changes

    @staticmethod
    def _reject_duplicates(batch: list[Resource]) -> None:
        problems = duplicates(batch)
        if problems:
            raise ConfigError(problems)

    @staticmethod
    def _conflict(r: Resource, current: ObjectState | None) -> Problem:
        now = f"it is now {current.resource_version}" if current else "it does not exist"
        return Problem(
            r.source,
            f'Operation cannot be fulfilled on {resource_type(r.kind)} "{r.meta.name}": '
            f"the object has been modified ({now}); please apply your changes to the latest "
            "version and try again",
            kind=r.kind,
            name=r.ref,
            field="metadata.resourceVersion",
            hint="get the resource again, or drop metadata.resourceVersion to overwrite",
        )

    def _commit(
        self,
        proposed: dict[Key, Resource],
        touched: list[Key],
        gone: Sequence[Key] = (),
        *,
        dry_run: bool = False,
        saved: dict[Key, ObjectState] | None = None,
        revision: int | None = None,
        persist: bool = True,
    ) -> Applied:
        """Validate ``proposed`` (the current state with ``touched`` written and ``gone``
        removed), hand it to the hooks and make it current. Only the change set, the keys
        whose document changed, is validated and translated again. ``revision``: the one
        the commit takes (one past the current by default)."""
        revision = self.revision + 1 if revision is None else revision
        now = _now()
        state = dict(self._state)
        for key in gone:
            del state[key]
        actions: dict[Key, str] = {}
        changed: set[Key] = set(gone)
        moved: list[Key] = []  # unchanged, written elsewhere: messages point at the new place
        for key in touched:
            r = proposed[key]
            old, old_state = self._resources.get(key), self._state.get(key)
            if (
                saved
                and key in saved
                and (old is None or (old_state, old.raw) != (saved[key], r.raw))
            ):
                state[key], actions[key] = saved[key], CREATED if old is None else CONFIGURED
            elif old_state is None or old is None:
                state[key], actions[key] = ObjectState(1, revision, now), CREATED
            elif old.raw != r.raw:
                state[key] = replace(
                    old_state, generation=old_state.generation + 1, resource_version=revision
                )
                actions[key] = CONFIGURED
            else:
                state[key], actions[key] = old_state, UNCHANGED
                if old.source == r.source and old.lines == r.lines:
                    proposed[key] = old
                else:
                    moved.append(key)
                continue
            changed.add(key)
        changes = Applied(
            [Change(*k, DELETED) for k in sorted(gone)]
            + [Change(*k, actions[k], state[k].resource_version) for k in touched]
        )
        if not changed:
            return changes
        first = not self._resources
        index = self.index.updated(proposed, [*changed, *moved])
        stale = None if first else index.stale(changed, self.index)
        run = self.last_run = self.results.run(stale)
        problems, claims = validate(index.resources, index, run, None if first else self.claims)
        if errors := errors_of(problems):
            raise ConfigError(errors)
        changes.warnings = problems  # about what the change set made stale: errors raised
        if dry_run:
            return changes
        proposal = Proposal(
            proposed, state, None if first else frozenset(changed), index, run, revision
        )
        if self.prepare is not None:
            self.prepare(proposal)
        if self.persist is not None and persist:
            self.persist(proposal)
        self._current, self.revision = (proposed, state), revision
        self.index, self.claims, self.last = index, claims, proposal
        run.commit()
        return changes
