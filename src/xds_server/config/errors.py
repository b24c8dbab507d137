"""Problems a user can cause with configuration, and how each is reported.

A problem points at file, document, line and field (``spec.tcp[0].route``); the helpers
below build those field paths, pin a problem to the line of its field and word the values
and hints it quotes. Shape checks (schema.py, parse.py) and Istio's rules (validate.py)
report through them, so every problem reads the same way.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..text import shorten

if TYPE_CHECKING:
    from .model import Resource


@dataclass(frozen=True)
class Source:
    """Where a resource came from, so every message can point back at it."""

    file: str = "<input>"
    doc: int = 1  # 1-based index of the YAML document inside the file (0: none)
    line: int | None = None  # 1-based line of the document's start

    def at(self, line: int | None) -> Source:
        return Source(self.file, self.doc, line if line is not None else self.line)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input: a location, a field path and what to do about it.
    A warning is accepted, as Istio accepts it (its webhook's warnings and its analyzers'
    messages, with their ``code`` such as IST0101), and shown as kubectl shows warnings."""

    source: Source
    message: str
    kind: str | None = None
    name: str | None = None  # "namespace/name"
    field: str | None = None  # e.g. "spec.tcp[0].route[1].weight"
    hint: str | None = None
    warning: bool = False
    code: str | None = None  # Istio's message code (istioctl analyze)

    def __str__(self) -> str:
        where = self.source.file
        if self.source.line is not None:
            where += f":{self.source.line}"
        parts = [f"{where}: document {self.source.doc}" if self.source.doc else where]
        if self.kind:
            parts[0] += f" ({self.kind} {self.name})" if self.name else f" ({self.kind})"
        if self.field:
            parts.append(self.field)
        parts.append(f"{self.message} [{self.code}]" if self.code else self.message)
        text = ": ".join(parts)
        if self.hint:
            text += f" (hint: {self.hint})"
        return text


@dataclass
class ConfigError(Exception):
    """Raised with every problem found, so a user fixes them all in one round."""

    problems: list[Problem] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(str(self))

    def __str__(self) -> str:
        if len(self.problems) == 1:
            return str(self.problems[0])
        lines = [f"{len(self.problems)} problems:"]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


# --- Field paths ---------------------------------------------------------------------------


def join(path: str, key: object) -> str:
    """Field paths read like the YAML: ``spec.tcp[0].route``; an empty key shows as ``""``."""
    if key == "":
        key = '""'
    return f"{path}.{key}" if path else str(key)


def item(path: str, index: int) -> str:
    return f"{path}[{index}]"


_LAST_STEP = re.compile(r"(\.[^.\[]*|\[\d+\])$")


def line_of(lines: Mapping[str, int], path: str, default: int | None) -> int | None:
    """Line of ``path``, or of its nearest recorded parent: a missing field is reported on
    the line of the mapping that should hold it."""
    while path:
        if path in lines:
            return lines[path]
        parent = _LAST_STEP.sub("", path)
        path = "" if parent == path else parent
    return default


# --- Wording -------------------------------------------------------------------------------

SHOWN_CHARS = 100  # of a long value in a message: a problem list must stay readable


def describe(value: object) -> str:
    """A value the way the user wrote it in YAML, for ``got ...`` in messages; a long one
    as its head and its size, so that a message about a 1 MB name is short. A string is
    cut before it is quoted: its escapes and closing quote stay whole."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return json.dumps(shorten(value, SHOWN_CHARS))
    if isinstance(value, bool | int | float) or value is None:
        return shorten(json.dumps(value), SHOWN_CHARS)
    return shorten(str(value), SHOWN_CHARS)


def known_hint(word: str, choices: Iterable[str], what: str) -> str:
    """'did you mean "x"?' for a near miss, else the list of valid choices."""
    choices = sorted(set(choices))
    close = difflib.get_close_matches(word, choices, n=1)
    if close:
        return f'did you mean "{close[0]}"?'
    return f"known {what}: {', '.join(choices)}" if choices else f"no {what} are defined"


# --- Collecting ----------------------------------------------------------------------------


def sort_problems(problems: list[Problem], files_in_order: Iterable[str] = ()) -> list[Problem]:
    """Problems in reading order: files in the order given (else as first seen), then
    document, then line."""
    files: dict[str, int] = {}
    for file in files_in_order:
        files.setdefault(file, len(files))
    for p in problems:
        files.setdefault(p.source.file, len(files))
    return sorted(problems, key=lambda p: (files[p.source.file], p.source.doc, p.source.line or 0))


@dataclass
class Reporter:
    """Collects problems about one document, pinning each to the line of its field."""

    source: Source
    problems: list[Problem]
    lines: dict[str, int] = field(default_factory=dict)
    kind: str | None = None
    name: str | None = None  # "namespace/name"

    @classmethod
    def for_resource(cls, resource: Resource, problems: list[Problem]) -> Reporter:
        return cls(resource.source, problems, resource.lines, resource.kind, resource.ref)

    def add(
        self,
        path: str,
        message: str,
        hint: str | None = None,
        code: str | None = None,
        warning: bool = False,
    ) -> None:
        where = self.source.at(line_of(self.lines, path, self.source.line))
        self.problems.append(
            Problem(where, message, self.kind, self.name, path or None, hint, warning, code)
        )

    def warn(
        self, path: str, message: str, hint: str | None = None, code: str | None = None
    ) -> None:
        """Something Istio accepts and then ignores or works around: said, not refused."""
        self.add(path, message, hint, code, warning=True)


def errors_of(problems: Iterable[Problem]) -> list[Problem]:
    return [p for p in problems if not p.warning]


def warnings_of(problems: Iterable[Problem]) -> list[Problem]:
    return [p for p in problems if p.warning]
