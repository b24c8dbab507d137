"""Scenario 6, replicas: two ``xds-server serve --store etcd://...`` processes on one real
etcd (one member, local), a real Envoy and real echo servers.

- **Lag** (``replica_lag_ms_p50/p99``): an apply on replica A (through its admin API, as
  xdsctl does) -> Envoy's EDS ``update_success`` stat, for an Envoy connected to replica B
  only; the same change applied on B itself, alternating change by change, gives
  ``replica_local_ms_*``, the single-replica figure on this store. Timed as
  ``push_stats_ms`` is (scenario 1), whose p99 is the goal's baseline.
- **Failover** (``failover_s``, the worst of ``failover_trials``): an Envoy whose bootstrap
  lists both replicas, new connections through it all along; kill -9 of the replica it is
  connected to -> the other replica reports it connected and synced; the killed one is
  started again between trials. ``failover_failed`` counts the connections that got no
  echo reply, ``failover_connections`` those made.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial

from ..lab import traffic
from ..lab.envoy import EnvoyProcess
from ..lab.lab import HOST, SAMPLES, EchoProcess
from ..ports import free_port
from ..testing.etcd import EtcdCluster
from ..testing.replicas import Replica
from ..waiting import wait_until
from .push import eds_updates, route
from .stats import Figures, ms

SERVICE = (SAMPLES / "tcp-echo-services.yaml").read_text().split("---\n")[0]
ALL_V1 = (SAMPLES / "tcp-echo-all-v1.yaml").read_text()


@contextmanager
def _replicas(etcd: EtcdCluster, ingress: int) -> Iterator[tuple[Replica, Replica]]:
    a = Replica(etcd.url("/bench"), ingress)
    try:
        b = Replica(etcd.url("/bench"), ingress)
        try:
            yield a, b
        finally:
            b.stop()
    finally:
        a.stop()


def run(changes: int, failovers: int, say: Callable[[str], None] = print) -> Figures:
    echoes = [EchoProcess.start("v1", "one"), EchoProcess.start("v2", "two")]
    try:
        services = "---\n".join([SERVICE, *(e.workload_entry() for e in echoes)])
        with EtcdCluster(1) as etcd:
            ingress = free_port()
            with _replicas(etcd, ingress) as (a, b):
                a.admin.apply([("services.yaml", services), ("all-v1.yaml", ALL_V1)])
                out: Figures = {**_lag(a, b, changes)}
                say(f"replicas: apply on A -> Envoy on B p99 {out['replica_lag_ms_p99']:.1f} ms")
                out.update(_failover(a, b, ingress, failovers))
                say(f"replicas: failover within {out['failover_s']:.2f} s")
    finally:
        for e in echoes:
            e.stop()
    return out


def _lag(a: Replica, b: Replica, changes: int) -> dict[str, float]:
    lag: list[float] = []
    local: list[float] = []
    with EnvoyProcess(b.xds_port) as envoy:
        wait_until(b.serving, 20, what="Envoy synced on replica B")
        v2 = 0  # the all-v1 route: each change then moves all traffic to the other subset
        for _ in range(changes):
            for replica, samples in ((a, lag), (b, local)):
                v2 = 100 - v2
                updates = eds_updates(envoy)
                started = time.perf_counter()
                replica.admin.apply([("<bench>", route(v2))])
                wait_until(partial(_pushed, envoy, updates), 10, interval=0.0005, what="the push")
                samples.append(time.perf_counter() - started)
    out: dict[str, float] = {"replica_changes": changes}
    out["replica_lag_ms_p50"], out["replica_lag_ms_p99"] = ms(lag)
    out["replica_local_ms_p50"], out["replica_local_ms_p99"] = ms(local)
    return out


def _pushed(envoy: EnvoyProcess, before: int) -> bool:
    return eds_updates(envoy) > before


def _failover(a: Replica, b: Replica, ingress: int, trials: int) -> dict[str, float]:
    worst, failed, sent = 0.0, [0], [0]
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            reply = traffic.send_once(HOST, ingress, timeout=5)
            sent[0] += 1
            if traffic.version_of(reply) not in ("one", "two"):
                failed[0] += 1

    with EnvoyProcess(a.xds_port, xds_more=[(HOST, b.xds_port)]) as envoy:
        del envoy  # held for its lifetime only
        wait_until(lambda: a.serving() or b.serving(), 20, what="Envoy synced")
        thread = threading.Thread(target=load, daemon=True)
        thread.start()
        try:
            for _ in range(trials):
                on, other = (a, b) if a.serving() else (b, a)
                killed = time.perf_counter()
                on.kill()
                wait_until(other.serving, 10, interval=0.005, what="the failover")
                worst = max(worst, time.perf_counter() - killed)
                on.start()
        finally:
            stop.set()
            thread.join(10)
    return {
        "failover_s": worst,
        "failover_trials": trials,
        "failover_failed": failed[0],
        "failover_connections": sent[0],
    }
