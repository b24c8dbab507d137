"""A line echo server that behaves like Istio's ``samples/tcp-echo`` (v1 = "one", v2 = "two").

Every line received on a connection is answered with ``<prefix> <line>`` (the line keeps its
newline), so a client can tell which version served it from the first word of the reply.

Stdlib only and no imports from ``xds_server``: ``python src/xds_server/echo/server.py`` works
as a plain script (e.g. copied into a container) as well as ``python -m xds_server.echo``.

Differences from the Go original, on purpose:

* binds to 127.0.0.1 unless ``--host`` says otherwise (the original binds all interfaces);
* a last line without a trailing newline is still answered (the original drops it), so
  ``printf hello | nc`` gets a reply;
* prints ``READY host:port,...`` on stdout once every port is bound, as a readiness signal for
  a parent process, and logs to stderr only;
* a port in use ends the process with one message naming ``host:port`` and exit code 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import signal
import socket
import sys
from collections.abc import Iterable, Sequence

__all__ = ["EchoBindError", "EchoServer", "format_address", "main", "parse_ports", "start_echo"]


class EchoBindError(OSError):
    """A port could not be bound; the message names host:port so the user knows which one."""

    def __init__(self, host: str, port: int, cause: OSError) -> None:
        reason = "address already in use" if cause.errno == errno.EADDRINUSE else str(cause)
        super().__init__(cause.errno, f"cannot listen on {format_address(host, port)}: {reason}")
        self.host = host
        self.port = port


def format_address(host: str, port: int) -> str:
    """``host:port``, with brackets for IPv6 so the text can be pasted back into a client."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_ports(text: str) -> list[int]:
    """Parse Istio's comma-separated port list (``9000,9001``); 0 means pick a free port."""
    ports = []
    for item in text.split(","):
        item = item.strip()
        if not item.isdigit() or not 0 <= int(item) <= 65535:
            raise ValueError(f"invalid port {item!r} in {text!r}: expected integers 0-65535")
        ports.append(int(item))
    if not ports:
        raise ValueError("no ports given")
    return ports


class EchoServer:
    """Running echo listeners; keeps track of open connections so close() really closes all."""

    def __init__(self, prefix: str, host: str, *, log_connections: bool = True) -> None:
        self.prefix = prefix
        self.host = host
        self.log_connections = log_connections
        self._servers: list[asyncio.Server] = []
        self._writers: set[asyncio.StreamWriter] = set()
        self.connections_total = 0

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """(host, port) actually bound, one per requested port, in the order requested."""
        result = []
        for server in self._servers:
            sockname = server.sockets[0].getsockname()
            result.append((sockname[0], sockname[1]))
        return result

    @property
    def ports(self) -> list[int]:
        return [port for _, port in self.addresses]

    async def _bind(self, port: int) -> None:
        try:
            server = await asyncio.start_server(self._handle, self.host, port)
        except OSError as exc:
            raise EchoBindError(self.host, port, exc) from exc
        self._servers.append(server)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        self.connections_total += 1
        peer = writer.get_extra_info("peername")
        local = writer.get_extra_info("sockname")
        label = f"{self.prefix}: {_peer_text(peer)} -> {_peer_text(local)}"
        self._log(f"{label} open")
        lines = 0
        try:
            while True:
                try:
                    line = await reader.readuntil(b"\n")
                except asyncio.IncompleteReadError as exc:
                    line = exc.partial  # EOF: answer a last unterminated line, then stop
                except asyncio.LimitOverrunError:
                    line = await reader.read(65536)  # an over-long line is echoed in chunks
                if not line:
                    break
                lines += 1
                writer.write(self.prefix.encode() + b" " + line)
                await writer.drain()
        except (ConnectionError, OSError):
            pass  # the client went away; nothing to answer
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()
            self._log(f"{label} closed after {lines} line(s)")

    def _log(self, text: str) -> None:
        if self.log_connections:
            print(text, file=sys.stderr, flush=True)

    async def close(self) -> None:
        """Stop listening and close open connections (3.11's Server.close leaves them open)."""
        for server in self._servers:
            server.close()
        for writer in list(self._writers):
            writer.close()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()

    async def __aenter__(self) -> EchoServer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def _peer_text(address: object) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        return format_address(str(address[0]), int(address[1]))
    return str(address)


async def start_echo(
    prefix: str,
    ports: Iterable[int],
    host: str = "127.0.0.1",
    *,
    log_connections: bool = True,
) -> EchoServer:
    """Bind every port, all or nothing, and start answering.

    Raises EchoBindError naming host:port, so a caller can say which port was taken.
    """
    server = EchoServer(prefix, host, log_connections=log_connections)
    try:
        for port in ports:
            await server._bind(port)
    except BaseException:
        await server.close()
        raise
    return server


async def _serve(prefix: str, ports: Sequence[int], host: str, quiet: bool) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        server = await start_echo(prefix, ports, host, log_connections=not quiet)
    except EchoBindError as exc:
        print(f"tcp-echo: {exc.strerror}", file=sys.stderr, flush=True)
        return 1
    except socket.gaierror as exc:
        print(f"tcp-echo: cannot resolve host {host!r}: {exc}", file=sys.stderr, flush=True)
        return 1
    ready = ",".join(format_address(h, p) for h, p in server.addresses)
    print(f"READY {ready}", flush=True)
    if not quiet:
        print(f"tcp-echo: prefix {prefix!r} listening on {ready}", file=sys.stderr, flush=True)
    await stop.wait()
    await server.close()
    return 0


def _build_parser(prog: str | None) -> argparse.ArgumentParser:
    name = prog or "%(prog)s"
    parser = argparse.ArgumentParser(
        prog=prog,
        usage=(
            f"{name} --ports PORTS --prefix PREFIX [--host HOST] [-q]\n"
            f"       {name} PORTS PREFIX [--host HOST] [-q]"
        ),
        description=(
            "TCP echo server like Istio's samples/tcp-echo: every line received is answered\n"
            "with '<prefix> <line>', on several ports at once.\n\n"
            "Once all ports are bound it prints one line on stdout, with the actual ports:\n"
            "  READY 127.0.0.1:9000,127.0.0.1:9001\n"
            "Connection logs go to stderr. SIGTERM/SIGINT exit with 0; a port already in use\n"
            "exits with 1 and names host:port."
        ),
        epilog=(
            "examples:\n"
            "  %(prog)s --prefix one --ports 9000,9001\n"
            "  %(prog)s --prefix two --ports 0 --host 0.0.0.0\n"
            "  %(prog)s 9000,9001 one        (Istio's positional style)"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "legacy",
        nargs="*",
        metavar="PORTS PREFIX",
        help="Istio's positional form: comma-separated ports, then the prefix",
    )
    parser.add_argument(
        "--ports",
        help="comma-separated ports to listen on, 0 = pick a free port (e.g. 9000,9001 or 0,0)",
    )
    parser.add_argument(
        "--prefix", help="word put before every echoed line, e.g. 'one' for v1, 'two' for v2"
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default: 127.0.0.1; use 0.0.0.0 or :: to accept remote clients)",
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="do not log connections to stderr"
    )
    return parser


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    parser = _build_parser(prog)
    args = parser.parse_args(argv)
    ports_text, prefix = args.ports, args.prefix
    if args.legacy:
        if len(args.legacy) != 2 or ports_text is not None or prefix is not None:
            parser.error("positional form is exactly: PORTS PREFIX (e.g. 9000,9001 one)")
        ports_text, prefix = args.legacy
    if ports_text is None or prefix is None:
        parser.error("need --ports and --prefix (or positional PORTS PREFIX)")
    try:
        ports = parse_ports(ports_text)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        return asyncio.run(_serve(prefix, ports, args.host, args.quiet))
    except KeyboardInterrupt:  # a signal that arrived before the handlers were installed
        return 0


if __name__ == "__main__":
    sys.exit(main())
