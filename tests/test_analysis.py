"""resflax.analysis and `resflax analyze`: each instrument on tiny models, checked against numbers
computable by hand (a linear residual net) or densely (jax.hessian)."""

import json
import math
import pathlib

import flax.linen as nn
import jax
from jax.flatten_util import ravel_pytree
import jax.numpy as jnp
import numpy as np
import pytest

from resflax import analysis, blocks, cli
from resflax.analysis import hessian, landscape, paths, signal_propagation
from resflax.errors import ConfigError, NonFiniteLossError
from resflax.models import resnet_cifar

from conftest import CONFIGS, run_cli

A = 0.5  # every linear block is x + A x


class Scale(nn.Module):
  """``a * x`` with a learnable scalar ``a`` (init ``A``): the branch of a linear residual block."""

  @nn.compact
  def __call__(self, x):
    return self.param('a', nn.initializers.constant(A), ()) * x


class LinearResNet(nn.Module):
  """A user model: ``n`` blocks ``x + a x`` (``blocks.ResidualBlock``), then the sum of the units:
  the gradient along a path through ``k`` branches is ``2 (out - y) a^k`` per unit."""

  num_outputs: int = 1
  n: int = 4

  @nn.compact
  def __call__(self, x, train: bool = False):
    for i in range(self.n):
      x = blocks.ResidualBlock(Scale, name=f'block{i}')(x)
    return nn.Dense(1, use_bias=False, kernel_init=nn.initializers.ones, name='head')(x)


class TinyMLP(nn.Module):
  """A user model small enough for a dense Hessian (32 weights), with one residual block."""

  num_outputs: int = 2

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = jnp.tanh(nn.Dense(3, name='stem')(x))
    x = blocks.ResidualBlock(lambda name: nn.Dense(3, use_bias=False, name=name), name='block0')(x)
    return nn.Dense(self.num_outputs, name='logits')(jnp.tanh(x))


def _linear_subject(n=4, num=6, dim=5):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(num, dim)).astype(np.float32)
  y = rng.normal(size=num).astype(np.float32)
  model = LinearResNet(n=n)
  variables = model.init(jax.random.key(0), jnp.asarray(x[:1]))
  return analysis.Subject(model, variables, x, y, loss='mse')


def _resnet8_subject(num=12):
  model = resnet_cifar.ResNetCIFAR(depth=8, width=4, num_outputs=10)
  x = np.random.default_rng(1).random((num, 8, 8, 3), np.float32)
  variables = model.init(jax.random.key(0), jnp.asarray(x[:1]), train=False)
  return analysis.Subject(model, variables, x, np.arange(num) % 10)


# ----------------------------------------------------------------------------------------------
# paths
# ----------------------------------------------------------------------------------------------
def test_path_gradients_of_a_linear_residual_net_are_the_hand_computed_ones():
  s = _linear_subject()
  result = paths.analyze(s, batch_size=4)  # 6 examples in chunks of 4: one padded chunk
  assert result['num_blocks'] == 4 and result['skipped'] == []
  assert result['path_counts'] == [1, 4, 6, 4, 1]
  out = s.images.sum(-1) * (1 + A) ** 4
  residual = np.abs(2 * (out - s.labels))  # d (out - y)^2 / d out, per example
  expected = [np.mean(residual) * A**k * math.sqrt(s.images.shape[1]) for k in range(5)]
  np.testing.assert_allclose(result['gradient_by_length'], expected, rtol=1e-5)
  np.testing.assert_allclose(result['total_gradient_by_length'],
                             [g * c for g, c in zip(expected, [1, 4, 6, 4, 1])], rtol=1e-5)
  # Binomial counts times a^k: lengths 0..2 hold 1 + 2 + 1.5 = 4.5 of 5.0625 (89%).
  assert paths.effective_range(result['total_gradient_by_length'], 0.85) == (0, 2)
  assert paths.effective_range(result['total_gradient_by_length'], 0.95) == (0, 3)


@pytest.mark.parametrize('name, blocks, identity', [
    ('mnist_resmlp', 3, 3), ('mnist_densesum_mlp', 3, 0), ('mnist_rescnn_deep', 19, 19),
    ('resnet20', 9, 7), ('plain20', 9, 0), ('preact_resnet20', 9, 7), ('resnext29_2x8d', 9, 6),
    ('highway_cifar19', 17, 14), ('shortcut_study_projection', 5, 3),
    ('steering_shortcut_study_none', 5, 0)])
def test_the_blocks_of_the_registered_models_are_found(name, blocks, identity):
  """Seed replicas, the zoo and the shortcut-study nets: their block<i> modules, and which of them
  are merge(body(x), x) (one abstract trace each)."""
  from resflax import models
  spec = models.get_spec(name)
  model = models.build(name, num_outputs=10 if spec.task == 'classification' else 1)
  shape = (8, 8, 3) if spec.any_image_size else spec.input_shape
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, *shape)),
                                                train=False))
  s = analysis.Subject(model, variables, np.zeros((1, *shape), np.float32), np.zeros(1, np.int32))
  found = analysis.common.residual_blocks(s)
  assert (len(found), sum(b['identity_shortcut'] for b in found)) == (blocks, identity)


def test_paths_are_deterministic_for_a_seed():
  """Blocks with different scales, so that which paths are drawn shows in the numbers."""
  s = _linear_subject(n=5)
  params = jax.tree.map(lambda a: a, s.variables['params'])
  for i in range(5):
    params[f'block{i}']['body']['a'] = jnp.float32(0.2 * (i + 1))
  s.variables = {'params': params}
  first = paths.analyze(s, batch_size=2, seed=7)
  assert paths.analyze(s, batch_size=2, seed=7) == first
  assert paths.analyze(s, batch_size=2, seed=8) != first


def test_a_model_without_blocks_is_refused_in_one_line():
  x = np.zeros((2, 3), np.float32)

  class NoBlocks(nn.Module):
    num_outputs: int = 2

    @nn.compact
    def __call__(self, x, train=False):
      return nn.Dense(2)(x)

  s = analysis.Subject(NoBlocks(), NoBlocks().init(jax.random.key(0), x), x, np.zeros(2, np.int32))
  with pytest.raises(ConfigError, match='no modules named block') as e:
    paths.analyze(s)
  assert '\n' not in str(e.value)


# ----------------------------------------------------------------------------------------------
# hessian
# ----------------------------------------------------------------------------------------------
def _dense_hessian(s):
  flat, unravel = ravel_pytree(s.variables['params'])
  def loss(v):
    out = s.apply({'params': unravel(v)}, jnp.asarray(s.images))
    return jnp.mean(s.per_example_loss(out, jnp.asarray(s.labels)))
  return np.asarray(jax.hessian(loss)(flat), np.float64)


def test_hessian_matches_a_dense_hessian():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(7, 4)).astype(np.float32)
  model = TinyMLP()
  s = analysis.Subject(model, model.init(jax.random.key(1), x), x, rng.integers(0, 2, 7))
  h = _dense_hessian(s)
  exact = np.sort(np.linalg.eigvalsh(h))[::-1]
  hvp, size = hessian.hvp_fn(s, batch_size=3)  # 7 examples in 3 chunks, the last one padded
  assert size == h.shape[0] == 32
  v = rng.normal(size=size)
  np.testing.assert_allclose(hvp(v), h @ v, rtol=1e-4, atol=1e-5)
  result = hessian.analyze(s, top_k=4, steps=size, runs=2, trace_samples=400, batch_size=3)
  np.testing.assert_allclose(result['top_eigenvalues'], exact[:4], rtol=1e-3, atol=1e-5)
  assert result['top_eigenvalues'] == sorted(result['top_eigenvalues'], reverse=True)
  assert abs(result['trace'] - np.trace(h)) < 4 * result['trace_stderr'] + 1e-4
  d = result['density']
  assert np.trapezoid(d['density'], d['grid']) == pytest.approx(1.0, abs=0.02)
  # Lanczos to an invariant subspace: every quadrature node is an eigenvalue, the weights sum to 1.
  nodes = np.asarray(d['nodes'][0])
  assert np.abs(nodes[:, None] - exact[None]).min(axis=1).max() < 1e-4
  assert sum(d['weights'][0]) == pytest.approx(1.0, abs=1e-6)


# ----------------------------------------------------------------------------------------------
# landscape
# ----------------------------------------------------------------------------------------------
def test_landscape_directions_are_filter_normalised_and_zero_on_vectors():
  s = _resnet8_subject()
  params = s.variables['params']
  d = landscape.filter_normalized_direction(jax.random.key(0), params)
  for (path, p), u in zip(jax.tree_util.tree_flatten_with_path(params)[0], jax.tree.leaves(d)):
    if p.ndim <= 1:  # BatchNorm scales and offsets, biases
      assert not np.any(np.asarray(u)), path
    else:
      np.testing.assert_allclose(np.linalg.norm(np.asarray(u).reshape(-1, p.shape[-1]), axis=0),
                                 np.linalg.norm(np.asarray(p).reshape(-1, p.shape[-1]), axis=0),
                                 rtol=1e-4, atol=1e-6, err_msg=str(path))


def test_landscape_grid_is_centred_on_the_loss_at_the_weights():
  s = _resnet8_subject()
  result = landscape.analyze(s, profile_points=5, grid_points=3, batch_size=5)
  assert result['alphas'] == result['betas'] == [-1.0, 0.0, 1.0]
  assert np.shape(result['loss']) == (3, 3) and len(result['profile_loss']) == 5
  assert result['evaluations'] == 9 + 2  # the profile's alphas -1, 0, 1 are the grid's
  outputs = s.apply(s.variables, jnp.asarray(s.images))
  mean = float(jnp.mean(s.per_example_loss(outputs, jnp.asarray(s.labels))))
  assert result['loss'][1][1] == pytest.approx(mean, rel=1e-5)
  assert result['profile_loss'][2] == pytest.approx(mean, rel=1e-5)
  assert result['loss_at_weights'] == pytest.approx(mean, rel=1e-5)
  assert result['nonconvexity'] is not None


def test_landscape_nonconvexity_is_zero_on_a_bowl_and_positive_on_a_saddle():
  a = b = np.linspace(-1.0, 1.0, 7)
  aa, bb = np.meshgrid(a, b, indexing='ij')
  bowl = landscape.nonconvexity(a, b, aa**2 + 3 * bb**2 + aa * bb)
  assert bowl == {'nonconvexity': 0.0, 'nonconvex_fraction': 0.0}
  saddle = landscape.nonconvexity(a, b, aa**2 - 0.5 * bb**2)
  assert saddle['nonconvexity'] == pytest.approx(0.5) and saddle['nonconvex_fraction'] == 1.0
  holes = aa**2 - 0.5 * bb**2
  holes[3, 3] = np.nan  # a diverged point leaves out the 9 patches that hold it
  assert landscape.nonconvexity(a, b, holes)['nonconvex_fraction'] == 1.0


# ----------------------------------------------------------------------------------------------
# signal
# ----------------------------------------------------------------------------------------------
def test_signal_of_a_linear_residual_net_is_the_hand_computed_one():
  s = _linear_subject(n=3, num=8, dim=6)
  result = signal_propagation.analyze(s, batch_size=5, jacobian_examples=2, top_k=3)
  # Nothing in this net differs between train and eval mode.
  eval_mode = signal_propagation.analyze(s, batch_size=5, jacobian_examples=2, top_k=3, train=False)
  for a, b in zip(result['blocks'], eval_mode['blocks']):
    assert a['channel_variance'] == pytest.approx(b['channel_variance'], rel=1e-6)
  x, n = s.images.astype(np.float64), s.images.shape[0]
  out = x.sum(-1) * (1 + A) ** 3
  for k, block in enumerate(result['blocks']):
    stream = x * (1 + A) ** (k + 1)  # [N, D]
    assert block['mean_squared'] == pytest.approx(np.mean(stream**2), rel=1e-5)
    assert block['channel_squared_mean'] == pytest.approx(np.mean(stream.mean(0)**2), rel=1e-5)
    assert block['channel_variance'] == pytest.approx(np.mean(stream.var(0)), rel=1e-4)
    # d mean loss / d stream_k = 2 (out - y) / N (1 + a)^(n - 1 - k), on every unit.
    grad = 2 * (out - s.labels)[:, None] / n * (1 + A) ** (2 - k) * np.ones((1, 6))
    assert block['gradient_norm'] == pytest.approx(np.linalg.norm(grad), rel=1e-4)
    # The block's Jacobian is (1 + a) I.
    np.testing.assert_allclose(block['jacobian_singular_values'], [1 + A] * 3, rtol=1e-4)
  # The whole net maps x to sum(x) (1 + a)^3: one singular value, sqrt(D) (1 + a)^3.
  for sv in result['network_jacobian_singular_values']:
    assert sv[0] == pytest.approx(math.sqrt(6) * (1 + A) ** 3, rel=1e-4)


def test_every_analysis_writes_json_and_png_for_a_resnet(tmp_path):
  s = _resnet8_subject(num=6)
  small = {'paths': {'batch_size': 4}, 'landscape': {'profile_points': 3, 'grid_points': 3},
           'hessian': {'steps': 4, 'runs': 1, 'trace_samples': 2, 'top_k': 2},
           'signal': {'jacobian_examples': 2, 'iterations': 2}}
  for kind, options in small.items():
    result = analysis.run(kind, s, str(tmp_path), **options)
    saved = json.loads((tmp_path / f'{kind}.json').read_text())
    assert saved['kind'] == kind and saved['figures'] == result['figures']
    for figure in result['figures']:
      assert pathlib.Path(figure).read_bytes()[:4] == b'\x89PNG'
  path = json.loads((tmp_path / 'paths.json').read_text())  # only block2 keeps the shape
  assert path['num_blocks'] == 1 and path['blocks'] == ['block2']
  assert [b['name'] for b in path['skipped']] == ['block3', 'block4']
  assert path['path_counts'] == [1, 1] and all(g > 0 for g in path['gradient_by_length'])
  signal = json.loads((tmp_path / 'signal.json').read_text())
  assert [b['name'] for b in signal['blocks']] == ['block2', 'block3', 'block4']
  assert signal['mode'] == 'train'  # BatchNorm on the batch's statistics, as 2101.08692 plots
  hess = json.loads((tmp_path / 'hessian.json').read_text())
  assert hess['top_eigenvalues'] == sorted(hess['top_eigenvalues'], reverse=True)


# ----------------------------------------------------------------------------------------------
# The CLI
# ----------------------------------------------------------------------------------------------
def test_analyze_refuses_bad_input_in_one_line(tmp_path, capsys):
  assert cli.main(['analyze', 'curvature', '--workdir', str(tmp_path), '--out', str(tmp_path)]) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith("resflax: error: unknown analysis 'curvature'") and '\n' not in err
  assert cli.main(['analyze', 'paths', '--workdir', str(tmp_path), '--out', str(tmp_path)]) == 2
  err = capsys.readouterr().err.strip()
  assert 'is not a resflax run directory' in err and '\n' not in err
  assert not (tmp_path / 'paths.json').exists()


def test_analyze_a_trained_seed_model_from_the_cli(reference_run, tmp_path, capsys):
  """The seed residual MLP (three identity-shortcut blocks) of the session's short run."""
  out = tmp_path / 'out'
  for kind in ('paths', 'signal'):
    assert cli.main(['analyze', kind, '--workdir', str(reference_run), '--out', str(out),
                     '--num_examples', '64']) == 0
  result = json.loads((out / 'paths.json').read_text())
  assert result['num_blocks'] == 3 and result['path_counts'] == [1, 3, 3, 1]
  assert result['source']['step'] == 62 and result['source']['num_examples'] == 64
  assert (out / 'paths.png').exists() and (out / 'signal.png').exists()
  assert len(json.loads((out / 'signal.json').read_text())['blocks']) == 3
  assert capsys.readouterr().out.count('analyze ') == 2


@pytest.mark.slow
def test_every_analysis_from_the_cli_on_a_short_resnet_run(data_dir, tmp_path):
  workdir = tmp_path / 'run'
  run_cli('train', '--config', CONFIGS / 'degradation_mnist5k.py', '--config.model=resnet8',
          '--config.model_kwargs.width=4', '--config.num_train_steps=2', '--config.progress=none',
          f'--config.data_dir={data_dir}', '--workdir', workdir, check=True)
  for kind in analysis.KINDS:
    run_cli('analyze', kind, '--workdir', workdir, '--out', tmp_path / 'out',
            '--num_examples', '50', check=True)
    saved = json.loads((tmp_path / 'out' / f'{kind}.json').read_text())
    assert saved['source']['step'] == 2 and saved['figures']
  run_cli('analyze', 'paths', '--workdir', workdir, '--out', tmp_path / 'init', '--init',
          '--num_examples', '50', check=True)
  init = json.loads((tmp_path / 'init' / 'paths.json').read_text())
  assert init['source']['init'] and init['source']['step'] == 0
  trained = json.loads((tmp_path / 'out' / 'paths.json').read_text())
  assert init['gradient_by_length'] != trained['gradient_by_length']


def test_hessian_of_an_overflowing_net_is_one_clear_error():
  """A Hessian-vector product that is not finite (a diverged net) stops Lanczos with the
  project's error, not numpy's "Eigenvalues did not converge" three steps later."""
  good = lambda v: 2.0 * v
  alphas, _ = hessian.lanczos(good, np.ones(4), steps=3)
  np.testing.assert_allclose(alphas, [2.0])  # 2 I: one step spans its invariant subspace
  with pytest.raises(NonFiniteLossError, match='Hessian-vector product is not finite'):
    hessian.lanczos(lambda v: np.full_like(v, np.nan), np.ones(4), steps=3)


@pytest.mark.slow
def test_skip_lab_study_quick(data_dir, tmp_path):
  """scripts/skip_lab_study.py --quick: tiny nets of the seven families trained, every section
  analysed, one report; a second call resumes (reads the analyses back, trains nothing)."""
  import subprocess
  import sys
  repo = pathlib.Path(__file__).resolve().parents[1]
  out = tmp_path / 'out'
  command = [sys.executable, 'scripts/skip_lab_study.py', '--quick', '--root',
             str(tmp_path / 'runs'), '--out', str(out), '--data_dir', data_dir]
  subprocess.run(command, cwd=repo, check=True, capture_output=True, text=True, timeout=1800)
  results = json.loads((out / 'results.json').read_text())
  sections = results['sections']
  assert not any(results['exit_codes'].values()), results['exit_codes']
  paths = sections['paths']
  assert [r['net'] for r in paths['rows']] == [
      'resnet14_init', 'resnet14_s0', 'resnet14_s1', 'resnet20_s0']
  assert paths['verdict']['verdict'], paths['verdict']
  assert all(r['num_blocks'] > 0 and r['skipped'] for r in paths['rows'])  # 2 strided blocks
  signal = {r['net'] for r in sections['signal']['rows']}
  assert signal == {f'{f}{d}_init' for f in ('plain', 'resnet', 'preact', 'skipinit', 'fixup')
                    for d in (8, 14, 20)}, signal
  assert {r['net'] for r in sections['landscape']['rows']} == {
      'plain8_s0', 'plain14_s0', 'resnet8_s0', 'resnet14_s0'}
  assert all(r['nonconvexity'] is not None for r in sections['landscape']['rows'])
  assert len(sections['hessian']['rows']) == 4  # 4 families at 8 layers
  assert all(math.isfinite(r['top_eigenvalue']) for r in sections['hessian']['rows'])
  assert {(r['family'], r['depth'], r['budget'], r['seeds'])
          for r in sections['norm_free']['rows']} == {
      *((f, 8, '8 steps', 2) for f in ('resnet', 'skipinit', 'fixup')),
      *((f, 20, '8 steps', 1) for f in ('resnet', 'skipinit', 'fixup')),
      *((f, 8, '16 steps', 1) for f in ('resnet', 'skipinit', 'fixup'))}
  readme = (out / 'README.md').read_text()
  assert readme.startswith('# The skip-connection lab') and 'Verdict on seed 002' in readme
  assert (out / 'paths' / 'resnet14_s0' / 'paths.png').exists()
  assert (out / 'signal' / 'fixup20_init' / 'signal.png').exists()
  again = subprocess.run(command, cwd=repo, check=True, capture_output=True, text=True,
                         timeout=600)
  redone = [line for line in again.stdout.splitlines()
            if line.split(' ')[2:3] in (['paths'], ['signal'], ['landscape'], ['hessian'])]
  assert not redone, redone  # every analysis read back from its KIND.json
