"""The config store: applies a batch all-or-nothing.

A batch is merged into a copy of the current set, the whole result is validated (so a
reference to a resource applied earlier, or removed by this batch, is checked), and only
then does the copy become current. A failed batch leaves the store exactly as it was.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from .errors import ConfigError
from .model import Resource
from .validate import duplicates, validate

Key = tuple[str, str, str]  # kind, namespace, name

CREATED, CONFIGURED, UNCHANGED, DELETED = "created", "configured", "unchanged", "deleted"


@dataclass(frozen=True)
class Change:
    """One line of kubectl's answer: ``virtualservice.networking.istio.io/tcp-echo configured``."""

    kind: str
    namespace: str
    name: str
    action: str

    def __str__(self) -> str:
        return f"{self.kind.lower()}.networking.istio.io/{self.name} {self.action}"


@dataclass(frozen=True)
class ObjectState:
    """What the store adds to a resource, as Kubernetes' ObjectMeta does."""

    generation: int  # bumped when the document changes
    resource_version: int  # the store revision of the last change
    created: str  # RFC 3339


class ConfigStore:
    """The current, always-valid set of resources, and a revision that counts commits."""

    def __init__(self) -> None:
        self._resources: dict[Key, Resource] = {}
        self._state: dict[Key, ObjectState] = {}
        self.revision = 0

    def document(self, key: Key) -> dict:
        """The resource as ``kubectl get -o yaml`` shows it: the applied document plus the
        metadata the store keeps."""
        r, st = self._resources[key], self._state[key]
        meta = dict(r.raw.get("metadata") or {})
        meta["namespace"] = r.meta.namespace
        meta.update(
            creationTimestamp=st.created,
            generation=st.generation,
            resourceVersion=str(st.resource_version),
        )
        return {
            "apiVersion": r.api_version,
            "kind": r.kind,
            "metadata": meta,
            **{k: v for k, v in r.raw.items() if k not in ("apiVersion", "kind", "metadata")},
        }

    def resources(self) -> list[Resource]:
        return list(self._resources.values())

    def get(self, kind: str, namespace: str, name: str) -> Resource | None:
        return self._resources.get((kind, namespace, name))

    def of_kind(self, kind: str | None = None) -> list[Resource]:
        return sorted(
            (r for r in self._resources.values() if kind is None or r.kind == kind),
            key=lambda r: r.key,
        )

    def apply(self, batch: Iterable[Resource]) -> list[Change]:
        """Create or update each resource of the batch (kubectl apply)."""
        batch = list(batch)
        self._reject_duplicates(batch)
        proposed = dict(self._resources)
        changes = []
        for r in batch:
            old = proposed.get(r.key)
            action = CREATED if old is None else UNCHANGED if old.raw == r.raw else CONFIGURED
            proposed[r.key] = r
            changes.append(Change(r.kind, r.meta.namespace, r.meta.name, action))
        self._commit(proposed)
        return changes

    def replace(self, resources: Iterable[Resource]) -> list[Change]:
        """Make the store hold exactly ``resources`` (a config directory reloaded)."""
        resources = list(resources)
        self._reject_duplicates(resources)
        proposed = {r.key: r for r in resources}
        changes = [Change(*k, DELETED) for k in self._resources if k not in proposed]
        for r in resources:
            old = self._resources.get(r.key)
            action = CREATED if old is None else UNCHANGED if old.raw == r.raw else CONFIGURED
            changes.append(Change(r.kind, r.meta.namespace, r.meta.name, action))
        self._commit(proposed)
        return changes

    def delete(self, keys: Iterable[Key]) -> list[Change]:
        """Delete by key; a missing resource is an error, like kubectl's NotFound."""
        proposed = dict(self._resources)
        changes = []
        for key in keys:
            if proposed.pop(key, None) is None:
                raise KeyError(key)
            changes.append(Change(*key, DELETED))
        self._commit(proposed)
        return changes

    @staticmethod
    def _reject_duplicates(batch: list[Resource]) -> None:
        problems = duplicates(batch)
        if problems:
            raise ConfigError(problems)

    def _commit(self, proposed: dict[Key, Resource]) -> None:
        problems = validate(list(proposed.values()))
        if problems:
            raise ConfigError(problems)
        self.revision += 1
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        state = {}
        for key, r in proposed.items():
            old, old_state = self._resources.get(key), self._state.get(key)
            if old_state is None:
                state[key] = ObjectState(1, self.revision, now)
            elif old is not None and old.raw != r.raw:
                state[key] = replace(
                    old_state, generation=old_state.generation + 1, resource_version=self.revision
                )
            else:
                state[key] = old_state
        self._resources, self._state = proposed, state
