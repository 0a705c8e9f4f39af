"""The part vocabulary (resflax/parts.py) and the promise that comes with it: every registered
model keeps the parameter tree (module paths, shapes) and the numbers it had before the vocabulary,
so existing run directories keep restoring.

The pinned values were computed from the models as they were before ``resflax.parts`` existed
(``shortcut='A' | 'B'``, SteeringNet's ``'pointwise' | 'flatten'``).
"""

import functools
import hashlib
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from resflax import blocks, models, parts
from resflax.errors import ConfigError
from resflax.models import (densenet, highway, preact_resnet, resnet_cifar, resnext, seed,
                            shortcut_study)
from resflax.train import state as state_lib
from resflax.train import steps

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


# ----------------------------------------------------------------------------------------------
# The vocabulary across the families: every shortcut, merge and norm a family takes trains one
# step on tiny 8x8 inputs; a shortcut changes the parameter count by exactly its own parameters.
# ----------------------------------------------------------------------------------------------
_p = functools.partial
# family -> (tiny module, input shape, loss, shortcuts, merges, norms it takes).
ALL = parts.SHORTCUTS
FAMILIES = {
    'resnet_cifar': (_p(resnet_cifar.ResNetCIFAR, depth=8, width=4), ALL,
                     ('add', 'highway', 'dense_additive')),
    'preact_resnet': (_p(preact_resnet.PreActResNet, depth=8, stage_features=(4, 8, 16),
                         stem_features=4), ALL, ('add', 'highway')),
    'resnext': (_p(resnext.ResNeXt, depth=11, cardinality=2, base_width=2,
                   stage_features=(8, 16, 32), stem_features=4), ALL, ('add', 'highway')),
    'densenet': (_p(densenet.DenseNet, depth=7, growth_rate=4), ('identity',), ('concat',)),
    'highway': (highway._HighwayCIFAR8, ALL, ('highway', 'add')),
    'shortcut_study': (_p(shortcut_study.ShortcutStudyNet, stage_features=(4, 8, 16)), ALL,
                       ('add', 'highway')),
    'steering': (seed.SteeringNet, ALL, ('add', 'concat', 'highway')),
}


def _shape(family):
  return (12, 12, 3) if family == 'steering' else (8, 8, 3)


def _model(family, **parts_kwargs):
  module = FAMILIES[family][0]
  return module(num_outputs=1 if family == 'steering' else 10, **parts_kwargs)


def _params(model, shape):
  variables = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0),
                             jnp.zeros((2, *shape)))
  return variables['params']


def _shortcut_params(params) -> int:
  """Parameters under a ``shortcut`` module, or a dense-additive stage input ``block{i}_in``."""
  return sum(int(np.prod(leaf.shape)) for path, leaf in jax.tree_util.tree_leaves_with_path(params)
             if any(k.key == 'shortcut' or re.fullmatch(r'block\d+_in', k.key) for k in path))


def _merge_params(params) -> int:
  """Parameters of the merges (the highway gates: gone where a block has no shortcut to merge)."""
  return sum(int(np.prod(leaf.shape)) for path, leaf in jax.tree_util.tree_leaves_with_path(params)
             if any(k.key == 'merge' for k in path))


def _count(params) -> int:
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(params))


def _one_step_losses(family, models_):
  """One SGD step of each model on the same batch, compiled together (one compilation)."""
  shape = _shape(family)
  rng = np.random.default_rng(0)
  regression = family == 'steering'
  batch = {'image': jnp.asarray(rng.random((2, *shape)), jnp.float32),
           'label': (jnp.asarray([0.1, -0.2]) if regression else jnp.asarray([1, 3], jnp.int32))}
  loss = 'mse' if regression else 'softmax_cross_entropy'

  def step_all(key, batch):
    losses = []
    for model in models_:
      state = state_lib.create_state(model, optax.sgd(0.01), shape, key)
      _, metrics = steps.train_step(state, batch, key, loss=loss)
      losses.append(metrics['loss'])
    return jnp.stack(losses)

  options = {'xla_backend_optimization_level': 0, 'xla_llvm_disable_expensive_passes': True}
  key = jax.random.key(0)
  return np.asarray(jax.jit(step_all).lower(key, batch).compile(compiler_options=options)(key, batch))


def _variants(family):
  _, shortcuts, merges = FAMILIES[family]
  variants = ([dict(shortcut=s) for s in shortcuts] + [dict(merge=m) for m in merges[1:]]
              + [dict(norm=n) for n in parts.NORMS])
  if hasattr(_model(family), 'act'):  # SteeringNet's seed layers have no activation to swap
    variants.append(dict(act='gelu'))
  return variants


@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_a_shortcut_changes_the_parameter_count_by_exactly_its_own(family):
  # Traced only (init's forward pass checks every shape); the steps are compiled below.
  body = {}
  for v in _variants(family):
    params = _params(_model(family, **v), _shape(family))
    if 'shortcut' in v:
      # Parameters outside the shortcuts (and the merges, which a block without a shortcut lacks)
      # are the same for every shortcut; SteeringNet: per branch, the vector shortcuts taking seed
      # 000 method 2's branch.
      group = family == 'steering' and v['shortcut'] in ('flatten_dense', 'global_pool_dense')
      body.setdefault(group, set()).add(_count(params) - _shortcut_params(params)
                                        - _merge_params(params))
      if v['shortcut'] in parts.PARAMETER_FREE_SHORTCUTS:
        assert _shortcut_params(params) == 0
  assert all(len(counts) == 1 for counts in body.values()), body


# One program for the default suite: every shortcut, merge, norm and an activation other than relu
# at least once on ResNet-CIFAR, and a combination off the beaten path on every other family.
ONE_STEP = {
    'resnet_cifar': [dict(shortcut='zero_pad'),
                     dict(shortcut='projection', merge='highway', norm='layer'),
                     dict(shortcut='avgpool_projection', merge='dense_additive', norm='group'),
                     dict(shortcut='pointwise_dense', norm='none', act='gelu'),
                     dict(shortcut='flatten_dense', merge='highway'),
                     dict(shortcut='global_pool_dense', norm='layer'),
                     dict(shortcut='identity', merge='highway', norm='group'),
                     dict(shortcut='none', norm='none')],
    'preact_resnet': [dict(shortcut='avgpool_projection', merge='highway', norm='group')],
    'resnext': [dict(shortcut='pointwise_dense', merge='highway', norm='layer')],
    'densenet': [dict(norm='layer', act='silu')],
    'highway': [dict(merge='add', norm='batch')],
    'shortcut_study': [dict(shortcut='flatten_dense', merge='highway', norm='group')],
    'steering': [dict(shortcut='global_pool_dense', merge='concat', norm='batch')],
}


def test_one_train_step_through_every_part():
  losses = {}
  for family, variants in ONE_STEP.items():
    losses[family] = _one_step_losses(family, [_model(family, **v) for v in variants])
  assert all(np.all(np.isfinite(l)) for l in losses.values()), losses


@pytest.mark.slow
@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_every_part_of_a_family_trains_one_step(family):
  variants = _variants(family)
  losses = _one_step_losses(family, [_model(family, **v) for v in variants])
  assert np.all(np.isfinite(losses)), dict(zip(map(str, variants), losses))


def test_learned_shortcuts_have_the_expected_sizes():
  # ResNet-8 at width 4: two shape changes, 4 -> 8 channels (8x8 -> 4x4) and 8 -> 16 (4x4 -> 2x2).
  sizes = {}
  for s in parts.SHORTCUTS:
    sizes[s] = _shortcut_params(_params(_model('resnet_cifar', shortcut=s), (8, 8, 3)))
  assert sizes['identity'] == sizes['zero_pad'] == sizes['none'] == 0
  assert sizes['projection'] == sizes['avgpool_projection'] == (4 * 8 + 2 * 8) + (8 * 16 + 2 * 16)
  assert sizes['pointwise_dense'] == sizes['global_pool_dense'] == (4 * 8 + 8) + (8 * 16 + 16)
  assert sizes['flatten_dense'] == (8 * 8 * 4 * 4 * 4 * 8 + 128) + (4 * 4 * 8 * 2 * 2 * 16 + 64)


def test_names_from_the_old_switches_and_undefined_combinations_are_refused_in_one_line():
  cases = [
      ('resnet_cifar', dict(shortcut='A'), "ResNetCIFAR takes no shortcut 'A': use one of identity, "
       'zero_pad, projection'),
      ('resnet_cifar', dict(shortcut='B'), "takes no shortcut 'B'"),
      ('steering', dict(shortcut='pointwise'), "SteeringNet takes no shortcut 'pointwise'"),
      ('resnet_cifar', dict(merge='concat'),
       "ResNetCIFAR takes no merge 'concat': use one of add, highway, dense_additive"),
      ('resnet_cifar', dict(shortcut='none', merge='dense_additive'), 'needs a shortcut'),
      ('resnet_cifar', dict(depth=21), r'depth 21 is not of the form 6n\+2'),
      ('resnet_cifar', dict(norm='batchnorm'), "takes no norm 'batchnorm': use one of batch, layer"),
      ('resnet_cifar', dict(act='relux'), "takes no activation 'relux'"),
      ('preact_resnet', dict(merge='dense_additive'), "PreActResNet takes no merge"),
      ('densenet', dict(shortcut='projection'), "DenseNet takes no shortcut 'projection': use one "
       'of identity'),
      ('densenet', dict(merge='add'), "DenseNet takes no merge 'add': use one of concat"),
      ('densenet', dict(depth=41), r'depth 41 is not of the form 3n\+4'),
      ('steering', dict(merge='dense_additive'), 'SteeringNet takes no merge'),
  ]
  for family, kwargs, message in cases:
    with pytest.raises(ConfigError, match=message) as error:
      _params(_model(family, **kwargs), _shape(family))
    assert '\n' not in str(error.value)
  with pytest.raises(ConfigError, match='keeps a map, but this body ends in a vector'):
    parts.shortcut('zero_pad', 4, 8, 2, to_vector=True)


def test_depth_and_width_keywords_give_the_registered_nets():
  plan = lambda **kw: resnet_cifar.ResNetCIFAR(**kw).stage_plan()
  assert plan(depth=110) == ((18, 18, 18), (16, 32, 64))
  assert plan(depth=20, width=32) == ((3, 3, 3), (32, 64, 128))
  assert plan(stage_sizes=(2, 2), stage_features=(8, 16)) == ((2, 2), (8, 16))
  with pytest.raises(ConfigError, match='exactly one'):
    plan(depth=20, stage_sizes=(3, 3, 3))
  assert preact_resnet.PreActResNet164().stage_plan() == (18, 18, 18)  # 9n+2, bottleneck
  assert preact_resnet.PreActResNet(depth=56).stage_plan() == (9, 9, 9)  # 6n+2, basic
  assert resnext.ResNeXt().stage_plan() == (3, 3, 3) == resnext.ResNeXt(depth=29).stage_plan()
  assert densenet.DenseNetBC100_k12().stage_plan() == (16, 16, 16)
  assert densenet.DenseNet(depth=40).stage_plan() == (12, 12, 12)
  # A registered net with a size keyword on top, as model_kwargs would: resnet20 -> ResNet-56.
  deeper = _params(models.get_spec('resnet20').module(num_outputs=10, depth=56), (8, 8, 3))
  assert _count(deeper) == 853_018


def test_user_factories_stand_in_for_names():
  calls = []

  def my_shortcut(*, in_features, features, strides, conv, norm, dense, to_vector):
    calls.append((in_features, features, strides))
    return functools.partial(blocks.ProjectionShortcut, features, strides, conv=conv, norm=None)

  model = _model('resnet_cifar', shortcut=my_shortcut, merge=blocks.AddMerge,
                 norm=functools.partial(nn.LayerNorm), act=jnp.tanh)
  params = _params(model, (8, 8, 3))
  assert calls == [(4, 8, 2), (8, 16, 2)]  # called only where the shape changes
  assert _shortcut_params(params) == (4 * 8 + 8) + (8 * 16 + 16)  # 1x1 convs with a bias
  assert parts.activation('silu') is jax.nn.silu
  assert parts.norm('none', train=True, optional=True) is None
