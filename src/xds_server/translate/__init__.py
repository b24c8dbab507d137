"""Translation: a validated Istio config in, Envoy protos out. translator.py: what each
resource translates to (pure functions); assemble.py: a kind of proxy's whole output, and
what a change changes in it."""

from .assemble import Assembler, Update, translate, translation_key
from .node import ANY_NODE, NodeProfile
from .options import ISTIO, LOCALITY, TranslateOptions
from .refs import REFERS_TO, references
from .translator import route_cluster_name, subset_cluster_name
from .types import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    PUSH_ORDER,
    SHORT_NAMES,
    WILDCARD_TYPES,
    Resources,
)

__all__ = [
    "ANY_NODE",
    "Assembler",
    "Update",
    "CLUSTER",
    "ENDPOINT",
    "ISTIO",
    "LISTENER",
    "LOCALITY",
    "NodeProfile",
    "PUSH_ORDER",
    "REFERS_TO",
    "SHORT_NAMES",
    "WILDCARD_TYPES",
    "Resources",
    "TranslateOptions",
    "references",
    "route_cluster_name",
    "subset_cluster_name",
    "translate",
    "translation_key",
]
