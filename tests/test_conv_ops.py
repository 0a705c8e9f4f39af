"""resflax.ops.conv: MatmulConv / conv2d equal nn.Conv (forward and all gradients) to f32 tolerance."""

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resflax import blocks
from resflax.ops import conv as conv_ops

RTOL, ATOL = 1e-4, 1e-5

CASES = [
    # (input shape NHWC, features, kernel, strides, padding)
    ((2, 9, 9, 64), 64, (3, 3), 1, 'SAME'),
    ((3, 12, 10, 3), 8, (3, 3), 1, 'VALID'),
    ((2, 11, 11, 5), 7, (3, 3), 2, 'SAME'),
    ((2, 10, 9, 4), 6, (3, 3), 2, 'VALID'),
    ((2, 8, 8, 4), 6, (3, 3), 1, 1),
    ((2, 8, 8, 4), 6, (3, 3), 2, ((1, 0), (2, 1))),
    ((2, 13, 13, 3), 4, (6, 6), 3, 'VALID'),
    ((2, 7, 9, 4), 3, (2, 3), (1, 2), 'SAME'),
]
# Every case with the XLA forward and the matmul kernel gradient (what 'auto' picks for short
# patch rows); the matmul forward on a few.
MODES = [('xla', 'matmul'), ('matmul', 'matmul'), ('matmul', 'xla')]


def _close(a, b):
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=RTOL, atol=ATOL)


def _check(ref_module, module, x):
  variables = ref_module.init(jax.random.key(1), x)
  # Same parameter tree (names and shapes): checkpoints and counts are interchangeable.
  assert (jax.tree.map(jnp.shape, jax.eval_shape(module.init, jax.random.key(1), x))
          == jax.tree.map(jnp.shape, variables))
  g = jax.random.normal(jax.random.key(2), jax.eval_shape(ref_module.apply, variables, x).shape)

  @jax.jit  # one compile per case (eager op-by-op dispatch is slower on a busy 2-core CPU)
  def outputs_and_grads(v, x_):
    def out(m):
      loss = lambda v_, x__: jnp.sum(m.apply(v_, x__) * g)  # noqa: E731
      return m.apply(v, x_), jax.grad(loss, argnums=(0, 1))(v, x_)  # y, (d/dparams, d/dx)
    return out(ref_module), out(module)

  ref, mine = outputs_and_grads(variables, x)
  chex.assert_trees_all_close(mine, ref, rtol=RTOL, atol=ATOL)  # y, d/dkernel, d/dbias, d/dx


@pytest.mark.parametrize('shape,features,kernel,strides,padding',
                         CASES)
def test_matches_nn_conv(shape, features, kernel, strides, padding):
  _test_case(shape, features, kernel, strides, padding, 'xla', 'matmul')


@pytest.mark.parametrize('forward,kernel_grad', MODES[1:] + [('xla', 'auto')])
@pytest.mark.parametrize('case', [0, 5])
def test_modes_match_nn_conv(case, forward, kernel_grad):
  _test_case(*CASES[case], forward, kernel_grad)


def _test_case(shape, features, kernel, strides, padding, forward, kernel_grad):
  x = jax.random.normal(jax.random.key(0), shape)
  kw = dict(features=features, kernel_size=kernel, strides=strides, padding=padding)
  _check(nn.Conv(**kw), conv_ops.MatmulConv(**kw, forward=forward, kernel_grad=kernel_grad), x)


def test_no_bias_and_keras_init_factory():
  x = jax.random.normal(jax.random.key(0), (2, 9, 9, 8))
  ref = blocks.keras_conv(16, (3, 3), padding='VALID', use_bias=False)
  mine = functools.partial(conv_ops.MatmulConv, kernel_init=nn.initializers.glorot_uniform())(
      16, (3, 3), padding='VALID', use_bias=False, kernel_grad='matmul')
  # Same initializer and key: identical initial parameters.
  v_ref, v = ref.init(jax.random.key(3), x), mine.init(jax.random.key(3), x)
  chex.assert_trees_all_equal(v, v_ref)
  assert 'bias' not in v['params']
  _check(ref, mine, x)


def test_in_a_block_via_conv_factory():
  """A residual body with the conv factory swapped: same params, outputs and gradients."""
  x = jax.random.normal(jax.random.key(0), (2, 9, 9, 16))
  norm = functools.partial(blocks.keras_batch_norm, use_running_average=True)
  ref = blocks.ConvActNormConvAct(16, conv=blocks.keras_conv, norm=norm)
  mine = blocks.ConvActNormConvAct(16, conv=functools.partial(
      conv_ops.MatmulConv, kernel_init=nn.initializers.glorot_uniform(), kernel_grad='matmul'),
      norm=norm)
  _check(ref, mine, x)


def test_rejects_groups_and_bad_args():
  x = jnp.zeros((1, 5, 5, 4))
  with pytest.raises(NotImplementedError):
    conv_ops.MatmulConv(4, (3, 3), feature_group_count=2).init(jax.random.key(0), x)
  with pytest.raises(ValueError):
    conv_ops.conv2d(x, jnp.zeros((3, 3, 4, 2)), 1, 'FULL')
  with pytest.raises(ValueError):
    conv_ops.conv2d(x, jnp.zeros((3, 3, 4, 2)), 1, 'SAME', kernel_grad='fast')
