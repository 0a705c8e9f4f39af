"""What a model costs: parameters, forward FLOPs (XLA's cost analysis), train-step time and memory.

Used by ``resflax report`` and the studies (``scripts/*_study.py``). Step times are medians of
repeated calls of the compiled step on one fixed batch (no input pipeline), so two models timed in
the same process, one after the other, compare fairly on a shared machine.
"""

from __future__ import annotations

import functools
import re
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from resflax import models


def cpu_name() -> str:
  """The CPU's model name (``/proc/cpuinfo``), or the platform's processor string."""
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  import platform
  return platform.processor() or 'unknown'


def _first(cost):
  return cost[0] if isinstance(cost, (list, tuple)) else cost


def forward_cost(model_name: str, num_outputs: int, input_shape=None, model_kwargs=None) -> dict:
  """``params`` (trainable), ``shortcut_params`` (under any ``.../shortcut``), ``flops`` (forward,
  one example) of a model (a preset or an import path, with ``model_kwargs``); ``input_shape``
  defaults to the preset's."""
  spec = models.get_spec(model_name)
  module = models.build(model_name, num_outputs=num_outputs, **(model_kwargs or {}))
  x = jnp.zeros((1, *(input_shape or spec.input_shape)), jnp.float32)
  variables = jax.eval_shape(lambda: module.init(jax.random.key(0), x, train=False))
  leaves = jax.tree_util.tree_flatten_with_path(variables['params'])[0]
  names = ['/'.join(str(getattr(k, 'key', k)) for k in path) for path, _ in leaves]
  sizes = [int(leaf.size) for _, leaf in leaves]
  compiled = jax.jit(lambda v, x: module.apply(v, x, train=False)).lower(variables, x).compile()
  cost = _first(compiled.cost_analysis()) or {}
  return {'params': sum(sizes),
          'shortcut_params': sum(s for n, s in zip(names, sizes) if re.search(r'(^|/)shortcut/', n)),
          'flops': float(cost.get('flops', float('nan')))}


def train_step_cost(config, input_shape, *, batch_size: int | None = None, repeats: int = 20,
                    warmup: int = 3) -> dict:
  """``step_ms`` (median of ``repeats``), ``compile_s``, ``peak_mb`` (XLA's buffer assignment of the
  compiled step: arguments + outputs + temporaries - aliased) of ``config``'s train step."""
  from resflax.train import state as state_lib
  from resflax.train import steps
  spec = models.get_spec(config.model)
  classification = (spec.task or steps.task_of(config.loss)) == 'classification'
  model = models.from_config(config, num_outputs=10 if classification else 1)
  tx = state_lib.make_optimizer(config, steps_per_epoch=100)
  state = jax.jit(functools.partial(state_lib.create_state, model, tx, tuple(input_shape)))(
      jax.random.key(0))
  b = batch_size or config.batch_size
  rng = np.random.default_rng(0)
  batch = {'image': jnp.asarray(rng.random((b, *input_shape), np.float32)),
           'label': (jnp.asarray(rng.integers(0, 10, b), jnp.int32) if classification
                     else jnp.asarray(rng.uniform(-1, 1, b), jnp.float32))}
  step = jax.jit(functools.partial(steps.train_step, loss=config.loss), donate_argnums=0)
  start = time.perf_counter()
  compiled = step.lower(state, batch, jax.random.key(1)).compile()
  compile_s = time.perf_counter() - start
  memory = compiled.memory_analysis()
  peak = (memory.argument_size_in_bytes + memory.output_size_in_bytes +
          memory.temp_size_in_bytes - memory.alias_size_in_bytes) if memory is not None else 0
  times = []
  for i in range(warmup + repeats):
    start = time.perf_counter()
    state, metrics = compiled(state, batch, jax.random.key(1))
    jax.block_until_ready((state, metrics))
    if i >= warmup:
      times.append(time.perf_counter() - start)
  return {'step_ms': 1e3 * statistics.median(times), 'compile_s': compile_s,
          'peak_mb': peak / 2**20 if peak else float('nan')}
