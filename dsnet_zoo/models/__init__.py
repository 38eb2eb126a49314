"""Architectures. Importing this package registers every family (one module per family)."""
from ._base import ZooClassifier
from ._builder import build_model
from . import lipnet  # noqa: F401  (registers the lipnet family)

__all__ = ["ZooClassifier", "build_model"]
