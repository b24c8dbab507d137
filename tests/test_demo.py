"""``xds-server demo`` as a user runs it: output, exit codes, cleanup."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys

from xds_server.ports import free_port
from xds_server.waiting import wait_until

DEMO = [sys.executable, "-m", "xds_server", "demo"]
FREE = ["--ingress-port", "0", "--xds-port", "0", "--admin-port", "0", "--envoy-admin-port", "0"]


def children_of(pid: int) -> list[int]:
    """Live child processes, from /proc (Linux)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                out.append(int(entry))
    return out


def test_demo_runs_the_task_and_prints_the_split():
    result = subprocess.run([*DEMO, *FREE, "-n", "20"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "virtualservice.networking.istio.io/tcp-echo created" in out
    assert "virtualservice.networking.istio.io/tcp-echo configured" in out
    before, after = out.split("[3/5]")
    assert before.count("    one ") == 20 and "    two " not in before
    assert "weight: 80" in after and "weight: 20" in after and "generation: 2" in after
    one = int(re.search(r"\n\s+one\s+(\d+)\s+\d+\.\d%", after).group(1))
    two = int(re.search(r"\n\s+two\s+(\d+)\s+\d+\.\d%", after).group(1))
    assert one + two == 20 and abs(two - 4) <= 1  # the locality split, to one connection
    assert re.search(r"TOTAL\s+20\s+100\.0%", after)
    assert "stopped every process" in out


def test_explicit_port_in_use_fails_clearly():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [*DEMO, "--ingress-port", str(port), *FREE[2:]],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert f"error: ingress port {port} is in use on 127.0.0.1" in result.stdout


def test_ctrl_c_stops_every_process():
    proc = subprocess.Popen(
        [*DEMO, *FREE, "-n", "2", "--keep"], stdout=subprocess.PIPE, text=True, bufsize=1
    )
    seen = []
    try:
        for line in proc.stdout:  # the demo's own progress is the readiness signal
            seen.append(line)
            if "the lab keeps running" in line:
                break
        assert "the lab keeps running" in seen[-1], "".join(seen)
        kids = children_of(proc.pid)
        assert len(kids) == 4  # two tcp-echo servers, xds-server and Envoy
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 130
        rest = proc.stdout.read()
        assert "stopped every process" in rest
        wait_until(
            lambda: [k for k in kids if os.path.exists(f"/proc/{k}")],
            10,
            check=lambda left: not left,
            interval=0.05,
            what="the demo's children to be gone",
        )
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()


def test_admin_port_is_the_admin_api_and_envoy_admin_port_envoys():
    """As in `serve`: --admin-port is the control plane's admin API (what xdsctl talks to),
    --envoy-admin-port Envoy's admin."""
    admin, envoy_admin = free_port(), free_port()
    result = subprocess.run(
        [*DEMO, *FREE[:4], "--admin-port", str(admin), "--envoy-admin-port", str(envoy_admin)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"admin API on 127.0.0.1:{admin}" in result.stdout
    assert f"127.0.0.1:{envoy_admin}" in result.stdout  # Envoy's admin URL
