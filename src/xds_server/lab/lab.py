"""The whole lab as local processes: two tcp-echo versions, the control plane, one Envoy.

Shared by ``xds-server demo`` and the integration tests, so that what the demo shows is
what the tests prove.
"""

from __future__ import annotations

import selectors
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..admin.client import AdminClient
from ..config.load import load_paths, load_text
from ..config.store import Change
from ..controlplane import BackgroundControlPlane, ControlPlane
from ..ports import free_port, port_is_free
from ..translate import TranslateOptions
from ..translate.listeners import listener_name
from ..translate.options import SplitMode
from . import traffic
from .envoy import EnvoyProcess
from .pieces import ECHO_VERSIONS, program, shown_path, workload_entries
from .server import ServerProcess, terminate

SAMPLES = Path(__file__).resolve().parents[3] / "samples" / "tcp-echo"
HOST = "127.0.0.1"
GATEWAY_PORT = 31400  # the task's ingress port, as written in the Gateway
# The lab's Envoy is Istio's ingress gateway: the samples' Gateway selects it by this label.
INGRESS_LABELS = {"istio": "ingressgateway"}


class LabError(RuntimeError):
    """A lab step failed; the message says which and why."""


def choose_port(
    wanted: int | None, default: int, what: str, note: Callable[[str], None], *, zero: int = -1
) -> int:
    """``None``: the task's default port if free, else any free one (said out loud).
    0: ``zero`` if given (the caller lets the server bind port 0 itself: no race), else any
    free port now. A port the user asked for explicitly must be free."""
    if wanted == 0:
        return zero if zero >= 0 else free_port(HOST)
    if port_is_free(wanted or default, HOST):
        return wanted or default
    if wanted is not None:
        raise LabError(f"{what} port {wanted} is in use on {HOST} (use 0 to pick a free one)")
    port = free_port(HOST)
    note(f"{what} port {default} is in use; using {port} instead")
    return port


@dataclass
class EchoProcess:
    """A tcp-echo server subprocess; ready once it printed its READY line."""

    version: str
    prefix: str
    process: subprocess.Popen[str]
    addresses: list[tuple[str, int]]

    @classmethod
    def start(
        cls, version: str, prefix: str, ports: int | Sequence[int] = 2, timeout: float = 10.0
    ) -> EchoProcess:
        """``ports``: how many free ports, or which ones."""
        wanted = [0] * ports if isinstance(ports, int) else list(ports)
        cmd = [sys.executable, "-m", "xds_server.echo", "--quiet", "--prefix", prefix]
        cmd += ["--ports", ",".join(map(str, wanted)), "--host", HOST]
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        line = _readline(proc, timeout)
        if not line.startswith("READY "):
            proc.kill()
            err = proc.stderr.read() if proc.stderr else ""
            raise LabError(f"tcp-echo {version} did not start: {line.strip() or err.strip()}")
        addresses = []
        for item in line.split()[1].split(","):
            host, _, port = item.rpartition(":")
            addresses.append((host, int(port)))
        return cls(version, prefix, proc, addresses)

    def stop(self) -> None:
        terminate(self.process, 5)
        for stream in (self.process.stdout, self.process.stderr):
            if stream:
                stream.close()

    def workload_entry(self) -> str:
        """The WorkloadEntry that registers this server, as Kubernetes would its pod."""
        return workload_entries([(self.version, self.addresses[0][0], self.ports)])

    @property
    def ports(self) -> list[int]:
        return [port for _, port in self.addresses]


def _readline(proc: subprocess.Popen[str], timeout: float) -> str:
    """One line of a child's stdout, with a deadline (a READY line is the readiness signal)."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            return ""
    return proc.stdout.readline()


class Lab:
    """Bring the lab up with ``start()`` (or ``with Lab() as lab``), drive it, tear it down.

    ``server``: ``thread`` runs the control plane in this process (tests can inspect it
    through ``lab.cp``); ``process`` runs ``xds-server serve --state-dir`` and drives it
    through the admin API, the way a user does with xdsctl (the demo).

    Ports: ``None`` takes the task's (31400 ingress, 18000 xDS, 15000 Envoy admin) or a
    free one when taken; 0 takes a free one; any other number must be free.

    ``echo_ports``: ``free`` (tests) or ``samples``: the ports of the sample WorkloadEntries
    where free, so that samples/tcp-echo/tcp-echo-services.yaml is what is applied (the
    demo). ``xdsctl``: process mode only; run the applies of the endpoints through it
    (the demo prints and runs them), instead of silently through the admin API.
    ``commands`` lists the shell commands that start the same pieces by hand.

    Every process it started is stopped by ``stop()``, also after a failed start.
    """

    def __init__(
        self,
        *,
        ingress_port: int | None = None,
        xds_port: int | None = None,
        admin_port: int | None = None,
        split: SplitMode = "locality",
        drain_time_s: int | None = None,
        api_type: str = "GRPC",
        ads: bool = True,
        admin_api: bool = False,
        admin_api_port: int | None = None,
        server: str = "thread",
        server_args: Sequence[str] = (),
        progress: Callable[[str], None] | None = None,
        echo_ports: str = "free",
        xdsctl: Callable[[Lab, Sequence[str]], None] | None = None,
    ) -> None:
        if echo_ports not in ("free", "samples"):
            raise ValueError(f"echo_ports must be 'free' or 'samples' (got {echo_ports!r})")
        self.wanted = (ingress_port, xds_port, admin_port)
        self.admin_api_port = admin_api_port  # a server process's (None: 18001 or a free one)
        self.echo_ports = echo_ports
        self.xdsctl = xdsctl
        self.commands: list[str] = []
        self._workdir: str | None = None
        self.split = split
        self.drain_time_s = drain_time_s
        self.api_type = api_type
        self.ads = ads
        self.admin_api = admin_api or server == "process"
        self.server_mode = server
        self.server_args = list(server_args)  # more ``xds-server serve`` flags (process)
        self.server: ServerProcess | None = None
        self.admin: AdminClient | None = None
        self._state_dir: str | None = None
        self.say = progress or (lambda _msg: None)
        self.echoes: list[EchoProcess] = []
        self.cp: BackgroundControlPlane | None = None
        self.envoy: EnvoyProcess | None = None
        self._ingress_port = 0  # 0: Envoy bound the listener to a port of its choosing

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> Lab:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        ingress, xds, admin = self.wanted
        # Port 0 is left to the server that binds it where we can read the port back (the
        # control plane in this process, Envoy's admin and listeners), so no other process
        # can take it between a check and the bind.
        thread = self.server_mode == "thread"
        self._ingress_port = choose_port(
            ingress, GATEWAY_PORT, "ingress", self.say, zero=0 if thread else -1
        )
        xds = choose_port(xds, 18000, "xDS", self.say, zero=0 if thread else -1)
        admin = choose_port(admin, 15000, "Envoy admin", self.say, zero=0)
        self._workdir = tempfile.mkdtemp(prefix="xds-lab-")
        samples = self.echo_ports == "samples" and all(
            port_is_free(port, HOST) for _, ports in ECHO_VERSIONS.values() for port in ports
        )
        if self.echo_ports == "samples" and not samples:
            self.say(
                "a port of the sample WorkloadEntries (9000-9003) is in use: "
                "echo servers on free ports"
            )
        for version, (prefix, sample_ports) in ECHO_VERSIONS.items():
            echo = EchoProcess.start(version, prefix, sample_ports if samples else 2)
            self.echoes.append(echo)
        endpoints = "---\n".join(e.workload_entry() for e in self.echoes)
        endpoints_file = Path(self._workdir, "tcp-echo-endpoints.yaml")
        services = SAMPLES / "tcp-echo-services.yaml"
        echo_cmd = ["xds-server", "echo"]
        if not samples:
            endpoints_file.write_text(endpoints, encoding="utf-8")
            for echo in self.echoes:
                echo_cmd += [f"--{echo.version}-ports", ",".join(map(str, echo.ports))]
            echo_cmd += ["--endpoints", shown_path(endpoints_file)]
        self._command(echo_cmd)
        for echo in self.echoes:
            addrs = ", ".join(f"{h}:{p}" for h, p in echo.addresses)
            self.say(f"tcp-echo {echo.version} (replies {echo.prefix!r}) listening on {addrs}")
        if self.server_mode == "process":
            xds = self._start_server(xds)
            assert self.admin is not None
            applies = [[str(services)]] + ([] if samples else [[str(endpoints_file)]])
            for files in applies:
                if self.xdsctl is not None:
                    self.xdsctl(self, ["apply", *(a for f in files for a in ("-f", f))])
                else:
                    self.admin.apply([(f, Path(f).read_text()) for f in files])
        else:
            options = TranslateOptions(
                split=self.split,
                listener_address=HOST,
                port_map={GATEWAY_PORT: self._ingress_port},
            )
            self.cp = ControlPlane.start_in_thread(
                xds_port=xds, options=options, admin_port=0 if self.admin_api else None
            )
            xds = self.cp.port
            self.say(f"control plane serving ADS on {HOST}:{xds} (split mode: {self.split})")
            self.apply([services], wait=False)
            self.cp.apply_yaml(endpoints, "<lab endpoints>")
        envoy_cmd = ["xds-server", "envoy"]
        if xds != 18000:
            envoy_cmd += ["--xds", f"{HOST}:{xds}"]
        if admin != 15000:
            envoy_cmd += ["--envoy-admin-port", str(admin)]
        envoy_cmd += ["--api", self.api_type] if self.api_type != "GRPC" else []
        envoy_cmd += [] if self.ads else ["--no-ads"]
        if self.server_mode == "process":
            self._command(envoy_cmd)
        self.envoy = EnvoyProcess(
            xds,
            admin_port=admin,
            drain_time_s=self.drain_time_s,
            api_type=self.api_type,
            ads=self.ads,
            labels=INGRESS_LABELS,
        ).start()
        self.envoy.wait_live()
        self.wait_synced()
        assert self.envoy.startup_seconds is not None  # measured by start()
        self.say(
            f"envoy {self.envoy.pid} LIVE, admin {self.envoy.admin_url}, "
            f"started in {self.envoy.startup_seconds * 1000:.0f} ms"
        )

    def _command(self, argv: Sequence[str]) -> None:
        """Record (and, in process mode, say) the shell command for a piece just started."""
        command = shlex.join([program(argv[0]), *argv[1:]])
        self.commands.append(command)
        if self.server_mode == "process":
            self.say(f"$ {command}")

    def _start_server(self, xds: int) -> int:
        assert self._workdir is not None
        self._state_dir = str(Path(self._workdir, "state"))
        admin = choose_port(self.admin_api_port, 18001, "admin API", self.say)
        args = ["--state-dir", shown_path(self._state_dir)]
        args += ["--split", self.split] if self.split != "locality" else []
        args += ["--xds-port", str(xds)] if xds != 18000 else []
        args += ["--admin-port", str(admin)] if admin != 18001 else []
        if self._ingress_port != GATEWAY_PORT:
            args += ["--port-map", f"{GATEWAY_PORT}={self._ingress_port}"]
        args += self.server_args
        self._command(["xds-server", "serve", *args])
        self.server = ServerProcess(*args)
        xds = self.server.wait_port("xDS")
        admin = self.server.wait_port("admin API")
        self.admin = AdminClient(f"{HOST}:{admin}")
        self.say(
            f"xds-server {self.server.proc.pid}: ADS on {HOST}:{xds}, admin API on "
            f"{HOST}:{admin} (split mode: {self.split}, state in {self._state_dir})"
        )
        return xds

    def wait_synced(self, timeout: float = 20.0) -> None:
        """Until Envoy has ACKed the current config (the control plane's own view)."""
        if self.cp is not None:
            self.cp.wait_synced(timeout)
        elif self.admin is not None:
            self.admin.wait_synced(timeout=timeout)

    def stop(self) -> None:
        if self.envoy is not None:
            self.envoy.stop()
        if self.cp is not None:
            self.cp.stop()
        if self.admin is not None:
            self.admin.close()
        if self.server is not None:
            self.server.stop()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
        for echo in self.echoes:
            echo.stop()

    def __enter__(self) -> Lab:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- driving ---------------------------------------------------------------------------

    def apply(self, paths: Iterable[str | Path], *, wait: bool = True) -> list[Change]:
        """Apply files and, by default, wait until Envoy ACKed the result."""
        if self.cp is None:  # a server process: through its admin API, as xdsctl does
            assert self.admin is not None
            response = self.admin.apply([(str(p), Path(p).read_text()) for p in paths])
            changes = [
                Change(c.ref.kind, c.ref.namespace, c.ref.name, c.action, c.resource_version)
                for c in response.changes
            ]
        else:
            changes = self.cp.apply(load_paths([str(p) for p in paths]))
        if wait:
            self.wait_synced()
        return changes

    def apply_yaml(self, text: str, *, wait: bool = True) -> list[Change]:
        """Apply YAML text to the in-process control plane (server="thread")."""
        assert self.cp is not None, 'apply_yaml needs Lab(server="thread")'
        changes = self.cp.apply(load_text(text, "<lab>"))
        if wait:
            self.wait_synced()
        return changes

    @property
    def admin_target(self) -> str:
        """host:port of the admin API (xdsctl --server), when started with admin_api=True."""
        if self.admin is not None:
            return self.admin.target
        assert self.cp is not None and self.cp.cp.admin_port, "Lab(admin_api=True) needed"
        return f"{HOST}:{self.cp.cp.admin_port}"

    @property
    def ingress_port(self) -> int:
        """Where the gateway listener (Gateway port 31400) accepts connections."""
        if self._ingress_port:
            return self._ingress_port
        assert self.envoy is not None
        return self.envoy.wait_listener(listener_name(GATEWAY_PORT))

    def send(self, count: int, hold: float = 0.0) -> list[str]:
        return traffic.send_many(HOST, self.ingress_port, count, hold=hold)
