"""Orbax checkpoints in ``WORKDIR/checkpoints``: save, and restore the latest readable one.

Saves are asynchronous and atomic (orbax writes a temporary directory and renames it when done).
A latest checkpoint that cannot be read is never deleted: it is renamed ``<step>.corrupt`` (kept
for inspection), a warning names it, and the previous checkpoint is restored instead.
"""

from __future__ import annotations

import sys

from etils import epath
import jax
import orbax.checkpoint as ocp

from resflax.errors import CheckpointError
from resflax.train.state import TrainState

_FIELDS = ('step', 'params', 'batch_stats', 'opt_state')


def _pytree(state: TrainState) -> dict:
  """What a checkpoint holds: plain pytrees, loadable without resflax's classes."""
  return {f: getattr(state, f) for f in _FIELDS}


class Checkpoints:
  """A thin wrapper over ``ocp.CheckpointManager`` for one run's train state and metadata."""

  def __init__(self, directory: str | epath.Path, keep: int = 3, create: bool = True):
    self.directory = epath.Path(directory)  # local or a bucket (gs://...)
    if '://' not in str(self.directory):
      self.directory = self.directory.absolute()
    if not create and not self.directory.is_dir():
      raise CheckpointError(f'no checkpoints in {self.directory}: train first with `resflax train '
                            '--config ... --workdir` on this workdir')
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=create)
    self.manager = ocp.CheckpointManager(self.directory, options=options)

  def save(self, step: int, state: TrainState, meta: dict) -> None:
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(_pytree(state)), meta=ocp.args.JsonSave(meta)))

  def wait(self) -> None:
    self.manager.wait_until_finished()

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
      except Exception as e:  # orbax/tensorstore raise many types for unreadable files
        self._skip(step, e, set_aside)
        continue
      return state.replace(**restored['state']), dict(restored['meta'])
    return state, None

  def _skip(self, step: int, error: Exception, set_aside: bool) -> None:
    path = kept = self.directory / str(step)
    if set_aside:
      kept, n = path.with_name(f'{step}.corrupt'), 1
      while kept.exists():
        kept, n = path.with_name(f'{step}.corrupt{n}'), n + 1
      if jax.process_index() == 0:
        path.rename(kept)
      self.manager.reload()
    reason = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
    print(f'resflax: warning: checkpoint {path} is unreadable ({type(error).__name__}: {reason}); '
          f'it is kept as {kept}; using the previous checkpoint', file=sys.stderr, flush=True)

  def close(self) -> None:
    self.manager.close()
