"""The optimizer and schedules built from the config."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from resflax import config as config_lib
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
  config.update(optimizer='sgd', momentum=0.0, learning_rate=1.0, weight_decay=0.5)
  tx = state_lib.make_optimizer(config, steps_per_epoch=1)
  params = {'kernel': jnp.ones((2, 2)), 'bias': jnp.ones((2,))}
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zeros, tx.init(params), params)
  np.testing.assert_allclose(updates['kernel'], -0.5)  # -lr * wd * w
  np.testing.assert_allclose(updates['bias'], 0.0)
