"""The optimizer and schedules built from the config."""

import json
import os
import pathlib

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from resflax import config as config_lib
from resflax.errors import ConfigError
from resflax.train import state as state_lib


@pytest.mark.parametrize('amsgrad', [True, False])
def test_adam_matches_keras(amsgrad):
  """Ten steps of resflax's Adam equal keras.optimizers.Adam's on the same gradients."""
  os.environ.setdefault('KERAS_BACKEND', 'tensorflow')
  keras = pytest.importorskip('keras')
  rng = np.random.default_rng(0)
  w0 = rng.normal(size=(5, 3)).astype(np.float32)
  grads = [rng.normal(scale=10.0 / (t + 1), size=(5, 3)).astype(np.float32) for t in range(10)]

  var = keras.Variable(w0)
  keras_opt = keras.optimizers.Adam(learning_rate=1e-3, amsgrad=amsgrad)
  for g in grads:
    keras_opt.apply_gradients([(keras.ops.convert_to_tensor(g), var)])

  tx = optax.chain(state_lib.scale_by_keras_adam(eps=1e-7, amsgrad=amsgrad),
                   optax.scale_by_learning_rate(1e-3))
  params, opt_state = jnp.asarray(w0), None
  opt_state = tx.init(params)
  for g in grads:
    updates, opt_state = tx.update(jnp.asarray(g), opt_state, params)
    params = optax.apply_updates(params, updates)
  np.testing.assert_allclose(params, np.asarray(var.numpy()), rtol=1e-5, atol=1e-7)
  if amsgrad:  # and it is not optax.amsgrad, whose max is over the bias-corrected moment
    ref = optax.amsgrad(1e-3, eps=1e-7)
    p, s = jnp.asarray(w0), ref.init(jnp.asarray(w0))
    for g in grads:
      u, s = ref.update(jnp.asarray(g), s, p)
      p = optax.apply_updates(p, u)
    assert not np.allclose(p, params, rtol=1e-5, atol=1e-7)


def test_schedules():
  config = config_lib.base_config()
  config.update(learning_rate=0.1, num_epochs=10, lr_schedule='piecewise',
                lr_boundaries_epochs=(5, 8), lr_decay=0.1)
  schedule = state_lib.learning_rate_schedule(config, steps_per_epoch=10)
  assert [float(schedule(s)) for s in (0, 49, 50, 79, 80)] == pytest.approx(
      [0.1, 0.1, 0.01, 0.01, 0.001])
  config.update(lr_schedule='cosine', warmup_epochs=1.0)
  schedule = state_lib.learning_rate_schedule(config, steps_per_epoch=10)
  assert float(schedule(0)) == 0.0 and float(schedule(10)) == pytest.approx(0.1)
  assert float(schedule(100)) == pytest.approx(0.0, abs=1e-6)


def test_weight_decay_skips_biases_and_norm_scales():
  config = config_lib.base_config()
  config.update(optimizer='sgd', learning_rate=1.0, weight_decay=0.5)
  tx = state_lib.make_optimizer(config, steps_per_epoch=1)
  params = {'kernel': jnp.ones((2, 2)), 'bias': jnp.ones((2,))}
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zeros, tx.init(params), params)
  np.testing.assert_allclose(updates['kernel'], -0.5)  # -lr * wd * w
  np.testing.assert_allclose(updates['bias'], 0.0)


# --- any optax optimizer / schedule by name; configs saved before optimizer_kwargs --------------

FIXTURES = pathlib.Path(__file__).parent / 'fixtures'
CONFIGS = pathlib.Path(__file__).parents[1] / 'experiments' / 'configs'


def _config(**overrides):
  config = config_lib.base_config()
  config.update(num_epochs=2)
  for key, value in overrides.items():
    config[key] = ml_collections.ConfigDict(value) if isinstance(value, dict) else value
  return config


def _run(tx, steps=5):
  """``steps`` updates of ``tx`` on fixed gradients: (params, opt_state)."""
  rng = np.random.default_rng(0)
  params = {'kernel': jnp.asarray(rng.normal(size=(4, 3)), jnp.float32),
            'bias': jnp.asarray(rng.normal(size=(3,)), jnp.float32)}
  state = tx.init(params)
  for t in range(steps):
    grads = jax.tree.map(lambda p, t=t: jnp.sin(p * (t + 1)), params)
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
  return params, state


@pytest.mark.parametrize('name, kwargs', [
    ('adamw', {'b1': 0.8, 'weight_decay': 1e-2}), ('lamb', {}), ('lion', {'b2': 0.98}),
    ('sgd', {'momentum': 0.9, 'nesterov': True}), ('adam', {'eps': 1e-6}),
    ('contrib.schedule_free_adamw', {'b1': 0.95}),
])
def test_any_optax_optimizer_by_name(name, kwargs):
  tx = state_lib.make_optimizer(_config(optimizer=name, optimizer_kwargs=kwargs, learning_rate=0.01),
                                steps_per_epoch=10)
  fn = optax
  for part in name.split('.'):
    fn = getattr(fn, part)
  chex.assert_trees_all_equal(_run(tx), _run(fn(optax.constant_schedule(0.01), **kwargs)))


def test_user_optimizer_by_import_path(tmp_path, monkeypatch):
  (tmp_path / 'my_opt.py').write_text(
      'import optax\n'
      'def signed_sgd(learning_rate, scale=1.0):\n'
      '  return optax.chain(optax.scale_by_sign(), optax.scale(scale),\n'
      '                     optax.scale_by_learning_rate(learning_rate))\n')
  monkeypatch.syspath_prepend(str(tmp_path))
  tx = state_lib.make_optimizer(_config(optimizer='my_opt:signed_sgd',
                                        optimizer_kwargs={'scale': 2.0}), steps_per_epoch=10)
  params, _ = _run(tx, steps=1)
  start, _ = _run(optax.identity(), steps=0)
  moved = jax.tree.map(lambda a, b: np.abs(np.asarray(a - b)), params, start)
  np.testing.assert_allclose(moved['kernel'], 2e-3, rtol=1e-4)  # |update| = scale * lr


def _old_optimizer(saved: dict, schedule):
  """The optimizer that resflax built from these keys before optimizer_kwargs existed."""
  if saved['optimizer'] == 'adam':
    opt = optax.chain(state_lib.scale_by_keras_adam(eps=1e-7, amsgrad=saved['amsgrad']),
                      optax.scale_by_learning_rate(schedule))
  else:
    opt = optax.sgd(schedule, momentum=saved['momentum'] or None, nesterov=saved['nesterov'])
  if saved.get('weight_decay'):
    decay_mask = lambda params: jax.tree.map(lambda p: p.ndim > 1, params)
    opt = optax.chain(optax.add_decayed_weights(saved['weight_decay'], decay_mask), opt)
  return opt


@pytest.mark.parametrize('fixture, experiment', [('config_v1_mnist_resmlp.json', 'mnist_resmlp'),
                                                 ('config_v1_resnet_cifar.json', 'resnet_cifar')])
def test_old_run_directory_resumes_with_the_same_numbers(fixture, experiment):
  """A config.json written before optimizer_kwargs: the same optimizer state and updates, and the
  workdir check accepts it with today's experiment file."""
  saved = json.loads((FIXTURES / fixture).read_text())
  assert 'amsgrad' in saved and 'optimizer_kwargs' not in saved  # an old-style run directory
  current = json.loads(config_lib.to_json(config_lib.load(CONFIGS / f'{experiment}.py')))
  if current['model_kwargs'].get('norm') == 'batch_unbiased':
    # The recipe's BatchNorm changed since (Torch's unbiased running variance): a change of the
    # numbers that the workdir check must name; the optimizer keys are what this test is about.
    assert config_lib.differences(saved, current) == [
        "model_kwargs: {} -> {'norm': 'batch_unbiased'}"]
    current['model_kwargs'] = {}
  assert config_lib.differences(saved, current) == []
  upgraded = config_lib.upgrade(saved)
  assert (upgraded['optimizer'], upgraded['optimizer_kwargs']) == (
      current['optimizer'], current['optimizer_kwargs'])
  assert not set(config_lib.LEGACY_OPTIMIZER_KEYS) & set(upgraded)
  # A different optimizer is still a difference.
  assert config_lib.differences(saved, {**current, 'optimizer_kwargs': {'amsgrad': False}})
  # loop.restore / export read config.json as a ConfigDict: the old keys build the old optimizer.
  old, new = (ml_collections.ConfigDict(c) for c in (saved, current))
  schedule = state_lib.learning_rate_schedule(old, steps_per_epoch=10)
  reference = _run(_old_optimizer(saved, schedule))
  chex.assert_trees_all_equal(_run(state_lib.make_optimizer(old, 10)), reference)
  chex.assert_trees_all_equal(_run(state_lib.make_optimizer(new, 10)), reference)


@pytest.mark.parametrize('old, optimizer, kwargs', [
    ({'optimizer': 'adam', 'amsgrad': False, 'momentum': 0.9, 'nesterov': False},
     'keras_adam', {'amsgrad': False}),
    ({'optimizer': 'sgd', 'amsgrad': True, 'momentum': 0.9, 'nesterov': True},
     'sgd', {'momentum': 0.9, 'nesterov': True}),
    ({'optimizer': 'sgd', 'amsgrad': True, 'momentum': 0.0, 'nesterov': False}, 'sgd', {}),
])
def test_upgrade_maps_the_old_optimizer_keys(old, optimizer, kwargs):
  upgraded = config_lib.upgrade({**old, 'learning_rate': 0.1}, fill_defaults=False)
  assert upgraded == {'optimizer': optimizer, 'optimizer_kwargs': kwargs, 'learning_rate': 0.1}
  config = config_lib.base_config()
  for key in ('optimizer_kwargs', 'lr_schedule_kwargs'):
    del config[key]
  config.update(old)  # an old config as loop.restore reads it: the old keys, no new ones
  schedule = optax.constant_schedule(config.learning_rate)
  chex.assert_trees_all_equal(_run(state_lib.make_optimizer(config, 10)), _run(_old_optimizer(old, schedule)))


def test_old_experiment_file_keeps_its_optimizer(tmp_path):
  """A user's experiment file that still sets the old keys loads in today's keys."""
  path = tmp_path / 'old_style.py'
  path.write_text('from resflax.config import base_config\n'
                  'def get_config():\n'
                  '  c = base_config()\n'
                  "  c.optimizer, c.amsgrad = 'adam', False\n"
                  '  return c\n')
  config = config_lib.load(path)
  assert config.optimizer == 'keras_adam' and config.optimizer_kwargs.to_dict() == {'amsgrad': False}
  assert 'amsgrad' not in config


@pytest.mark.parametrize('overrides, message', [
    ({'optimizer': 'adamx'}, r"unknown --config.optimizer='adamx' \(did you mean adamax.*"
                             r"use an optax optimizer"),
    ({'optimizer': 'apply_updates'}, r"unknown --config.optimizer='apply_updates'"),
    ({'optimizer': 'nowhere_module:opt'}, r"unknown --config.optimizer='nowhere_module:opt'"),
    ({'optimizer': 'adamw', 'optimizer_kwargs': {'beta1': 0.9}},
     r"--config.optimizer_kwargs.beta1: optax.adamw takes no argument 'beta1' \(it takes b1, b2"),
    ({'optimizer': 'sgd', 'optimizer_kwargs': {'learning_rate': 0.1}},
     r'--config.optimizer_kwargs.learning_rate: resflax sets learning_rate itself'),
    ({'optimizer': 'keras_adam', 'optimizer_kwargs': {'nesterov': True}},
     r"keras_adam takes no argument 'nesterov' \(it takes b1, b2, eps, amsgrad\)"),
    ({'lr_schedule': 'exponential_decay'}, r'optax.exponential_decay needs decay_rate: set '
                                           r'--config.lr_schedule_kwargs.decay_rate='),
    ({'lr_schedule': 'cosine_decay', 'lr_schedule_kwargs': {'alpah': 0.1}},
     r"optax.cosine_decay takes no argument 'alpah' \(it takes alpha, exponent\)"),
    ({'lr_schedule': 'cosine', 'lr_schedule_kwargs': {'alpha': 0.1}},
     r"are for optax schedules; 'cosine' takes none"),
    ({'lr_schedule': 'cosnie'}, r"unknown --config.lr_schedule='cosnie' \(did you mean cosine"),
])
def test_bad_optimizer_input_is_one_line(overrides, message):
  with pytest.raises(ConfigError, match=message) as e:
    state_lib.make_optimizer(_config(**overrides), steps_per_epoch=10)
  assert '\n' not in str(e.value)


def test_optax_schedules_by_name():
  config = _config(learning_rate=0.1, num_epochs=10, lr_schedule='exponential_decay',
                   lr_schedule_kwargs={'decay_rate': 0.5})
  schedule = state_lib.learning_rate_schedule(config, steps_per_epoch=10)  # over the 100 steps
  assert [float(schedule(s)) for s in (0, 50, 100)] == pytest.approx([0.1, 0.1 * 0.5**0.5, 0.05])
  config.update(lr_schedule='warmup_cosine_decay', warmup_epochs=0.0)
  config.lr_schedule_kwargs = {'init_value': 0.0, 'warmup_steps': 10}
  schedule = state_lib.learning_rate_schedule(config, steps_per_epoch=10)
  assert [float(schedule(s)) for s in (0, 5, 10)] == pytest.approx([0.0, 0.05, 0.1])
  assert float(schedule(100)) == pytest.approx(0.0, abs=1e-7)
  config.update(lr_schedule='linear_schedule', warmup_epochs=2.0)  # warmup, then 0.1 -> 0.01
  config.lr_schedule_kwargs = {'end_value': 0.01}
  schedule = state_lib.learning_rate_schedule(config, steps_per_epoch=10)
  assert [float(schedule(s)) for s in (10, 20, 60, 100)] == pytest.approx([0.05, 0.1, 0.055, 0.01])


def test_kwargs_overrides_add_keys():
  config = config_lib.load(CONFIGS / 'mnist_resmlp.py')
  config_lib.override(config, 'optimizer', 'adamw')
  config_lib.override(config, 'optimizer_kwargs', '{}')
  config_lib.override(config, 'optimizer_kwargs.b1', '0.95')
  config_lib.override(config, 'optimizer_kwargs.weight_decay', '1e-3')
  config_lib.override(config, 'optimizer_kwargs.nesterov', 'true')
  assert config.optimizer_kwargs.to_dict() == {'b1': 0.95, 'weight_decay': 1e-3, 'nesterov': True}
  config_lib.override(config, 'lr_schedule', 'exponential_decay')
  config_lib.override(config, 'lr_schedule_kwargs', "{'decay_rate': 0.5}")
  assert config.lr_schedule_kwargs.decay_rate == 0.5
  with pytest.raises(ConfigError, match='unknown config key --config.optimizer_kwarg.b1'):
    config_lib.override(config, 'optimizer_kwarg.b1', '0.9')
  with pytest.raises(ConfigError, match=r"--config.optimizer_kwargs='\[1\]': expected ConfigDict"):
    config_lib.override(config, 'optimizer_kwargs', '[1]')
  state_lib.make_optimizer(config, steps_per_epoch=10)


@pytest.mark.parametrize('schedule, length_matters', [('constant', False), ('piecewise', False),
                                                      ('cosine', True), ('exponential_decay', True)])
def test_run_length_may_grow_unless_the_schedule_uses_it(schedule, length_matters):
  saved = json.loads(config_lib.to_json(_config(lr_schedule=schedule)))
  longer = {**saved, 'num_epochs': saved['num_epochs'] + 5}
  assert bool(config_lib.differences(saved, longer)) == length_matters


@pytest.mark.slow  # ~40 s on 2 busy cores; the workdir check itself is tested above
def test_old_run_directory_resumes_and_evaluates(data_dir, tmp_path):
  """A run directory whose config.json has the old keys: resumed by today's experiment file (the
  checkpoint's optimizer state restores) and evaluated from the saved config alone."""
  from resflax import train  # pylint: disable=g-import-not-at-top
  overrides = [('dataset', 'mnist_5k'), ('data_dir', data_dir), ('download', 'False'),
               ('progress', 'none'), ('log_every_steps', '1'), ('checkpoint_min_interval_s', '0')]
  config = lambda steps: config_lib.from_args(CONFIGS / 'mnist_resmlp.py',
                                              [*overrides, ('num_train_steps', str(steps))])
  train.train_and_evaluate(config(2), tmp_path)
  path = tmp_path / 'config.json'
  saved = json.loads(path.read_text())
  del saved['optimizer_kwargs'], saved['lr_schedule_kwargs'], saved['image_key'], saved['label_key']
  saved.update(optimizer='adam', amsgrad=True, momentum=0.9, nesterov=False)  # as before
  path.write_text(json.dumps(saved))
  assert train.evaluate(tmp_path)['step'] == 2  # loop.restore: the old keys build keras_adam
  result = train.train_and_evaluate(config(4), tmp_path)
  assert result['step'] == 4
  assert 'optimizer_kwargs' in json.loads(path.read_text())  # rewritten in today's keys
