"""What several scenarios share: a generated config of S services, the server as a child
process, and its Prometheus metrics and memory as read from outside."""

from __future__ import annotations

import re
import shutil
import tempfile
import urllib.request
from pathlib import Path

from ..admin.client import AdminClient
from ..lab.server import ServerProcess

HOST = "127.0.0.1"
GATEWAY = "bench-gateway"
BASE_PORT = 20000


def service_name(i: int) -> str:
    return f"svc-{i:05d}"


def gateway_yaml(services: int) -> str:
    servers = "\n".join(
        f'  - port: {{number: {BASE_PORT + i}, name: tcp-{i}, protocol: TCP}}\n    hosts: ["*"]'
        for i in range(services)
    )
    return (
        "apiVersion: networking.istio.io/v1\nkind: Gateway\n"
        f"metadata: {{name: {GATEWAY}}}\nspec:\n  selector: {{istio: ingressgateway}}\n"
        f"  servers:\n{servers}\n"
    )


def service_yaml(i: int) -> str:
    """A ServiceEntry with two endpoints (v1, v2) and a DestinationRule with two subsets
    (the host written in full: Istio reads a ServiceEntry's hosts literally)."""
    name = service_name(i)
    return f"""\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}}}
spec:
  hosts: [{name}.default.svc.cluster.local]
  ports: [{{number: 9000, name: tcp, protocol: TCP}}]
  resolution: STATIC
  endpoints:
  - {{address: 127.0.0.1, ports: {{tcp: 9100}}, labels: {{version: v1}}}}
  - {{address: 127.0.0.1, ports: {{tcp: 9200}}, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}}}
spec:
  host: {name}
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
"""


def route_yaml(i: int, v2: int) -> str:
    """The VirtualService of service ``i``: ``v2`` percent to subset v2, the rest to v1."""
    name = service_name(i)
    return f"""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}}}
spec:
  hosts: ["*"]
  gateways: [{GATEWAY}]
  tcp:
  - match: [{{port: {BASE_PORT + i}}}]
    route:
    - {{destination: {{host: {name}, port: {{number: 9000}}, subset: v1}}, weight: {100 - v2}}}
    - {{destination: {{host: {name}, port: {{number: 9000}}, subset: v2}}, weight: {v2}}}
"""


def config_yaml(services: int, v2: int = 20) -> str:
    docs = [gateway_yaml(services)]
    for i in range(services):
        docs += [service_yaml(i), route_yaml(i, v2)]
    return "---\n".join(docs)


class BenchServer:
    """``xds-server serve --state-dir`` in its own process, with admin API and metrics."""

    def __init__(self) -> None:
        self.state = tempfile.mkdtemp(prefix="xds-bench-state-")
        self.proc = ServerProcess(
            *("--state-dir", self.state, "--xds-port", "0", "--admin-port", "0"),
            *("--metrics-port", "0"),
        )
        try:
            self.xds_port = self.proc.wait_port("xDS")
            self.admin_port = self.proc.wait_port("admin API")
            self.metrics_url = metrics_url(self.proc)
            self.admin = AdminClient(f"{HOST}:{self.admin_port}")
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        return self.proc.proc.pid

    def stop(self) -> None:
        if hasattr(self, "admin"):
            self.admin.close()
        self.proc.stop()
        shutil.rmtree(self.state, ignore_errors=True)

    def __enter__(self) -> BenchServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def metrics_url(server: ServerProcess) -> str:
    """The /metrics URL from the ``metrics on http://...`` line the server logs at start."""
    for line in server.lines:
        if "metrics on http" in line:
            return line.split("metrics on ", 1)[1].strip()
    return server.wait_line("metrics on http").split("metrics on ", 1)[1].strip()


def scrape(url: str) -> dict[str, float]:
    """Prometheus text exposition as {'name{labels}': value}."""
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def metric_sum(metrics: dict[str, float], name: str, **labels: str) -> float:
    """Sum of a metric's series whose labels include ``labels``."""
    total = 0.0
    for key, value in metrics.items():
        base, _, rest = key.partition("{")
        if base == name and all(f'{k}="{v}"' in rest for k, v in labels.items()):
            total += value
    return total


def rss_kib(pid: int) -> int:
    """VmRSS of a process, in KiB."""
    match = re.search(r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    return int(match.group(1)) if match else 0
