"""The benchmark harness still runs: ``--quick`` (tiny sizes) produces every figure. No
time is asserted; the numbers are for ``make bench`` to print, not for the tests."""

from __future__ import annotations

import json
import math
import subprocess
import sys

EXPECTED = [
    "push_ack_ms_p50",
    "push_ack_ms_p99",
    "push_traffic_ms_p50",
    "file_xds_ms_p50",
    "file_xds_ms_p99",
    "fanout_all_acked_ms_p50",
    "fanout_all_acked_ms_p99",
    "fanout_delta_all_acked_ms_p50",
    "fanout_delta_all_acked_ms_p99",
    "server_rss_per_stream_kib",
    "fanout_big_all_acked_ms_p99",
    "fanout_big_delta_all_acked_ms_p99",
    "fanout_big_services",
    "translate_serialize_ms",
    "envoy_ack_10k_s",
    "one_weight_envoy_ack_ms",
    "one_weight_change_ms",
    "state_first_apply_s",
    "store_one_weight_ms",
    "state_restart_s",
    "one_weight_repacked",
    "one_weight_delta_bytes",
    "one_weight_sotw_bytes",
    "churn_changes_per_s",
    "churn_pushes_per_change",
    "churn_last_wins",
    "stall_max_ms",
    "stall_xds_max_ms",
    "stall_admin_max_ms",
    "stall_apply_ms",
    "stall_xds_probes",
    "stall_admin_probes",
    "replica_lag_ms_p99",
    "replica_local_ms_p99",
    "failover_s",
    "failover_failed",
]


def _numbers(value):
    return list(value.values()) if isinstance(value, dict) else [value]


def test_quick_bench_produces_every_figure(tmp_path):
    out = tmp_path / "latest.json"
    proc = subprocess.run(
        [sys.executable, "-m", "xds_server.bench", "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    results = json.loads(out.read_text())
    for key in EXPECTED:
        assert key in results, key
        values = _numbers(results[key])
        assert values, key
        for v in values:
            assert isinstance(v, int | float) and not math.isnan(v), (key, v)
    assert len(results["fanout_all_acked_ms_p99"]) == 2  # one per N
    assert set(results["store_one_weight_ms"]) >= {"sqlite", "etcd"}  # one per store
    # Not a time: no connection through Envoy failed while its replica was killed.
    assert results["failover_connections"] > 0 and results["failover_failed"] == 0
    # Not a time: a one-weight change re-serializes exactly one resource at any size.
    assert results["one_weight_repacked"] == 1
    # Both probes answered while the apply ran (not a time: that they were answered at all).
    assert results["stall_xds_probes"] > 0 and results["stall_admin_probes"] > 0
    assert "figure" in proc.stdout and "push_ack_ms_p99" in proc.stdout
