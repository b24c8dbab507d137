"""Hostile input through the admin API and xdsctl, against a real ``xds-server serve``:
hypothesis-driven YAML (mutated samples, random structures, odd tags, deep nesting,
aliases), alias bombs, oversized documents and requests.

Every example asserts what a user relies on: the server is alive, a rejection is a clear
message (file, document, a field where one applies; no traceback, no gRPC internals), a
rejected batch changed nothing (resources, revision, versions served, the state file), and
what was accepted reads back with ``get -o yaml`` and ``-o json``. ``--fuzz-examples N``
runs more examples than the bounded CI default."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from faults.conftest import state_bytes
from xds_server.admin.client import AdminClient, AdminError
from xds_server.admin.server import MAX_REQUEST_BYTES
from xds_server.config import yamldata
from xds_server.lab.lab import SAMPLES
from xds_server.lab.server import ServerProcess
from xds_server.xdsctl import format_resources

SAMPLE_TEXTS = [p.read_text() for p in sorted(SAMPLES.glob("*.yaml"))]
SERVICES, ALL_V1 = (SAMPLES / "tcp-echo-services.yaml"), (SAMPLES / "tcp-echo-all-v1.yaml")
FILE = "fuzz.yaml"
# Words that mean an error escaped as a crash or as gRPC's own text.
INTERNALS = ("Traceback", "Unexpected", "Stream removed", "StatusCode", "grpc", "RESOURCE_EX")
# Problems about a whole document (no field to name).
DOCUMENT_LEVEL = (
    "YAML syntax error",
    "YAML nested too deeply",
    "must be a mapping (an Istio resource)",
    "the document is",
    "duplicate",  # the same resource twice in one batch
    "keys must be strings",  # of the document itself
    "an alias of a node it is inside of",
)


class Server:
    """One ``xds-server serve --state-dir`` process and a client of its admin API."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.proc = ServerProcess("--state-dir", str(state), "--xds-port", "0", "--admin-port", "0")
        self.admin = f"127.0.0.1:{self.proc.wait_port('admin API')}"
        self.client = AdminClient(self.admin, timeout=30)

    def alive(self) -> bool:
        return self.proc.proc.poll() is None

    def output(self) -> str:
        """What the server printed so far (its reader thread queues every line)."""
        while True:
            try:
                self.proc.lines.append(self.proc._queue.get_nowait())
            except queue.Empty:
                return "".join(self.proc.lines)

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def snapshot(self) -> tuple:
        """Everything a rejected batch must leave as it was."""
        got = self.client.get()
        resources = sorted(
            (r.ref.kind, r.ref.namespace, r.ref.name, r.json, r.resource_version)
            for r in got.resources
        )
        state = state_bytes(self.state)
        return got.revision, resources, dict(self.client.proxy_status().versions), state

    def stop(self) -> None:
        self.client.close()
        self.proc.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp("fuzz") / "state")
    try:
        s.client.apply([(str(SERVICES), SERVICES.read_text()), (str(ALL_V1), ALL_V1.read_text())])
        yield s
        assert "Traceback" not in s.output(), s.output()
    finally:
        s.stop()


def assert_clear(err: AdminError) -> None:
    """One line per problem, naming file and document, and the field where one applies."""
    text = str(err)
    assert not any(word in text for word in INTERNALS), text
    assert err.code.name in ("INVALID_ARGUMENT", "ABORTED"), text
    assert err.problems, text
    for p in err.problems:  # a stored resource the batch breaks is named by its own file
        assert p.file and p.document >= 1 and p.message, p
        assert p.text.startswith(f"{p.file}:") and f"document {p.document}" in p.text, p
        assert p.field or p.message.startswith(DOCUMENT_LEVEL), p
        assert len(p.text) < 3000, len(p.text)


def assert_readable(server: Server) -> None:
    """``get -o yaml`` and ``-o json`` of everything stored."""
    resources = server.client.get().resources
    for r in resources:
        json.loads(r.json)
    yaml.safe_load(format_resources(resources, "yaml", True))
    json.loads(format_resources(resources, "json", True))


def apply(server: Server, text: str) -> str:
    """Apply one fuzzed text; 'accepted' or 'rejected', after checking what each promises."""
    before = server.snapshot()
    try:
        server.client.apply([(FILE, text)])
    except AdminError as e:
        assert_clear(e)
        assert server.alive()
        assert server.snapshot() == before
        return "rejected"
    assert server.alive()
    assert_readable(server)
    return "accepted"


# --- what is fuzzed ------------------------------------------------------------------------

ODD_VALUES = [
    "!!binary aGVsbG8=",
    "!!set {a, b}",
    "!!omap [{a: 1}]",
    "!!python/object/apply:os.system [ls]",
    "!custom 1",
    "!!timestamp 2026-11-25",
    "&a [*a]",
    "*undefined",
    "1.0e+400",
    ".inf",
    ".nan",
    "9" * 5000,
    "2026-11-25T08:00:00Z",
    "{",
    "[",
    "]",
    "? [a, b]",
    "{<<: {x: 1}}",
    "~",
    "''",
    "'",
    "|",
    "@",
    "`",
    "-1",
    "0",
    "65536",
    "2147483648",
    "18446744073709551616",
    "1000000000h",
    "yes",
    "x" * 400,
    '"\\u0000"',
    "\t",
    "\u2028",
    "é",
]
KINDS = ["Gateway", "VirtualService", "DestinationRule", "ServiceEntry", "WorkloadEntry", "Pod"]
ENVELOPE = "apiVersion: networking.istio.io/v1\nkind: {kind}\nmetadata: {{name: {name}}}\n"

odd = st.sampled_from(ODD_VALUES) | st.text(max_size=12)
json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=16),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=24,
)


@st.composite
def mutated_sample(draw: st.DrawFn) -> str:
    """A sample file with a few lines replaced, removed, repeated, re-indented or cut."""
    lines = draw(st.sampled_from(SAMPLE_TEXTS)).splitlines()
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["value", "delete", "repeat", "insert", "indent", "cut"]))
        if op == "value" and ":" in lines[i]:
            lines[i] = lines[i].split(":", 1)[0] + ": " + draw(odd)
        elif op == "delete":
            del lines[i]
        elif op == "repeat":
            lines.insert(i, lines[i])
        elif op == "insert":
            lines.insert(i, " " * draw(st.integers(0, 6)) + draw(odd))
        elif op == "indent":
            lines[i] = " " * draw(st.integers(1, 3)) + lines[i]
        elif op == "cut":
            lines = lines[:i]
        if not lines:
            lines = ["---"]
    return "\n".join(lines) + "\n"


@st.composite
def random_structure(draw: st.DrawFn) -> str:
    """Random JSON-like data where a spec, a status or a whole document goes."""
    data = draw(json_like)
    where = draw(st.sampled_from(["spec", "status", "metadata", "document"]))
    if where == "document":
        doc = data
    else:
        doc = {"apiVersion": "networking.istio.io/v1", "kind": draw(st.sampled_from(KINDS))}
        doc["metadata"] = {"name": "fuzz"}
        doc[where] = data
    return yaml.safe_dump(doc, allow_unicode=draw(st.booleans()))


@st.composite
def odd_tag(draw: st.DrawFn) -> str:
    head = ENVELOPE.format(kind=draw(st.sampled_from(KINDS)), name="fuzz")
    key = draw(st.sampled_from(["spec", "status", "metadata"]))
    return f"{head.replace('metadata: {name: fuzz}', '') if key == 'metadata' else head}" + (
        f"{key}: {{x: {draw(st.sampled_from(ODD_VALUES))}}}\n"
    )


@st.composite
def deep(draw: st.DrawFn) -> str:
    depth = draw(st.integers(yamldata.MAX_DEPTH - 5, 1100))
    head = ENVELOPE.format(kind="Gateway", name="fuzz") + "status:\n"
    if draw(st.booleans()):
        return head + "  k: " + "[" * depth + "]" * depth + "\n"
    return head + "".join(" " * (i + 2) + "k:\n" for i in range(depth))


def bomb(levels: int, width: int, where: str = "status") -> str:
    """An alias bomb ("billion laughs"): width**levels leaves from a few hundred bytes."""
    lines = [f"  l0: &l0 [{', '.join(['lol'] * width)}]"]
    lines += [f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    return ENVELOPE.format(kind="Gateway", name="fuzz") + f"{where}:\n" + "\n".join(lines) + "\n"


aliases = st.builds(
    bomb, st.integers(1, 9), st.integers(1, 10), st.sampled_from(["status", "spec"])
)
FUZZED = st.one_of(mutated_sample(), random_structure(), odd_tag(), deep(), aliases)
FUZZ_SETTINGS = {
    "deadline": None,
    "database": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
}


def test_fuzzed_yaml_through_the_admin_api(
    server: Server, fuzz_examples: Callable[[int], int], fault_figure: Callable
) -> None:
    counts = {"accepted": 0, "rejected": 0}

    @settings(max_examples=fuzz_examples(300), **FUZZ_SETTINGS)
    @given(FUZZED)
    def run(text: str) -> None:
        counts[apply(server, text)] += 1

    run()
    fault_figure("inputs fuzzed through the admin API", sum(counts.values()))
    fault_figure("rejected with a clear message, nothing changed", counts["rejected"])
    fault_figure("accepted and read back", counts["accepted"])


def xdsctl(server: Server, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "xds_server.xdsctl", "--server", server.admin, *args],
        input=stdin,
        capture_output=True,
        timeout=60,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


def test_fuzzed_yaml_through_xdsctl(
    server: Server, fuzz_examples: Callable[[int], int], fault_figure: Callable
) -> None:
    """`xdsctl apply -f -` as a process: exit 1 with one `error: <stdin>...` line per
    problem (or kubectl's line for input without a document), or 0 and `get -o yaml|json`
    reads it back; bytes that are not UTF-8 too."""
    counts = {"accepted": 0, "rejected": 0}
    odd_bytes = st.binary(max_size=40).map(lambda b: b"kind: Gateway\nx: " + b + b"\n")

    @settings(max_examples=fuzz_examples(15), **FUZZ_SETTINGS)
    @given(FUZZED.map(str.encode) | odd_bytes)
    def run(data: bytes) -> None:
        before = server.snapshot()
        result = xdsctl(server, "apply", "-f", "-", stdin=data)
        err = result.stderr.decode()
        assert server.alive()
        assert not any(word in err for word in INTERNALS), err
        if result.returncode == 0:
            counts["accepted"] += 1
            for output in ("yaml", "json"):
                got = xdsctl(server, "get", "vs,dr,gw,se,we", "-A", "-o", output)
                assert got.returncode == 0, got.stderr
                (yaml.safe_load if output == "yaml" else json.loads)(got.stdout)
            return
        counts["rejected"] += 1
        assert result.returncode == 1 and err, result
        for line in err.splitlines():
            assert line.startswith("error: "), line
            assert (
                ": document " in line
                or line.startswith("error: cannot read <stdin>: ")
                or line == "error: no objects passed to apply"  # kubectl's, for no documents
            ), line
        assert server.snapshot() == before

    run()
    fault_figure("inputs fuzzed through xdsctl", sum(counts.values()))
    fault_figure("rejected by xdsctl", counts["rejected"])


def timed_get(server: Server) -> float:
    """Seconds an unrelated Get takes: the server must answer at once after an attack."""
    started = time.perf_counter()
    server.client.get("VirtualService", "tcp-echo")
    return time.perf_counter() - started


def test_alias_bombs_are_refused_at_once(server: Server, fault_figure: Callable) -> None:
    """796 bytes of aliases under `status:` used to expand to 4.8 M leaves: 47 s of stalled
    admin API and xDS, 3 GB of RSS and a 101 MB state file."""
    text = bomb(9, 10)  # 10**9 leaves
    rss = server.rss_mib()
    before = server.snapshot()
    started = time.perf_counter()
    with pytest.raises(AdminError) as e:
        server.client.apply([(FILE, text)])
    refused = time.perf_counter() - started
    assert_clear(e.value)
    [p] = e.value.problems
    assert p.field.startswith("status.l") and "aliases expand to more than" in p.message
    assert server.snapshot() == before
    get = timed_get(server)
    growth = server.rss_mib() - rss
    assert growth < 50, growth
    fault_figure("alias bomb size (bytes)", len(text))
    fault_figure("alias bomb leaves if expanded", 10**9)
    fault_figure("alias nodes allowed per document", yamldata.MAX_ALIAS_NODES)
    fault_figure("alias bomb refused in (s)", refused)
    fault_figure("unrelated Get after the bomb (s)", get)
    fault_figure("server RSS growth (MiB)", growth)


def test_oversized_input_is_refused_with_a_clear_message(
    server: Server, fault_figure: Callable
) -> None:
    before = server.snapshot()
    # One document over the limit, within the request limit.
    big = bomb(1, 1).replace("lol", "'" + "x" * (yamldata.MAX_DOCUMENT_CHARS + 10) + "'")
    with pytest.raises(AdminError) as e:
        server.client.apply([(FILE, big)])
    assert_clear(e.value)
    assert e.value.problems[0].message.startswith("the document is ")
    # A request over the server's max receive message length.
    with pytest.raises(AdminError) as e:
        server.client.apply([(FILE, "# " + "x" * (MAX_REQUEST_BYTES + 2**20))])
    assert e.value.code.name == "RESOURCE_EXHAUSTED" and not e.value.problems
    assert str(e.value).startswith("the request is 33.0 MiB, more than the 32 MiB")
    # A batch with more problems than one answer shows.
    many = "".join(f"---\nkind: Nope{i}\n" for i in range(3000))
    with pytest.raises(AdminError) as e:
        server.client.apply([(FILE, many)])
    assert_clear(e.value)
    assert (len(e.value.problems), e.value.more) == (1000, 8000)  # 3 per document
    assert server.snapshot() == before
    get = timed_get(server)
    fault_figure("document limit (characters)", yamldata.MAX_DOCUMENT_CHARS)
    fault_figure("problems shown of 9000, then a count", len(e.value.problems))
    fault_figure("unrelated Get after oversized input (s)", get)
