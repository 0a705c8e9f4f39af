"""The train state and the optimizer built from the config (optax pieces only)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
from flax.training import train_state
import jax
import jax.numpy as jnp
import ml_collections
import optax

from resflax.errors import ConfigError


class TrainState(train_state.TrainState):
  """``step``, ``params`` and ``opt_state`` (flax) plus BatchNorm's running statistics."""

  batch_stats: Any = None


def learning_rate_schedule(config: ml_collections.ConfigDict, steps_per_epoch: int) -> optax.Schedule:
  """``constant``, ``cosine`` (to zero over the run) or ``piecewise`` (x lr_decay at epochs)."""
  lr, total = config.learning_rate, max(1, config.num_epochs * steps_per_epoch)
  if config.num_train_steps > 0:
    total = config.num_train_steps
  warmup = int(config.warmup_epochs * steps_per_epoch)
  if config.lr_schedule == 'constant':
    schedule = optax.constant_schedule(lr)
  elif config.lr_schedule == 'cosine':
    schedule = optax.cosine_decay_schedule(lr, max(1, total - warmup))
  elif config.lr_schedule == 'piecewise':
    schedule = optax.piecewise_constant_schedule(
        lr, {int(e * steps_per_epoch) - warmup: config.lr_decay for e in config.lr_boundaries_epochs})
  else:
    raise ConfigError(f"unknown --config.lr_schedule={config.lr_schedule!r}: use 'constant', "
                      "'cosine' or 'piecewise'")
  if warmup:
    schedule = optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), schedule], [warmup])
  return schedule


def make_optimizer(config: ml_collections.ConfigDict,
                   steps_per_epoch: int) -> optax.GradientTransformation:
  """Adam (optionally AMSGrad, as the seeds) or SGD with momentum; optional L2 weight decay."""
  schedule = learning_rate_schedule(config, steps_per_epoch)
  if config.optimizer == 'adam':
    # Keras' Adam epsilon is 1e-7 (optax: 1e-8); the seeds use Keras' defaults.
    opt = (optax.amsgrad(schedule, eps=1e-7) if config.amsgrad
           else optax.adam(schedule, eps=1e-7))
  elif config.optimizer == 'sgd':
    opt = optax.sgd(schedule, momentum=config.momentum or None, nesterov=config.nesterov)
  else:
    raise ConfigError(f"unknown --config.optimizer={config.optimizer!r}: use 'adam' or 'sgd'")
  if config.weight_decay:
    # L2 penalty on the weights (not biases / BN), added to the gradient as the papers do.
    decay_mask = lambda params: jax.tree.map(lambda p: p.ndim > 1, params)
    opt = optax.chain(optax.add_decayed_weights(config.weight_decay, decay_mask), opt)
  return opt


def create_state(model: nn.Module, tx: optax.GradientTransformation, input_shape: tuple[int, ...],
                 rng: jax.Array) -> TrainState:
  """Initial state from a dummy batch of one example (jit this with ``out_shardings``)."""
  variables = model.init({'params': rng}, jnp.zeros((1, *input_shape), jnp.float32), train=False)
  state = TrainState.create(apply_fn=model.apply, params=variables['params'], tx=tx,
                            batch_stats=variables.get('batch_stats', {}))
  return state.replace(step=jnp.zeros((), jnp.int32))  # an array, as after a step: no retrace
