"""Decoded splits kept as verified ``.npy`` files: ``<dataset dir>/resflax_arrays/<name>.*``.

``<name>.images.npy`` and ``<name>.labels.npy`` hold the arrays; ``<name>.sha256.json`` the
SHA-256 of each file's bytes, written last, so a cache without it is incomplete. Opening checks
both digests before memory-mapping the files (a damaged body under an intact ``.npy`` header would
otherwise be trained on silently); a mismatch says so in one warning line and the split is decoded
and cached again. *Measured* (2-core VM, page cache warm): SHA-256 reads ~1.7 GB/s, so a
CIFAR-10-sized train split (50000x32x32x3 uint8, 154 MB) costs ~0.09 s per open.

Builders and readers hold ``<name>.lock`` (``fcntl.flock``): of two processes that need the same
split at once, one decodes and writes it, the other waits and then maps the verified files.
"""

from __future__ import annotations

from collections.abc import Callable
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import socket

from etils import epath
import numpy as np

PARTS = ('images', 'labels')
_log = logging.getLogger(__name__)


def _file_digest(path: epath.Path) -> str:
  with open(path, 'rb') as f:
    return 'sha256:' + hashlib.file_digest(f, 'sha256').hexdigest()


@contextlib.contextmanager
def _locked(cache: epath.Path, name: str):
  """An exclusive lock on ``cache/<name>.lock``; none where the cache cannot be written."""
  try:
    cache.mkdir(exist_ok=True)
    fd = os.open(cache / f'{name}.lock', os.O_RDWR | os.O_CREAT, 0o644)
  except OSError:  # a read-only data dir: nothing is written, so nothing to guard
    yield
    return
  try:
    fcntl.flock(fd, fcntl.LOCK_EX)  # blocks while another process builds this split
    yield
  finally:
    os.close(fd)


def _read(cache: epath.Path, name: str) -> tuple[np.ndarray, ...] | None:
  """The cached arrays, memory-mapped, if complete and intact; None otherwise."""
  paths = [cache / f'{name}.{part}.npy' for part in PARTS]
  digests = cache / f'{name}.sha256.json'
  if not digests.exists() or not all(p.exists() for p in paths):
    return None  # never written, or cut short before its digests (written last)
  try:
    recorded = json.loads(digests.read_text())
    bad = [str(p) for p in paths if _file_digest(p) != recorded.get(p.name)]
    if not bad:  # memory-mapped: on CPU the device array reads these pages (no second copy),
      # elsewhere they are page cache, shared by every process on the host and freed under pressure
      return tuple(np.load(p, mmap_mode='r') for p in paths)
    why = 'does not match the digest recorded when it was written'
  except (OSError, ValueError) as e:  # unreadable: decode the split again
    bad, why = [str(digests)], f'is unreadable ({type(e).__name__})'
  _log.warning('cached split %s %s: decoding the split again', ', '.join(bad), why)
  return None


def _write(cache: epath.Path, name: str, arrays: tuple[np.ndarray, ...]) -> None:
  digests_path = cache / f'{name}.sha256.json'
  digests_path.unlink(missing_ok=True)  # the files below are complete only once it is back
  suffix = f'{socket.gethostname()}.{os.getpid()}.tmp'
  digests = {}
  for part, array in zip(PARTS, arrays):
    path = cache / f'{name}.{part}.npy'
    tmp = path.with_name(f'{path.name}.{suffix}')
    with tmp.open('wb') as f:
      np.save(f, array)
    digests[path.name] = _file_digest(tmp)
    tmp.replace(path)  # atomic: never half a file, nor a mapped file rewritten in place
  tmp = digests_path.with_name(f'{digests_path.name}.{suffix}')
  tmp.write_text(json.dumps(digests, indent=1) + '\n')
  tmp.replace(digests_path)


Arrays = tuple[np.ndarray, ...]


def load_or_build(cache: epath.Path, name: str,
                  build: Callable[[], tuple[Arrays, bool]]) -> Arrays:
  """The arrays cached as ``cache/<name>.*``, or ``build()``'s ``(arrays, store)``, cached if
  ``store`` and the directory can be written."""
  with _locked(cache, name):
    cached = _read(cache, name)
    if cached is not None:
      return cached
    arrays, store = build()
    if store:
      try:
        _write(cache, name, arrays)
      except OSError:  # a read-only data dir: decode each time
        pass
    return arrays
