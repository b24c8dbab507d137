"""What translation needs to know about the proxy it translates for.

Proxies that share a profile get the same resources, so the cache translates (and
serializes) once per distinct profile, not once per proxy or stream.

Gateway selection: a Gateway's ``selector`` is matched against the proxy's labels the way
Istio matches ``istio: ingressgateway`` against the gateway pod's labels. Labels come from the
node metadata (``node.metadata.labels``, or Istio's ``LABELS``). A proxy that sends no labels
at all is not a Kubernetes pod and is served every Gateway (so a hand-written bootstrap or a
raw test client keeps working); a proxy that sends labels, even an empty set, gets only the
Gateways whose selector they match. An empty selector matches every proxy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

ADS = "ADS"


@dataclass(frozen=True)
class NodeProfile:
    """``labels``: None when the proxy sent no labels (selects every Gateway).
    ``proxyless``: a gRPC library client (asks for API listeners ``host:port``, needs weighted
    localities). ``transport``: ``ADS``, or for a proxy bootstrapped without ADS the
    ``api_type`` of its per-type streams (``GRPC``, ``DELTA_GRPC``): its clusters must name
    the per-type EDS service in that variant as their endpoint source. ``xds_cluster``: the
    name of the bootstrap's cluster for the control plane, which those clusters name (the
    node's ``metadata.xds_cluster``; None: the server's ``--xds-cluster``)."""

    labels: frozenset[tuple[str, str]] | None = None
    proxyless: bool = False
    transport: str = ADS
    xds_cluster: str | None = None

    @classmethod
    def of(
        cls,
        labels: Mapping[str, str] | None,
        *,
        proxyless: bool = False,
        transport: str = ADS,
        xds_cluster: str | None = None,
    ) -> NodeProfile:
        frozen = None if labels is None else frozenset(labels.items())
        # Only a proxy without ADS names the cluster in what it is sent: others share.
        return cls(frozen, proxyless, transport, xds_cluster if transport != ADS else None)

    def selects(self, selector: Mapping[str, str]) -> bool:
        """Does a Gateway with this selector apply to the proxy?"""
        if self.labels is None:
            return True
        have = dict(self.labels)
        return all(have.get(k) == v for k, v in selector.items())

    def __str__(self) -> str:
        labels = (
            "*" if self.labels is None else ",".join(f"{k}={v}" for k, v in sorted(self.labels))
        )
        kind = "grpc" if self.proxyless else "envoy"
        via = "" if self.transport == ADS else f" per-type {self.transport}"
        return f"{kind}[{labels}]{via}"


ANY_NODE = NodeProfile()
