"""Per-proxy status over CSDS, the proxy-status table, and the Prometheus metrics."""

from __future__ import annotations

import contextlib
import queue
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator

import grpc
import pytest
from envoy.admin.v3 import config_dump_shared_pb2 as dump_pb2
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc
from envoy.type.matcher.v3 import node_pb2, string_pb2
from prometheus_client.parser import text_string_to_metric_families
from test_xds_sotw import ROUTE, envoy_start, proxy, wait
from xds_client import XdsClient

from xds_server.admin.v1 import admin_pb2, admin_pb2_grpc
from xds_server.config.load import load_paths
from xds_server.controlplane import ControlPlane
from xds_server.lab.lab import SAMPLES
from xds_server.translate import CLUSTER, ENDPOINT, LISTENER
from xds_server.xds import csds as csds_module
from xds_server.xds.csds import rows_from_csds
from xds_server.xds.status import (
    NACK_TEXT_LIMIT,
    NACKED,
    SYNCED,
    ProxyRow,
    fit_texts,
    format_proxy_status,
    proxy_rows,
    shorten,
)

SERVICES = SAMPLES / "tcp-echo-services.yaml"
ALL_V1 = SAMPLES / "tcp-echo-all-v1.yaml"
V2_20 = SAMPLES / "tcp-echo-20-v2.yaml"


@pytest.fixture
def cp():
    with ControlPlane.start_in_thread(metrics_port=0) as cp:
        cp.apply(load_paths([SERVICES, ALL_V1]))
        yield cp


def nacked_proxy(cp, node_id: str = "test-proxy", v2: int = 20) -> tuple[XdsClient, str]:
    """A proxy that ACKed the opening and then rejected an EDS push (a v2 weight change)."""
    client = XdsClient(cp.port, node_id)
    envoy_start(client, cp)
    cp.apply_yaml(V2_20.read_text().replace("80", str(100 - v2)).replace("20", str(v2)))
    push = client.recv()
    assert push.type_url == ENDPOINT
    client.nack(push, "endpoints: bad weight (goo.gle/debugproto)", [ROUTE])
    wait(cp, lambda c: proxy(c, node_id).state(ENDPOINT) == NACKED)
    return client, push.version_info


def csds(cp, request: csds_pb2.ClientStatusRequest | None = None):
    with grpc.insecure_channel(f"127.0.0.1:{cp.port}") as channel:
        stub = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(channel)
        return stub.FetchClientStatus(request or csds_pb2.ClientStatusRequest(), timeout=5)


def test_csds_reports_each_resource_and_the_nack_text(cp):
    client, rejected = nacked_proxy(cp)
    with client:
        (config,) = csds(cp).config
    assert config.node.id == "test-proxy"
    ours = config.node.metadata.fields["xds_server"].struct_value.fields
    assert ours["api"].string_value == "ADS SotW"
    by_type = {g.type_url: g for g in config.generic_xds_configs}
    assert len(config.generic_xds_configs) == 3  # one resource of each type
    cds, eds, lds = by_type[CLUSTER], by_type[ENDPOINT], by_type[LISTENER]
    assert (cds.name, cds.config_status, cds.client_status) == (
        ROUTE,
        csds_pb2.SYNCED,
        dump_pb2.ACKED,
    )
    assert cds.xds_config.type_url == CLUSTER and cds.last_updated.seconds > 0
    assert lds.name == "0.0.0.0_31400" and lds.config_status == csds_pb2.SYNCED
    assert (eds.config_status, eds.client_status) == (csds_pb2.ERROR, dump_pb2.NACKED)
    assert eds.error_state.details == "endpoints: bad weight (goo.gle/debugproto)"
    assert eds.error_state.version_info == eds.version_info == rejected


def test_csds_node_matchers_and_contents(cp):
    a, _ = nacked_proxy(cp, "gateway-a")
    b, _ = nacked_proxy(cp, "gateway-b", v2=30)
    with a, b:

        def ids(**matcher) -> list[str]:
            m = node_pb2.NodeMatcher(node_id=string_pb2.StringMatcher(**matcher))
            return [
                c.node.id for c in csds(cp, csds_pb2.ClientStatusRequest(node_matchers=[m])).config
            ]

        assert [c.node.id for c in csds(cp).config] == ["gateway-a", "gateway-b"]
        assert ids(exact="gateway-b") == ["gateway-b"]
        assert ids(prefix="gateway-") == ["gateway-a", "gateway-b"]
        assert ids(suffix="-A", ignore_case=True) == ["gateway-a"]
        assert ids(safe_regex={"regex": "gate.*-b"}) == ["gateway-b"]
        assert ids(exact="nope") == []
        lean = csds(cp, csds_pb2.ClientStatusRequest(exclude_resource_contents=True))
        assert all(not g.HasField("xds_config") for c in lean.config for g in c.generic_xds_configs)


def test_csds_stream_answers_each_request_with_the_current_status(cp):
    client, _ = nacked_proxy(cp)
    with client, grpc.insecure_channel(f"127.0.0.1:{cp.port}") as channel:
        stub = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(channel)
        requests = [csds_pb2.ClientStatusRequest()] * 2
        answers = iter(stub.StreamClientStatus(iter(requests), timeout=5))
        first = next(answers)
        assert {g.config_status for g in first.config[0].generic_xds_configs} == {
            csds_pb2.SYNCED,
            csds_pb2.ERROR,
        }
        assert next(answers).config[0].node.id == "test-proxy"


def test_proxy_status_table_from_the_board_and_from_csds(cp):
    client, _ = nacked_proxy(cp)
    with client, XdsClient(cp.port, "quiet-proxy") as quiet:
        quiet.request(LISTENER)
        quiet.recv()  # sent, never ACKed
        wait(cp, lambda c: proxy(c, "quiet-proxy").types[LISTENER].pushes == 1)
        now = min(p.connected_since for p in cp.proxies()) + 75
        from_board = format_proxy_status(cp.proxies(), now=now)
        from_csds = format_proxy_status(rows_from_csds(csds(cp)), now=now)
    assert from_board == from_csds
    assert from_board.splitlines() == [
        "NAME          CLUSTER   CDS        LDS      EDS        API        VERSION   CONNECTED",
        "quiet-proxy   test      NOT SENT   STALE    NOT SENT   ADS SotW   -         1m",
        "test-proxy    test      SYNCED     SYNCED   NACKED     ADS SotW   -         1m",
        "test-proxy EDS NACKED: endpoints: bad weight (goo.gle/debugproto)",
    ]


def test_proxy_status_table_layout():
    rows = [
        ProxyRow(
            name="ingressgateway",
            cluster="ingressgateway",
            states={CLUSTER: "SYNCED", LISTENER: "SYNCED", ENDPOINT: "STALE"},
            api="ADS Delta",
            version="envoy 1.40.0",
            connected_since=1000.0,
        )
    ]
    header, row = format_proxy_status(rows, now=1000.0 + 3 * 3600 + 5).splitlines()
    assert header.split() == ["NAME", "CLUSTER", "CDS", "LDS", "EDS", "API", "VERSION", "CONNECTED"]
    assert row.split() == ["ingressgateway", "ingressgateway", "SYNCED", "SYNCED", "STALE"] + [
        "ADS",
        "Delta",
        "envoy",
        "1.40.0",
        "3h",
    ]
    for title, cell in (("CDS", "SYNCED"), ("EDS", "STALE"), ("API", "ADS"), ("CONN", "3h")):
        assert header.index(title) == row.index(cell)  # columns line up
    assert format_proxy_status([]) == "No proxies connected."
    assert proxy_rows([]) == []


def test_two_connections_with_one_node_id_are_two_proxies(cp):
    """A second stream borrowing a proxy's node id (it asks for listeners and never ACKs)
    neither hides the first nor blocks waiting for it: status has a row per connection
    (each ADS stream), told apart by connection id and peer address."""
    with XdsClient(cp.port, "shared") as real:
        envoy_start(real, cp)  # first, so that its stream is the older one
        with XdsClient(cp.port, "shared") as other:
            other.request(LISTENER)
            other.recv()  # never ACKed
            wait(cp, lambda c: len(c.proxies()) == 2 and all(p.types for p in c.proxies()))
            cp.wait_synced(timeout=5, node_id="shared")  # the synced one
            assert not cp.synced(node_id="shared", min_proxies=2)  # not both
            assert not cp.synced()  # nor everyone
            rows = proxy_rows(cp.proxies())
            assert [r.name for r in rows] == ["shared", "shared"]
            assert len({r.connection for r in rows}) == 2 and all(r.peer for r in rows)
            assert [r.states[LISTENER] for r in rows] == [SYNCED, "STALE"]  # oldest first
            table = format_proxy_status(cp.proxies())
            lines = [line for line in table.splitlines() if line.startswith("shared")]
            labels = [f"shared#{r.connection}" for r in rows]
            assert [line.split()[0] for line in lines] == labels + [f"{n}:" for n in labels]
            assert lines[2] == f"{labels[0]}: connection {rows[0].connection} from {rows[0].peer}"
            assert format_proxy_status(rows_from_csds(csds(cp))) == table
            assert len(csds(cp).config) == 2
            assert "stream" in cp.cp._sync_report(0)


@contextlib.contextmanager
def nacking(cp, count: int, text: str) -> Iterator[None]:
    """``count`` proxies connected, each NACKing the 80/20 change's endpoints with ``text``."""
    clients = [XdsClient(cp.port, f"proxy-{i}") for i in range(count)]
    try:
        for client in clients:
            envoy_start(client, cp)
        cp.apply(load_paths([V2_20]))
        for client in clients:
            client.nack(client.recv(), text, [ROUTE])
        wait(cp, lambda c: all(p.state(ENDPOINT) == NACKED for p in c.proxies()))
        yield
    finally:
        for client in clients:
            client.close()


def csds_errors(cp) -> list[str]:
    return [
        g.error_state.details
        for c in csds(cp).config
        for g in c.generic_xds_configs
        if g.error_state.details
    ]


def test_huge_nack_texts_are_cut_and_status_still_answers():
    """Two proxies NACK with a 3 MB error_detail: what is kept is the text's head and its
    size, so proxy-status and CSDS answer within gRPC's default 4 MiB (they failed with
    RESOURCE_EXHAUSTED, 6 MB)."""
    huge = "listener: bad (goo.gle/debugproto) " + "x" * 3_000_000
    with ControlPlane.start_in_thread(admin_port=0) as cp:
        cp.apply(load_paths([SERVICES, ALL_V1]))
        with nacking(cp, 2, huge):
            with grpc.insecure_channel(f"127.0.0.1:{cp.cp.admin_port}") as channel:
                stub = admin_pb2_grpc.ConfigAdminStub(channel)
                status = stub.ProxyStatus(admin_pb2.ProxyStatusRequest(), timeout=5)
            errors = [t.error for p in status.proxies for t in p.types if t.error]
            from_csds = csds_errors(cp)
    assert len(errors) == 2 and len(from_csds) == 2
    for text in errors + from_csds:
        assert text.startswith(huge[:100]) and f"[cut: {len(huge)} bytes in all]" in text
        assert len(text) < NACK_TEXT_LIMIT + 100


def test_many_nack_texts_share_what_one_answer_may_carry(cp, monkeypatch):
    """However many proxies NACK, a status answer's texts stay within its budget, each
    cut to its share and still saying its full size."""
    monkeypatch.setattr(csds_module, "ANSWER_BUDGET", 4 * 1024)
    text = "endpoints: bad " + "y" * 3000
    with nacking(cp, 4, text):
        details = csds_errors(cp)
    assert len(details) == 4 and sum(len(d) for d in details) <= 4 * 1024
    assert all(d.startswith("endpoints: bad y") and "[cut: 3015 bytes" in d for d in details)


def test_shorten_and_fit_texts():
    assert shorten("short") == "short"
    once = shorten("z" * 10_000, 100)
    assert once == "z" * 100 + "... [cut: 10000 bytes in all]"
    assert shorten(once, 10) == "z" * 10 + "... [cut: 10000 bytes in all]"  # the first size
    assert shorten(once, 100) == once
    assert fit_texts([("a" * 10, 3)], 100) == NACK_TEXT_LIMIT  # fits: the usual head
    assert fit_texts([("a" * 10_000, 10)], 40_000) == 40_000 // 10 // 4 - 40


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_count_pushes_rejects_and_ack_latency(cp):
    client, _ = nacked_proxy(cp)
    with client:
        m = scrape(cp.cp.metrics_port)
    sotw = ("api", "ADS SotW")
    assert m[("xds_pushes_total", (sotw, ("type", "EDS")))] == 2  # opening + rejected push
    assert m[("xds_pushes_total", (sotw, ("type", "CDS")))] == 1
    assert m[("xds_rejects_total", (("type", "EDS"),))] == 1
    assert ("xds_rejects_total", (("type", "CDS"),)) not in m
    # One ACK per type; the rejected push has no ACK latency.
    for kind in ("CDS", "EDS", "LDS"):
        assert m[("xds_push_ack_seconds_count", (("type", kind),))] == 1
    assert m[("xds_push_size_bytes_count", (("type", "EDS"),))] == 2
    assert m[("xds_connected_proxies", ())] == 1
    assert m[("xds_config_size_bytes", (("type", "CDS"),))] > 100


def test_metrics_are_per_control_plane_and_off_by_default(cp):
    with ControlPlane.start_in_thread() as other:
        assert other.cp.metrics_port is None
        with XdsClient(other.port) as c:
            c.request(LISTENER)
            c.recv()
            assert scrape(cp.cp.metrics_port)[("xds_connected_proxies", ())] == 0


def test_serve_metrics_port_flag(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "xds_server", "serve", "--config", str(SERVICES), str(ALL_V1)]
        + ["--xds-port", "0", "--admin-port", "0", "--metrics-port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
    try:
        url = None
        while url is None:
            line = lines.get(timeout=20)  # the readiness signal: serve prints its addresses
            if line.startswith("metrics on "):
                url = line.split()[-1]
        assert url.startswith("http://127.0.0.1:")
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        m = scrape(port)
        assert m[("xds_connected_proxies", ())] == 0
        assert m[("xds_config_size_bytes", (("type", "LDS"),))] > 0
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()
