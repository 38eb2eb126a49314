"""Architectures. Importing this package registers every family (one module per family)."""
from ._base import ZooClassifier
from ._builder import build_model

__all__ = ["ZooClassifier", "build_model"]
from . import lipnet_paper  # noqa: F401
