"""``xds-server echo | envoy | bootstrap | traffic``: the lab piece by piece, as a user runs it.

Every command runs as a real process; readiness is the line it prints (or Envoy's admin),
never a sleep; every process is stopped by a Ctrl-C (SIGINT) and must exit cleanly."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import locality_split_ok

from xds_server.config.load import load_paths, load_text
from xds_server.controlplane import ControlPlane
from xds_server.lab import traffic
from xds_server.lab.envoy import admin_http, find_envoy_binary
from xds_server.lab.server import LineProcess
from xds_server.ports import free_port, port_is_free
from xds_server.translate import TranslateOptions

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "tcp-echo"
CLI = [sys.executable, "-m", "xds_server"]


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


def start(*args: str) -> LineProcess:
    return LineProcess([*CLI, *args])


def one_error_line(result: subprocess.CompletedProcess[str], needle: str) -> None:
    """The project's promise for a user error: exit 1, one line on stderr, no traceback."""
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert needle in lines[0], lines[0]
    assert "Traceback" not in result.stdout + result.stderr


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


# --- echo ------------------------------------------------------------------------------------


def _ports(line: str) -> list[int]:
    return [int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", line)]


def test_echo_runs_both_versions_writes_their_endpoints_and_stops_on_ctrl_c(tmp_path):
    endpoints = tmp_path / "endpoints.yaml"
    echo = start("echo", "--v1-ports", "0,0", "--v2-ports", "0,0", "--endpoints", str(endpoints))
    try:
        v1 = _ports(echo.wait_line("tcp-echo v1 (replies 'one') listening on"))
        v2 = _ports(echo.wait_line("tcp-echo v2 (replies 'two') listening on"))
        echo.wait_line("ready; Ctrl-C stops the echo servers")
        assert len(v1) == len(v2) == 2
        for port in v1:
            assert traffic.send_once("127.0.0.1", port, "hello\n") == "one hello"
        for port in v2:
            assert traffic.send_once("127.0.0.1", port, "hello\n") == "two hello"
        entries = {
            r.meta.name: r.raw["spec"] for r in load_text(endpoints.read_text(), str(endpoints))
        }
        assert entries["tcp-echo-v1"]["ports"] == {"tcp": v1[0], "tcp-other": v1[1]}
        assert entries["tcp-echo-v2"]["ports"] == {"tcp": v2[0], "tcp-other": v2[1]}
    finally:
        code = echo.interrupt()
    assert code == 0, echo.output()
    assert "Traceback" not in echo.output()
    assert all(port_is_free(p) for p in v1 + v2)


def test_echo_one_version_only():
    echo = start("echo", "v2", "--v2-ports", "0,0", "-q")
    try:
        line = echo.wait_line("listening on")
        echo.wait_line("ready")
        assert line.startswith("tcp-echo v2")
        assert "note: not the ports of samples/tcp-echo/tcp-echo-services.yaml" in echo.output()
        assert "tcp-echo v1" not in echo.output()
    finally:
        assert echo.interrupt() == 0


def test_echo_defaults_are_the_sample_workload_entries():
    from xds_server.cli import build_parser
    from xds_server.lab.pieces import ECHO_VERSIONS, workload_entries

    args = build_parser().parse_args(["echo"])
    assert args.v1_ports == [9000, 9001] and args.v2_ports == [9002, 9003]
    sample = {r.meta.name: r.raw["spec"] for r in load_paths([SAMPLES / "tcp-echo-services.yaml"])}
    ours = workload_entries([(v, "127.0.0.1", p) for v, (_, p) in ECHO_VERSIONS.items()])
    for resource in load_text(ours, "<ours>"):
        assert resource.raw["spec"] == sample[resource.meta.name]


def test_echo_port_in_use_is_one_line_and_binds_nothing(busy_port):
    free = free_port()
    result = run("echo", "--v1-ports", f"{free},0", "--v2-ports", f"0,{busy_port}")
    one_error_line(result, f"tcp-echo v2: cannot listen on 127.0.0.1:{busy_port}: address already")
    assert port_is_free(free)  # v1, bound first, was released


def test_echo_endpoints_file_it_cannot_write_is_one_line():
    result = run(
        *("echo", "-q", "--v1-ports", "0,0", "--v2-ports", "0,0"),
        *("--endpoints", "/nonexistent/x.yaml"),
    )
    one_error_line(result, "cannot write /nonexistent/x.yaml: No such file or directory")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["echo", "v3"], "invalid version 'v3'"),
        (["echo", "--v1-ports", "9000"], "expected two"),
        (["echo", "--v1-ports", "9000,x"], "invalid port 'x'"),
    ],
)
def test_echo_bad_flags(args, message):
    result = run(*args)
    assert result.returncode == 2 and message in result.stderr
    assert "Traceback" not in result.stderr


# --- traffic ---------------------------------------------------------------------------------


def test_traffic_prints_the_split_table_and_replies(echoes):
    port = echoes[0].addresses[0][1]
    result = run("traffic", f"127.0.0.1:{port}", "-n", "3", "-v")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert all(
        re.fullmatch(r"one \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \S+ \d{4}", x) for x in lines[:3]
    )
    assert lines[3:] == [
        "",
        "VERSION  CONNECTIONS  PERCENT",
        "one                3   100.0%",
        "TOTAL              3   100.0%",
    ]
    quiet = run("traffic", str(port), "--connections", "2")  # PORT alone: on 127.0.0.1
    assert quiet.stdout.splitlines()[0] == "VERSION  CONNECTIONS  PERCENT"


def test_traffic_refused_is_one_line(busy_port):
    with socket.socket() as sock:  # bound, not listening: connections are refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        result = run("traffic", f"127.0.0.1:{port}")
    one_error_line(result, f"cannot connect to 127.0.0.1:{port}")
    assert "xds-server envoy" in result.stderr


def test_traffic_counts_connections_closed_without_a_reply():
    """Envoy closes a connection it has no endpoint for: counted, and exit 1."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        port = server.getsockname()[1]
        proc = subprocess.Popen(
            [*CLI, "traffic", f"127.0.0.1:{port}", "-n", "2"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        server.settimeout(20)
        for _ in range(2):
            conn, _ = server.accept()
            conn.recv(100)  # read the line, so the close is a FIN (as Envoy's), not a reset
            conn.close()
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert re.search(r"\(no reply\)\s+2\s+100\.0%", out), out
    assert "2 of 2 connection(s)" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["traffic", "-n", "0"], "invalid count '0'"),
        (["traffic", "127.0.0.1:x"], "invalid address"),
        (["traffic", "--hold", "-1"], "invalid seconds"),
        (
            ["traffic", "--hold", "3600"],
            "invalid seconds '3600': expected 0 or more and less than 3600",
        ),
        (["traffic", "--timeout", "0"], "invalid seconds '0': expected more than 0 and less than"),
        (["traffic", "--timeout", "x"], "invalid seconds 'x': expected more than 0 and less than"),
    ],
)
def test_traffic_bad_flags(args, message):
    result = run(*args)
    assert result.returncode == 2 and message in result.stderr


# --- bootstrap -------------------------------------------------------------------------------


def test_bootstrap_defaults_match_serve_and_the_sample_gateway():
    doc = yaml.safe_load(run("bootstrap").stdout)
    assert doc["node"]["metadata"] == {"labels": {"istio": "ingressgateway"}}
    assert doc["node"]["id"] == "ingressgateway"
    ads = doc["dynamic_resources"]["ads_config"]
    assert ads["api_type"] == "GRPC"
    assert ads["grpc_services"][0]["envoy_grpc"]["retry_policy"]["retry_back_off"] == {
        "base_interval": "0.1s",
        "max_interval": "0.5s",
    }
    xds = doc["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]
    assert xds["lb_endpoints"][0]["endpoint"]["address"]["socket_address"] == {
        "address": "127.0.0.1",
        "port_value": 18000,
    }
    assert doc["admin"]["address"]["socket_address"]["port_value"] == 15000
    assert "${" not in run("bootstrap").stdout


def test_bootstrap_options_and_output_file(tmp_path):
    out = tmp_path / "envoy.yaml"
    result = run(
        "bootstrap",
        *("--xds", "127.0.0.2:28000", "--api", "DELTA_GRPC", "--no-ads"),
        *("-l", "app=edge", "-l", "zone=a", "--node-id", "edge-1", "-o", str(out)),
    )
    assert result.returncode == 0 and result.stdout == ""
    assert f"envoy -c {out}" in result.stderr
    doc = yaml.safe_load(out.read_text())
    assert doc["node"]["id"] == "edge-1"
    assert doc["node"]["metadata"] == {"labels": {"app": "edge", "zone": "a"}}
    dynamic = doc["dynamic_resources"]
    assert "ads_config" not in dynamic
    assert dynamic["cds_config"]["api_config_source"]["api_type"] == "DELTA_GRPC"
    assert "127.0.0.2" in out.read_text() and "28000" in out.read_text()
    none = yaml.safe_load(run("bootstrap", "--no-labels").stdout)
    assert none["node"]["metadata"] == {}


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["bootstrap", "--xds", "localhost:18000"], 1, "must be an IP address"),
        (["bootstrap", "--label", "novalue"], 2, "expected KEY=VALUE"),
        (["bootstrap", "--api", "REST"], 2, "invalid choice"),
        (["bootstrap", "-o", "/nonexistent/dir/envoy.yaml"], 1, "cannot write"),
    ],
)
def test_bootstrap_errors(args, code, message):
    result = run(*args)
    assert result.returncode == code and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


# --- envoy -----------------------------------------------------------------------------------


@pytest.fixture
def lab_cp(echoes) -> Iterator[tuple[ControlPlane, int]]:
    """A control plane with the task's config (all v1) and the echo servers' endpoints, its
    gateway port bound on a free port: (control plane, ingress port)."""
    ingress = free_port()
    options = TranslateOptions(listener_address="127.0.0.1", port_map={31400: ingress})
    with ControlPlane.start_in_thread(xds_port=0, options=options) as cp:
        cp.apply_paths([str(SAMPLES / "tcp-echo-services.yaml")])
        cp.apply_yaml("---\n".join(e.workload_entry() for e in echoes))
        yield cp, ingress


@pytest.mark.parametrize("mode", [[], ["--api", "DELTA_GRPC", "--no-ads"]], ids=["ads", "delta"])
def test_envoy_joins_the_control_plane_and_serves_the_split(lab_cp, mode):
    cp, ingress = lab_cp
    envoy = start("envoy", "--xds", f"127.0.0.1:{cp.port}", "--envoy-admin-port", "0", *mode)
    try:
        first = envoy.wait_line("envoy pid")
        pid = int(re.search(r"envoy pid (\d+)", first).group(1))
        assert "labels istio=ingressgateway" in first
        admin = re.search(r"admin (http://127\.0\.0\.1:(\d+))", first)
        envoy.wait_line("LIVE: config received from", timeout=30)
        cp.apply_paths([str(SAMPLES / "tcp-echo-all-v1.yaml")])
        envoy.wait_line(f"listener 0.0.0.0_31400 on 127.0.0.1:{ingress}: ready", timeout=30)
        assert admin_http("127.0.0.1", int(admin.group(2)), "GET", "/ready")[1].strip() == "LIVE"
        (proxy,) = {p.node_id: p for p in cp.proxies()}.values()  # one node, one or more streams
        assert proxy.node_id == "ingressgateway"
        cp.apply_paths([str(SAMPLES / "tcp-echo-20-v2.yaml")])
        cp.wait_synced()
        result = run("traffic", f"127.0.0.1:{ingress}", "-n", "100")
        counts = {
            m.group(1): int(m.group(2))
            for m in re.finditer(r"^(one|two)\s+(\d+)", result.stdout, re.M)
        }
        assert locality_split_ok(counts), result.stdout
    finally:
        code = envoy.interrupt(timeout=20)
    assert code == 0, envoy.output()
    assert f"stopped Envoy (pid {pid})" in envoy.output()
    assert not os.path.exists(f"/proc/{pid}") or _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_envoy_says_it_waits_for_a_control_plane_that_is_not_there():
    port = free_port()
    envoy = start("envoy", "--xds", f"127.0.0.1:{port}", "--envoy-admin-port", "0")
    try:
        envoy.wait_line("envoy pid")
        line = envoy.wait_line("waiting for the control plane", timeout=20)
        assert f"127.0.0.1:{port}" in line and "xds-server serve" in line
    finally:
        assert envoy.interrupt(timeout=20) == 0
    assert "stopped Envoy" in envoy.output() and "Traceback" not in envoy.output()


def test_envoy_admin_port_in_use_is_one_line(busy_port):
    result = run("envoy", "--envoy-admin-port", str(busy_port))
    one_error_line(result, f"Envoy admin port {busy_port} is in use on 127.0.0.1")


def test_envoy_second_ctrl_c_while_envoy_stops_is_harmless(monkeypatch, capsys):
    """A Ctrl-C while Envoy is being stopped (the first one's stop, or an error's) must not
    cut the stop short with a KeyboardInterrupt and leave Envoy running. In process, with a
    stand-in Envoy whose stop() gets the second Ctrl-C, and an outer SIGINT handler that
    records one escaping (instead of pytest's KeyboardInterrupt)."""
    from xds_server import cli
    from xds_server.lab import pieces

    stops = []

    class StandInEnvoy:
        pid, admin_url, log_path = 4242, "http://127.0.0.1:1", "/dev/null"

        def __init__(self, *args: object, **kwargs: object) -> None:
            pass

        def start(self) -> None:
            pass

        def stop(self) -> None:
            signal.raise_signal(signal.SIGINT)  # the second Ctrl-C, while Envoy stops
            stops.append("stopped")

    def first_ctrl_c(*args: object) -> None:
        signal.raise_signal(signal.SIGINT)

    class Escaped(Exception):
        pass

    def outer(signum: int, frame: object) -> None:
        raise Escaped(signal.Signals(signum).name)

    monkeypatch.setattr(pieces, "EnvoyProcess", StandInEnvoy)
    monkeypatch.setattr(pieces, "_wait_live", first_ctrl_c)
    previous = signal.signal(signal.SIGINT, outer)
    try:
        code = cli.main(["envoy", "--xds", "127.0.0.1:1", "--envoy-admin-port", "0"])
    finally:
        signal.signal(signal.SIGINT, previous)
    assert code == 0 and stops == ["stopped"]
    assert "stopped Envoy (pid 4242)" in capsys.readouterr().out


def test_envoy_bad_xds_address_is_one_line():
    result = run("envoy", "--xds", "localhost:18000", "--envoy-admin-port", "0")
    one_error_line(result, "xds_host must be an IP address (got 'localhost')")


def test_own_envoy_from_the_printed_bootstrap(lab_cp, tmp_path):
    """README: `xds-server bootstrap > envoy.yaml && envoy -c envoy.yaml`, with the wheel's
    envoy (plus --disable-hot-restart and a base id of its own, so that it cannot meet
    another Envoy of a concurrent test on this host)."""
    cp, ingress = lab_cp
    bootstrap = tmp_path / "envoy.yaml"
    assert (
        run(
            "bootstrap",
            "--xds",
            f"127.0.0.1:{cp.port}",
            "--envoy-admin-port",
            "0",
            "-o",
            str(bootstrap),
        ).returncode
        == 0
    )
    proc = subprocess.Popen(
        [str(find_envoy_binary()), "-c", str(bootstrap), "--disable-hot-restart"]
        + ["--base-id", str(os.getpid() % 50000 + 50000), "--log-level", "warning"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        cp.apply_paths([str(SAMPLES / "tcp-echo-all-v1.yaml")])
        cp.wait_synced(timeout=30)
        assert traffic.split(traffic.send_many("127.0.0.1", ingress, 5)) == {"one": 5}
    finally:
        proc.terminate()
        proc.wait(10)
