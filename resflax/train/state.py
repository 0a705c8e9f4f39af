"""The train state and the optimizer built from the config (optax pieces only)."""

from __future__ import annotations

from collections.abc import Callable
import difflib
import importlib
import inspect
from typing import Any, NamedTuple

import flax.linen as nn
from flax.training import train_state
import jax
import jax.numpy as jnp
import ml_collections
import optax

from resflax import config as config_lib
from resflax.errors import ConfigError


class TrainState(train_state.TrainState):
  """``step``, ``params`` and ``opt_state`` (flax) plus BatchNorm's running statistics."""

  batch_stats: Any = None


class KerasAdamState(NamedTuple):
  """Adam's moments as Keras keeps them (``nu_max`` only with AMSGrad)."""

  count: jax.Array
  mu: Any
  nu: Any
  nu_max: Any


def scale_by_keras_adam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-7,
                        amsgrad: bool = False) -> optax.GradientTransformation:
  """Adam / AMSGrad exactly as Keras computes them (``keras.optimizers.Adam``).

  Kingma & Ba (arXiv:1412.6980) sec. 2's efficient form: the bias corrections are folded into the
  step, ``m * sqrt(1 - b2^t) / (1 - b1^t) / (sqrt(v) + eps)``, and AMSGrad (Reddi et al. 2018)
  keeps the running max of the raw second moment ``v``. ``optax.amsgrad`` instead takes the max of
  the bias-corrected moment, which remembers the large first gradients and trains the seed models
  markedly slower (0.82 vs 0.90 test accuracy on mnist_5k; see README).
  """

  def init(params):
    zeros = lambda: jax.tree.map(jnp.zeros_like, params)
    return KerasAdamState(jnp.zeros([], jnp.int32), zeros(), zeros(), zeros() if amsgrad else None)

  def update(grads, state, params=None):
    del params
    count = state.count + 1
    mu = jax.tree.map(lambda m, g: m + (g - m) * (1 - b1), state.mu, grads)
    nu = jax.tree.map(lambda v, g: v + (g * g - v) * (1 - b2), state.nu, grads)
    nu_max = jax.tree.map(jnp.maximum, state.nu_max, nu) if amsgrad else None
    t = count.astype(jnp.float32)
    alpha = jnp.sqrt(1 - b2**t) / (1 - b1**t)
    updates = jax.tree.map(lambda m, v: alpha * m / (jnp.sqrt(v) + eps), mu,
                           nu_max if amsgrad else nu)
    return updates, KerasAdamState(count, mu, nu, nu_max)

  return optax.GradientTransformation(init, update)


def keras_adam(learning_rate: optax.ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999,
               eps: float = 1e-7, amsgrad: bool = False) -> optax.GradientTransformation:
  """``keras.optimizers.Adam(learning_rate, beta_1=b1, beta_2=b2, epsilon=eps, amsgrad=amsgrad)``
  (Keras' defaults): ``scale_by_keras_adam`` then the rate. The seeds' optimizer (seed 002 compiles
  ``Adam(amsgrad=True)``, Donkeycar plain Adam)."""
  return optax.chain(scale_by_keras_adam(b1=b1, b2=b2, eps=eps, amsgrad=amsgrad),
                     optax.scale_by_learning_rate(learning_rate))


# resflax's own optimizers; --config.optimizer may name these, any optax optimizer (``adamw``,
# ``contrib.muon``) or ``module:function`` of the user's (each called with ``learning_rate=``).
OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {'keras_adam': keras_adam}
# resflax's own schedules (epoch-based); any other --config.lr_schedule is an optax schedule.
SCHEDULES = ('constant', 'cosine', 'piecewise')
RATE_ARGS = ('peak_value', 'init_value', 'value')  # an optax schedule's rate: learning_rate
LENGTH_ARGS = ('decay_steps', 'transition_steps')  # its length: the run's steps after warmup


def _resolve(name: str, key: str, what: str, fits: Callable[[inspect.Signature], bool],
             known: Callable[[], list[str]]) -> Callable:
  """``optax.<name>`` (dotted: ``contrib.muon``) or ``module:attr``, if callable and ``fits``;
  else a ConfigError suggesting the closest of ``known()``."""
  fn = None
  if ':' in name:
    module, _, attr = name.partition(':')
    try:
      fn = getattr(importlib.import_module(module), attr, None)
    except ImportError:
      pass
  else:
    fn = optax
    for part in name.split('.'):
      fn = getattr(fn, part, None)
  try:
    ok = callable(fn) and fits(inspect.signature(fn))
  except (TypeError, ValueError):  # no signature (a class from C, ...)
    ok = False
  if not ok:
    close = difflib.get_close_matches(name, known(), n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ''
    raise ConfigError(f'unknown --config.{key}={name!r}{hint}: use {what}')
  return fn


def _call(fn: Callable, name: str, key: str, given: dict, kwargs: dict):
  """``fn(**given, **kwargs)`` after checking ``kwargs`` (``--config.<key>``) against its signature."""
  params = inspect.signature(fn).parameters
  named = [p for p, v in params.items() if v.kind in (v.POSITIONAL_OR_KEYWORD, v.KEYWORD_ONLY)]
  for k in kwargs:
    if k in given:
      raise ConfigError(f'--config.{key}.{k}: resflax sets {k} itself (from --config.learning_rate '
                        f'and the run length): drop it from --config.{key}')
    if k not in named and not any(v.kind == v.VAR_KEYWORD for v in params.values()):
      raise ConfigError(f"--config.{key}.{k}: {name} takes no argument {k!r} (it takes "
                        f"{', '.join(p for p in named if p not in given)}): drop or rename it "
                        f"(--config.{key}='{{}}' clears them all)")
  missing = [p for p, v in params.items() if v.default is v.empty and p not in given
             and p not in kwargs and v.kind not in (v.VAR_POSITIONAL, v.VAR_KEYWORD)]
  if missing:
    raise ConfigError(f"{name} needs {', '.join(missing)}: set --config.{key}.{missing[0]}=...")
  return fn(**given, **kwargs)


def _optax_names(fits: Callable[[inspect.Signature], bool]) -> list[str]:
  names = []
  for n in dir(optax):
    fn = getattr(optax, n)
    try:
      if not n.startswith('_') and callable(fn) and fits(inspect.signature(fn)):
        names.append(n)
    except (TypeError, ValueError):
      pass
  return names


def _takes_learning_rate(sig: inspect.Signature) -> bool:
  return 'learning_rate' in sig.parameters


def _is_schedule(sig: inspect.Signature) -> bool:
  return any(p in sig.parameters for p in RATE_ARGS) and 'learning_rate' not in sig.parameters


def learning_rate_schedule(config: ml_collections.ConfigDict, steps_per_epoch: int) -> optax.Schedule:
  """``constant``, ``cosine`` (to zero over the run) or ``piecewise`` (x lr_decay at epochs), or
  any optax schedule (``exponential_decay``, ``warmup_cosine_decay_schedule``, ...; the
  ``_schedule`` suffix may be left out) with ``config.lr_schedule_kwargs``.

  An optax schedule gets ``learning_rate`` as its rate (``peak_value``, ``init_value`` or
  ``value``) and, unless given, the run's steps after warmup as its length (``decay_steps`` or
  ``transition_steps``); its other arguments, in steps, come from ``lr_schedule_kwargs``.
  ``warmup_epochs`` > 0 puts a linear warmup from 0 before any of them.
  """
  lr, total = config.learning_rate, max(1, config.num_epochs * steps_per_epoch)
  if config.num_train_steps > 0:
    total = config.num_train_steps
  warmup = int(config.warmup_epochs * steps_per_epoch)
  name = config.lr_schedule
  kwargs = dict(config.get('lr_schedule_kwargs') or {})
  if name in SCHEDULES and kwargs:
    raise ConfigError(f"--config.lr_schedule_kwargs={kwargs} are for optax schedules; "
                      f"'{name}' takes none: drop them (--config.lr_schedule_kwargs='{{}}')")
  if name == 'constant':
    schedule = optax.constant_schedule(lr)
  elif name == 'cosine':
    schedule = optax.cosine_decay_schedule(lr, max(1, total - warmup))
  elif name == 'piecewise':
    schedule = optax.piecewise_constant_schedule(
        lr, {int(e * steps_per_epoch) - warmup: config.lr_decay for e in config.lr_boundaries_epochs})
  else:
    what = ("'constant', 'cosine', 'piecewise' or an optax schedule name (exponential_decay, "
            'warmup_cosine_decay, ...) with --config.lr_schedule_kwargs')
    known = lambda: [*SCHEDULES, *_optax_names(_is_schedule)]
    fn = None
    for candidate in (name, f'{name}_schedule'):  # exponential_decay, warmup_cosine_decay
      try:
        fn = _resolve(candidate, 'lr_schedule', what, _is_schedule, known)
        break
      except ConfigError:
        pass
    if fn is None:
      _resolve(name, 'lr_schedule', what, _is_schedule, known)  # raises, naming `name`
    params = inspect.signature(fn).parameters
    given = {next(p for p in RATE_ARGS if p in params): lr}
    length = next((p for p in LENGTH_ARGS if p in params), None)
    if length and length not in kwargs:
      given[length] = max(1, total - warmup)
    schedule = _call(fn, f'optax.{name}', 'lr_schedule_kwargs', given, kwargs)
  if warmup:
    schedule = optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), schedule], [warmup])
  return schedule


def optimizer_factory(name: str) -> Callable[..., optax.GradientTransformation]:
  """The function that ``--config.optimizer=name`` names (``OPTIMIZERS``, optax, or
  ``module:function``); it must take ``learning_rate``."""
  if name in OPTIMIZERS:
    return OPTIMIZERS[name]
  return _resolve(name, 'optimizer',
                  "an optax optimizer (adamw, sgd, lamb, lion, contrib.muon, ...), 'keras_adam' "
                  "(the seeds' Keras Adam) or module:function taking learning_rate=",
                  _takes_learning_rate,
                  lambda: [*OPTIMIZERS, *_optax_names(_takes_learning_rate)])


def make_optimizer(config: ml_collections.ConfigDict,
                   steps_per_epoch: int) -> optax.GradientTransformation:
  """``config.optimizer`` called with ``learning_rate=`` the schedule and
  ``**config.optimizer_kwargs`` (checked against its signature first), after an optional L2 weight
  decay (``config.weight_decay``). A config saved before ``optimizer_kwargs`` existed (``adam`` +
  ``amsgrad``, ``sgd`` + ``momentum`` / ``nesterov``) is read through ``config.upgrade``: the same
  optimizer, the same numbers."""
  saved = config_lib.upgrade(config.to_dict(), fill_defaults=False)
  name, kwargs = saved['optimizer'], dict(saved.get('optimizer_kwargs') or {})
  factory = optimizer_factory(name)
  shown = name if name in OPTIMIZERS or ':' in name else f'optax.{name}'
  schedule = learning_rate_schedule(config, steps_per_epoch)
  opt = _call(factory, shown, 'optimizer_kwargs', {'learning_rate': schedule}, kwargs)
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
