"""xDS serving: the snapshot cache, the gRPC servicers and per-proxy status."""

from .cache import SnapshotCache
from .server import AggregatedDiscoveryService
from .status import NACKED, NOT_SENT, STALE, SYNCED, ProxyStatus, StatusBoard, TypeStatus

__all__ = [
    "NACKED",
    "NOT_SENT",
    "STALE",
    "SYNCED",
    "AggregatedDiscoveryService",
    "ProxyStatus",
    "SnapshotCache",
    "StatusBoard",
    "TypeStatus",
]
