"""``xds-server serve --config DIR`` as a real process: reloads on change, keeps the last good
config when a change is invalid, and fails clearly at start."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import ServerProcess, locality_split_ok

from xds_server.admin.client import AdminClient
from xds_server.lab import traffic
from xds_server.lab.envoy import EnvoyProcess
from xds_server.lab.lab import SAMPLES, EchoProcess
from xds_server.ports import free_port
from xds_server.waiting import wait_until

VS_20 = (SAMPLES / "tcp-echo-20-v2.yaml").read_text()


def write_config(directory: Path, echoes: list[EchoProcess]) -> None:
    shutil.copy(SAMPLES / "tcp-echo-all-v1.yaml", directory / "10-routing.yaml")
    services = (SAMPLES / "tcp-echo-services.yaml").read_text().split("---\n")[0]
    (directory / "00-services.yaml").write_text(
        "---\n".join([services, *(e.workload_entry() for e in echoes)])
    )


def test_invalid_change_on_disk_keeps_last_good_config(tmp_path, echoes):
    write_config(tmp_path, echoes)
    ingress = free_port()
    server = ServerProcess(
        "--config",
        str(tmp_path),
        "--xds-port",
        "0",
        "--admin-port",
        "0",
        "--port-map",
        f"31400={ingress}",
    )
    try:
        port = server.wait_port("xDS")
        with EnvoyProcess(port) as envoy:
            envoy.wait_live()
            envoy.wait_listener("0.0.0.0_31400")
            assert traffic.split(traffic.send_many("127.0.0.1", ingress, 10)) == {"one": 10}

            # A bad weight: rejected with file, document, resource and field named.
            (tmp_path / "10-routing.yaml").write_text(VS_20.replace("weight: 20", "weight: -20"))
            line = server.wait_line("rejected config change")
            detail = server.wait_line("weight")
            assert "10-routing.yaml" in detail and "VirtualService default/tcp-echo" in detail
            assert "spec.tcp[0].route[1].weight" in detail, detail
            # The last good config keeps serving.
            assert traffic.split(traffic.send_many("127.0.0.1", ingress, 10)) == {"one": 10}

            # The next valid change goes through. It is the whole directory that counts now:
            # the Gateway and DestinationRule that 10-routing.yaml held must come back too.
            all_v1 = (SAMPLES / "tcp-echo-all-v1.yaml").read_text()
            gw_dr = all_v1.split("kind: VirtualService")[0].rsplit("---", 1)[0]
            (tmp_path / "10-routing.yaml").write_text(gw_dr + "---\n" + VS_20)
            server.wait_line("reloaded revision 2")
            wait_until(  # 100 connections a sample: no pause between them
                lambda: traffic.split(traffic.send_many("127.0.0.1", ingress, 100)),
                10,
                check=locality_split_ok,
                interval=0,
                what="the 80/20 split",
            )
    finally:
        assert server.stop() == 0
    assert line  # the rejection was reported once the change was made


def test_invalid_config_at_start_exits_1_with_location(tmp_path):
    bad = tmp_path / "vs.yaml"
    bad.write_text(VS_20.replace("subset: v2", "subset: v3"))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "xds_server",
            "serve",
            "-c",
            str(bad),
            "--xds-port",
            "0",
            "--admin-port",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "vs.yaml" in result.stderr
    assert "VirtualService default/tcp-echo" in result.stderr


def test_xds_port_in_use_is_one_clear_line(tmp_path):
    import socket

    (tmp_path / "a.yaml").write_text((SAMPLES / "tcp-echo-services.yaml").read_text())
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "xds_server", "serve", "-c", str(tmp_path)]
            + ["--xds-port", str(port)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: cannot listen for xDS on 127.0.0.1:{port}")
    assert len(result.stderr.strip().splitlines()) == 1


def test_config_file_saved_by_rename_deleted_and_recreated_keeps_reloading(tmp_path):
    """Editors and `sed -i` save by renaming a new file over the old one; a watch on the
    file itself would end at the first save. A deleted or emptied file is refused, and the
    last good config keeps serving."""
    services = (SAMPLES / "tcp-echo-services.yaml").read_text()
    all_v1 = (SAMPLES / "tcp-echo-all-v1.yaml").read_text()
    gw_dr = all_v1.split("kind: VirtualService")[0].rsplit("---", 1)[0]
    (tmp_path / "services.yaml").write_text(services)
    routing = tmp_path / "routing.yaml"
    routing.write_text(all_v1)
    server = ServerProcess(
        "-c", str(tmp_path / "services.yaml"), str(routing), "--xds-port", "0", "--admin-port", "0"
    )

    def save_by_rename(text: str) -> None:
        new = tmp_path / ".routing.yaml.swp~"
        new.write_text(text)
        os.replace(new, routing)

    def weights() -> list[int | None]:
        vs = json.loads(client.get("VirtualService", "tcp-echo").resources[0].json)
        return [d.get("weight") for d in vs["spec"]["tcp"][0]["route"]]

    try:
        client = AdminClient(f"127.0.0.1:{server.wait_port('admin API')}")
        server.wait_line("watching")
        for revision, (v1, v2) in enumerate([(80, 20), (70, 30), (60, 40)], start=2):
            vs = VS_20.replace("weight: 80", f"weight: {v1}").replace("weight: 20", f"weight: {v2}")
            save_by_rename(gw_dr + "---\n" + vs)
            server.wait_line(f"reloaded revision {revision}")
            assert weights() == [v1, v2]
        routing.unlink()
        assert "routing.yaml" in server.wait_line("no such file or directory")
        assert weights() == [60, 40]
        routing.write_text(all_v1)  # re-created
        server.wait_line("reloaded revision 5")
        assert weights() == [None]
        routing.write_text("")
        line = server.wait_line("holds no resource")
        assert "rejected config change" in line and str(routing) in line
        assert weights() == [None]
        routing.write_text(gw_dr + "---\n" + VS_20)
        server.wait_line("reloaded revision 6")
        assert weights() == [80, 20]
        client.close()
    finally:
        assert server.stop() == 0


def test_a_config_dir_with_a_file_of_notes_keeps_reloading(tmp_path):
    """A YAML file that never held a resource (notes, a placeholder) is not an emptied
    file: edits to the others are applied."""
    (tmp_path / "services.yaml").write_text((SAMPLES / "tcp-echo-services.yaml").read_text())
    (tmp_path / "routing.yaml").write_text((SAMPLES / "tcp-echo-all-v1.yaml").read_text())
    (tmp_path / "zz-notes.yaml").write_text("# routing is in routing.yaml\n")
    server = ServerProcess("-c", str(tmp_path), "--xds-port", "0", "--admin-port", "0")
    try:
        with AdminClient(f"127.0.0.1:{server.wait_port('admin API')}") as client:
            server.wait_line("watching")
            all_v1 = (SAMPLES / "tcp-echo-all-v1.yaml").read_text()
            gw_dr = all_v1.split("kind: VirtualService")[0].rsplit("---", 1)[0]
            (tmp_path / "routing.yaml").write_text(gw_dr + "---\n" + VS_20)
            server.wait_line("reloaded revision 2")
            vs = json.loads(client.get("VirtualService", "tcp-echo").resources[0].json)
            assert [d["weight"] for d in vs["spec"]["tcp"][0]["route"]] == [80, 20]
    finally:
        assert server.stop() == 0


def test_taken_port_fails_before_the_state_dir_is_created(tmp_path):
    """Ports are bound before the disk is touched: a serve that cannot listen leaves no
    state directory behind (it used to create it, then fail); a damaged state file with
    free ports fails too, and releases the ports it had bound."""
    import socket

    state = tmp_path / "state"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for flags in (
            ["--xds-port", str(port), "--admin-port", "0"],
            ["--xds-port", "0", "--admin-port", str(port)],
            ["--xds-port", "0", "--admin-port", "0", "--metrics-port", str(port)],
        ):
            result = subprocess.run(
                [sys.executable, "-m", "xds_server", "serve", "--state-dir", str(state), *flags],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert result.returncode == 1, result.stderr
            assert f"127.0.0.1:{port}: address in use" in result.stderr, result.stderr
            assert not state.exists(), flags

    state.mkdir()
    (state / "config.yaml").write_text("")  # empty: refused at start
    xds, admin = free_port(), free_port()
    result = subprocess.run(
        [sys.executable, "-m", "xds_server", "serve", "--state-dir", str(state)]
        + ["--xds-port", str(xds), "--admin-port", str(admin)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1 and "config.yaml" in result.stderr, result.stderr
    for p in (xds, admin):
        with socket.socket() as s:
            s.bind(("127.0.0.1", p))  # free again
