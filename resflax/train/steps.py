"""Pure train and eval steps: ``train_step(state, batch, rng, loss=...) -> (state, metrics)``.

They know nothing of datasets, devices or files. Jit them with the loss name static and the state
donated (see ``loop.py``); under the global-view mesh the same code runs on 1 device or a pod.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from resflax.errors import ConfigError
from resflax.train.state import TrainState

LOSSES = ('softmax_cross_entropy', 'keras_binary_crossentropy', 'mse')


def per_example_loss(loss: str, outputs: jax.Array, labels: jax.Array) -> jax.Array:
  """``[N]`` losses. ``outputs`` are logits (classification) or predictions ``[N, 1]`` (regression)."""
  if loss == 'softmax_cross_entropy':
    return optax.softmax_cross_entropy_with_integer_labels(outputs, labels)
  if loss == 'keras_binary_crossentropy':
    # What the seeds compile: Keras' binary cross-entropy on the softmax probabilities, clipped to
    # [1e-7, 1 - 1e-7] and averaged over the classes.
    probs = jnp.clip(jax.nn.softmax(outputs), 1e-7, 1 - 1e-7)
    onehot = jax.nn.one_hot(labels, outputs.shape[-1])
    return -jnp.mean(onehot * jnp.log(probs) + (1 - onehot) * jnp.log1p(-probs), axis=-1)
  if loss == 'mse':
    return jnp.square(outputs[..., 0] - labels)
  raise ConfigError(f'unknown --config.loss={loss!r}: use one of {", ".join(LOSSES)}')


def task_of(loss: str) -> str:
  return 'regression' if loss == 'mse' else 'classification'


def _per_example_metrics(loss: str, outputs, labels) -> dict[str, jax.Array]:
  metrics = {'loss': per_example_loss(loss, outputs, labels)}
  if task_of(loss) == 'classification':
    metrics['accuracy'] = (jnp.argmax(outputs, -1) == labels).astype(jnp.float32)
  else:
    err = outputs[..., 0] - labels
    metrics['mae'], metrics['mse'] = jnp.abs(err), jnp.square(err)
  return metrics


def train_step(state: TrainState, batch: dict, rng: jax.Array, *, loss: str):
  """One optimizer step on ``batch`` (``image``, ``label``); dropout key ``fold_in(rng, step)``."""
  dropout_rng = jax.random.fold_in(rng, state.step)

  def loss_fn(params):
    outputs, new_model_state = state.apply_fn(
        {'params': params, 'batch_stats': state.batch_stats}, batch['image'], train=True,
        rngs={'dropout': dropout_rng}, mutable=['batch_stats'])
    return jnp.mean(per_example_loss(loss, outputs, batch['label'])), (new_model_state, outputs)

  (_, (new_model_state, outputs)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  new_state = state.apply_gradients(grads=grads, batch_stats=new_model_state['batch_stats'])
  metrics = jax.tree.map(jnp.mean, _per_example_metrics(loss, outputs, batch['label']))
  updates = jax.tree.map(jnp.subtract, new_state.params, state.params)
  metrics.update(l2_grads=optax.global_norm(grads), l2_params=optax.global_norm(new_state.params),
                 l2_updates=optax.global_norm(updates))
  return new_state, metrics


def eval_step(state: TrainState, batch: dict, *, loss: str) -> dict[str, jax.Array]:
  """Sums over the real examples of ``batch`` (``mask`` 0 marks padding) and their ``count``."""
  outputs = state.apply_fn({'params': state.params, 'batch_stats': state.batch_stats},
                           batch['image'], train=False)
  mask = batch['mask']
  sums = jax.tree.map(lambda m: jnp.sum(m * mask), _per_example_metrics(loss, outputs, batch['label']))
  sums['count'] = jnp.sum(mask)
  return sums
