"""The part vocabulary (resflax/parts.py) and the promise that comes with it: every registered
model keeps the parameter tree (module paths, shapes) and the numbers it had before the vocabulary,
so existing run directories keep restoring.

The pinned values were computed from the models as they were before ``resflax.parts`` existed
(``shortcut='A' | 'B'``, SteeringNet's ``'pointwise' | 'flatten'``).
"""

import functools
import hashlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resflax import models

# name -> sha256 (16 hex digits) of the sorted '<path>:<shape>' lines of ``model.init``'s
# variables (params and batch_stats) on one example of the registered input shape.
TREES = {
    'cifar10_rescnn_deep': 'e741c77847a7922f',
    'cifar10_rescnn_shallow': 'c24773764edcdaae',
    'cifar10_resmlp': '5b73ae0ddae3df8e',
    'dense_additive_resnet110': '9defce30d5d5ec3f',
    'dense_additive_resnet20': '7dd3fb17a1e7dfb8',
    'dense_additive_resnet56': 'ac184a2d5cf40577',
    'dense_additive_resnet8': 'c0e75916a71a348b',
    'densenet40_k12': 'b000a4d7f2c387a5',
    'densenet_bc100_k12': '9c10143ec62eaa2b',
    'densenet_bc190_k40': '3a5dbeb8e234bd66',
    'densenet_bc22_k12': '1dffd3e743760427',
    'densenet_bc250_k24': 'a19ad7e782ddf117',
    'highway_cifar19': '701f5dc83907cedf',
    'highway_cifar32': '22962167070e9c6b',
    'highway_resnet110': '5e37cfbf200d6ca0',
    'highway_resnet20': '5ba0a3752bd3668d',
    'highway_resnet56': '3bf526305d14dd4c',
    'highway_resnet8': '3665446605cfc0dd',
    'mnist_densesum_mlp': '5040e5ae0fae6bfc',
    'mnist_rescnn_deep': 'ac84d1424ecb6e45',
    'mnist_rescnn_shallow': '84e9284de30f6e47',
    'mnist_resmlp': '22386d90505024a5',
    'plain110': '9defce30d5d5ec3f',
    'plain20': '7dd3fb17a1e7dfb8',
    'plain32': 'c513e6c6d61384ec',
    'plain44': '6e5dc21474ede69e',
    'plain56': 'ac184a2d5cf40577',
    'plain8': 'c0e75916a71a348b',
    'preact_resnet1001': 'c17fec39de69f466',
    'preact_resnet110': 'ea2bd9a41fa333dc',
    'preact_resnet164': '94192048c7b7ff1b',
    'preact_resnet20': 'afdcd175f6bef84c',
    'resnet110': '9453d4fde0fd9ce3',
    'resnet110_b': 'e9a774e87f755a18',
    'resnet110_stochastic_depth': '2f1b80a69c746a56',
    'resnet1202': '3bd66a97cd8e3e15',
    'resnet20': 'a0b4fe53391a1e02',
    'resnet20_b': 'cbe1e6b19f7c697e',
    'resnet20_stochastic_depth': '082b11b4fe3c10d8',
    'resnet32': '18b62ce975fffd77',
    'resnet44': '25ae77b996a6c38b',
    'resnet56': 'fda5184b38889ffd',
    'resnet56_b': '26b6b12ff43fabd8',
    'resnet8': '5547690d279292f1',
    'resnext29_16x64d': '23d406bbae6255ea',
    'resnext29_2x8d': '86181943a5f149ba',
    'resnext29_8x64d': 'dcf272ef01b64cca',
    'shortcut_study_avgpool_projection': '846eeac2c1c2fcae',
    'shortcut_study_flatten_dense': '8f70bd07e184210a',
    'shortcut_study_global_pool_dense': '0f4858df341cc7b0',
    'shortcut_study_identity': '88207c17e65454cd',
    'shortcut_study_none': '8e211a7569023273',
    'shortcut_study_pointwise_dense': 'd42e73a4344f020e',
    'shortcut_study_projection': '8915baf5fc2a90da',
    'shortcut_study_zero_pad': 'dea23aaddcf5734f',
    'steering_conv_shortcut': 'c1c07774f05f763b',
    'steering_dense_shortcut': 'e57c6e65f02db410',
    'steering_shortcut_study_avgpool_projection': 'd79ba012f78cee9e',
    'steering_shortcut_study_flatten_dense': '28e79c9fc2ed7bf5',
    'steering_shortcut_study_global_pool_dense': '8922aaf8506438dc',
    'steering_shortcut_study_identity': 'ce10d05e8851330e',
    'steering_shortcut_study_none': '73430db436be587c',
    'steering_shortcut_study_pointwise_dense': '66e4d64f86d2831a',
    'steering_shortcut_study_projection': '226769c114f285ad',
    'steering_shortcut_study_zero_pad': 'f4d91c664f823773',
}
# Tracing these four takes ~17 s together: slow.
BIG = ('resnet1202', 'preact_resnet1001', 'densenet_bc250_k24', 'densenet_bc190_k40')

# name -> (sum of squared params, eval logits [2, 3]) at init with key 0, on
# ``default_rng(0).random((2, *shape))``, shape 12x12x3 for size-agnostic nets, else the registered one.
NUMBERS = {
    'resnet8': (597.7750244140625, [-0.178599, -0.218569, 0.039901, -0.171793, -0.259356, 0.084386]),
    'plain8': (602.1351928710938, [0.029875, -0.074319, -0.001196, 0.012628, -0.057278, -0.007079]),
    'highway_resnet8': (1156.4305419921875, [-0.03677, -0.063618, -0.061316, -0.008682, -0.05895, -0.045653]),
    'dense_additive_resnet8': (602.1351928710938, [0.024492, -0.235956, -0.200147, 0.039519, -0.217448, -0.152904]),
    'resnet20_b': (2134.325927734375, [1.501393, -2.178771, 1.037452, 1.668154, -2.336627, 1.039028]),
    'preact_resnet20': (1943.3670654296875, [1.624387, -0.570916, -0.934208, 1.669196, -0.819673, -0.551422]),
    'shortcut_study_projection': (1364.3665771484375, [-0.127613, -0.323355, 0.10367, -0.170293, -0.320945, 0.203359]),
    'shortcut_study_pointwise_dense': (1268.318359375, [-0.12392, -0.070913, 0.060707, -0.174498, -0.174036, -0.01819]),
    'shortcut_study_flatten_dense': (1718.5438232421875, [0.010051, -0.059755, 0.032278, 0.008594, -0.046612, -0.058867]),
    'shortcut_study_global_pool_dense': (1266.0238037109375, [-0.009244, -0.17762, -0.096671, -0.04144, -0.145324, -0.086288]),
    'shortcut_study_zero_pad': (1173.77197265625, [0.000134, -0.087704, 0.03352, 0.11139, -0.084025, -0.018113]),
    'steering_conv_shortcut': (202.38870239257812, [0.280036, 0.163024, 0.02815, 0.132635, 0.02428, -0.042631]),
    'steering_dense_shortcut': (352.71246337890625, [-0.42044, 0.463662, -0.161243, -0.107488, 0.070663, 0.101019]),
    'resnext29_2x8d': (6131.8349609375, [0.12081, -0.057702, -0.073546, 0.122917, -0.086394, -0.131047]),
    'densenet_bc22_k12': (2860.712158203125, [0.211541, -0.49162, 0.451165, 0.216229, -0.439017, 0.413861]),
}
# A few compiled fast; the rest slow (compiling is the cost).
FAST_NUMBERS = ('resnet8', 'highway_resnet8', 'dense_additive_resnet8',
                'shortcut_study_pointwise_dense', 'steering_dense_shortcut')


def tree_fingerprint(variables) -> str:
  lines = sorted(f'{jax.tree_util.keystr(p)}:{tuple(leaf.shape)}'
                 for p, leaf in jax.tree_util.tree_leaves_with_path(variables))
  return hashlib.sha256('\n'.join(lines).encode()).hexdigest()[:16]


def test_every_registered_model_is_pinned():
  assert set(TREES) == set(models.MODELS)


@pytest.mark.parametrize('name', [pytest.param(n, marks=pytest.mark.slow) if n in BIG else n
                                  for n in sorted(TREES)])
def test_parameter_tree_is_unchanged(name):
  spec = models.get_spec(name)
  model = models.build(name, num_outputs=10 if spec.task == 'classification' else 1)
  variables = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0),
                             jnp.zeros((1, *spec.input_shape)))
  assert tree_fingerprint(variables) == TREES[name]


@pytest.mark.parametrize('name', [n if n in FAST_NUMBERS else pytest.param(n, marks=pytest.mark.slow)
                                  for n in sorted(NUMBERS)])
def test_numbers_are_unchanged(name):
  spec = models.get_spec(name)
  shape = (12, 12, 3) if spec.any_image_size else spec.input_shape
  model = models.build(name, num_outputs=3)
  x = jnp.asarray(np.random.default_rng(0).random((2, *shape)), jnp.float32)

  def init_apply(x):
    variables = model.init(jax.random.key(0), x, train=False)
    squares = sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree.leaves(variables['params']))
    return squares, model.apply(variables, x, train=False)

  options = {'xla_backend_optimization_level': 0, 'xla_llvm_disable_expensive_passes': True}
  squares, logits = jax.jit(init_apply).lower(x).compile(compiler_options=options)(x)
  expected_squares, expected_logits = NUMBERS[name]
  np.testing.assert_allclose(float(squares), expected_squares, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(logits).ravel(), expected_logits, rtol=1e-4, atol=2e-5)
