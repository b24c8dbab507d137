"""Errors a user can cause with configuration, each pointing at file, document and field."""

from __future__ import annotations

from dataclasses import dataclass, field


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
    """One thing wrong with the input: a location, a field path and what to do about it."""

    source: Source
    message: str
    kind: str | None = None
    name: str | None = None  # "namespace/name"
    field: str | None = None  # e.g. "spec.tcp[0].route[1].weight"
    hint: str | None = None

    def __str__(self) -> str:
        where = self.source.file
        if self.source.line is not None:
            where += f":{self.source.line}"
        parts = [f"{where}: document {self.source.doc}" if self.source.doc else where]
        if self.kind:
            parts[0] += f" ({self.kind} {self.name})" if self.name else f" ({self.kind})"
        if self.field:
            parts.append(self.field)
        parts.append(self.message)
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
