"""``istioctl analyze`` offline: every problem and warning a set of files would get, without
a server (the same loading and validation an apply goes through)."""

from __future__ import annotations

from collections.abc import Iterable

from .errors import ConfigError, Problem
from .load import load_text
from .validate import validate

SCHEMA_CODE = "IST0106"  # istioctl analyze's code for what Istio's webhook refuses or warns of
FOUND_ISSUES_EXIT = 79  # istioctl analyze's exit code when it found issues


def analyze(documents: Iterable[tuple[str, str]], namespace: str | None = None) -> list[Problem]:
    """The problems of (file, text) documents read as one config, in reading order. A file
    that cannot be read stops there, as an apply would (its references would only add
    noise)."""
    problems: list[Problem] = []
    resources = []
    for file, text in documents:
        try:
            resources += load_text(text, file, namespace)
        except ConfigError as e:
            problems += e.problems
    return problems or validate(resources)[0]


def code(p: Problem) -> str:
    return p.code or SCHEMA_CODE


def level(p: Problem) -> str:
    return "Warning" if p.warning else "Error"


def message_line(p: Problem) -> str:
    """One message as istioctl analyze prints it: level, code, resource and its origin."""
    where = p.source.file + (f":{p.source.line}" if p.source.line is not None else "")
    what = f"{p.kind} {p.name} {where}" if p.kind and p.name else where
    text = f"{p.field}: {p.message}" if p.field else p.message
    if p.hint:
        text += f" (hint: {p.hint})"
    return f"{level(p)} [{code(p)}] ({what}) {text}"
