"""The docker compose lab (docker-compose.yml), run the way the README tells a user.

The README's "The task with docker compose" section has two command blocks, each marked
with an HTML comment; the tests read them from README.md, so the docs and the tests cannot
drift apart:

- `<!-- test: compose -->`: the task's steps. `test_readme_compose_steps` runs each of its
  commands, in order, as printed (through bash), with compose v2 (`docker compose`) and v1
  (`docker-compose`, the only change being that spelling). Two more changes are made, and
  asserted to apply: the project name and the host ports come from the environment
  (COMPOSE_PROJECT_NAME, INGRESS_PORT, ...: free ports, so that a test never meets a user's
  lab), which turns `127.0.0.1 31400` in the nc loops into this run's ingress port. Between
  two commands the test waits for what a user typing them would find (Envoy up, the config
  ACKed), checks each command's output, and sends 100 more connections after the 80/20
  apply; `down` must leave no container or network behind.
- `<!-- test: compose-setup -->`: installing an engine and building the images. Those run
  in .ci/run (with a dockerd of its own, not the default socket);
  `test_readme_compose_setup_is_what_ci_runs` checks that .ci/run installs the same
  packages and runs the same `make images`.

The steps run on the images docker-compose.yml names (xds-server:local, xds-envoy:local:
`make images`, as CI does); skipped with one reason where Docker, a compose command, nc or
the images are missing, except in CI (CI=true), where that is a failure."""

from __future__ import annotations

import http.client
import os
import re
import shlex
import shutil
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from xds_server.admin.client import AdminClient
from xds_server.lab import traffic
from xds_server.ports import free_port
from xds_server.testing.runtime import in_ci, require_docker
from xds_server.waiting import wait_until

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
IMAGES = {
    "XDS_SERVER_IMAGE": "xds-server:local",
    "XDS_ENVOY_IMAGE": "xds-envoy:local",
    "XDS_ETCD_IMAGE": "xds-etcd:local",
}
SPELLINGS = {"v2": ["docker", "compose"], "v1": ["docker-compose"]}
README_PORTS = {"INGRESS_PORT": 31400, "HA_INGRESS_PORT": 31410}  # named in the commands

# What the README's compose block must hold, in this order: (step, pattern of the command).
STEPS = [
    ("up", r"^docker compose up -d$"),
    ("apply all-v1", r"^docker compose exec -T control-plane xdsctl apply .*all-v1\.yaml$"),
    ("traffic all-v1", r"^for i in \$\(seq 1 10\); do .* \| nc .*127\.0\.0\.1 31400; done$"),
    ("apply 20-v2", r"^docker compose exec -T control-plane xdsctl apply .*20-v2\.yaml$"),
    ("get", r"^docker compose exec -T control-plane xdsctl get virtualservice tcp-echo "),
    ("traffic 80/20", r"^for i in \$\(seq 1 10\); do .* \| nc .*127\.0\.0\.1 31400; done$"),
    ("proxy-status", r"^docker compose exec -T control-plane xdsctl proxy-status$"),
    ("down", r"^docker compose down$"),
]
# The README's `ha` block: the task on two replicas sharing etcd, then one killed.
HA_STEPS = [
    ("up", r"^docker compose --profile ha up -d envoy-ha$"),
    ("apply on a", r"^docker compose exec -T control-plane-a xdsctl apply .*all-v1\.yaml$"),
    ("apply on b", r"^docker compose exec -T control-plane-b xdsctl apply .*20-v2\.yaml$"),
    ("status on a", r"^docker compose exec -T control-plane-a xdsctl proxy-status$"),
    ("traffic 80/20", r"^for i in \$\(seq 1 10\); do .* \| nc .*127\.0\.0\.1 31410; done$"),
    ("kill a", r"^docker compose kill control-plane-a$"),
    ("status on b", r"^docker compose exec -T control-plane-b xdsctl proxy-status$"),
    ("traffic after", r"^for i in \$\(seq 1 10\); do .* \| nc .*127\.0\.0\.1 31410; done$"),
    ("down", r"^docker compose --profile ha down$"),
]


def readme_block(marker: str) -> list[str]:
    """The commands of the fenced block after `<!-- test: MARKER ...-->` in README.md:
    backslash continuations joined, comments and blank lines left out."""
    text = README.read_text()
    block = rf"<!-- test: {re.escape(marker)}(?:\s[^>]*)?-->\s*```sh\n(.*?)```"
    found = re.search(block, text, re.S)
    assert found, f"README.md has no ```sh block marked <!-- test: {marker} -->"
    commands, pending = [], ""
    for line in found.group(1).splitlines():
        pending += line
        if pending.endswith("\\"):
            pending = pending[:-1]
            continue
        words = shlex.split(pending, comments=True)
        if words:
            commands.append(re.sub(r"\s+", " ", without_comment(pending, words)))
        pending = ""
    return commands


def without_comment(line: str, words: list[str]) -> str:
    """The line up to its trailing `# comment`, if any (a `#` inside quotes is kept)."""
    for found in re.finditer(r"\s#", line):
        head = line[: found.start()]
        try:
            if shlex.split(head) == words:
                return head.strip()
        except ValueError:  # the `#` is inside quotes
            continue
    return line.strip()


def skip_or_fail(reason: str) -> None:
    if in_ci():
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)


def have_spelling(version: str) -> bool:
    command = SPELLINGS[version]
    if not shutil.which(command[0]):
        return False
    probe = subprocess.run([*command, "version"], capture_output=True, text=True)
    return probe.returncode == 0


class Compose:
    """One compose project with its own name and free host ports; `down` always runs."""

    def __init__(self, version: str) -> None:
        self.version = version
        self.command = SPELLINGS[version]
        self.project = f"xdstest{uuid.uuid4().hex[:10]}"
        self.ports = {
            name: free_port()
            for name in (
                "INGRESS_PORT",
                "ENVOY_ADMIN_PORT",
                "XDS_PORT",
                "XDS_ADMIN_PORT",
                "HA_INGRESS_PORT",
                "HA_ENVOY_ADMIN_PORT",
            )
        }
        self.env = {
            **os.environ,
            **{k: os.environ.get(k, v) for k, v in IMAGES.items()},
            **{k: str(v) for k, v in self.ports.items()},
            "COMPOSE_PROJECT_NAME": self.project,
        }
        self.times: list[tuple[str, float]] = []

    def shell(self, readme_command: str, timeout: float = 120) -> str:
        """A README command, in bash, as printed but for the spelling and the ports."""
        command = readme_command
        if self.version == "v1" and command.startswith("docker compose "):
            command = "docker-compose " + command.removeprefix("docker compose ")
        for name, port in README_PORTS.items():
            if f"127.0.0.1 {port}" in command:
                command = command.replace(f"127.0.0.1 {port}", f"127.0.0.1 {self.ports[name]}")
        assert not any(str(p) in command for p in README_PORTS.values()), command
        started = time.monotonic()
        done = self._exec(["bash", "-c", command], timeout)
        self.times.append((readme_command[:60], time.monotonic() - started))
        if done.returncode != 0:
            raise AssertionError(
                f"README command {readme_command!r}\nrun as {command!r}\n"
                f"exited with {done.returncode}:\n{done.stdout}{done.stderr}"
            )
        return done.stdout

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        cmd = [*self.command, *args]
        done = self._exec(cmd, timeout)
        if done.returncode != 0:
            raise AssertionError(
                f"{' '.join(cmd)} exited with {done.returncode}:\n{done.stdout}{done.stderr}"
            )
        return done

    def _exec(self, argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        """A command in the repository, with this lab's environment and no terminal."""
        return subprocess.run(
            argv,
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

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
    """Poll ``check()`` until it is true (an HTTP error counts as not yet)."""
    wait_until(
        check, timeout, interval=0.05, what=what, ignore=(OSError, http.client.HTTPException)
    )


def settled(admin_port: int) -> bool:
    """Envoy has no cluster or listener warming: a DNS cluster updated by CDS answers only
    once it has resolved its hosts, until then the old one serves."""
    status, body = envoy_admin(admin_port, "/stats?filter=warming")
    values = [line.rsplit(":", 1)[1].strip() for line in body.splitlines() if ":" in line]
    return status == 200 and bool(values) and all(v == "0" for v in values)


def nc_versions(out: str) -> Counter[str]:
    """The nc loop's answers ("one <date>", "two <date>"), counted by version."""
    return Counter(line.split()[0] for line in out.splitlines() if line.strip())


def readme_steps(
    marker: str = "compose", known: list[tuple[str, str]] = STEPS
) -> list[tuple[str, str]]:
    commands = readme_block(marker)
    names = [name for name, _ in known]
    assert len(commands) == len(known), (
        f"README's {marker} block has {len(commands)} commands, the test knows {names}:\n"
        + "\n".join(commands)
    )
    for (name, pattern), command in zip(known, commands, strict=True):
        assert re.search(pattern, command), f"step {name!r}: {command!r} !~ {pattern!r}"
    return [(name, command) for (name, _), command in zip(known, commands, strict=True)]


@pytest.mark.parametrize(("marker", "known"), [("compose", STEPS), ("compose-ha", HA_STEPS)])
def test_readme_compose_block_is_the_task(marker: str, known: list[tuple[str, str]]) -> None:
    """No Docker needed: the block parses into the task's steps, in the task's order."""
    steps = readme_steps(marker, known)
    assert [name for name, _ in steps] == [name for name, _ in known]
    assert not any("--build" in command for _, command in steps), "offline, up must not build"


def test_the_ha_bootstrap_differs_only_in_the_control_plane_addresses() -> None:
    """envoy/bootstrap-ha.yaml is envoy/bootstrap.yaml but for xds_cluster's type and
    hosts, so the two cannot drift apart."""
    import yaml

    one, ha = (yaml.safe_load((ROOT / "envoy" / f).read_text()) for f in
               ("bootstrap.yaml", "bootstrap-ha.yaml"))  # fmt: skip
    (xds,) = one["static_resources"]["clusters"]
    (xds_ha,) = ha["static_resources"]["clusters"]
    hosts = [
        e["endpoint"]["address"]["socket_address"]["address"]
        for e in xds_ha["load_assignment"]["endpoints"][0]["lb_endpoints"]
    ]
    assert hosts == ["control-plane-a", "control-plane-b"]
    assert xds_ha["type"] == "STRICT_DNS"
    for cluster in (xds, xds_ha):
        del cluster["type"], cluster["load_assignment"]["endpoints"]
    assert one == ha


def test_readme_compose_setup_is_what_ci_runs() -> None:
    """The setup block (engine, compose, nc, images) is what .ci/run does on CI's machine."""
    setup = readme_block("compose-setup")
    ci = (ROOT / ".ci" / "run").read_text()
    install = next(c for c in setup if "apt-get install" in c)
    packages = [w for w in install.split("apt-get install", 1)[1].split() if w != "-y"]
    assert packages, install
    for package in packages:
        assert re.search(rf"need\+=\({re.escape(package)}\)", ci), f".ci/run skips {package}"
    assert any(c.startswith("dockerd ") for c in setup), setup
    assert re.search(r"^dockerd ", ci, re.M), ".ci/run starts no dockerd"
    assert "make images" in setup, setup
    assert re.search(r"^make images\b", ci, re.M), ".ci/run does not run `make images`"


@pytest.fixture(params=["v2", "v1"])
def compose(request):
    yield from _compose_lab(request.param, ("XDS_SERVER_IMAGE", "XDS_ENVOY_IMAGE"))


@pytest.fixture
def compose_ha():
    """The ha profile, with compose v2 only (the v1 spelling is the task's test)."""
    yield from _compose_lab("v2", tuple(IMAGES))


def _compose_lab(version: str, images: tuple[str, ...]):
    require_docker()
    if not have_spelling(version):
        skip_or_fail(f"compose {version} (`{' '.join(SPELLINGS[version])}`) is not installed")
    if not shutil.which("nc"):
        skip_or_fail("nc is not installed (Debian: netcat-openbsd)")
    lab = Compose(version)
    missing = []
    for image in (lab.env[name] for name in images):
        probe = subprocess.run(["docker", "image", "inspect", image], capture_output=True)
        if probe.returncode != 0:
            missing.append(image)
    if missing:
        skip_or_fail(f"no image {', '.join(missing)}: build them with `make images`")
    try:
        yield lab
    finally:
        lab.run("--profile", "ha", "down", "--volumes", "--remove-orphans", "--timeout", "5")
        print(f"compose {version}: " + ", ".join(f"{c!r} {s:.1f} s" for c, s in lab.times))


def test_readme_compose_steps(compose: Compose) -> None:
    ingress, admin = compose.ports["INGRESS_PORT"], compose.ports["ENVOY_ADMIN_PORT"]
    steps = dict(readme_steps())
    try:
        compose.shell(steps["up"])
        wait_for("Envoy's admin endpoint", lambda: envoy_admin(admin, "/ready")[0] in (200, 503))

        out = compose.shell(steps["apply all-v1"])
        assert "virtualservice.networking.istio.io/tcp-echo created" in out
        wait_for("Envoy LIVE", lambda: envoy_admin(admin, "/ready")[1].strip() == "LIVE")
        compose.wait_synced()
        wait_for("Envoy settled", lambda: settled(admin))
        counts = nc_versions(compose.shell(steps["traffic all-v1"]))
        assert counts == {"one": 10}, counts

        out = compose.shell(steps["apply 20-v2"])
        assert out.strip() == "virtualservice.networking.istio.io/tcp-echo configured"
        compose.wait_synced()
        wait_for("Envoy settled", lambda: settled(admin))
        counts = traffic.split(traffic.send_many("127.0.0.1", ingress, 100))
        # 80 of 100 (weighted localities), give or take one tie in Envoy's EDF scheduler.
        assert counts["one"] + counts["two"] == 100 and 19 <= counts["two"] <= 21, counts

        assert "weight: 20" in compose.shell(steps["get"])
        counts = nc_versions(compose.shell(steps["traffic 80/20"]))
        # 8 "one" and 2 "two", give or take the same tie.
        assert sum(counts.values()) == 10 and 1 <= counts["two"] <= 3, counts

        status = compose.shell(steps["proxy-status"])
        assert "ingressgateway" in status and "SYNCED" in status, status
    except BaseException:
        print(compose.logs())
        raise
    compose.shell(steps["down"])
    assert compose.leftovers() == ""


def test_readme_compose_ha_steps(compose_ha: Compose) -> None:
    """The ha block: applies on either replica, Envoy on one of them, the 80/20 split, then
    control-plane-a killed: the Envoy is (or stays) on control-plane-b, synced, and the
    split goes on."""
    lab = compose_ha
    admin = lab.ports["HA_ENVOY_ADMIN_PORT"]
    steps = dict(readme_steps("compose-ha", HA_STEPS))

    def envoy_row(command: str, replica: str | None = None) -> str | None:
        """proxy-status's row for the Envoy once it is synced (on ``replica``, if given)."""
        out = lab.shell(command)
        header, *rows = out.splitlines() or [""]
        if header.split()[-1:] != ["REPLICA"]:
            return None
        for row in rows:
            cells = row.split()
            # CDS and LDS ACKed; EDS "NOT SENT": the compose lab's clusters resolve by DNS.
            synced = cells[:1] == ["ingressgateway"] and cells[2:5] == ["SYNCED", "SYNCED", "NOT"]
            if synced and (replica is None or cells[-1].startswith(f"{replica}-")):  # host-pid
                return row
        return None

    try:
        lab.shell(steps["up"])
        wait_for("Envoy's admin endpoint", lambda: envoy_admin(admin, "/ready")[0] in (200, 503))
        out = lab.shell(steps["apply on a"])
        assert "virtualservice.networking.istio.io/tcp-echo created" in out
        out = lab.shell(steps["apply on b"])
        assert out.strip() == "virtualservice.networking.istio.io/tcp-echo configured"
        wait_until(lambda: envoy_row(steps["status on a"]), 60, what="Envoy synced, on a replica")
        wait_for("Envoy settled", lambda: settled(admin))
        counts = nc_versions(lab.shell(steps["traffic 80/20"]))
        assert sum(counts.values()) == 10 and 1 <= counts["two"] <= 3, counts

        lab.shell(steps["kill a"])
        wait_until(
            lambda: envoy_row(steps["status on b"], "control-plane-b"),
            60,
            what="Envoy synced on control-plane-b",
        )
        wait_for("Envoy settled", lambda: settled(admin))
        counts = nc_versions(lab.shell(steps["traffic after"]))
        assert sum(counts.values()) == 10 and 1 <= counts["two"] <= 3, counts
    except BaseException:
        print(lab.logs())
        raise
    lab.shell(steps["down"])
    assert lab.leftovers() == ""
