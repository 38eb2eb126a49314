"""Structure-preserving layers, one module per structure."""
from .functional import conv_adjoint, conv_op, gradient_step

__all__ = ["conv_adjoint", "conv_op", "gradient_step"]
