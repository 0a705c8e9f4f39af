"""Metrics writers and the terminal progress display."""

import json
import time

import pytest

from resflax.train import writers

ROW = {'step': 50, 'split': 'train', 'epoch': 1, 'loss': 0.25, 'accuracy': 0.9,
       'images_per_sec': 1234.0, 'wall_time': 1.0}


def test_progress_bar_on_a_terminal_shows_step_loss_and_images_per_sec(capsys):
  progress = writers.Progress('bar', total=100, initial=40)
  for _ in range(10):
    progress.step()
  progress.log(ROW)
  progress.close()
  err = capsys.readouterr().err
  assert '50/100' in err and 'loss=0.2500' in err and 'img_s=1234' in err


def test_plain_lines_when_not_on_a_terminal(capsys):
  progress = writers.Progress('auto', total=100, initial=0)  # pytest's stderr is not a tty
  progress.step()
  progress.log(ROW)
  out = capsys.readouterr().out
  assert out.strip() == 'train step 50 epoch 1: loss=0.25 accuracy=0.9 images_per_sec=1234'


def test_metrics_jsonl_rows_and_truncation(tmp_path):
  writer = writers.MetricsWriter(tmp_path)
  for step in (10, 20, 30):
    writer.write({**ROW, 'step': step})
  with (tmp_path / 'metrics.jsonl').open('a') as f:
    f.write('{"step": 40, "spl')  # a line cut short by a killed process
  writer.truncate_after(20)
  rows = [json.loads(l) for l in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  assert [r['step'] for r in rows] == [10, 20]
  writer.close()
  assert any((tmp_path / 'tensorboard').iterdir())


def test_only_the_main_process_writes(tmp_path):
  writer = writers.MetricsWriter(tmp_path, enabled=False)
  writer.write(ROW)
  writer.truncate_after(0)
  writer.close()
  assert not (tmp_path / 'metrics.jsonl').exists() and not (tmp_path / 'tensorboard').exists()


def test_tensorboard_scalars_are_written_without_tensorflow(tmp_path):
  """The local TensorBoard writer never imports TensorFlow (in a fresh process); TensorBoard reads
  the scalars back."""
  import subprocess
  import sys
  code = ('import sys; from resflax.train import writers; '
          f'w = writers.MetricsWriter(__import__("pathlib").Path({str(tmp_path)!r})); '
          f'[w.write({{**{ROW!r}, "step": s, "loss": s / 10}}) for s in (1, 2)]; w.close(); '
          'print("tensorflow" in sys.modules)')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == 'False'
  from tensorboard.backend.event_processing import event_accumulator
  events = event_accumulator.EventAccumulator(str(tmp_path / 'tensorboard'))
  events.Reload()
  assert [(e.step, round(e.value, 6)) for e in events.Scalars('train/loss')] == [(1, 0.1), (2, 0.2)]
  assert events.Scalars('train/images_per_sec')[0].value == 1234.0


class SlowBucket:
  """An object store stand-in for ``epath``: counts uploads (files opened for writing) and their
  bytes, takes ``latency`` s per upload, and refuses appends as object stores do."""

  def __init__(self, latency=0.002):
    self.latency, self.uploads, self.bytes = latency, 0, 0

  def open(self, original, path, mode):
    if 'a' in mode:
      raise OSError(f'{path}: objects cannot be appended to')
    f = original(path, mode)
    if 'w' not in mode:
      return f
    bucket, write = self, f.write
    bucket.uploads += 1
    time.sleep(self.latency)

    def counted(data):
      bucket.bytes += len(data.encode() if isinstance(data, str) else data)
      return write(data)
    f.write = counted
    return f


@pytest.fixture
def bucket(monkeypatch):
  """A fake object store under tmp_path, and a clock the test moves (1 s per row below)."""
  from etils import epath
  now = [0.0]
  monkeypatch.setattr(writers, '_clock', lambda: now[0])
  fake = SlowBucket()
  with epath.testing.mock_epath(open=fake.open):
    yield fake, now


def _rows(n, start=1):
  for step in range(start, start + n):
    yield {**ROW, 'step': step, 'loss': step / 1000}


def _write_a_row_a_second(workdir, now, num_rows):
  """A bucket run: ``num_rows`` rows, the fake clock ``now`` one second on per row, then close."""
  writer = writers.MetricsWriter(workdir, remote=True, flush_interval_s=60)
  for row in _rows(num_rows):
    now[0] += 1
    writer.write(row)
  writer.close()


def test_object_store_uploads_are_linear_in_the_rows(tmp_path, bucket):
  """10 000 rows, one a second, 60 s between uploads: every row is uploaded twice (once in a part,
  once when close gathers them), in ~170 uploads; not one upload of the whole file per row."""
  fake, now = bucket
  _write_a_row_a_second(tmp_path, now, 10_000)
  size = (tmp_path / 'metrics.jsonl').stat().st_size
  rows = [json.loads(l) for l in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  assert [r['step'] for r in rows] == list(range(1, 10_001))  # none lost, in order
  assert not list((tmp_path / writers.PARTS).glob('*'))
  assert fake.uploads <= 2 * (10_000 // 60 + 2) + 2, fake.uploads  # jsonl part + events, each
  jsonl_bytes = fake.bytes - sum(p.stat().st_size for p in (tmp_path / 'tensorboard').iterdir())
  assert jsonl_bytes <= 2 * size + 1000, (jsonl_bytes, size)  # per row it was ~size ** 2 / 2


def test_object_store_rows_are_on_storage_at_each_checkpoint_flush(tmp_path, bucket):
  """flush() (at each checkpoint) uploads the buffered rows; a killed run loses none of them, and
  the next run's truncate_after gathers them."""
  fake, _ = bucket
  writer = writers.MetricsWriter(tmp_path, remote=True, flush_interval_s=60)
  for row in _rows(5):
    writer.write(row)
  assert fake.uploads == 0 and writers.read_metrics_text(tmp_path) == ''  # buffered
  writer.flush()  # a checkpoint at step 5; then the process is killed
  for row in _rows(2, start=6):
    writer.write(row)
  steps = [json.loads(l)['step'] for l in writers.read_metrics_text(tmp_path).splitlines()]
  assert steps == [1, 2, 3, 4, 5]
  resumed = writers.MetricsWriter(tmp_path, remote=True)
  resumed.truncate_after(4)
  assert [json.loads(l)['step'] for l in (tmp_path / 'metrics.jsonl').read_text().splitlines()] \
      == [1, 2, 3, 4]
  assert not list((tmp_path / writers.PARTS).glob('*'))
  resumed.close()


def test_object_store_tensorboard_files_hold_every_row(tmp_path, bucket):
  _, now = bucket
  _write_a_row_a_second(tmp_path, now, 150)
  from tensorboard.backend.event_processing import event_accumulator
  assert len(list((tmp_path / 'tensorboard').iterdir())) == 3  # uploads at 60 s, 120 s, close
  events = event_accumulator.EventAccumulator(str(tmp_path / 'tensorboard'))
  events.Reload()
  assert [e.step for e in events.Scalars('train/loss')] == list(range(1, 151))


def test_local_rows_are_visible_at_once(tmp_path):
  writer = writers.MetricsWriter(tmp_path, flush_interval_s=3600)
  writer.write(ROW)
  assert json.loads((tmp_path / 'metrics.jsonl').read_text())['step'] == 50
  from tensorboard.backend.event_processing import event_accumulator
  events = event_accumulator.EventAccumulator(str(tmp_path / 'tensorboard'))
  events.Reload()
  assert [e.step for e in events.Scalars('train/loss')] == [50]
  writer.close()
