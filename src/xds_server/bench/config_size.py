"""Scenario 3, config size: S services with two subsets each (a ServiceEntry, a
DestinationRule and a VirtualService each, one Gateway), timed from parsed resources to
serialized snapshot: validate + translate + snapshot + serialize (``ControlPlane.apply`` on
a fresh control plane, no proxy connected). Then, on the largest config: what one weight
change re-serializes and sends, and how long a real Envoy takes to ACK the whole config."""

from __future__ import annotations

import time

from ..config.load import load_text
from ..controlplane import ControlPlane
from ..lab.envoy import EnvoyProcess
from ..lab.lab import INGRESS_LABELS
from ..translate import PUSH_ORDER, TranslateOptions
from .common import BASE_PORT, HOST, config_yaml, route_yaml
from .stats import median, p99


def _options(services: int) -> TranslateOptions:
    # Every listener on a port of Envoy's choosing: S fixed ports may not all be free.
    port_map = {BASE_PORT + i: 0 for i in range(services)}
    return TranslateOptions(listener_address=HOST, port_map=port_map)


def run(sizes: list[int], trials: int, say=print) -> dict:
    out: dict = {"translate_serialize_ms": {}, "translate_serialize_ms_p99": {}}
    largest = max(sizes)
    for size in sizes:
        resources = load_text(config_yaml(size), "<bench>")  # parsing is not measured
        samples = []
        for _ in range(trials if size < 10000 else max(2, trials // 2)):
            cp = ControlPlane(options=_options(size))
            started = time.perf_counter()
            cp.apply(resources)
            samples.append(time.perf_counter() - started)
        out["translate_serialize_ms"][str(size)] = median(samples) * 1000
        out["translate_serialize_ms_p99"][str(size)] = p99(samples) * 1000
        say(f"config size S={size}: {median(samples) * 1000:.1f} ms")
        if size == largest:
            out.update(_one_weight(cp, size))
            out["envoy_ack_10k_s"] = _envoy_ack(resources, size)
            out["envoy_ack_services"] = size
            say(f"config size S={size}: Envoy ACKed all in {out['envoy_ack_10k_s']:.2f} s")
    return out


def _one_weight(cp: ControlPlane, size: int) -> dict:
    """One weight of one service changed: what is re-packed, and what a push carries."""
    before = {t: dict(cp.cache.snapshot(t).entries) for t in PUSH_ORDER}
    change = load_text(route_yaml(0, 30), "<bench>")
    started = time.perf_counter()
    cp.apply(change)
    elapsed = time.perf_counter() - started
    delta = sotw = repacked = 0
    for t in PUSH_ORDER:
        after = cp.cache.snapshot(t).entries
        changed = [e for n, e in after.items() if before[t].get(n) is not e]
        repacked += len(changed)
        delta += sum(len(e.any.value) for e in changed)
        if changed:  # SotW resends every resource of a changed type
            sotw += sum(len(e.any.value) for e in after.values())
    return {
        "one_weight_change_ms": elapsed * 1000,
        "one_weight_repacked": repacked,  # resources serialized and packed again
        "one_weight_delta_bytes": delta,
        "one_weight_sotw_bytes": sotw,
    }


def _envoy_ack(resources, size: int) -> float:
    """Spawn -> every listener, cluster and endpoint ACKed, on a real Envoy (ADS SotW)."""
    cp = ControlPlane.start_in_thread(options=_options(size))
    try:
        cp.apply(resources)
        started = time.perf_counter()
        with EnvoyProcess(cp.port, labels=INGRESS_LABELS, startup_timeout=120):
            cp.wait_synced(timeout=300)
            return time.perf_counter() - started
    finally:
        cp.stop()
