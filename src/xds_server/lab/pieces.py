"""The lab piece by piece, for a user who runs ``xds-server serve`` alone.

``xds-server echo``, ``envoy``, ``bootstrap`` and ``traffic`` start (or print) one part of the
lab each, against a server that is already running, with the samples' defaults: the
tcp-echo servers on the ports of ``samples/tcp-echo/tcp-echo-services.yaml``, an Envoy with
the ingress labels the sample Gateway selects, the task's ingress 127.0.0.1:31400. Each says
when it is ready, stops cleanly on Ctrl-C (or SIGTERM), and turns every error a user can
cause (a taken port, a refused connection) into one line and exit code 1.

Only stdlib and the light lab modules are imported here, so these commands start quickly.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import shutil
import signal
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TypedDict

from ..echo.server import EchoBindError, format_address, start_echo
from ..ports import port_is_free
from . import traffic
from .envoy import EnvoyError, EnvoyProcess, poll_live, render_bootstrap

__all__ = [
    "BootstrapArgs",
    "ECHO_VERSIONS",
    "EnvoyOptions",
    "INGRESS",
    "INGRESS_LABELS",
    "NC_LOOP",
    "XDS",
    "nc_loop",
    "print_bootstrap",
    "program",
    "shown_path",
    "run_echo",
    "run_envoy",
    "run_traffic",
    "workload_entries",
]

ECHO_VERSIONS: dict[str, tuple[str, tuple[int, int]]] = {
    "v1": ("one", (9000, 9001)),
    "v2": ("two", (9002, 9003)),
}
"""version -> (reply prefix, its WorkloadEntry's ports in the sample tcp-echo-services.yaml)."""

INGRESS = ("127.0.0.1", 31400)
"""The task's ingress: where the sample Gateway's port 31400 is bound by default."""

XDS = ("127.0.0.1", 18000)
"""``xds-server serve``'s default xDS address."""

INGRESS_LABELS = {"istio": "ingressgateway"}
"""Istio's ingress gateway labels: the sample Gateway's selector."""

NC_LOOP = "for i in $(seq 1 {n}); do {client} | nc -q 1 {host} {port}; done"
"""The task's traffic loop, spelled so that it ends with both Debian netcats.

The task's ``(date; sleep 1) | nc HOST PORT`` never returns with netcat-openbsd (Debian's
default ``nc``): at the end of its input it neither closes nor half-closes, so it waits for
the server, which waits for it. ``-q 1`` (quit 1 s after the end of input) is understood by
netcat-openbsd (1 s later) and netcat-traditional (at once: it half-closes, the echo server
closes); ``-N`` is openbsd only and ``-q 0`` races with the reply when there is no sleep.
Nmap's ncat has no ``-q`` but needs nothing: plain ``ncat HOST PORT`` ends."""


def nc_loop(count: int, host: str = INGRESS[0], port: int = INGRESS[1], hold: float = 1.0) -> str:
    """The traffic loop as a shell line that works as printed (see NC_LOOP)."""
    client = f"(date; sleep {hold:g})" if hold else "date"
    return NC_LOOP.format(n=count, client=client, host=host, port=port)


def program(name: str) -> str:
    """How to type one of our commands here: ``xds-server`` when that is the one on $PATH,
    else its path next to this Python (``.venv/bin/xds-server`` from the repo after
    ``make demo``), so that a printed command works when pasted into the same shell."""
    candidate = Path(sys.executable).parent / name
    if not candidate.exists():
        return name
    found = shutil.which(name)
    if found and Path(found).resolve() == candidate.resolve():
        return name
    return shown_path(candidate)


def shown_path(path: str | Path) -> str:
    """A path as a user in this directory would type it: relative below it, else absolute."""
    absolute = Path(path).absolute()
    try:
        return str(absolute.relative_to(Path.cwd()))
    except ValueError:
        return str(absolute)


def workload_entries(endpoints: Sequence[tuple[str, str, Sequence[int]]]) -> str:
    """WorkloadEntries for (version, host, (tcp port, tcp-other port)) echo servers: what
    samples/tcp-echo/tcp-echo-services.yaml says for the sample ports, for other ports."""
    docs = []
    for version, host, ports in endpoints:
        docs.append(
            "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n"
            f"metadata: {{name: tcp-echo-{version}}}\n"
            f"spec:\n  address: {host}\n  labels: {{app: tcp-echo, version: {version}}}\n"
            f"  ports: {{tcp: {ports[0]}, tcp-other: {ports[1]}}}\n"
        )
    return "---\n".join(docs)


class _Stop(Exception):
    """SIGINT or SIGTERM arrived: stop what was started and exit 0."""


class _Signals:
    """SIGINT and SIGTERM while ``_stop_on_signals`` is in force: the first raises _Stop;
    one after it, or after ``shutting_down()``, is ignored."""

    def __init__(self) -> None:
        self.armed = True

    def shutting_down(self) -> None:
        """From here on the block only cleans up (stops a child): no signal may cut that short."""
        self.armed = False

    def handler(self, signum: int, frame: FrameType | None) -> None:
        if self.armed:
            self.armed = False
            raise _Stop(signal.Signals(signum).name)


@contextmanager
def _stop_on_signals() -> Iterator[_Signals]:
    """Turn SIGINT and SIGTERM into _Stop, so a terminal's Ctrl-C and a supervisor's
    SIGTERM take the same clean way out (no traceback, children stopped).

    Only the first: a second Ctrl-C while the first one's cleanup runs (Envoy stopping) is
    ignored, as is one after ``shutting_down()``; so the cleanup belongs inside the block,
    which restores the previous handlers only once it is done."""
    signals = _Signals()
    old = {sig: signal.signal(sig, signals.handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield signals
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous)


def _write(path: str, text: str) -> int | None:
    """Write ``text`` to the file ``path``: None, or the exit code of the one-line error."""
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as exc:
        return _err(f"cannot write {path}: {exc.strerror or exc}")
    return None


def _err(text: str) -> int:
    print(f"error: {text}", file=sys.stderr, flush=True)
    return 1


# --- xds-server traffic ----------------------------------------------------------------------


def run_traffic(
    host: str,
    port: int,
    *,
    connections: int = 20,
    hold: float = 0.0,
    verbose: bool = False,
    timeout: float = 5.0,
) -> int:
    """The task's ``for ...; do (date; sleep 1) | nc HOST PORT; done`` without nc: one date
    line per connection, then the demo's VERSION / CONNECTIONS / PERCENT table.

    Exit 1 when the address refuses (one line, with where to look) or when a connection was
    closed without a reply (Envoy had no endpoint for it); the table is printed even then."""
    where = format_address(host, port)
    replies: list[str] = []
    try:
        with _stop_on_signals():
            for _ in range(connections):
                reply = traffic.send_once(host, port, hold=hold, timeout=timeout)
                replies.append(reply)
                if verbose:
                    print(reply or traffic.NO_REPLY, flush=True)
    except _Stop:
        print(f"interrupted after {len(replies)} connection(s)", file=sys.stderr)
    except (ConnectionError, TimeoutError) as exc:
        after = f" (after {len(replies)} answered connection(s))" if replies else ""
        return _err(
            f"{exc}{after}; is an Envoy listening there (xds-server envoy) with a Gateway "
            "for that port applied (xdsctl get gateway)?"
        )
    if verbose:
        print()
    counts = traffic.split(replies)
    print(traffic.format_split_table(counts), flush=True)
    unanswered = counts.get(traffic.NO_REPLY, 0)
    if unanswered:
        return _err(
            f"{unanswered} of {len(replies)} connection(s) to {where} were closed without a "
            "reply: a route to a subset with no endpoints? (xdsctl proxy-status; are the echo "
            "servers running: xds-server echo)"
        )
    return 0 if len(replies) == connections else 130


# --- xds-server echo -------------------------------------------------------------------------


def run_echo(
    versions: Sequence[str],
    ports: Mapping[str, Sequence[int]],
    *,
    host: str = "127.0.0.1",
    quiet: bool = False,
    endpoints_file: str | None = None,
) -> int:
    """Run the tcp-echo servers of ``versions`` in this process until Ctrl-C.

    All or nothing: a taken port stops the ones already bound and exits 1 with one line.
    ``endpoints_file``: write the WorkloadEntries for the ports actually bound (for
    ``--v1-ports 0,0``, or anything but the samples' ports) to apply with xdsctl."""
    try:
        return asyncio.run(_echo(versions, ports, host, quiet, endpoints_file))
    except KeyboardInterrupt:  # before the loop's handlers were installed
        return 0


async def _echo(
    versions: Sequence[str],
    ports: Mapping[str, Sequence[int]],
    host: str,
    quiet: bool,
    endpoints_file: str | None,
) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    servers = []
    try:
        bound = []
        for version in versions:
            prefix = ECHO_VERSIONS[version][0]
            try:
                server = await start_echo(prefix, ports[version], host, log_connections=not quiet)
            except EchoBindError as exc:
                return _err(
                    f"tcp-echo {version}: {exc.strerror} (another `xds-server echo`? pick "
                    f"other ports with --{version}-ports and apply WorkloadEntries for them)"
                )
            except OSError as exc:  # an address that is not local, a name that does not resolve
                return _err(f"tcp-echo {version}: cannot listen on {host}: {exc}")
            servers.append(server)
            addresses = server.addresses
            bound.append((version, addresses[0][0], [p for _, p in addresses]))
            shown = ", ".join(format_address(h, p) for h, p in addresses)
            print(f"tcp-echo {version} (replies {prefix!r}) listening on {shown}", flush=True)
        if endpoints_file:
            if failed := _write(endpoints_file, workload_entries(bound)):
                return failed
            print(f"wrote WorkloadEntries for these ports to {endpoints_file}", flush=True)
        elif any(tuple(p) != ECHO_VERSIONS[v][1] or h != "127.0.0.1" for v, h, p in bound):
            print(
                "note: not the ports of samples/tcp-echo/tcp-echo-services.yaml; "
                "--endpoints FILE writes the WorkloadEntries to apply for these",
                flush=True,
            )
        print("ready; Ctrl-C stops the echo servers", flush=True)
        await stop.wait()
        return 0
    finally:
        for server in servers:
            await server.close()


# --- xds-server envoy / bootstrap ------------------------------------------------------------


class BootstrapArgs(TypedDict):
    """The keywords EnvoyOptions gives render_bootstrap and EnvoyProcess."""

    xds_host: str
    node_id: str
    admin_port: int
    api_type: str
    labels: Mapping[str, str] | None
    ads: bool
    xds_more: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class EnvoyOptions:
    """The bootstrap's choices, which ``xds-server envoy`` runs and ``bootstrap`` prints
    (defaults: the sample ingress gateway of ``xds-server serve``'s defaults)."""

    xds: tuple[str, int] = XDS
    labels: Mapping[str, str] | None = field(default_factory=lambda: dict(INGRESS_LABELS))
    api_type: str = "GRPC"
    ads: bool = True
    admin_port: int = 15000
    node_id: str = "ingressgateway"
    xds_more: tuple[tuple[str, int], ...] = ()  # more control-plane replicas

    def bootstrap_args(self) -> BootstrapArgs:
        """The keywords of render_bootstrap and EnvoyProcess, after the xDS port."""
        return BootstrapArgs(
            xds_host=self.xds[0],
            node_id=self.node_id,
            admin_port=self.admin_port,
            api_type=self.api_type,
            labels=self.labels,
            ads=self.ads,
            xds_more=self.xds_more,
        )


def print_bootstrap(options: EnvoyOptions, output: str | None = None) -> int:
    """The bootstrap ``xds-server envoy`` would run, for an Envoy of the user's own."""
    try:
        text = render_bootstrap(xds_port=options.xds[1], **options.bootstrap_args())
    except ValueError as exc:
        return _err(str(exc))
    if output is None or output == "-":
        sys.stdout.write(text)
        return 0
    if failed := _write(output, text):
        return failed
    print(f"wrote {output}; run it with: envoy -c {output}", file=sys.stderr)
    return 0


def _listeners(envoy: EnvoyProcess) -> dict[str, str]:
    """name -> address Envoy really bound, from its admin /listeners."""
    data = json.loads(envoy.admin_get("/listeners?format=json"))
    found = {}
    for status in data.get("listener_statuses", []):
        sock = status.get("local_address", {}).get("socket_address", {})
        found[status.get("name", "")] = format_address(
            sock.get("address", "?"), int(sock.get("port_value", 0))
        )
    return found


def run_envoy(options: EnvoyOptions, *, log_level: str, wait_note_after: float = 2.0) -> int:
    """Run the wheel's Envoy against the control plane at ``options.xds`` until Ctrl-C.

    Prints its pid and admin URL, LIVE once the control plane has sent its config (with a
    hint while it waits for one that is not there), and each gateway listener as it comes
    and goes, so a user (or a test) knows when traffic can flow. A Ctrl-C while Envoy stops
    is ignored: Envoy is always stopped."""
    xds, admin_port = options.xds, options.admin_port
    if admin_port and not port_is_free(admin_port):
        return _err(
            f"Envoy admin port {admin_port} is in use on 127.0.0.1 (another Envoy? "
            "--envoy-admin-port 0 picks a free one)"
        )
    envoy = EnvoyProcess(xds[1], log_level=log_level, **options.bootstrap_args())
    api = "Delta" if options.api_type == "DELTA_GRPC" else "SotW"
    mode = f"{'ADS' if options.ads else 'per-type'} {api}"
    stopping = False
    with _stop_on_signals() as signals:  # around the stop too: see _stop_on_signals
        try:
            try:
                envoy.start()
            except ValueError as exc:  # from render_bootstrap: an address that is not an IP
                return _err(str(exc))
            print(
                f"envoy pid {envoy.pid}: admin {envoy.admin_url}, xDS {format_address(*xds)} "
                f"({mode}), node {options.node_id!r}, labels {_labels_text(options.labels)}",
                flush=True,
            )
            print(f"log: {envoy.log_path}", flush=True)
            _wait_live(envoy, xds, wait_note_after)
            print("Ctrl-C stops Envoy", flush=True)
            _follow_listeners(envoy)
        except _Stop:
            stopping = True
        except EnvoyError as exc:
            lines = str(exc).strip().splitlines()
            _err(lines[0] if lines else "Envoy failed")
            tail = [line for line in lines[1:] if not line.startswith("command:")]
            if tail:
                print("\n".join(tail[-10:]), file=sys.stderr)
            return 1
        finally:
            signals.shutting_down()
            pid = envoy.pid
            envoy.stop()
            if pid is not None:
                print(f"stopped Envoy (pid {pid})", flush=True)
    return 0 if stopping else 1


def _labels_text(labels: Mapping[str, str] | None) -> str:
    if not labels:
        return "none (served every Gateway)"
    return ",".join(f"{k}={v}" for k, v in labels.items())


def _check_running(envoy: EnvoyProcess) -> None:
    """Raise EnvoyError, with the end of its log, if Envoy has exited."""
    if not envoy.running:
        raise EnvoyError(f"Envoy exited with code {envoy.returncode}\n{envoy.log_tail()}")


def _wait_live(envoy: EnvoyProcess, xds: tuple[str, int], note_after: float) -> None:
    started = time.monotonic()
    noted = False
    while True:
        state = poll_live(
            envoy.ready_state, lambda: _check_running(envoy), note_after if not noted else 3600.0
        )
        if state == "LIVE":
            break
        if not noted:
            print(
                f"waiting for the control plane at {format_address(*xds)} (/ready: {state}); "
                "is `xds-server serve` running there?",
                flush=True,
            )
            noted = True
    took = (time.monotonic() - started + (envoy.startup_seconds or 0.0)) * 1000
    print(
        f"LIVE: config received from {format_address(*xds)}, {took:.0f} ms after start", flush=True
    )


def _follow_listeners(envoy: EnvoyProcess, interval: float = 0.2) -> None:
    """Print gateway listeners as Envoy binds and drops them, until Envoy exits or a signal."""
    seen: dict[str, str] = {}
    while True:
        _check_running(envoy)
        try:
            now = _listeners(envoy)
        except (OSError, http.client.HTTPException, EnvoyError, ValueError):
            now = seen  # a busy or stopping admin endpoint: look again next time
        for name in sorted(now.keys() - seen.keys()):
            print(f"listener {name} on {now[name]}: ready for traffic", flush=True)
        for name in sorted(seen.keys() - now.keys()):
            print(f"listener {name} removed", flush=True)
        seen = now
        time.sleep(interval)
