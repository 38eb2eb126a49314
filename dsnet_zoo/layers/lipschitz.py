"""The 1-Lipschitz layers' names in one place, for existing imports: each lives in the module of its job.

- operators (:mod:`~dsnet_zoo.layers.functional`): :func:`lip_conv`, :func:`lip_conv_adjoint`, ``PADDING_MODES``;
- certified bounds (:mod:`~dsnet_zoo.layers.norm_bounds`): ``REL_MARGIN``, :func:`conv_symbols`,
  :func:`gram_iteration_norm_bound`, :func:`singular_value_bounds`, :func:`operator_norm_bound`;
- diagnostics, lower bounds (:mod:`~dsnet_zoo.layers.diagnostics`): :func:`power_iteration_norm`,
  :func:`operator_power_iteration`, :func:`empirical_lipschitz`, :func:`iter_certified`;
- eval-mode caching (:mod:`~dsnet_zoo.layers.caching`): :class:`CachedModule`, :func:`clear_caches`;
- the constrained layers (:mod:`~dsnet_zoo.layers.constrained_linear`): :class:`ConstrainedLinearMap`,
  :class:`LipConv2d`, :class:`LipLinear`, :func:`normalizer_states`, :func:`load_normalizer_states`.

New code imports from those modules.
"""
from __future__ import annotations

from .caching import CachedModule, clear_caches
from .constrained_linear import ConstrainedLinearMap, LipConv2d, LipLinear, load_normalizer_states, normalizer_states
from .diagnostics import empirical_lipschitz, iter_certified, operator_power_iteration, power_iteration_norm
from .functional import PADDING_MODES, lip_conv, lip_conv_adjoint
from .norm_bounds import (REL_MARGIN, conv_symbols, gram_iteration_norm_bound, operator_norm_bound,
                          singular_value_bounds)

__all__ = [
    "REL_MARGIN",
    "PADDING_MODES",
    "lip_conv",
    "lip_conv_adjoint",
    "conv_symbols",
    "gram_iteration_norm_bound",
    "singular_value_bounds",
    "operator_norm_bound",
    "power_iteration_norm",
    "operator_power_iteration",
    "empirical_lipschitz",
    "CachedModule",
    "ConstrainedLinearMap",
    "LipConv2d",
    "LipLinear",
    "iter_certified",
    "clear_caches",
    "normalizer_states",
    "load_normalizer_states",
]
