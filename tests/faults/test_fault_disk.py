"""Disk faults under the state directory: a state dir that is a file or cannot be created,
a full disk and a read-only one. Each is one line naming the path and what to do; a server
whose disk is full or read-only starts with its last config, serves it, and refuses writes
until the disk is fixed. The full and read-only disks are small tmpfs mounts (root only)."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ServerProcess, serve_once

from xds_server.admin.client import AdminClient
from xds_server.lab.envoy import EnvoyProcess
from xds_server.lab.lab import SAMPLES

SERVICES = (SAMPLES / "tcp-echo-services.yaml").read_text()
ALL_V1 = (SAMPLES / "tcp-echo-all-v1.yaml").read_text()
V2_20 = (SAMPLES / "tcp-echo-20-v2.yaml").read_text()


def test_state_dir_that_is_a_file_or_cannot_be_created(tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory\n")
    for path, says in [
        (a_file, f"error: state directory {a_file} is a file, not a directory"),
        (a_file / "state", f"error: cannot create the state directory {a_file / 'state'}"),
    ]:
        result = serve_once(path)
        assert result.returncode == 1
        (line,) = result.stderr.splitlines()  # no traceback
        assert line.startswith(says), line
        assert "--state-dir" in line


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs of this test's own."""
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("the disk fault tests mount a tmpfs: CI must run them as root")
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(disk: Path) -> Path:
    """Fill the file system up; the filler file is returned, to be removed."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 4096)
    with pytest.raises(OSError) as full:
        (disk / "probe").write_bytes(b"\0" * 8192)
    assert full.value.errno == errno.ENOSPC
    (disk / "probe").unlink(missing_ok=True)
    return filler


class Served:
    """xds-server serve --state-dir DIR as a process, an admin client and xdsctl."""

    def __init__(self, state: Path) -> None:
        self.server = ServerProcess(
            "--state-dir", str(state), "--xds-port", "0", "--admin-port", "0"
        )
        self.xds_port = self.server.wait_port("xDS")
        self.admin = f"127.0.0.1:{self.server.wait_port('admin API')}"
        self.client = AdminClient(self.admin)

    def said(self, text: str) -> bool:
        """Whether a line read so far (through the start-up) has ``text``."""
        return any(text in line for line in self.server.lines)

    def names(self) -> set[str]:
        return {f"{r.ref.kind}/{r.ref.name}" for r in self.client.get().resources}

    def xdsctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "xds_server.xdsctl", "--server", self.admin, *args],
            capture_output=True,
            text=True,
            timeout=60,
        )

    def stop(self) -> None:
        self.client.close()
        assert self.server.stop() == 0


def _refused(served: Served, vs: Path, reason: str) -> None:
    """xdsctl apply is refused in one line naming the file and what to do; nothing changed."""
    before = served.client.get("VirtualService", "tcp-echo").resources[0].json
    result = served.xdsctl("apply", "-f", str(vs))
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert "cannot write the state database" in line and reason in line, line
    # The server is up and the input fine: its disk is what refuses (not "Forbidden").
    assert line.startswith("Error from server (ServiceUnavailable): "), line
    assert "state.db" in line and "the change was not applied" in line, line
    assert served.client.get("VirtualService", "tcp-echo").resources[0].json == before


def test_full_disk_refuses_writes_and_serves_the_last_config(
    tmpfs: Path, tmp_path: Path, fault_figure
) -> None:
    vs = tmp_path / "20-v2.yaml"
    vs.write_text(V2_20)
    served = Served(tmpfs / "state")
    try:
        served.client.apply([("services.yaml", SERVICES), ("all-v1.yaml", ALL_V1)])
        everything = served.names()
        filler = _fill(tmpfs)
        _refused(served, vs, "No space left on device")
        served.stop()

        # A restart on the full disk: the saved config is served (Envoy gets it), writes
        # are still refused.
        served = Served(tmpfs / "state")
        assert served.said("applies and deletes are refused until you free space")
        assert served.names() == everything
        with EnvoyProcess(served.xds_port) as envoy:
            served.client.wait_synced("ingressgateway")
            envoy.wait_listener("0.0.0.0_31400")
            _refused(served, vs, "No space left on device")
            fault_figure("applies refused on a full disk", 2)

            filler.unlink()
            result = served.xdsctl("apply", "-f", str(vs))
            assert result.returncode == 0, result.stderr
            assert "configured" in result.stdout
            served.client.wait_synced("ingressgateway")
        assert served.server.proc.poll() is None
    finally:
        served.stop()


def test_read_only_disk_refuses_writes_and_serves_the_last_config(
    tmpfs: Path, tmp_path: Path
) -> None:
    vs = tmp_path / "20-v2.yaml"
    vs.write_text(V2_20)
    served = Served(tmpfs / "state")
    served.client.apply([("services.yaml", SERVICES), ("all-v1.yaml", ALL_V1)])
    everything = served.names()
    served.stop()
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    try:
        served = Served(tmpfs / "state")
        assert served.said("applies and deletes are refused until you mount it read-write")
        assert served.names() == everything
        _refused(served, vs, "Read-only file system")
        result = served.xdsctl("delete", "vs", "tcp-echo")
        assert result.returncode == 1 and "Read-only file system" in result.stderr
        assert served.names() == everything
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(tmpfs)], check=True)
    try:
        result = served.xdsctl("apply", "-f", str(vs))
        assert result.returncode == 0, result.stderr
    finally:
        served.stop()
