"""Orbax checkpoints in ``WORKDIR/checkpoints``: save, verify, and restore the latest good one.

Saves are asynchronous and atomic (orbax writes a temporary directory and renames it when done).
Each save records a SHA-256 digest of the state's arrays (every leaf's path, dtype, shape and
bytes, in the tree's fixed order) and of the metadata in the metadata itself (``meta['digest']``);
a restore recomputes it. orbax's array files carry no checksum of their own: a flipped byte in
``state/ocdbt.process_0/d/*`` restores without an error, as other numbers. A latest checkpoint
that cannot be read or fails its digest is never deleted: it is renamed ``<step>.corrupt`` (kept
for inspection), a warning names it, and the previous checkpoint is restored instead.
A save that fails (a full disk) raises ``CheckpointSaveError``: the run stops, earlier checkpoints
stay as they were.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys

from etils import epath
import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp

from resflax.errors import CheckpointError, CheckpointSaveError
from resflax.train.state import TrainState

DIGEST_KEY = 'digest'
_log = logging.getLogger(__name__)


class _NoOrbaxErrors(logging.Filter):
  """Drops orbax's own error logs (a traceback per failed thread: ~2,000 lines for one full
  disk): resflax reports a failed save itself, in one line (``CheckpointSaveError``)."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not (record.levelno >= logging.ERROR
                and f'{os.sep}orbax{os.sep}' in (record.pathname or ''))


logging.getLogger('absl').addFilter(_NoOrbaxErrors())


def _quiet_after_a_failed_save() -> None:
  """After a failed save, tensorstore's array writes still in flight call back into orbax's
  closed event loop; each callback's ``RuntimeError`` would print a traceback (unraisable)."""
  previous = sys.unraisablehook

  def hook(unraisable):
    if not (isinstance(unraisable.exc_value, RuntimeError)
            and 'Event loop is closed' in str(unraisable.exc_value)):
      previous(unraisable)

  sys.unraisablehook = hook

_FIELDS = ('step', 'params', 'batch_stats', 'opt_state')


def _pytree(state: TrainState) -> dict:
  """What a checkpoint holds: plain pytrees, loadable without resflax's classes."""
  return {f: getattr(state, f) for f in _FIELDS}


def _host_array(leaf) -> np.ndarray:
  """A leaf as numpy: the local copy of a replicated array (also across processes)."""
  if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
    leaf = leaf.addressable_data(0)
  return np.ascontiguousarray(jax.device_get(leaf))


def digest(tree, meta: dict) -> str:
  """``sha256:<hex>`` of every array of ``tree`` (path, dtype, shape, bytes; fixed tree order)
  and of ``meta`` (canonical JSON, without its own digest)."""
  h = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    array = _host_array(leaf)
    h.update(f'{jax.tree_util.keystr(path)}|{array.dtype.str}|{array.shape}|'.encode())
    h.update(array.reshape(-1).view(np.uint8).data if array.size else b'')
  rest = {k: v for k, v in meta.items() if k != DIGEST_KEY}
  h.update(json.dumps(rest, sort_keys=True).encode())
  return 'sha256:' + h.hexdigest()


def describe_error(error: BaseException) -> str:
  """The cause of a failed file operation in a few words: an ``OSError``'s text (``No space left
  on device``) wherever it is in the chain, else the error's first line."""
  seen = error
  while seen is not None:
    if isinstance(seen, OSError) and seen.strerror:
      return seen.strerror[0].lower() + seen.strerror[1:]
    seen = seen.__cause__ or seen.__context__
  text = str(error).splitlines()[0][:200] if str(error) else ''
  if 'no space left on device' in str(error).lower():
    return f'no space left on device ({type(error).__name__}: {text})'
  return f'{type(error).__name__}: {text}' if text else type(error).__name__


class Checkpoints:
  """A thin wrapper over ``ocp.CheckpointManager`` for one run's train state and metadata."""

  def __init__(self, directory: str | epath.Path, keep: int = 3, create: bool = True):
    self.directory = epath.Path(directory)  # local or a bucket (gs://...)
    if '://' not in str(self.directory):
      self.directory = self.directory.absolute()
    if not create and not self.directory.is_dir():
      raise CheckpointError(f'no checkpoints in {self.directory}: train first with `resflax train '
                            '--config ... --workdir` on this workdir')
    if keep < 1:  # orbax: 0 would delete every checkpoint, < 0 is a traceback
      raise CheckpointError(f'--config.keep_checkpoints={keep}: keep at least 1 (the latest '
                            'checkpoint is never deleted)')
    if self.directory.exists() and not self.directory.is_dir():
      raise CheckpointError(f'{self.directory} is a file, not a directory of checkpoints: move it '
                            'away or use a new --workdir')
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=create)
    self.manager = ocp.CheckpointManager(self.directory, options=options)
    self._unconfirmed: int | None = None  # a save whose background part may still fail

  def save(self, step: int, state: TrainState, meta: dict) -> None:
    """Starts an asynchronous save of ``state`` and ``meta`` (with their digest) as ``step``.
    Raises ``CheckpointSaveError`` if this save or the one before it failed."""
    self.wait()  # orbax waits for the previous save anyway; its failure names its own step
    tree = _pytree(state)
    meta = {**meta, DIGEST_KEY: digest(tree, meta)}
    self._guard(lambda: self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta))), step)
    self._unconfirmed = step

  def check(self) -> None:
    """Raises ``CheckpointSaveError`` as soon as the save in the background has failed; cheap, and
    never blocks. (With several processes a failure shows at the next save or ``wait``, where
    every process is.)"""
    if (self._unconfirmed is not None and jax.process_count() == 1
        and not self.manager.is_saving_in_progress()):
      self.wait()

  def wait(self) -> None:
    """Blocks until the save in flight is written; raises ``CheckpointSaveError`` if it failed."""
    step, self._unconfirmed = self._unconfirmed, None
    self._guard(self.manager.wait_until_finished, step)

  def _guard(self, operation, step: int | None) -> None:
    try:
      operation()
    except CheckpointSaveError:
      raise
    except Exception as e:  # orbax / tensorstore / the OS: many types for one failed write
      _quiet_after_a_failed_save()
      where = self.directory / str(step) if step is not None else self.directory
      kept = sorted(s for s in self.manager.all_steps() if s != step)
      cause = describe_error(e)
      fix = 'free space' if 'no space left' in cause.lower() else 'fix that'
      raise CheckpointSaveError(
          f'saving checkpoint {where} failed: {cause}: training stopped; '
          + (f'the earlier checkpoints (steps {", ".join(map(str, kept))}) are intact'
             if kept else 'no earlier checkpoint exists')
          + f'; {fix} and rerun the same command to resume') from e

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def restore_latest(self, state: TrainState,
                     set_aside: bool = True) -> tuple[TrainState, dict | None]:
    """The latest readable checkpoint onto ``state``'s shapes and shardings, or ``state`` if none.

    ``state`` is only a template (its values are not used); the result has its shardings, so a
    checkpoint written on one device count restores onto any other. An unreadable checkpoint is
    skipped with a warning; with ``set_aside`` (training, which will save that step again) it is
    also renamed ``<step>.corrupt``.
    """
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, _pytree(state))
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
        meta = dict(restored['meta'])
        problem = self._verify(restored['state'], meta)
      except Exception as e:  # orbax/tensorstore raise many types for unreadable files
        self._skip(step, e, set_aside)
        continue
      if problem:
        self._skip(step, None, set_aside, problem)
        continue
      return state.replace(**restored['state']), meta
    return state, None

  @staticmethod
  def _verify(tree, meta: dict) -> str | None:
    """None if the digest saved with the checkpoint matches what was read (or if it has none: a
    checkpoint older than digests); else what differs. Every process decides alike."""
    saved = meta.get(DIGEST_KEY)
    ok = saved is None or digest(tree, meta) == saved
    if jax.process_count() > 1:
      ok = bool(np.min(multihost_utils.process_allgather(np.int32(ok))))
    return None if ok else f'its digest does not match the one saved with it ({str(saved)[:19]}...)'

  def _skip(self, step: int, error: Exception | None, set_aside: bool,
            problem: str | None = None) -> None:
    path = kept = self.directory / str(step)
    if set_aside:
      kept, n = path.with_name(f'{step}.corrupt'), 1
      while kept.exists():
        kept, n = path.with_name(f'{step}.corrupt{n}'), n + 1
      if jax.process_index() == 0:
        path.rename(kept)
      self.manager.reload()
    if problem is None:
      reason = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
      problem = f'is unreadable ({type(error).__name__}: {reason})'
    else:
      problem = f'is corrupt: {problem}'
    _log.warning('checkpoint %s %s; it is kept as %s; using the previous checkpoint', path,
                 problem, kept)

  def close(self) -> None:
    self.manager.close()
