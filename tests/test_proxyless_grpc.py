"""grpcio's own xDS client, a second real client nobody here wrote: a channel to
``xds:///greeter:50051`` bootstrapped at our server asks LDS, CDS and EDS by name, ACKs
them, and its RPCs reach the endpoint our EDS names, also after the endpoint changes.

The client runs in a subprocess: gRPC's C core reads GRPC_XDS_BOOTSTRAP_CONFIG once per
process. It reads commands on stdin ("call" makes one RPC) and prints one line per answer,
which is also the readiness signal.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from xds_server.controlplane import ControlPlane
from xds_server.translate import CLUSTER, ENDPOINT, LISTENER
from xds_server.xds.status import SYNCED

SERVICE = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: greeter}}
spec:
  hosts: [greeter]
  ports: [{{number: 50051, name: grpc, protocol: GRPC}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{grpc: {port}}}}}]
"""

CLIENT = """
import sys, grpc
channel = grpc.insecure_channel("xds:///greeter:50051")
say = channel.unary_unary("/test.Echo/Say")
for line in sys.stdin:
    try:
        print("OK", say(b"world", timeout=10).decode(), flush=True)
    except grpc.RpcError as e:
        print("ERROR", e.code().name, e.details(), flush=True)
"""


def echo_server(prefix: str) -> tuple[grpc.Server, int]:
    """A plain gRPC server with one unary method that answers ``<prefix> <request>``."""

    def say(request: bytes, _context) -> bytes:
        return prefix.encode() + b" " + request

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    handler = grpc.unary_unary_rpc_method_handler(say)
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("test.Echo", {"Say": handler})]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


class ClientProcess:
    """A gRPC xDS client in its own process, bootstrapped at our server by
    GRPC_XDS_BOOTSTRAP_CONFIG (grpc-js-xds refuses a node without a locality)."""

    def __init__(self, argv: list[str], xds_port: int, node_id: str, cwd: Path | None = None):
        bootstrap = {
            "xds_servers": [
                {
                    "server_uri": f"127.0.0.1:{xds_port}",
                    "channel_creds": [{"type": "insecure"}],
                    "server_features": ["xds_v3"],
                }
            ],
            "node": {"id": node_id, "cluster": "proxyless", "locality": {}},
        }
        env = dict(os.environ, GRPC_XDS_BOOTSTRAP_CONFIG=json.dumps(bootstrap))
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            text=True,
        )

    def close(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()


class GrpcClient(ClientProcess):
    def __init__(self, xds_port: int, node_id: str) -> None:
        super().__init__([sys.executable, "-c", CLIENT], xds_port, node_id)
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.strip())

    def call(self, timeout: float = 20) -> str:
        self.proc.stdin.write("call\n")
        self.proc.stdin.flush()
        return self.lines.get(timeout=timeout)


def reaches_two(client: GrpcClient) -> None:
    """gRPC ACKs an update before its balancer has switched: poll the answers (boundedly)
    until the new endpoint answers, then it must keep answering."""
    answers = [client.call()]
    while answers[-1] != "OK two world" and len(answers) < 50:
        answers.append(client.call())
    assert set(answers) <= {"OK one world", "OK two world"}, answers
    assert [client.call() for _ in range(3)] == ["OK two world"] * 3


@pytest.fixture
def servers():
    one, one_port = echo_server("one")
    two, two_port = echo_server("two")
    yield one_port, two_port
    one.stop(0)
    two.stop(0)


def test_grpc_xds_client_gets_lds_cds_eds_and_its_rpcs_work(servers):
    one_port, two_port = servers
    with ControlPlane.start_in_thread() as cp:
        cp.apply_yaml(SERVICE.format(port=one_port))
        client = GrpcClient(cp.port, "grpc-client-1")
        try:
            assert client.call() == "OK one world"
            cp.wait_synced(node_id="grpc-client-1")
            (p,) = cp.proxies()
            assert p.api == "ADS SotW" and p.client_version.startswith("grpc ")
            assert p.node_cluster == "proxyless" and p.group.startswith("grpc[")
            # It asked by name (no wildcard) and ACKed every answer, NACKed none.
            expected = {
                LISTENER: {"greeter:50051"},
                CLUSTER: {"outbound|50051||greeter"},  # a ServiceEntry's host: literal
                ENDPOINT: {"outbound|50051||greeter"},
            }
            for type_url, wanted in expected.items():
                st = p.types[type_url]
                assert not st.wildcard and st.explicit == wanted
                assert p.state(type_url) == SYNCED
                assert st.acks >= 1 and st.nacks == 0
            # An endpoint change reaches it over EDS, and its next RPC goes there.
            cp.apply_yaml(SERVICE.format(port=two_port))
            cp.wait_synced(node_id="grpc-client-1")
            (p,) = cp.proxies()  # a status is a snapshot: read it again
            assert p.types[ENDPOINT].acks >= 2 and p.types[ENDPOINT].nacks == 0
            reaches_two(client)
            # Changes faster than it ACKs: it answers every response, and its answers to
            # superseded ones carry stale nonces, which are ignored (no resend, no error).
            for port in (one_port, two_port) * 5:
                cp.apply_yaml(SERVICE.format(port=port))
            cp.wait_synced(node_id="grpc-client-1")
            (p,) = cp.proxies()
            eds = p.types[ENDPOINT]
            assert eds.acks + eds.stale_nonces == eds.pushes
            assert sum(st.nacks for st in p.types.values()) == 0
            assert client.call() in ("OK one world", "OK two world")  # and RPCs still work
        finally:
            client.close()


# --- A mesh VirtualService's weights, for the mesh's gRPC clients -------------------------

NODE_CLIENT = Path(__file__).parent / "node"  # @grpc/grpc-js-xds (make and CI install it)

SPLIT = """\
apiVersion: v1
kind: Service
metadata: {{name: greeter}}
spec:
  ports: [{{name: grpc, port: 50051}}]
  selector: {{app: greeter}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: greeter-v1}}
spec: {{address: 127.0.0.1, labels: {{app: greeter, version: v1}}, ports: {{grpc: {one}}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: greeter-v2}}
spec: {{address: 127.0.0.1, labels: {{app: greeter, version: v2}}, ports: {{grpc: {two}}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: greeter}}
spec:
  host: greeter
  subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}}}]
"""

ROUTE = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: greeter}}
spec:
  hosts: [greeter]
  tcp:
  - route:
    - {{destination: {{host: greeter, subset: v1}}, weight: {v1}}}
    - {{destination: {{host: greeter, subset: v2}}, weight: {v2}}}
"""

PY_MANY = """
import json, sys, grpc
say = grpc.insecure_channel("xds:///" + sys.argv[1]).unary_unary("/test.Echo/Say")
for line in sys.stdin:
    counts = {}
    for _ in range(int(line)):
        try:
            answer = say(b"world", timeout=10).decode()
        except grpc.RpcError as e:
            answer = "ERROR " + e.code().name
        counts[answer] = counts.get(answer, 0) + 1
    print(json.dumps(counts), flush=True)
"""


class Caller(ClientProcess):
    """grpcio's client, or Node's @grpc/grpc-js-xds: ``calls(n)`` makes n calls one after
    another and counts the answers."""

    def __init__(self, argv: list[str], xds_port: int, node_id: str, cwd: Path | None = None):
        super().__init__([*argv, "greeter:50051"], xds_port, node_id, cwd)

    def calls(self, n: int) -> dict[str, int]:
        self.proc.stdin.write(f"{n}\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())


def _within(counts: dict[str, int], n: int, share_two: float) -> bool:
    """gRPC picks a weighted cluster at random per call: the count of "two" is binomial,
    held to 4 standard deviations."""
    if set(counts) - {"one world", "two world"} or sum(counts.values()) != n:
        return False
    sd = (n * share_two * (1 - share_two)) ** 0.5
    return abs(counts.get("two world", 0) - n * share_two) <= 4 * sd


def _node_client(port: int, node: str) -> Caller:
    if not (NODE_CLIENT / "node_modules" / "@grpc" / "grpc-js-xds").is_dir():
        pytest.fail("the Node client is not installed: run make test, or npm ci in tests/node")
    return Caller(["node", str(NODE_CLIENT / "client.js")], port, node, cwd=NODE_CLIENT)


CLIENTS = {
    "grpcio": lambda port, node: Caller([sys.executable, "-c", PY_MANY], port, node),
    "grpc-js-xds": _node_client,
}


@pytest.mark.parametrize("name", sorted(CLIENTS))
def test_a_mesh_route_splits_the_calls_of_grpc_clients(servers, name):
    """A VirtualService bound to the mesh (no gateways) sends each client the route's
    weights as weighted clusters (gRFC A28): 80/20, then a live change to 50/50. Before,
    such a client got the service's endpoints in one cluster: 500/500 for 80/20."""
    one_port, two_port = servers
    with ControlPlane.start_in_thread() as cp:
        cp.apply_yaml(
            SPLIT.format(one=one_port, two=two_port) + "---\n" + ROUTE.format(v1=80, v2=20)
        )
        client = CLIENTS[name](cp.port, f"{name}-1")
        try:
            counts = client.calls(1000)
            assert _within(counts, 1000, 0.2), counts
            cp.apply_yaml(ROUTE.format(v1=50, v2=50))
            cp.wait_synced(node_id=f"{name}-1")
            client.calls(20)  # the client may finish a call on the old route
            counts = client.calls(1000)
            assert _within(counts, 1000, 0.5), counts
            cp.apply_yaml(ROUTE.format(v1=100, v2=0))
            cp.wait_synced(node_id=f"{name}-1")
            client.calls(20)
            assert client.calls(200) == {"one world": 200}
        finally:
            client.close()
