"""Scenario 1, change -> proxy, and scenario 4, churn, on one real Envoy fed by
``xds-server serve`` (a child process) through the admin API, the way xdsctl drives it.

Each change moves all traffic between subsets v1 and v2 (weights 100/0 and 0/100), so "the
first new connection that follows the new split" is the first one the other echo server
answers. Per change, each in a pass of its own (see ``_changes``): Envoy's ACK as the
server measured it (push -> ACK, from the ``xds_push_ack_seconds`` histogram's sum),
apply -> first connection on the new split, and apply -> Envoy's EDS ``update_success``
stat (polled on Envoy's admin port).

Baseline, in the same run and interleaved change by change: the same weight change
delivered to a second Envoy by its own file-based xDS (CDS and LDS from files, EDS from a
file in a watched directory, replaced by an atomic rename), timed write -> the first
connection on the new split and write -> the same stat. Only the stat can time the
baseline's "ACK": a file-fed Envoy answers nobody.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2, config_source_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2, json_format
from google.protobuf.message import Message

from ..config.load import load_paths, load_text
from ..lab import traffic
from ..lab.envoy import EnvoyProcess
from ..lab.lab import GATEWAY_PORT, HOST, SAMPLES, Lab
from ..translate import Resources, TranslateOptions, translate
from ..translate.listeners import listener_name
from ..waiting import wait_until
from .common import metric_sum, metrics_url, scrape
from .stats import Figures, ms

ALL_V1 = SAMPLES / "tcp-echo-all-v1.yaml"
ROUTE = (SAMPLES / "tcp-echo-20-v2.yaml").read_text()
SERVICES = SAMPLES / "tcp-echo-services.yaml"
VERSION = {0: "one", 100: "two"}  # v2 weight -> the echo prefix that answers


def route(v2: int) -> str:
    return ROUTE.replace("weight: 80", f"weight: {100 - v2}").replace("weight: 20", f"weight: {v2}")


def eds_updates(envoy: EnvoyProcess) -> int:
    """Sum of ``cluster.<name>.update_success`` over the EDS clusters (not xds_cluster)."""
    text = envoy.admin_get("/stats?filter=update_success")
    return sum(
        int(m.group(2))
        for m in re.finditer(r"^cluster\.(.+)\.update_success: (\d+)$", text, re.M)
        if m.group(1) != "xds_cluster"
    )


def _until(predicate: Callable[..., bool], timeout: float = 10.0) -> float:
    """When ``predicate()`` came to hold (a perf_counter() time). ``...``: the callers'
    lambdas bind their loop variable as a default argument."""
    # Envoy's admin shares its main thread with xDS: poll gently.
    wait_until(predicate, timeout, interval=0.0005, what="the change")
    return time.perf_counter()


def _answered_by(port: int, prefix: str) -> bool:
    try:
        return traffic.version_of(traffic.send_once(HOST, port, "bench\n", timeout=2)) == prefix
    except (ConnectionError, TimeoutError):
        return False


class FileEnvoy:
    """An Envoy fed by files: the lab's config translated here, EDS written on change."""

    def __init__(self, lab: Lab) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="xds-bench-files-"))
        (self.workdir / "eds").mkdir()
        self.eds_file = self.workdir / "eds" / "eds.json"
        endpoints = "---\n".join(e.workload_entry() for e in lab.echoes)
        self.base = [*load_paths([SERVICES]), *load_text(endpoints, "<lab endpoints>")]
        first = self._translate(0)
        eds_source = config_source_pb2.ConfigSource(
            resource_api_version=config_source_pb2.V3,
            path_config_source=config_source_pb2.PathConfigSource(
                path=str(self.eds_file),
                watched_directory=base_pb2.WatchedDirectory(path=str(self.workdir / "eds")),
            ),
        )
        cluster: cluster_pb2.Cluster  # translate's clusters are typed as Message
        for cluster in first.clusters.values():
            cluster.eds_cluster_config.eds_config.CopyFrom(eds_source)
        _write(self.workdir / "cds.json", first.clusters.values())
        _write(self.workdir / "lds.json", first.listeners.values())
        self.eds = {v2: _json(self._translate(v2).endpoints.values()) for v2 in VERSION}
        self._rename(self.eds[0])
        self.envoy = EnvoyProcess(0, bootstrap=self._bootstrap(), startup_timeout=30).start()
        self.envoy.wait_live()
        self.port = self.envoy.wait_listener(listener_name(GATEWAY_PORT))

    def _translate(self, v2: int) -> Resources:
        docs = [*self.base, *load_paths([ALL_V1])]
        docs = [d for d in docs if d.kind != "VirtualService"] + load_text(route(v2))
        options = TranslateOptions(listener_address=HOST, port_map={GATEWAY_PORT: 0})
        return translate(docs, options)

    def _bootstrap(self) -> str:
        def source(name: str) -> str:
            return (
                f"{{resource_api_version: V3, path_config_source: {{path: {self.workdir / name}}}}}"
            )

        return (
            "node: {id: file-bench, cluster: file-bench}\n"
            "admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}\n"
            "dynamic_resources:\n"
            f"  cds_config: {source('cds.json')}\n"
            f"  lds_config: {source('lds.json')}\n"
        )

    def _rename(self, text: str) -> None:
        tmp = self.workdir / "eds.json.tmp"
        tmp.write_text(text)
        os.rename(tmp, self.eds_file)

    def change(self, v2: int) -> None:
        self._rename(self.eds[v2])

    def stop(self) -> None:
        self.envoy.stop()
        import shutil

        shutil.rmtree(self.workdir, ignore_errors=True)


def _json(messages: Iterable[Message]) -> str:
    response = discovery_pb2.DiscoveryResponse()
    for m in messages:
        packed = any_pb2.Any()
        packed.Pack(m)
        response.resources.append(packed)
    return json_format.MessageToJson(response)


def _write(path: Path, messages: Iterable[Message]) -> None:
    path.write_text(_json(messages))


def run(changes: int, churn: int, say: Callable[[str], None] = print) -> Figures:
    with Lab(ingress_port=0, xds_port=0, admin_port=0, server="process",
             server_args=["--metrics-port", "0"]) as lab:  # fmt: skip
        assert lab.server is not None and lab.admin is not None and lab.envoy is not None
        url = metrics_url(lab.server)
        lab.apply([ALL_V1])
        out: Figures = {}
        if changes:
            files = FileEnvoy(lab)
            try:
                out.update(_changes(lab, files, url, changes))
            finally:
                files.stop()
            say(
                f"change -> proxy: ACK p99 {out['push_ack_ms_p99']:.2f} ms, file xDS p99 "
                f"{out['file_xds_ms_p99']:.2f} ms"
            )
        if churn:
            out.update(_churn(lab, url, churn))
            say(f"churn: {out['churn_changes_per_s']:.0f} changes/s")
    return out


def _changes(lab: Lab, files: FileEnvoy, url: str, changes: int) -> dict[str, float]:
    """Three passes of ``changes`` changes each; in the last two, ours and the file baseline
    alternate change by change.

    On two cores, whatever the bench does while a change is in flight slows Envoy down:
    polling Envoy's stats (served on the main thread that also applies xDS updates and sends
    ACKs) or connecting through it (its workers, our echo servers and this process take the
    CPUs) each added up to 5 ms to one ACK in twenty. So the ACK gets a quiet pass of its
    own (the server times it; this process only asks the server's /metrics, every 2 ms),
    and the connection and stat timings each get theirs, where both sides are polled alike."""
    assert lab.admin is not None and lab.envoy is not None
    envoy, port = lab.envoy, lab.ingress_port  # a local: the lambdas below keep its type
    ack, stat, conn, f_stat, f_conn = [], [], [], [], []
    v2s = [100 if i % 2 == 0 else 0 for i in range(changes)]
    for v2 in v2s:
        before = scrape(url)
        lab.admin.apply([("<bench>", route(v2))])  # what xdsctl apply does
        ack.append(_acked(url, before))
    for v2 in v2s:
        started = time.perf_counter()
        lab.admin.apply([("<bench>", route(v2))])
        conn.append(_until(lambda v=v2: _answered_by(port, VERSION[v])) - started)
        started = time.perf_counter()
        files.change(v2)
        f_conn.append(_until(lambda v=v2: _answered_by(files.port, VERSION[v])) - started)
    for v2 in v2s:
        updates = eds_updates(envoy)
        started = time.perf_counter()
        lab.admin.apply([("<bench>", route(v2))])
        stat.append(_until(lambda u=updates: eds_updates(envoy) > u) - started)
        updates = eds_updates(files.envoy)
        started = time.perf_counter()
        files.change(v2)
        f_stat.append(_until(lambda u=updates: eds_updates(files.envoy) > u) - started)
    out: dict[str, float] = {}
    out["push_ack_ms_p50"], out["push_ack_ms_p99"] = ms(ack)
    out["push_traffic_ms_p50"], out["push_traffic_ms_p99"] = ms(conn)
    out["push_stats_ms_p50"], out["push_stats_ms_p99"] = ms(stat)
    out["file_xds_ms_p50"], out["file_xds_ms_p99"] = ms(f_stat)
    out["file_traffic_ms_p50"], out["file_traffic_ms_p99"] = ms(f_conn)
    out["push_changes"] = changes
    return out


def _acked(url: str, before: dict[str, float]) -> float:
    """Push -> ACK of the next EDS push after ``before``, from the server's histogram."""
    count = metric_sum(before, "xds_push_ack_seconds_count", type="EDS")
    after = wait_until(
        lambda: scrape(url),
        10,
        check=lambda now: metric_sum(now, "xds_push_ack_seconds_count", type="EDS") > count,
        interval=0.002,
        what="Envoy's ACK of the change",
    )
    return metric_sum(after, "xds_push_ack_seconds_sum", type="EDS") - metric_sum(
        before, "xds_push_ack_seconds_sum", type="EDS"
    )


def _churn(lab: Lab, url: str, changes: int) -> dict[str, float]:
    """``changes`` back-to-back applies (each returns when stored and pushed, not ACKed)."""
    assert lab.admin is not None
    before = scrape(url)
    docs = [route(100 if i % 2 == 0 else 0) for i in range(changes)]
    last = 100 if (changes - 1) % 2 == 0 else 0
    started = time.perf_counter()
    for doc in docs:
        lab.admin.apply([("<bench>", doc)])
    applied = time.perf_counter()
    lab.admin.wait_synced(timeout=60)
    settled = time.perf_counter()
    after = scrape(url)
    pushes = metric_sum(after, "xds_pushes_total") - metric_sum(before, "xds_pushes_total")
    last_wins = all(_answered_by(lab.ingress_port, VERSION[last]) for _ in range(5))
    return {
        "churn_changes_per_s": changes / (applied - started),
        "churn_pushes_per_change": pushes / changes,
        "churn_settle_ms": (settled - applied) * 1000,
        "churn_last_wins": 1 if last_wins else 0,
        "churn_changes": changes,
    }
