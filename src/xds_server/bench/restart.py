"""A restart as a user has one: a new process. ``python -m xds_server.bench.restart --size S
(--state-dir DIR | --store URL | --fresh)`` prints, as JSON, the seconds that process
takes to load its state (``ControlPlane.load_state``, as ``start`` does), or with
``--fresh`` to translate the same S-service config applied afresh: the baseline, measured
the same way. In the benchmark's own process the figures would carry the heap that the
scenarios before left behind (unpickling 30k resources there took three times as long as
in a new process)."""

from __future__ import annotations

import argparse
import json
import time

from ..config.load import load_text
from ..controlplane import ControlPlane
from .common import config_yaml
from .config_size import _options


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xds_server.bench.restart")
    parser.add_argument("--size", type=int, required=True)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--state-dir")
    where.add_argument("--store")
    where.add_argument("--fresh", action="store_true")
    args = parser.parse_args(argv)
    options = _options(args.size)
    if args.fresh:
        resources = load_text(config_yaml(args.size), "<bench>")  # parsing is not timed
        cp = ControlPlane(options=options)
        started = time.perf_counter()
        cp.apply(resources)
    else:
        cp = ControlPlane(options=options, state_dir=args.state_dir, store=args.store)
        started = time.perf_counter()
        cp.load_state()
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "resources": len(cp.store.resources())}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
