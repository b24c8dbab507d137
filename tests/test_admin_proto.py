"""The committed admin API code must be what grpcio-tools makes of proto/ today."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTO = "xds_server/admin/v1/admin.proto"
GENERATED = ("admin_pb2.py", "admin_pb2.pyi", "admin_pb2_grpc.py")


def test_generated_code_is_fresh(tmp_path):
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
            str(ROOT / "proto" / PROTO),
        ],
        check=True,
    )
    for name in GENERATED:
        fresh = (tmp_path / "xds_server/admin/v1" / name).read_text()
        committed = (ROOT / "src/xds_server/admin/v1" / name).read_text()
        assert committed == fresh, (
            f"src/xds_server/admin/v1/{name} is stale: run `make proto` and commit the result"
        )
