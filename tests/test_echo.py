"""The tcp-echo backend, run as a real subprocess, and the lab traffic client against it."""

from __future__ import annotations

import asyncio
import selectors
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from xds_server.echo import EchoBindError, start_echo
from xds_server.lab.traffic import (
    NO_REPLY,
    HeldConnection,
    date_line,
    format_split_table,
    send_many,
    send_once,
    split,
    version_of,
)

SERVER_SCRIPT = Path(__file__).resolve().parents[1] / "src" / "xds_server" / "echo" / "server.py"


def _read_line(process: subprocess.Popen[str], timeout: float) -> str:
    """One line of the child's stdout, or fail after ``timeout`` instead of hanging forever."""
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            raise TimeoutError(f"no line on stdout within {timeout}s")
    return process.stdout.readline()


def _wait_exit(process: subprocess.Popen[str], timeout: float) -> int | None:
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


class EchoProcess:
    """A running echo subprocess and the (host, port) pairs from its READY line."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        self.addresses: list[tuple[str, int]] = []

    def wait_ready(self, timeout: float = 10.0) -> list[tuple[str, int]]:
        line = _read_line(self.process, timeout)
        assert line.startswith("READY "), f"unexpected first line {line!r}"
        for item in line.split(maxsplit=1)[1].split(","):
            host, _, port = item.rpartition(":")
            self.addresses.append((host, int(port)))
        return self.addresses

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate(timeout=5)


@pytest.fixture
def spawn_echo() -> Iterator[Callable[..., EchoProcess]]:
    """Start echo subprocesses; every one is killed and reaped at the end of the test."""
    started: list[EchoProcess] = []

    def spawn(*args: str) -> EchoProcess:
        echo = EchoProcess(*args)
        started.append(echo)
        return echo

    try:
        yield spawn
    finally:
        for echo in started:
            echo.stop()


def test_replies_on_every_port(spawn_echo) -> None:
    echo = spawn_echo("-m", "xds_server.echo", "--ports", "0,0", "--prefix", "one", "-q")
    addresses = echo.wait_ready()
    assert len(addresses) == 2
    assert len({port for _, port in addresses}) == 2
    for host, port in addresses:
        assert host == "127.0.0.1"
        assert send_once(host, port, "hello\n") == "one hello"


def test_every_line_is_answered_with_prefix(spawn_echo) -> None:
    echo = spawn_echo("-m", "xds_server.echo", "--ports", "0", "--prefix", "two", "-q")
    (host, port), *_ = echo.wait_ready()
    assert send_once(host, port, "a\nb\nlast-without-newline") == (
        "two a\ntwo b\ntwo last-without-newline"
    )


def test_istio_positional_style_as_plain_script(spawn_echo) -> None:
    echo = spawn_echo(str(SERVER_SCRIPT), "0", "two")
    (host, port), *_ = echo.wait_ready()
    reply = send_once(host, port)  # default payload: the date, like (date; sleep 1) | nc
    assert version_of(reply) == "two"
    prefix, _, date = reply.partition(" ")
    assert prefix == "two"
    assert date.split()[-1] == date_line().split()[-1]  # ends with the year, like `date`


def test_held_connection_echoes_several_lines(spawn_echo) -> None:
    echo = spawn_echo("-m", "xds_server.echo", "--ports", "0", "--prefix", "one", "-q")
    (host, port), *_ = echo.wait_ready()
    with HeldConnection(host, port) as connection:
        assert connection.echo("first") == "one first"
        assert connection.echo("second\n") == "one second"
        assert connection.echo("third") == "one third"


def test_port_in_use_exits_1_naming_the_port(spawn_echo) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        echo = spawn_echo("-m", "xds_server.echo", "--ports", f"0,{port}", "--prefix", "one")
        _, stderr = echo.process.communicate(timeout=10)
    assert echo.process.returncode == 1
    assert f"127.0.0.1:{port}" in stderr
    assert "already in use" in stderr
    assert len(stderr.strip().splitlines()) == 1


def test_bad_arguments_exit_2(spawn_echo) -> None:
    echo = spawn_echo("-m", "xds_server.echo", "--ports", "nope", "--prefix", "one")
    _, stderr = echo.process.communicate(timeout=10)
    assert echo.process.returncode == 2
    assert "invalid port 'nope'" in stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_exits_0_promptly(spawn_echo, sig: signal.Signals) -> None:
    echo = spawn_echo("-m", "xds_server.echo", "--ports", "0", "--prefix", "one")
    (host, port), *_ = echo.wait_ready()
    with HeldConnection(host, port) as connection:
        assert connection.echo("before") == "one before"
        echo.process.send_signal(sig)
        assert _wait_exit(echo.process, timeout=5) == 0
        with pytest.raises(ConnectionError, match=f"127.0.0.1:{port}"):
            connection.echo("after")


def test_connection_refused_names_host_and_port() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connect is refused
        with pytest.raises(ConnectionError, match=f"127.0.0.1:{port}"):
            send_once("127.0.0.1", port, "x\n", timeout=2)


def test_in_process_api() -> None:
    async def scenario() -> None:
        server = await start_echo("one", [0, 0], "127.0.0.1", log_connections=False)
        try:
            assert len(server.addresses) == 2
            for host, port in server.addresses:
                reply = await asyncio.to_thread(send_once, host, port, "hi\n")
                assert reply == "one hi"
            port = server.addresses[0][1]
            with pytest.raises(EchoBindError, match=f"127.0.0.1:{port}"):
                await start_echo("two", [0, port], "127.0.0.1")
        finally:
            await server.close()

    asyncio.run(scenario())


def test_split_counts_and_table() -> None:
    replies = ["one a", "two b", "one c", "one d", ""]
    counts = split(replies)
    assert counts == {"one": 3, "two": 1, NO_REPLY: 1}
    table = format_split_table({"one": 80, "two": 20})
    lines = table.splitlines()
    assert lines[0].split() == ["VERSION", "CONNECTIONS", "PERCENT"]
    assert lines[1].split() == ["one", "80", "80.0%"]
    assert lines[2].split() == ["two", "20", "20.0%"]
    assert lines[3].split() == ["TOTAL", "100", "100.0%"]
    assert len({len(line) for line in lines}) == 1  # aligned columns
    assert format_split_table({}).splitlines()[-1].split() == ["TOTAL", "0", "0.0%"]


def test_send_many_is_sequential_connections(spawn_echo) -> None:
    echo = spawn_echo("-m", "xds_server.echo", "--ports", "0", "--prefix", "one")
    (host, port), *_ = echo.wait_ready()
    replies = send_many(host, port, 5, payload="x\n")
    assert replies == ["one x"] * 5
    echo.process.send_signal(signal.SIGTERM)
    _, stderr = echo.process.communicate(timeout=5)
    assert stderr.count(" open") == 5  # one connection logged per reply
