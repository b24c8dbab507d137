"""Cluster builders. Clusters carry connection settings; endpoints come from EDS."""

from __future__ import annotations

from collections.abc import Iterable

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2
from envoy.config.core.v3 import config_source_pb2
from google.protobuf import duration_pb2

from ..config.model import DestinationRule, Subset, TrafficPolicy
from .options import TranslateOptions


def effective_policy(dr: DestinationRule | None, subset: Subset | None) -> TrafficPolicy:
    """A subset's connection pool fields override the rule's, field by field, as in Istio."""
    top = (dr.traffic_policy if dr else None) or TrafficPolicy()
    sub = (subset.traffic_policy if subset else None) or TrafficPolicy()
    return TrafficPolicy(
        connect_timeout=sub.connect_timeout or top.connect_timeout,
        max_connections=sub.max_connections or top.max_connections,
    )


def merge_policies(policies: Iterable[TrafficPolicy]) -> TrafficPolicy:
    """One cluster serving several subsets: the longest connect timeout (no subset waits
    less than it asked for) and the sum of connection limits (none is starved); unlimited
    if any subset is."""
    policies = list(policies)
    timeouts = [p.connect_timeout for p in policies if p.connect_timeout]
    limits = [p.max_connections for p in policies]
    return TrafficPolicy(
        connect_timeout=max(timeouts) if timeouts else None,
        max_connections=sum(limits) if limits and all(limits) else None,
    )


def _duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(round(seconds * 1e9))
    return d


def eds_source(options: TranslateOptions) -> config_source_pb2.ConfigSource:
    """Where a cluster's endpoints come from: the ADS stream, or (for a proxy bootstrapped
    without ADS) our per-type EDS service, reached through the bootstrap's xDS cluster."""
    source = config_source_pb2.ConfigSource(resource_api_version=config_source_pb2.V3)
    if options.eds_api_type is None:
        source.ads.SetInParent()
    else:
        api = source.api_config_source
        api.api_type = config_source_pb2.ApiConfigSource.ApiType.Value(options.eds_api_type)
        api.transport_api_version = config_source_pb2.V3
        api.grpc_services.add().envoy_grpc.cluster_name = options.xds_cluster
        api.set_node_on_first_message_only = True
    return source


def build_cluster(
    name: str,
    policy: TrafficPolicy,
    options: TranslateOptions,
    *,
    weighted_localities: bool,
    dns: bool = False,
) -> cluster_pb2.Cluster:
    """An EDS cluster (or STRICT_DNS when endpoints are names: EDS needs IP addresses)."""
    c = cluster_pb2.Cluster(
        name=name,
        connect_timeout=_duration(policy.connect_timeout or options.connect_timeout),
        lb_policy=cluster_pb2.Cluster.ROUND_ROBIN,
    )
    if dns:
        c.type = cluster_pb2.Cluster.STRICT_DNS
    else:
        c.type = cluster_pb2.Cluster.EDS
        c.eds_cluster_config.eds_config.CopyFrom(eds_source(options))
    if weighted_localities:
        c.common_lb_config.locality_weighted_lb_config.SetInParent()
    # Envoy merges endpoint weight changes for 1 s by default; a shift must show at once.
    c.common_lb_config.update_merge_window.CopyFrom(_duration(0))
    if policy.max_connections:
        c.circuit_breakers.thresholds.append(
            circuit_breaker_pb2.CircuitBreakers.Thresholds(
                max_connections={"value": policy.max_connections}
            )
        )
    return c
