"""Where metrics go: ``metrics.jsonl``, TensorBoard event files, and the terminal.

Only process 0 writes files (``enabled=False`` elsewhere). ``metrics.jsonl`` has one JSON object
per line: ``step``, ``split`` ('train' | 'eval'), ``epoch``, the metrics, ``learning_rate``,
``images_per_sec`` and ``wall_time`` (seconds since the epoch); the last two are the only fields that
differ between two runs of the same command.
"""

from __future__ import annotations

import json
import sys
import time
import types

from etils import epath

from resflax.errors import WorkdirError

WALL_CLOCK_FIELDS = ('images_per_sec', 'wall_time')


class MetricsWriter:
  """Appends rows to ``metrics.jsonl`` and TensorBoard scalars ``<split>/<name>``."""

  def __init__(self, workdir: epath.Path, enabled: bool = True):
    self.enabled = enabled
    self.path = epath.Path(workdir) / 'metrics.jsonl'
    self._remote = '://' in str(self.path)  # e.g. gs://: objects cannot be appended to
    self._text = self.path.read_text() if enabled and self._remote and self.path.exists() else ''
    self._tb = None
    if enabled:
      self._tb = _tensorboard_writer(epath.Path(workdir) / 'tensorboard', remote=self._remote)

  def truncate_after(self, step: int) -> None:
    """Drops rows past ``step``: a resumed run logs them again, identically."""
    if not self.enabled or not self.path.exists():
      return
    rows = []
    for line in read_text(self.path).splitlines():
      try:
        if json.loads(line)['step'] <= step:
          rows.append(line)
      except (json.JSONDecodeError, KeyError, TypeError):
        pass  # a line cut short by a killed process
    self._text = ''.join(r + '\n' for r in rows)
    tmp = self.path.with_suffix('.jsonl.tmp')
    tmp.write_text(self._text)
    tmp.replace(self.path)

  def write(self, row: dict) -> None:
    if not self.enabled:
      return
    line = json.dumps(row) + '\n'
    if self._remote:
      self._text += line
      self.path.write_text(self._text)
    else:
      with self.path.open('a') as f:
        f.write(line)
    self._tb.scalars({f"{row['split']}/{key}": value for key, value in row.items()
                      if key not in ('step', 'split', 'epoch', 'wall_time')
                      and isinstance(value, (int, float))}, row['step'])

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


class _EventWriter:
  """TensorBoard scalars through tensorboard's own event-file writer, which needs no TensorFlow
  (TensorFlow alone is ~750 MiB of memory and ~3.5 s of start-up)."""

  def __init__(self, logdir: epath.Path):
    if 'tensorflow' not in sys.modules:  # tensorboard's switch to its TF-free file layer
      sys.modules.setdefault('tensorboard.compat.notf', types.ModuleType('tensorboard.compat.notf'))
    from tensorboard.compat.proto import event_pb2, summary_pb2  # pylint: disable=g-import-not-at-top
    from tensorboard.summary.writer import event_file_writer  # pylint: disable=g-import-not-at-top
    self._event, self._summary = event_pb2.Event, summary_pb2.Summary
    self._writer = event_file_writer.EventFileWriter(str(logdir))

  def scalars(self, values: dict[str, float], step: int) -> None:
    summary = self._summary(value=[self._summary.Value(tag=k, simple_value=float(v))
                                   for k, v in values.items()])
    self._writer.add_event(self._event(summary=summary, step=int(step), wall_time=time.time()))
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()


class _FlaxWriter:
  """flax's TensorBoard writer (TensorFlow's file system: gs:// and other buckets)."""

  def __init__(self, logdir: epath.Path):
    from flax.metrics import tensorboard  # pylint: disable=g-import-not-at-top (imports TensorFlow)
    self._writer = tensorboard.SummaryWriter(str(logdir))

  def scalars(self, values: dict[str, float], step: int) -> None:
    for key, value in values.items():
      self._writer.scalar(key, value, step)
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()


def _tensorboard_writer(logdir: epath.Path, remote: bool):
  return _FlaxWriter(logdir) if remote else _EventWriter(logdir)


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
    probe = workdir / '.resflax_write_test'
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
