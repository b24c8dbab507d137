"""Read YAML as kube-apiserver does: into JSON-like data only, within bounds.

kube-apiserver turns YAML into JSON before anything looks at it, so a resource is mappings
with string keys, lists, strings, integers, finite floats, booleans and null. This reader
does the same in one pass over libyaml's composed nodes, recording the line of every field:

- A plain scalar that YAML 1.1 reads as a timestamp stays the string it was written as; a
  plain key that reads as a number, boolean or null is kept as written, as a string.
- Any other tag (``!!binary``, ``!!set``, ``!!omap``, ``!!python/...``, ``!custom``), a
  collection as a key, a non-finite float and an alias of a node it is inside of are
  refused: they have no JSON form, and stored they would break ``get`` and the state file.
- Nesting deeper than ``MAX_DEPTH``, aliases that would build more than ``MAX_ALIAS_NODES``
  nodes (a "billion laughs" bomb of a few hundred bytes builds millions) and documents
  longer than ``MAX_DOCUMENT_CHARS`` are refused before they cost time or memory.

Merge keys (``<<: *base``) are resolved, as kube-apiserver's YAML decoder does. A syntax
error ends the text; ``syntax_problem`` says where it is: document, line and column.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

from .errors import Problem, Source, join

MAX_DEPTH = 100  # Istio resources nest about 10 deep; Python recursion ends near 1000
MAX_ALIAS_NODES = 10_000  # nodes a document may build through aliases
MAX_DOCUMENT_CHARS = 3 * 1024 * 1024  # kube-apiserver refuses request bodies over 3 MiB
ALIAS_BOMB = (
    f"YAML aliases expand to more than {MAX_ALIAS_NODES} nodes (an alias bomb?): "
    "write the data out, or use fewer aliases"
)
PLAIN_DATA = "only plain data is accepted (mappings, lists, strings, numbers, booleans, null)"

_T = "tag:yaml.org,2002:"
_STR, _MAP, _SEQ, _MERGE, _TIMESTAMP = (_T + t for t in ("str", "map", "seq", "merge", "timestamp"))
_FLOAT = _T + "float"
_JSON_SCALARS = frozenset(_T + t for t in ("int", "float", "bool", "null"))

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_TAGS: dict[tuple[str, tuple[bool, bool]], str] = {}  # (scalar, implicit) -> resolved tag


class LineLoader(_Loader):  # type: ignore[misc,valid-type]
    """SafeLoader (libyaml's when PyYAML has it: several times faster) that hands out
    composed nodes, so lines can be read while the data is built.

    Resolving a plain scalar's tag is a function of its text alone for a SafeLoader (it
    has no path resolvers), and a config repeats the same keys and values thousands of
    times: answers are kept, and the path bookkeeping is skipped."""

    def resolve(self, kind, value, implicit):  # type: ignore[no-untyped-def]
        if kind is not yaml.ScalarNode:
            return super().resolve(kind, value, implicit)
        key = (value, implicit)
        tag = _TAGS.get(key)
        if tag is None:
            if len(_TAGS) > 100_000:
                _TAGS.clear()
            tag = _TAGS[key] = super().resolve(kind, value, implicit)
        return tag

    def descend_resolver(self, current_node, current_index):  # type: ignore[no-untyped-def]
        pass

    def ascend_resolver(self):  # type: ignore[no-untyped-def]
        pass


def short_tag(tag: str) -> str:
    """``!!binary`` for ``tag:yaml.org,2002:binary``, as the user wrote it."""
    return "!!" + tag[len(_T) :] if tag.startswith(_T) else tag


@dataclass
class Refusal:
    """Why (part of) a document is not plain data: the field, its line and a message."""

    path: str
    line: int
    message: str


@dataclass
class Document:
    """One non-empty YAML document: its data, start line (1-based), the line of every
    field path, the paths of repeated keys (YAML keeps the last) and what was refused
    (then ``data`` is partial and must not become a resource)."""

    data: Any
    index: int
    line: int
    lines: dict[str, int]
    dups: list[str] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)
    error: Exception | None = None  # a syntax error: the text ends here


def build(node: yaml.Node, loader: LineLoader, anchors: bool) -> Document:
    """The data of a composed document and its lines, in one recursive pass. ``anchors``:
    whether the text may hold anchors; only then is each node's identity tracked (for
    aliases and their expansion), so that a config without any costs nothing more."""
    lines: dict[str, int] = {}
    doc = Document(None, 0, node.start_mark.line + 1, lines)
    dups, refusals = doc.dups, doc.refusals
    seen: set[int] = set()  # ids of the nodes built (only with anchors)
    inside: set[int] = set()  # ids of the collections being built (only with anchors)
    aliased = 0  # nodes built again through an alias

    def refuse(path: str, n: yaml.Node, message: str) -> None:
        if n is node:  # the document itself
            message = f"must be a mapping (an Istio resource): {message}"
        refusals.append(Refusal(path, n.start_mark.line + 1, message))

    def scalar(n: yaml.ScalarNode, path: str) -> Any:
        tag = n.tag
        if tag in (_STR, _TIMESTAMP, _MERGE):
            return n.value
        if tag not in _JSON_SCALARS:
            refuse(path, n, f'YAML tag "{short_tag(tag)}" is not supported: {PLAIN_DATA}')
            return None
        try:
            value = loader.construct_object(n)
        except ValueError:  # Python refuses to read integers of more than 4300 digits
            refuse(path, n, f"number with {len(n.value)} digits is out of range")
            return None
        if tag == _FLOAT and not math.isfinite(value):
            refuse(path, n, f"must be a finite number, got {n.value}")
            return None
        return value

    def key_of(k: yaml.Node, path: str) -> str | None:
        if isinstance(k, yaml.ScalarNode) and (k.tag in _JSON_SCALARS or k.tag == _TIMESTAMP):
            key: str = k.value  # `80: x` is the key "80", as in JSON
            return key
        what = f'"{short_tag(k.tag)}"' if isinstance(k, yaml.ScalarNode) else "a collection"
        refuse(path, k, f"keys must be strings, got {what}: {PLAIN_DATA}")
        return None

    def walk(n: yaml.Node, path: str, depth: int) -> Any:
        nonlocal aliased
        if anchors:
            ident = id(n)
            if ident in inside:
                refuse(path, n, "an alias of a node it is inside of (a structure that contains "
                       f"itself) has no JSON form: {PLAIN_DATA}")  # fmt: skip
                return None
            if ident in seen:
                aliased += 1
                if aliased > MAX_ALIAS_NODES:
                    if aliased == MAX_ALIAS_NODES + 1:  # once; then each alias costs one step
                        refuse(path, n, ALIAS_BOMB)
                    return None
            else:
                seen.add(ident)
        if isinstance(n, yaml.ScalarNode):
            return n.value if n.tag == _STR else scalar(n, path)
        if depth >= MAX_DEPTH:
            refuse(path, n, f"nested more than {MAX_DEPTH} levels deep")
            return None
        if anchors:
            inside.add(ident)
        if isinstance(n, yaml.MappingNode):
            out: Any = mapping(n, path, depth)
        elif n.tag != _SEQ:
            refuse(path, n, f'YAML tag "{short_tag(n.tag)}" is not supported: {PLAIN_DATA}')
            out = None
        else:
            out = []
            for i, value in enumerate(n.value):
                child = f"{path}[{i}]"
                lines[child] = value.start_mark.line + 1
                out.append(walk(value, child, depth + 1))
        if anchors:
            inside.discard(ident)
        return out

    def mapping(n: yaml.MappingNode, path: str, depth: int) -> dict[str, Any] | None:
        if n.tag != _MAP:
            refuse(path, n, f'YAML tag "{short_tag(n.tag)}" is not supported: {PLAIN_DATA}')
            return None
        out: dict[str, Any] = {}
        merged: dict[str, Any] | None = None
        for k, value in n.value:
            if k.tag == _STR:
                key = k.value
            elif k.tag == _MERGE:
                merged = merge(value, path, depth, merged)
                continue
            else:
                key = key_of(k, path)
                if key is None:
                    continue
            child = f"{path}.{key}" if path and key else join(path, key)
            if key in out:
                dups.append(child)
            lines[child] = k.start_mark.line + 1
            out[key] = walk(value, child, depth + 1)
        return out if merged is None else {**merged, **out}

    def merge(
        value: yaml.Node, path: str, depth: int, merged: dict[str, Any] | None
    ) -> dict[str, Any]:
        """``<<: *base`` or ``<<: [*a, *b]``: keys of the mapping itself win, then the
        first merged mapping that has the key."""
        sources = value.value if isinstance(value, yaml.SequenceNode) else [value]
        out: dict[str, Any] = {}
        for source in reversed(sources):
            if not isinstance(source, yaml.MappingNode):
                refuse(path, source, "a merge key (<<) must name a mapping or a list of them")
                continue
            data = walk(source, path, depth)
            if isinstance(data, dict):
                out.update(data)
        return out if merged is None else {**out, **merged}

    doc.data = walk(node, "", 0)
    # The helpers refer to each other: unbound, they are freed now instead of by the
    # cyclic collector, whose passes over a big config's live data are the real cost.
    walk = mapping = merge = None  # type: ignore[assignment]  # noqa: F811
    return doc


def documents(text: str) -> Iterator[Document]:
    """Each non-empty document of a multi-document text (``index`` counts empty ones too).
    A syntax error is the last document, with ``error`` set: the parser cannot tell where
    the next document starts."""
    loader = LineLoader(text)
    anchors = "&" in text  # no "&", no anchor: no alias can expand
    index = 1
    try:
        while True:
            try:
                if not loader.check_node():
                    return
                node = loader.get_node()
            except (yaml.YAMLError, RecursionError) as e:  # deep nesting, without libyaml
                yield Document(None, index, 0, {}, error=e)
                return
            size = node.end_mark.index - node.start_mark.index
            if size > MAX_DOCUMENT_CHARS:
                message = (
                    f"the document is {size} characters long, more than the "
                    f"{MAX_DOCUMENT_CHARS} allowed: split it"
                )
                start = node.start_mark.line + 1
                yield Document(None, index, start, {}, refusals=[Refusal("", start, message)])
            else:
                doc = build(node, loader, anchors)
                loader.constructed_objects.clear()
                if doc.data is not None or doc.refusals:
                    doc.index = index
                    yield doc
            index += 1
    finally:
        loader.dispose()


# --- Syntax errors -------------------------------------------------------------------------

_MARKER = re.compile(r"^---", re.MULTILINE)


def _document_at(text: str, position: int) -> int:
    """The document holding ``position``: one more than the ``---`` markers before it,
    the first not counted if only comments precede it."""
    starts = [m.start() for m in _MARKER.finditer(text, 0, position)]
    before = text[: starts[0]].splitlines() if starts else []
    if starts and all(not t.strip() or t.lstrip().startswith("#") for t in before):
        return len(starts)
    return len(starts) + 1


def syntax_problem(error: Exception, text: str, file: str, doc: int) -> Problem:
    """The problem for a document's ``error``: document, line and column of a syntax error."""
    mark = getattr(error, "problem_mark", None)
    if isinstance(error, RecursionError):
        return Problem(Source(file, doc), "YAML nested too deeply to read")
    if isinstance(error, yaml.reader.ReaderError):  # a character YAML does not allow
        doc = _document_at(text, error.position)  # libyaml checks the whole text first
        line = text.count("\n", 0, error.position) + 1
        column = error.position - text.rfind("\n", 0, error.position)
        message = f"YAML syntax error: {error.reason}, got #x{error.character:04x}"
        return Problem(Source(file, doc, line), f"{message} (column {column})")
    if mark is None:
        return Problem(Source(file, doc), f"YAML syntax error: {str(error).splitlines()[0]}")
    text = getattr(error, "problem", None) or str(error)
    return Problem(
        Source(file, doc, mark.line + 1), f"YAML syntax error: {text} (column {mark.column + 1})"
    )
