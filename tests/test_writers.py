"""Metrics writers and the terminal progress display."""

import json

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
