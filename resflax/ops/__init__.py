"""Alternative formulations of standard ops (pure JAX / Linen), drop-ins for flax's."""

from resflax.ops.conv import MatmulConv, conv2d, patches

__all__ = ['MatmulConv', 'conv2d', 'patches']
