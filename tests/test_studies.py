"""The study tooling: sweep, lesion, costs, the shortcut-study net, the degradation ladder's merges,
and CIFAR nets on digits (any image size) through the CLI and the report."""

import json

import chex
import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resflax import blocks, cli, costs, lesion, models, report, sweep
from resflax.errors import ConfigError
from resflax.models import shortcut_study
from resflax.train import state as state_lib
from resflax.train import steps

from conftest import CONFIGS, run_in_process


def _init(name, shape, num_outputs=10):
  model = models.build(name, num_outputs=num_outputs)
  x = jnp.asarray(np.random.default_rng(0).random((4, *shape)), jnp.float32)
  return model, model.init(jax.random.key(0), x, train=False), x


def _count(tree):
  return sum(int(leaf.size) for leaf in jax.tree.leaves(tree))


# --- sweep ------------------------------------------------------------------------------------

def test_sweep_grid_names_and_commands():
  runs = sweep.grid_runs('c.py', 'runs/s/', sweep.parse_grid(['seed=0,1', 'model=a,b']),
                         [('dataset', 'mnist_5k')])
  assert [r.workdir for r in runs] == ['runs/s/seed-0_model-a', 'runs/s/seed-0_model-b',
                                       'runs/s/seed-1_model-a', 'runs/s/seed-1_model-b']
  assert runs[1].command() == ('resflax train --config c.py --workdir runs/s/seed-0_model-b '
                               '--config.dataset=mnist_5k --config.seed=0 --config.model=b')
  with pytest.raises(ConfigError, match="--grid 'seed'"):
    sweep.parse_grid(['seed'])


def test_sweep_prints_then_runs_each(data_dir, tmp_path, capsys):
  args = ['sweep', '--config', str(CONFIGS / 'mnist_resmlp.py'), '--root', str(tmp_path),
          '--grid', 'seed=0,1', '--config.dataset=mnist_5k', f'--config.data_dir={data_dir}',
          '--config.num_train_steps=2', '--config.progress=none']
  assert cli.main(args + ['--print-only']) == 0
  lines = capsys.readouterr().out.strip().splitlines()
  assert len(lines) == 2 and all(l.startswith('resflax train --config ') for l in lines)
  assert not any(tmp_path.iterdir())  # --print-only runs nothing
  assert cli.main(args) == 0
  for seed in (0, 1):
    config = json.loads((tmp_path / f'seed-{seed}' / 'config.json').read_text())
    assert config['seed'] == seed and config['num_train_steps'] == 2
  assert cli.main(args[:-1] + ['--config.num_train_stepz=2', '--print-only']) == 2  # checked first


# --- the degradation ladder: highway and dense-additive merges on ResNet-CIFAR -------------------

def test_dense_additive_with_one_block_per_stage_is_the_resnet():
  """With one block per stage, o_1 = act(body(x) + A(x)): exactly ResNet-8's block."""
  resnet, variables, x = _init('resnet8', (28, 28, 1))
  dense = models.build('dense_additive_resnet8', num_outputs=10)
  lift = lambda tree: {k: (v['body'] if k.startswith('block') else v) for k, v in tree.items()}
  dense_vars = {c: lift(flax.core.unfreeze(v)) for c, v in variables.items()}
  chex.assert_trees_all_equal_shapes(dense_vars, dense.init(jax.random.key(0), x, train=False))
  np.testing.assert_allclose(dense.apply(dense_vars, x, train=False),
                             resnet.apply(variables, x, train=False), rtol=1e-5, atol=1e-6)


def test_dense_additive_sums_every_earlier_output_of_the_stage():
  model, variables, x = _init('dense_additive_resnet20', (28, 28, 1))
  _, inter = model.apply(variables, x, train=False, mutable=['intermediates'])
  out = {k: v[0] for k, v in inter['intermediates'].items()}
  assert _count(variables['params']) == _count(_init('resnet20', (28, 28, 1))[1]['params'])
  # Stage 1 (blocks 2-4): block4 = relu(body(o_3) + o_0 + o_1 + o_2 ... ) >= every earlier sum term.
  assert out['block4_output'].shape == out['block2_output'].shape == (4, 28, 28, 16)
  assert out['block8_output'].shape == (4, 7, 7, 64)


def test_highway_ladder_adds_only_the_gates():
  _, variables, _ = _init('highway_resnet20', (28, 28, 1))
  gates = sum(_count(v['merge']) for k, v in variables['params'].items() if k.startswith('block'))
  assert gates == 3 * (16 * 16 + 16) + 3 * (32 * 32 + 32) + 3 * (64 * 64 + 64)
  assert _count(variables['params']) - gates == _count(_init('resnet20', (28, 28, 1))[1]['params'])
  biases = [v['merge']['gate']['bias'] for k, v in variables['params'].items() if k.startswith('block')]
  assert all(np.all(b == -2.0) for b in biases)


# --- the shortcut study's net -----------------------------------------------------------------

def test_shortcut_study_parameter_counts():
  plain = _count(_init('shortcut_study_none', (28, 28, 1))[1]['params'])
  extra = {kind: _count(_init(f'shortcut_study_{kind}', (28, 28, 1))[1]['params']) - plain
           for kind in shortcut_study.SHORTCUTS}
  assert extra['identity'] == extra['zero_pad'] == 0
  assert extra['projection'] == extra['avgpool_projection'] == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)
  assert extra['pointwise_dense'] == extra['global_pool_dense'] == (16 * 32 + 32) + (32 * 64 + 64)
  # Flatten + Dense maps 14x14x16 -> 7x7x32 and 7x7x32 -> 4x4x64, each with a bias.
  assert extra['flatten_dense'] == (3136 * 1568 + 1568) + (1568 * 1024 + 1024)
  cost = costs.forward_cost('shortcut_study_flatten_dense', 10, (28, 28, 1))
  assert cost['shortcut_params'] == extra['flatten_dense'] and cost['flops'] > 0


def test_pointwise_dense_shortcut_is_a_strided_1x1_conv():
  _, variables, _ = _init('shortcut_study_pointwise_dense', (28, 28, 1))
  params = variables['params']['block3']['shortcut']['pointwise']['dense']
  h = jnp.asarray(np.random.default_rng(1).random((4, 14, 14, 16)), jnp.float32)
  conv = jax.lax.conv_general_dilated(h, params['kernel'][None, None], (2, 2), 'VALID',
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  out = blocks.SubsampledPointwiseDense(32, 2).apply(
      {'params': {'pointwise': {'dense': params}}}, h)
  assert out.shape == (4, 7, 7, 32)
  np.testing.assert_allclose(out, conv + params['bias'], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('kind', shortcut_study.SHORTCUTS)
def test_shortcut_study_nets_train(kind):
  model, variables, x = _init(f'shortcut_study_{kind}', (28, 28, 1))
  config = {'optimizer': 'keras_adam', 'learning_rate': 1e-3, 'optimizer_kwargs': {'amsgrad': False}}
  from resflax import config as config_lib
  c = config_lib.base_config()
  c.update(config)
  state = state_lib.create_state(model, state_lib.make_optimizer(c, 10), (28, 28, 1),
                                 jax.random.key(0))
  batch = {'image': x, 'label': jnp.asarray([1, 2, 3, 4])}
  state, metrics = jax.jit(lambda s, b: steps.train_step(s, b, jax.random.key(1),
                                                         loss='softmax_cross_entropy'))(state, batch)
  assert np.isfinite(float(metrics['loss'])) and int(state.step) == 1


# --- lesion -----------------------------------------------------------------------------------

def test_lesion_zero_branch_deletes_exactly_the_residual_branch():
  model, variables, x = _init('resnet8', (28, 28, 1))
  names = lesion.block_names(model, variables, x)
  assert names == ['block2', 'block3', 'block4']
  apply = jax.jit(lesion.gated_apply(model, names))
  # Gates of 1 change nothing but XLA's fusion of the graph (float reassociation, ~1e-8 here).
  np.testing.assert_allclose(apply(variables, x, jnp.ones(3)), model.apply(variables, x), rtol=1e-6,
                             atol=1e-6)
  # Deleting block3 == its body's last BN outputting 0 (scale and offset 0): act(0 + A(x)).
  zeroed = flax.core.unfreeze(jax.tree.map(np.array, variables))
  zeroed['params']['block3']['body']['norm1'] = jax.tree.map(
      np.zeros_like, zeroed['params']['block3']['body']['norm1'])
  np.testing.assert_allclose(apply(variables, x, jnp.asarray([1., 0., 1.])),
                             model.apply(zeroed, x), rtol=1e-5, atol=1e-6)


def test_lesion_skip_replaces_shape_keeping_blocks_by_the_identity():
  model, variables, x = _init('plain8', (28, 28, 1))
  names = lesion.block_names(model, variables, x)
  assert lesion.deletable(model, variables, x, names, 'skip') == [True, False, False]
  apply = jax.jit(lesion.gated_apply(model, names, 'skip'))
  _, inter = model.apply(variables, x, mutable=['intermediates'])
  stem = inter['intermediates']['block1_output'][0]
  # With block2 skipped, block2's output is the stem's: compare via the intercepted output.
  skipped = apply(variables, x, jnp.asarray([0., 1., 1.]))
  assert not np.allclose(skipped, model.apply(variables, x))
  np.testing.assert_allclose(apply(variables, x, jnp.asarray([0., 0., 0.])), skipped, rtol=1e-6)
  batch = {'image': np.asarray(x), 'label': np.zeros(4, np.int32), 'mask': np.ones(4, np.float32)}
  accs = lesion.accuracy_with_deletions(apply, variables, [batch], [np.ones(3), np.zeros(3)])
  assert len(accs) == 2 and all(0 <= a <= 1 for a in accs)
  assert stem.shape == (4, 28, 28, 16)
  with pytest.raises(ConfigError, match='unknown lesion mode'):
    lesion.gated_apply(model, names, 'drop')


# --- costs, and a CIFAR net trained on digits through the CLI ----------------------------------

def test_train_step_cost_reports_time_and_memory():
  from resflax import config as config_lib
  config = config_lib.load(CONFIGS / 'mnist_resmlp.py')
  cost = costs.train_step_cost(config, (784,), batch_size=8, repeats=2, warmup=1)
  assert cost['step_ms'] > 0 and cost['compile_s'] > 0
  assert cost['peak_mb'] > 235_402 * 4 * 3 / 2**20  # params, two Adam moments (and more)


def test_cifar_net_trains_on_digits_and_the_report_uses_their_shape(data_dir, tmp_path):
  workdir = tmp_path / 'resnet8'
  run_in_process('train', '--config', CONFIGS / 'resnet_cifar.py', '--config.model=resnet8',
                 '--config.dataset=mnist_5k', f'--config.data_dir={data_dir}',
                 '--config.num_train_steps=3', '--config.batch_size=32',
                 '--config.augment_flip=false', '--config.progress=none', '--workdir', workdir)
  info = json.loads((workdir / 'model.json').read_text())
  assert {k: info[k] for k in ('model', 'input_shape', 'num_outputs')} == {
      'model': 'resnet8', 'input_shape': [28, 28, 1], 'num_outputs': 10}
  summary = report.summarize(report.read_run(workdir))
  kwargs = json.loads((workdir / 'config.json').read_text())['model_kwargs']  # the recipe's norm
  assert summary['flops'] == costs.forward_cost('resnet8', 10, (28, 28, 1), kwargs)['flops']
  assert summary['flops'] < costs.forward_cost('resnet8', 10, (32, 32, 3), kwargs)['flops']


# --- the study scripts end to end, on a few steps (slow: `pytest -m slow`) -----------------------

@pytest.mark.slow
def test_shortcut_study_script_writes_its_report(data_dir, tmp_path):
  import subprocess
  import sys
  out = tmp_path / 'out'
  subprocess.run([sys.executable, 'scripts/shortcut_study.py', '--tasks', 'digits', '--kinds',
                  'zero_pad', 'projection', '--seeds', '0', '1', '--root', str(tmp_path / 'runs'),
                  '--out', str(out), '--repeats', '2', '--', '--config.num_train_steps=3',
                  f'--config.data_dir={data_dir}'], cwd=CONFIGS.parents[1], check=True)
  text = (out / 'README.md').read_text()
  assert '| zero-pad + stride (option A) |' in text and '## Q2' in text
  results = json.loads((out / 'results.json').read_text())
  assert len(results['digits']['final']['projection']) == 2
  assert (out / 'digits.png').stat().st_size > 10_000


@pytest.mark.slow
def test_seed_claims_script_writes_its_report(data_dir, tmp_path):
  import subprocess
  import sys
  root, out = tmp_path / 'runs', tmp_path / 'out'
  cmd = [sys.executable, 'scripts/seed_claims_study.py', '--depths', '8', '--seeds', '0',
         '--deep-cnn-seeds', '0', '--root', str(root), '--out', str(out)]
  printed = subprocess.run(cmd + ['--print-only'], cwd=CONFIGS.parents[1], check=True,
                           capture_output=True, text=True).stdout.splitlines()
  assert len(printed) == 4 + 5 and all(l.startswith('resflax train') for l in printed)
  # Train every run for 2 steps (the recipes' own lengths are the study's), then report.
  for line in printed:
    argv = line.split()[1:] + ['--config.num_train_steps=2', f'--config.data_dir={data_dir}']
    assert cli.main(argv) == 0
  subprocess.run(cmd + ['--stages', 'report'], cwd=CONFIGS.parents[1], check=True)
  text = (out / 'README.md').read_text()
  assert '## Verdicts' in text and '## Lesion study' in text
  assert (out / 'lesion.png').is_file() and (out / 'degradation_curves.png').is_file()


def test_seed_claims_grades_the_two_to_three_layers_claim_with_the_lab(tmp_path):
  """Seed 002's "2-3 layers long while training" takes the skip-connection lab's verdict (Veit et
  al.'s path lengths) when the lab has run, keeping the update-ratio proxy as a second view."""
  import runpy
  study = runpy.run_path(str(CONFIGS.parents[1] / 'scripts' / 'seed_claims_study.py'))
  ratios = [1e-3] * 20 + [5e-3] * 7  # 27 blocks, all within 10x of the fastest
  deg56 = {'early_update_ratio': ratios}
  verdict = {'claim': 'c', 'verdict': 'partly supported', 'rule': 'Veit rule',
             'numbers': 'effective range (blocks) 3-12 of 25 blocks'}
  lab = tmp_path / 'results.json'
  lab.write_text(json.dumps({'sections': {'paths': {'verdict': verdict}}}))

  def claim5(lab_results):
    return study['two_to_three_layers'](deg56, 56, lab_results)

  with_lab = claim5(lab)
  assert with_lab['verdict'] == 'partly supported' and with_lab['rule'].startswith('Veit rule')
  assert 'effective range' in with_lab['numbers'] and '27 of 27 blocks' in with_lab['numbers']
  without = claim5(tmp_path / 'absent.json')
  assert without['verdict'] == 'not supported' and '27 of 27 blocks' in without['numbers']
