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
import logging
import math
import os
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
from resflax.train import workdir_lock
from resflax.train import writers

# PRNG streams, all derived from jax.random.key(config.seed) with fold_in and these fixed tags.
INIT_TAG, DROPOUT_TAG = 0, 1
_log = logging.getLogger(__name__)


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
  parallel.configure_run()  # the JAX settings of a run, before its first random numbers
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
                            block_metrics=config.get('log_block_metrics', False),
                            input_shape=tuple(data.input_shape))
  evaluate_ = functools.partial(steps.eval_step, loss=config.loss, axis_name=axis_name,
                                input_shape=tuple(data.input_shape))
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
  check_workdir(workdir, config)
  write_config(workdir, config)


def check_workdir(workdir: epath.Path, config: ml_collections.ConfigDict) -> None:
  """Creates ``workdir`` if needed; refuses one that holds a different run, a garbled
  ``config.json`` or a file named ``checkpoints``. Writes nothing in it."""
  writers.check_writable(workdir)
  saved_path = workdir / 'config.json'
  current = json.loads(config_lib.to_json(config))
  if saved_path.exists():
    saved = config_lib.read_json(saved_path, fix='use a new --workdir')
    diff = config_lib.differences(saved, current)
    if diff:
      raise WorkdirError(f"workdir {str(workdir)!r} holds a run with a different config "
                         f"({'; '.join(diff)}): use a new --workdir, or the same config to resume")
  if (workdir / 'metrics.jsonl').exists():
    writers.read_text(workdir / 'metrics.jsonl')  # garbled: refused before anything is written
  checkpoints = workdir / 'checkpoints'
  if checkpoints.exists() and not checkpoints.is_dir():
    raise WorkdirError(f'{checkpoints} is a file, not a directory of checkpoints: move it away or '
                       'use a new --workdir')


def write_config(workdir: epath.Path, config: ml_collections.ConfigDict) -> None:
  if jax.process_index() == 0:
    saved_path = workdir / 'config.json'
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


INTERRUPT_EXIT = 130  # 128 + SIGINT, as a shell reports a process ended by Ctrl-C


class _Preemption:
  """SIGTERM (preemption, TPU maintenance) sets a flag; the loop saves and exits cleanly. The first
  SIGINT (Ctrl-C) does the same (``interrupted``); a second one aborts at once, saving nothing more.

  With several processes, JAX's own preemption notifier (started by ``jax.distributed``) handles
  SIGTERM instead, and orbax's ``reached_preemption(step)`` makes every process stop at one step;
  Ctrl-C there stops each process without a save (the CLI exits 130 with one line).
  """

  def __init__(self, checkpoints: checkpoint_lib.Checkpoints):
    self.requested = False
    self.interrupted = False
    self.checkpoints = checkpoints

  def __call__(self, step: int) -> bool:
    if jax.process_count() > 1:
      return self.checkpoints.manager.reached_preemption(step)
    return self.requested

  def _sigterm(self, *_) -> None:
    self.requested = True

  def _sigint(self, *_) -> None:
    if self.interrupted:  # the second Ctrl-C: out now (a save in flight stays a tmp folder)
      _log.warning('interrupted again: stopped at once, without saving')
      os._exit(INTERRUPT_EXIT)  # pylint: disable=protected-access
    self.requested = self.interrupted = True

  @contextlib.contextmanager
  def installed(self):
    if jax.process_count() > 1 or threading.current_thread() is not threading.main_thread():
      yield self
      return
    previous = (signal.signal(signal.SIGTERM, self._sigterm),
                signal.signal(signal.SIGINT, self._sigint))
    try:
      yield self
    finally:
      signal.signal(signal.SIGTERM, previous[0])
      signal.signal(signal.SIGINT, previous[1])


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | epath.Path) -> dict:
  """Trains ``config`` in ``workdir`` (resuming if it holds a checkpoint); returns the last eval."""
  workdir = epath.Path(workdir)
  config_lib.validate(config)
  parallel.initialize_distributed(config)
  exp = build(config)
  check_workdir(workdir, config)  # refused before the lock file is written; again under the lock
  with workdir_lock.held_by_run(workdir):
    return _train(config, workdir, exp)


def _train(config: ml_collections.ConfigDict, workdir: epath.Path, exp: Experiment) -> dict:
  """``train_and_evaluate`` once the workdir is locked."""
  check_workdir(workdir, config)
  is_main = jax.process_index() == 0
  ckpt = checkpoint_lib.Checkpoints(workdir / 'checkpoints', keep=config.keep_checkpoints)
  try:
    host_state, meta = ckpt.restore_latest(exp.state)
    start = int(jax.device_get(host_state.step))
    if start > exp.total_steps:
      raise WorkdirError(
          f'workdir {str(workdir)!r} holds a run already at step {start}, past the '
          f'{exp.total_steps} steps of this config: ask for at least {start} steps '
          '(--config.num_train_steps or num_epochs), or use a new --workdir')
    write_config(workdir, config)
    write_model_info(workdir, exp)
    writer = writers.MetricsWriter(workdir, enabled=is_main)
    writer.truncate_after(start)
  except BaseException:
    ckpt.close()
    raise
  run = _Run(exp, ckpt, writer, progress=writers.Progress(config.progress, exp.total_steps, start,
                                                          enabled=is_main),
             state=exp.place_state(host_state), step=start,
             last_saved=start if meta is not None else None,
             # Per-step metrics of a log interval cut by a preemption: saved with the checkpoint
             # so that the resumed run writes the same rows as an uninterrupted one.
             carried=list(meta.get('unlogged_metrics', [])) if meta else [])
  del host_state
  spe, total = exp.data.steps_per_epoch, exp.total_steps
  if meta is not None:
    run.note({'resumed_from': str(ckpt.directory / str(start))}, epoch=start // spe)
  last_eval = None
  preemption = _Preemption(ckpt)
  # The handler stays until the last checkpoint is written: a SIGTERM that lands after the last
  # step (or while that save finishes) lets the run end with exit 0 and everything saved.
  with preemption.installed():
    try:
      for epoch in range(start // spe, math.ceil(total / spe)):
        epoch_stop = min((epoch + 1) * spe, total)
        for inputs in exp.feed.inputs(epoch, run.step - epoch * spe):
          if run.step >= total:
            break
          run.state, metrics = exp.feed.run(run.state, inputs, exp.dropout_rng)
          run.pending.append(metrics)
          run.step += 1
          step = run.step
          run.progress.step()
          ckpt.check()  # a save that failed in the background stops the run now
          preempted = preemption(step)
          epoch_end = step == epoch_stop
          saving_every = (config.checkpoint_every_steps > 0
                          and step % config.checkpoint_every_steps == 0)
          # Rows fall at fixed steps whatever the clock says: the logs of a run are reproducible.
          if step % config.log_every_steps == 0 or epoch_end or saving_every:
            run.log_train()
          if epoch_end:
            last_eval = run.evaluate_and_log()
            run.interval_start = time.perf_counter()  # eval is not training throughput
          save_due = (preempted or saving_every or step == total
                      or (epoch_end and run.interval_passed()))
          if save_due:  # a preemption between log steps carries the unlogged metrics along
            run.save(unlogged=run.fetch_pending() if preempted else ())
            run.interval_start = time.perf_counter()  # eval and saving are not training throughput
          if preempted:
            ckpt.wait()
            if preemption.interrupted:  # Ctrl-C: the CLI says so in one line, exit 130
              return {'interrupted_at_step': step}
            run.note({'preempted': f'SIGTERM: saved step {step}; rerun the command to resume'},
                     epoch=epoch)
            return {'preempted_at_step': step}
      if last_eval is None:  # nothing left to train: report the restored state
        last_eval = run_eval(exp, run.state)
      ckpt.wait()
    finally:
      # After an error (a failed save among them) the error that stopped the run is the one told.
      with contextlib.suppress(Exception):
        ckpt.wait()
      with contextlib.suppress(Exception):
        ckpt.close()
      writer.close()
      run.progress.close()
  return {'step': run.step, **last_eval}


@dataclasses.dataclass
class _Run:
  """What the training loop carries from step to step, and its outputs: the running train state,
  the step it is at, metrics not yet written, when it last saved."""

  exp: Experiment
  ckpt: checkpoint_lib.Checkpoints
  writer: writers.MetricsWriter
  progress: writers.Progress
  state: state_lib.TrainState
  step: int
  last_saved: int | None  # the step of the last checkpoint (restored or written)
  carried: list[dict]  # fetched per-step metrics of the current log interval (from a checkpoint)
  pending: list = dataclasses.field(default_factory=list)  # per-step metrics still on device
  last_save_time: float = dataclasses.field(default_factory=time.monotonic)  # restored = saved
  interval_start: float = dataclasses.field(default_factory=time.perf_counter)

  def note(self, fields: dict, epoch: int) -> None:
    if jax.process_index() == 0:
      self.progress.log({'split': 'note', 'step': self.step, 'epoch': epoch, **fields})

  def fetch_pending(self) -> list[dict]:
    """The metrics of the steps since the last row; stops on a non-finite loss."""
    spe = self.exp.data.steps_per_epoch
    fetched = self.carried + [{k: float(v) for k, v in self.exp.host_metrics(m).items()}
                              for m in jax.device_get(self.pending)]
    self.pending, self.carried = [], []
    for i, m in enumerate(fetched):
      if not np.isfinite(m['loss']):
        bad = self.step - len(fetched) + i + 1
        self.ckpt.wait()
        kept = (f'the last checkpoint, step {self.last_saved}, is kept in {self.ckpt.directory} '
                '(its digest, recorded at save, is checked on resume)'
                if self.last_saved is not None else 'no checkpoint was written')
        raise NonFiniteLossError(
            f"loss became {m['loss']} at step {bad} (epoch {(bad - 1) // spe}): training stopped; "
            f'{kept}. Lower --config.learning_rate or check the data')
    return fetched

  def log_train(self) -> None:
    """Writes the mean of the metrics of the steps since the last row."""
    fetched = self.fetch_pending()
    if not fetched:
      return
    step, exp = self.step, self.exp
    elapsed = time.perf_counter() - self.interval_start
    row = {'step': step, 'split': 'train', 'epoch': (step - 1) // exp.data.steps_per_epoch}
    row.update({k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]})
    row['learning_rate'] = float(exp.schedule(step - 1))
    row['images_per_sec'] = len(fetched) * exp.config.batch_size / max(elapsed, 1e-9)
    row['wall_time'] = time.time()
    self.writer.write(row)
    self.progress.log(row)
    self.interval_start = time.perf_counter()

  def evaluate_and_log(self) -> dict:
    # Regression: next to mae / mse, those of always predicting the mean train angle.
    metrics = {**run_eval(self.exp, self.state), **self.exp.data.baseline}
    epoch = (self.step - 1) // self.exp.data.steps_per_epoch
    row = {'step': self.step, 'split': 'eval', 'epoch': epoch, **metrics,
           'wall_time': time.time()}
    self.writer.write(row)
    self.progress.log(row)
    return metrics

  def save(self, unlogged: list[dict] = ()) -> None:
    spe = self.exp.data.steps_per_epoch
    meta = {'step': self.step, 'epoch': self.step // spe, 'steps_per_epoch': spe,
            'unlogged_metrics': list(unlogged)}
    self.ckpt.save(self.step, self.exp.host_state(self.state), meta)
    self.writer.flush()  # the rows up to a saved step are on storage with it (object stores)
    self.last_saved, self.last_save_time = self.step, time.monotonic()

  def interval_passed(self) -> bool:
    """Is an epoch-end save due (``checkpoint_min_interval_s`` since the last one)? Process 0's
    clock decides for every process."""
    passed = (time.monotonic() - self.last_save_time
              >= self.exp.config.checkpoint_min_interval_s)
    if jax.process_count() > 1:
      passed = bool(multihost_utils.broadcast_one_to_all(np.int32(passed)))
    return passed


def restore(workdir: str | epath.Path) -> tuple[Experiment, state_lib.TrainState, dict]:
  """(experiment, host train state, checkpoint meta) of the latest checkpoint of ``workdir``,
  rebuilt from the config saved there."""
  workdir = epath.Path(workdir)
  config_path = workdir / 'config.json'
  if not config_path.exists():
    raise WorkdirError(f'{config_path} not found: {str(workdir)!r} is not a resflax run directory '
                       '(train one with `resflax train --config ... --workdir`)')
  config = config_lib.from_saved(
      config_lib.read_json(config_path, fix='train again in a new --workdir'))
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
