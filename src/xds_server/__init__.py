"""A small xDS control plane: Istio-style YAML in, Envoy config out over ADS.

The embedding API::

    from xds_server import ControlPlane

    with ControlPlane.start_in_thread(xds_port=18000) as cp:  # or `async with ControlPlane()`
        cp.apply_yaml(open("tcp-echo-all-v1.yaml").read(), "tcp-echo-all-v1.yaml")
        cp.wait_synced()  # every connected Envoy ACKed it
"""

from .config.errors import ConfigError, Problem, Source
from .config.load import load_paths, load_text
from .config.store import Change
from .controlplane import BackgroundControlPlane, ControlPlane, PortInUseError
from .translate import TranslateOptions, translate

__version__ = "0.1.0"

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
