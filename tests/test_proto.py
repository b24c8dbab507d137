"""The committed gRPC code (the admin API, the etcd client's) must be what grpcio-tools
makes of proto/ today; and the etcd stubs call the paths an etcd server serves."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GENERATED = {  # package -> its protos
    "xds_server/admin/v1": ("admin",),
    "xds_server/config/etcdpb": ("rpc", "kv", "auth"),
}


@pytest.mark.parametrize("package", sorted(GENERATED))
def test_generated_code_is_fresh(tmp_path, package):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I",
            str(ROOT / "proto"),
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            *(str(ROOT / "proto" / package / f"{name}.proto") for name in GENERATED[package]),
        ],
        check=True,
    )
    generated = sorted(p.name for p in (tmp_path / package).iterdir())
    committed = sorted(p.name for p in (ROOT / "src" / package).glob("*_pb2*"))
    assert committed == generated, f"src/{package}: run `make proto` and commit the result"
    for name in generated:
        fresh = (tmp_path / package / name).read_text()
        assert (ROOT / "src" / package / name).read_text() == fresh, (
            f"src/{package}/{name} is stale: run `make proto` and commit the result"
        )


def test_method_paths_are_etcds():
    """The proto packages are etcd's own, so the stubs call the paths an etcd server serves."""
    from xds_server.config.etcdpb import rpc_pb2

    kv = rpc_pb2.DESCRIPTOR.services_by_name["KV"]
    assert kv.full_name == "etcdserverpb.KV"
    assert rpc_pb2.RangeResponse.DESCRIPTOR.fields_by_name["kvs"].message_type.full_name == (
        "mvccpb.KeyValue"
    )
