"""``xdsctl``: kubectl's habits against a running control plane (``xds-server serve``).

Output follows kubectl: tables with upper-case headers, ``-o yaml|json|wide``, one line per
changed resource, errors on stderr and exit code 1. No colours are ever printed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import yaml

from .admin.client import DEFAULT_ADMIN, AdminClient, AdminError, ServerUnavailable
from .admin.v1 import admin_pb2
from .config.model import DEFAULT_NAMESPACE, PLURALS, resource_type
from .text import age, format_table
from .translate import CLUSTER, ENDPOINT, LISTENER
from .xds.status import ProxyRow
from .xds.status import format_proxy_status as status_table

SERVER_ENV = "XDSCTL_SERVER"

SHORT_KIND_NAMES = {
    "VirtualService": "vs",
    "DestinationRule": "dr",
    "Gateway": "gw",
    "ServiceEntry": "se",
    "WorkloadEntry": "we",
}
# kubectl accepts the short name, singular, plural and fully qualified type.
ALIASES = {
    alias: kind
    for kind, short in SHORT_KIND_NAMES.items()
    for alias in (short, kind.lower(), PLURALS[kind], resource_type(kind))
}
PROXY_CONFIG_TYPES = {"listeners": LISTENER, "clusters": CLUSTER, "endpoints": ENDPOINT}


class UsageError(Exception):
    pass


def resolve_kind(text: str) -> str:
    kind = ALIASES.get(text.lower())
    if kind is None:
        known = ", ".join(f"{k.lower()} ({s})" for k, s in SHORT_KIND_NAMES.items())
        raise UsageError(f'the server doesn\'t have a resource type "{text}" (known: {known})')
    return kind


# --- reading input -------------------------------------------------------------------------


def read_inputs(paths: Sequence[str]) -> list[tuple[str, str]]:
    """(name, text) for each file; a directory means its *.yaml, *.yml and *.json files."""
    out = []
    for p in paths:
        if p == "-":
            data = sys.stdin.buffer.read()
            try:
                out.append(("<stdin>", data.decode("utf-8")))
            except UnicodeDecodeError as e:
                raise UsageError(f"cannot read <stdin>: {e}") from None
            continue
        path = Path(p)
        if path.is_dir():
            files = sorted(f for f in path.iterdir() if f.suffix in (".yaml", ".yml", ".json"))
            if not files:
                raise UsageError(f'no .yaml, .yml or .json files in directory "{p}"')
        elif path.exists():
            files = [path]
        else:
            raise UsageError(f'the path "{p}" does not exist')
        for f in files:
            try:
                out.append((str(f), f.read_text(encoding="utf-8")))
            except (OSError, UnicodeDecodeError) as e:
                raise UsageError(f'cannot read "{f}": {e}') from None
    return out


# --- output --------------------------------------------------------------------------------


def age_of(timestamp: str) -> str:
    """kubectl's AGE of an RFC 3339 creationTimestamp."""
    if not timestamp:
        return "<unknown>"
    then = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return age(then.timestamp())


def _columns(kind: str, doc: dict) -> list[str]:
    spec = doc.get("spec") or {}
    if kind == "VirtualService":
        return [json.dumps(spec.get("gateways", [])), json.dumps(spec.get("hosts", []))]
    if kind == "DestinationRule":
        return [spec.get("host", "")]
    if kind == "ServiceEntry":
        return [
            json.dumps(spec.get("hosts", [])),
            spec.get("location", ""),
            spec.get("resolution", ""),
        ]
    if kind == "WorkloadEntry":
        return [spec.get("address", "")]
    return []


KIND_HEADERS = {
    "VirtualService": ["GATEWAYS", "HOSTS"],
    "DestinationRule": ["HOST"],
    "Gateway": [],
    "ServiceEntry": ["HOSTS", "LOCATION", "RESOLUTION"],
    "WorkloadEntry": ["ADDRESS"],
}


def format_resources(resources: Sequence[admin_pb2.Resource], output: str, wide_ns: bool) -> str:
    docs = [json.loads(r.json) for r in resources]
    if output in ("yaml", "json"):
        data = docs[0] if len(docs) == 1 else {"apiVersion": "v1", "kind": "List", "items": docs}
        if output == "json":
            return json.dumps(data, indent=2)
        return yaml.safe_dump(data, sort_keys=False).rstrip()
    blocks = []
    for kind in KIND_HEADERS:
        rows = []
        for r, doc in zip(resources, docs, strict=True):
            if r.ref.kind != kind:
                continue
            row = [r.ref.name, *_columns(kind, doc), age_of(r.creation_timestamp)]
            if wide_ns:
                row.insert(0, r.ref.namespace)
            if output == "wide":
                row += [str(r.generation), str(r.resource_version)]
            rows.append(row)
        if rows:
            headers = ["NAME", *KIND_HEADERS[kind], "AGE"]
            if wide_ns:
                headers.insert(0, "NAMESPACE")
            if output == "wide":
                headers += ["GENERATION", "RESOURCE-VERSION"]
            multi = len({r.ref.kind for r in resources}) > 1
            if multi:  # like `kubectl get all`: name the kind in front of each name
                for row in rows:
                    row[1 if wide_ns else 0] = f"{resource_type(kind)}/{row[1 if wide_ns else 0]}"
            blocks.append(format_table(headers, rows))
    return "\n\n".join(blocks)


def format_proxy_status(response: admin_pb2.ProxyStatusResponse) -> str:
    """``istioctl proxy-status``, from the admin API's answer."""
    rows = [
        ProxyRow(
            name=p.node_id,
            cluster=p.node_cluster,
            states={t.type_url: t.state for t in p.types},
            errors={t.type_url: t.error for t in p.types if t.error},
            api=p.api,
            version=p.version,
            connected_since=p.connected_since or None,
        )
        for p in response.proxies
    ]
    return status_table(rows)


def _summary(type_url: str, res: dict) -> list[str]:
    if type_url == LISTENER:
        addr = res.get("address", {}).get("socket_address", {})
        chains = res.get("filter_chains", [])
        proxy = chains[0]["filters"][0].get("typed_config", {}) if chains else {}
        dest = proxy.get("cluster") or ", ".join(
            f"{c['name']}:{c.get('weight', 0)}"
            for c in proxy.get("weighted_clusters", {}).get("clusters", [])
        )
        return [addr.get("address", ""), str(addr.get("port_value", "")), dest]
    if type_url == CLUSTER:
        return [res.get("type", "STATIC"), res.get("connect_timeout", "")]
    rows = []
    for loc in res.get("endpoints", []):
        where = "/".join(v for v in loc.get("locality", {}).values())
        weight = str(loc.get("load_balancing_weight", ""))
        eps = [
            "{address}:{port_value}".format(**e["endpoint"]["address"]["socket_address"])
            for e in loc.get("lb_endpoints", [])
        ]
        rows.append(f"{where or '-'} weight={weight or '-'} [{', '.join(eps)}]")
    return ["; ".join(rows)]


PROXY_CONFIG_HEADERS = {
    LISTENER: ["NAME", "ADDRESS", "PORT", "DESTINATION"],
    CLUSTER: ["NAME", "TYPE", "CONNECT-TIMEOUT"],
    ENDPOINT: ["CLUSTER", "LOCALITIES"],
}


def format_proxy_config(response: admin_pb2.ProxyConfigResponse, output: str) -> str:
    resources = [json.loads(j) for j in response.json]
    if output == "json":
        return json.dumps(resources, indent=2)
    if output == "yaml":
        return yaml.safe_dump(resources, sort_keys=False).rstrip()
    rows = [
        [name, *_summary(response.type_url, res)]
        for name, res in zip(response.names, resources, strict=True)
    ]
    return format_table(PROXY_CONFIG_HEADERS[response.type_url], rows)


# --- commands ------------------------------------------------------------------------------


def cmd_apply(client: AdminClient, args: argparse.Namespace) -> int:
    response = client.apply(read_inputs(args.filename), dry_run=args.dry_run)
    suffix = " (dry run)" if args.dry_run else ""
    for c in response.changes:
        print(f"{c.ref.kind.lower()}.networking.istio.io/{c.ref.name} {c.action}{suffix}")
    return 0


def cmd_get(client: AdminClient, args: argparse.Namespace) -> int:
    kinds = [resolve_kind(k) for k in args.kind.split(",")]
    namespace = "" if args.all_namespaces else args.namespace
    found: list[admin_pb2.Resource] = []
    for kind in kinds:
        found += client.get(kind, args.name or "", namespace).resources
    if not found:
        where = "any namespace" if args.all_namespaces else f"{args.namespace} namespace"
        print(f"No resources found in {where}.", file=sys.stderr)
        return 0
    print(format_resources(found, args.output or "", args.all_namespaces))
    return 0


def cmd_delete(client: AdminClient, args: argparse.Namespace) -> int:
    if args.filename and args.kind:
        raise UsageError("give either -f FILE or KIND NAME, not both")
    refs = []
    if args.kind:
        if not args.names:
            raise UsageError("resource(s) were provided, but no name was specified")
        kind = resolve_kind(args.kind)
        refs = [(kind, args.namespace, n) for n in args.names]
    elif not args.filename:
        raise UsageError("give -f FILE or KIND NAME")
    documents = read_inputs(args.filename) if args.filename else []
    response = client.delete(documents, refs, ignore_not_found=args.ignore_not_found)
    for c in response.changes:
        print(f"{c.ref.kind.lower()}.networking.istio.io/{c.ref.name} deleted")
    return 0


def cmd_proxy_status(client: AdminClient, args: argparse.Namespace) -> int:
    print(format_proxy_status(client.proxy_status()))
    return 0


def cmd_proxy_config(client: AdminClient, args: argparse.Namespace) -> int:
    response = client.proxy_config(args.node, PROXY_CONFIG_TYPES[args.type])
    print(format_proxy_config(response, args.output or ""))
    return 0


# --- parser --------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xdsctl",
        description="Manage the config of a running xds-server, the way kubectl and istioctl "
        "manage a cluster.",
        epilog=f"The server address comes from --server, else ${SERVER_ENV}, else {DEFAULT_ADMIN}.",
    )
    parser.add_argument(
        "--server",
        "-s",
        default=os.environ.get(SERVER_ENV, DEFAULT_ADMIN),
        metavar="HOST:PORT",
        help=f"admin API address (default: ${SERVER_ENV} or {DEFAULT_ADMIN})",
    )
    parser.add_argument(
        "--request-timeout", type=float, default=10.0, metavar="S", help="seconds (default 10)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def ns(p: argparse.ArgumentParser) -> None:
        p.add_argument("-n", "--namespace", default=DEFAULT_NAMESPACE, help="default: default")

    kinds = ", ".join(f"{k.lower()} ({s})" for k, s in SHORT_KIND_NAMES.items())

    p = sub.add_parser("apply", help="create or update resources from files (all or none)")
    p.add_argument(
        "-f",
        "--filename",
        action="append",
        required=True,
        metavar="FILE|DIR|-",
        help="YAML file, directory of them, or - for stdin (repeatable)",
    )
    p.add_argument("--dry-run", action="store_true", help="validate and report, change nothing")
    p.set_defaults(run=cmd_apply)

    p = sub.add_parser("get", help="show one resource or a list", description=f"Kinds: {kinds}.")
    p.add_argument("kind", metavar="KIND", help="e.g. vs, virtualservice, dr,gw (comma list)")
    p.add_argument("name", nargs="?", metavar="NAME")
    p.add_argument("-o", "--output", choices=("yaml", "json", "wide"))
    p.add_argument("-A", "--all-namespaces", action="store_true")
    ns(p)
    p.set_defaults(run=cmd_get)

    p = sub.add_parser(
        "delete", help="delete what files name, or KIND NAME...", description=f"Kinds: {kinds}."
    )
    p.add_argument("kind", nargs="?", metavar="KIND")
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument("-f", "--filename", action="append", metavar="FILE|DIR|-")
    p.add_argument("--ignore-not-found", action="store_true")
    ns(p)
    p.set_defaults(run=cmd_delete)

    p = sub.add_parser("proxy-status", help="sync state of every connected proxy (istioctl)")
    p.set_defaults(run=cmd_proxy_status)

    p = sub.add_parser(
        "proxy-config", help="what the control plane sends one proxy (istioctl proxy-config)"
    )
    p.add_argument("type", choices=sorted(PROXY_CONFIG_TYPES))
    p.add_argument("node", metavar="NODE", help="the proxy's node id (see proxy-status)")
    p.add_argument("-o", "--output", choices=("json", "yaml"))
    p.set_defaults(run=cmd_proxy_config)
    return parser


ERROR_LABELS = {
    "ABORTED": "Conflict",
    "NOT_FOUND": "NotFound",
    "INVALID_ARGUMENT": "Invalid",
    "FAILED_PRECONDITION": "Forbidden",
    "RESOURCE_EXHAUSTED": "RequestEntityTooLarge",
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run: Callable[[AdminClient, argparse.Namespace], int] = args.run
    try:
        with AdminClient(args.server, timeout=args.request_timeout) as client:
            return run(client, args)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except ServerUnavailable as e:
        print(
            f"error: {e}: is it running? Start one with `xds-server serve --state-dir DIR` "
            f"(or point --server/${SERVER_ENV} at it)",
            file=sys.stderr,
        )
        return 1
    except AdminError as e:
        label = ERROR_LABELS.get(e.code.name, e.code.name)
        prefix = "error: " if label == "Invalid" else f"Error from server ({label}): "
        for line in e.lines():
            print(prefix + line, file=sys.stderr)
        return 1
    except BrokenPipeError:  # `xdsctl get ... | head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
