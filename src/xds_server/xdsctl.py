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
from typing import Any

import yaml

from .admin.client import DEFAULT_ADMIN, AdminClient, AdminError, ServerUnavailable
from .admin.v1 import admin_pb2
from .config.analyze import FOUND_ISSUES_EXIT, analyze, code, level, message_line
from .config.model import CORE_KINDS, DEFAULT_NAMESPACE, PLURALS, qualified_kind, resource_type
from .text import age, format_table
from .translate import CLUSTER, ENDPOINT, LISTENER
from .xds.status import ProxyRow
from .xds.status import format_proxy_status as status_table

SERVER_ENV = "XDSCTL_SERVER"

SHORT_KIND_NAMES = {
    "Service": "svc",
    "VirtualService": "vs",
    "DestinationRule": "dr",
    "Gateway": "gw",
    "ServiceEntry": "se",
    "WorkloadEntry": "we",
}
# kubectl accepts the short name, singular and plural, any case, each optionally qualified by
# the group (``virtualservice.networking.istio.io``, what apply prints) or version and group
# (``virtualservices.v1.networking.istio.io``).
ALIASES = {
    alias: kind
    for kind, short in SHORT_KIND_NAMES.items()
    for alias in (short, kind.lower(), PLURALS[kind])
}
GROUP = resource_type("VirtualService").split(".", 1)[1]  # networking.istio.io
VERSIONS = ("v1", "v1beta1", "v1alpha3")  # Istio's served versions of the group
PROXY_CONFIG_TYPES = {"listeners": LISTENER, "clusters": CLUSTER, "endpoints": ENDPOINT}
# istioctl proxy-config's extra views: every type in one go, and what the proxy said of itself.
ALL, BOOTSTRAP = "all", "bootstrap"


class UsageError(Exception):
    pass


def resolve_kind(text: str) -> str:
    resource, _, group = text.lower().partition(".")
    version, _, rest = group.partition(".")
    qualified = group in ("", GROUP) or (version in VERSIONS and rest == GROUP)
    kind = ALIASES.get(resource) if qualified else None
    if kind in CORE_KINDS and group not in ("", "v1"):  # services.v1, not in Istio's group
        kind = None
    if kind is None:
        known = ", ".join(f"{k.lower()} ({s})" for k, s in SHORT_KIND_NAMES.items())
        raise UsageError(f'the server doesn\'t have a resource type "{text}" (known: {known})')
    return kind


def resolve_targets(words: Sequence[str]) -> list[tuple[str, str | None]]:
    """kubectl's ways to name resources: ``TYPE[,TYPE...] [NAME...]`` or ``TYPE/NAME...``,
    as (kind, name) pairs; name None means every resource of the kind."""
    if not words:
        return []
    if any("/" in w for w in words):
        if not all("/" in w for w in words):
            raise UsageError(
                "there is no need to specify a resource type as a separate argument when "
                "passing arguments in resource/name form (e.g. 'xdsctl get vs/tcp-echo')"
            )
        out: list[tuple[str, str | None]] = []
        for w in words:
            kind, _, name = w.partition("/")
            if not name:
                raise UsageError(f'arguments in resource/name form must have a name: "{w}"')
            out.append((resolve_kind(kind), name))
        return out
    kinds = [resolve_kind(k) for k in words[0].split(",")]
    names: list[str | None] = list(words[1:]) or [None]
    return [(kind, name) for kind in kinds for name in names]


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


def _columns(kind: str, doc: dict[str, Any]) -> list[str]:
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
    if kind == "Service":
        ports = ",".join(
            f"{p.get('port', '')}/{p.get('protocol', 'TCP')}" for p in spec.get("ports") or []
        )
        selector = ",".join(f"{k}={v}" for k, v in (spec.get("selector") or {}).items())
        return [ports, selector or "<none>"]
    return []


KIND_HEADERS = {
    "Service": ["PORT(S)", "SELECTOR"],
    "VirtualService": ["GATEWAYS", "HOSTS"],
    "DestinationRule": ["HOST"],
    "Gateway": [],
    "ServiceEntry": ["HOSTS", "LOCATION", "RESOLUTION"],
    "WorkloadEntry": ["ADDRESS"],
}


def _dump(data: object, output: str) -> str:
    """``-o json`` as JSON (indented by 2), any other output as YAML, keys in their order."""
    if output == "json":
        return json.dumps(data, indent=2)
    return yaml.safe_dump(data, sort_keys=False).rstrip()


def format_resources(resources: Sequence[admin_pb2.Resource], output: str, wide_ns: bool) -> str:
    docs = [json.loads(r.json) for r in resources]
    if output in ("yaml", "json"):
        data = docs[0] if len(docs) == 1 else {"apiVersion": "v1", "kind": "List", "items": docs}
        return _dump(data, output)
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
    return status_table(_proxy_rows(response))


def _proxy_rows(response: admin_pb2.ProxyStatusResponse, replica: str = "") -> list[ProxyRow]:
    return [
        ProxyRow(
            peer=p.peer,  # two proxies with one node id: told apart by it
            name=p.node_id,
            cluster=p.node_cluster,
            states={t.type_url: t.state for t in p.types},
            errors={t.type_url: t.error for t in p.types if t.error},
            api=p.api,
            version=p.version,
            connected_since=p.connected_since or None,
            replica=replica,
        )
        for p in response.proxies
    ]


def every_replica_status(client: AdminClient) -> tuple[list[ProxyRow], list[str]]:
    """The proxies of every replica sharing the store (as istioctl asks every istiod), each
    row naming its replica; and a line for each replica that could not be asked."""
    response = client.proxy_status()
    if not response.replicas:  # not a shared store
        return _proxy_rows(response), []
    me, *others = response.replicas
    rows, unreachable = _proxy_rows(response, me.id), []
    for r in others:
        if not r.admin:
            unreachable.append(f"replica {r.id} (xDS {r.xds}) serves no admin API: not asked")
            continue
        try:
            with AdminClient(r.admin, timeout=REPLICA_TIMEOUT_S) as other:
                rows += _proxy_rows(other.proxy_status(), r.id)
        except AdminError as e:
            unreachable.append(f"replica {r.id} ({r.admin}): {e}")
    return rows, unreachable


def _summary(type_url: str, res: dict[str, Any]) -> list[str]:
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
    if output in ("json", "yaml"):
        return _dump(resources, output)
    rows = [
        [name, *_summary(response.type_url, res)]
        for name, res in zip(response.names, resources, strict=True)
    ]
    return format_table(PROXY_CONFIG_HEADERS[response.type_url], rows)


# --- commands ------------------------------------------------------------------------------


DRY_RUN_SUFFIX = {"none": "", "client": " (dry run)", "server": " (server dry run)"}


def cmd_apply(client: AdminClient, args: argparse.Namespace) -> int:
    dry_run = args.dry_run != "none"
    documents = read_inputs(args.filename)
    response = client.apply(documents, dry_run=dry_run, namespace=args.namespace or "")
    for warning in response.warnings:
        print(f"Warning: {warning}", file=sys.stderr)
    if not response.changes:  # every document applied is a change, "unchanged" included
        raise UsageError("no objects passed to apply")
    for c in response.changes:
        print(f"{qualified_kind(c.ref.kind)}/{c.ref.name} {c.action}{DRY_RUN_SUFFIX[args.dry_run]}")
    return 0


def cmd_get(client: AdminClient, args: argparse.Namespace) -> int:
    targets = resolve_targets(args.resources)
    namespace = "" if args.all_namespaces else args.namespace or DEFAULT_NAMESPACE
    found: list[admin_pb2.Resource] = []
    for kind, name in targets:
        found += client.get(kind, name or "", namespace).resources
    if not found:
        where = "any namespace" if args.all_namespaces else f"{namespace} namespace"
        print(f"No resources found in {where}.", file=sys.stderr)
        return 0
    print(format_resources(found, args.output or "", args.all_namespaces))
    return 0


def cmd_delete(client: AdminClient, args: argparse.Namespace) -> int:
    if args.filename and args.resources:
        raise UsageError("give either -f FILE or KIND NAME, not both")
    refs = []
    if args.resources:
        targets = resolve_targets(args.resources)
        if any(name is None for _, name in targets):
            raise UsageError("resource(s) were provided, but no name was specified")
        ns = args.namespace or DEFAULT_NAMESPACE
        refs = [(kind, ns, name or "") for kind, name in targets]
    elif not args.filename:
        raise UsageError("give -f FILE or KIND NAME")
    documents = read_inputs(args.filename) if args.filename else []
    response = client.delete(
        documents,
        refs,
        ignore_not_found=args.ignore_not_found,
        dry_run=args.dry_run != "none",
        namespace=args.namespace or "",
    )
    if not response.changes and not args.ignore_not_found:  # -f of files with no documents
        print("No resources found")  # what kubectl delete prints for no objects, exit 0
    for c in response.changes:
        print(f"{qualified_kind(c.ref.kind)}/{c.ref.name} deleted{DRY_RUN_SUFFIX[args.dry_run]}")
    return 0


def cmd_analyze(_client: AdminClient, args: argparse.Namespace) -> int:
    """istioctl analyze on files, offline: messages, then a summary; exit 79 if any is at
    or above --failure-threshold."""
    found = analyze(read_inputs(args.filename), args.namespace)
    shown = [p for p in found if not p.warning or args.output_threshold == "Warning"]
    where = f"namespace: {args.namespace}" if args.namespace else "the files"
    if args.output in ("yaml", "json"):
        data = [
            {
                "code": code(p),
                "level": level(p),
                "origin": f"{p.kind} {p.name}" if p.kind else "",
                "reference": f"{p.source.file}:{p.source.line}" if p.source.line else p.source.file,
                "field": p.field or "",
                "message": p.message,
                **({"hint": p.hint} if p.hint else {}),
            }
            for p in shown
        ]
        print(_dump(data, args.output))
    elif not shown:
        print(f"\N{HEAVY CHECK MARK} No validation issues found when analyzing {where}.")
    else:
        for p in shown:
            print(message_line(p))
    failing = [p for p in found if not p.warning or args.failure_threshold == "Warning"]
    if failing:
        print(f"Error: Analyzers found issues when analyzing {where}.", file=sys.stderr)
        return FOUND_ISSUES_EXIT
    return 0


REPLICA_TIMEOUT_S = 3.0


def cmd_proxy_status(client: AdminClient, args: argparse.Namespace) -> int:
    rows, unreachable = every_replica_status(client)
    print(status_table(rows))
    for line in unreachable:
        print(line, file=sys.stderr)
    return 0


def format_bootstrap(response: admin_pb2.ProxyConfigResponse, output: str) -> str:
    """The node the proxy introduced itself with, as Envoy's config_dump shows it in its
    bootstrap (``{"bootstrap": {"node": ...}}``): the control plane never sees the rest
    of a bootstrap. Default (table) output is YAML, the readable one."""
    data = {"bootstrap": {"node": json.loads(response.node_json or "{}")}}
    return _dump(data, output)


def cmd_proxy_config(client: AdminClient, args: argparse.Namespace) -> int:
    output = args.output or ""
    if args.type == BOOTSTRAP:  # any type's answer carries the node
        print(format_bootstrap(client.proxy_config(args.node, LISTENER), output))
        return 0
    if args.type != ALL:
        response = client.proxy_config(args.node, PROXY_CONFIG_TYPES[args.type])
        print(format_proxy_config(response, output))
        return 0
    # istioctl proxy-config all: each type in push order (clusters, endpoints, listeners).
    responses = [client.proxy_config(args.node, t) for t in (CLUSTER, ENDPOINT, LISTENER)]
    if output in ("json", "yaml"):
        data = {r.type_url: [json.loads(j) for j in r.json] for r in responses}
        print(_dump(data, output))
        return 0
    print("\n\n".join(format_proxy_config(r, "") for r in responses))
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
        "--request-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds to wait for the server's answer (default 10)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def ns(p: argparse.ArgumentParser, files: bool = False) -> None:
        more = (
            "; a document without one is in it, one naming another is refused (as kubectl)"
            if files
            else ""
        )
        p.add_argument(
            "-n", "--namespace", help=f"namespace (default: default){more}", metavar="NAMESPACE"
        )

    def files(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "-f",
            "--filename",
            action="append",
            required=True,
            metavar="FILE|DIR|-",
            help="YAML file, directory of them, or - for stdin (repeatable)",
        )

    def dry_run(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--dry-run",
            nargs="?",
            choices=tuple(DRY_RUN_SUFFIX),
            default="none",
            const="client",
            metavar="none|client|server",
            help="validate and report, change nothing (kubectl's flag: the server validates "
            "in every mode, since only it knows the config; bare --dry-run is client)",
        )

    kinds = ", ".join(f"{k.lower()} ({s})" for k, s in SHORT_KIND_NAMES.items())
    forms = (
        f"Kinds: {kinds}; also plural (virtualservices), any case (VirtualService) and with the "
        f"group (virtualservice.{GROUP}, virtualservices.v1.{GROUP}). Resources as TYPE NAME... "
        "or TYPE/NAME"
    )

    p = sub.add_parser(
        "analyze",
        help="check files offline, as istioctl analyze does (no server needed)",
        description="Every problem and warning the files would get on apply, with Istio's "
        "message codes (IST0106 for what Istio's webhook refuses). Exit code 79 if any is "
        "at or above --failure-threshold, as istioctl analyze.",
    )
    files(p)
    p.add_argument(
        "-o", "--output", choices=("log", "yaml", "json"), default="log", help="message format"
    )
    for flag, default, what in (
        ("--failure-threshold", "Error", "exit 79"),
        ("--output-threshold", "Warning", "show messages"),
    ):
        p.add_argument(
            flag,
            choices=("Error", "Warning"),
            default=default,
            help=f"{what} for messages of this level or above (default {default})",
        )
    ns(p, files=True)
    p.set_defaults(run=cmd_analyze)

    p = sub.add_parser("apply", help="create or update resources from files (all or none)")
    files(p)
    dry_run(p)
    ns(p, files=True)
    p.set_defaults(run=cmd_apply)

    p = sub.add_parser("get", help="show one resource or a list", description=f"{forms}.")
    p.add_argument(
        "resources",
        nargs="+",
        metavar="RESOURCE",
        help="TYPE [NAME...] or TYPE/NAME..., e.g. vs, vs tcp-echo, dr,gw, vs/tcp-echo",
    )
    p.add_argument(
        "-o", "--output", choices=("yaml", "json", "wide"), help="output format (default: table)"
    )
    p.add_argument(
        "-A", "--all-namespaces", action="store_true", help="list across every namespace"
    )
    ns(p)
    p.set_defaults(run=cmd_get)

    p = sub.add_parser(
        "delete", help="delete what files name, or KIND NAME...", description=f"{forms}."
    )
    p.add_argument(
        "resources",
        nargs="*",
        metavar="RESOURCE",
        help="TYPE NAME... or TYPE/NAME..., e.g. vs tcp-echo or vs/tcp-echo (or use -f)",
    )
    p.add_argument(
        "-f",
        "--filename",
        action="append",
        metavar="FILE|DIR|-",
        help="delete what these YAML files name; - for stdin (repeatable)",
    )
    p.add_argument(
        "--ignore-not-found",
        action="store_true",
        help="a resource that does not exist is not an error",
    )
    dry_run(p)
    ns(p, files=True)
    p.set_defaults(run=cmd_delete)

    p = sub.add_parser(
        "proxy-status",
        help="sync state of every connected proxy, of every replica on a shared store (istioctl)",
    )
    p.set_defaults(run=cmd_proxy_status)

    p = sub.add_parser(
        "proxy-config",
        help="what the control plane sends one proxy (istioctl proxy-config)",
        description="listeners, clusters, endpoints: what the control plane has for that "
        "proxy; all: the three; bootstrap: the node the proxy sent (id, cluster, metadata, "
        "locality, user agent), as Envoy's config_dump shows it.",
    )
    p.add_argument(
        "type",
        choices=sorted([*PROXY_CONFIG_TYPES, ALL, BOOTSTRAP]),
        help="what to show",
    )
    p.add_argument("node", metavar="NODE", help="the proxy's node id (see proxy-status)")
    p.add_argument(
        "-o", "--output", choices=("json", "yaml"), help="output format (default: table)"
    )
    p.set_defaults(run=cmd_proxy_config)
    return parser


ERROR_LABELS = {
    "ABORTED": "Conflict",
    "NOT_FOUND": "NotFound",
    "INVALID_ARGUMENT": "Invalid",
    "FAILED_PRECONDITION": "Forbidden",  # writes to a server serving --config files
    "UNAVAILABLE": "ServiceUnavailable",  # its state file cannot be written (disk full, ro)
    "RESOURCE_EXHAUSTED": "RequestEntityTooLarge",
}


def _dry_run_bare(argv: Sequence[str]) -> list[str]:
    """``--dry-run`` alone as ``--dry-run=client``, as kubectl reads it: without the ``=``
    the flag never takes the next word (``delete --dry-run vs tcp-echo``)."""
    return ["--dry-run=client" if a == "--dry-run" else a for a in argv]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(_dry_run_bare(sys.argv[1:] if argv is None else argv))
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
