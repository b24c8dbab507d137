"""Control-plane replicas on one shared store, each ``xds-server serve --store URL`` in a
process of its own with an admin client, as a user runs them: for tests and benchmarks
(tests/test_replicas.py, the benchmark's replicas scenario)."""

from __future__ import annotations

from ..admin.client import AdminClient
from ..lab.lab import HOST
from ..lab.server import ServerProcess
from ..ports import free_port

NODE = "ingressgateway"


class Replica:
    """One ``serve --store etcd`` process and an admin client of it."""

    def __init__(self, url: str, ingress: int) -> None:
        """``url``: the store; ``ingress``: where the gateway port 31400 is bound on Envoy."""
        self.url, self.ingress, self.xds_port = url, ingress, free_port()
        self.start()

    def start(self) -> None:
        self.proc = ServerProcess(
            *("--store", self.url, "--xds-port", str(self.xds_port), "--admin-port", "0"),
            *("--port-map", f"31400={self.ingress}"),
        )
        self.admin = AdminClient(f"{HOST}:{self.proc.wait_port('admin API')}")

    def serving(self) -> bool:
        """Whether the Envoy is connected to this replica and in sync."""
        try:
            status = self.admin.proxy_status()
        except Exception:  # noqa: BLE001 - a replica that is down serves nobody
            return False
        return any(p.node_id == NODE and p.synced for p in status.proxies)

    def kill(self) -> None:
        self.admin.close()
        self.proc.kill()

    def stop(self) -> None:
        self.admin.close()
        self.proc.stop()
