"""Shared test helpers and fixtures."""

import os
import subprocess
import sys

import pytest

from xds_server.config.load import load_paths
from xds_server.controlplane import ControlPlane
from xds_server.lab.lab import SAMPLES, EchoProcess
from xds_server.lab.server import ServerProcess

__all__ = ["TCP_ECHO_ENTRY", "ServerProcess", "locality_split_ok", "serve_once"]

# The tcp-echo service as a ServiceEntry selecting the samples' WorkloadEntries (its host
# written in full: Istio reads a ServiceEntry's hosts literally).
TCP_ECHO_ENTRY = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: tcp-echo
spec:
  hosts:
  - tcp-echo.default.svc.cluster.local
  ports:
  - number: 9000
    name: tcp
    protocol: TCP
  - number: 9001
    name: tcp-other
    protocol: TCP
  resolution: STATIC
  workloadSelector:
    labels:
      app: tcp-echo
"""


def serve_once(state_dir: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    """``xds-server serve --state-dir`` on free ports, for a start that must fail."""
    return subprocess.run(
        [sys.executable, "-m", "xds_server", "serve", "--state-dir", str(state_dir)]
        + ["--xds-port", "0", "--admin-port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )


def locality_split_ok(counts, n: int = 100, v2_share: float = 0.2) -> bool:
    """The default split mode's promise: Envoy's weighted locality scheduler is
    deterministic, so n connections split as the weights say to within one connection (it
    starts at a random point of its cycle, and rounding breaks 4:1 ties either way). A
    random split of 100 at 80/20 would only be held to 20 +/- 16 (4 sigma)."""
    return (
        set(counts) <= {"one", "two"}
        and sum(counts.values()) == n
        and abs(counts.get("two", 0) - n * v2_share) <= 1
    )


@pytest.fixture
def echoes():
    """tcp-echo v1 and v2 as real processes on free ports."""
    procs = [EchoProcess.start("v1", "one"), EchoProcess.start("v2", "two")]
    yield procs
    for p in procs:
        p.stop()


@pytest.fixture
def cp():
    """An in-process control plane holding the task's services and all-v1 routing."""
    with ControlPlane.start_in_thread() as cp:
        cp.apply(load_paths([SAMPLES / "tcp-echo-services.yaml"]))
        cp.apply(load_paths([SAMPLES / "tcp-echo-all-v1.yaml"]))
        yield cp


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fuzz-examples",
        type=int,
        default=None,
        metavar="N",
        help="examples per hypothesis fuzz test of the fault suite (default: a bounded CI size)",
    )


@pytest.fixture
def etcd(tmp_path):
    """One real etcd member (the `etcd` binary on PATH) on free loopback ports."""
    from xds_server.testing.etcd import EtcdCluster

    with EtcdCluster(1, tmp_path / "etcd") as cluster:
        yield cluster


@pytest.fixture
def etcd_cluster(tmp_path):
    """Three real etcd members forming one cluster, for failover tests."""
    from xds_server.testing.etcd import EtcdCluster

    with EtcdCluster(3, tmp_path / "etcd") as cluster:
        yield cluster
