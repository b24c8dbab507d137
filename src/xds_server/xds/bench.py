"""Benchmark: push -> ACK on a real Envoy in each xDS mode, and the NACK round trip.

    python -m xds_server.xds.bench [-n 40]

For each mode (ADS SotW, ADS Delta, per-type SotW, per-type Delta) it starts the lab (echo
servers, control plane, Envoy), then measures, as medians (p90) over ``n`` rounds:

- EDS push -> ACK: server side, from sending a weight change to Envoy's ACK;
- weight change, apply -> synced: validate, translate, push, ACK, as a caller of ``apply``
  sees it (YAML already parsed);
- new route, apply -> synced: a new listener with its own cluster and endpoints, i.e. the
  CDS -> EDS -> LDS sequence, each type waiting for the previous one's ACK;
- NACK round trip: a listener Envoy cannot bind, from sending it to Envoy's NACK (ADS only).

Timings, not assertions: the tests check behaviour, this prints numbers.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import time
from collections.abc import Callable

from ..config.load import load_text
from ..lab.lab import SAMPLES, Lab
from ..translate import LISTENER
from .status import NACKED

ALL_V1 = SAMPLES / "tcp-echo-all-v1.yaml"
WEIGHTS = (SAMPLES / "tcp-echo-20-v2.yaml").read_text()
ROUTE = """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: bench-gateway}}
spec:
  selector: {{istio: ingressgateway}}
  servers: [{{port: {{number: {port}, name: tcp, protocol: TCP}}, hosts: ["*"]}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: bench}}
spec:
  hosts: ["*"]
  gateways: [bench-gateway]
  tcp:
  - match: [{{port: {port}}}]
    route: [{{destination: {{host: tcp-echo, port: {{number: 9000}}, subset: v2}}}}]
"""
MODES = {
    "ADS SotW": {},
    "ADS Delta": {"api_type": "DELTA_GRPC"},
    "per-type SotW": {"ads": False},
    "per-type Delta": {"api_type": "DELTA_GRPC", "ads": False},
}


def _ms(samples: list[float]) -> str:
    if not samples:
        return "-"
    samples = sorted(samples)
    p90 = samples[min(len(samples) - 1, int(len(samples) * 0.9))]
    return f"{statistics.median(samples) * 1000:.2f} ({p90 * 1000:.2f})"


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def bench_mode(kwargs: dict, rounds: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"eds_ack": [], "weights": [], "route": [], "nack": []}
    with Lab(ingress_port=0, xds_port=0, admin_port=0, **kwargs) as lab:
        cp = lab.cp
        assert cp is not None
        lab.apply([ALL_V1])
        metrics = cp.cp.metrics
        record = metrics.acked

        def acked(kind: str, seconds: float) -> None:
            record(kind, seconds)
            if kind == "EDS":
                out["eds_ack"].append(seconds)

        metrics.acked = acked  # type: ignore[method-assign]
        # Parsed up front: YAML parsing is not what is measured.
        changes = [
            load_text(WEIGHTS.replace("80", str(100 - v2)).replace("20", str(v2)))
            for v2 in (10 + i % 80 for i in range(rounds))
        ]
        for docs in changes:
            out["weights"].append(_timed(lambda d=docs: lab.apply_resources(d)))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            free = s.getsockname()[1]  # closed again: Envoy binds it
        route = load_text(ROUTE.format(port=free))
        for _ in range(rounds):
            out["route"].append(_timed(lambda: lab.apply_resources(route)))
            cp.delete("VirtualService", "bench")
            cp.delete("Gateway", "bench-gateway")
            cp.wait_synced()
        if kwargs.get("ads", True):
            with socket.socket() as busy:
                busy.bind(("127.0.0.1", 0))
                busy.listen()
                port = busy.getsockname()[1]
                for _ in range(rounds):
                    seen: list[float] = []

                    def nacked(seen=seen) -> bool:
                        for p in cp.cp.proxies():
                            st = p.types.get(LISTENER)
                            if st and p.state(LISTENER) == NACKED and st.sent_at:
                                seen.append(time.monotonic() - st.sent_at)
                                return True
                        return False

                    lab.apply_yaml(ROUTE.format(port=port), wait=False)
                    cp._run(cp.cp.board.wait_for(nacked, 10))
                    out["nack"].append(seen[0])
                    cp.delete("VirtualService", "bench")
                    cp.delete("Gateway", "bench-gateway")
                    cp.wait_synced()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--rounds", type=int, default=40)
    args = parser.parse_args(argv)
    header = ("mode", "EDS push->ACK", "weights apply->synced", "new route", "push->NACK")
    rows = [header]
    for mode, kwargs in MODES.items():
        r = bench_mode(kwargs, args.rounds)
        rows.append((mode, _ms(r["eds_ack"]), _ms(r["weights"]), _ms(r["route"]), _ms(r["nack"])))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    print(f"median (p90) in ms over {args.rounds} rounds")
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
