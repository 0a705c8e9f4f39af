"""The training loop: ``train_and_evaluate(config, workdir)`` and ``evaluate(workdir)``.

config -> data.build -> models.build -> create_state (replicated on the mesh) -> restore the latest
checkpoint -> for each batch: global array -> jitted train_step -> metrics every ``log_every_steps``
-> eval at each epoch end -> checkpoints. Re-running the same command on the same workdir resumes
from the latest checkpoint, on the same batches in the same order as an uninterrupted run.
"""

from __future__ import annotations

from collections.abc import Callable
import contextlib
import dataclasses
import functools
import json
import math
import signal
import threading
import time

from etils import epath
import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np

from resflax import backend
from resflax import config as config_lib
from resflax import data as data_lib
from resflax import models
from resflax import parallel
from resflax.errors import CheckpointError, ConfigError, NonFiniteLossError, WorkdirError
from resflax.ops import onednn
from resflax.train import checkpoint as checkpoint_lib
from resflax.train import feed as feed_lib
from resflax.train import state as state_lib
from resflax.train import steps
from resflax.train import writers

# PRNG streams, all derived from jax.random.key(config.seed) with fold_in and these fixed tags.
INIT_TAG, DROPOUT_TAG = 0, 1


@dataclasses.dataclass
class Experiment:
  """Everything built from a config that the loop and ``evaluate`` share.

  ``state`` is the host view of the initial state (what checkpoints hold); ``place_state`` turns it
  into the running state (replicated on the mesh, or stacked per device for pmap) and
  ``host_state`` back. ``feed`` brings the train and eval batches to their steps (``feed.py``);
  ``host_metrics`` strips pmap's device axis from fetched metrics.
  """

  config: ml_collections.ConfigDict
  mesh: jax.sharding.Mesh
  data: data_lib.Data
  state: state_lib.TrainState
  feed: feed_lib.Feed
  schedule: Callable
  total_steps: int
  place_state: Callable
  host_state: Callable
  host_metrics: Callable
  dropout_rng: jax.Array  # the root of the per-step dropout / stochastic-depth keys


def _identity(x):
  return x


def _with_apply_fn(create, apply_fn):
  return lambda rng: create(rng).replace(apply_fn=apply_fn)


def build(config: ml_collections.ConfigDict) -> Experiment:
  """Checks the config against the model and data, then builds them. Writes nothing."""
  if config.loss not in steps.LOSSES:
    raise ConfigError(f'unknown --config.loss={config.loss!r}: use one of {", ".join(steps.LOSSES)}')
  if config.parallel not in ('jit', 'pmap'):
    raise ConfigError(f"unknown --config.parallel={config.parallel!r}: use 'jit' or 'pmap'")
  config_lib.import_modules(config)
  spec = models.get_spec(config.model)
  task = spec.task or steps.task_of(config.loss)  # a user model trains for what its loss says
  if steps.task_of(config.loss) != task:
    fix = "mse" if task == 'regression' else "softmax_cross_entropy"
    raise ConfigError(f'--config.loss={config.loss} does not fit {config.model}, a {task} '
                      f'model: use --config.loss={fix}')
  pmap = config.parallel == 'pmap'
  axis_name = parallel.DATA_AXIS if pmap else None
  # Refuse a model that cannot be built before the dataset is read or built.
  models.from_config(config, num_outputs=1, axis_name=axis_name)
  mesh = parallel.make_mesh()
  parallel.check_batch_size(config.batch_size, mesh)
  parallel.check_batch_size(config.eval_batch_size, mesh, 'eval_batch_size')
  data = data_lib.build(config, None if spec.any_image_size else spec.input_shape,
                        process_index=jax.process_index(),
                        process_count=jax.process_count())
  if data.info.task != task:
    raise ConfigError(f'{config.model} is a {task} model but {config.dataset} is a '
                      f'{data.info.task} dataset: pick a model made for {config.dataset}')
  if data.steps_per_epoch < 1:
    raise ConfigError(f'--config.batch_size={config.batch_size} is larger than the '
                      f'{data.info.num_train} training examples of {config.dataset}')
  model = models.from_config(config, num_outputs=data.info.num_classes or 1, axis_name=axis_name)
  total_steps = (config.num_train_steps if config.num_train_steps > 0
                 else config.num_epochs * data.steps_per_epoch)
  tx = state_lib.make_optimizer(config, data.steps_per_epoch)
  init_rng = jax.random.fold_in(jax.random.key(config.seed), INIT_TAG)
  create = functools.partial(state_lib.create_state, model, tx, data.input_shape)
  conv_impl = onednn.resolve(config.get('conv_impl', 'auto'))
  if conv_impl != 'xla':  # the steps call state.apply_fn: its nn.Conv layers then run on oneDNN
    create = _with_apply_fn(create, onednn.route(model.apply, conv_impl))
  train = functools.partial(steps.train_step, loss=config.loss, axis_name=axis_name,
                            block_metrics=config.get('log_block_metrics', False))
  evaluate_ = functools.partial(steps.eval_step, loss=config.loss, axis_name=axis_name)
  schedule = state_lib.learning_rate_schedule(config, data.steps_per_epoch)
  dropout_rng = lambda: jax.random.fold_in(jax.random.key(config.seed), DROPOUT_TAG)
  feed = feed_lib.build_feed(config, data, mesh, train, evaluate_, pmap)
  if pmap:  # the same step under jax.pmap: pmean'd gradients, synced BatchNorm
    first = lambda tree: jax.tree.map(lambda x: x[0], tree)
    return Experiment(
        config, mesh, data, jax.jit(create)(init_rng), feed, schedule, total_steps,
        place_state=parallel.replicate, host_state=parallel.unreplicate, host_metrics=first,
        dropout_rng=dropout_rng())
  replicated = parallel.replicated(mesh)  # global-view jit: batch sharded, state replicated
  return Experiment(
      config, mesh, data, jax.jit(create, out_shardings=replicated)(init_rng), feed, schedule,
      total_steps,
      place_state=_identity, host_state=_identity, host_metrics=_identity,
      dropout_rng=jax.jit(dropout_rng, out_shardings=replicated)())


def prepare_workdir(workdir: epath.Path, config: ml_collections.ConfigDict) -> None:
  """Creates ``workdir`` and its ``config.json``; refuses a workdir that holds a different run."""
  writers.check_writable(workdir)
  saved_path = workdir / 'config.json'
  current = json.loads(config_lib.to_json(config))
  if saved_path.exists():
    try:
      saved = json.loads(saved_path.read_text())
    except json.JSONDecodeError as e:
      raise WorkdirError(f'{saved_path} is not valid JSON ({e}): use a new --workdir') from None
    diff = config_lib.differences(saved, current)
    if diff:
      raise WorkdirError(f"workdir {str(workdir)!r} holds a run with a different config "
                         f"({'; '.join(diff)}): use a new --workdir, or the same config to resume")
  if jax.process_index() == 0:
    saved_path.write_text(config_lib.to_json(config) + '\n')


def write_model_info(workdir: epath.Path, exp: Experiment) -> None:
  """``model.json``: what ``resflax report`` needs to rebuild the model (its input may be sized by
  the dataset, ``ModelSpec.any_image_size``)."""
  if jax.process_index() == 0:
    normalization = exp.data.normalization
    info = {'model': exp.config.model, 'input_shape': list(exp.data.input_shape),
            'num_outputs': exp.data.info.num_classes or 1,
            # What resflax.load(...).predict needs to preprocess images as training did, without
            # reading the dataset: the stored example shape and the training split's statistics.
            'image_shape': list(exp.data.info.image_shape),
            'task': exp.data.info.task,
            'normalize_mean': None if normalization is None else normalization[0].tolist(),
            'normalize_std': None if normalization is None else normalization[1].tolist(),
            # Where this run's convolutions ran: XLA_FLAGS, XLA:CPU's choice, conv_impl.
            'backend': backend.describe(onednn.resolve(exp.config.get('conv_impl', 'auto')))}
    path, tmp = workdir / 'model.json', workdir / 'model.json.tmp'
    tmp.write_text(json.dumps(info) + '\n')
    tmp.replace(path)  # whole or not at all: a reader never sees half a file


def run_eval(exp: Experiment, state: state_lib.TrainState) -> dict[str, float]:
  """Mean metrics over every example of the eval split, each counted once."""
  sums = None
  for inputs in exp.feed.eval_inputs():
    out = exp.feed.eval_run(state, inputs)
    sums = out if sums is None else jax.tree.map(lambda a, b: a + b, sums, out)
  sums = exp.host_metrics(jax.device_get(sums))
  count = float(sums.pop('count'))
  return {k: float(v) / count for k, v in sums.items()}


class _Preemption:
  """SIGTERM (preemption, TPU maintenance) sets a flag; the loop saves and exits cleanly.

  With several processes, JAX's own preemption notifier (started by ``jax.distributed``) handles
  SIGTERM instead, and orbax's ``reached_preemption(step)`` makes every process stop at one step.
  """

  def __init__(self, checkpoints: checkpoint_lib.Checkpoints):
    self.requested = False
    self.checkpoints = checkpoints

  def __call__(self, step: int) -> bool:
    if jax.process_count() > 1:
      return self.checkpoints.manager.reached_preemption(step)
    return self.requested

  @contextlib.contextmanager
  def installed(self):
    if jax.process_count() > 1 or threading.current_thread() is not threading.main_thread():
      yield self
      return
    previous = signal.signal(signal.SIGTERM, lambda *_: setattr(self, 'requested', True))
    try:
      yield self
    finally:
      signal.signal(signal.SIGTERM, previous)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | epath.Path) -> dict:
  """Trains ``config`` in ``workdir`` (resuming if it holds a checkpoint); returns the last eval."""
  workdir = epath.Path(workdir)
  parallel.initialize_distributed(config)
  exp = build(config)
  prepare_workdir(workdir, config)
  write_model_info(workdir, exp)
  is_main = jax.process_index() == 0
  ckpt = checkpoint_lib.Checkpoints(workdir / 'checkpoints', keep=config.keep_checkpoints)
  host_state, meta = ckpt.restore_latest(exp.state)
  start = int(jax.device_get(host_state.step))
  state = exp.place_state(host_state)
  del host_state
  writer = writers.MetricsWriter(workdir, enabled=is_main)
  writer.truncate_after(start)
  spe, total = exp.data.steps_per_epoch, exp.total_steps
  progress = writers.Progress(config.progress, total, start, enabled=is_main)
  if meta is not None and is_main:
    progress.log({'split': 'note', 'step': start, 'epoch': start // spe, 'resumed_from': str(ckpt.directory / str(start))})
  last_eval, last_saved = None, (start if meta is not None else None)
  last_save_time = time.monotonic()  # a restored (or fresh) state counts as just saved
  pending: list[dict] = []  # per-step metrics still on device; fetched every log_every_steps
  # Per-step metrics of a log interval cut by a preemption: saved with the checkpoint so that the
  # resumed run writes the same rows as an uninterrupted one.
  carried: list[dict] = list(meta.get('unlogged_metrics', [])) if meta else []
  interval_start = time.perf_counter()
  images_per_step = config.batch_size

  def fetch_pending() -> list[dict]:
    """The metrics of the steps since the last row; stops on a non-finite loss."""
    nonlocal pending, carried
    fetched = carried + [{k: float(v) for k, v in exp.host_metrics(m).items()}
                         for m in jax.device_get(pending)]
    pending, carried = [], []
    for i, m in enumerate(fetched):
      if not np.isfinite(m['loss']):
        bad = step - len(fetched) + i + 1
        ckpt.wait()
        kept = (f'the last good checkpoint, step {last_saved}, is kept in {ckpt.directory}'
                if last_saved is not None else 'no checkpoint was written')
        raise NonFiniteLossError(
            f"loss became {m['loss']} at step {bad} (epoch {(bad - 1) // spe}): training stopped; "
            f'{kept}. Lower --config.learning_rate or check the data')
    return fetched

  def log_train(step: int) -> None:
    """Writes the mean of the metrics of the steps since the last row."""
    nonlocal interval_start
    fetched = fetch_pending()
    if not fetched:
      return
    elapsed = time.perf_counter() - interval_start
    row = {'step': step, 'split': 'train', 'epoch': (step - 1) // spe}
    row.update({k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]})
    row['learning_rate'] = float(exp.schedule(step - 1))
    row['images_per_sec'] = len(fetched) * images_per_step / max(elapsed, 1e-9)
    row['wall_time'] = time.time()
    writer.write(row)
    progress.log(row)
    interval_start = time.perf_counter()

  def evaluate_and_log(step: int) -> dict:
    # Regression: next to mae / mse, those of always predicting the mean train angle.
    metrics = {**run_eval(exp, state), **exp.data.baseline}
    row = {'step': step, 'split': 'eval', 'epoch': (step - 1) // spe, **metrics,
           'wall_time': time.time()}
    writer.write(row)
    progress.log(row)
    return metrics

  def save(step: int, unlogged: list[dict] = ()) -> None:
    nonlocal last_saved, last_save_time
    meta = {'step': step, 'epoch': step // spe, 'steps_per_epoch': spe,
            'unlogged_metrics': list(unlogged)}
    ckpt.save(step, exp.host_state(state), meta)
    last_saved, last_save_time = step, time.monotonic()

  def interval_passed() -> bool:
    """Is an epoch-end save due (``checkpoint_min_interval_s`` since the last one)? Process 0's
    clock decides for every process."""
    passed = time.monotonic() - last_save_time >= config.checkpoint_min_interval_s
    if jax.process_count() > 1:
      passed = bool(multihost_utils.broadcast_one_to_all(np.int32(passed)))
    return passed

  preemption = _Preemption(ckpt)
  step = start
  # The handler stays until the last checkpoint is written: a SIGTERM that lands after the last
  # step (or while that save finishes) lets the run end with exit 0 and everything saved.
  with preemption.installed():
    try:
      for epoch in range(start // spe, math.ceil(total / spe)):
        epoch_stop = min((epoch + 1) * spe, total)
        for inputs in exp.feed.inputs(epoch, step - epoch * spe):
          if step >= total:
            break
          state, metrics = exp.feed.run(state, inputs, exp.dropout_rng)
          pending.append(metrics)
          step += 1
          progress.step()
          preempted = preemption(step)
          epoch_end = step == epoch_stop
          saving_every = (config.checkpoint_every_steps > 0
                          and step % config.checkpoint_every_steps == 0)
          # Rows fall at fixed steps whatever the clock says: the logs of a run are reproducible.
          if step % config.log_every_steps == 0 or epoch_end or saving_every:
            log_train(step)
          if epoch_end:
            last_eval = evaluate_and_log(step)
            interval_start = time.perf_counter()  # eval is not training throughput
          save_due = (preempted or saving_every or step == total
                      or (epoch_end and interval_passed()))
          if save_due:  # a preemption between log steps carries the unlogged metrics along
            save(step, unlogged=fetch_pending() if preempted else ())
            interval_start = time.perf_counter()  # eval and saving are not training throughput
          if preempted:
            ckpt.wait()
            progress.log({'split': 'note', 'step': step, 'epoch': epoch,
                          'preempted': f'SIGTERM: saved step {step}; rerun the command to resume'})
            return {'preempted_at_step': step}
      if last_eval is None:  # nothing left to train: report the restored state
        last_eval = run_eval(exp, state)
    finally:
      ckpt.wait()
      ckpt.close()
      writer.close()
      progress.close()
  return {'step': step, **last_eval}


def restore(workdir: str | epath.Path) -> tuple[Experiment, state_lib.TrainState, dict]:
  """(experiment, host train state, checkpoint meta) of the latest checkpoint of ``workdir``,
  rebuilt from the config saved there."""
  workdir = epath.Path(workdir)
  config_path = workdir / 'config.json'
  if not config_path.exists():
    raise WorkdirError(f'{config_path} not found: {str(workdir)!r} is not a resflax run directory '
                       '(train one with `resflax train --config ... --workdir`)')
  config = config_lib.from_saved(json.loads(config_path.read_text()))
  parallel.initialize_distributed(config)
  exp = build(config)
  ckpt = checkpoint_lib.Checkpoints(workdir / 'checkpoints', create=False)
  try:
    state, meta = ckpt.restore_latest(exp.state, set_aside=False)
  finally:
    ckpt.close()
  if meta is None:
    raise CheckpointError(f'no readable checkpoint in {ckpt.directory}: train first, or point '
                          '--workdir at a run directory that has one')
  return exp, state, meta


def evaluate(workdir: str | epath.Path) -> dict:
  """Evaluates the latest checkpoint of ``workdir`` with the config saved there."""
  exp, state, meta = restore(workdir)
  return {'step': int(meta['step']), **run_eval(exp, exp.place_state(state))}
