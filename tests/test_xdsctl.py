"""xdsctl against a real ``xds-server serve --state-dir`` process: round trips, output
formats, exit codes and every class of bad input, with its message."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ServerProcess

from xds_server import xdsctl
from xds_server.admin.server import MAX_REQUEST_BYTES
from xds_server.admin.v1 import admin_pb2
from xds_server.lab.lab import SAMPLES, Lab
from xds_server.ports import free_port
from xds_server.translate import CLUSTER, ENDPOINT, LISTENER

SERVICES = str(SAMPLES / "tcp-echo-services.yaml")
ALL_V1 = str(SAMPLES / "tcp-echo-all-v1.yaml")
V2_20 = str(SAMPLES / "tcp-echo-20-v2.yaml")
V2_20_TEXT = (SAMPLES / "tcp-echo-20-v2.yaml").read_text()
SERVICES_TEXT = (SAMPLES / "tcp-echo-services.yaml").read_text()


@pytest.fixture
def server(tmp_path):
    proc = ServerProcess(
        "--state-dir", str(tmp_path / "state"), "--xds-port", "0", "--admin-port", "0"
    )
    try:
        proc.admin = f"127.0.0.1:{proc.wait_port('admin API')}"
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def ctl(server, capsys):
    """Run xdsctl in-process against the server: (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        code = xdsctl.main(["--server", server.admin, *args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_apply_get_delete_round_trip(ctl):
    code, out, err = ctl("apply", "-f", SERVICES, "-f", ALL_V1)
    assert code == 0, err
    assert out.splitlines() == [
        "service/tcp-echo created",
        "workloadentry.networking.istio.io/tcp-echo-v1 created",
        "workloadentry.networking.istio.io/tcp-echo-v2 created",
        "gateway.networking.istio.io/tcp-echo-gateway created",
        "destinationrule.networking.istio.io/tcp-echo-destination created",
        "virtualservice.networking.istio.io/tcp-echo created",
    ]
    assert ctl("apply", "-f", ALL_V1)[1].splitlines()[-1].endswith("tcp-echo unchanged")
    assert (
        ctl("apply", "-f", V2_20)[1] == "virtualservice.networking.istio.io/tcp-echo configured\n"
    )

    code, out, _ = ctl("get", "vs")
    assert code == 0
    header, row = out.splitlines()
    assert header.split() == ["NAME", "GATEWAYS", "HOSTS", "AGE"]
    assert row.split()[:3] == ["tcp-echo", '["tcp-echo-gateway"]', '["*"]']

    code, out, _ = ctl("get", "virtualservice", "tcp-echo", "-o", "yaml")
    doc = yaml.safe_load(out)
    assert doc["kind"] == "VirtualService" and doc["metadata"]["generation"] == 2
    assert [d["weight"] for d in doc["spec"]["tcp"][0]["route"]] == [80, 20]

    code, out, _ = ctl("get", "dr", "-o", "json")
    assert json.loads(out)["spec"]["host"] == "tcp-echo"
    code, out, _ = ctl("get", "svc,we", "-o", "wide")
    assert "RESOURCE-VERSION" in out and "workloadentries.networking.istio.io/tcp-echo-v2" in out
    assert "services/tcp-echo" in out
    assert ctl("get", "gw")[1].startswith("NAME")

    code, out, _ = ctl("delete", "-f", V2_20)
    assert (code, out) == (0, "virtualservice.networking.istio.io/tcp-echo deleted\n")
    code, out, err = ctl("get", "vs")
    assert (code, out, err) == (0, "", "No resources found in default namespace.\n")
    code, out, _ = ctl("delete", "gw", "tcp-echo-gateway")
    assert out == "gateway.networking.istio.io/tcp-echo-gateway deleted\n"


def test_not_found(ctl):
    code, _, err = ctl("get", "vs", "nope")
    assert code == 1
    assert err == (
        'Error from server (NotFound): virtualservices.networking.istio.io "nope" '
        'not found in namespace "default"\n'
    )
    assert ctl("delete", "vs", "nope")[0] == 1
    assert ctl("delete", "vs", "nope", "--ignore-not-found")[:2] == (0, "")


BAD = {
    "yaml-syntax": (
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: x\n"
        "spec:\n  servers: [\n",
        ["bad.yaml:", "document 1", "YAML syntax error"],
    ),
    "unknown-kind": (
        "apiVersion: networking.istio.io/v1\nkind: VirtualServise\nmetadata: {name: x}\n",
        ["bad.yaml:2: document 1", 'unknown kind "VirtualServise"', "VirtualService"],
    ),
    "bad-reference": (
        V2_20_TEXT.replace("subset: v2", "subset: v3"),
        [
            "(VirtualService default/tcp-echo)",
            "spec.tcp[0].route[1].destination.subset",
            'unknown subset "v3"',
            "hint: defined subsets for tcp-echo: v1, v2",
        ],
    ),
    "weight": (
        V2_20_TEXT.replace("weight: 20", "weight: -20"),
        [
            "(VirtualService default/tcp-echo)",
            "spec.tcp[0].route[1].weight",
            "must be 0 or more, got -20",
        ],
    ),
    "binary-status": (  # used to be stored, and then `get` failed: bytes is not JSON
        V2_20_TEXT + "status: !!binary aGVsbG8=\n",
        ["(VirtualService default/tcp-echo)", 'status: YAML tag "!!binary" is not supported'],
    ),
    "control-character": (  # the message went on over two lines
        SERVICES_TEXT.replace("name: tcp-echo-v1", "name: tcp-echo-\x00v1"),
        [
            f"bad.yaml:{SERVICES_TEXT.split('name: tcp-echo-v1')[0].count(chr(10)) + 1}:"
            " document 2: YAML syntax error: control characters are not allowed, got #x0000"
            " (column 18)\n"
        ],
    ),
    "control-character-key": (  # a raw carriage return split the problem's line
        SERVICES_TEXT.replace("  ports:", '  "a\\rb\\nc": 1\n  ports:', 1),
        ['spec.a\\rb\\nc: unknown field "a\\rb\\nc" (hint: known fields: '],
    ),
    "deep": (  # used to be a RecursionError traceback
        V2_20_TEXT + "status:\n" + "".join(" " * i + " k:\n" for i in range(900)),
        ["(VirtualService default/tcp-echo)", "status.k.k", "nested more than 100 levels"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_reported_and_nothing_applied(ctl, tmp_path, case):
    assert ctl("apply", "-f", SERVICES, "-f", ALL_V1)[0] == 0
    before = ctl("get", "vs", "tcp-echo", "-o", "json")[1]
    text, expected = BAD[case]
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    code, out, err = ctl("apply", "-f", str(bad))
    assert code == 1 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and "\r" not in err
    for part in expected:
        assert part in err, err
    assert ctl("get", "vs", "tcp-echo", "-o", "json")[1] == before


def test_stale_resource_version_is_a_conflict(ctl, tmp_path):
    ctl("apply", "-f", SERVICES, "-f", ALL_V1)
    current = yaml.safe_load(ctl("get", "vs", "tcp-echo", "-o", "yaml")[1])
    ctl("apply", "-f", V2_20)  # someone else changes it meanwhile
    mine = tmp_path / "mine.yaml"
    current["spec"]["tcp"][0]["route"][0]["destination"]["subset"] = "v2"
    mine.write_text(yaml.safe_dump(current))
    code, _, err = ctl("apply", "-f", str(mine))
    assert code == 1
    assert err.startswith("Error from server (Conflict): ")
    assert 'Operation cannot be fulfilled on virtualservices.networking.istio.io "tcp-echo"' in err
    assert "metadata.resourceVersion" in err
    # With the current resourceVersion the same edit goes through.
    fresh = yaml.safe_load(ctl("get", "vs", "tcp-echo", "-o", "yaml")[1])
    current["metadata"]["resourceVersion"] = fresh["metadata"]["resourceVersion"]
    mine.write_text(yaml.safe_dump(current))
    assert ctl("apply", "-f", str(mine))[1].endswith("tcp-echo configured\n")


def test_usage_errors(ctl):
    code, _, err = ctl("get", "virtualservise")
    assert code == 1 and 'doesn\'t have a resource type "virtualservise"' in err
    code, _, err = ctl("apply", "-f", "/no/such/file.yaml")
    assert (code, err) == (1, 'error: the path "/no/such/file.yaml" does not exist\n')


def test_server_down_is_one_line():
    port = free_port()
    result = subprocess.run(
        [sys.executable, "-m", "xds_server.xdsctl", "--server", f"127.0.0.1:{port}", "get", "vs"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.startswith(
        f"error: cannot connect to the control plane at 127.0.0.1:{port}"
    )
    assert "xds-server serve --state-dir" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_cli_process_reads_stdin_and_env(server):
    """The installed entry point as a shell user runs it: `-` for stdin, $XDSCTL_SERVER."""
    env = {"XDSCTL_SERVER": server.admin, "PATH": ""}
    text = SERVICES_TEXT
    result = subprocess.run(
        [sys.executable, "-m", "xds_server.xdsctl", "apply", "-f", "-"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "service/tcp-echo created" in result.stdout


def test_stdin_that_is_not_utf8_is_one_line(server):
    """It used to end in a UnicodeEncodeError traceback."""
    result = subprocess.run(
        [sys.executable, "-m", "xds_server.xdsctl", "-s", server.admin, "apply", "-f", "-"],
        input=b"kind: Gateway\nx: \x80\n",
        capture_output=True,
        timeout=60,
    )
    assert (result.returncode, result.stdout) == (1, b"")
    assert result.stderr.decode().startswith("error: cannot read <stdin>: 'utf-8' codec can't")
    assert len(result.stderr.splitlines()) == 1


def test_read_only_when_config_comes_from_files(tmp_path, capsys):
    (tmp_path / "a.yaml").write_text(SERVICES_TEXT)
    proc = ServerProcess("--config", str(tmp_path), "--xds-port", "0", "--admin-port", "0")
    try:
        admin = f"127.0.0.1:{proc.wait_port('admin API')}"
        assert xdsctl.main(["--server", admin, "get", "svc"]) == 0
        assert "tcp-echo" in capsys.readouterr().out
        assert xdsctl.main(["--server", admin, "apply", "-f", ALL_V1]) == 1
        err = capsys.readouterr().err
        assert err.startswith("Error from server (Forbidden): config comes from files")
    finally:
        proc.stop()


def test_proxy_status_and_proxy_config_with_a_real_envoy(capsys):
    with Lab(ingress_port=0, xds_port=0, admin_port=0, admin_api=True) as lab:
        lab.apply([ALL_V1])
        lab.apply([V2_20])

        def ctl(*args: str) -> str:
            assert xdsctl.main(["--server", lab.admin_target, *args]) == 0
            return capsys.readouterr().out

        header, row = ctl("proxy-status").splitlines()
        assert header.split()[:5] == ["NAME", "CLUSTER", "CDS", "LDS", "EDS"]
        assert header.split()[-3:] == ["API", "VERSION", "CONNECTED"]
        assert row.split()[:5] == ["ingressgateway", "ingressgateway", "SYNCED", "SYNCED", "SYNCED"]

        listeners = ctl("proxy-config", "listeners", "ingressgateway")
        # What we sent: the lab lets Envoy pick the port (0), then reads it from Envoy.
        row = listeners.splitlines()[1].split()
        assert row == ["0.0.0.0_31400", "127.0.0.1", "0", "route|default/tcp-echo|tcp[0]"]
        endpoints = ctl("proxy-config", "endpoints", "ingressgateway")
        assert "tcp-echo.default.svc.cluster.local/v1/9000 weight=80" in endpoints
        assert "tcp-echo.default.svc.cluster.local/v2/9000 weight=20" in endpoints
        clusters = json.loads(ctl("proxy-config", "clusters", "ingressgateway", "-o", "json"))
        assert [c["name"] for c in clusters] == ["route|default/tcp-echo|tcp[0]"]

        assert xdsctl.main(["--server", lab.admin_target, "proxy-config", "clusters", "nope"]) == 1
        assert "no proxy 'nope' is connected" in capsys.readouterr().err

        # istioctl proxy-config all: every type; bootstrap: the node Envoy sent.
        everything = ctl("proxy-config", "all", "ingressgateway")
        assert "CONNECT-TIMEOUT" in everything and "LOCALITIES" in everything
        assert "0.0.0.0_31400" in everything
        dump = json.loads(ctl("proxy-config", "all", "ingressgateway", "-o", "json"))
        assert sorted(dump) == sorted([CLUSTER, ENDPOINT, LISTENER])
        node = yaml.safe_load(ctl("proxy-config", "bootstrap", "ingressgateway"))["bootstrap"]
        node = node["node"]
        assert node["id"] == "ingressgateway" and node["cluster"] == "ingressgateway"
        assert node["user_agent_name"] == "envoy"
        assert node["user_agent_build_version"]["version"]["major_number"] == 1
        assert node["metadata"]["labels"]["istio"] == "ingressgateway"


def many_destinations(n: int) -> str:
    """A VirtualService with n destinations, each naming a subset that does not exist."""
    route = "".join(
        f"    - {{destination: {{host: tcp-echo, subset: nope{i}, port: {{number: 9000}}}}, "
        "weight: 1}\n"
        for i in range(n)
    )
    return (
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: many}\n"
        "spec:\n  hosts: [many.example.com]\n  tcp:\n  - route:\n" + route
    )


def test_every_problem_reaches_xdsctl_beyond_the_trailer_limit(ctl, tmp_path):
    """Problem lists travelled in the gRPC status details, a trailer capped at 16 KiB:
    1200 of them, or one about a 1 MB name, arrived as `Stream removed (received metadata
    size exceeds hard limit)`. Now each arrives, one per line, up to 1000 and a count."""
    assert ctl("apply", "-f", SERVICES)[0] == 0
    bad = tmp_path / "many.yaml"
    bad.write_text(many_destinations(1200))
    code, out, err = ctl("apply", "-f", str(bad))
    lines = err.splitlines()
    assert code == 1 and out == "" and len(lines) == 1001, lines[-3:]
    assert all(
        line.startswith(f"error: {bad}:") and "unknown subset" in line for line in lines[:-1]
    )
    assert lines[-1] == "error: ... and 200 more"

    bad.write_text(many_destinations(999))  # under the cap: every one
    code, _, err = ctl("apply", "--dry-run", "-f", str(bad))
    assert code == 1 and len(err.splitlines()) == 999

    name = "n" * 1_000_000
    bad.write_text(SERVICES_TEXT.replace("name: tcp-echo\n", f"name: {name.upper()}\n", 1))
    code, _, err = ctl("apply", "-f", str(bad))
    [line] = err.splitlines()
    assert code == 1 and "metadata.name: must be a DNS-1123 subdomain" in line
    assert line.endswith('... (1000000 bytes)"') and len(line) < 1000
    code, _, err = ctl("delete", "vs", name)
    assert code == 1 and err.startswith("Error from server (NotFound)") and len(err) < 1200


def test_a_request_over_the_size_limit_is_one_clear_line(ctl, tmp_path):
    """gRPC's RESOURCE_EXHAUSTED "Received message larger than max", in kubectl's words."""
    big = tmp_path / "big.yaml"
    big.write_text(SERVICES_TEXT + "---\n# " + "x" * (MAX_REQUEST_BYTES + 2**20) + "\n")
    code, out, err = ctl("apply", "-f", str(big))
    assert code == 1 and out == ""
    assert err == (
        "Error from server (RequestEntityTooLarge): the request is 33.0 MiB, more than the "
        "32 MiB the control plane accepts in one call: apply the files in smaller batches\n"
    )
    assert ctl("apply", "-f", SERVICES)[0] == 0  # and the server still answers


def test_status_is_dropped_on_apply(ctl, tmp_path):
    """`status` belongs to the server (as in Kubernetes): never stored, never shown."""
    mine = tmp_path / "mine.yaml"
    mine.write_text(SERVICES_TEXT + "status: {conditions: [{type: Reconciled}]}\n")
    assert ctl("apply", "-f", str(mine))[0] == 0
    code, out, _ = ctl("get", "we", "-o", "json")
    assert code == 0 and all("status" not in doc for doc in json.loads(out)["items"])


# --- kubectl's forms (issue 13, item 5) ------------------------------------------------------

FORMS = {  # kind: (short, singular, plural); each also group-qualified and in any case
    "VirtualService": ("vs", "virtualservice", "virtualservices"),
    "DestinationRule": ("dr", "destinationrule", "destinationrules"),
    "Gateway": ("gw", "gateway", "gateways"),
    "ServiceEntry": ("se", "serviceentry", "serviceentries"),
    "WorkloadEntry": ("we", "workloadentry", "workloadentries"),
}


EXTERNAL = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db}
spec:
  hosts: [db.example.com]
  ports: [{number: 5432, name: tcp, protocol: TCP}]
  resolution: DNS
"""


def test_every_kubectl_form_of_every_type(ctl, tmp_path):
    """`apply` prints virtualservice.networking.istio.io/tcp-echo; `get` takes that name
    back, and kubectl's other forms, for every kind, in get and delete alike."""
    (tmp_path / "db.yaml").write_text(EXTERNAL)
    assert ctl("apply", "-f", SERVICES, "-f", ALL_V1, "-f", str(tmp_path / "db.yaml"))[0] == 0
    for form in ("svc", "service", "services", "Service", "svc/tcp-echo", "service/tcp-echo"):
        code, out, err = ctl("get", *form.split("/", 1)[:1], *form.split("/")[1:], "-o", "json")
        assert code == 0 and json.loads(out)["kind"] == "Service", (form, err)
    names = {
        kind: yaml.safe_load(ctl("get", short, "-o", "yaml")[1])
        for kind, (short, _, _) in FORMS.items()
    }
    for kind, (short, singular, plural) in FORMS.items():
        doc = names[kind]
        name = (doc["items"][0] if doc["kind"] == "List" else doc)["metadata"]["name"]
        forms = [short, singular, plural, kind, kind.upper()]
        forms += [f"{f}.networking.istio.io" for f in (short, singular, plural, kind)]
        forms += [f"{plural}.v1.networking.istio.io", f"{singular}.v1alpha3.networking.istio.io"]
        for form in forms:
            code, out, err = ctl("get", form, name, "-o", "json")
            assert code == 0, (form, err)
            assert json.loads(out)["kind"] == kind, form
            code, out, err = ctl("get", f"{form}/{name}", "-o", "json")
            assert code == 0, (form, err)
            assert json.loads(out)["kind"] == kind, form
    # Deleting by the printed name, and in TYPE/NAME form.
    code, out, err = ctl("delete", "virtualservice.networking.istio.io", "tcp-echo")
    assert (code, out) == (0, "virtualservice.networking.istio.io/tcp-echo deleted\n"), err
    code, out, err = ctl("delete", "DestinationRule/tcp-echo-destination", "gw/tcp-echo-gateway")
    assert code == 0, err
    assert out.splitlines() == [
        "destinationrule.networking.istio.io/tcp-echo-destination deleted",
        "gateway.networking.istio.io/tcp-echo-gateway deleted",
    ]


def test_forms_that_are_not_a_type_are_refused(ctl):
    for form in ("vs.networking.k8s.io", "vs.v9.networking.istio.io", "virtualservicez"):
        code, _, err = ctl("get", form)
        assert code == 1 and f'doesn\'t have a resource type "{form}"' in err, form
    code, _, err = ctl("get", "vs/tcp-echo", "dr")
    assert code == 1 and "resource/name form" in err
    code, _, err = ctl("delete", "vs/")
    assert code == 1 and "must have a name" in err


def test_delete_dry_run_validates_and_changes_nothing(ctl):
    assert ctl("apply", "-f", SERVICES, "-f", ALL_V1)[0] == 0
    before = ctl("get", "vs,se,dr,gw,we", "-o", "json")[1]
    code, out, err = ctl("delete", "--dry-run", "vs", "tcp-echo")
    assert (code, out) == (0, "virtualservice.networking.istio.io/tcp-echo deleted (dry run)\n"), (
        err
    )
    code, out, err = ctl("delete", "--dry-run=server", "-f", ALL_V1)
    assert code == 0, err
    assert out.splitlines()[-1] == (
        "virtualservice.networking.istio.io/tcp-echo deleted (server dry run)"
    )
    # A dry run is validated like the real thing: the rule still names the host.
    code, _, err = ctl("delete", "--dry-run=client", "svc", "tcp-echo")
    assert code == 1 and "tcp-echo" in err
    code, _, err = ctl("delete", "--dry-run", "vs", "nope")
    assert code == 1 and "NotFound" in err
    assert ctl("get", "vs,se,dr,gw,we", "-o", "json")[1] == before
    code, out, _ = ctl("delete", "--dry-run=none", "vs", "tcp-echo")
    assert (code, out) == (0, "virtualservice.networking.istio.io/tcp-echo deleted\n")
    code, out, _ = ctl("apply", "--dry-run=server", "-f", ALL_V1)
    assert (
        out.splitlines()[-1]
        == "virtualservice.networking.istio.io/tcp-echo created (server dry run)"
    )
    assert ctl("get", "vs")[2] == "No resources found in default namespace.\n"


@pytest.mark.parametrize("text", ["", "\n", "---\n# only a comment\n---\n"])
def test_no_objects_is_kubectls_answer(server, text):
    """kubectl apply: `error: no objects passed to apply`, exit 1; kubectl delete: `No
    resources found`, exit 0."""

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "xds_server.xdsctl", "-s", server.admin, *args],
            input=text,
            capture_output=True,
            text=True,
            timeout=60,
        )

    result = run("apply", "-f", "-")
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == "error: no objects passed to apply\n"
    result = run("delete", "-f", "-")
    assert (result.returncode, result.stdout, result.stderr) == (0, "No resources found\n", "")


def test_proxy_status_shows_each_connection_of_one_node_id():
    """Two proxies with one node id are two rows, told apart by their peer address."""
    response = admin_pb2.ProxyStatusResponse(
        proxies=[
            admin_pb2.Proxy(node_id="gw", node_cluster="c", peer="ipv4:127.0.0.1:4001"),
            admin_pb2.Proxy(node_id="gw", node_cluster="c", peer="ipv4:127.0.0.1:4002"),
        ]
    )
    out = xdsctl.format_proxy_status(response)
    assert "gw@ipv4:127.0.0.1:4001" in out and "gw@ipv4:127.0.0.1:4002" in out


def test_apply_n_sets_the_namespace_and_refuses_another(ctl, tmp_path):
    """kubectl apply -n: documents without a namespace go there, in one batch with those
    naming it; a document naming another namespace refuses the whole batch."""
    named = tmp_path / "named.yaml"
    named.write_text(
        SERVICES_TEXT.replace("name: tcp-echo-v1\n", "name: tcp-echo-v1\n  namespace: app\n")
    )
    code, out, err = ctl("apply", "-n", "app", "-f", str(named))
    assert code == 0, err
    assert ctl("get", "svc", "-n", "app")[1].splitlines()[1].split()[0] == "tcp-echo"
    assert len(ctl("get", "we", "-n", "app")[1].splitlines()) == 3
    assert ctl("get", "svc")[0:2] == (0, "")  # nothing went to default

    code, out, err = ctl("apply", "-n", "other", "-f", str(named))
    assert code == 1 and out == ""
    assert "(WorkloadEntry app/tcp-echo-v1): metadata.namespace:" in err
    assert (
        'the namespace from the provided object "app" does not match the namespace "other"' in err
    )
    assert "hint: pass --namespace=app, or leave it out" in err
    assert ctl("get", "svc", "-n", "other")[0:2] == (0, "")

    code, out, err = ctl("delete", "-n", "app", "-f", SERVICES)
    assert code == 0, err
    assert ctl("get", "we", "-n", "app")[0:2] == (0, "")


def test_what_istio_accepts_and_ignores_is_applied_with_a_warning(ctl, tmp_path):
    """kubectl's Warning: lines, on stderr; the apply succeeds."""
    assert ctl("apply", "-f", SERVICES, "-f", ALL_V1)[0] == 0
    second = tmp_path / "second.yaml"
    second.write_text(V2_20_TEXT.replace("name: tcp-echo\n", "name: tcp-echo-z\n", 1))
    code, out, err = ctl("apply", "-f", str(second))
    assert code == 0 and out == "virtualservice.networking.istio.io/tcp-echo-z created\n"
    [line] = err.splitlines()
    assert line.startswith(f"Warning: {second}:") and "(VirtualService default/tcp-echo-z)" in line
    assert "already routed by VirtualService default/tcp-echo: this route is unused there" in line


def test_a_kubernetes_service_is_applied_and_listed(ctl, tmp_path):
    """kubectl's names for the core kind: service/NAME in answers, svc/service/services."""
    istio = (Path(__file__).parent / "istio_samples" / "tcp-echo-services.yaml").read_text()
    [service] = [d for d in istio.split("---\n") if "\nkind: Service\n" in d]
    (tmp_path / "svc.yaml").write_text(service)
    code, out, err = ctl("apply", "-f", str(tmp_path / "svc.yaml"))
    assert (code, out) == (0, "service/tcp-echo created\n"), err
    for form in ("svc", "service", "services", "svc/tcp-echo"):
        code, out, _ = ctl("get", form)
        header, row = out.splitlines()
        assert header.split() == ["NAME", "PORT(S)", "SELECTOR", "AGE"], form
        assert row.split()[:3] == ["tcp-echo", "9000/TCP,9001/TCP", "app=tcp-echo"], form
    assert ctl("get", "services.v1.networking.istio.io")[0] == 1
    code, out, _ = ctl("delete", "svc", "tcp-echo")
    assert out == "service/tcp-echo deleted\n"


def test_analyze_is_offline_and_speaks_istioctl(tmp_path, capsys):
    """istioctl analyze's messages, codes and exit code 79, with no server running."""

    def analyze(*args: str) -> tuple[int, str, str]:
        code = xdsctl.main(["--server", "127.0.0.1:1", "analyze", *args])
        out, err = capsys.readouterr()
        return code, out, err

    assert analyze("-f", SERVICES, "-f", ALL_V1) == (
        0,
        "\N{HEAVY CHECK MARK} No validation issues found when analyzing the files.\n",
        "",
    )
    legacy = tmp_path / "legacy.yaml"
    all_v1 = Path(ALL_V1).read_text()
    legacy.write_text(all_v1.replace("- tcp-echo-gateway", "- tcp-echo-gateway.default"))
    code, out, err = analyze("-f", SERVICES, "-f", str(legacy))
    [line] = out.splitlines()
    assert code == 0 and err == ""
    assert line.startswith(f"Warning [IST0106] (VirtualService default/tcp-echo {legacy}:")
    assert 'using legacy gatewayName format "tcp-echo-gateway.default"' in line
    assert analyze("-f", SERVICES, "-f", str(legacy), "--failure-threshold", "Warning")[0] == 79

    bad = tmp_path / "bad.yaml"
    bad.write_text(all_v1.replace("subset: v1", "subset: v3"))
    code, out, err = analyze("-f", SERVICES, "-f", str(bad), "-o", "json")
    [message] = json.loads(out)
    assert code == 79 and err == "Error: Analyzers found issues when analyzing the files.\n"
    assert message["level"] == "Error" and message["code"] == "IST0106"
    assert message["origin"] == "VirtualService default/tcp-echo"
    assert message["field"] == "spec.tcp[0].route[0].destination.subset"
    code, out, _ = analyze("-f", str(bad))
    assert code == 79 and "[IST0101]" in out and "unknown host" in out
