"""The benchmark (benchmarks/, not installed): its PyTorch/Keras replicas have the Flax models'
parameter counts, a quick run writes the JSON schema, ``resflax bench`` says what to install.
Nothing here depends on timings."""

import ast
import importlib.util
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from benchmarks import specs
from resflax import cli
from resflax import models

from conftest import REPO, main_in_process


def _flax_counts(name):
  spec = models.get_spec(name)
  model = models.build(name, num_outputs=10 if spec.task == 'classification' else 1)
  x = jnp.zeros((1, *spec.input_shape), jnp.float32)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
  size = lambda tree: sum(int(leaf.size) for leaf in jax.tree.leaves(tree))
  return size(variables['params']), size(variables.get('batch_stats', {}))


def test_the_benchmark_knows_each_models_input_and_task():
  assert set(specs.INPUTS) == set(specs.MODELS) == set(specs.CONFIG_FILES)
  for name, (input_shape, task) in specs.INPUTS.items():
    spec = models.get_spec(name)
    assert (spec.input_shape, spec.task) == (input_shape, task), name


@pytest.mark.parametrize('name', specs.MODELS)
def test_torch_replicas_have_the_flax_parameter_counts(name):
  torch = pytest.importorskip('torch')
  from benchmarks import torch_seeds, torch_zoo
  module = (torch_seeds if name in specs.SEED_MODELS else torch_zoo).build(name)
  trainable = sum(p.numel() for p in module.parameters())
  stats = sum(b.numel() for n, b in module.named_buffers()
              if n.endswith(('running_mean', 'running_var')))
  assert (trainable, stats) == _flax_counts(name)
  spec = models.get_spec(name)
  shape = spec.input_shape if len(spec.input_shape) == 1 else (spec.input_shape[2], *spec.input_shape[:2])
  with torch.no_grad():
    out = module.eval()(torch.zeros(2, *shape))
  assert tuple(out.shape) == (2, 10 if spec.task == 'classification' else 1)


@pytest.mark.parametrize('name', specs.ZOO_MODELS)
def test_keras_zoo_models_have_the_flax_parameter_counts(name):
  pytest.importorskip('keras')
  from benchmarks import keras_zoo
  model = keras_zoo.build_keras_model(name)
  trainable = sum(int(w.numpy().size) for w in model.trainable_weights)
  assert (trainable, model.count_params() - trainable) == _flax_counts(name)


def test_quick_run_writes_the_json_rows(tmp_path, data_dir):
  out = tmp_path / 'bench.json'
  proc = subprocess.run(
      [sys.executable, str(REPO / 'scripts' / 'bench.py'), '--quick', '--models', 'mnist_resmlp',
       '--frameworks', 'resflax', '--json', str(out), '--data-dir', data_dir],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'mnist_resmlp' in proc.stdout and 'resflax ms' in proc.stdout
  payload = json.loads(out.read_text())
  assert [(r['model'], r['framework']) for r in payload['rows']] == [('mnist_resmlp', 'resflax')]
  row = payload['rows'][0]
  assert {'model', 'framework', 'batch_size', 'step_ms', 'images_per_sec'} <= set(row)
  assert row['batch_size'] == 128
  assert row['step_ms'] > 0 and row['images_per_sec'] == pytest.approx(128e3 / row['step_ms'])
  assert row['gflops'] > 0  # XLA's cost analysis gave a FLOP count
  assert payload['matmul']['gflops'] > 0 and payload['pipeline']['images_per_sec'] > 0
  assert all(r['framework'] in specs.FRAMEWORKS for r in payload['rows'])


def test_cli_forwards_to_the_benchmark():
  proc = subprocess.run([sys.executable, '-m', 'resflax.cli', 'bench', '--help'], cwd=REPO,
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr
  assert '--frameworks' in proc.stdout and '--json' in proc.stdout


def test_unknown_model_is_an_error():
  proc = subprocess.run([sys.executable, str(REPO / 'scripts' / 'bench.py'), '--models', 'nope'],
                        cwd=REPO, capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0 and 'unknown model' in proc.stderr


def test_resflax_variants_get_their_settings_and_rounds_their_median():
  from benchmarks import runner
  args = runner._parser().parse_args(['--models', 'mnist_rescnn_deep'])
  assert args.resflax_variants == ['xla']  # XLA's convolutions next to the defaults
  cmd = runner._worker_args(args, 'resflax:onednn', 'mnist_rescnn_deep', 8, 'out.json')
  assert cmd[cmd.index('--conv-impl') + 1] == 'onednn'
  assert '--conv-impl' not in runner._worker_args(args, 'resflax', 'mnist_rescnn_deep', 8, 'o')
  assert specs.RESFLAX_VARIANTS['xla-ynnpack'] == ({'RESFLAX_XLA_CPU_CONVS': 'ynnpack'}, 'xla')
  assert specs.has_convolutions('resnet20') and not specs.has_convolutions('mnist_resmlp')
  combined = runner.combine_rounds([{'step_ms': 3.0, 'mode': 'm'}, {'error': 'x'},
                                    {'step_ms': 1.0}, {'step_ms': 2.0}])
  assert combined['step_ms'] == 2.0 and combined['rounds_ms'] == [3.0, 1.0, 2.0]
  assert combined['mode'] == 'm'
  assert runner.combine_rounds([{'error': 'x'}]) == {'error': 'x'}


def test_the_installed_package_holds_no_benchmark_or_peer_framework():
  """resflax/ imports neither torch nor the benchmark; ``packages.find`` installs resflax* only."""
  for path in (REPO / 'resflax').rglob('*.py'):
    for node in ast.walk(ast.parse(path.read_text())):
      names = ([a.name for a in node.names] if isinstance(node, ast.Import)
               else [node.module or ''] if isinstance(node, ast.ImportFrom) else [])
      assert not [n for n in names if n.split('.')[0] in ('torch', 'benchmarks')], path
  assert not (REPO / 'resflax' / 'bench').exists()


def test_a_missing_peer_says_what_to_install(monkeypatch, capsys):
  from benchmarks import runner
  real = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, 'find_spec',
                      lambda name, *a: None if name == 'torch' else real(name, *a))
  with pytest.raises(SystemExit, match=r"pip install -e '\.\[bench\]'"):
    runner.main(['--models', 'mnist_resmlp', '--frameworks', 'pytorch', '--quick'])
  assert "pytorch: not run, torch is not installed: pip install -e '.[bench]'" in capsys.readouterr().err


def test_cli_bench_outside_a_checkout_says_where_it_runs(monkeypatch, capsys, tmp_path):
  monkeypatch.setattr(cli, 'BENCH_SCRIPT', tmp_path / 'scripts' / 'bench.py')
  code, _, err = main_in_process(capsys, 'bench', '--quick')
  assert code == cli.USAGE_EXIT
  assert 'source checkout' in err and "pip install -e '.[bench]'" in err
