"""README "Running the server alone": the walkthrough's commands, run as printed.

The commands come from README.md itself (the fenced blocks after ``<!-- docs-test: terminal
N -->``), so docs and test cannot drift: terminals 1-3 start as long-running processes (each
in a process group of its own, stopped by a Ctrl-C to the group, as a terminal does), and
terminal 4 runs line by line in ``sh`` from a directory that looks like the repository's root
(``.venv`` and ``samples`` linked), so ``./state`` lands in a temp dir.

Ports: the commands run verbatim when every port they use by default is free (CI). On a
machine where one is taken (another lab, a concurrent test run), or with
``XDS_DOCS_FREE_PORTS=1``, the test substitutes free ports with each command's own flags
(serve --xds-port/--admin-port/--port-map, echo --v1-ports/--v2-ports/--endpoints plus an
apply of that file, envoy --xds/--envoy-admin-port, $XDSCTL_SERVER, the address of traffic
and nc), and says so in its output. Readiness is each command's printed line; no sleeps.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import locality_split_ok

from xds_server.lab.server import LineProcess
from xds_server.ports import free_port, port_is_free

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DEFAULT_PORTS = {
    "xds": 18000,
    "admin": 18001,
    "envoy_admin": 15000,
    "ingress": 31400,
    "v1": 9000,
    "v1_other": 9001,
    "v2": 9002,
    "v2_other": 9003,
}
READY = {  # terminal -> the line that says it is ready
    1: "admin API listening on",
    2: "ready; Ctrl-C stops the echo servers",
    3: "LIVE: config received from",
}


def terminals(text: str) -> dict[int, list[str]]:
    """The shell lines of each ``<!-- docs-test: terminal N -->`` block (continuations
    joined, comments kept: sh ignores them)."""
    found: dict[int, list[str]] = {}
    for name, lines in readme_blocks(text).items():
        if m := re.fullmatch(r"terminal (\d+)", name):
            found[int(m[1])] = lines
    return found


def readme_blocks(text: str) -> dict[str, list[str]]:
    """The shell lines of each ``<!-- docs-test: NAME -->`` block, by NAME."""
    found: dict[str, list[str]] = {}
    for match in re.finditer(r"<!-- docs-test: ([^>]+?) -->\n```sh\n(.*?)```", text, flags=re.S):
        lines = match.group(2).replace("\\\n", " ").splitlines()
        found[match.group(1)] = [line for line in lines if line.strip()]
    return found


def test_readme_has_the_walkthrough_blocks():
    text = README.read_text()
    assert sorted(readme_blocks(text)) == [
        "files",
        "terminal 1",
        "terminal 2",
        "terminal 3",
        "terminal 4",
        "terminal 4, more",
    ]
    walk = terminals(text)
    assert sorted(walk) == [1, 2, 3, 4]
    assert walk[1] and walk[1][0].startswith(".venv/bin/xds-server serve --state-dir")
    assert walk[2][0].startswith(".venv/bin/xds-server echo")
    assert walk[3][0].startswith(".venv/bin/xds-server envoy")
    commands = " ".join(walk[4])
    for needed in ("tcp-echo-services.yaml", "tcp-echo-all-v1.yaml", "tcp-echo-20-v2.yaml"):
        assert needed in commands
    assert "xds-server traffic" in commands and "| nc " in commands


class Ports:
    """The walkthrough's ports: the defaults, or free ones substituted into the commands."""

    def __init__(self) -> None:
        forced = os.environ.get("XDS_DOCS_FREE_PORTS") == "1"
        taken = [n for n, p in DEFAULT_PORTS.items() if not port_is_free(p)]
        self.substituted = forced or bool(taken)
        self.reason = "XDS_DOCS_FREE_PORTS=1" if forced else f"default ports taken: {taken}"
        self.port = (
            {name: free_port() for name in DEFAULT_PORTS} if self.substituted else DEFAULT_PORTS
        )

    def command(self, line: str, workdir: Path) -> str:
        """The README line as run here (itself, unless ports are substituted)."""
        if not self.substituted:
            return line
        p = self.port
        code, hash_, comment = line.partition(" #")
        code = code.rstrip()
        if " serve " in f"{code} ":
            code += f" --xds-port {p['xds']} --admin-port {p['admin']}"
            code += f" --port-map 31400={p['ingress']}"
        elif code.startswith(".venv/bin/xds-server echo"):
            code += f" --v1-ports {p['v1']},{p['v1_other']} --v2-ports {p['v2']},{p['v2_other']}"
            code += f" --endpoints {workdir / 'endpoints.yaml'}"
        elif code.startswith(".venv/bin/xds-server envoy"):
            code += f" --xds 127.0.0.1:{p['xds']} --envoy-admin-port {p['envoy_admin']}"
        elif code.startswith(".venv/bin/xds-server traffic"):
            code += f" 127.0.0.1:{p['ingress']}"
        elif "| nc " in code:
            code = code.replace("127.0.0.1 31400", f"127.0.0.1 {p['ingress']}")
        return code + hash_ + comment

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("XDSCTL_SERVER", None)
        if self.substituted:
            env["XDSCTL_SERVER"] = f"127.0.0.1:{self.port['admin']}"
        return env


@pytest.fixture
def repo_like(tmp_path: Path) -> Path:
    """A directory where the README's relative paths work, and ./state is the test's own."""
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    (tmp_path / "samples").symlink_to(ROOT / "samples")
    return tmp_path


@pytest.fixture
def started() -> Iterator[list[LineProcess]]:
    procs: list[LineProcess] = []
    yield procs
    for proc in reversed(procs):  # Envoy, echo, then the server: Ctrl-C each
        proc.interrupt(timeout=20)


def _counts_from_table(out: str) -> Counter[str]:
    return Counter({m[1]: int(m[2]) for m in re.finditer(r"^(one|two)\s+(\d+)\s+\S+%$", out, re.M)})


def _replies(out: str) -> Counter[str]:
    lines = [line for line in out.splitlines() if line.strip()]
    assert all(re.match(r"(one|two) \w{3} \w{3} ", line) for line in lines), out
    return Counter(line.split()[0] for line in lines)


def run_line(
    command: str, cwd: Path, env: dict[str, str], *, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """One README line in sh, without a traceback; with ``check``, it must exit 0."""
    result = subprocess.run(
        command, shell=True, cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    if check:
        assert result.returncode == 0, f"$ {command}\n{result.stdout}{result.stderr}"
    assert "Traceback" not in result.stdout + result.stderr, f"$ {command}\n{result.stderr}"
    return result


def test_serve_from_files_as_printed(repo_like, started):
    """The README's --config server: it serves the sample files and refuses writes."""
    (line,) = readme_blocks(README.read_text())["files"]
    ports = Ports()
    env = ports.env()
    proc = LineProcess(
        "exec " + ports.command(line, repo_like), shell=True, cwd=repo_like, env=env, session=True
    )
    started.append(proc)
    proc.wait_line(READY[1], timeout=60)
    out = run_line(".venv/bin/xdsctl get vs tcp-echo -o yaml", repo_like, env).stdout
    assert "weight: 100" in out or "subset: v1" in out, out
    refused = run_line(
        ".venv/bin/xdsctl apply -f samples/tcp-echo/tcp-echo-20-v2.yaml",
        repo_like,
        env,
        check=False,
    )
    assert refused.returncode == 1 and "--config" in refused.stderr, refused.stderr
    assert proc.interrupt(timeout=20) == 0, proc.output()


def test_running_the_server_alone_walkthrough(repo_like, started, capsys):
    if not shutil.which("nc"):
        message = "the README's nc loop needs nc (Debian: apt-get install netcat-openbsd)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    blocks = terminals(README.read_text())
    ports = Ports()
    if ports.substituted:
        with capsys.disabled():
            print(f"\n[docs test: free ports substituted ({ports.reason}): {ports.port}]")
    env = ports.env()
    timings = {}
    for n in (1, 2, 3):
        (line,) = blocks[n]  # `exec`: the exit code is the command's, as in a terminal
        begun = time.monotonic()
        proc = LineProcess(
            "exec " + ports.command(line, repo_like),
            shell=True,
            cwd=repo_like,
            env=env,
            session=True,
        )
        started.append(proc)
        proc.wait_line(READY[n], timeout=60)
        timings[n] = time.monotonic() - begun
    assert (repo_like / "state").is_dir()  # ./state, in the directory it was typed in

    applied_v2 = False
    seen = {"traffic": 0, "nc": 0}
    for line in blocks[4]:
        command = ports.command(line, repo_like)
        begun = time.monotonic()
        out = run_line(command, repo_like, env).stdout
        took = time.monotonic() - begun
        if "xdsctl apply" in line:
            assert re.search(r"\b(created|configured|unchanged)\b", out), out
            if "tcp-echo-services.yaml" in line and ports.substituted:
                endpoints = repo_like / "endpoints.yaml"  # written by `echo --endpoints`
                run_line(f".venv/bin/xdsctl apply -f {endpoints}", repo_like, env)
            applied_v2 = applied_v2 or "20-v2" in line
        elif "xds-server traffic" in line:
            counts = _counts_from_table(out)
            n = int(m[1]) if (m := re.search(r"--connections (\d+)", line)) else 20
            if applied_v2:
                assert locality_split_ok(counts, n=n), out
            else:
                assert counts == {"one": n}, out
            seen["traffic"] += 1
            timings[f"traffic -n {n}"] = took
        elif "| nc " in line:
            counts = _replies(out)
            n = int(re.search(r"seq 1 (\d+)", line)[1])
            assert sum(counts.values()) == n, out
            if applied_v2:
                assert abs(counts["two"] - n * 0.2) <= 1, out  # the locality split, to one
            else:
                assert counts == {"one": n}, out
            seen["nc"] += 1
            timings[f"nc loop x{n}{' after 20-v2' if applied_v2 else ''}"] = took
        elif "get virtualservice" in line:
            assert "weight: 80" in out and "weight: 20" in out
        elif "proxy-status" in line:
            assert "ingressgateway" in out and "SYNCED" in out, out
    assert seen == {"traffic": 2, "nc": 2}

    # The rest of xdsctl, on the same lab: get, proxy-config, then delete the 80/20 route.
    more = readme_blocks(README.read_text())["terminal 4, more"]
    outputs = [run_line(ports.command(line, repo_like), repo_like, env).stdout for line in more]
    for line, out in zip(more, outputs, strict=True):
        if "get vs" in line:
            assert "kind: VirtualService" in out and "weight: 20" in out, out
        elif "proxy-config endpoints" in line:
            assert "route|default/tcp-echo|tcp[0]" in out and "127.0.0.1" in out, out
        elif "delete -f" in line:
            assert "virtualservice.networking.istio.io/tcp-echo deleted" in out, out

    for proc in reversed(started):
        assert proc.interrupt(timeout=20) == 0, proc.output()
        assert "Traceback" not in proc.output()
    assert "stopped Envoy" in started[2].output()
    with capsys.disabled():
        shown = ", ".join(f"{k}: {v:.2f} s" for k, v in timings.items())
        print(f"\n[docs test: start -> ready: terminal 1-3, then terminal 4 commands: {shown}]")
