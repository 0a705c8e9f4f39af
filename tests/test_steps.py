"""The train and eval steps check their input and the model's output shapes when traced (chex)."""

import chex
import jax
import jax.numpy as jnp
import optax
import pytest

from resflax import models
from resflax.errors import ShapeMismatchError
from resflax.train import state as state_lib
from resflax.train import steps


def _state(num_outputs=10):
  model = models.build('mnist_resmlp', num_outputs=num_outputs)
  return state_lib.create_state(model, optax.sgd(0.1), (784,), jax.random.key(0))


def _batch(n=4, image=(784,), label_shape=None, **extra):
  return {'image': jnp.zeros((n, *image)),
          'label': jnp.zeros(label_shape or (n,), jnp.int32), **extra}


def test_a_batch_that_fits_passes_jitted_and_the_step_runs():
  state = _state()
  step = jax.jit(lambda s, b: steps.train_step(s, b, jax.random.key(1),
                                               loss='softmax_cross_entropy', input_shape=(784,)))
  new_state, metrics = step(state, _batch())
  chex.assert_trees_all_equal_shapes_and_dtypes(new_state.params, state.params)
  chex.assert_tree_all_finite(metrics)
  sums = steps.eval_step(state, _batch(mask=jnp.ones(4)), loss='softmax_cross_entropy',
                         input_shape=(784,))
  assert float(sums['count']) == 4


@pytest.mark.parametrize('batch, match', [
    (_batch(image=(28, 28, 1)), r'image \(4, 28, 28, 1\).*not image \[N, 784\]'),  # another model's
    (_batch(label_shape=(4, 10)), r'label \(4, 10\)'),  # one-hot labels
    (_batch(label_shape=(3,)), r'image \(4, 784\), label \(3,\)'),  # a ragged batch
    (_batch(image=()), r'image \(4,\)'),  # no example axis
])
def test_a_batch_that_does_not_fit_is_one_clear_error(batch, match):
  state = _state()
  with pytest.raises(ShapeMismatchError, match=match):
    jax.jit(lambda s, b: steps.train_step(s, b, jax.random.key(1), loss='softmax_cross_entropy',
                                          input_shape=(784,)))(state, batch)


def test_eval_checks_the_mask_and_the_model_input():
  state = _state()
  with pytest.raises(ShapeMismatchError, match=r'mask \(2,\)'):
    steps.eval_step(state, _batch(mask=jnp.ones(2)), loss='softmax_cross_entropy')
  with pytest.raises(ShapeMismatchError, match=r'not image \[N, 784\]'):
    steps.eval_step(state, _batch(image=(392,), mask=jnp.ones(4)), loss='softmax_cross_entropy',
                    input_shape=(784,))


def test_outputs_that_do_not_fit_the_loss_are_one_clear_error():
  """mse on a 10-output model would silently fit output 0 only: it is refused."""
  batch = {'image': jnp.zeros((4, 784)), 'label': jnp.zeros((4,), jnp.float32)}
  with pytest.raises(ShapeMismatchError, match=r'outputs \(4, 10\).*loss=mse needs \[N, 1\]'):
    steps.train_step(_state(num_outputs=10), batch, jax.random.key(1), loss='mse')
  _, metrics = steps.train_step(_state(num_outputs=1), batch, jax.random.key(1), loss='mse')
  assert set(metrics) >= {'loss', 'mae', 'mse'}
