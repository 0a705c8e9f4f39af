"""The Flax replicas (resflax.models) against the seed notebooks' Keras models (keras_seeds).

For every registry name: the same trainable / non-trainable parameter counts, and, with random
Keras weights (BatchNorm moving statistics included) ported by ``resflax.keras_port``, the same
inference outputs. Runs on CPU (TensorFlow's GPUs hidden).
"""

from __future__ import annotations

import functools
import os

# Keras picks its backend when first imported.
os.environ.setdefault('KERAS_BACKEND', 'tensorflow')

import chex  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

tf = pytest.importorskip('tensorflow')  # keras/tensorflow are dev extras
keras = pytest.importorskip('keras')
try:
  tf.config.set_visible_devices([], 'GPU')
except RuntimeError:  # TF already initialised its devices (another test file ran first)
  pass

from resflax import models  # noqa: E402
from resflax.keras_port import flax_call_order, keras_to_flax  # noqa: E402
from resflax.keras_seeds import build_keras_model  # noqa: E402

NAMES = sorted(n for n, s in models.MODELS.items() if s.source.startswith('seed'))  # the 8 replicas
BATCH = 2

# Trainable / non-trainable counts of the seed models (Keras `count_params`), pinned.
EXPECTED_COUNTS = {
    'mnist_resmlp': (235402, 1536),
    'mnist_rescnn_deep': (1480650, 2432),
    'cifar10_resmlp': (528266, 1536),
    'cifar10_rescnn_shallow': (223754, 512),
    'cifar10_rescnn_deep': (1481226, 2432),
    'mnist_densesum_mlp': (235402, 1536),
    'steering_conv_shortcut': (182017, 0),
    'steering_dense_shortcut': (12647553, 0),
}


def _spec(name):
  return models.MODELS[name]


def _module(name):
  return models.build(name, num_outputs=10 if _spec(name).task == 'classification' else 1)


def _example(name):
  return jax.ShapeDtypeStruct((1,) + _spec(name).input_shape, jnp.float32)


@functools.cache
def _keras_model(name):
  """One Keras model per name for the whole file, its weights randomised (seeded by the name)."""
  model = build_keras_model(name)
  _randomise(model, np.random.default_rng(NAMES.index(name)))
  return model


def _randomise(model, rng):
  """Kernels ~ U(+-1/sqrt(fan_in)), biases ~ N(0, .1); BN: gamma ~ U(.5, 1.5), beta, moving mean
  ~ N(0, .1), moving variance ~ U(.5, 2), so that inference really uses the moving statistics.

  The small kernels keep the 19-block CNNs' logits O(1): with glorot-sized ones they reach ~100
  and the softmax saturates, hiding differences (unported BN statistics change the probabilities
  by ~3e-3 here, 30x the tolerance).
  """
  for layer in model.layers:
    if isinstance(layer, keras.layers.BatchNormalization):
      c = layer.gamma.shape
      layer.gamma.assign(rng.uniform(0.5, 1.5, c).astype('float32'))
      layer.beta.assign(rng.normal(0, 0.1, c).astype('float32'))
      layer.moving_mean.assign(rng.normal(0, 0.1, c).astype('float32'))
      layer.moving_variance.assign(rng.uniform(0.5, 2.0, c).astype('float32'))
    elif layer.weights:
      shape = layer.kernel.shape
      limit = np.sqrt(1.0 / np.prod(shape[:-1]))
      layer.kernel.assign(rng.uniform(-limit, limit, shape).astype('float32'))
      layer.bias.assign(rng.normal(0, 0.1, layer.bias.shape).astype('float32'))


def _size(tree):
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


@pytest.mark.parametrize('name', NAMES)
def test_param_counts_match_keras(name):
  model = build_keras_model(name)
  trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
  non_trainable = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
  assert model.count_params() == trainable + non_trainable

  shapes = jax.eval_shape(_module(name).init, jax.random.key(0), _example(name))
  flax_counts = (_size(shapes['params']), _size(shapes.get('batch_stats', {})))
  assert (trainable, non_trainable) == flax_counts == EXPECTED_COUNTS[name]


def _layer_paths(tree, path=()):
  """Paths of the modules that own leaves in ``tree``, in dict order."""
  own = [path] if any(not isinstance(v, dict) for v in tree.values()) else []
  return own + [p for k, v in tree.items() if isinstance(v, dict)
                for p in _layer_paths(v, path + (k,))]


@pytest.mark.parametrize('name', NAMES)
def test_ported_weights_give_keras_outputs(name):
  keras_model = _keras_model(name)
  module = _module(name)
  x = np.random.default_rng(100).uniform(0, 1, (BATCH,) + _spec(name).input_shape)
  x = x.astype('float32')

  initial = module.init(jax.random.key(1), jnp.asarray(x[:1]))
  # What keras_to_flax relies on without module=: module.init's dicts keep the call (= creation)
  # order, and batch_stats lists the BN layers in the same order as params.
  params = _layer_paths(initial['params'])
  assert [p for p in flax_call_order(module, _example(name)) if p in params] == params
  stats = _layer_paths(initial.get('batch_stats', {}))
  assert [p for p in params if p in stats] == stats

  variables = keras_to_flax(keras_model, initial)
  out = np.asarray(module.apply(variables, x, train=False))
  call = lambda: np.asarray(keras_model([x] if isinstance(keras_model.input, list) else x,
                                         training=False))  # seed 000 passes input=[img_in]
  keras_out = call()

  if _spec(name).task == 'classification':
    np.testing.assert_allclose(keras_out, jax.nn.softmax(out), atol=1e-4)
    # The softmax can hide a difference in the logits: compare them too, final softmax off.
    last = keras_model.layers[-1]
    assert last.activation is keras.activations.softmax
    last.activation = keras.activations.linear
    try:
      keras_logits = call()
    finally:
      last.activation = keras.activations.softmax
    np.testing.assert_allclose(keras_logits, out, rtol=1e-4, atol=1e-4)
  else:
    assert out.shape == keras_out.shape == (BATCH, 1)
    np.testing.assert_allclose(keras_out, out, rtol=1e-4, atol=1e-4)

  # Variables whose dict order is sorted (jax.eval_shape) port the same with module=.
  shapes = jax.eval_shape(module.init, jax.random.key(1), _example(name))
  traced = keras_to_flax(keras_model, shapes, module=module)
  assert jax.tree.structure(traced) == jax.tree.structure(shapes)
  chex.assert_trees_all_equal(traced, variables)


@pytest.mark.parametrize('keras_name, flax_name, message', [
    # wrong input width: the first Dense already differs
    ('mnist_resmlp', 'cifar10_resmlp',
     r"layer #0: Keras layer 'dense\w*' \(Dense\) vs Flax layer 'stem0': "
     r'params/kernel shape \(784, 128\) in Keras, \(3072, 128\) in Flax'),
    # the shallow body has a BN after each conv, the deep one only between them
    ('cifar10_rescnn_shallow', 'cifar10_rescnn_deep',
     r"layer #5: Keras layer 'batch_normalization\w*' \(BatchNormalization\) vs Flax layer "
     r"'stack/block3/body/conv0': the Keras layer has batch_stats/mean \(64,\), .* but the Flax "
     r'layer has params/bias \(64,\), params/kernel \(3, 3, 64, 64\)'),
    ('steering_conv_shortcut', 'steering_dense_shortcut',
     r"layer #1: Keras layer 'conv2' \(Conv2D\) vs Flax layer 'block2/body/conv2'"),
])
def test_porting_into_the_wrong_replica_names_the_layers(keras_name, flax_name, message):
  shapes = jax.eval_shape(_module(flax_name).init, jax.random.key(0), _example(flax_name))
  with pytest.raises(ValueError, match=message):
    keras_to_flax(build_keras_model(keras_name), shapes, module=_module(flax_name))


def test_mlp_into_cnn_names_the_layers():
  """Variables straight from module.init (no module=): the first layer pair already differs."""
  variables = _module('mnist_rescnn_deep').init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
  with pytest.raises(ValueError, match=r"layer #0: Keras layer 'dense\w*' \(Dense\) vs Flax layer "
                                       r"'stem0': .*\(784, 128\) in Keras, \(3, 3, 1, 32\) in "
                                       r'Flax'):
    keras_to_flax(build_keras_model('mnist_resmlp'), variables)
  # With module=, the CNN cannot even be traced on the MLP's (1, 784) input: said so.
  with pytest.raises(ValueError, match=r'cannot trace SeedResCNN on an input of shape \(1, 784\)'):
    keras_to_flax(build_keras_model('mnist_resmlp'), variables,
                  module=_module('mnist_rescnn_deep'))


def test_layer_count_mismatch_names_the_extra_layer():
  variables = _module('mnist_resmlp').init(jax.random.key(0), jnp.zeros((1, 784)))
  del variables['params']['logits']
  with pytest.raises(ValueError, match=r"'resnet' has 16 layers with weights, the Flax variables "
                                       r"15: Keras layer 'dense\w*' \(Dense\) has no Flax "
                                       r'counterpart'):
    keras_to_flax(build_keras_model('mnist_resmlp'), variables)


def test_sorted_variables_without_module_say_to_pass_module():
  module = _module('mnist_resmlp')
  shapes = jax.eval_shape(module.init, jax.random.key(0), _example('mnist_resmlp'))
  with pytest.raises(ValueError, match=r"Flax layer 'head'.*pass module="):
    keras_to_flax(build_keras_model('mnist_resmlp'), shapes)


@pytest.mark.parametrize('suffix', ['.keras', '.h5'])
def test_port_from_a_saved_file(tmp_path, suffix):
  keras_model = _keras_model('mnist_resmlp')
  path = tmp_path / f'model{suffix}'
  keras_model.save(path)
  variables = _module('mnist_resmlp').init(jax.random.key(0), jnp.zeros((1, 784)))
  from_file = keras_to_flax(path, variables)
  chex.assert_trees_all_equal(from_file, keras_to_flax(keras_model, variables))
