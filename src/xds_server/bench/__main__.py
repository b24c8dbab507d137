"""``python -m xds_server.bench [--quick] [--json PATH] [--only NAME...]``: run the
scenarios, print one table, write the figures as JSON (default bench/results/latest.json)."""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import re
import shutil
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TypedDict

from ..text import format_table
from . import config_size, fanout, push, replicas, stall

SCENARIOS = ("push", "fanout", "config", "churn", "stall", "replicas")


class Params(TypedDict):
    """The sizes of one run (FULL or QUICK)."""

    changes: int
    churn: int
    fanout: list[int]
    fanout_changes: int
    fanout_big: tuple[int, int]
    sizes: list[int]
    trials: int
    stall: int
    replica_changes: int
    failovers: int


FULL: Params = {"changes": 200, "churn": 1000, "fanout": [100, 1000], "fanout_changes": 20,
        "fanout_big": (100, 1000), "sizes": [100, 1000, 10000], "trials": 5,
        "stall": 10000, "replica_changes": 100, "failovers": 5}  # fmt: skip
QUICK: Params = {"changes": 4, "churn": 20, "fanout": [5, 20], "fanout_changes": 3,
         "fanout_big": (5, 20), "sizes": [10, 50], "trials": 2, "stall": 50,
         "replica_changes": 3, "failovers": 1}  # fmt: skip


def machine() -> str:
    cpu = "unknown CPU"
    try:
        found = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        cpu = found.group(1) if found else cpu
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}"


def goals(r: Mapping[str, object]) -> list[tuple[str, str, bool | None]]:
    """(goal, measured, holds); holds is None when a figure is missing."""

    def get(key: str, sub: str | None = None) -> float:
        value = r.get(key, math.nan)
        if sub is not None:
            value = value.get(sub, math.nan) if isinstance(value, dict) else math.nan
        return value if isinstance(value, int | float) else math.nan

    def check(ok: float) -> bool | None:
        return None if math.isnan(ok) else bool(ok)

    ack, base = get("push_ack_ms_p99"), get("file_xds_ms_p99")
    fan = get("fanout_all_acked_ms_p99", "1000")
    rss = get("server_rss_per_stream_kib")
    big = get("translate_serialize_ms", "10000")
    felt, file_felt = get("push_traffic_ms_p50"), get("file_traffic_ms_p50")
    # The goal is for a 10k-service apply: a smaller one (--quick) does not measure it.
    stall_ms = get("stall_max_ms") if r.get("stall_services") == 10000 else math.nan
    at_10k = r.get("envoy_ack_services") == 10000  # the store goals are for 10k services
    lag, stats = get("replica_lag_ms_p99"), get("push_stats_ms_p99")
    failover, failed = get("failover_s"), get("failover_failed")
    one = get("one_weight_change_ms") if at_10k else math.nan
    stores = [
        (name, get("store_one_weight_ms", name), get("state_restart_s", name) * 1000)
        for name in ("sqlite", "etcd")
        if isinstance(r.get("store_one_weight_ms"), dict) and name in r["store_one_weight_ms"]  # type: ignore[operator]
    ]
    fresh_ms = get("state_restart_s", "fresh") * 1000  # the same config applied afresh
    return [
        ("push ACK p99 <= 1.5 x file xDS p99", f"{ack:.2f} vs {1.5 * base:.2f} ms",
         check(math.nan if math.isnan(ack + base) else ack <= 1.5 * base)),
        ("fan-out N=1000 all ACKed p99 < 1 s", f"{fan:.0f} ms",
         check(math.nan if math.isnan(fan) else fan < 1000)),
        ("< 50 KiB server RSS per idle stream", f"{rss:.1f} KiB",
         check(math.nan if math.isnan(rss) else rss < 50)),
        ("apply -> new split p50 <= 1.5 x file xDS's", f"{felt:.2f} vs {1.5 * file_felt:.2f} ms",
         check(math.nan if math.isnan(felt + file_felt) else felt <= 1.5 * file_felt)),
        ("S=10000 translate+serialize <= 1.5 s", f"{big:.0f} ms",
         check(math.nan if math.isnan(big) else big <= 1500)),
        ("stall during 10k apply < 50 ms", f"{stall_ms:.0f} ms",
         check(math.nan if math.isnan(stall_ms) else stall_ms < 50)),
        ("replica lag p99 <= 2 x single-replica push p99", f"{lag:.2f} vs {2 * stats:.2f} ms",
         check(math.nan if math.isnan(lag + stats) else lag <= 2 * stats)),
        ("failover < 1 s, 0 failed connections", f"{failover:.2f} s, {failed:.0f} failed",
         check(math.nan if math.isnan(failover + failed) else failover < 1 and failed == 0)),
        *[row for name, ms, restart_ms in stores for row in [
            (f"one weight on {name} <= 2 x without a store", f"{ms:.2f} vs {2 * one:.2f} ms",
             check(math.nan if math.isnan(ms + one) else ms <= 2 * one)),
            (f"restart on {name} <= 1.5 x fresh translation", f"{restart_ms:.0f} vs "
             f"{1.5 * fresh_ms:.0f} ms",
             check(math.nan if math.isnan(restart_ms + fresh_ms) or not at_10k
                   else restart_ms <= 1.5 * fresh_ms)),
        ]],
    ]  # fmt: skip


def rows(r: Mapping[str, object]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for key, value in r.items():
        if isinstance(value, dict):
            out += [(f"{key}[{k}]", _fmt(v)) for k, v in value.items()]
        elif key != "machine":
            out.append((key, _fmt(value)))
    return out


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xds_server.bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (the test suite's)")
    parser.add_argument("--json", default="bench/results/latest.json", help="where to write")
    parser.add_argument("--only", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    args = parser.parse_args(argv)
    p = QUICK if args.quick else FULL

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    started = time.monotonic()
    results: dict[str, object] = {"machine": machine(), "quick": args.quick}
    if "config" in args.only:
        results.update(config_size.run(p["sizes"], p["trials"], say))
    # The load generators share this process: the garbage a scenario leaves (the config
    # scenario's 10k-service control planes) is collected now, not while clients run.
    gc.collect()
    if "fanout" in args.only:
        results.update(fanout.run(p["fanout"], p["fanout_changes"], p["fanout_big"], say))
    gc.collect()
    if "push" in args.only or "churn" in args.only:
        changes = p["changes"] if "push" in args.only else 0
        churn = p["churn"] if "churn" in args.only else 0
        results.update(push.run(changes, churn, say))
    gc.collect()
    if "stall" in args.only:
        results.update(stall.run(p["stall"], say))
    if "replicas" in args.only:
        if shutil.which("etcd") is None:
            say("replicas: skipped, no etcd binary (apt-get install etcd-server)")
        else:
            results.update(replicas.run(p["replica_changes"], p["failovers"], say))
    results["seconds"] = time.monotonic() - started
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(f"machine: {results['machine']}{'  (--quick: tiny sizes)' if args.quick else ''}")
    print(format_table(("figure", "value"), rows(results)))
    print()
    verdict = {True: "holds", False: "MISSES", None: "not measured"}
    print(
        format_table(("goal", "measured", ""), [(g, m, verdict[h]) for g, m, h in goals(results)])
    )
    print(f"\nwritten to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
