"""2-D convolutions written as matmuls over explicit patches (pure JAX, a drop-in for ``nn.Conv``).

Why: on XLA:CPU (jax 0.10, YNNPACK convolutions) the *kernel gradient* of a convolution with few
input channels is computed as a convolution whose window is the whole feature map (batch and
channels swapped), which runs at 5-15 GFLOP/s on a 2-core AVX-512 EPYC, 10-30x below the matmul
rate. ``patches(x)^T @ grad`` computes the same sum with one large matmul. For 64-channel 3x3
convolutions at small spatial size the XLA convolution is faster in every direction, so the
default (``kernel_grad='auto'``) only switches to the matmul where the patch row is short
(``kh * kw * in_features <= 288``: the seed CNN's two stem convolutions). Measured in
``scripts/conv_bench.py``.

``conv2d(x, kernel, ...)`` is exact up to float reassociation: forward, input gradient and kernel
gradient equal ``lax.conv_general_dilated``'s to float32 tolerance (``tests/test_conv_ops.py``).
``MatmulConv`` has ``nn.Conv``'s fields, parameter names and shapes (``kernel [kh, kw, in, out]``,
``bias [out]``), so checkpoints and parameter counts do not change when a model's ``conv`` factory
is swapped.
"""

from __future__ import annotations

from collections.abc import Sequence
import functools

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp

_DN = ('NHWC', 'HWIO', 'NHWC')
# Patch rows up to this length take the matmul kernel gradient under kernel_grad='auto'.
AUTO_MAX_PATCH = 288

Padding = str | int | Sequence[int] | Sequence[tuple[int, int]]


def explicit_padding(padding: Padding, spatial: Sequence[int], kernel_size: Sequence[int],
                     strides: Sequence[int]) -> tuple[tuple[int, int], ...]:
  """``((lo, hi), (lo, hi))`` as ``nn.Conv`` resolves 'SAME' / 'VALID' / int / pairs."""
  if isinstance(padding, str):
    if padding.upper() not in ('SAME', 'VALID'):
      raise ValueError(f"padding must be 'SAME', 'VALID', an int or pairs, got {padding!r}")
    return tuple(lax.padtype_to_pads(spatial, kernel_size, strides, padding.upper()))
  if isinstance(padding, int):
    return ((padding, padding),) * len(spatial)
  pads = []
  for p in padding:
    pads.append((p, p) if isinstance(p, int) else tuple(p))
  if len(pads) != len(spatial):
    raise ValueError(f'padding {padding!r} does not match {len(spatial)} spatial dims')
  return tuple(pads)


def patches(x: jax.Array, kernel_size: Sequence[int], strides: Sequence[int],
            pads: Sequence[tuple[int, int]]) -> jax.Array:
  """im2col: ``[N, Ho, Wo, kh * kw * C]``, features ordered (kh, kw, C) as ``kernel.reshape``."""
  (kh, kw), (sh, sw) = kernel_size, strides
  x = jnp.pad(x, ((0, 0), *pads, (0, 0)))
  _, h, w, _ = x.shape
  ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
  taps = [x[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw, :]
          for i in range(kh) for j in range(kw)]
  return taps[0] if len(taps) == 1 else jnp.concatenate(taps, axis=-1)


def _xla_conv(x, kernel, strides, pads, precision):
  return lax.conv_general_dilated(x, kernel, strides, pads, dimension_numbers=_DN,
                                  precision=precision)


def _matmul_conv(x, kernel, strides, pads, precision):
  kh, kw, cin, cout = kernel.shape
  p = patches(x, (kh, kw), strides, pads)
  return jnp.dot(p, kernel.reshape(kh * kw * cin, cout), precision=precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _conv_patch_grad(x, kernel, strides, pads, precision, forward):
  fn = _matmul_conv if forward == 'matmul' else _xla_conv
  return fn(x, kernel, strides, pads, precision)


def _conv_patch_grad_fwd(x, kernel, strides, pads, precision, forward):
  return _conv_patch_grad(x, kernel, strides, pads, precision, forward), (x, kernel)


def _conv_patch_grad_bwd(strides, pads, precision, forward, res, g):
  x, kernel = res
  kh, kw, cin, cout = kernel.shape
  # Input gradient: XLA's transposed convolution (faster than col2im on every shape measured).
  _, vjp_x = jax.vjp(lambda x_: _xla_conv(x_, kernel, strides, pads, precision), x)
  (dx,) = vjp_x(g)
  # Kernel gradient: patches^T @ grad, one [kh*kw*cin, M] x [M, cout] matmul.
  p = patches(x, (kh, kw), strides, pads).reshape(-1, kh * kw * cin)
  dk = lax.dot_general(p, g.reshape(-1, cout).astype(p.dtype), (((0,), (0,)), ((), ())),
                       precision=precision)
  del forward
  return dx, dk.reshape(kernel.shape).astype(kernel.dtype)


_conv_patch_grad.defvjp(_conv_patch_grad_fwd, _conv_patch_grad_bwd)


def conv2d(x: jax.Array, kernel: jax.Array, strides: int | Sequence[int] = 1,
           padding: Padding = 'SAME', *, forward: str = 'xla', kernel_grad: str = 'auto',
           precision=None) -> jax.Array:
  """NHWC x HWIO convolution, ``feature_group_count=1``, no dilation.

  ``forward``: 'xla' (``lax.conv_general_dilated``) or 'matmul' (patches @ kernel).
  ``kernel_grad``: 'xla' (autodiff of the forward), 'matmul' (patches^T @ grad) or 'auto'
  ('matmul' when ``kh * kw * in <= AUTO_MAX_PATCH``, else 'xla').
  """
  if x.ndim != 4 or kernel.ndim != 4:
    raise ValueError(f'conv2d wants NHWC input and HWIO kernel, got {x.shape} and {kernel.shape}')
  if kernel.shape[2] != x.shape[3]:
    raise ValueError(f'kernel in-features {kernel.shape[2]} != input channels {x.shape[3]} '
                     '(feature_group_count > 1 is not supported)')
  strides = (strides, strides) if isinstance(strides, int) else tuple(strides)
  kh, kw, cin, _ = kernel.shape
  pads = explicit_padding(padding, x.shape[1:3], (kh, kw), strides)
  if forward not in ('xla', 'matmul'):
    raise ValueError(f"forward must be 'xla' or 'matmul', got {forward!r}")
  if kernel_grad == 'auto':  # measured on XLA:CPU only; GPUs and TPUs keep their own kernels
    kernel_grad = ('matmul' if kh * kw * cin <= AUTO_MAX_PATCH and jax.default_backend() == 'cpu'
                   else 'xla')
  if kernel_grad == 'matmul':
    return _conv_patch_grad(x, kernel, strides, pads, precision, forward)
  if kernel_grad != 'xla':
    raise ValueError(f"kernel_grad must be 'xla', 'matmul' or 'auto', got {kernel_grad!r}")
  fn = _matmul_conv if forward == 'matmul' else _xla_conv
  return fn(x, kernel, strides, pads, precision)


class MatmulConv(nn.Module):
  """``nn.Conv`` (2-D, NHWC, groups 1) whose kernel gradient may be a patches matmul.

  Same fields and parameters as ``nn.Conv``: ``kernel [kh, kw, in, features]``, ``bias
  [features]``; pass it (or a ``functools.partial`` of it) wherever a model takes a ``conv``
  factory. ``forward`` and ``kernel_grad`` pick the formulation (see ``conv2d``).
  """

  features: int
  kernel_size: int | Sequence[int] = (3, 3)
  strides: int | Sequence[int] = 1
  padding: Padding = 'SAME'
  feature_group_count: int = 1
  use_bias: bool = True
  dtype: jnp.dtype | None = None
  param_dtype: jnp.dtype = jnp.float32
  precision: lax.Precision | None = None
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
  bias_init: nn.initializers.Initializer = nn.initializers.zeros_init()
  forward: str = 'xla'
  kernel_grad: str = 'auto'

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.feature_group_count != 1:
      raise NotImplementedError('MatmulConv supports feature_group_count=1 only')
    ks = (self.kernel_size,) * 2 if isinstance(self.kernel_size, int) else tuple(self.kernel_size)
    if len(ks) != 2:
      raise ValueError(f'MatmulConv is 2-D: kernel_size {self.kernel_size!r}')
    kernel = self.param('kernel', self.kernel_init, (*ks, x.shape[-1], self.features),
                        self.param_dtype)
    bias = (self.param('bias', self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias else None)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    y = conv2d(x, kernel, self.strides, self.padding, forward=self.forward,
               kernel_grad=self.kernel_grad, precision=self.precision)
    if bias is not None:
      y = y + bias
    return y
