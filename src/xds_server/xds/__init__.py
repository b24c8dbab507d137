"""xDS serving: the snapshot cache, the gRPC services (ADS and per-type, SotW and Delta,
CSDS), per-proxy status and metrics."""

from .cache import SnapshotCache
from .server import AggregatedDiscoveryService, XdsServer, add_xds_services
from .status import (
    NACKED,
    NOT_SENT,
    STALE,
    SYNCED,
    ProxyRow,
    ProxyStatus,
    StatusBoard,
    TypeStatus,
    format_proxy_status,
    proxy_rows,
)

__all__ = [
    "NACKED",
    "NOT_SENT",
    "STALE",
    "SYNCED",
    "AggregatedDiscoveryService",
    "ProxyRow",
    "ProxyStatus",
    "SnapshotCache",
    "StatusBoard",
    "TypeStatus",
    "XdsServer",
    "add_xds_services",
    "format_proxy_status",
    "proxy_rows",
]
