"""The public API: ``resflax.load(workdir)``, a trained run to predict with, and
``resflax.train(config, workdir)``, the programmatic ``resflax train``.

  import resflax
  run = resflax.load('runs/quick')        # reads config.json, model.json and the latest checkpoint
  logits = run.predict(images)            # uint8 [N, 28, 28, 1] (or float32 in [0, 1])
  run.model, run.variables, run.config    # the Linen module, {'params', 'batch_stats'}, the config

Loading neither builds nor reads the dataset: the model is rebuilt from ``config.json`` (a registered
preset or the user's import path, with ``model_kwargs``; ``config.imports`` imported first) and the
input shape and preprocessing come from ``model.json``, which ``resflax train`` writes.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import pathlib

from etils import epath
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from resflax import config as config_lib
from resflax import models
from resflax.errors import CheckpointError, ShapeMismatchError, WorkdirError


def read_json(path: epath.Path, what: str) -> dict:
  """A JSON object file of a run directory; a missing or garbled one is one clear error."""
  if not path.exists():
    raise WorkdirError(f'{path} not found: {str(path.parent)!r} is not a resflax run directory '
                       f'({what}; train one with `resflax train --config ... --workdir`)')
  return config_lib.read_json(path, fix='the run directory is damaged; retrain in a new --workdir')


def read_config(workdir: str | epath.Path) -> ml_collections.ConfigDict:
  """The config saved in ``workdir/config.json`` (keys added since at their defaults), with its
  ``imports`` imported so that a user's registered model names resolve."""
  config = config_lib.from_saved(read_json(epath.Path(workdir) / 'config.json', 'no config.json'))
  config_lib.import_modules(config)
  return config


def model_info(workdir: str | epath.Path, config: ml_collections.ConfigDict) -> dict:
  """``model.json`` of the run; for a run older than it, what the registered preset says."""
  path = epath.Path(workdir) / 'model.json'
  if path.exists():
    info = read_json(path, 'no model.json')
  else:
    spec = models.get_spec(config.model)
    if spec.input_shape is None:
      raise WorkdirError(f'{path} not found and {config.model!r} takes the dataset\'s shape: rerun '
                         'the same `resflax train` command on this workdir once to write it')
    task = spec.task
    info = {'input_shape': list(spec.input_shape),
            'num_outputs': 10 if task == 'classification' else 1}
  info.setdefault('image_shape', info['input_shape'])
  info.setdefault('task', 'regression' if info['num_outputs'] == 1 and
                  config.get('loss') == 'mse' else 'classification')
  if config.get('normalize', False) and info.get('normalize_mean') is None:
    raise WorkdirError(f'{path} has no normalisation statistics for this --config.normalize=True '
                       'run: rerun the same `resflax train` command on this workdir once')
  return info


def restore_variables(workdir: str | epath.Path, config: ml_collections.ConfigDict,
                      model: nn.Module, input_shape: tuple[int, ...]) -> tuple[dict, int]:
  """(``{'params', 'batch_stats'}`` as numpy, step) of the latest readable checkpoint."""
  from resflax.train import checkpoint as checkpoint_lib  # pylint: disable=g-import-not-at-top
  from resflax.train import state as state_lib  # pylint: disable=g-import-not-at-top
  tx = state_lib.make_optimizer(config, 1)  # the optimizer state's structure, for the restore
  template = jax.jit(lambda rng: state_lib.create_state(model, tx, tuple(input_shape), rng))(
      jax.random.key(0))
  ckpt = checkpoint_lib.Checkpoints(epath.Path(workdir) / 'checkpoints', create=False)
  try:
    state, meta = ckpt.restore_latest(template, set_aside=False)
  finally:
    ckpt.close()
  if meta is None:
    raise CheckpointError(f'no readable checkpoint in {ckpt.directory}: train first, or point at '
                          'a run directory that has one')
  variables = {'params': state.params, 'batch_stats': state.batch_stats or {}}
  return jax.device_get(variables), int(jax.device_get(state.step))


@dataclasses.dataclass
class Run:
  """A trained run: its config, model, variables, and ``predict``."""

  workdir: epath.Path
  config: ml_collections.ConfigDict
  model: nn.Module
  variables: dict  # {'params': ..., 'batch_stats': ...} (numpy)
  step: int  # the training step of the restored checkpoint
  input_shape: tuple[int, ...]  # one example as the model takes it, e.g. (784,) for an MLP
  image_shape: tuple[int, ...]  # one example as the dataset stores it, e.g. (28, 28, 1)
  task: str  # 'classification' (predict gives logits) | 'regression' (predictions [N, 1])
  normalization: tuple[np.ndarray, np.ndarray] | None  # the training split's (mean, std)

  def preprocess(self, images: jax.Array) -> jax.Array:
    """``[N, *image_shape]`` uint8 (or float in [0, 1], i.e. ``x / 255``) -> the model's input, as
    training prepares eval images: ``x / 255``, the ROI crop, per-channel normalisation, reshape."""
    from resflax.data import pipeline  # pylint: disable=g-import-not-at-top
    x = (images.astype(jnp.float32) / 255. if images.dtype == jnp.uint8
         else images.astype(jnp.float32))
    x = x.reshape(x.shape[0], *self.image_shape)
    mask = pipeline.roi_mask(self.image_shape, self.config.get('roi_crop', (0, 0, 0, 0)))
    if mask is not None:
      x = x * mask
    if self.normalization is not None:
      x = (x - self.normalization[0]) / self.normalization[1]
    return x.reshape(x.shape[0], *self.input_shape)

  @functools.cached_property
  def _apply(self):
    """``(variables, images) -> outputs``, preprocessing included, jit-compiled."""
    return jax.jit(lambda variables, images: self.model.apply(
        variables, self.preprocess(images), train=False))

  def predict(self, images, *, batch_size: int = 256) -> np.ndarray:
    """The model's outputs (logits, or predictions ``[N, 1]``) for ``images`` of the dataset's
    shape (``[N, *image_shape]`` or ``[N, *input_shape]``), uint8 or float in [0, 1].

    Jit-compiled once per input dtype: batches of ``batch_size`` (the last one zero-padded).
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 and not np.issubdtype(images.dtype, np.floating):
      raise ShapeMismatchError(f'predict takes uint8 images or floats in [0, 1], not '
                               f'{images.dtype}: convert them first')
    per_example = math.prod(self.image_shape)
    if images.ndim < 2 or math.prod(images.shape[1:]) != per_example:
      raise ShapeMismatchError(
          f'predict takes a batch [N, {", ".join(map(str, self.image_shape))}] (this run\'s '
          f'examples), got {images.shape}: add the batch axis or resize the images')
    n = images.shape[0]
    outputs = []
    for start in range(0, n, batch_size):
      chunk = images[start:start + batch_size]
      pad = batch_size - chunk.shape[0] if n > batch_size else 0
      if pad:
        chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
      out = np.asarray(self._apply(self.variables, jnp.asarray(chunk)))
      outputs.append(out[:out.shape[0] - pad])
    if not outputs:
      return np.zeros((0, self.model.num_outputs), np.float32)
    return np.concatenate(outputs)


def load(workdir: str | pathlib.Path) -> Run:
  """The latest checkpoint of ``workdir`` as a ``Run``; reads no dataset."""
  workdir = epath.Path(workdir)
  config = read_config(workdir)
  info = model_info(workdir, config)
  input_shape = tuple(info['input_shape'])
  model = models.from_config(config, num_outputs=int(info['num_outputs']))
  variables, step = restore_variables(workdir, config, model, input_shape)
  normalization = None
  if info.get('normalize_mean') is not None:
    normalization = (np.asarray(info['normalize_mean'], np.float32),
                     np.asarray(info['normalize_std'], np.float32))
  return Run(workdir, config, model, variables, step, input_shape, tuple(info['image_shape']),
             info['task'], normalization)


def train(config: ml_collections.ConfigDict | str | pathlib.Path, workdir: str | pathlib.Path,
          **overrides) -> dict:
  """``resflax train`` from Python: ``config`` is a ConfigDict or an experiment file; keyword
  ``overrides`` are ``--config.key=value`` pairs (``train('exp.py', 'runs/a', seed='1')``) applied
  to a file. Trains (or resumes) in ``workdir`` and returns the last eval metrics."""
  from resflax.train import loop  # pylint: disable=g-import-not-at-top
  if not isinstance(config, ml_collections.ConfigDict):
    config = config_lib.from_args(str(config), [(k, str(v)) for k, v in overrides.items()])
  elif overrides:
    config = ml_collections.ConfigDict(config.to_dict())
    for key, value in overrides.items():
      config_lib.override(config, key, str(value))
  return loop.train_and_evaluate(config, workdir)
