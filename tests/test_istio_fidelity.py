"""Istio's meaning for what is served: the cases where reading a config another way than
Istio would route traffic somewhere else."""

from __future__ import annotations

from pathlib import Path

import pytest

from xds_server.config.errors import ConfigError
from xds_server.config.load import load_text
from xds_server.lab import traffic
from xds_server.lab.lab import SAMPLES, Lab

ALL_V1 = SAMPLES / "tcp-echo-all-v1.yaml"
ISTIO_SAMPLES = Path(__file__).parent / "istio_samples"  # Istio's files, unchanged

# The service tcp-echo in another namespace, with a v1 subset whose endpoint is the
# server that answers "two": default's gateway must never reach it.
OTHER_NAMESPACE = """\
apiVersion: v1
kind: Service
metadata: {{name: tcp-echo, namespace: app}}
spec:
  ports: [{{name: tcp, port: 9000}}]
  selector: {{app: tcp-echo}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: tcp-echo, namespace: app}}
spec: {{address: {address}, ports: {{tcp: {port}}}, labels: {{app: tcp-echo, version: v1}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: tcp-echo, namespace: app}}
spec:
  host: tcp-echo
  subsets: [{{name: v1, labels: {{version: v1}}}}]
"""


def test_one_short_host_in_two_namespaces_is_two_clusters():
    """Istio mode names a cluster after the fully qualified host, so app's tcp-echo
    (tcp-echo.app.svc.cluster.local) and default's are two clusters with their own
    endpoints; a cluster named after the short name was shared, with app's endpoints."""
    with Lab(ingress_port=0, xds_port=0, admin_port=0, split="istio") as lab:
        v2 = next(e for e in lab.echoes if e.version == "v2")
        host, port = v2.addresses[0]
        lab.apply_yaml(OTHER_NAMESPACE.format(address=host, port=port))
        lab.apply([ALL_V1])
        assert traffic.split(lab.send(20)) == {"one": 20}
        clusters = lab.envoy.admin_get("/clusters")
        for ns in ("default", "app"):
            assert f"outbound|9000|v1|tcp-echo.{ns}.svc.cluster.local::" in clusters


def test_a_shadowed_route_is_accepted_and_takes_over_when_the_first_goes():
    """Two VirtualServices on one gateway port: Istio accepts both and serves one. The
    other (a warning) serves the port once the first is deleted."""
    with Lab(ingress_port=0, xds_port=0, admin_port=0) as lab:
        lab.apply([ALL_V1])
        first = ALL_V1.read_text().split("---\n")[-1]
        assert "kind: VirtualService" in first
        shadowing = first.replace("name: tcp-echo\n", "name: a-first\n", 1)
        shadowing = shadowing.replace("subset: v1", "subset: v2")
        applied = lab.apply_yaml(shadowing)
        [warning] = applied.warnings
        assert warning.name == "default/tcp-echo" and warning.warning
        assert "already routed by VirtualService default/a-first" in warning.message
        assert traffic.split(lab.send(20)) == {"two": 20}
        lab.cp.delete("VirtualService", "a-first")
        lab.wait_synced()
        assert traffic.split(lab.send(20)) == {"one": 20}


def test_istios_own_sample_files_apply_unchanged():
    """Istio's tcp-echo-services.yaml as it is: its two Deployments are refused, each with
    what to do instead; its Service document, unchanged, is the service, and finds the
    echo servers' WorkloadEntries by its selector. Istio's all-v1 and 20-v2 files then run
    the task: all "one", then 80/20."""
    text = (ISTIO_SAMPLES / "tcp-echo-services.yaml").read_text()
    with pytest.raises(ConfigError) as e:
        load_text(text, "tcp-echo-services.yaml")
    assert [(p.kind, p.field, p.source.doc) for p in e.value.problems] == [
        ("Deployment", "kind", 2),
        ("Deployment", "kind", 3),
    ]
    assert "describe each instance with a WorkloadEntry" in e.value.problems[0].message
    [service] = [d for d in text.split("---\n") if "\nkind: Service\n" in d]
    with Lab(ingress_port=0, xds_port=0, admin_port=0) as lab:
        lab.cp.delete("Service", "tcp-echo")  # the lab's copy of it
        [created] = lab.apply_yaml(service)
        assert str(created) == "service/tcp-echo created"
        lab.apply([ISTIO_SAMPLES / "tcp-echo-all-v1.yaml"])
        assert traffic.split(lab.send(20)) == {"one": 20}
        lab.apply([ISTIO_SAMPLES / "tcp-echo-20-v2.yaml"])
        counts = traffic.split(lab.send(100))
        assert abs(counts["two"] - 20) <= 1 and sum(counts.values()) == 100, counts
