"""The docker compose lab (docker-compose.yml): `up`, the seed scenario through Envoy's
published port with xdsctl run inside the control-plane container (as the README tells),
and `down`, which must leave no container or network behind.

Runs on the images docker-compose.yml names (xds-server:local, xds-envoy:local: build them
with scripts/build-images, as CI does); skipped with one reason where Docker, a compose
command or the images are missing, except in CI (CI=true), where that is a failure."""

from __future__ import annotations

import http.client
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from xds_server.admin.client import AdminClient
from xds_server.lab import traffic
from xds_server.ports import free_port
from xds_server.testing.runtime import in_ci, require_docker

ROOT = Path(__file__).resolve().parents[1]
IMAGES = {
    "XDS_SERVER_IMAGE": "xds-server:local",
    "XDS_ENVOY_IMAGE": "xds-envoy:local",
}


def skip_or_fail(reason: str) -> None:
    if in_ci():
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)


def compose_command() -> list[str]:
    """`docker compose` (v2 plugin) if there is one, else v1's `docker-compose`."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    skip_or_fail("neither `docker compose` nor `docker-compose` is installed")
    raise AssertionError("unreachable")


class Compose:
    """One compose project with its own name and free host ports; `down` always runs."""

    def __init__(self) -> None:
        self.command = compose_command()
        self.project = f"xdstest{uuid.uuid4().hex[:10]}"
        self.ports = {
            name: free_port()
            for name in ("INGRESS_PORT", "ENVOY_ADMIN_PORT", "XDS_PORT", "XDS_ADMIN_PORT")
        }
        self.env = {
            **os.environ,
            **{k: os.environ.get(k, v) for k, v in IMAGES.items()},
            **{k: str(v) for k, v in self.ports.items()},
        }

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        cmd = [*self.command, "--project-name", self.project, *args]
        done = subprocess.run(
            cmd,
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise AssertionError(
                f"{' '.join(cmd)} exited with {done.returncode}:\n{done.stdout}{done.stderr}"
            )
        return done

    def xdsctl(self, *args: str) -> str:
        """xdsctl inside the control-plane container, as the README's walkthrough runs it."""
        return self.run("exec", "-T", "control-plane", "xdsctl", *args).stdout

    def wait_synced(self) -> None:
        """Through the admin API's published port: Envoy ACKed the current config."""
        with AdminClient(f"127.0.0.1:{self.ports['XDS_ADMIN_PORT']}") as admin:
            admin.wait_synced(node_id="ingressgateway", timeout=30)

    def logs(self) -> str:
        try:
            return self.run("logs", "--no-color", "--tail", "40").stdout
        except AssertionError as exc:
            return str(exc)

    def leftovers(self) -> str:
        """Containers and networks of this project that still exist (after `down`)."""
        label = f"label=com.docker.compose.project={self.project}"
        found = []
        for what, field in ((["ps", "-a"], "{{.Names}}"), (["network", "ls"], "{{.Name}}")):
            cmd = ["docker", *what, "--filter", label, "--format", field]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=self.env)
            found += out.stdout.split()
        return " ".join(found)


def envoy_admin(port: int, path: str) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def wait_for(what: str, check, timeout: float = 60.0) -> None:
    """Poll ``check()`` until it is true, with a deadline (no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (OSError, http.client.HTTPException) as exc:
            last = exc
        time.sleep(0.05)
    raise TimeoutError(f"{what} not within {timeout}s (last error: {last})")


def settled(admin_port: int) -> bool:
    """Envoy has no cluster or listener warming: a DNS cluster updated by CDS answers only
    once it has resolved its hosts, until then the old one serves."""
    status, body = envoy_admin(admin_port, "/stats?filter=warming")
    values = [line.rsplit(":", 1)[1].strip() for line in body.splitlines() if ":" in line]
    return status == 200 and bool(values) and all(v == "0" for v in values)


@pytest.fixture
def compose():
    require_docker()
    lab = Compose()
    missing = []
    for image in (lab.env["XDS_SERVER_IMAGE"], lab.env["XDS_ENVOY_IMAGE"]):
        probe = subprocess.run(["docker", "image", "inspect", image], capture_output=True)
        if probe.returncode != 0:
            missing.append(image)
    if missing:
        skip_or_fail(f"no image {', '.join(missing)}: build them with scripts/build-images")
    try:
        yield lab
    finally:
        lab.run("down", "--volumes", "--remove-orphans", "--timeout", "5")


def test_compose_lab_shifts_traffic(compose: Compose) -> None:
    compose.run("up", "--detach", "--no-build")
    ingress, admin = compose.ports["INGRESS_PORT"], compose.ports["ENVOY_ADMIN_PORT"]
    try:
        wait_for("Envoy's admin endpoint", lambda: envoy_admin(admin, "/ready")[0] in (200, 503))
        out = compose.xdsctl(
            "apply",
            "-f",
            "samples/compose/tcp-echo-services.yaml",
            "-f",
            "samples/tcp-echo/tcp-echo-all-v1.yaml",
        )
        assert "virtualservice.networking.istio.io/tcp-echo created" in out
        wait_for("Envoy LIVE", lambda: envoy_admin(admin, "/ready")[1].strip() == "LIVE")
        compose.wait_synced()
        wait_for("Envoy settled", lambda: settled(admin))
        replies = traffic.send_many("127.0.0.1", ingress, 20)
        assert {traffic.version_of(r) for r in replies} == {"one"}, replies

        out = compose.xdsctl("apply", "-f", "samples/tcp-echo/tcp-echo-20-v2.yaml")
        assert out.strip() == "virtualservice.networking.istio.io/tcp-echo configured"
        compose.wait_synced()
        wait_for("Envoy settled", lambda: settled(admin))
        counts = traffic.split(traffic.send_many("127.0.0.1", ingress, 100))
        # 80 of 100 (weighted localities), give or take one tie in Envoy's EDF scheduler.
        assert counts["one"] + counts["two"] == 100 and 19 <= counts["two"] <= 21, counts
        assert "weight: 20" in compose.xdsctl("get", "virtualservice", "tcp-echo", "-o", "yaml")
    except BaseException:
        print(compose.logs())
        raise
    compose.run("down", "--volumes", "--remove-orphans", "--timeout", "5")
    assert compose.leftovers() == ""
