"""What every analysis shares: the subject (a model, its variables, a fixed set of examples and the
loss), loading it from a run directory, chunked reductions over the examples, and the residual
blocks (the modules named ``block<i>``, as ``resflax.lesion`` finds them).

The analyses call the model's ``apply`` directly in eval mode (``train=False``: BatchNorm uses its
running statistics, dropout is off), so every example's loss depends on that example only, and a
sum over the examples can be computed in chunks of ``batch_size`` without changing it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Callable

from etils import epath
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from resflax.errors import ConfigError


@dataclasses.dataclass
class Subject:
  """A model at some weights, and the examples an analysis looks at.

  ``images`` are the model's inputs, preprocessed as training prepares eval batches
  (``[N, *input_shape]`` float32); ``labels`` ``[N]``; ``loss`` a name of
  ``resflax.train.steps.LOSSES``.
  """

  model: nn.Module
  variables: dict  # {'params': ..., 'batch_stats': ...} (or only 'params')
  images: np.ndarray
  labels: np.ndarray
  loss: str = 'softmax_cross_entropy'
  source: dict = dataclasses.field(default_factory=dict)  # where it came from, for the JSON

  def apply(self, variables, x, *, train: bool = False, rng: jax.Array | None = None):
    """The model's outputs for ``x``. ``train``: as in a training step (BatchNorm normalises with
    the batch's statistics, whose updates are dropped; dropout and stochastic depth draw from
    ``rng``)."""
    if not train:
      return self.model.apply(variables, x, train=False)
    rng = jax.random.key(0) if rng is None else rng
    out, _ = self.model.apply(variables, x, train=True, mutable=['batch_stats'],
                              rngs={'dropout': rng, 'stochastic_depth': rng})
    return out

  def per_example_loss(self, outputs, labels):
    from resflax.train import steps  # pylint: disable=g-import-not-at-top
    return steps.per_example_loss(self.loss, outputs, labels)


def load_subject(workdir: str, *, num_examples: int = 1000, init: bool = False) -> Subject:
  """The run in ``workdir`` (its latest checkpoint, through ``resflax.load``; ``init``: the model
  at initialisation, from the run's seed, as training starts) and the first ``num_examples`` of
  its evaluation split, preprocessed as training does."""
  from resflax import api, models, parallel  # pylint: disable=g-import-not-at-top
  from resflax import data as data_lib  # pylint: disable=g-import-not-at-top
  from resflax.train import loop  # pylint: disable=g-import-not-at-top
  if num_examples < 1:
    raise ConfigError(f'--num_examples={num_examples}: use a positive number of examples')
  config = api.read_config(workdir)
  info = api.model_info(workdir, config)
  input_shape = tuple(info['input_shape'])
  if init:
    parallel.configure_run()  # the random bits of the run's own initialisation
    model = models.from_config(config, num_outputs=int(info['num_outputs']))
    rng = jax.random.fold_in(jax.random.key(config.seed), loop.INIT_TAG)
    variables = jax.device_get(jax.jit(lambda r: model.init(
        {'params': r}, jnp.zeros((1, *input_shape), jnp.float32), train=False))(rng))
    step = 0
  else:
    run = api.load(workdir)
    model, variables, step = run.model, run.variables, run.step
  data = data_lib.build(config, input_shape)
  images, labels = [], []
  count = 0
  for batch in data.eval_batches():
    keep = batch['mask'] > 0
    images.append(batch['image'][keep])
    labels.append(batch['label'][keep])
    count += int(keep.sum())
    if count >= num_examples:
      break
  images = np.concatenate(images)[:num_examples].astype(np.float32)
  labels = np.concatenate(labels)[:num_examples]
  source = {'workdir': str(workdir), 'model': config.model, 'step': step, 'init': bool(init),
            'dataset': config.dataset, 'num_examples': int(images.shape[0])}
  return Subject(model, dict(variables), images, labels, config.loss, source)


# ----------------------------------------------------------------------------------------------
# Sums over the examples, in chunks.
# ----------------------------------------------------------------------------------------------
def chunks(subject: Subject, batch_size: int, pad: bool = True):
  """``(x, y, w)`` chunks of ``batch_size`` examples, the last one zero-padded with weight 0 so
  that a jitted function of a chunk compiles once (``pad=False``: the last one shorter, for
  functions in which the examples of a chunk meet, e.g. BatchNorm in train mode)."""
  n = subject.images.shape[0]
  size = min(batch_size, n)
  for start in range(0, n, size):
    x, y = subject.images[start:start + size], subject.labels[start:start + size]
    w = np.ones(x.shape[0], np.float32)
    missing = size - x.shape[0] if pad else 0
    if missing:
      x = np.concatenate([x, np.zeros((missing, *x.shape[1:]), x.dtype)])
      y = np.concatenate([y, np.zeros((missing, *y.shape[1:]), y.dtype)])
      w = np.concatenate([w, np.zeros(missing, np.float32)])
    yield jnp.asarray(x), jnp.asarray(y), jnp.asarray(w)


def chunked_sum(fn: Callable, subject: Subject, batch_size: int, *args, pad: bool = True) -> Any:
  """``sum over chunks of fn(*args, x, y, w)`` (a pytree); ``fn`` should be jitted."""
  total = None
  for x, y, w in chunks(subject, batch_size, pad):
    out = fn(*args, x, y, w)
    total = out if total is None else jax.tree.map(jnp.add, total, out)
  return total


def mean_loss_fn(subject: Subject) -> Callable:
  """``f(params, x, y, w) -> sum_i w_i loss_i / N``: chunks of it sum to the mean loss over all
  ``N`` examples (the other collections, e.g. BatchNorm's running statistics, held fixed)."""
  n = subject.images.shape[0]
  rest = {k: v for k, v in subject.variables.items() if k != 'params'}

  def f(params, x, y, w):
    outputs = subject.apply({'params': params, **rest}, x)
    return jnp.sum(subject.per_example_loss(outputs, y) * w) / n

  return f


# ----------------------------------------------------------------------------------------------
# Blocks.
# ----------------------------------------------------------------------------------------------
def residual_blocks(subject: Subject) -> list[dict]:
  """The model's ``block<i>`` modules in call order, each as ``{'name', 'in_shape', 'out_shape',
  'identity_shortcut'}``: ``identity_shortcut`` when the block calls a child ``body`` and a child
  ``shortcut`` that returns its input unchanged (``merge(body(x), x)``)."""
  from resflax import lesion  # pylint: disable=g-import-not-at-top
  found: dict[str, dict] = {}

  def record(next_fun, args, kwargs, context):
    if context.method_name != '__call__':
      return next_fun(*args, **kwargs)
    path = context.module.path
    if lesion._is_block(context.module):  # pylint: disable=protected-access
      entry = found.setdefault('/'.join(path), {'name': '/'.join(path), 'body': False,
                                                'identity_shortcut': False})
      out = next_fun(*args, **kwargs)
      entry['in_shape'] = list(getattr(args[0], 'shape', ())) if args else None
      entry['out_shape'] = list(out.shape)
      return out
    out = next_fun(*args, **kwargs)
    if len(path) >= 2 and '/'.join(path[:-1]) in found:
      entry = found['/'.join(path[:-1])]
      if path[-1] == 'body':
        entry['body'] = True
      elif path[-1] == 'shortcut':
        entry['identity_shortcut'] = bool(args) and out is args[0]
    return out

  x = jnp.zeros((1, *subject.images.shape[1:]), jnp.float32)
  with nn.intercept_methods(record):
    jax.eval_shape(subject.apply, subject.variables, x)
  for entry in found.values():
    entry['identity_shortcut'] = entry['identity_shortcut'] and entry['body']
  if not found:
    raise ConfigError(f'{type(subject.model).__name__} has no modules named block<i>: name its '
                      'residual blocks block0, block1, ... (as resflax.models do) to analyse them')
  return list(found.values())


def write_json(out: str | epath.Path, kind: str, result: dict) -> epath.Path:
  out = epath.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  path = out / f'{kind}.json'
  path.write_text(json.dumps(result, indent=1, default=_jsonable) + '\n')
  return path


def _jsonable(value):
  if isinstance(value, (np.ndarray, jax.Array)):
    return np.asarray(value).tolist()
  if isinstance(value, (np.floating, np.integer)):
    return value.item()
  raise TypeError(f'{type(value)} is not JSON')


def pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def finite(values) -> list:
  """Floats for JSON: NaN and inf become None."""
  return [float(v) if math.isfinite(float(v)) else None for v in np.ravel(values)]
