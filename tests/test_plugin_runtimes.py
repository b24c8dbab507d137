"""The pytest plugin, as a user's project meets it: the README's example test
(tests/test_plugin_example.py) run by a fresh pytest, which loads the plugin through its
``pytest11`` entry point, once with local processes and once with containers."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from xds_server.testing.runtime import require_docker

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "tests" / "test_plugin_example.py"


@pytest.mark.parametrize("runtime", ["process", "docker"])
def test_example_passes_in_each_runtime(runtime: str) -> None:
    if runtime == "docker":
        require_docker()
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE)]
    done = subprocess.run(
        [*cmd, f"--envoy-runtime={runtime}", "-rs"],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = done.stdout + done.stderr
    # Passed, not skipped: a skip inside would hide a runtime that does not work.
    assert done.returncode == 0 and re.search(r"\b1 passed\b", output), output
    assert "skipped" not in output, output


def test_readme_shows_the_example_test_as_it_is() -> None:
    """The README's copy of the example is the file that these tests run."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    code = EXAMPLE.read_text(encoding="utf-8").split('"""\n', 1)[1].strip()  # minus docstring
    assert code in readme, "README's pytest plugin example differs from " + EXAMPLE.name
