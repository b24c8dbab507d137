"""Traffic client for the lab: the Python form of the task's ``(date; sleep 1) | nc $HOST $PORT``.

Each call opens one TCP connection, so a run of ``send_many`` samples the proxy's per-connection
routing decision (TCP traffic shifting splits connections, not lines). ``HeldConnection`` keeps
one connection open across config changes, to show whether Envoy drained it or not.

Blocking stdlib sockets on purpose: callers are tests, the CLI and the demo, none of which run
an event loop, and every network error names ``host:port``.
"""

from __future__ import annotations

import socket
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime
from types import TracebackType

__all__ = [
    "NO_REPLY",
    "HeldConnection",
    "date_line",
    "format_split_table",
    "send_many",
    "send_once",
    "split",
    "version_of",
]

NO_REPLY = "(no reply)"
"""The version reported for an empty reply: the proxy accepted, then closed without data."""


def _where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def date_line() -> str:
    """The current time the way ``date`` prints it in the C locale, plus a newline."""
    now = datetime.now().astimezone()
    return f"{now:%a %b} {now.day:2d} {now:%H:%M:%S} {now.tzname()} {now.year}\n"


def _connect(host: str, port: int, timeout: float) -> socket.socket:
    try:
        return socket.create_connection((host, port), timeout=timeout)
    except TimeoutError as exc:
        raise TimeoutError(
            f"connecting to {_where(host, port)} timed out after {timeout}s"
        ) from exc
    except OSError as exc:
        raise ConnectionError(f"cannot connect to {_where(host, port)}: {exc}") from exc


def send_once(
    host: str,
    port: int,
    payload: str | None = None,
    hold: float = 0.0,
    timeout: float = 5.0,
) -> str:
    """Send one payload on a fresh connection and return the whole reply, stripped.

    Like nc: send, keep the connection ``hold`` seconds (the ``sleep 1``), half-close, read
    until the server closes. An empty string means the peer closed without answering (e.g.
    Envoy routed the connection to a cluster with no endpoints).
    """
    data = (date_line() if payload is None else payload).encode()
    where = _where(host, port)
    with _connect(host, port, timeout) as sock:
        try:
            sock.sendall(data)
            if hold > 0:
                time.sleep(hold)
            sock.shutdown(socket.SHUT_WR)
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except TimeoutError as exc:
            raise TimeoutError(f"no complete reply from {where} within {timeout}s") from exc
        except OSError as exc:
            raise ConnectionError(f"connection to {where} failed: {exc}") from exc
    return b"".join(chunks).decode(errors="replace").strip()


def send_many(
    host: str,
    port: int,
    count: int,
    hold: float = 0.0,
    payload: str | None = None,
    timeout: float = 5.0,
) -> list[str]:
    """``count`` sequential connections (one reply each), like the task's shell loop."""
    return [send_once(host, port, payload, hold=hold, timeout=timeout) for _ in range(count)]


def version_of(reply: str) -> str:
    """The backend version that answered: the reply's first word ("one", "two")."""
    words = reply.split(maxsplit=1)
    return words[0] if words else NO_REPLY


def split(replies: Iterable[str]) -> Counter[str]:
    """How many connections each version answered."""
    return Counter(version_of(reply) for reply in replies)


def format_split_table(counts: Mapping[str, int]) -> str:
    """An aligned VERSION / CONNECTIONS / PERCENT table with a TOTAL row, for humans."""
    total = sum(counts.values())
    rows = [("VERSION", "CONNECTIONS", "PERCENT")]
    for version in sorted(counts):
        share = 100.0 * counts[version] / total if total else 0.0
        rows.append((version, str(counts[version]), f"{share:.1f}%"))
    rows.append(("TOTAL", str(total), "100.0%" if total else "0.0%"))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [
        f"{name:<{widths[0]}}  {conns:>{widths[1]}}  {pct:>{widths[2]}}"
        for name, conns, pct in rows
    ]
    return "\n".join(lines)


class HeldConnection:
    """One long-lived connection that can echo a line at any moment.

    Used to prove that a config change does (or does not) cut open connections: open it,
    ``echo()``, change the config, ``echo()`` again. A closed connection raises ConnectionError.
    """

    def __init__(self, host: str, port: int, timeout: float = 5.0) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buffer = b""

    @property
    def where(self) -> str:
        return _where(self.host, self.port)

    def open(self) -> HeldConnection:
        if self._sock is None:
            self._sock = _connect(self.host, self.port, self.timeout)
        return self

    def echo(self, line: str) -> str:
        """Send one line and return the single line that comes back, without its newline."""
        if self._sock is None:
            raise ConnectionError(f"connection to {self.where} is not open")
        data = line if line.endswith("\n") else line + "\n"
        try:
            self._sock.sendall(data.encode())
            while b"\n" not in self._buffer:
                chunk = self._sock.recv(65536)
                if not chunk:
                    raise ConnectionError(
                        f"{self.where} closed the connection before answering {line.strip()!r}"
                    )
                self._buffer += chunk
        except TimeoutError as exc:
            raise TimeoutError(f"no answer from {self.where} within {self.timeout}s") from exc
        except ConnectionError:
            raise
        except OSError as exc:
            raise ConnectionError(f"connection to {self.where} failed: {exc}") from exc
        reply, _, self._buffer = self._buffer.partition(b"\n")
        return reply.decode(errors="replace")

    def wait_closed(self, timeout: float) -> bool:
        """Whether the peer closes the connection within ``timeout`` seconds (polled: EOF or
        reset ends the wait early)."""
        if self._sock is None:
            raise ConnectionError(f"connection to {self.where} is not open")
        deadline = time.monotonic() + timeout
        try:
            while (left := deadline - time.monotonic()) > 0:
                self._sock.settimeout(min(0.2, left))
                try:
                    if self._sock.recv(1, socket.MSG_PEEK) == b"":
                        return True
                except TimeoutError:
                    continue
                except OSError:
                    return True
            return False
        finally:
            self._sock.settimeout(self.timeout)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> HeldConnection:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
