"""Translation: golden files for the task's YAML, and the weight rules that Envoy enforces."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.extensions.filters.network.tcp_proxy.v3.tcp_proxy_pb2 import TcpProxy
from google.protobuf import json_format

from xds_server.config.load import load_paths, load_text
from xds_server.config.store import ConfigStore
from xds_server.lab.lab import SAMPLES
from xds_server.translate import ISTIO, LOCALITY, TranslateOptions, translate


def applied(*batches) -> list:
    """The config after applying each batch in turn, as kubectl apply would."""
    store = ConfigStore()
    for batch in batches:
        store.apply(load_paths([batch]) if isinstance(batch, Path) else batch)
    return store.resources()


GOLDEN = Path(__file__).parent / "golden"
SERVICES = SAMPLES / "tcp-echo-services.yaml"
ALL_V1 = SAMPLES / "tcp-echo-all-v1.yaml"
V2_20 = SAMPLES / "tcp-echo-20-v2.yaml"


def as_json(resources) -> dict:
    return {
        kind: {
            name: json_format.MessageToDict(msg, preserving_proto_field_name=True)
            for name, msg in sorted(by_name.items())
        }
        for kind, by_name in (
            ("listeners", resources.listeners),
            ("clusters", resources.clusters),
            ("endpoints", resources.endpoints),
        )
    }


CASES = {
    "all-v1.locality": ([SERVICES, ALL_V1], LOCALITY),
    "20-v2.locality": ([SERVICES, ALL_V1, V2_20], LOCALITY),
    "all-v1.istio": ([SERVICES, ALL_V1], ISTIO),
    "20-v2.istio": ([SERVICES, ALL_V1, V2_20], ISTIO),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case):
    """Set UPDATE_GOLDEN=1 to rewrite the files after an intended change, then review the
    diff."""
    paths, split = CASES[case]
    got = as_json(translate(applied(*paths), TranslateOptions(split=split)))
    path = GOLDEN / f"{case}.json"
    if os.environ.get("UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(got, indent=2, sort_keys=True) + "\n")
    assert got == json.loads(path.read_text())


def vs_with_weights(*weights: int | None) -> str:
    route = ""
    for subset, weight in zip(("v1", "v2"), weights, strict=False):
        route += (
            f"    - destination: {{host: tcp-echo, port: {{number: 9000}}, subset: {subset}}}\n"
        )
        if weight is not None:
            route += f"      weight: {weight}\n"
    return (
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: tcp-echo}\n"
        'spec:\n  hosts: ["*"]\n  gateways: [tcp-echo-gateway]\n'
        "  tcp:\n  - match: [{port: 31400}]\n    route:\n" + route
    )


def localities(weights: tuple[int | None, ...], split: str = LOCALITY) -> list[tuple]:
    resources = applied(SERVICES, ALL_V1, load_text(vs_with_weights(*weights)))
    out = translate(resources, TranslateOptions(split=split))
    (cla,) = out.endpoints.values() if split == LOCALITY else (None,)
    return [(e.locality.zone, e.load_balancing_weight.value) for e in cla.endpoints]


def test_zero_weight_destination_is_left_out():
    assert localities((100, 0)) == [("v1", 100)]
    assert localities((0, 100)) == [("v2", 100)]


def test_weights_are_passed_through_as_relative():
    assert localities((80, 20)) == [("v1", 80), ("v2", 20)]
    assert localities((3, 1)) == [("v1", 3), ("v2", 1)]


def test_lone_destination_gets_everything():
    assert localities((None,)) == [("v1", 100)]


def test_locality_mode_keeps_listener_and_cluster_across_weight_changes():
    """The whole point of the default mode: only EDS changes when weights change."""
    a = translate(load_paths([SERVICES, ALL_V1]), TranslateOptions())
    b = translate(applied(SERVICES, ALL_V1, V2_20), TranslateOptions())
    assert a.listeners == b.listeners
    assert a.clusters == b.clusters
    assert a.endpoints != b.endpoints


def test_istio_mode_zero_weight_left_out_of_weighted_clusters():
    from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

    resources = applied(SERVICES, ALL_V1, load_text(vs_with_weights(0, 100)))
    out = translate(resources, TranslateOptions(split=ISTIO))
    proxy = tcp_proxy_pb2.TcpProxy()
    out.listeners["0.0.0.0_31400"].filter_chains[0].filters[0].typed_config.Unpack(proxy)
    assert proxy.cluster == "outbound|9000|v2|tcp-echo.default.svc.cluster.local"
    assert not proxy.weighted_clusters.clusters


def test_port_map_and_bind_address():
    out = translate(
        load_paths([SERVICES, ALL_V1]),
        TranslateOptions(listener_address="0.0.0.0", port_map={31400: 41400}),
    )
    listener = out.listeners["0.0.0.0_31400"]
    assert listener.address.socket_address.address == "0.0.0.0"
    assert listener.address.socket_address.port_value == 41400


def test_per_type_eds_source_reconnects_as_fast_as_the_bootstrap():
    """A proxy without ADS opens an EDS stream per the cluster's config source: it must back
    off like the bootstrap's streams, or EDS lags seconds behind after a restart."""
    config = applied(SERVICES, ALL_V1)
    out = translate(config, TranslateOptions(eds_api_type="GRPC", xds_cluster="my_xds"))
    (cluster,) = out.clusters.values()
    api = cluster.eds_cluster_config.eds_config.api_config_source
    (service,) = api.grpc_services
    assert service.envoy_grpc.cluster_name == "my_xds"
    back_off = service.envoy_grpc.retry_policy.retry_back_off
    assert back_off.base_interval.ToMilliseconds() == 100
    assert back_off.max_interval.ToMilliseconds() == 500


def test_istio_mode_has_istios_names_and_defaults():
    """What istioctl proxy-config shows for the task's gateway: clusters after the FQDN with
    Istio's default load balancer (LEAST_REQUEST), a tcp_proxy whose stat_prefix is the
    cluster's name, or the VirtualService's name.namespace when it weighs several."""
    options = TranslateOptions(split=ISTIO)
    one = translate(applied(SERVICES, ALL_V1), options)
    split = translate(applied(SERVICES, ALL_V1, V2_20), options)
    fqdn = "tcp-echo.default.svc.cluster.local"
    assert {c.lb_policy for c in one.clusters.values()} == {Cluster.LEAST_REQUEST}
    assert all(name.endswith(f"|{fqdn}") for name in one.clusters)
    assert _tcp_proxy(one).stat_prefix == f"outbound|9000|v1|{fqdn}"
    assert _tcp_proxy(split).stat_prefix == "tcp-echo.default"


def _tcp_proxy(resources) -> TcpProxy:
    [listener] = resources.listeners.values()
    proxy = TcpProxy()
    listener.filter_chains[0].filters[0].typed_config.Unpack(proxy)
    return proxy
