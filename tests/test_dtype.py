"""Mixed precision (``models.build(..., dtype=jnp.bfloat16)``), as flax's ImageNet example does it.

Activations (every Conv / Dense / BatchNorm output, the sown block outputs) are bfloat16; the
parameters, the BatchNorm statistics and the model output stay float32, and a bf16 model given the
float32 model's parameters computes nearly the same outputs. One model of every model file, the
deep ones at their smallest registered sizes; dtypes are checked on traced shapes
(``jax.eval_shape``), only the outputs of (c) are computed (``VARIANTS``' in the slow suite).
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resflax import models
from resflax.errors import ConfigError
from resflax.models import shortcut_study
from resflax.ops import conv as conv_ops

NAMES = ['mnist_resmlp', 'mnist_densesum_mlp', 'mnist_rescnn_deep', 'steering_conv_shortcut',
         'steering_dense_shortcut', 'resnet20', 'resnet20_b', 'resnet20_stochastic_depth',
         'preact_resnet20', 'resnext29_2x8d', 'densenet_bc22_k12', 'highway_cifar19',
         'dense_additive_resnet8', 'highway_resnet8',
         *(f'shortcut_study_{kind}' for kind in shortcut_study.SHORTCUTS)]
RNGS = {'dropout': jax.random.key(1), 'stochastic_depth': jax.random.key(2)}
# Variants of a model file's model that differ only in a shortcut or a training-time switch: their
# computed outputs (c) are compared in the slow suite (a compile each, ~2 s); their dtypes always.
VARIANTS = {'resnet20_b', 'resnet20_stochastic_depth',
            *(f'shortcut_study_{kind}' for kind in shortcut_study.SHORTCUTS if kind != 'flatten_dense')}


def _layer_outputs(module, method_name):
  """``capture_intermediates`` filter: the output of every Conv / Dense / BatchNorm call."""
  return method_name == '__call__' and isinstance(module, (nn.Conv, nn.Dense, nn.BatchNorm))


def _setup(name):
  """(float32 model, bfloat16 model, a batch of 2 inputs at the model's shape)."""
  spec = models.get_spec(name)
  shape = (28, 28, 1) if spec.any_image_size else spec.input_shape
  num_outputs = 10 if spec.task == 'classification' else 1
  x = jax.random.uniform(jax.random.key(3), (2, *shape))
  return (models.build(name, num_outputs=num_outputs),
          models.build(name, num_outputs=num_outputs, dtype=jnp.bfloat16), x)


def _compiled(f, *args):
  """``jax.jit(f)`` at XLA's lowest backend optimisation level (run once: compiling is the cost)."""
  options = {'xla_backend_optimization_level': 0, 'xla_llvm_disable_expensive_passes': True}
  return jax.jit(f).lower(*args).compile(compiler_options=options)


def _float_leaves(tree):
  return [(jax.tree_util.keystr(path), leaf)
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
          if jnp.issubdtype(leaf.dtype, jnp.floating)]


@pytest.mark.parametrize('name', NAMES)
def test_bfloat16_activations_float32_params_stats_and_output(name):
  m32, m16, x = _setup(name)
  init = lambda m: jax.eval_shape(functools.partial(m.init, train=False), jax.random.key(0), x)
  v32, v16 = init(m32), init(m16)
  # (a) The same parameter tree (names, shapes), all float32.
  assert jax.tree.map(lambda a: a.shape, v16) == jax.tree.map(lambda a: a.shape, v32)
  assert {leaf.dtype for leaf in jax.tree.leaves(v16)} == {jnp.dtype(jnp.float32)}

  # (b), (d) Eval: float32 output; every layer output and every sown activation is bfloat16.
  out, state = jax.eval_shape(
      functools.partial(m16.apply, train=False, mutable=['intermediates'],
                        capture_intermediates=_layer_outputs), v16, x)
  assert out.dtype == jnp.float32
  activations = _float_leaves(state['intermediates'])
  assert sum('__call__' in path for path, _ in activations) >= 3  # captured Conv/Dense outputs
  assert any('output' in path for path, _ in activations)  # sown block outputs
  assert [path for path, a in activations if a.dtype != jnp.bfloat16] == []

  # (e) Train: float32 output and BatchNorm statistics, bfloat16 activations.
  out, state = jax.eval_shape(
      functools.partial(m16.apply, train=True, rngs=RNGS, mutable=['batch_stats', 'intermediates']),
      v16, x)
  assert out.dtype == jnp.float32
  stats = jax.tree.leaves(state.get('batch_stats', {}))
  assert len(stats) == len(jax.tree.leaves(v16.get('batch_stats', {})))
  assert {a.dtype for a in stats} <= {jnp.dtype(jnp.float32)}
  assert {a.dtype for _, a in _float_leaves(state['intermediates'])} == {jnp.dtype(jnp.bfloat16)}


@pytest.mark.parametrize('name', [pytest.param(n, marks=pytest.mark.slow) if n in VARIANTS else n
                                  for n in NAMES])
def test_bfloat16_model_on_float32_params_is_close_to_float32(name):
  # (c) The float32 model's parameters in the bf16 model: the same outputs to bf16 accuracy.
  m32, m16, x = _setup(name)

  def outputs(x):
    variables = m32.init(jax.random.key(0), x, train=False)
    return m32.apply(variables, x, train=False), m16.apply(variables, x, train=False)

  y32, y16 = _compiled(outputs, x)(x)
  assert y32.dtype == y16.dtype == jnp.float32
  scale = float(jnp.max(jnp.abs(y32)))
  assert scale > 0
  np.testing.assert_allclose(y16, y32, rtol=0, atol=5e-2 * scale)
  assert not np.array_equal(y16, y32)  # really computed in lower precision


@pytest.mark.parametrize('dtype', ['bfloat16', jnp.bfloat16, np.dtype(jnp.bfloat16), 'float16',
                                   jnp.float16])
def test_build_takes_dtype_names_and_jnp_dtypes(dtype):
  model = models.build('resnet8', num_outputs=10, dtype=dtype)
  assert model.dtype == jnp.dtype(dtype) != jnp.float32
  x = jnp.zeros((1, 8, 8, 3))
  out, variables = jax.eval_shape(
      functools.partial(model.init_with_output, train=False), jax.random.key(0), x)
  assert out.dtype == jnp.float32
  assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}


def test_build_float32_is_the_default_model():
  for dtype in (jnp.float32, 'float32', np.float32):
    assert models.build('resnet8', num_outputs=10, dtype=dtype) == models.build(
        'resnet8', num_outputs=10)
  assert models.build('mnist_resmlp', num_outputs=10).dtype == jnp.float32


@pytest.mark.parametrize('dtype', ['int8', 'float64', 'bf16', jnp.int32, None])
def test_build_rejects_other_dtypes(dtype):
  with pytest.raises(ConfigError, match='--config.dtype=float32 or bfloat16'):
    models.build('resnet8', num_outputs=10, dtype=dtype)


def test_every_registered_model_has_a_dtype_field():
  for name, spec in models.MODELS.items():
    assert spec.module(num_outputs=10).dtype == jnp.float32, name


@pytest.mark.parametrize('kernel_grad', ['xla', 'matmul'])
def test_matmul_conv_in_bfloat16_keeps_float32_params_and_gradients(kernel_grad):
  conv = conv_ops.MatmulConv(4, (3, 3), dtype=jnp.bfloat16, kernel_grad=kernel_grad)
  x = jax.random.normal(jax.random.key(0), (2, 6, 6, 3))
  params = conv.init(jax.random.key(1), x)
  y = conv.apply(params, x)
  assert y.dtype == jnp.bfloat16
  grads = jax.grad(lambda p: jnp.sum(conv.apply(p, x).astype(jnp.float32) ** 2))(params)
  assert {leaf.dtype for leaf in jax.tree.leaves(grads)} == {jnp.dtype(jnp.float32)}
  ref = nn.Conv(4, (3, 3), dtype=jnp.bfloat16).apply(params, x)
  np.testing.assert_allclose(y.astype(jnp.float32), ref.astype(jnp.float32), atol=5e-2)
