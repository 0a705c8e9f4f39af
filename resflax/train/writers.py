"""Where metrics go: ``metrics.jsonl``, TensorBoard event files, and the terminal.

Only process 0 writes files (``enabled=False`` elsewhere). ``metrics.jsonl`` has one JSON object
per line: ``step``, ``split`` ('train' | 'eval'), ``epoch``, the metrics, ``learning_rate``,
``images_per_sec`` and ``wall_time`` (seconds since the epoch); the last two are the only fields that
differ between two runs of the same command. On an object store the newest rows may still be in
``metrics.jsonl.parts/`` (``MetricsWriter``; ``read_metrics_text`` reads both).

``Progress`` is the terminal display (a bar, or one line per row on stdout), not a log.
"""

from __future__ import annotations

import io
import json
import os
import socket
import sys
import time

from etils import epath

from resflax.errors import WorkdirError

WALL_CLOCK_FIELDS = ('images_per_sec', 'wall_time')
PARTS = 'metrics.jsonl.parts'  # on an object store: rows not yet gathered into metrics.jsonl
FLUSH_INTERVAL_S = 60.0  # on an object store: rows wait at most this long before an upload
_clock = time.monotonic


def is_remote(path) -> bool:
  """An object store (``gs://`` and other ``scheme://`` paths): objects are written whole, never
  appended to, and every write is an upload."""
  return '://' in str(path)


class MetricsWriter:
  """Appends rows to ``metrics.jsonl`` and TensorBoard scalars ``<split>/<name>``.

  In a local workdir every row is written (and TensorBoard flushed) at once. On an object store
  rows are buffered and uploaded every ``flush_interval_s``, at ``flush()`` (each checkpoint) and at
  ``close()``, each time as new objects holding only the new rows: a part of ``metrics.jsonl``
  under ``metrics.jsonl.parts/`` and a TensorBoard event file. ``close()`` (or the next run's
  ``truncate_after``) gathers the parts into ``metrics.jsonl``. A run of n rows uploads O(n) bytes;
  ``read_metrics_text`` reads a workdir's rows, parts included.
  """

  def __init__(self, workdir: epath.Path, enabled: bool = True, *,
               remote: bool | None = None, flush_interval_s: float = FLUSH_INTERVAL_S):
    self.enabled = enabled
    workdir = epath.Path(workdir)
    self.path = workdir / 'metrics.jsonl'
    self.parts = workdir / PARTS
    self._remote = is_remote(workdir) if remote is None else remote
    self._interval = flush_interval_s
    self._pending: list[str] = []  # rows not yet written
    self._gathered = None  # (remote) the text of every row, once metrics.jsonl is rewritten
    self._part = 0
    self._last_flush = _clock()
    self._tb = None
    if enabled:
      self._tb = _EventWriter(workdir / 'tensorboard', remote=self._remote)

  def truncate_after(self, step: int) -> None:
    """Drops rows past ``step``: a resumed run logs them again, identically."""
    if not self.enabled:
      return
    self.flush()
    text = read_metrics_text(self.path.parent)
    if not text and not self.path.exists():
      return
    rows = []
    for line in text.splitlines():
      try:
        if json.loads(line)['step'] <= step:
          rows.append(line)
      except (json.JSONDecodeError, KeyError, TypeError):
        pass  # a line cut short by a killed process
    self._rewrite(''.join(r + '\n' for r in rows))

  def write(self, row: dict) -> None:
    if not self.enabled:
      return
    self._pending.append(json.dumps(row) + '\n')
    self._tb.scalars({f"{row['split']}/{key}": value for key, value in row.items()
                      if key not in ('step', 'split', 'epoch', 'wall_time')
                      and isinstance(value, (int, float))}, row['step'])
    if not self._remote or _clock() - self._last_flush >= self._interval:
      self.flush()

  def flush(self) -> None:
    """Writes the buffered rows (at each checkpoint: the rows of a saved step are on storage)."""
    self._last_flush = _clock()
    if not self.enabled:
      return
    text, self._pending = ''.join(self._pending), []
    if text and self._remote:
      if self._part == 0 and self.parts.exists():  # a killed run's parts: numbered after them
        self._part = len(list(self.parts.glob('*.jsonl')))
      self.parts.mkdir(parents=True, exist_ok=True)
      (self.parts / f'{self._part:06d}.jsonl').write_text(text)
      self._part += 1
    elif text:
      with self.path.open('a') as f:
        f.write(text)
    self._tb.flush()

  def close(self) -> None:
    """Writes what is buffered; on an object store gathers the parts into ``metrics.jsonl``."""
    if not self.enabled:
      return
    self.flush()
    if self._remote and self.parts.exists():
      self._rewrite(read_metrics_text(self.path.parent))
    self._tb.close()

  def _rewrite(self, text: str) -> None:
    """``metrics.jsonl`` := ``text`` (whole or not at all), and no parts left."""
    tmp = self.path.with_suffix('.jsonl.tmp')
    tmp.write_text(text)
    tmp.replace(self.path)
    if self.parts.exists():
      for part in self.parts.glob('*.jsonl'):
        part.unlink()
    self._part = 0


def read_metrics_text(workdir) -> str:
  """The rows of a run: ``metrics.jsonl``, then the parts not yet gathered into it (a run on an
  object store that is still going, or was killed), in order."""
  workdir = epath.Path(workdir)
  path, parts = workdir / 'metrics.jsonl', workdir / PARTS
  text = read_text(path) if path.exists() else ''
  if parts.exists():
    text += ''.join(read_text(p) for p in sorted(parts.glob('*.jsonl'), key=lambda p: p.name))
  return text


class _EventWriter:
  """TensorBoard scalars in event files, framed by tensorboard's own ``RecordWriter`` and written
  through ``epath``: no TensorFlow (alone ~750 MiB of memory and ~3.5 s of start-up), and object
  stores too. Locally one file, flushed by ``flush()``; on an object store each ``flush()`` uploads
  the new events as a new file (TensorBoard reads a directory's event files in name order)."""

  def __init__(self, logdir: epath.Path, remote: bool):
    from tensorboard.compat.proto import event_pb2, summary_pb2  # pylint: disable=g-import-not-at-top
    from tensorboard.summary.writer import record_writer  # pylint: disable=g-import-not-at-top
    self._event, self._summary = event_pb2.Event, summary_pb2.Summary
    self._buffer = io.BytesIO()
    self._records = record_writer.RecordWriter(self._buffer)
    self._logdir, self._remote, self._file, self._seq = logdir, remote, None, 0
    self._name = (f'events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.'
                  f'{os.getpid()}')
    logdir.mkdir(parents=True, exist_ok=True)
    if not remote:
      self._file = (logdir / self._name).open('ab')
      self._header()

  def _header(self) -> None:
    self._records.write(self._event(wall_time=time.time(),
                                    file_version='brain.Event:2').SerializeToString())

  def scalars(self, values: dict[str, float], step: int) -> None:
    if self._remote and not self._buffer.tell():
      self._header()  # each uploaded file is a whole event file
    summary = self._summary(value=[self._summary.Value(tag=k, simple_value=float(v))
                                   for k, v in values.items()])
    self._records.write(self._event(summary=summary, step=int(step),
                                    wall_time=time.time()).SerializeToString())

  def flush(self) -> None:
    data = self._buffer.getvalue()
    if not data:
      return
    if self._remote:
      (self._logdir / f'{self._name}.{self._seq:06d}').write_bytes(data)
      self._seq += 1
    else:
      self._file.write(data)
      self._file.flush()
    self._buffer.seek(0)
    self._buffer.truncate()

  def close(self) -> None:
    self.flush()
    if self._file is not None:
      self._file.close()
      self._file = None


def read_text(path) -> str:
  """A text file of a run (``metrics.jsonl``); one error naming it if it is not text."""
  try:
    return epath.Path(path).read_bytes().decode('utf-8')
  except UnicodeDecodeError:
    raise WorkdirError(f'{path} is not UTF-8 text: it is garbled; move it away (the run keeps '
                       'going without its old rows) or use a new --workdir') from None


def check_writable(workdir: epath.Path) -> None:
  """Creates ``workdir`` if needed; one clear error if it cannot be written."""
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    # One probe per process: the processes of a multi-host run share the workdir.
    probe = workdir / f'.resflax_write_test.{socket.gethostname()}.{os.getpid()}'
    probe.write_text('')
    probe.unlink()
  except OSError as e:
    raise WorkdirError(f'cannot write to workdir {str(workdir)!r} ({e.strerror or e}): choose a '
                       'writable --workdir') from None


def format_row(row: dict) -> str:
  skip = ('split', 'step', 'epoch', 'wall_time')
  parts = [f'{k}={v:.4g}' if isinstance(v, float) else f'{k}={v}'
           for k, v in row.items() if k not in skip and '/' not in k]  # per-block: TB/jsonl only
  return f"{row['split']:5s} step {row['step']} epoch {row['epoch']}: " + ' '.join(parts)


class Progress:
  """A tqdm bar (step, loss, images/sec) on a terminal; plain lines otherwise."""

  def __init__(self, mode: str, total: int, initial: int, enabled: bool = True):
    if mode == 'auto':
      mode = 'bar' if sys.stderr.isatty() else 'lines'
    self.mode = mode if enabled else 'none'
    self.bar = None
    if self.mode == 'bar':
      import tqdm
      self.bar = tqdm.tqdm(total=total, initial=initial, unit='step', dynamic_ncols=True)

  def step(self) -> None:
    if self.bar is not None:
      self.bar.update(1)

  def log(self, row: dict) -> None:
    if self.bar is not None and row['split'] == 'train':
      self.bar.set_postfix(loss=f"{row['loss']:.4f}", img_s=f"{row.get('images_per_sec', 0):.0f}")
    elif self.bar is not None:
      self.bar.write(format_row(row))
    elif self.mode == 'lines':
      print(format_row(row), flush=True)

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()
