"""Scenario 3, config size: S services with two subsets each (a ServiceEntry, a
DestinationRule and a VirtualService each, one Gateway), timed from parsed resources to
serialized snapshot: validate + translate + snapshot + serialize (``ControlPlane.apply`` on
a fresh control plane, no proxy connected). Then, on the largest config: what one weight
change costs, re-serializes and sends, how long a real Envoy takes to ACK the whole config,
and how long it then takes to ACK one weight changed; and the same apply, change and a
restart with a state directory."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2

from ..config.load import load_text
from ..config.model import Resource
from ..controlplane import ControlPlane
from ..lab.envoy import EnvoyProcess
from ..lab.lab import INGRESS_LABELS
from ..translate import ENDPOINT, PUSH_ORDER, TranslateOptions
from ..xds.status import ProxyStatus
from ..xds.stream import Stream
from .common import BASE_PORT, HOST, config_yaml, route_yaml
from .stats import Figures, median, p99


def _options(services: int) -> TranslateOptions:
    # Every listener on a port of Envoy's choosing: S fixed ports may not all be free.
    port_map = {BASE_PORT + i: 0 for i in range(services)}
    return TranslateOptions(listener_address=HOST, port_map=port_map)


def run(sizes: list[int], trials: int, say: Callable[[str], None] = print) -> Figures:
    serialize: dict[str, float] = {}  # by S
    serialize_p99: dict[str, float] = {}
    out: Figures = {
        "translate_serialize_ms": serialize,
        "translate_serialize_ms_p99": serialize_p99,
    }
    largest = max(sizes)
    for size in sizes:
        resources = load_text(config_yaml(size), "<bench>")  # parsing is not measured
        samples = []
        for _ in range(trials if size < 10000 else max(2, trials // 2)):
            cp = ControlPlane(options=_options(size))
            started = time.perf_counter()
            cp.apply(resources)
            samples.append(time.perf_counter() - started)
        serialize[str(size)] = median(samples) * 1000
        serialize_p99[str(size)] = p99(samples) * 1000
        say(f"config size S={size}: {median(samples) * 1000:.1f} ms")
        if size == largest:
            out.update(_one_weight(cp, size, max(3, trials)))
            out.update(_envoy_ack(resources, size, trials))
            out["envoy_ack_services"] = size
            say(f"config size S={size}: Envoy ACKed all in {out['envoy_ack_10k_s']:.2f} s")
            ms = out["one_weight_envoy_ack_ms"]
            say(f"config size S={size}: one weight changed, Envoy ACKed it in {ms:.1f} ms")
            # One weight on a store: the median of 20, since the first ones after the whole
            # config was written meet the store still settling it (etcd's backend commit).
            first, one, restart = _stores(resources, size, max(20, trials))
            out.update(state_first_apply_s=first, store_one_weight_ms=one, state_restart_s=restart)
            for name, ms in one.items():
                say(
                    f"config size S={size}: on {name}, first apply {first[name]:.1f} s, "
                    f"one weight {ms:.1f} ms, restart {restart[name]:.2f} s"
                )
    return out


def _one_weight(cp: ControlPlane, size: int, trials: int) -> dict[str, float]:
    """One weight of one service changed, ``trials`` times: the time of each apply, and for
    the last one what is re-packed and what a push carries, as the server's own stream code
    answers a synced SotW and a synced Delta proxy."""
    samples = []
    for i in range(trials):
        last = i == trials - 1
        if last:
            before = {t: dict(cp.cache.snapshot(t).entries) for t in PUSH_ORDER}
            proxies = [_synced_stream(cp, delta) for delta in (False, True)]
        change = load_text(route_yaml(0, 30 + i), "<bench>")
        started = time.perf_counter()
        cp.apply(change)
        samples.append(time.perf_counter() - started)
    repacked = sum(
        1
        for t in PUSH_ORDER
        for n, e in cp.cache.snapshot(t).entries.items()
        if before[t].get(n) is not e
    )
    sotw, delta = (sum(r.ByteSize() for r in s.responses()) for s in proxies)
    for s in proxies:
        s.close()
    return {
        "one_weight_change_ms": median(samples) * 1000,
        "one_weight_repacked": repacked,  # resources serialized and packed again
        "one_weight_delta_bytes": delta,  # the responses' bytes, envelopes included
        "one_weight_sotw_bytes": sotw,
    }


ETCD_REQUEST_BYTES = 64 * 1024 * 1024  # a first apply of 10k services is ~15 MiB


def _durable(
    resources: list[Resource], size: int, trials: int, store: dict[str, str]
) -> tuple[float, float, float]:
    """A control plane on a durable store (``store``: ControlPlane's keywords for it, an
    empty one): the first apply (every row written), one weight changed (one row, committed
    before the push: ``trials`` times, the median), and a restart in a new process (the
    rows read, the state restored: see restart.py). Seconds, milliseconds, seconds."""
    cp = ControlPlane(options=_options(size), **store)  # type: ignore[arg-type]
    cp.load_state()
    started = time.perf_counter()
    cp.apply(resources)
    first = time.perf_counter() - started
    samples = []
    for i in range(trials):
        change = load_text(route_yaml(0, 30 + i), "<bench>")
        started = time.perf_counter()
        cp.apply(change)
        samples.append(time.perf_counter() - started)
    assert cp.state is not None
    cp.state.close()  # a store has one server at a time
    flag, value = next(iter(store.items()))
    restart = _in_new_process(size, f"--{flag.replace('_', '-')}", value, len(resources))
    return first, median(samples) * 1000, restart


def _in_new_process(size: int, *args: str | int) -> float:
    """restart.py's seconds; the last arg: how many resources it must end up holding."""
    *flags, want = args
    out = subprocess.run(
        [sys.executable, "-m", "xds_server.bench.restart", "--size", str(size), *map(str, flags)],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    result = json.loads(out.stdout)
    assert result["resources"] == want, result
    return float(result["seconds"])


def _stores(
    resources: list[Resource], size: int, trials: int
) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    """``_durable`` on each store, by name: SQLite in a state directory, and a real etcd
    (one member, local; its limits raised for a first apply of the whole config in one
    transaction) when the ``etcd`` binary is there. ``restart["fresh"]``: the fresh
    translation in a new process, the restarts' baseline."""
    first: dict[str, float] = {}
    one: dict[str, float] = {}
    restart: dict[str, float] = {"fresh": _in_new_process(size, "--fresh", len(resources))}
    with tempfile.TemporaryDirectory() as path:
        figures = _durable(resources, size, trials, {"state_dir": path})
        first["sqlite"], one["sqlite"], restart["sqlite"] = figures
    if shutil.which("etcd") is None:
        return first, one, restart
    from ..testing.etcd import EtcdCluster

    flags = ("--max-txn-ops=1000000", f"--max-request-bytes={ETCD_REQUEST_BYTES}")
    with EtcdCluster(1, flags=flags) as etcd:
        url = etcd.url("/bench")
        figures = _durable(resources, size, trials, {"store": url})
        first["etcd"], one["etcd"], restart["etcd"] = figures
    return first, one, restart


def _synced_stream(cp: ControlPlane, delta: bool) -> Stream:
    """A stream (no network) that asked for everything like Envoy and ACKed it."""
    stream = Stream(cp.cache, ProxyStatus(stream_id=0, peer="bench"), delta=delta)
    node = base_pb2.Node(id="bench")
    for type_url in PUSH_ORDER:
        names = sorted(cp.cache.snapshot(ENDPOINT).entries) if type_url == ENDPOINT else []
        if delta:
            stream.on_request(
                discovery_pb2.DeltaDiscoveryRequest(
                    node=node, type_url=type_url, resource_names_subscribe=names
                )
            )
        else:
            stream.on_request(
                discovery_pb2.DiscoveryRequest(node=node, type_url=type_url, resource_names=names)
            )
        # A stream's responses are typed as Message: these are the discovery responses.
        response: discovery_pb2.DiscoveryResponse  # or a DeltaDiscoveryResponse
        for response in stream.responses():
            if delta:
                ack = discovery_pb2.DeltaDiscoveryRequest(
                    type_url=response.type_url, response_nonce=response.nonce
                )
            else:
                ack = discovery_pb2.DiscoveryRequest(
                    type_url=response.type_url,
                    version_info=response.version_info,
                    response_nonce=response.nonce,
                    resource_names=names if response.type_url == ENDPOINT else [],
                )
            stream.on_request(ack)
    return stream


def _envoy_ack(resources: list[Resource], size: int, trials: int) -> dict[str, float]:
    """Spawn -> every listener, cluster and endpoint ACKed, on a real Envoy (ADS SotW);
    then one weight changed at a time -> Envoy ACKed it (apply, validate, translate, push
    and Envoy's own work, with the whole config in place)."""
    cp = ControlPlane.start_in_thread(options=_options(size))
    try:
        cp.apply(resources)
        started = time.perf_counter()
        with EnvoyProcess(cp.port, labels=INGRESS_LABELS, startup_timeout=120):
            cp.wait_synced(timeout=300)
            spawn = time.perf_counter() - started
            samples = []
            for i in range(max(3, trials)):
                change = load_text(route_yaml(i % size, 30 + i), "<bench>")
                started = time.perf_counter()
                cp.apply(change)
                cp.wait_synced(timeout=60)
                samples.append(time.perf_counter() - started)
    finally:
        cp.stop()
    return {"envoy_ack_10k_s": spawn, "one_weight_envoy_ack_ms": median(samples) * 1000}
