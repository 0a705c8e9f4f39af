"""Unit tests of the residual building blocks: shapes, exactness, parameter counts."""

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resflax import blocks


def _init_apply(module, x):
  variables = module.init(jax.random.key(0), x)
  return variables, module.apply(variables, x)


def _num_params(variables):
  return sum(int(p.size) for p in jax.tree.leaves(variables.get('params', {})))


def test_identity_shortcut_is_exact():
  x = jax.random.normal(jax.random.key(1), (2, 5, 5, 3))
  variables, y = _init_apply(blocks.IdentityShortcut(), x)
  assert _num_params(variables) == 0
  np.testing.assert_array_equal(y, x)


def test_zero_pad_shortcut_subsamples_and_pads_channels():
  x = jax.random.normal(jax.random.key(1), (2, 8, 8, 16))
  variables, y = _init_apply(blocks.ZeroPadShortcut(32, strides=2), x)
  chex.assert_shape(y, (2, 4, 4, 32))
  assert _num_params(variables) == 0
  np.testing.assert_array_equal(y[..., 8:24], x[:, ::2, ::2, :])
  np.testing.assert_array_equal(y[..., :8], 0)
  np.testing.assert_array_equal(y[..., 24:], 0)


@pytest.mark.parametrize('norm, expected', [(None, 16 * 32 + 32), (nn.BatchNorm, 16 * 32 + 2 * 32)])
def test_projection_shortcut(norm, expected):
  norm = None if norm is None else functools.partial(norm, use_running_average=True)
  x = jnp.ones((2, 8, 8, 16))
  variables, y = _init_apply(blocks.ProjectionShortcut(32, strides=2, norm=norm), x)
  chex.assert_shape(y, (2, 4, 4, 32))
  assert _num_params(variables) == expected


def test_avg_pool_projection_shortcut_sees_every_position():
  x = jnp.zeros((1, 4, 4, 1)).at[0, 1, 1, 0].set(4.0)  # a position a strided 1x1 conv skips
  module = blocks.AvgPoolProjectionShortcut(1, strides=2)
  variables = module.init(jax.random.key(0), x)
  variables = jax.tree.map(jnp.ones_like, variables)  # kernel 1, bias 1
  y = module.apply(variables, x)
  chex.assert_shape(y, (1, 2, 2, 1))
  np.testing.assert_allclose(y[0, :, :, 0], [[2.0, 1.0], [1.0, 1.0]])  # avg(4,0,0,0)*1 + 1
  strided = blocks.ProjectionShortcut(1, strides=2)
  assert float(jnp.abs(strided.apply(strided.init(jax.random.key(0), x), x)).sum()) == 0.0


def test_pointwise_dense_shortcut_keeps_space():
  x = jnp.ones((2, 39, 52, 64))
  variables, y = _init_apply(blocks.PointwiseDenseShortcut(64), x)
  chex.assert_shape(y, (2, 39, 52, 64))
  assert _num_params(variables) == 64 * 64 + 64


def test_flatten_dense_shortcut_makes_a_vector():
  x = jnp.ones((2, 3, 4, 5))
  variables, y = _init_apply(blocks.FlattenDenseShortcut(7), x)
  chex.assert_shape(y, (2, 7))
  assert _num_params(variables) == 3 * 4 * 5 * 7 + 7


def test_global_pool_dense_shortcut():
  x = jnp.ones((2, 3, 4, 5))
  variables, y = _init_apply(blocks.GlobalPoolDenseShortcut(7), x)
  chex.assert_shape(y, (2, 7))
  assert _num_params(variables) == 5 * 7 + 7


class _Scale(nn.Module):
  """A body with a known output: ``factor * x``."""
  factor: float

  @nn.compact
  def __call__(self, x):
    return self.factor * x


def test_residual_block_is_merge_of_body_and_shortcut():
  x = jax.random.normal(jax.random.key(2), (3, 4))
  block = blocks.ResidualBlock(body=functools.partial(_Scale, 2.0))
  _, y = _init_apply(block, x)
  np.testing.assert_allclose(y, 3.0 * x, rtol=1e-6)
  concat = blocks.ResidualBlock(body=functools.partial(_Scale, 2.0), merge=blocks.ConcatMerge)
  _, y = _init_apply(concat, x)
  np.testing.assert_allclose(y, jnp.concatenate([x, 2.0 * x], -1), rtol=1e-6)


def test_residual_stack_sows_each_block_output():
  x = jnp.ones((1, 2))
  stack = blocks.ResidualStack([functools.partial(_Scale, 1.0)] * 3)
  variables = stack.init(jax.random.key(0), x)
  y, state = stack.apply(variables, x, mutable=['intermediates'])
  np.testing.assert_allclose(y, 8.0 * x)  # each block doubles
  sown = state['intermediates']
  assert sorted(sown) == ['block2_output', 'block3_output', 'block4_output']
  np.testing.assert_allclose(sown['block3_output'][0], 4.0 * x)


def test_dense_additive_stack_sums_every_earlier_output():
  # Bodies scale by 10, 100, 1000 so each term of the sum is visible in the digits.
  x = jnp.ones((1, 1))
  bodies = [functools.partial(_Scale, f) for f in (10.0, 100.0, 1000.0)]
  stack = blocks.DenseAdditiveStack(bodies)
  variables = stack.init(jax.random.key(0), x)
  y, state = stack.apply(variables, x, mutable=['intermediates'])
  o1 = 1.0
  o2 = 10 * o1 + o1                 # body(o1) + o1
  o3 = 100 * o2 + o1 + o2           # body(o2) + o1 + o2  (seed 002 In[7], block_3)
  o4 = 1000 * o3 + o1 + o2 + o3     # body(o3) + o1 + o2 + o3
  np.testing.assert_allclose(state['intermediates']['block3_output'][0], [[o3]])
  np.testing.assert_allclose(y, [[o4]])
  # A plain residual stack would give body(o3) + o3 instead.
  assert o4 != 1000 * o3 + o3


def test_bodies_take_injected_norm_and_act():
  calls = []

  def act(x):
    calls.append(x.shape)
    return nn.tanh(x)

  norm = functools.partial(nn.BatchNorm, use_running_average=False, axis_name=None)
  body = blocks.ConvNormAct(8, depth=2, norm=norm, act=act)
  x = jnp.ones((2, 6, 6, 3))
  variables = body.init(jax.random.key(0), x)
  y, updates = body.apply(variables, x, mutable=['batch_stats'])
  chex.assert_shape(y, (2, 6, 6, 8))
  assert len(calls) >= 2 and 'batch_stats' in updates
  assert float(jnp.max(jnp.abs(y))) <= 1.0  # tanh was used, not the default relu


def test_batchnorm_axis_name_reaches_the_blocks_under_pmap():
  """With ``axis_name`` set, BatchNorm averages its statistics across the mapped devices."""
  norm = functools.partial(nn.BatchNorm, use_running_average=False, axis_name='data')
  body = blocks.DenseNormActDropout(4, depth=1, norm=norm, act=lambda x: x)
  x = jnp.arange(2 * 3 * 5, dtype=jnp.float32).reshape(2, 3, 5)  # [devices, batch, features]
  variables = jax.vmap(lambda xi: body.init(jax.random.key(0), xi), axis_name='data')(x)
  y, _ = jax.vmap(lambda v, xi: body.apply(v, xi, mutable=['batch_stats']),
                  axis_name='data')(variables, x)
  # Synced BN: the mean over both "devices" together is zero, not per device.
  np.testing.assert_allclose(jnp.mean(y, axis=(0, 1)), 0.0, atol=1e-4)
  assert float(jnp.abs(jnp.mean(y[0], axis=0)).max()) > 0.1


@pytest.mark.parametrize('shape, window', [((2, 28, 28, 3), 3), ((2, 9, 7, 4), 2), ((1, 6, 6, 1), 3)])
def test_window_max_pool_equals_nn_max_pool(shape, window):
  x = jnp.asarray(np.random.default_rng(0).normal(size=shape), jnp.float32)
  pool = lambda x: nn.max_pool(x, (window, window), strides=(window, window), padding='VALID')
  np.testing.assert_array_equal(blocks.window_max_pool(x, window), pool(x))
  loss = lambda f: lambda x: jnp.sum(jnp.sin(f(x)))  # no ties in random normals: same gradient
  np.testing.assert_array_equal(jax.grad(loss(lambda x: blocks.window_max_pool(x, window)))(x),
                                jax.grad(loss(pool))(x))


def test_group_norm_takes_the_gcd_of_its_groups_and_the_channels():
  x = jax.random.normal(jax.random.key(3), (2, 4, 4, 12))
  variables, y = _init_apply(blocks.GroupNorm(32), x)  # 32 groups do not divide 12: gcd 4
  assert jax.tree.map(jnp.shape, variables['params']) == {'scale': (12,), 'bias': (12,)}
  np.testing.assert_allclose(y, nn.GroupNorm(4, epsilon=1e-5).apply(variables, x), rtol=1e-6,
                             atol=1e-6)


@pytest.mark.parametrize('module, params', [
    (blocks.SubsampledPointwiseDense(6, strides=2), 5 * 6 + 6),
    (blocks.FlattenDenseToMap(6, strides=2), 7 * 9 * 5 * (4 * 5 * 6) + 4 * 5 * 6),
    (blocks.GlobalPoolDenseToMap(6, strides=2), 5 * 6 + 6)])
def test_shape_changing_dense_shortcuts_give_the_strided_map(module, params):
  x = jax.random.normal(jax.random.key(4), (2, 7, 9, 5))
  variables, y = _init_apply(module, x)
  chex.assert_shape(y, (2, 4, 5, 6))  # ceil(7 / 2), ceil(9 / 2), as a stride-2 'SAME' conv
  assert _num_params(variables) == params
