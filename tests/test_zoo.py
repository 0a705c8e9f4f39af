"""The CIFAR paper models: parameter counts against the papers' tables, depth, a train step on tiny
variants, stochastic depth and highway gates.

Full-size models are only traced (``jax.eval_shape``); compiled steps run on the "for testing
only" variants, which take every code path of their family.
"""

import functools
import math
import pathlib

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from resflax import blocks
from resflax import config as config_lib
from resflax import models
from resflax.models import densenet, highway, preact_resnet, resnet_cifar
from resflax.train import state as state_lib
from resflax.train import steps

# name -> (the paper's figure, does the paper count BN's scale/offset, our exact count).
# 1512.03385 table 6 rounds too coarsely to tell. 1603.05027 and 1611.05431 count conv/Dense weights
# only: ResNet-1001's 10.2M and ResNeXt 16x64d's 68.1M are only reached without BN's scale and
# offset (with them: 10.33M, 68.16M). 1608.06993 counts them: DenseNet-BC's 15.3M and 25.6M need
# them (without: 15.07M, 25.37M). The option-A ResNet counts equal those of the common PyTorch
# re-implementations (269,722 for ResNet-20).
PAPER_PARAMS = {
    'resnet20': ('0.27M', True, 269_722),  # 1512.03385 table 6
    'resnet32': ('0.46M', True, 464_154),
    'resnet44': ('0.66M', True, 658_586),
    'resnet56': ('0.85M', True, 853_018),
    'resnet110': ('1.7M', True, 1_727_962),
    'resnet1202': ('19.4M', True, 19_421_274),
    'resnet110_stochastic_depth': ('1.7M', True, 1_727_962),  # 1603.09382: ResNet-110
    'preact_resnet110': ('1.7M', False, 1_727_962),  # 1603.05027 (ResNet-110 of 1512.03385)
    'preact_resnet164': ('1.7M', False, 1_703_706),  # 1603.05027 table 4
    'preact_resnet1001': ('10.2M', False, 10_328_154),
    'resnext29_8x64d': ('34.4M', False, 34_426_698),  # 1611.05431 table 7
    'resnext29_16x64d': ('68.1M', False, 68_155_210),
    'densenet40_k12': ('1.0M', True, 1_019_722),  # 1608.06993 table 2
    'densenet_bc100_k12': ('0.8M', True, 769_162),
    'densenet_bc250_k24': ('15.3M', True, 15_324_406),
    'densenet_bc190_k40': ('25.6M', True, 25_624_430),
    'highway_cifar19': ('2.3M', True, 2_256_838),  # 1507.06228 table 2 ("~2.3M"), no BN
    'highway_cifar32': ('1.25M', True, 1_255_270),  # ("~1.25M")
}
# Registered models with no figure in a paper: their exact counts, pinned.
OTHER_PARAMS = {
    'resnet20_b': 272_474, 'resnet56_b': 855_770, 'resnet110_b': 1_730_714,
    'plain20': 269_722, 'plain32': 464_154, 'plain44': 658_586, 'plain56': 853_018,
    'plain110': 1_727_962, 'resnet20_stochastic_depth': 269_722, 'preact_resnet20': 269_722,
    'resnext29_2x8d': 240_538, 'densenet_bc22_k12': 71_686,
    'resnet8': 75_290, 'plain8': 75_290,
}
# name -> depth in the paper's sense: convs on the main path (not the projection shortcuts and
# highway gates) plus the Dense layer; DenseNet counts its transitions' 1x1 convs.
DEPTH = {
    **{f'{p}{d}': d for p in ('resnet', 'plain') for d in (8, 20, 32, 44, 56, 110)},
    'resnet1202': 1202, 'resnet20_b': 20, 'resnet56_b': 56, 'resnet110_b': 110,
    'resnet110_stochastic_depth': 110, 'resnet20_stochastic_depth': 20,
    'preact_resnet20': 20, 'preact_resnet110': 110, 'preact_resnet164': 164,
    'preact_resnet1001': 1001, 'resnext29_8x64d': 29, 'resnext29_16x64d': 29, 'resnext29_2x8d': 29,
    'densenet40_k12': 40, 'densenet_bc100_k12': 100, 'densenet_bc250_k24': 250,
    'densenet_bc190_k40': 190, 'densenet_bc22_k12': 22,
    'highway_cifar19': 19, 'highway_cifar32': 32,
}
ZOO = sorted(DEPTH)
CONFIGS = pathlib.Path(__file__).parents[1] / 'experiments' / 'configs'


def test_every_zoo_model_is_registered_counted_and_in_a_config_docstring():
  from_papers = {n for n, s in models.MODELS.items()
                 if not s.source.startswith(('seed', 'study'))}  # the studies' own nets aside
  assert from_papers == set(ZOO) == set(PAPER_PARAMS) | set(OTHER_PARAMS)
  docs = ''.join(path.read_text() for path in sorted(CONFIGS.glob('*.py')))
  for name in ZOO:
    assert name in docs, f'{name} is not named in any experiments/configs docstring'
    spec = models.get_spec(name)
    assert (spec.input_shape, spec.task) == ((32, 32, 3), 'classification')


@functools.lru_cache(maxsize=None)
def _abstract(name: str):
  """(logits, variables) of the registered model on one 32x32x3 image, as shapes only."""
  model = models.build(name, num_outputs=10)
  init = functools.partial(model.init_with_output, train=False)
  return jax.eval_shape(init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))


def _count(params, with_norm=True) -> int:
  leaves = jax.tree_util.tree_leaves_with_path(params)
  return sum(int(np.prod(leaf.shape)) for path, leaf in leaves
             if with_norm or not any('norm' in str(getattr(k, 'key', '')) for k in path))


def _paper_tolerance(figure: str) -> tuple[float, float]:
  """``'1.7M'`` -> (1.7e6, tolerance): 1%, or half a unit of the last printed digit if coarser."""
  value = float(figure[:-1]) * 1e6
  decimals = len(figure[:-1].partition('.')[2])
  return value, max(0.01 * value, 0.5 * 10.0**-decimals * 1e6)


def _depth(params) -> int:
  """Depth in the paper's sense (``DEPTH``): the kernels off the projection shortcuts and gates."""
  return len([path for path, leaf in jax.tree_util.tree_leaves_with_path(params)
              if path[-1].key == 'kernel' and not any(k.key in ('shortcut', 'gate') for k in path)])


# The count and depth tests share one traced model each (tracing ResNet-1202 takes seconds).
@pytest.mark.parametrize('name', sorted(PAPER_PARAMS))
def test_parameter_count_and_depth_match_the_paper(name):
  figure, with_norm, exact = PAPER_PARAMS[name]
  logits, variables = _abstract(name)
  chex.assert_shape(logits, (1, 10))
  assert _count(variables['params']) == exact
  assert _depth(variables['params']) == DEPTH[name]
  value, tolerance = _paper_tolerance(figure)
  counted = _count(variables['params'], with_norm)
  assert abs(counted - value) <= tolerance, f'{name}: {counted:,} vs the paper\'s {figure}'


@pytest.mark.parametrize('name', sorted(OTHER_PARAMS))
def test_parameter_count_and_depth_of_the_variants(name):
  logits, variables = _abstract(name)
  chex.assert_shape(logits, (1, 10))
  assert _count(variables['params']) == OTHER_PARAMS[name]
  assert _depth(variables['params']) == DEPTH[name]


def test_option_b_adds_exactly_the_projections_and_plain_nets_drop_nothing():
  # Option A shortcuts are parameter-free, so plain<d> and resnet<d> have the same parameters.
  projections = (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)  # 1x1 convs + their BN, stages 2 and 3
  for depth in (20, 56, 110):
    assert OTHER_PARAMS[f'resnet{depth}_b'] - PAPER_PARAMS[f'resnet{depth}'][2] == projections
    assert OTHER_PARAMS.get(f'plain{depth}') in (None, PAPER_PARAMS[f'resnet{depth}'][2])


def test_resnext_uses_one_grouped_convolution_per_block():
  _, variables = _abstract('resnext29_8x64d')
  p = variables['params']
  # C=8 groups of width d=64: one [3, 3, 512/8, 512] kernel, not 8 separate convolutions.
  chex.assert_shape(p['block2']['body']['conv1']['kernel'], (3, 3, 64, 512))
  chex.assert_shape(p['block8']['body']['conv1']['kernel'], (3, 3, 256, 2048))  # stage 3: 8 x 256
  chex.assert_shape(p['logits']['kernel'], (1024, 10))


def test_densenet_channel_bookkeeping():
  # BC-100, k=12: 24 -> +16*12 = 216 -> /2 = 108 -> 300 -> 150 -> 342 channels at the classifier.
  _, variables = _abstract('densenet_bc100_k12')
  assert variables['params']['transition1']['conv']['kernel'].shape == (1, 1, 216, 108)
  assert variables['params']['logits']['kernel'].shape == (342, 10)
  # L=40, k=12, no compression: 16 + 12*12 = 160 -> 304 -> 448.
  _, variables = _abstract('densenet40_k12')
  assert variables['params']['logits']['kernel'].shape == (448, 10)


# ----------------------------------------------------------------------------------------------
# A compiled init + train step + eval forward on the tiny variants, at the MNIST shape 28x28x1.
# ----------------------------------------------------------------------------------------------
def _compiled(f, *args):
  """``jax.jit(f)`` compiled for ``args`` at XLA's lowest backend optimisation level: these tests
  run each function once, so compiling is the cost (about half the default's)."""
  options = {'xla_backend_optimization_level': 0, 'xla_llvm_disable_expensive_passes': True}
  return jax.jit(f).lower(*args).compile(compiler_options=options)


def _gate_biases(params):
  return [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(params)
          if any(k.key == 'gate' for k in path) and path[-1].key == 'bias']


def _check_highway_gates(params):
  biases = _gate_biases(params)
  assert len(biases) == 3  # one highway layer per stage
  for b in biases:
    np.testing.assert_array_equal(b, -2.0)  # the registered nets' b_T


# name -> (module, the config whose optimizer it trains with, a check of the initial params).
# The paths that the config smoke tests already compile (tests/test_configs.py: resnet56,
# preact_resnet20, resnext29_2x8d, densenet_bc22_k12, highway_cifar19, resnet20_stochastic_depth)
# are not repeated.
TINY = {
    'resnet8_a_stochastic_depth': (
        functools.partial(resnet_cifar._ResNet8, survival_prob_last=0.5), 'stochastic_depth_cifar',
        None),
    'resnet8_b': (functools.partial(resnet_cifar._ResNet8, shortcut='projection'), 'resnet_cifar', None),
    'plain8': (functools.partial(resnet_cifar._ResNet8, shortcut='none'), 'resnet_cifar', None),
    'preact_resnet11_b': (preact_resnet._PreActResNet11, 'preact_resnet_cifar', None),
    'densenet7_dropout': (functools.partial(densenet._DenseNet7_k4, dropout_rate=0.2),
                          'densenet_cifar', None),
    'highway8_dropout': (functools.partial(highway._HighwayCIFAR8, dropout_rate=0.25),
                         'highway_cifar', _check_highway_gates),
}


@pytest.mark.parametrize('name', ['resnet20', 'plain20', 'resnet20_stochastic_depth',
                                  'preact_resnet20', 'resnext29_2x8d', 'densenet_bc22_k12',
                                  'highway_cifar19', 'preact_resnet164'])
def test_registered_models_take_mnist_shaped_input(name):
  # Size-agnostic (global average pooling), train and eval mode; traced, not compiled.
  model = models.build(name, num_outputs=10)
  x = jnp.zeros((2, 28, 28, 1))
  variables = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), x)
  rngs = {'dropout': jax.random.key(1), 'stochastic_depth': jax.random.key(2)}
  for train in (True, False):
    apply = functools.partial(model.apply, train=train, rngs=rngs,
                              mutable=['batch_stats', 'intermediates'])
    logits, _ = jax.eval_shape(apply, variables, x)
    chex.assert_shape(logits, (2, 10))


@pytest.mark.parametrize('name', sorted(TINY))
def test_tiny_variant_trains_one_step_on_mnist_shaped_input(name):
  module, config_name, check_init = TINY[name]
  model = module(num_outputs=10)
  tx = state_lib.make_optimizer(config_lib.load(CONFIGS / f'{config_name}.py'), steps_per_epoch=10)
  rng = np.random.default_rng(0)
  batch = {'image': jnp.asarray(rng.random((4, 28, 28, 1)), jnp.float32),
           'label': jnp.asarray([3, 7, 1, 0], jnp.int32)}

  def init_step_eval(key, batch):
    state = state_lib.create_state(model, tx, (28, 28, 1), key)
    new_state, metrics = steps.train_step(state, batch, key, loss='softmax_cross_entropy')
    logits = new_state.apply_fn({'params': new_state.params, 'batch_stats': new_state.batch_stats},
                                batch['image'], train=False)
    return state, new_state, metrics, logits

  state, new_state, metrics, logits = _compiled(init_step_eval, jax.random.key(0), batch)(
      jax.random.key(0), batch)
  if check_init:
    check_init(state.params)
  assert np.isfinite(float(metrics['loss'])) and int(new_state.step) == 1
  moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), state.params, new_state.params)
  assert all(jax.tree.leaves(moved)), 'every parameter should move after one SGD step'
  if state.batch_stats:
    assert not np.array_equal(jax.tree.leaves(state.batch_stats)[0],
                              jax.tree.leaves(new_state.batch_stats)[0])
  chex.assert_shape(logits, (4, 10))
  chex.assert_tree_all_finite(logits)


# ----------------------------------------------------------------------------------------------
# Stochastic depth (1603.09382).
# ----------------------------------------------------------------------------------------------
class _Ones(nn.Module):
  """A branch whose output is all ones, so ``StochasticDepth(_Ones)`` returns its keep mask."""

  @nn.compact
  def __call__(self, x):
    return jnp.ones_like(x)


class _SDStack(nn.Module):
  """``L`` stochastic-depth wrappers with ResNet-110's survival rule; returns the [N, L] masks."""

  survival: tuple[float, ...]
  per_example: bool = True
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x):
    return jnp.stack([blocks.StochasticDepth(_Ones, p, deterministic=False,
                                             per_example=self.per_example,
                                             axis_name=self.axis_name)(x)[:, 0]
                      for p in self.survival], axis=1)


def test_linear_decay_matches_resnet110_with_stochastic_depth():
  model = models.build('resnet110_stochastic_depth', num_outputs=10)
  survival = blocks.linear_decay_survival(sum(model.stage_plan()[0]), model.survival_prob_last)
  assert len(survival) == 54 and survival[-1] == 0.5
  np.testing.assert_allclose(survival[0], 1 - 0.5 / 54)
  # Expected number of dropped blocks per pass: sum (1 - p_l) = 0.5 * (L + 1) / 2 = 13.75.
  np.testing.assert_allclose(sum(1 - p for p in survival), 13.75)


@pytest.mark.parametrize('per_example', [True, False])
def test_stochastic_depth_drops_the_expected_number_of_blocks(per_example):
  survival = tuple(blocks.linear_decay_survival(54, 0.5))
  stack = _SDStack(survival, per_example)
  draws = 4000
  if per_example:  # 4000 examples in one batch
    keep = stack.apply({}, jnp.zeros((draws, 1)), rngs={'stochastic_depth': jax.random.key(0)})
  else:  # 4000 mini-batches of 2: every example of a batch shares the draw
    keys = jax.random.split(jax.random.key(0), draws)
    apply = lambda k: stack.apply({}, jnp.zeros((2, 1)), rngs={'stochastic_depth': k})
    keep = jax.vmap(apply)(keys)
    assert bool(jnp.all(keep[:, 0] == keep[:, 1]))
    keep = keep[:, 0]
  dropped = draws * 54 - float(keep.sum())
  # sd of the number of drops per pass: sqrt(sum p (1 - p)) ~ 3.0; of the mean over 4000: ~0.05.
  np.testing.assert_allclose(dropped / draws, 13.75, atol=0.25)
  np.testing.assert_allclose(1 - keep.mean(0), 1 - np.asarray(survival), atol=0.04)


def test_stochastic_depth_in_a_model_draws_per_block_and_example():
  model = functools.partial(resnet_cifar._ResNet8, survival_prob_last=0.5)(num_outputs=10)
  x = jnp.zeros((2048, 4, 4, 3))

  def keeps(rng):  # [2048, 3]: block i's keep mask per example
    variables = model.init(jax.random.key(0), x[:1], train=False)
    _, state = model.apply(variables, x, train=True, rngs={'stochastic_depth': rng},
                           mutable=['intermediates', 'batch_stats'])
    sown = state['intermediates']
    return jnp.stack([sown[f'block{i}']['body']['keep'][0] for i in (2, 3, 4)], axis=1)

  keeps = _compiled(keeps, jax.random.key(1))
  keep = keeps(jax.random.key(1))
  np.testing.assert_allclose(1 - keep.mean(0), [0.5 / 3, 1.0 / 3, 0.5], atol=0.05)
  np.testing.assert_allclose(3 - keep.sum(1).mean(), 1.0, atol=0.1)  # E[drops] = 1/6 + 1/3 + 1/2
  assert not np.array_equal(keep, keeps(jax.random.key(2)))


@pytest.mark.parametrize('per_example', [True, False])
def test_stochastic_depth_masks_do_not_depend_on_the_device_split(per_example):
  # Under pmap each device keeps its rows of the global batch's mask, drawn from the same key.
  survival, key = (0.3, 0.6, 0.9), jax.random.key(7)
  x = jnp.zeros((8, 1))
  one_device = _SDStack(survival, per_example).apply({}, x, rngs={'stochastic_depth': key})
  four_devices = jax.vmap(
      lambda xi: _SDStack(survival, per_example, axis_name='data').apply(
          {}, xi, rngs={'stochastic_depth': key}), axis_name='data')(x.reshape(4, 2, 1))
  np.testing.assert_array_equal(four_devices.reshape(8, 3), one_device)
  assert 0 < float(one_device.sum()) < one_device.size


class _Affine(nn.Module):
  """A branch with parameters: ``2x - 1``, computed in float32."""

  @nn.compact
  def __call__(self, x):
    return nn.Dense(x.shape[-1], kernel_init=lambda *_: 2 * jnp.eye(x.shape[-1]),
                    bias_init=nn.initializers.constant(-1.0))(x)


def test_stochastic_depth_is_exactly_the_shortcut_when_dropped_and_scales_at_eval():
  x = jax.random.uniform(jax.random.key(3), (64, 5))
  p = 0.7
  block = lambda deterministic, prob=p: blocks.ResidualBlock(functools.partial(
      blocks.StochasticDepth, _Affine, prob, deterministic=deterministic))
  variables = block(True).init(jax.random.key(0), x)
  branch = _Affine().apply({'params': variables['params']['body']['body']}, x)
  # Eval: x + p * f(x), bit for bit (eq. 5).
  np.testing.assert_array_equal(block(True).apply(variables, x), x + p * branch)
  # Training: each example gets exactly x (dropped) or exactly x + f(x) (kept).
  y, state = block(False).apply(variables, x, rngs={'stochastic_depth': jax.random.key(4)},
                                mutable=['intermediates'])
  keep = np.asarray(state['intermediates']['body']['keep'][0])
  assert 0 < keep.sum() < len(keep)
  np.testing.assert_array_equal(y[~keep], x[~keep])
  np.testing.assert_array_equal(y[keep], (x + branch)[keep])
  # Survival 1 is the plain residual block, with no rng needed.
  np.testing.assert_array_equal(block(False, 1.0).apply(variables, x), x + branch)


# ----------------------------------------------------------------------------------------------
# Highway gates (1505.00387, 1507.06228).
# ----------------------------------------------------------------------------------------------
def _highway_blocks():
  """A highway layer in an MLP (Dense gate) and in a CNN (3x3 conv gate), with their inputs."""
  mlp = blocks.ResidualBlock(
      functools.partial(blocks.DenseNormActDropout, 6, depth=1,
                        norm=functools.partial(nn.BatchNorm, use_running_average=True)),
      merge=blocks.HighwayMerge)
  conv_gate = functools.partial(nn.Conv, kernel_size=(3, 3), padding=1)
  cnn = blocks.ResidualBlock(functools.partial(blocks.ConvAct, 4),
                             merge=functools.partial(blocks.HighwayMerge, gate=conv_gate,
                                                     gate_bias=-3.0))
  return [(mlp, jax.random.normal(jax.random.key(5), (3, 6)), -2.0),
          (cnn, jax.random.normal(jax.random.key(6), (2, 5, 5, 4)), -3.0)]


def test_highway_gate_bias_starts_negative():
  for block, x, bias in _highway_blocks():
    params = jax.jit(block.init)(jax.random.key(0), x)['params']
    np.testing.assert_array_equal(params['merge']['gate']['bias'], bias)
  # The registered nets: one gate per highway layer (-2 at init: checked on the tiny variant's
  # real init in test_tiny_variant_trains_one_step_on_mnist_shaped_input[highway8_dropout]).
  for name, layers in (('highway_cifar19', 14), ('highway_cifar32', 27)):
    assert len(_gate_biases(_abstract(name)[1]['params'])) == layers
  assert highway.HighwayCIFAR19(num_outputs=10).gate_bias == -2.0


def test_highway_closed_gate_carries_x_exactly_open_gate_gives_h():
  for block, x, _ in _highway_blocks():
    variables = jax.jit(block.init)(jax.random.key(0), x)

    @jax.jit
    def merged_and_h(variables):  # the highway layer's output, and H(x) alone
      body_vars = {col: tree['body'] for col, tree in variables.items()}
      return block.apply(variables, x), block.body().apply(body_vars, x)

    for closed in (True, False):
      gate = variables['params']['merge']['gate']
      gate = {'kernel': jnp.zeros_like(gate['kernel']),  # T(x) = sigmoid(-+1e4) = 0 or 1 exactly
              'bias': jnp.full_like(gate['bias'], -1e4 if closed else 1e4)}
      y, h = merged_and_h({**variables, 'params': {**variables['params'], 'merge': {'gate': gate}}})
      np.testing.assert_array_equal(y, x if closed else h)
    assert not np.allclose(h, x)


# ----------------------------------------------------------------------------------------------
# Slow: a train step traced (not compiled) through every full-size registered model.
# ----------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize('name', ZOO)
def test_train_step_traces_through_the_full_model(name):
  model = models.build(name, num_outputs=10)
  tx = optax.sgd(0.1, momentum=0.9)

  def init_and_step(rng, x, y):
    state = state_lib.create_state(model, tx, (32, 32, 3), rng)
    return steps.train_step(state, {'image': x, 'label': y}, rng, loss='softmax_cross_entropy')

  _, metrics = jax.eval_shape(init_and_step, jax.random.key(0), jnp.zeros((2, 32, 32, 3)),
                              jnp.zeros((2,), jnp.int32))
  assert metrics['loss'].shape == ()
  assert math.prod(_abstract(name)[0].shape) == 10
