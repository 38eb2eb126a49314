"""Structure-preserving layers, one module per structure."""
from .functional import conv_adjoint, conv_op, gradient_step
from .lipschitz import (REL_MARGIN, CachedModule, ConstrainedLinearMap, LipConv2d, LipLinear, clear_caches,
                        empirical_lipschitz, lip_conv, lip_conv_adjoint, operator_norm_bound,
                        operator_power_iteration, power_iteration_norm, singular_value_bounds)
from .gradient_flow import (ContractiveStep, ExpansiveStep, SwitchingPair, contractive_factor,
                            prescribed_expansive_step)
from .euler import ActivationField, ExplicitEuler

__all__ = ["conv_adjoint", "conv_op", "gradient_step"]
__all__ += ["REL_MARGIN", "CachedModule", "ConstrainedLinearMap", "LipConv2d", "LipLinear", "clear_caches",
            "empirical_lipschitz", "lip_conv", "lip_conv_adjoint", "operator_norm_bound",
            "operator_power_iteration", "power_iteration_norm", "singular_value_bounds",
            "ContractiveStep", "ExpansiveStep", "SwitchingPair", "contractive_factor",
            "prescribed_expansive_step", "ActivationField", "ExplicitEuler"]
