"""dsnet_zoo: neural networks built as structure-preserving discretisations of ODEs.

>>> import dsnet_zoo
>>> model = dsnet_zoo.create("lipnet_cifar10")          # random weights
>>> dsnet_zoo.list_models("lipnet*")
"""
from __future__ import annotations

from ._version import __version__
from ._api import create, model_info
from .hub import WeightsCfg, WeightsError
from .registry import (RetiredWeightsError, UnknownModelError, list_models, list_pretrained, register_model,
                       register_pretrained)
from . import models  # noqa: F401  (registers the architectures)
from ._import_hook import when_imported

__all__ = [
    "create", "model_info", "list_models", "list_pretrained", "register_model", "register_pretrained",
    "WeightsCfg", "WeightsError", "UnknownModelError", "RetiredWeightsError", "__version__",
]


def _register_with_timm() -> None:
    from . import _timm

    _timm.register_all()


# timm takes seconds to import: register with it when (and only if) the program imports it
when_imported("timm", _register_with_timm)
