"""Read Istio YAML into the model: texts and files in, resources out, or every problem.

The entry point of the config pipeline: yamldata.py reads each text into plain data with
the line of every field, parse.py turns each document into a resource (its shape checked
against schema.py), and this module reports what could not be read (syntax errors, refused
data, repeated keys), expands directories and raises one ConfigError listing every problem
with its file, document and line. Rules that need other fields or other resources are
checked afterwards, by validate.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from . import yamldata
from .errors import ConfigError, Problem, Reporter, Source, sort_problems
from .model import DEFAULT_NAMESPACE, Resource
from .parse import parse_resource

YAML_SUFFIXES = (".yaml", ".yml")


def _refused(d: yamldata.Document, rep: Reporter) -> None:
    """One problem per refused part of a document, naming the resource if it can."""
    data: dict[str, Any] = d.data if isinstance(d.data, dict) else {}
    meta: dict[str, Any] = data["metadata"] if isinstance(data.get("metadata"), dict) else {}
    if isinstance(data.get("kind"), str):
        rep.kind = data["kind"]
    if isinstance(meta.get("name"), str):
        rep.name = f"{meta.get('namespace') or DEFAULT_NAMESPACE}/{meta['name']}"
    for r in d.refusals:
        rep.problems.append(
            Problem(rep.source.at(r.line), r.message, rep.kind, rep.name, r.path or None)
        )


def _load(
    text: str, file: str, problems: list[Problem], namespace: str | None = None
) -> list[Resource]:
    resources = []
    for d in yamldata.documents(text):
        if d.error is not None:
            problems.append(yamldata.syntax_problem(d.error, text, file, d.index))
            break
        rep = Reporter(Source(file, d.index, d.line), problems, d.lines)
        if d.refusals:
            _refused(d, rep)
            continue
        resource = parse_resource(d.data, rep, namespace)
        for path in d.dups:
            rep.add(path, "duplicate key: YAML keeps only the last value")
        if resource is not None:
            resources.append(resource)
    return resources


# --- Public API ----------------------------------------------------------------------------


def load_text(text: str, file: str = "<input>", namespace: str | None = None) -> list[Resource]:
    """Resources in a multi-document YAML text; raises ConfigError listing every problem.
    ``namespace``: as ``kubectl apply -n`` (see parse.parse_resource)."""
    problems: list[Problem] = []
    resources = _load(text, file, problems, namespace)
    if problems:
        raise ConfigError(sort_problems(problems))
    return resources


def load_documents(documents: Iterable[tuple[Any, Source]]) -> list[Resource]:
    """Resources from documents already read (a database's rows), each with where it
    came from; raises ConfigError listing every problem, as load_text does."""
    problems: list[Problem] = []
    resources = []
    for doc, source in documents:
        resource = parse_resource(doc, Reporter(source, problems))
        if resource is not None:
            resources.append(resource)
    if problems:
        raise ConfigError(sort_problems(problems))
    return resources


def _expand(path: Path, problems: list[Problem]) -> list[Path]:
    """A directory stands for its *.yaml/*.yml files (sorted, not recursive)."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in YAML_SUFFIXES and p.is_file())
        if not files:
            problems.append(Problem(Source(str(path)), "no *.yaml or *.yml files in directory"))
        return files
    if not path.exists():
        problems.append(Problem(Source(str(path)), "no such file or directory"))
        return []
    return [path]


def load_paths(paths: Iterable[str | Path], namespace: str | None = None) -> list[Resource]:
    """Resources from files and directories, in order; raises ConfigError listing every
    problem in every file. ``namespace``: as for load_text."""
    problems: list[Problem] = []
    resources: list[Resource] = []
    for path in paths:
        for file in _expand(Path(path), problems):
            try:
                text = file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as e:
                problems.append(Problem(Source(str(file)), f"cannot read file: {e}"))
                continue
            resources += _load(text, str(file), problems, namespace)
    if problems:
        raise ConfigError(sort_problems(problems))
    return resources
