"""Push metrics for Prometheus, one registry per control plane.

A registry of our own (not prometheus_client's global one) so that several control planes
in one process (tests, an embedding program) count separately. Served over HTTP on a
port of its own by ``serve()``; the gauges are computed at scrape time.

    xds_pushes_total{type,api}          responses sent (type: CDS/EDS/LDS; api: "ADS Delta", ...)
    xds_rejects_total{type}             NACKs received
    xds_push_ack_seconds{type}          push -> ACK latency (histogram)
    xds_push_size_bytes{type}           size of each response (histogram)
    xds_config_size_bytes{type}         serialized size of the current config (default group)
    xds_connected_proxies               proxies connected (by node id)
"""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Callable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app

from ..translate import PUSH_ORDER, SHORT_NAMES
from .cache import SnapshotCache
from .status import StatusBoard, by_connection

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
SIZE_BUCKETS = tuple(4.0**k * 256 for k in range(9))  # 256 B .. 16 MiB


class XdsMetrics:
    """The counters the xDS streams update, and the HTTP endpoint that serves them."""

    def __init__(self, cache: SnapshotCache, board: StatusBoard) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.pushes = Counter("xds_pushes", "xDS responses sent", ["type", "api"], registry=r)
        self.rejects = Counter("xds_rejects", "xDS responses NACKed", ["type"], registry=r)
        self.ack_latency = Histogram(
            "xds_push_ack_seconds",
            "time from sending a response to its ACK",
            ["type"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.push_size = Histogram(
            "xds_push_size_bytes",
            "serialized size of each response",
            ["type"],
            buckets=SIZE_BUCKETS,
            registry=r,
        )
        config_size = Gauge(
            "xds_config_size_bytes",
            "serialized size of the current config, per type (proxies without labels)",
            ["type"],
            registry=r,
        )
        for type_url in PUSH_ORDER:
            config_size.labels(SHORT_NAMES[type_url]).set_function(_config_size(cache, type_url))
        connected = Gauge(
            "xds_connected_proxies", "proxies connected (node id and connection)", registry=r
        )
        # Who the streams are, no snapshot of their state: the scrape runs on another thread
        # (board.streams() copies in one step under the GIL).
        connected.set_function(lambda: len(by_connection(board.streams())))
        self._http: WSGIServer | None = None

    def pushed(self, kind: str, api: str, size: int) -> None:
        self.pushes.labels(kind, api).inc()
        self.push_size.labels(kind).observe(size)

    def acked(self, kind: str, seconds: float) -> None:
        self.ack_latency.labels(kind).observe(seconds)

    def rejected(self, kind: str) -> None:
        self.rejects.labels(kind).inc()

    def serve(self, port: int, address: str = "127.0.0.1") -> int:
        """Serve /metrics over HTTP (in a daemon thread); returns the bound port."""
        # Not prometheus_client's start_http_server: its thread runs serve_forever() with the
        # default 0.5 s poll, so close() (shutdown(), from ControlPlane.stop on the event loop)
        # would block the loop for up to half a second; the poll cannot be passed to it.
        server_class = _Server6 if ":" in address else _Server
        server = make_server(
            address, port, make_wsgi_app(self.registry), server_class, _QuietHandler
        )
        # A short poll so that close() (from the event loop) returns at once.
        threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()
        self._http = server
        return server.server_port

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None


def _config_size(cache: SnapshotCache, type_url: str) -> Callable[[], float]:
    """The gauge function of one type: its current snapshot's serialized size."""
    return lambda: cache.snapshot(type_url).size


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Scrapes are not worth a log line each."""
