"""Architectures. Importing this package registers every family (one module per family)."""
from ._base import ZooClassifier
from ._builder import build_model
from . import hamnet  # noqa: F401
from . import lipnet  # noqa: F401
from . import lipflow  # noqa: F401
from . import massnet  # noqa: F401
from . import vpnet  # noqa: F401
from . import massnet_weights  # noqa: F401  (registers the zoo's massnet_sir weights)
from . import lipnet_weights  # noqa: F401  (registers the certified flagships' weights)
from . import structured_weights  # noqa: F401  (registers the hamnet / vpnet weights)

__all__ = ["ZooClassifier", "build_model"]
from . import lipnet_paper  # noqa: F401
