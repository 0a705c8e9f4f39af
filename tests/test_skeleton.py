"""The shared model skeleton (resflax/models/common.py): a user model built with it, and every
family built through it."""

import functools
import pathlib
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resflax import blocks, models, parts
from resflax.errors import ConfigError
from resflax.models import (common, densenet, highway, preact_resnet, resnet_cifar, resnext, seed,
                            shortcut_study)
from resflax.models.common import Skeleton


class TinyNet(nn.Module):
  """A user's model, written as the module docstring of resflax.models.common shows."""

  num_outputs: int = 10
  shortcut: parts.Part = 'projection'
  norm: parts.Part = 'batch'
  act: parts.Part = 'relu'
  survival_prob_last: float = 1.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    sk = Skeleton.of(self, train)
    x = sk.stem(x, 4)

    def block(x, slot):
      body = functools.partial(blocks.ConvNormActConvNorm, slot.features, strides=slot.strides,
                               conv=sk.conv, norm=sk.norm, act=sk.act)
      return sk.act(sk.residual(x, slot, body))

    x = sk.stages(x, (1, 2), (4, 8), block)
    return sk.head(x)


def _init(model, shape=(2, 8, 8, 3)):
  x = jnp.asarray(np.random.default_rng(0).random(shape), jnp.float32)
  variables = model.init(jax.random.key(0), x, train=False)
  out, state = model.apply(variables, x, train=False, mutable=['intermediates'])
  return variables, out, state['intermediates']


def test_a_user_model_gets_the_families_names_and_intermediates():
  variables, out, inter = _init(TinyNet(num_outputs=3))
  assert out.shape == (2, 3) and out.dtype == jnp.float32
  assert set(variables['params']) == {'stem_conv', 'stem_norm', 'block2', 'block3', 'block4',
                                      'logits'}
  # block3 changes the shape (4 -> 8 channels, stride 2): the projection shortcut; block4 keeps it.
  assert set(variables['params']['block3']['shortcut']) == {'conv', 'norm'}
  assert 'shortcut' not in variables['params']['block4']
  assert set(inter) == {'block1_output', 'block2_output', 'block3_output', 'block4_output',
                        'pre_logits'}
  assert inter['block3_output'][0].shape == (2, 4, 4, 8)
  assert inter['pre_logits'][0].shape == (2, 8)


def test_a_user_model_takes_the_vocabulary_and_trains_with_stochastic_depth():
  plain, _, _ = _init(TinyNet(shortcut='none', norm='group', act='gelu'))
  assert 'shortcut' not in plain['params']['block3']  # a plain block is its body alone
  with pytest.raises(ConfigError, match='TinyNet takes no norm'):
    _init(TinyNet(norm='weight'))
  model = TinyNet(survival_prob_last=0.5)
  variables, _, _ = _init(model)
  _, state = model.apply(variables, jnp.ones((4, 8, 8, 3)), train=True,
                         rngs={'stochastic_depth': jax.random.key(1)},
                         mutable=['batch_stats', 'intermediates'])
  keeps = {k: v['body']['keep'][0].shape for k, v in state['intermediates'].items()
           if isinstance(v, dict)}
  assert keeps == {'block2': (4,), 'block3': (4,), 'block4': (4,)}


def test_the_stage_loop_gives_each_block_its_slot():
  slots = []

  class Loop(nn.Module):
    num_outputs: int = 2
    survival_prob_last: float = 0.5

    @nn.compact
    def __call__(self, x, train: bool = False):
      sk = Skeleton.of(self, train)
      return sk.stages(x, (2, 2), (3, 5), lambda x, slot: slots.append(slot) or
                       jnp.zeros((x.shape[0], x.shape[1] // slot.strides,
                                  x.shape[2] // slot.strides, slot.features)))

  jax.eval_shape(functools.partial(Loop().init, train=False), jax.random.key(0),
                 jnp.zeros((1, 8, 8, 1)))
  assert [(s.stage, s.block, s.index, s.name) for s in slots] == [
      (0, 0, 0, 'block2'), (0, 1, 1, 'block3'), (1, 0, 2, 'block4'), (1, 1, 3, 'block5')]
  assert [s.strides for s in slots] == [1, 1, 2, 1]
  assert [s.in_features for s in slots] == [1, 3, 3, 5]
  assert [s.changes_shape for s in slots] == [True, False, True, False]
  np.testing.assert_allclose([s.survival_prob for s in slots], [0.875, 0.75, 0.625, 0.5])
  assert {s.num_blocks for s in slots} == {4}


def test_stage_sizes_from_depth_or_given():
  sizes = functools.partial(common.stage_sizes, 'Net', layers_per_block=2, extra=2,
                            hint='6n+2, e.g. 20')
  assert sizes(depth=20, given=None) == (3, 3, 3)
  assert sizes(depth=None, given=[1, 2]) == (1, 2)
  with pytest.raises(ConfigError, match=r'Net takes depth \(6n\+2, e.g. 20\) or stage_sizes, '
                                        'exactly one of them'):
    sizes(depth=None, given=None)
  with pytest.raises(ConfigError, match='exactly one of them: got depth=20'):
    sizes(depth=20, given=(1,))
  with pytest.raises(ConfigError, match='not of the form 6n\\+2'):
    sizes(depth=21, given=None)
  assert sizes(depth=None, given=None, default_depth=8) == (1, 1, 1)
  with pytest.raises(ConfigError, match='or stage_sizes, not both'):
    sizes(depth=8, given=(1,), default_depth=8)
  with pytest.raises(ConfigError, match='cannot derive stage_sizes'):
    common.stage_sizes('Net', 20, None, None, 2, hint='')
  body = blocks.IdentityShortcut
  assert common.with_stochastic_depth(body, 1.0, True, None) is body
  assert common.with_stochastic_depth(body, 0.5, True, None).func is blocks.StochasticDepth


# One small model of each family, and the input it takes.
FAMILIES = {
    'ResNetCIFAR': (resnet_cifar.ResNet8, (8, 8, 3)),
    'ResNetCIFAR fixup': (functools.partial(resnet_cifar.ResNet8, norm='none', merge='fixup'),
                          (8, 8, 3)),
    'ResNetCIFAR dense_additive': (functools.partial(resnet_cifar.ResNet8,
                                                     merge='dense_additive'), (8, 8, 3)),
    'PreActResNet': (preact_resnet._PreActResNet11, (8, 8, 3)),
    'ResNeXt': (functools.partial(resnext.ResNeXt, stage_sizes=(1, 1), cardinality=2,
                                  base_width=2, stage_features=(8, 16), stem_features=4),
                (8, 8, 3)),
    'DenseNet': (densenet._DenseNet7_k4, (8, 8, 3)),
    'HighwayCIFAR': (highway._HighwayCIFAR8, (8, 8, 3)),
    'ShortcutStudyNet': (shortcut_study.ShortcutStudyNet, (8, 8, 1)),
    'ResidualMLP': (functools.partial(seed.ResidualMLP, width=8, num_blocks=1), (12,)),
    'SeedResCNN': (functools.partial(seed.SeedResCNN, num_blocks=1), (16, 16, 1)),
    'SteeringNet': (seed.SteeringNet, (20, 20, 3)),
}


@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_every_family_is_built_through_the_skeleton(family, monkeypatch):
  calls = []
  for method in ('stem', 'head'):
    original = getattr(Skeleton, method)

    def spy(self, *args, _method=method, _original=original, **kwargs):
      calls.append((_method, type(self.model).__name__))
      return _original(self, *args, **kwargs)

    monkeypatch.setattr(Skeleton, method, spy)
  factory, shape = FAMILIES[family]
  model = factory(num_outputs=3)
  _, out, inter = _init(model, (2, *shape))
  name = type(model).__name__
  # The highway nets have no stem: their stage loop numbers the plain layers from block1.
  expected = [('head', name)] if name == 'HighwayCIFAR' else [('stem', name), ('head', name)]
  assert calls == expected * 2  # init, apply
  assert out.shape == (2, 3) and out.dtype == jnp.float32
  assert {'block1_output', 'pre_logits'} <= set(inter)


def test_no_model_writes_the_skeleton_out_again():
  """The stem, the global pool and the classifier are written once, in common.py."""
  skeleton = [r"name='stem_conv'", r"'pre_logits'", r"jnp\.mean\(x, axis=\(1, 2\)\)",
              r"name='final_norm'", r"linear_decay_survival", r"jnp\.asarray\(x, jnp\.float32\)"]
  folder = pathlib.Path(models.__file__).parent
  for path in sorted(folder.glob('*.py')):
    if path.name in ('common.py', '__init__.py'):
      continue
    text = path.read_text()
    for pattern in skeleton:
      assert not re.search(pattern, text), f'{path.name} writes {pattern!r} itself: use Skeleton'
    if 'nn.compact' in text:
      assert 'Skeleton.of(' in text or '_keras_skeleton(' in text, path.name
