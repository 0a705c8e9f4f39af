"""``resflax report``: the table and readable PNG plots from a fixture run directory."""

import json

import matplotlib.image
import pytest

from resflax import cli


def _fixture_run(path, accuracy):
  path.mkdir(parents=True)
  (path / 'config.json').write_text(json.dumps({'model': 'mnist_resmlp', 'dataset': 'mnist_5k',
                                                'seed': 0}))
  rows = []
  for step in (10, 20, 30):
    rows.append({'step': step, 'split': 'train', 'epoch': 0, 'loss': 2.0 / step, 'accuracy': 0.5,
                 'images_per_sec': 1000.0 + step, 'wall_time': 100.0 + step,
                 'grad_norm/stem0': 1.0 / step, 'grad_norm/stack/block2': 0.5 / step})
    rows.append({'step': step, 'split': 'eval', 'epoch': 0, 'loss': 1.0, 'accuracy': accuracy * step / 30,
                 'wall_time': 101.0 + step})
  (path / 'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows) + '{"cut')


def test_report_table_and_plots(tmp_path, capsys):
  _fixture_run(tmp_path / 'a', 0.9)
  _fixture_run(tmp_path / 'b', 0.6)
  assert cli.main(['report', str(tmp_path / 'a'), str(tmp_path / 'b'), '--out',
                   str(tmp_path / 'out')]) == 0
  md = (tmp_path / 'out' / 'report.md').read_text()
  row_a = next(l for l in md.splitlines() if l.startswith('| a |'))
  assert '| mnist_resmlp | mnist_5k | 0 | 235,402 |' in row_a
  assert '| 30 | accuracy 0.9000 | 0.9000 |' in row_a and '| 1020 |' in row_a
  assert '| accuracy 0.6000 |' in md
  for name in ('loss.png', 'accuracy.png', 'grad_norms_a.png', 'grad_norms_b.png'):
    image = matplotlib.image.imread(tmp_path / 'out' / name)
    assert image.shape[0] > 200 and image.shape[1] > 300
    assert f']({name})' in md


def test_report_on_a_directory_that_is_not_a_run(tmp_path, capsys):
  assert cli.main(['report', str(tmp_path), '--out', str(tmp_path / 'out')]) == 2
  assert 'is not a resflax run directory' in capsys.readouterr().err
