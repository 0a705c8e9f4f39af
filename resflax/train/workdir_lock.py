"""One training run at a time per workdir: an OS lock on ``WORKDIR/.lock``.

``fcntl.flock`` belongs to the open file, so the kernel drops it when the process ends in any way
(exit, crash, SIGKILL): a killed run never leaves a stale lock behind. The file itself stays and
holds the last holder's ``host pid since`` for the message that refuses a second run.

Only ``resflax train`` takes it; ``eval``, ``report`` and ``export`` only read (orbax writes each
checkpoint to a ``*.orbax-checkpoint-tmp*`` folder and renames it when complete, and those folders
are never listed as steps). With several processes (``jax.distributed``) process 0 takes the lock
and the others learn from it whether the run may go on. Buckets (``gs://``) have no such lock:
a warning says so.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import logging
import os
import socket

from etils import epath
import numpy as np

from resflax.errors import WorkdirError

_log = logging.getLogger(__name__)

LOCK_NAME = '.lock'


class WorkdirLock:
  """Holds ``WORKDIR/.lock`` until ``release`` (or the process's end)."""

  def __init__(self, workdir: epath.Path):
    self.path = epath.Path(workdir) / LOCK_NAME
    self._fd: int | None = None

  def acquire(self) -> None:
    """Takes the lock or raises ``WorkdirError`` naming its holder; writes nothing if refused."""
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.pread(fd, 512, 0).decode('utf-8', 'replace').strip() or 'another process'
      os.close(fd)
      raise WorkdirError(
          f'workdir {str(self.path.parent)!r} is in use by a training run ({holder}): wait for it '
          'to end (or stop it), or use another --workdir') from None
    since = datetime.datetime.now().astimezone().isoformat(timespec='seconds')
    os.ftruncate(fd, 0)
    os.pwrite(fd, f'host {socket.gethostname()} pid {os.getpid()} since {since}\n'.encode(), 0)
    self._fd = fd

  def release(self) -> None:
    if self._fd is not None:
      os.close(self._fd)  # closing drops the flock; the file stays (no race on its inode)
      self._fd = None


def is_local(workdir: epath.Path) -> bool:
  return '://' not in str(workdir)


@contextlib.contextmanager
def held_by_run(workdir: epath.Path):
  """The workdir lock for the length of a training run. Process 0 takes it; with several
  processes the others wait for its answer, so a refused run stops on every process. A bucket
  workdir gets a one-line warning instead."""
  import jax  # pylint: disable=g-import-not-at-top
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  main = jax.process_index() == 0
  if not is_local(workdir):
    if main:
      _log.warning('%s is not a local directory, so it has no lock: do not start two training '
                   'runs on it at once', workdir)
    yield None
    return
  lock, refusal = WorkdirLock(workdir), None
  if main:
    try:
      lock.acquire()
    except WorkdirError as e:
      refusal = e
  if jax.process_count() > 1:
    refused = multihost_utils.broadcast_one_to_all(np.int32(refusal is not None))
    if refused and refusal is None:
      refusal = WorkdirError(f'workdir {str(workdir)!r} is in use by another training run '
                             '(process 0 says so): use another --workdir')
  if refusal is not None:
    raise refusal
  try:
    yield lock
  finally:
    lock.release()
