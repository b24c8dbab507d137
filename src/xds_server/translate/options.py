"""Knobs of the translation that are not part of the Istio config itself."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

SplitMode = Literal["locality", "istio"]
LOCALITY: SplitMode = "locality"
ISTIO: SplitMode = "istio"


@dataclass(frozen=True)
class TranslateOptions:
    """How config becomes Envoy resources.

    ``split``: ``locality`` (default) puts the weights in EDS, one weighted locality per
    destination, so a weight change is an EDS-only update that never drains the listener
    and splits deterministically (to one connection). ``istio`` reproduces Istio's shape,
    tcp_proxy ``weighted_clusters`` on the listener: a random split, and every weight
    change drains open connections.

    ``port_map`` moves a gateway port to another bind port (like a Kubernetes Service port
    to its target port) when the task's port is taken on this host; the listener keeps
    the gateway port in its name.

    ``eds_api_type``: None: clusters take their endpoints over ADS (``eds_config: {ads:
    {}}``). For a proxy bootstrapped without ADS, ``GRPC`` or ``DELTA_GRPC``: clusters name
    the per-type EDS service through ``xds_cluster``, the bootstrap's cluster for the
    control plane (Envoy does not implement the ``self`` config source). Set per proxy by
    translate(), see node.py.
    """

    split: SplitMode = LOCALITY
    listener_address: str = "127.0.0.1"
    port_map: Mapping[int, int] = field(default_factory=dict)
    connect_timeout: float = 10.0  # Istio's default
    eds_api_type: str | None = None
    xds_cluster: str = "xds_cluster"

    def bind_port(self, gateway_port: int) -> int:
        return self.port_map.get(gateway_port, gateway_port)
