"""How train batches reach the jitted step: from tf.data on the host, or from the split held on the
device.

``--config.data_on_device``: 'auto' (the default) keeps a train split of up to
``on_device.AUTO_MAX_BYTES`` on the device under jit, 'on' insists, 'off' streams every batch from
tf.data. It only moves work: the batches, and so the metrics and checkpoints, are those of the
tf.data path, bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
import dataclasses
import functools

import jax
from jax import lax

from resflax import parallel
from resflax.data import on_device
from resflax.errors import ConfigError

MODES = ('auto', 'on', 'off')


def keeps_data_on_device(config, data, pmap: bool) -> bool:
  """Whether this run holds its train split on the device (``--config.data_on_device``)."""
  mode = config.get('data_on_device', 'off')
  if mode not in MODES:
    raise ConfigError(f"--config.data_on_device={mode!r}: use 'auto', 'on' or 'off'")
  why_not = on_device.unsupported(data.batch_recipe)
  if pmap:
    why_not = '--config.parallel=pmap'
  elif data.train_bytes > on_device.AUTO_MAX_BYTES and mode == 'auto':
    why_not = f'a {data.train_bytes / 2**20:.0f} MiB train split'
  if mode == 'on' and why_not:
    raise ConfigError(f'--config.data_on_device=on does not support {why_not}: use '
                      "--config.data_on_device=off (or 'auto', which picks for you)")
  return mode != 'off' and why_not is None


@dataclasses.dataclass
class Feed:
  """The train and eval inputs, placed for their steps, and the steps that consume them:
  ``run(state, inputs, rng) -> (state, metrics)``, ``eval_run(state, inputs) -> sums``."""

  data: object  # resflax.data.Data
  on_device: bool
  run: Callable
  eval_run: Callable
  place: Callable  # this process's numpy batch (or the global plan of a step) -> a step's input
  source: dict | None = None  # the train split on the device (on_device)

  def inputs(self, epoch: int, start_step: int) -> Iterator:
    """The inputs of steps ``start_step, ...`` of ``epoch``."""
    if self.on_device:
      return _rows(self.data.train_plan(epoch, start_step), self.place)
    return map(self.place, self.data.train_batches(epoch, start_step=start_step))

  def eval_inputs(self) -> Iterator:
    """The inputs of the eval batches (every example once)."""
    if self.on_device:
      return _rows(self.data.eval_plan(), self.place)
    return map(self.place, self.data.eval_batches())


def _rows(plan: dict, place: Callable) -> Iterator:
  """One placed ``{key: row}`` per row of the ``[steps, ...]`` arrays of ``plan``."""
  return (place({k: v[i] for k, v in plan.items()}) for i in range(len(plan['index'])))


def _step_on_device(state, plan, rng, source, *, train: Callable, recipe, batch_sharding):
  """``train`` on the batch that ``plan`` picks from the split ``source`` on the device."""
  batch = lax.with_sharding_constraint(on_device.make_batch(recipe, source, plan), batch_sharding)
  return train(state, batch, rng)


def _eval_on_device(state, plan, source, *, evaluate: Callable, recipe, batch_sharding):
  batch = {**on_device.make_batch(recipe, source, plan), 'mask': plan['mask']}
  return evaluate(state, lax.with_sharding_constraint(batch, batch_sharding))


def _replicated_array(sharding, x) -> jax.Array:
  """``x`` (the same on every process) as a global array with ``sharding``."""
  return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def build_feed(config, data, mesh, train: Callable, evaluate: Callable, pmap: bool) -> Feed:
  """The feed of ``config`` (``data_on_device``) for the steps ``train`` and ``evaluate``."""
  device_data = keeps_data_on_device(config, data, pmap)
  if pmap:  # the batch split over the local devices
    return Feed(data, False,
                jax.pmap(train, axis_name=parallel.DATA_AXIS, donate_argnums=0,
                         in_axes=(0, 0, None)),
                jax.pmap(evaluate, axis_name=parallel.DATA_AXIS), parallel.split_for_devices)
  replicated = parallel.replicated(mesh)
  if not device_data:
    return Feed(data, False,
                jax.jit(train, donate_argnums=0, out_shardings=(replicated, replicated)),
                jax.jit(evaluate, out_shardings=replicated),
                functools.partial(parallel.global_batch, mesh))
  sharded = parallel.batch_sharded(mesh)
  step = jax.jit(functools.partial(_step_on_device, train=train, recipe=data.batch_recipe,
                                   batch_sharding=sharded),
                 donate_argnums=0, out_shardings=(replicated, replicated))
  eval_step = jax.jit(functools.partial(_eval_on_device, evaluate=evaluate,
                                        recipe=data.eval_recipe, batch_sharding=sharded),
                      out_shardings=replicated)
  place = lambda arrays: jax.tree.map(functools.partial(_replicated_array, replicated), arrays)
  source = place(on_device.source(data.batch_recipe, *data.train_arrays()))
  eval_source = place(on_device.source(data.eval_recipe, *data.eval_arrays()))
  return Feed(data, True, lambda state, plan, rng: step(state, plan, rng, source),
              lambda state, plan: eval_step(state, plan, eval_source), place, source)
