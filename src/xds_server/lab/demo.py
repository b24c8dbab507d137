"""Istio's "TCP traffic shifting" task, step by step, on local processes."""

from __future__ import annotations

import contextlib
import io
import math
import shlex
import time
from pathlib import Path

from .. import xdsctl
from ..admin.client import AdminError
from ..config.errors import ConfigError
from ..translate.options import SplitMode
from . import traffic
from .lab import HOST, SAMPLES, Lab, LabError
from .pieces import nc_loop, program, shown_path

DEFAULT_ADMIN = "127.0.0.1:18001"  # xdsctl's default --server


class StepFailed(RuntimeError):
    pass


class Steps:
    """Numbered progress lines with timings, so a reader can follow the demo live."""

    def __init__(self, total: int) -> None:
        self.total, self.n = total, 0
        self.started = time.perf_counter()

    def step(self, title: str) -> None:
        self.n += 1
        print(f"\n==> [{self.n}/{self.total}] {title}", flush=True)

    @staticmethod
    def say(text: str) -> None:
        print(f"    {text}", flush=True)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


def _xdsctl(lab: Lab, *args: str) -> None:
    """Run the real CLI against the lab's server and show it as typed in a shell: with
    ``--server`` when the admin API is not on xdsctl's default port, so that the line
    works as printed."""
    shown = [shown_path(a) if Path(a).is_absolute() else a for a in args]
    server = [] if lab.admin_target == DEFAULT_ADMIN else ["--server", lab.admin_target]
    Steps.say("$ " + shlex.join([program("xdsctl"), *server, *shown]))
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = xdsctl.main(["--server", lab.admin_target, *args])
    for line in out.getvalue().splitlines():
        Steps.say(line)
    if code != 0:
        raise StepFailed(f"xdsctl {' '.join(shown)} exited with {code}")


def _apply(lab: Lab, name: str) -> None:
    started = time.perf_counter()
    _xdsctl(lab, "apply", "-f", str(SAMPLES / name))
    lab.wait_synced()
    took = (time.perf_counter() - started) * 1000
    Steps.say(f"(applied, pushed and ACKed by Envoy {took:.1f} ms after the command started)")


def _send(lab: Lab, count: int, hold: float, *, nc: bool) -> list[str]:
    """The task's nc loop (in a spelling that ends with Debian's netcats), or the same
    traffic as ``xds-server traffic -v``; either way what is printed is what ran."""
    if nc:
        Steps.say("$ " + nc_loop(count, HOST, lab.ingress_port, hold))
    else:
        flags = f" --hold {hold:g}" if hold else ""
        Steps.say(
            f"$ {program('xds-server')} traffic {HOST}:{lab.ingress_port} -n {count}{flags} -v"
        )
    replies = []
    for reply in lab.send(count, hold):
        print(f"    {reply}", flush=True)
        replies.append(reply)
    return replies


def binomial_bounds(n: int, p: float, sigmas: float = 4.0) -> tuple[float, float]:
    """Range a count of Binomial(n, p) stays in unless something is wrong."""
    sd = math.sqrt(n * p * (1 - p))
    return n * p - sigmas * sd, n * p + sigmas * sd


def run_demo(
    *,
    ingress_port: int | None = None,
    xds_port: int | None = None,
    admin_port: int | None = None,
    admin_api_port: int | None = None,
    connections: int = 20,
    hold: float = 0.0,
    split: SplitMode = "locality",
    keep: bool = False,
) -> int:
    """Run the task; returns the exit code (0 when every step did what the task says)."""
    steps = Steps(5)
    steps.step("Starting tcp-echo v1 and v2, the control plane and Envoy")
    lab = Lab(
        ingress_port=ingress_port,
        xds_port=xds_port,
        admin_port=admin_port,
        admin_api_port=admin_api_port,
        split=split,
        server="process",
        progress=Steps.say,
        echo_ports="samples",
        xdsctl=lambda lab, args: _xdsctl(lab, *args),
    )
    try:
        lab.start()
        Steps.say(f"ingress: {HOST}:{lab.ingress_port} (Gateway port 31400)")

        steps.step("Routing all TCP traffic to tcp-echo v1")
        _apply(lab, "tcp-echo-all-v1.yaml")
        replies = _send(lab, connections, hold, nc=True)
        wrong = [r for r in replies if traffic.version_of(r) != "one"]
        if wrong:
            raise StepFailed(f"{len(wrong)} of {len(replies)} replies did not come from v1")

        steps.step("Shifting 20% of TCP traffic to tcp-echo v2")
        _apply(lab, "tcp-echo-20-v2.yaml")
        _xdsctl(lab, "get", "virtualservice", "tcp-echo", "-o", "yaml")

        steps.step(f"Sending {connections} connections after the shift")
        replies = _send(lab, connections, hold, nc=False)
        counts = traffic.split(replies)
        print()
        for line in traffic.format_split_table(counts).splitlines():
            Steps.say(line)
        low, high = binomial_bounds(len(replies), 0.2)
        two = counts.get("two", 0)
        if set(counts) - {"one", "two"} or not low <= two <= high:
            raise StepFailed(f"v2 got {two} of {len(replies)} connections, expected about 20%")

        steps.step("Done")
        Steps.say(f"the task ran in {steps.elapsed():.1f} s")
        if keep:
            Steps.say(
                f"the lab keeps running: {program('xds-server')} traffic "
                f"{HOST}:{lab.ingress_port}, or {nc_loop(1, HOST, lab.ingress_port)}; "
                "Ctrl-C to stop"
            )
            while True:
                time.sleep(3600)
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted: cleaning up", flush=True)
        return 130
    except (StepFailed, LabError, ConfigError, AdminError, TimeoutError, OSError) as e:
        print(f"\nerror: {e}", flush=True)
        return 1
    finally:
        lab.stop()
        Steps.say("stopped every process the demo started")
