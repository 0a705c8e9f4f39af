"""Pure train and eval steps: ``train_step(state, batch, rng, loss=...) -> (state, metrics)``.

They know nothing of datasets, devices or files. Jit them with the loss name static and the state
donated (see ``loop.py``); under the global-view mesh the same code runs on 1 device or a pod.
"""

from __future__ import annotations

import re

import chex
import jax
import jax.numpy as jnp
import optax

from resflax.errors import ConfigError, ShapeMismatchError
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


def check_batch(batch: dict, input_shape: tuple[int, ...] | None = None) -> None:
  """The step's input contract, checked on shapes (at trace time: free under jit).

  ``image`` ``[N, *input_shape]`` (any ``[N, ...]`` where ``input_shape`` is None), ``label``
  ``[N]`` and, in an eval batch, ``mask`` ``[N]``. Raises ``ShapeMismatchError`` with the shapes.
  """
  shapes = ', '.join(f'{k} {tuple(v.shape)}' for k, v in batch.items())
  try:
    chex.assert_rank(batch['label'], 1)
    chex.assert_rank(batch['image'], {*range(2, 6)})
    chex.assert_equal_shape_prefix([batch['image'], batch['label']], 1)
    if 'mask' in batch:
      chex.assert_equal_shape([batch['mask'], batch['label']])
    if input_shape is not None:
      chex.assert_shape(batch['image'], (None, *input_shape))
  except AssertionError as e:
    want = f"[N, {', '.join(map(str, input_shape))}]" if input_shape is not None else '[N, ...]'
    raise ShapeMismatchError(
        f'the batch ({shapes}) is not image {want}, label [N] (mask [N] to evaluate): '
        f"{str(e).splitlines()[0][:200]}") from None


def check_outputs(outputs: jax.Array, labels: jax.Array, loss: str) -> None:
  """The model's outputs fit ``loss``: ``[N, classes]`` logits, or ``[N, 1]`` predictions (mse)."""
  want = (labels.shape[0], 1) if task_of(loss) == 'regression' else (labels.shape[0], None)
  try:
    chex.assert_shape(outputs, want)
  except AssertionError:
    raise ShapeMismatchError(
        f'the model outputs {tuple(outputs.shape)} for {labels.shape[0]} examples, but '
        f'--config.loss={loss} needs [N, ' + ('1]' if want[1] == 1 else 'classes]')
        + ': build the model with num_outputs=' + ('1' if want[1] == 1 else 'the class count')
    ) from None


_BLOCK = re.compile(r'(block|stage|layer)\d+')


def block_of(path: tuple[str, ...]) -> str:
  """The block a parameter belongs to: its path up to the first ``block<i>`` (or ``stage<i>``,
  ``layer<i>``) component, else its top-level module (``stem0``, ``logits``, ...)."""
  for i, name in enumerate(path):
    if _BLOCK.fullmatch(name):
      return '/'.join(path[:i + 1])
  return path[0]


def per_block_norms(tree) -> dict[str, jax.Array]:
  """``{block: l2 norm of its leaves}`` of a params-shaped tree."""
  squares: dict[str, jax.Array] = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    block = block_of(tuple(getattr(k, 'key', str(k)) for k in path))
    squares[block] = squares.get(block, 0.0) + jnp.sum(jnp.square(leaf))
  return {k: jnp.sqrt(v) for k, v in squares.items()}


def train_step(state: TrainState, batch: dict, rng: jax.Array, *, loss: str,
               axis_name: str | None = None, block_metrics: bool = False,
               input_shape: tuple[int, ...] | None = None):
  """One optimizer step on ``batch`` (``image`` ``[N, *input_shape]``, ``label`` ``[N]``).

  The batch's and the model outputs' shapes are checked when the step is traced (``check_batch``,
  ``check_outputs``); pass ``input_shape`` (what the state was created for) to check the images
  against the model's input too.

  Randomness: ``k = fold_in(rng, step)``; dropout draws from ``fold_in(k, 0)`` and stochastic depth
  from ``fold_in(k, 1)``, so a resumed run draws the same numbers. Under ``jax.pmap`` pass
  ``axis_name``: gradients and metrics are averaged over it (BatchNorm syncs through the model's
  own ``axis_name``); under ``jax.jit`` on a mesh leave it None.

  ``block_metrics`` adds the gradient-flow diagnostic: per block (``block_of``), the gradient norm
  ``grad_norm/<block>`` and the update/parameter norm ratio ``update_ratio/<block>``.
  """
  check_batch(batch, input_shape)
  step_rng = jax.random.fold_in(rng, state.step)
  rngs = {'dropout': jax.random.fold_in(step_rng, 0),
          'stochastic_depth': jax.random.fold_in(step_rng, 1)}

  def loss_fn(params):
    outputs, new_model_state = state.apply_fn(
        {'params': params, 'batch_stats': state.batch_stats}, batch['image'], train=True,
        rngs=rngs, mutable=['batch_stats'])
    check_outputs(outputs, batch['label'], loss)
    return jnp.mean(per_example_loss(loss, outputs, batch['label'])), (new_model_state, outputs)

  (_, (new_model_state, outputs)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  metrics = jax.tree.map(jnp.mean, _per_example_metrics(loss, outputs, batch['label']))
  if axis_name is not None:
    grads, metrics = jax.lax.pmean((grads, metrics), axis_name)
  new_state = state.apply_gradients(grads=grads, batch_stats=new_model_state['batch_stats'])
  updates = jax.tree.map(jnp.subtract, new_state.params, state.params)
  metrics.update(l2_grads=optax.global_norm(grads), l2_params=optax.global_norm(new_state.params),
                 l2_updates=optax.global_norm(updates))
  if block_metrics:
    param_norms = per_block_norms(state.params)
    metrics.update({f'grad_norm/{k}': v for k, v in per_block_norms(grads).items()})
    metrics.update({f'update_ratio/{k}': v / (param_norms[k] + 1e-12)
                    for k, v in per_block_norms(updates).items()})
  return new_state, metrics


def eval_step(state: TrainState, batch: dict, *, loss: str, axis_name: str | None = None,
              input_shape: tuple[int, ...] | None = None) -> dict[str, jax.Array]:
  """Sums over the real examples of ``batch`` (``mask`` 0 marks padding) and their ``count``.

  Shapes are checked as in ``train_step``.
  """
  check_batch(batch, input_shape)
  outputs = state.apply_fn({'params': state.params, 'batch_stats': state.batch_stats},
                           batch['image'], train=False)
  check_outputs(outputs, batch['label'], loss)
  mask = batch['mask']
  sums = jax.tree.map(lambda m: jnp.sum(m * mask), _per_example_metrics(loss, outputs, batch['label']))
  sums['count'] = jnp.sum(mask)
  return sums if axis_name is None else jax.lax.psum(sums, axis_name)
