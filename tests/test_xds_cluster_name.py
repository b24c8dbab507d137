"""A proxy without ADS gets clusters whose EDS source names the bootstrap's cluster for the
control plane. It was hard-coded ``xds_cluster``: a bootstrap that calls it otherwise got a
CDS NACK ("'xds_cluster' does not exist") and a listener without a cluster. The name comes
from the node's ``metadata.xds_cluster``, else from ``serve --xds-cluster``."""

from __future__ import annotations

import pytest
import yaml

from xds_server import ControlPlane, TranslateOptions
from xds_server.lab import traffic
from xds_server.lab.envoy import EnvoyProcess, render_bootstrap
from xds_server.lab.lab import SAMPLES

INGRESS = {"istio": "ingressgateway"}


def own_bootstrap(xds_port: int, name: str, *, tell: bool) -> dict:
    """A user's per-type bootstrap whose cluster for the control plane is ``name``; with
    ``tell``, its node says so in ``metadata.xds_cluster``."""
    doc = yaml.safe_load(render_bootstrap("ingressgateway", xds_port, labels=INGRESS, ads=False))
    (cluster,) = doc["static_resources"]["clusters"]
    cluster["name"] = cluster["load_assignment"]["cluster_name"] = name
    for config in doc["dynamic_resources"].values():
        for service in config["api_config_source"]["grpc_services"]:
            service["envoy_grpc"]["cluster_name"] = name
    if tell:
        doc["node"]["metadata"]["xds_cluster"] = name
    return doc


@pytest.mark.parametrize("source", ["node-metadata", "server-flag"])
def test_per_type_envoy_with_another_xds_cluster_name(source, echoes):
    options = TranslateOptions(
        xds_cluster="control_plane" if source == "server-flag" else "xds_cluster",
        port_map={31400: 0},
    )
    with ControlPlane.start_in_thread(xds_port=0, options=options) as cp:
        services = (SAMPLES / "tcp-echo-services.yaml").read_text().split("---\n")[0]
        cp.apply_yaml("---\n".join([services, *(e.workload_entry() for e in echoes)]))
        cp.apply_paths([str(SAMPLES / "tcp-echo-all-v1.yaml")])
        doc = own_bootstrap(cp.port, "control_plane", tell=source == "node-metadata")
        with EnvoyProcess(cp.port, bootstrap=yaml.safe_dump(doc)) as envoy:
            cp.wait_synced(timeout=20)  # a NACKed CDS never syncs
            port = envoy.wait_listener("0.0.0.0_31400")
            assert traffic.split(traffic.send_many("127.0.0.1", port, 5)) == {"one": 5}
