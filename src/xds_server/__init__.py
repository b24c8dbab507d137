"""A small xDS control plane: Istio-style YAML in, Envoy config out over ADS.

The embedding API::

    from xds_server import ControlPlane

    with ControlPlane.start_in_thread(xds_port=18000) as cp:  # or `async with ControlPlane()`
        cp.apply_yaml(open("tcp-echo-all-v1.yaml").read(), "tcp-echo-all-v1.yaml")
        cp.wait_synced()  # every connected Envoy ACKed it
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config.errors import ConfigError, Problem, Source
    from .config.load import load_paths, load_text
    from .config.store import Change
    from .controlplane import BackgroundControlPlane, ControlPlane, PortInUseError
    from .translate import TranslateOptions, translate

__version__ = "0.1.0"

# Imported on first use, so that light entry points (``python -m xds_server.echo``) do not
# pay for gRPC and the Envoy protos.
_LAZY = {
    "ConfigError": ".config.errors",
    "Problem": ".config.errors",
    "Source": ".config.errors",
    "load_paths": ".config.load",
    "load_text": ".config.load",
    "Change": ".config.store",
    "BackgroundControlPlane": ".controlplane",
    "ControlPlane": ".controlplane",
    "PortInUseError": ".controlplane",
    "TranslateOptions": ".translate",
    "translate": ".translate",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BackgroundControlPlane",
    "Change",
    "ConfigError",
    "ControlPlane",
    "PortInUseError",
    "Problem",
    "Source",
    "TranslateOptions",
    "__version__",
    "load_paths",
    "load_text",
    "translate",
]
