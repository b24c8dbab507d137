"""Type URLs and the bundle of resources one translation produces."""

from __future__ import annotations

from dataclasses import dataclass, field

from google.protobuf.message import Message

_PREFIX = "type.googleapis.com/"
LISTENER = _PREFIX + "envoy.config.listener.v3.Listener"
CLUSTER = _PREFIX + "envoy.config.cluster.v3.Cluster"
ENDPOINT = _PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"
ROUTE = _PREFIX + "envoy.config.route.v3.RouteConfiguration"

# Make before break: a cluster exists before endpoints name it, both before a listener
# routes to it. Removals go the other way round.
PUSH_ORDER = (CLUSTER, ENDPOINT, LISTENER)

SHORT_NAMES = {CLUSTER: "CDS", ENDPOINT: "EDS", LISTENER: "LDS", ROUTE: "RDS"}

# Types whose SotW request with no names means "everything" (Envoy's legacy wildcard).
WILDCARD_TYPES = (CLUSTER, LISTENER)


@dataclass
class Resources:
    """Everything one proxy should have, by type URL and resource name."""

    listeners: dict[str, Message] = field(default_factory=dict)
    clusters: dict[str, Message] = field(default_factory=dict)
    endpoints: dict[str, Message] = field(default_factory=dict)

    def by_type(self) -> dict[str, dict[str, Message]]:
        return {LISTENER: self.listeners, CLUSTER: self.clusters, ENDPOINT: self.endpoints}
