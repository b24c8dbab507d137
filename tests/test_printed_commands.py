"""Every command we print works as printed: the demo's ``$`` lines, the nc loop's spelling."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from xds_server.cli import build_parser
from xds_server.lab.pieces import nc_loop
from xds_server.lab.server import LineProcess

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "xds_server"]


@pytest.mark.parametrize(
    ("binary", "drop"),
    [("nc", ""), ("nc.openbsd", ""), ("nc.traditional", ""), ("ncat", " -q 1")],
)
def test_the_nc_loop_ends_with_the_common_netcats(tmp_path, binary, drop):
    """The printed loop (``nc -q 1``) ends, with every reply, with Debian's two netcats; the
    README tells ncat users to drop ``-q 1``. The loop is shortened to 2 connections, with
    the task's ``sleep 1``."""
    found = shutil.which(binary)
    if not found:
        if binary == "nc" and os.environ.get("CI") == "true":
            pytest.fail("no nc: .ci/run installs netcat-openbsd")
        pytest.skip(f"{binary} is not installed")
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "nc").symlink_to(found)
    echo = LineProcess([*CLI, "echo", "v1", "--v1-ports", "0,0", "-q"])
    try:
        port = int(re.search(r":(\d+),", echo.wait_line("listening on"))[1])
        echo.wait_line("ready")
        loop = (
            nc_loop(2, "127.0.0.1", port, hold=1).replace(drop, "")
            if drop
            else nc_loop(2, "127.0.0.1", port)
        )
        env = {**os.environ, "PATH": f"{shim}:{os.environ['PATH']}"}
        result = subprocess.run(
            ["sh", "-c", loop], env=env, capture_output=True, text=True, timeout=30
        )
    finally:
        echo.interrupt()
    assert result.returncode == 0, result.stderr
    assert [line.split()[0] for line in result.stdout.splitlines()] == ["one", "one"], result


def test_the_task_loop_as_written_is_what_we_no_longer_print():
    assert "nc -q 1 127.0.0.1 31400" in nc_loop(20)
    assert nc_loop(20).startswith("for i in $(seq 1 20); do (date; sleep 1) | nc -q 1 ")


def test_the_demo_prints_commands_that_work_as_printed():
    """Run the demo with --keep, then every ``$`` line it printed: the xdsctl, traffic and
    nc lines in a shell, from the directory the demo ran in, against the running lab; the
    lines of long-running pieces (echo, serve, envoy) must be accepted by the CLI's parser."""
    demo = LineProcess(
        [*CLI, "demo", "-n", "3", "--keep"]
        + ["--ingress-port", "0", "--xds-port", "0", "--admin-port", "0"]
        + ["--envoy-admin-port", "0"],
        cwd=ROOT,
    )
    try:
        demo.wait_line("the lab keeps running", timeout=120)
        commands = [m[1] for m in re.finditer(r"^    \$ (.*)$", demo.output(), re.M)]
        services = r"xdsctl (--server \S+ )?apply -f samples/tcp-echo/tcp-echo-services.yaml$"
        assert any(re.search(services, c) for c in commands), commands
        assert any(c.startswith("for i in $(seq 1 3); do date | nc -q 1 ") for c in commands)
        ran = 0
        for command in commands:
            argv = shlex.split(command)
            name = Path(argv[0]).name
            if name == "xds-server" and argv[1] in ("echo", "serve", "envoy"):
                build_parser().parse_args(argv[1:])  # SystemExit(2) on a flag it does not know
                continue
            if command.startswith("for ") and not shutil.which("nc"):
                continue
            result = subprocess.run(
                command, shell=True, cwd=ROOT, capture_output=True, text=True, timeout=60
            )
            assert result.returncode == 0, f"$ {command}\n{result.stdout}{result.stderr}"
            ran += 1
        assert ran >= 6, commands
    finally:
        code = demo.interrupt(timeout=30)
    assert code == 130, demo.output()
