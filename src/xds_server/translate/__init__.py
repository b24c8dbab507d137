"""Translation: a validated Istio config in, Envoy protos out (pure functions)."""

from .options import ISTIO, LOCALITY, TranslateOptions
from .translator import route_cluster_name, subset_cluster_name, translate
from .types import CLUSTER, ENDPOINT, LISTENER, PUSH_ORDER, SHORT_NAMES, Resources

__all__ = [
    "CLUSTER",
    "ENDPOINT",
    "ISTIO",
    "LISTENER",
    "LOCALITY",
    "PUSH_ORDER",
    "SHORT_NAMES",
    "Resources",
    "TranslateOptions",
    "route_cluster_name",
    "subset_cluster_name",
    "translate",
]
