"""Cluster builders. Clusters carry connection settings; endpoints come from EDS."""

from __future__ import annotations

import functools
from collections.abc import Iterable

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import config_source_pb2

from ..config.model import DestinationRule, Subset, TrafficPolicy
from .options import TranslateOptions

NO_POLICY = TrafficPolicy()


def effective_policy(dr: DestinationRule | None, subset: Subset | None) -> TrafficPolicy:
    """A subset's connection pool fields override the rule's, field by field, as in Istio."""
    top = (dr.traffic_policy if dr else None) or NO_POLICY
    sub = (subset.traffic_policy if subset else None) or NO_POLICY
    if top is NO_POLICY and sub is NO_POLICY:  # the common case: worth a shortcut at 10k
        return NO_POLICY
    return TrafficPolicy(
        connect_timeout=sub.connect_timeout or top.connect_timeout,
        max_connections=sub.max_connections or top.max_connections,
    )


def merge_policies(policies: Iterable[TrafficPolicy]) -> TrafficPolicy:
    """One cluster serving several subsets: the longest connect timeout (no subset waits
    less than it asked for) and the sum of connection limits (none is starved); unlimited
    if any subset is."""
    policies = list(policies)
    if all(p is NO_POLICY for p in policies):
        return NO_POLICY
    timeouts = [p.connect_timeout for p in policies if p.connect_timeout]
    limits = [p.max_connections for p in policies]
    known = [n for n in limits if n]
    return TrafficPolicy(
        connect_timeout=max(timeouts) if timeouts else None,
        max_connections=sum(known) if limits and len(known) == len(limits) else None,
    )


def eds_source(options: TranslateOptions) -> config_source_pb2.ConfigSource:
    """Where a cluster's endpoints come from: the ADS stream, or (for a proxy bootstrapped
    without ADS) our per-type EDS service, reached through the bootstrap's xDS cluster."""
    return _eds_source(options.eds_api_type, options.xds_cluster)


@functools.lru_cache(maxsize=8)  # the same for every cluster of a translation: built once
def _eds_source(api_type: str | None, xds_cluster: str) -> config_source_pb2.ConfigSource:
    source = config_source_pb2.ConfigSource(resource_api_version=config_source_pb2.V3)
    if api_type is None:
        source.ads.SetInParent()
    else:
        api = source.api_config_source
        api.api_type = config_source_pb2.ApiConfigSource.ApiType.Value(api_type)
        api.transport_api_version = config_source_pb2.V3
        grpc = api.grpc_services.add().envoy_grpc
        grpc.cluster_name = xds_cluster
        # The bootstrap's back-off (envoy/bootstrap.yaml), so that a per-type EDS stream is
        # back as soon as the CDS and LDS streams after a control-plane restart.
        back_off = grpc.retry_policy.retry_back_off
        back_off.base_interval.FromMilliseconds(100)
        back_off.max_interval.FromMilliseconds(500)
        api.set_node_on_first_message_only = True
    return source


def build_cluster(
    name: str,
    policy: TrafficPolicy,
    options: TranslateOptions,
    *,
    weighted_localities: bool,
    dns: bool = False,
    least_request: bool = False,
) -> cluster_pb2.Cluster:
    """An EDS cluster (or STRICT_DNS when endpoints are names: EDS needs IP addresses).
    ``least_request``: Istio's default load balancer (else round robin, which gRPC
    clients and the locality split use)."""
    lb = cluster_pb2.Cluster.LEAST_REQUEST if least_request else cluster_pb2.Cluster.ROUND_ROBIN
    c = cluster_pb2.Cluster(name=name, lb_policy=lb)
    # In microseconds, the finest unit a duration is written in here: near the top of the
    # range, nanoseconds overflow int64.
    micros = round((policy.connect_timeout or options.connect_timeout) * 1e6)
    c.connect_timeout.FromMicroseconds(micros)
    if dns:
        c.type = cluster_pb2.Cluster.STRICT_DNS
    else:
        c.type = cluster_pb2.Cluster.EDS
        c.eds_cluster_config.eds_config.CopyFrom(eds_source(options))
    common = c.common_lb_config
    if weighted_localities:
        common.locality_weighted_lb_config.SetInParent()
    # Envoy merges endpoint weight changes for 1 s by default; a shift must show at once.
    common.update_merge_window.SetInParent()  # 0 s
    if policy.max_connections:
        c.circuit_breakers.thresholds.add().max_connections.value = policy.max_connections
    return c
