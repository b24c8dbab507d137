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
from .config.persist import StateError
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
        help="how weights reach Envoy: 'locality' (default) weighted EDS localities: "
        "deterministic split (to one connection), weight changes never cut open "
        "connections; 'istio' tcp_proxy "
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
        help="serve config to Envoy over ADS (from a state dir or from files)",
        description="Serve Istio YAML to Envoy over ADS. The config lives in ONE place: "
        "either a state directory (--state-dir: `xdsctl apply` writes there atomically, it "
        "survives restarts, and hand edits of DIR/config.yaml are applied too), or files you "
        "manage yourself (--config: reloaded when they change; xdsctl can read but not "
        "write). An invalid change is reported and the last good config keeps being served.",
    )
    source = serve.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--state-dir", metavar="DIR", help="durable store that xdsctl apply/delete write to"
    )
    source.add_argument(
        "--config", "-c", nargs="+", metavar="PATH", help="YAML files or dirs (read-only)"
    )
    serve.add_argument(
        "--admin-address", default="127.0.0.1", help="address for xdsctl (default: 127.0.0.1)"
    )
    serve.add_argument(
        "--admin-port",
        type=_port,
        default=18001,
        help="admin API port for xdsctl (default: 18001; 0 = any free)",
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
    serve.add_argument(
        "--metrics-address",
        default="127.0.0.1",
        help="address for Prometheus metrics (default: 127.0.0.1)",
    )
    serve.add_argument(
        "--metrics-port",
        type=_port,
        default=None,
        help="serve Prometheus metrics on http://ADDRESS:PORT/metrics (default: off; 0 = any free)",
    )
    serve.add_argument(
        "--xds-cluster",
        default="xds_cluster",
        metavar="NAME",
        help="the bootstrap's cluster for this control plane, which clusters of a proxy "
        "without ADS name as their EDS source (default: xds_cluster, as `xds-server "
        "bootstrap` writes it); a proxy's node.metadata.xds_cluster overrides it",
    )
    serve.add_argument(
        "--log-level",
        default="info",
        choices=("debug", "info", "warning"),
        help="server log level on stderr (default: info: one line per push and ACK)",
    )

    demo = sub.add_parser(
        "demo",
        help="run Istio's TCP traffic shifting task on local processes",
        description="Start tcp-echo v1/v2, the control plane and Envoy; route 100% to v1, "
        "then 80/20; print the replies and the split; stop everything. As in every "
        "command, --admin-port is the control plane's admin API (xdsctl's), "
        "--envoy-admin-port Envoy's.",
    )
    for flag, default, what in (
        ("--ingress-port", 31400, "Envoy's ingress port"),
        ("--xds-port", 18000, "the control plane's xDS port"),
        ("--admin-port", 18001, "the control plane's admin API port (xdsctl's)"),
        ("--envoy-admin-port", 15000, "Envoy's admin port"),
    ):
        demo.add_argument(
            flag,
            type=_port,
            help=f"{what} (default: {default}, or a free one if that is taken; 0 = any free)",
        )
    demo.add_argument(
        "--connections",
        "-n",
        type=int,
        default=20,
        metavar="N",
        help="connections per step (default 20)",
    )
    demo.add_argument(
        "--hold",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="seconds each client waits before closing, like the task's `sleep 1` (default 0)",
    )
    _split_flag(demo)
    demo.add_argument(
        "--keep", action="store_true", help="leave the lab running at the end until Ctrl-C"
    )
    return parser


async def serve(args: argparse.Namespace) -> int:
    options = TranslateOptions(
        split=args.split,
        listener_address=args.listener_address,
        port_map=dict(args.port_map),
        xds_cluster=args.xds_cluster,
    )
    common = dict(
        xds_address=args.xds_address,
        xds_port=args.xds_port,
        options=options,
        admin_address=args.admin_address,
        admin_port=args.admin_port,
        metrics_address=args.metrics_address,
        metrics_port=args.metrics_port,
    )
    if args.state_dir:
        cp = ControlPlane(state_dir=args.state_dir, **common)
        paths = []
    else:
        paths = [Path(p) for p in args.config]
        cp = ControlPlane(
            read_only="config comes from files (xds-server serve --config): edit them, or "
            "run the server with --state-dir to manage config with xdsctl",
            **common,
        )
    try:
        if not args.state_dir:
            cp.replace(load_paths(paths))
        await cp.start()  # with a state dir, this loads it
    except (ConfigError, PortInUseError, StateError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # anything else the disk may say: one line, never a traceback
        where = f" ({e.filename})" if e.filename else ""
        print(f"error: {e.strerror or e}{where}", file=sys.stderr)
        return 1
    print(f"xDS listening on {args.xds_address}:{cp.port}", flush=True)
    print(f"admin API listening on {args.admin_address}:{cp.admin_port}", flush=True)
    if cp.metrics_port:
        print(f"metrics on http://{args.metrics_address}:{cp.metrics_port}/metrics", flush=True)
    source = cp.state.file if cp.state else ", ".join(map(str, paths))
    log.info("serving %d resources from %s", len(cp.store.resources()), source)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    watcher = asyncio.create_task(cp.watch(stop, paths))
    await stop.wait()
    watcher.cancel()
    await cp.stop()
    return 0


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
        admin_port=args.envoy_admin_port,
        admin_api_port=args.admin_port,
        connections=args.connections,
        hold=args.hold,
        split=args.split,
        keep=args.keep,
    )


if __name__ == "__main__":
    sys.exit(main())
