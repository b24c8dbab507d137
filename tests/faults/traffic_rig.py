"""Helpers of the fault suite's traffic tests: the lab as real processes that a test can
kill and restart (``Rig``), and a load generator (``Load``) that opens new connections at a
steady rate and keeps long-lived ones talking, counting every failure and every cut.

Everything here waits on readiness signals (a server's output line, Envoy's ``/ready``, an
ACK in proxy-status), never on fixed sleeps; the load generator's own pacing is the only
clock it follows."""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from conftest import ServerProcess

from xds_server.admin.client import AdminClient, ServerUnavailable
from xds_server.admin.v1 import admin_pb2
from xds_server.lab.envoy import EnvoyProcess
from xds_server.lab.lab import HOST, INGRESS_LABELS, SAMPLES, EchoProcess
from xds_server.lab.traffic import date_line
from xds_server.ports import free_port
from xds_server.waiting import wait_until

NODE = "ingressgateway"
SERVICES = (SAMPLES / "tcp-echo-services.yaml").read_text().split("---\n")[0]
ALL_V1 = (SAMPLES / "tcp-echo-all-v1.yaml").read_text()
V2_20 = (SAMPLES / "tcp-echo-20-v2.yaml").read_text()


_WEIGHTS = V2_20.replace("weight: 80", "weight: <v1>").replace("weight: 20", "weight: <v2>")


def weights_yaml(v1: int, v2: int) -> str:
    """The task's 20-v2 VirtualService with other weights (placeholders, so that 20/80 does
    not turn into 80/80 the way two chained replaces of the numbers would)."""
    return _WEIGHTS.replace("<v1>", str(v1)).replace("<v2>", str(v2))


def acked(proxy: admin_pb2.Proxy) -> dict[str, str]:
    """The versions this proxy ACKed, by type URL."""
    return {t.type_url: t.acked_version for t in proxy.types}


# --- the lab as processes ------------------------------------------------------------------


class Rig:
    """tcp-echo v1/v2 (given), ``xds-server serve --state-dir`` as a child process and one
    Envoy, on ports chosen once so that both the server and Envoy can be restarted on them.

    ``close()`` stops whatever is still running; tests call it in a ``finally``."""

    def __init__(
        self,
        state_dir: Path,
        echoes: Sequence[EchoProcess],
        *,
        split: str = "locality",
        drain_time_s: int | None = None,
        api_type: str = "GRPC",
    ) -> None:
        self.state_dir = state_dir
        self.api_type = api_type  # GRPC (state of the world) or DELTA_GRPC
        self.echoes = list(echoes)
        self.split = split
        self.drain_time_s = drain_time_s
        self.ingress = free_port(HOST)  # written into --port-map: must be known up front
        self.xds_port = 0  # 0 until the first server binds one; then reused on every restart
        self.admin_port = 0
        self.server: ServerProcess | None = None
        self.admin: AdminClient | None = None
        self.envoy: EnvoyProcess | None = None
        self.old_envoys: list[EnvoyProcess] = []

    # -- server --------------------------------------------------------------------------

    def start_server(self) -> float:
        """Start the server (on the ports of the last one, if any) and return the seconds
        from spawn until its admin API listens. A new AdminClient each time, so no gRPC
        reconnect back-off from the old channel delays the first call."""
        assert self.server is None or self.server.proc.poll() is not None
        started = time.monotonic()
        self.server = ServerProcess(
            *("--state-dir", str(self.state_dir), "--split", self.split),
            *("--xds-port", str(self.xds_port), "--admin-port", str(self.admin_port)),
            *("--port-map", f"31400={self.ingress}"),
        )
        xds = self.server.wait_port("xDS")
        admin = self.server.wait_port("admin API")
        seconds = time.monotonic() - started
        assert self.xds_port in (0, xds) and self.admin_port in (0, admin)
        self.xds_port, self.admin_port = xds, admin
        if self.admin is not None:
            self.admin.close()
        self.admin = AdminClient(f"{HOST}:{admin}")
        return seconds

    def kill_server(self) -> None:
        """kill -9: no chance to close streams or flush anything."""
        assert self.server is not None
        self.server.kill()

    def term_server(self) -> None:
        """SIGTERM: the graceful way; it must exit by itself."""
        assert self.server is not None
        self.server.proc.terminate()
        self.server.proc.wait(10)
        assert self.server.proc.returncode == 0, self.server.lines

    @property
    def client(self) -> AdminClient:
        assert self.admin is not None
        return self.admin

    def seed(self, v1: int = 80, v2: int = 20) -> None:
        """The task's config with the echo servers as WorkloadEntries, at this split."""
        services = "---\n".join([SERVICES, *(e.workload_entry() for e in self.echoes)])
        self.client.apply([("services.yaml", services), ("all-v1.yaml", ALL_V1)])
        self.client.apply([("weights.yaml", weights_yaml(v1, v2))])

    def config(self) -> dict[tuple[str, str, str], str]:
        """Every stored resource as the server returns it (metadata included)."""
        return {
            (r.ref.kind, r.ref.namespace, r.ref.name): r.json for r in self.client.get().resources
        }

    # -- Envoy ---------------------------------------------------------------------------

    def start_envoy(self, bootstrap: str | None = None) -> EnvoyProcess:
        """An Envoy on the server's xDS port (or on ``bootstrap``), LIVE and ACKed."""
        assert self.xds_port
        self.envoy = EnvoyProcess(
            self.xds_port,
            drain_time_s=self.drain_time_s,
            api_type=self.api_type,
            labels=INGRESS_LABELS,
            bootstrap=bootstrap,
        ).start()
        self.envoy.wait_live(30)
        self.wait_synced()
        return self.envoy

    def kill_envoy(self) -> str:
        """kill -9 Envoy; returns its bootstrap, for the next one."""
        assert self.envoy is not None and self.envoy.process is not None
        bootstrap = self.envoy.bootstrap_path.read_text()
        self.envoy.process.kill()
        self.envoy.process.wait(10)
        self.old_envoys.append(self.envoy)
        self.envoy = None
        return bootstrap

    def envoy_stat(self, name: str) -> int:
        """One counter or gauge of the running Envoy (0 if it has none by that name)."""
        assert self.envoy is not None
        text = self.envoy.admin_get(f"/stats?filter=^{re.escape(name)}$")
        for line in text.splitlines():
            key, _, value = line.partition(": ")
            if key == name:
                return int(value)
        return 0

    # -- sync ----------------------------------------------------------------------------

    def proxies(self) -> list[admin_pb2.Proxy]:
        """The proxy-status rows of our Envoy's node id (none while the server is down)."""
        try:
            status = self.client.proxy_status()
        except ServerUnavailable:
            return []
        return [p for p in status.proxies if p.node_id == NODE]

    def wait_synced(
        self, *, changed_from: dict[str, str] | None = None, timeout: float = 30.0
    ) -> admin_pb2.Proxy:
        """Poll proxy-status until exactly one row of our node id is synced (ACKed the
        current CDS, EDS and LDS) and, with ``changed_from``, ACKed versions other than
        those: i.e. the change just applied, not the config before it."""

        def changed(rows: list[admin_pb2.Proxy]) -> bool:
            one = len(rows) == 1 and rows[0].synced
            return one and (changed_from is None or acked(rows[0]) != changed_from)

        rows = wait_until(
            self.proxies, timeout, check=changed, interval=0.005, what=f"{NODE} in sync"
        )
        return rows[0]

    def close(self) -> None:
        for envoy in [self.envoy, *self.old_envoys]:
            if envoy is not None:
                envoy.stop()
        if self.admin is not None:
            self.admin.close()
        if self.server is not None:
            self.server.stop()


# --- load -----------------------------------------------------------------------------------


@dataclass
class _Held:
    index: int
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    version: str
    echoes: int = 0


@dataclass
class LoadReport:
    """What the load saw. A failure or a cut is a sentence saying which, when and why."""

    seconds: float = 0.0
    new_ok: int = 0
    new_failed: list[str] = field(default_factory=list)
    new_versions: Counter[str] = field(default_factory=Counter)
    long_opened: int = 0
    long_versions: Counter[str] = field(default_factory=Counter)  # at open
    long_cut: list[str] = field(default_factory=list)
    long_echoes: int = 0  # lines answered on long-lived connections, the last one included
    long_answered_last: int = 0  # long-lived connections that answered a line at the end

    @property
    def new_per_s(self) -> float:
        return (self.new_ok + len(self.new_failed)) / self.seconds if self.seconds else 0.0


class Load:
    """A load generator on its own thread and event loop.

    - ``long_lived`` connections opened at start (each says hello and notes which version
      answered), then each sends a line every ``ping_every`` seconds (jittered; ``None``:
      only at the end) and checks the reply is that same version echoing that same line;
      any error, EOF or wrong reply counts the connection as cut. At ``stop()`` every one
      still open must answer one last line.
    - ``new_per_s`` new connections a second, each like the task's ``date | nc``: one date
      line, half-close, exactly one reply line ``one <date>`` or ``two <date>``, then EOF.

    Use as a context manager, or ``start()`` then ``stop()`` (which returns the report)."""

    def __init__(
        self,
        port: int,
        *,
        new_per_s: float = 50.0,
        long_lived: int = 200,
        ping_every: float | None = 1.0,
        timeout: float = 5.0,
        host: str = HOST,
    ) -> None:
        self.host, self.port = host, port
        self.new_per_s = new_per_s
        self.long_lived = long_lived
        self.ping_every = ping_every
        self.timeout = timeout
        self.report = LoadReport()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._started = 0.0

    # -- control, from the test's thread ---------------------------------------------------

    def start(self, timeout: float = 60.0) -> Load:
        """Open the long-lived connections and start the new ones; raise if any could not
        be opened (then nothing under test has happened yet)."""
        self._thread = threading.Thread(target=self._run, name="fault-load", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise TimeoutError(f"load: long-lived connections not open after {timeout:g}s")
        if self._error is not None:
            self._thread.join(timeout)
            self._thread = None
            raise RuntimeError(f"load could not start: {self._error}") from self._error
        return self

    def elapsed(self) -> float:
        return time.monotonic() - self._started if self._started else 0.0

    def stop(self, timeout: float = 60.0) -> LoadReport:
        """Stop new connections, have every long-lived one answer a last line, close all."""
        if self._thread is None:
            return self.report
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is already gone
                self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"load did not stop within {timeout:g}s")
        self._thread = None
        if self._error is not None:  # a bug of the load generator, not a finding
            raise RuntimeError(f"load generator failed: {self._error!r}") from self._error
        return self.report

    def __enter__(self) -> Load:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is None:
            self.stop()
        else:  # the test already failed: close everything, but keep its error
            with contextlib.suppress(Exception):
                self.stop()

    # -- the event loop ----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by start()/stop()
            self._error = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        gate = asyncio.Semaphore(64)  # a bounded burst of connects, not 1000 at once
        opened = await asyncio.gather(
            *(self._open(i, gate) for i in range(self.long_lived)), return_exceptions=True
        )
        held = [h for h in opened if isinstance(h, _Held)]
        errors = [e for e in opened if isinstance(e, BaseException)]
        if errors:
            for h in held:
                h.writer.close()
            raise ConnectionError(f"{len(errors)} of {self.long_lived} failed: {errors[0]!r}")
        self.report.long_opened = len(held)
        self.report.long_versions = Counter(h.version for h in held)
        self._started = time.monotonic()
        self._ready.set()
        tasks = [asyncio.create_task(self._keep(h)) for h in held]
        await self._new_connections()
        await asyncio.gather(*tasks)
        self.report.seconds = time.monotonic() - self._started

    async def _line(self, reader: asyncio.StreamReader, what: str) -> str:
        data = await asyncio.wait_for(reader.readline(), self.timeout)
        if not data.endswith(b"\n"):
            raise ConnectionError(f"closed before answering {what!r} (got {data!r})")
        return data.decode(errors="replace").rstrip("\n")

    async def _open(self, index: int, gate: asyncio.Semaphore) -> _Held:
        async with gate:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), self.timeout
            )
            line = f"hello {index}"
            writer.write(f"{line}\n".encode())
            reply = await self._line(reader, line)
            version, _, rest = reply.partition(" ")
            if version not in ("one", "two") or rest != line:
                writer.close()
                raise ConnectionError(f"connection {index}: {line!r} answered {reply!r}")
            return _Held(index, reader, writer, version, echoes=1)

    async def _keep(self, h: _Held) -> None:
        assert self._stop is not None
        rng = random.Random(h.index)
        try:
            while True:
                if self.ping_every is None:
                    await self._stop.wait()
                else:
                    with contextlib.suppress(TimeoutError):
                        pause = self.ping_every * rng.uniform(0.5, 1.5)
                        await asyncio.wait_for(self._stop.wait(), pause)
                last = self._stop.is_set()
                line = f"{'last' if last else 'ping'} {h.index} {h.echoes}"
                try:
                    h.writer.write(f"{line}\n".encode())
                    await h.writer.drain()
                    reply = await self._line(h.reader, line)
                except (OSError, TimeoutError) as exc:
                    self._cut(h, f"{exc!r}")
                    return
                if reply != f"{h.version} {line}":
                    self._cut(h, f"{line!r} answered {reply!r}")
                    return
                h.echoes += 1
                self.report.long_echoes += 1
                if last:
                    self.report.long_answered_last += 1
                    return
        finally:
            h.writer.close()

    def _cut(self, h: _Held, why: str) -> None:
        self.report.long_cut.append(
            f"long-lived connection {h.index} ({h.version}) cut at {self.elapsed():.2f}s "
            f"after {h.echoes} answered lines: {why}"
        )

    async def _new_connections(self) -> None:
        assert self._stop is not None and self._loop is not None
        if self.new_per_s <= 0:
            await self._stop.wait()
            return
        pending: set[asyncio.Task[None]] = set()
        start, k = self._loop.time(), 0
        while not self._stop.is_set():
            task = asyncio.create_task(self._one_new(k))
            pending.add(task)
            task.add_done_callback(pending.discard)
            k += 1
            delay = start + k / self.new_per_s - self._loop.time()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
        await asyncio.gather(*pending)

    async def _one_new(self, k: int) -> None:
        line = date_line().rstrip("\n")
        at = self.elapsed()
        writer = None
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), self.timeout
            )
            writer.write(f"{line}\n".encode())
            writer.write_eof()
            data = await asyncio.wait_for(reader.read(), self.timeout)
        except (OSError, TimeoutError) as exc:
            self.report.new_failed.append(f"new connection {k} at {at:.2f}s: {exc!r}")
            return
        finally:
            if writer is not None:
                writer.close()
        reply = data.decode(errors="replace")
        version, _, rest = reply.partition(" ")
        if version not in ("one", "two") or rest != f"{line}\n":
            self.report.new_failed.append(f"new connection {k} at {at:.2f}s: reply {reply!r}")
            return
        self.report.new_ok += 1
        self.report.new_versions[version] += 1
