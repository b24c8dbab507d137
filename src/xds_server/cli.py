"""``xds-server``: the daemon (``serve``) and the lab (``demo``)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from .config.errors import ConfigError
from .config.load import load_paths
from .controlplane import ControlPlane, PortInUseError
from .translate import ISTIO, LOCALITY, TranslateOptions

log = logging.getLogger("xds_server")


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}: expected 0-65535")
    return int(text)


def _port_map(text: str) -> tuple[int, int]:
    gw, sep, bind = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"invalid --port-map {text!r}: expected GATEWAY=BIND")
    return _port(gw), _port(bind)


def _split_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--split",
        choices=(LOCALITY, ISTIO),
        default=LOCALITY,
        help="how weights reach Envoy: 'locality' (default) weighted EDS localities: exact "
        "split, weight changes never cut open connections; 'istio' tcp_proxy "
        "weighted_clusters like Istio: random split, a weight change drains the listener",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xds-server",
        description="A small xDS control plane: Istio-style YAML in, Envoy config out over ADS.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser(
        "serve",
        help="serve config files to Envoy over ADS, reloading them when they change",
        description="Load Istio YAML (files or directories), serve it over ADS, and reload "
        "when the files change. An invalid change is reported and the last good config "
        "keeps being served.",
    )
    serve.add_argument(
        "--config", "-c", nargs="+", required=True, metavar="PATH", help="YAML files or dirs"
    )
    serve.add_argument(
        "--xds-address", default="127.0.0.1", help="address for xDS (default: 127.0.0.1)"
    )
    serve.add_argument(
        "--xds-port", type=_port, default=18000, help="xDS port (default: 18000; 0 = any free)"
    )
    serve.add_argument(
        "--listener-address",
        default="127.0.0.1",
        help="address Envoy's gateway listeners bind (default: 127.0.0.1; 0.0.0.0 for all)",
    )
    serve.add_argument(
        "--port-map",
        type=_port_map,
        action="append",
        default=[],
        metavar="GATEWAY=BIND",
        help="bind a gateway port elsewhere on Envoy, e.g. 31400=41400 (repeatable)",
    )
    _split_flag(serve)
    serve.add_argument("--log-level", default="info", choices=("debug", "info", "warning"))

    demo = sub.add_parser(
        "demo",
        help="run Istio's TCP traffic shifting task on local processes",
        description="Start tcp-echo v1/v2, the control plane and Envoy; route 100%% to v1, "
        "then 80/20; print the replies and the split; stop everything.",
    )
    for flag, default, what in (
        ("--ingress-port", 31400, "Envoy's ingress port"),
        ("--xds-port", 18000, "the control plane's xDS port"),
        ("--admin-port", 15000, "Envoy's admin port"),
    ):
        demo.add_argument(
            flag,
            type=_port,
            help=f"{what} (default: {default}, or a free one if that is taken; 0 = any free)",
        )
    demo.add_argument(
        "--connections", "-n", type=int, default=20, help="connections per step (default 20)"
    )
    demo.add_argument(
        "--hold",
        type=float,
        default=0.0,
        help="seconds each client waits before closing, like the task's `sleep 1` (default 0)",
    )
    _split_flag(demo)
    demo.add_argument(
        "--keep", action="store_true", help="leave the lab running at the end until Ctrl-C"
    )
    return parser


async def serve(args: argparse.Namespace) -> int:
    paths = [Path(p) for p in args.config]
    try:
        resources = load_paths(paths)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    options = TranslateOptions(
        split=args.split, listener_address=args.listener_address, port_map=dict(args.port_map)
    )
    cp = ControlPlane(xds_address=args.xds_address, xds_port=args.xds_port, options=options)
    try:
        cp.replace(resources)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    try:
        await cp.start()
    except PortInUseError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"xDS listening on {args.xds_address}:{cp.port}", flush=True)
    log.info("serving %d resources from %s", len(resources), ", ".join(map(str, paths)))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    watcher = asyncio.create_task(watch(cp, paths, stop))
    await stop.wait()
    watcher.cancel()
    await cp.stop()
    return 0


async def watch(cp: ControlPlane, paths: list[Path], stop: asyncio.Event) -> None:
    """Reload on every change; the files are the source of truth, so a reload replaces the
    whole config. A bad change is logged and the last good config stays."""
    from watchfiles import awatch

    async for _changes in awatch(*paths, stop_event=stop, debounce=50, step=20):
        try:
            changes = cp.replace(load_paths(paths))
        except ConfigError as e:
            log.error(
                "rejected config change, still serving revision %d:\n%s", cp.store.revision, e
            )
            continue
        changed = [str(c) for c in changes if c.action != "unchanged"]
        log.info("reloaded revision %d: %s", cp.store.revision, "; ".join(changed) or "no change")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        logging.basicConfig(
            level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(message)s"
        )
        logging.getLogger("watchfiles").setLevel(logging.WARNING)
        try:
            return asyncio.run(serve(args))
        except KeyboardInterrupt:
            return 130
    from .lab.demo import run_demo

    logging.basicConfig(level="WARNING", format="%(levelname)s %(message)s")
    return run_demo(
        ingress_port=args.ingress_port,
        xds_port=args.xds_port,
        admin_port=args.admin_port,
        connections=args.connections,
        hold=args.hold,
        split=args.split,
        keep=args.keep,
    )


if __name__ == "__main__":
    sys.exit(main())
