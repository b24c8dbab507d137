"""Several control-plane replicas on one etcd, as a user runs them: ``xds-server serve
--store etcd://...`` processes, and a real Envoy whose bootstrap lists both. An apply on
one replica reaches the Envoy of the other; kill -9 of the replica an Envoy is connected
to, under load: it reconnects to the other and syncs, and no connection fails."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time

from conftest import locality_split_ok

from xds_server.lab import traffic
from xds_server.lab.envoy import EnvoyProcess
from xds_server.lab.lab import SAMPLES
from xds_server.ports import free_port
from xds_server.testing.replicas import Replica
from xds_server.waiting import wait_until

SERVICE_ENTRY = (SAMPLES / "tcp-echo-services.yaml").read_text().split("---\n")[0]
ALL_V1 = (SAMPLES / "tcp-echo-all-v1.yaml").read_text()
V2_20 = (SAMPLES / "tcp-echo-20-v2.yaml").read_text()


def test_apply_on_one_replica_reaches_an_envoy_on_the_other_and_kill_9_fails_over(etcd, echoes):
    url, ingress = etcd.url("/ha"), free_port()
    a, b = Replica(url, ingress), Replica(url, ingress)
    envoy = EnvoyProcess(b.xds_port, xds_more=[("127.0.0.1", a.xds_port)])
    try:
        services = "---\n".join([SERVICE_ENTRY, *(e.workload_entry() for e in echoes)])
        a.admin.apply([("services.yaml", services), ("all-v1.yaml", ALL_V1)])
        envoy.start()
        wait_until(lambda: a.serving() or b.serving(), 20, what="Envoy synced")
        # Applied on one replica, whichever the Envoy is on: the traffic follows.
        a.admin.apply([("20-v2.yaml", V2_20)])
        wait_until(lambda: a.serving() or b.serving(), 20, what="Envoy synced")
        assert locality_split_ok(traffic.split(traffic.send_many("127.0.0.1", ingress, 100)))

        dead, alive = (a, b) if a.serving() else (b, a)
        failed: list[str] = []
        sent = [0]
        stop = threading.Event()

        def load() -> None:  # new connections all along
            while not stop.is_set():
                reply = traffic.send_once("127.0.0.1", ingress, timeout=5)
                sent[0] += 1
                if traffic.version_of(reply) not in ("one", "two"):
                    failed.append(reply)

        t = threading.Thread(target=load)
        t.start()
        try:
            wait_until(lambda: sent[0] >= 20, 10, what="load to run")
            killed = time.monotonic()
            dead.kill()
            wait_until(alive.serving, 10, interval=0.01, what="failover")
            failover = time.monotonic() - killed
            wait_until(lambda: sent[0] >= 60, 20, what="more load after the failover")
        finally:
            stop.set()
            t.join(10)
        assert not failed, failed[:5]
        print(f"[failover: synced on the other replica {failover:.2f} s after kill -9, "
              f"{sent[0]} connections, 0 failed]")  # fmt: skip
        # And the survivor's applies reach the Envoy, now on it.
        alive.admin.apply([("all-v1.yaml", ALL_V1)])
        wait_until(alive.serving, 20, what="Envoy synced")
        assert traffic.split(traffic.send_many("127.0.0.1", ingress, 20)) == {"one": 20}
    finally:
        envoy.stop()
        for replica in (a, b):
            replica.stop()


def _proxy_status(admin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xds_server.xdsctl", "--server", admin, "proxy-status"],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_proxy_status_shows_the_proxies_of_every_replica(etcd, echoes):
    """Asked of replica A, xdsctl proxy-status lists the Envoy connected to replica B, with
    B in its REPLICA column; a replica killed leaves the list when its etcd lease ends."""
    url, ingress = etcd.url("/status"), free_port()
    a, b = Replica(url, ingress), Replica(url, ingress)
    envoy = EnvoyProcess(b.xds_port)
    try:
        services = "---\n".join([SERVICE_ENTRY, *(e.workload_entry() for e in echoes)])
        a.admin.apply([("services.yaml", services), ("all-v1.yaml", ALL_V1)])
        envoy.start()
        wait_until(lambda: b.serving(), 20, what="Envoy synced on B")
        b_id = f"{socket.gethostname()}-{b.proc.proc.pid}"
        a_admin = a.admin.target

        def listed() -> subprocess.CompletedProcess[str] | None:
            result = _proxy_status(a_admin)
            return result if b_id in result.stdout else None

        result = wait_until(listed, 10, what="B and its Envoy in A's proxy-status")
        assert result.returncode == 0, result.stderr
        header, *rows = result.stdout.splitlines()
        assert header.split()[-1] == "REPLICA"
        (row,) = [r for r in rows if r.startswith("ingressgateway")]
        assert row.split()[-1] == b_id and "SYNCED" in row

        envoy.stop()
        b.kill()
        wait_until(lambda: b_id not in (r := _proxy_status(a_admin)).stdout + r.stderr, 15,
                   what="B to leave the list of replicas")  # fmt: skip
    finally:
        envoy.stop()
        for replica in (a, b):
            replica.stop()
