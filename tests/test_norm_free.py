"""Normalisation-free residual nets (SkipInit / ReZero, Fixup) and BatchNorm with PyTorch's unbiased
running variance, as parts of the vocabulary (resflax/parts.py) on the CIFAR ResNet family."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from resflax import blocks, parts
from resflax.errors import ConfigError
from resflax.models import resnet_cifar

X = np.random.default_rng(0).normal(size=(6, 8, 8, 3)).astype(np.float32)


def _net(**kwargs):
  return resnet_cifar.ResNetCIFAR(depth=8, width=4, num_outputs=3, **kwargs)


def _strip(tree, name):
  """``tree`` without the subtrees called ``name``."""
  if not isinstance(tree, dict):
    return tree
  return {k: _strip(v, name) for k, v in tree.items() if k != name}


# ----------------------------------------------------------------------------------------------
# BatchNorm with the unbiased running variance.
# ----------------------------------------------------------------------------------------------
def test_batch_unbiased_follows_the_pytorch_formula():
  """torch.nn.BatchNorm2d (momentum 0.1 = our 0.9): the batch is normalised with the biased
  variance; running_var <- 0.9 running_var + 0.1 * var * n / (n - 1), n = N*H*W."""
  norm = parts.norm('batch_unbiased', train=True)(name='bn')
  variables = norm.init(jax.random.key(0), X)
  ref = nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5)
  ref_vars = ref.init(jax.random.key(0), X)
  # The same variables as nn.BatchNorm (a run can switch its norm without a new tree).
  assert jax.tree.map(jnp.shape, variables) == jax.tree.map(jnp.shape, ref_vars)
  running_mean, running_var = np.zeros(3), np.ones(3)
  for step in range(2):
    x = X * (step + 1) + step
    y, updates = norm.apply(variables, x, mutable=['batch_stats'])
    mean, var = x.mean((0, 1, 2)), x.var((0, 1, 2))
    np.testing.assert_allclose(y, (x - mean) / np.sqrt(var + 1e-5), rtol=1e-4, atol=1e-4)
    running_mean = 0.9 * running_mean + 0.1 * mean
    running_var = 0.9 * running_var + 0.1 * x.reshape(-1, 3).var(0, ddof=1)
    stats = updates['batch_stats']
    np.testing.assert_allclose(stats['mean'], running_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats['var'], running_var, rtol=1e-5)
    variables = {**variables, **updates}
  # nn.BatchNorm keeps the biased one: the two differ by n / (n - 1).
  _, ref_updates = ref.apply(ref_vars, X, mutable=['batch_stats'])
  n = X.size // 3
  np.testing.assert_allclose((np.asarray(ref_updates['batch_stats']['var']) - 0.9) * n / (n - 1),
                             0.1 * X.reshape(-1, 3).var(0, ddof=1), rtol=1e-4)
  # Eval mode normalises with the running statistics.
  evaluate = parts.norm('batch_unbiased', train=False)(name='bn')
  y = evaluate.apply(variables, X)
  np.testing.assert_allclose(y, (X - running_mean) / np.sqrt(running_var + 1e-5), rtol=1e-4,
                             atol=1e-4)


def test_batch_unbiased_keeps_the_parameter_tree_of_batch():
  x = jnp.asarray(X)
  shapes = lambda net: jax.tree.map(jnp.shape, jax.eval_shape(
      functools.partial(net.init, train=False), jax.random.key(0), x))
  assert shapes(_net()) == shapes(_net(norm='batch_unbiased'))


# ----------------------------------------------------------------------------------------------
# SkipInit / ReZero.
# ----------------------------------------------------------------------------------------------
def test_skipinit_starts_as_its_shortcuts_and_is_an_addition_with_alpha_one():
  x = jnp.asarray(X)
  net = _net(norm='none', merge='skipinit')
  variables = net.init(jax.random.key(0), x, train=False)
  params = variables['params']
  assert all(float(params[b]['merge']['alpha']) == 0.0 for b in ('block2', 'block3', 'block4'))
  # alpha = 0: every block is act(shortcut(x)); the bodies do not matter.
  zeroed = jax.tree.map(jnp.zeros_like, params)
  zeroed = {**params, **{b: {**params[b], 'body': zeroed[b]['body']} for b in ('block2', 'block3',
                                                                             'block4')}}
  np.testing.assert_allclose(net.apply({'params': zeroed}, x), net.apply(variables, x), atol=1e-6)
  # alpha = 1: the plain addition of the same net.
  ones = jax.tree_util.tree_map_with_path(
      lambda p, v: jnp.ones_like(v) if jax.tree_util.keystr(p).endswith("['alpha']") else v,
      params)
  add = _net(norm='none')
  np.testing.assert_allclose(net.apply({'params': ones}, x),
                             add.apply({'params': _strip(params, 'merge')}, x), rtol=1e-5,
                             atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Fixup.
# ----------------------------------------------------------------------------------------------
def test_fixup_scale_is_l_to_the_minus_one_over_2m_minus_2():
  assert blocks.fixup_scale(9, 2) == pytest.approx(1 / 3)
  assert blocks.fixup_scale(16, 3) == pytest.approx(0.5)


def test_fixup_initialisation():
  x = jnp.asarray(X)
  net = resnet_cifar.ResNetCIFAR(depth=20, width=16, num_outputs=3, norm='none', merge='fixup')
  params = jax.jit(functools.partial(net.init, train=False))(jax.random.key(0), x)['params']
  block = params['block4']  # the last block of the first stage: 16 channels
  assert not np.any(block['body']['conv1']['kernel'])  # the branch's last layer starts at zero
  assert not np.any(params['logits']['kernel']) and not np.any(params['logits']['bias'])
  assert float(block['merge']['scale']) == 1.0 and float(block['merge']['bias']) == 0.0
  assert sorted(block['body']) == ['bias0a', 'bias0b', 'bias1a', 'conv0', 'conv1']
  assert 'stem_bias' in params and 'pre_logits_bias' in params
  # He-normal (fan_out = 3*3*16) times L^(-1/2), L = 9 branches.
  std = float(np.std(block['body']['conv0']['kernel']))
  assert std == pytest.approx(np.sqrt(2 / (9 * 16)) / 3, rel=0.05)
  # No normalisation anywhere.
  assert not any('norm' in jax.tree_util.keystr(p) for p, _ in
                 jax.tree_util.tree_leaves_with_path(params))


def test_fixup_and_skipinit_need_what_they_replace_and_keep():
  x = jnp.asarray(X)
  for kwargs in (dict(merge='fixup'), dict(merge='fixup', norm='none', shortcut='none'),
                 dict(merge='fixup', norm='none', shortcut='identity')):
    with pytest.raises(ConfigError) as e:
      _net(**kwargs).init(jax.random.key(0), x, train=False)
    assert '\n' not in str(e.value) and 'fixup' in str(e.value)
  with pytest.raises(ConfigError, match='takes no merge'):  # only where a model takes it
    parts.merge('skipinit', allowed=('add', 'highway'), where='ResNeXt')


def test_norm_free_nets_train_one_step():
  """Every new part takes an SGD step: finite losses, and the zero-initialised scalars move."""
  x, y = jnp.asarray(X), jnp.arange(6) % 3
  losses = {}
  for kwargs in (dict(norm='none', merge='skipinit'), dict(norm='none', merge='fixup'),
                 dict(norm='batch_unbiased')):
    net = _net(**kwargs)
    variables = net.init(jax.random.key(0), x, train=False)

    def loss(params, rest, net=net):
      out, _ = net.apply({'params': params, **rest}, x, train=True, mutable=['batch_stats'])
      return optax.softmax_cross_entropy_with_integer_labels(out, y).mean()

    params = variables['params']
    rest = {k: v for k, v in variables.items() if k != 'params'}
    value, grads = jax.value_and_grad(loss)(params, rest)
    losses[str(kwargs)] = float(value)
    if kwargs.get('merge') == 'skipinit':
      assert float(grads['block2']['merge']['alpha']) != 0.0
    if kwargs.get('merge') == 'fixup':
      assert np.any(grads['logits']['kernel'])
  assert all(np.isfinite(v) for v in losses.values()), losses


@pytest.mark.parametrize('name', ['resnet_cifar', 'preact_resnet_cifar', 'resnext_cifar',
                                  'densenet_cifar', 'stochastic_depth_cifar'])
def test_torch_era_recipes_keep_the_unbiased_running_variance(name):
  """The recipes whose reference code ran on Torch7 / PyTorch build their BatchNorms as there."""
  from resflax import config as config_lib, models  # pylint: disable=g-import-not-at-top
  config = config_lib.load(f'experiments/configs/{name}.py')
  model = models.from_config(config, num_outputs=10)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((2, 32, 32, 3)),
                                                train=False))
  calls = []

  def spy(next_fun, args, kwargs, context):
    calls.append(type(context.module).__name__)
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(spy):
    jax.eval_shape(lambda v: model.apply(v, jnp.zeros((2, 32, 32, 3)), train=True,
                                         mutable=['batch_stats'],
                                         rngs={'dropout': jax.random.key(1),
                                               'stochastic_depth': jax.random.key(2)}), variables)
  assert 'BatchNormUnbiased' in calls and 'BatchNorm' not in calls
