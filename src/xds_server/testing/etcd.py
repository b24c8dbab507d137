"""Real etcd servers for tests: one member or a cluster of local ``etcd`` processes.

Each member listens on loopback ports the kernel picked and keeps its data in a directory of
its own; a cluster's members find each other through ``--initial-cluster``. Heartbeat and
election timeouts are short (50 ms, 500 ms) so that a killed leader is replaced in about a
second. Readiness is polled (a Status call that names a leader), never slept for.

    with EtcdCluster(3) as cluster:
        client = cluster.client()
        cluster.kill(cluster.member(client.endpoint))

``etcd`` is the binary on PATH (Debian: ``apt-get install etcd-server``).
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from ..config.etcd import EtcdClient, EtcdError, EtcdStatus
from ..lab.server import terminate
from ..waiting import wait_until

__all__ = ["EtcdCluster", "EtcdMember", "etcd_binary"]

HEARTBEAT_MS = 50
ELECTION_MS = 500


def etcd_binary() -> str:
    """The etcd server binary, or a RuntimeError that says how to install it."""
    found = shutil.which("etcd")
    if found is None:
        raise RuntimeError(
            "the etcd tests need an etcd server binary on PATH: "
            "install it with `apt-get install etcd-server` (Debian, Ubuntu)"
        )
    return found


def _free_ports(n: int) -> list[int]:
    """n distinct ports the kernel considers free (all bound at once, then released)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass(eq=False)
class EtcdMember:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    member_id: int = 0  # known once it answered a Status

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class EtcdCluster:
    """``size`` etcd members (1 or 3 in the fixtures) under ``root`` (a temporary directory
    of its own if None). ``start()`` (or ``with``) starts them all and waits until every
    one answers and knows a leader; ``close()`` kills them and removes their data."""

    def __init__(
        self,
        size: int = 1,
        root: Path | None = None,
        *,
        timeout: float = 20.0,
        flags: tuple[str, ...] = (),
    ) -> None:
        """``flags``: more etcd flags, e.g. ``--max-txn-ops=100000``."""
        self._binary = etcd_binary()
        self.flags = flags
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="xds-etcd-")) if root is None else root
        self.timeout = timeout
        self._token = f"xds-test-{uuid.uuid4().hex[:12]}"
        self._clients: list[EtcdClient] = []
        ports = _free_ports(2 * size)
        self.members = [
            EtcdMember(
                name=f"etcd{i}",
                client_port=ports[2 * i],
                peer_port=ports[2 * i + 1],
                data_dir=self.root / f"etcd{i}.data",
                log_path=self.root / f"etcd{i}.log",
            )
            for i in range(size)
        ]

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    def url(self, prefix: str = "") -> str:
        """``etcd://host:port,...[prefix]``, the form parse_etcd_url reads."""
        return f"etcd://{','.join(self.endpoints)}{prefix}"

    def client(self, *, timeout: float = 2.0) -> EtcdClient:
        """A client of every member, closed with the cluster."""
        client = EtcdClient(self.endpoints, timeout=timeout)
        self._clients.append(client)
        return client

    def member(self, endpoint: str) -> EtcdMember:
        """The member at ``endpoint`` (e.g. an EtcdClient's current endpoint)."""
        return next(m for m in self.members if m.endpoint == endpoint)

    # -- processes

    def _spawn(self, m: EtcdMember) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        peers = ",".join(f"{p.name}={p.peer_url}" for p in self.members)
        client_url = f"http://{m.endpoint}"
        args = [
            self._binary,
            f"--name={m.name}",
            f"--data-dir={m.data_dir}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={m.peer_url}",
            f"--initial-advertise-peer-urls={m.peer_url}",
            f"--initial-cluster={peers}",
            f"--initial-cluster-token={self._token}",
            "--initial-cluster-state=new",  # ignored on a restart: the data dir knows
            f"--heartbeat-interval={HEARTBEAT_MS}",
            f"--election-timeout={ELECTION_MS}",
            "--logger=zap",
            "--log-level=warn",
            *self.flags,
        ]
        # ETCD_* variables are flags too, and etcd refuses a flag given twice.
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
        if "ETCD_UNSUPPORTED_ARCH" in os.environ:  # needed on arm64
            env["ETCD_UNSUPPORTED_ARCH"] = os.environ["ETCD_UNSUPPORTED_ARCH"]
        with m.log_path.open("ab") as log:
            m.process = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env
            )

    def _status(self, m: EtcdMember) -> EtcdStatus:
        if not m.running:
            code = m.process.returncode if m.process is not None else None
            # Not an EtcdError: wait_until must not take a dead process for "not yet".
            raise RuntimeError(f"etcd member {m.name} exited ({code}):\n{m.log_tail()}")
        with EtcdClient([m.endpoint], timeout=0.5) as client:
            status = client.status()
        m.member_id = status.member_id
        return status

    def _wait_ready(self, members: list[EtcdMember]) -> None:
        for m in members:
            wait_until(
                functools.partial(self._status, m),
                self.timeout,
                check=lambda s: s.leader != 0,
                ignore=EtcdError,
                what=f"etcd member {m.name} at {m.endpoint} to serve with a leader",
            )

    def start(self) -> EtcdCluster:
        for m in self.members:
            self._spawn(m)
        try:
            self._wait_ready(self.members)
        except BaseException:
            self.close()
            raise
        return self

    def kill(self, member: EtcdMember) -> None:
        """kill -9: no goodbye to its peers or clients."""
        if member.process is not None:
            member.process.kill()
            member.process.wait()

    def pause(self, member: EtcdMember) -> None:
        """SIGSTOP: the member keeps its connections open but answers nothing, like a host
        cut off without a reset. ``resume`` undoes it."""
        if member.process is not None:
            member.process.send_signal(signal.SIGSTOP)

    def resume(self, member: EtcdMember) -> None:
        if member.process is not None:
            member.process.send_signal(signal.SIGCONT)

    def stop(self, member: EtcdMember | None = None) -> None:
        """SIGTERM (then SIGKILL after 10 s) to ``member``, or to every member."""
        for m in self.members if member is None else [member]:
            if m.process is not None:
                terminate(m.process)

    def restart(self, *members: EtcdMember) -> None:
        """Start these members again on their data (killing any that still runs) and wait
        until each serves with a leader: restart enough of a stopped cluster at once for a
        quorum (2 of 3), or none of them will get there."""
        for m in members:
            if m.running:
                self.kill(m)
            self._spawn(m)
        self._wait_ready(list(members))

    def leader(self) -> EtcdMember:
        """The member that leads now, once the running members agree there is one."""

        def probe() -> EtcdMember | None:
            by_id: dict[int, EtcdMember] = {}
            leaders = set()
            for m in self.members:
                if m.running:
                    try:
                        status = self._status(m)
                    except EtcdError:
                        continue
                    by_id[status.member_id] = m
                    leaders.add(status.leader)
            return by_id.get(leaders.pop()) if len(leaders) == 1 else None

        leader = wait_until(probe, self.timeout, what="an etcd leader")
        assert leader is not None  # wait_until returns a value that passed its check
        return leader

    def close(self) -> None:
        """Kill every member and remove its data."""
        for client in self._clients:
            client.close()
        for m in self.members:
            self.kill(m)
            shutil.rmtree(m.data_dir, ignore_errors=True)
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> EtcdCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
