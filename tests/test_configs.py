"""Every experiment config: it loads, names a registered model, and one train step runs."""

import pathlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resflax import config as config_lib
from resflax import models
from resflax.train import state as state_lib
from resflax.train import steps

CONFIGS = sorted(pathlib.Path(__file__).parents[1].glob('experiments/configs/*.py'))
REQUIRED_KEYS = ('model', 'dataset', 'batch_size', 'num_epochs', 'learning_rate', 'loss', 'seed')


def test_every_seed_model_has_a_config():
  names = {p.stem for p in CONFIGS}
  seed_models = {n for n, spec in models.MODELS.items() if spec.source.startswith('seed')}
  assert len(seed_models) == 8 and seed_models <= names, seed_models - names


def _is_seed(path):
  return path.stem in models.MODELS and models.MODELS[path.stem].source.startswith('seed')


# The paper families' default models take 10-50 s each to compile on 2 cores: in the slow set
# (`pytest -m slow`); tests/test_zoo.py trains each family's tiny variant in the default set.
@pytest.mark.parametrize('path', [p if _is_seed(p) else pytest.param(p, marks=pytest.mark.slow)
                                  for p in CONFIGS], ids=lambda p: p.stem)
def test_config_smoke(path):
  config = config_lib.load(path)
  for key in REQUIRED_KEYS:
    assert key in config, f'{path.name} lacks {key}'
  spec = models.get_spec(config.model)
  assert steps.task_of(config.loss) == spec.task
  num_outputs = 10 if spec.task == 'classification' else 1
  model = models.build(config.model, num_outputs=num_outputs)
  tx = state_lib.make_optimizer(config, steps_per_epoch=10)
  state = state_lib.create_state(model, tx, spec.input_shape, jax.random.key(0))
  batch_size = 2
  rng = np.random.default_rng(0)
  batch = {'image': jnp.asarray(rng.random((batch_size, *spec.input_shape)), jnp.float32)}
  if spec.task == 'classification':
    batch['label'] = jnp.asarray([3, 7], jnp.int32)
  else:
    batch['label'] = jnp.asarray([-0.5, 0.25], jnp.float32)
  chex.clear_trace_counter()

  @jax.jit
  @chex.assert_max_traces(n=1)
  def train_step(state, batch, rng):
    return steps.train_step(state, batch, rng, loss=config.loss)

  params_before = jax.tree.map(np.asarray, state.params)
  state, metrics = train_step(state, batch, jax.random.key(1))
  state, metrics = train_step(state, batch, jax.random.key(1))  # no recompile
  assert int(state.step) == 2
  assert np.isfinite(float(metrics['loss']))
  changed = jax.tree.map(lambda a, b: not np.array_equal(a, np.asarray(b)), params_before,
                         state.params)
  assert all(jax.tree.leaves(changed)), 'every parameter should move after two Adam steps'
