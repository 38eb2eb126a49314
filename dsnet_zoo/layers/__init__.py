"""Structure-preserving layers, one module per structure."""
from .functional import conv_adjoint, conv_op, gradient_step
from .euler import ActivationField, ExplicitEuler
from .gradient_flow import (ContractiveStep, ExpansiveStep, SwitchingPair, contractive_factor,
                            prescribed_expansive_step)
from .hamiltonian import HamiltonianBlock
from .caching import CachedModule, clear_caches
from .constrained_linear import ConstrainedLinearMap, LipConv2d, LipLinear
from .diagnostics import empirical_lipschitz, operator_power_iteration, power_iteration_norm
from .functional import lip_conv, lip_conv_adjoint
from .norm_bounds import REL_MARGIN, operator_norm_bound, singular_value_bounds
from .mass import (MassPreservingBlock, MassPreservingConvBlock, SumPreservingLift, SumPreservingLinear,
                   SumPreservingProjection)
from .sphere import SphereBlock, SphereConvBlock
from .volume import VolumePreservingBlock

__all__ = [
    "conv_adjoint", "conv_op", "gradient_step",
    "ActivationField", "ExplicitEuler",
    "ContractiveStep", "ExpansiveStep", "SwitchingPair", "contractive_factor", "prescribed_expansive_step",
    "HamiltonianBlock",
    "REL_MARGIN", "CachedModule", "ConstrainedLinearMap", "LipConv2d", "LipLinear", "clear_caches", "empirical_lipschitz",
    "lip_conv", "lip_conv_adjoint", "operator_norm_bound", "operator_power_iteration", "power_iteration_norm",
    "singular_value_bounds",
    "MassPreservingBlock", "MassPreservingConvBlock", "SumPreservingLift", "SumPreservingLinear",
    "SumPreservingProjection",
    "SphereBlock", "SphereConvBlock",
    "VolumePreservingBlock",
]
