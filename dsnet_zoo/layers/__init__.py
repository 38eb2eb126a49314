"""Structure-preserving layers, one module per structure."""
from .functional import conv_adjoint, conv_op, gradient_step
from .hamiltonian import HamiltonianBlock
from .mass import (MassPreservingBlock, MassPreservingConvBlock, SumPreservingLift, SumPreservingLinear,
                   SumPreservingProjection)
from .sphere import SphereBlock, SphereConvBlock
from .volume import VolumePreservingBlock

__all__ = ["conv_adjoint", "conv_op", "gradient_step"]
__all__ += ["HamiltonianBlock"]
__all__ += ["MassPreservingBlock", "MassPreservingConvBlock", "SumPreservingLift", "SumPreservingLinear",
            "SumPreservingProjection"]
__all__ += ["SphereBlock", "SphereConvBlock"]
__all__ += ["VolumePreservingBlock"]
