"""resflax.ops.onednn: oneDNN convolutions through the XLA FFI equal XLA's (values and gradients on
every shape class the models use), route a model's nn.Conv layers without changing its parameters,
and train like XLA's convolutions (close metrics, reproducible, bit-exact resume)."""

import functools
import json

import chex
import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import CONFIGS, load_checkpoint, read_metrics, run_cli, run_in_process
from resflax.errors import ConfigError
from resflax.ops import onednn

needs_onednn = pytest.mark.skipif(not onednn.available(),
                                  reason=f'oneDNN convolutions unavailable: {onednn.load()}')

CASES = [
    # (input NHWC, kernel HWIO, strides, padding, groups): the shape classes of the seed and zoo
    ((4, 28, 28, 1), (3, 3, 1, 32), (1, 1), 'SAME', 1),        # seed CNN stem, 1 input channel
    ((2, 9, 9, 64), (3, 3, 64, 64), (1, 1), 'VALID', 1),      # seed CNN body / last conv
    ((2, 32, 32, 16), (3, 3, 16, 32), (2, 2), ((1, 1), (1, 1)), 1),  # ResNet stage entry
    ((2, 16, 16, 16), (1, 1, 16, 32), (2, 2), 'VALID', 1),    # option-B projection shortcut
    ((2, 8, 8, 48), (1, 1, 48, 24), (1, 1), 'VALID', 1),      # DenseNet-BC bottleneck
    ((2, 30, 40, 3), (5, 5, 3, 24), (2, 2), 'VALID', 1),      # steering nets' 5x5/2 stem
    ((2, 11, 9, 5), (2, 3, 5, 7), (1, 2), ((1, 0), (2, 1)), 1),  # odd kernel, uneven padding
    ((2, 10, 10, 8), (3, 3, 2, 8), (2, 1), 'SAME', 4),        # ResNeXt-style groups
]


def _ref(x, w, strides, padding, groups):
  return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                  feature_group_count=groups, precision=lax.Precision.HIGHEST)


def _close(a, b, rtol=2e-5):
  a, b = np.asarray(a), np.asarray(b)
  np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * float(np.max(np.abs(b))))


@needs_onednn
@pytest.mark.parametrize('x_shape,w_shape,strides,padding,groups', CASES)
def test_values_and_gradients_equal_xla(x_shape, w_shape, strides, padding, groups):
  kx, kw, kg = jax.random.split(jax.random.key(sum(x_shape) + sum(w_shape)), 3)
  x, w = jax.random.normal(kx, x_shape), jax.random.normal(kw, w_shape)
  ref = _ref(x, w, strides, padding, groups)
  ct = jax.random.normal(kg, ref.shape)
  ours = jax.jit(lambda x, w: onednn.conv2d(x, w, strides, padding, groups))(x, w)
  _close(ours, ref)
  grads = lambda f: jax.jit(jax.grad(lambda x, w: jnp.vdot(f(x, w), ct), argnums=(0, 1)))(x, w)
  (dx, dw), (dx_ref, dw_ref) = (grads(lambda x, w: onednn.conv2d(x, w, strides, padding, groups)),
                                grads(lambda x, w: _ref(x, w, strides, padding, groups)))
  _close(dx, dx_ref)
  _close(dw, dw_ref)


@needs_onednn
def test_second_derivatives_and_vmap():
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 4))
  w = jax.random.normal(jax.random.key(1), (3, 3, 4, 5))

  def hessian_ish(conv):  # a gradient of a gradient: every op's vjp is used
    inner = lambda w: jnp.sum(jax.grad(lambda x: jnp.sum(jnp.sin(conv(x, w))))(x) ** 2)
    return jax.grad(inner)(w)

  _close(hessian_ish(onednn.conv2d), hessian_ish(lambda x, w: _ref(x, w, (1, 1), 'SAME', 1)),
         rtol=1e-4)
  batched = jax.vmap(lambda x: onednn.conv2d(x, w))(x[:, None])
  _close(batched, jax.vmap(lambda x: _ref(x, w, (1, 1), 'SAME', 1))(x[:, None]))


class _Net(nn.Module):
  """Plain, strided, grouped, bias-free and dilated (XLA fallback) convolutions."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.relu(nn.Conv(8, (3, 3))(x))
    x = nn.Conv(8, (3, 3), strides=2, padding=1, use_bias=False)(x)
    x = nn.BatchNorm(use_running_average=not train)(x)
    x = nn.Conv(8, (3, 3), feature_group_count=2, padding='VALID')(x)
    x = nn.Conv(4, (3, 3), kernel_dilation=2)(x)  # dilation: stays on XLA
    return nn.Dense(3)(x.mean(axis=(1, 2)))


@needs_onednn
def test_route_keeps_parameters_and_matches_xla():
  model, x = _Net(), jax.random.normal(jax.random.key(0), (4, 12, 12, 3))
  variables = model.init(jax.random.key(1), x)
  routed = onednn.route(model.apply, 'onednn')

  def loss(apply, params):
    out, _ = apply({**variables, 'params': params}, x, train=True, mutable=['batch_stats'])
    return jnp.sum(out ** 2)

  plain = jax.value_and_grad(functools.partial(loss, model.apply))(variables['params'])
  ours_fn = jax.jit(jax.value_and_grad(functools.partial(loss, routed)))
  ours = ours_fn(variables['params'])
  _close(ours[0], plain[0])
  jax.tree.map(lambda a, b: _close(a, b, rtol=1e-4), ours[1], plain[1])
  hlo = ours_fn.lower(variables['params']).compile().as_text()
  assert hlo.count('custom_call_target="resflax_onednn_conv_fwd"') == 3
  assert 'convolution(' in hlo  # the dilated conv (and its gradients) on XLA
  assert onednn.route(model.apply, 'xla') == model.apply


def test_resolve_and_unavailable_fallback(monkeypatch, caplog):
  assert onednn.resolve('xla') == 'xla'
  with pytest.raises(ConfigError, match='conv_impl'):
    onednn.resolve('cudnn')
  monkeypatch.setattr(onednn, '_status', {'reason': 'no oneDNN 3.x in /nowhere'})
  monkeypatch.setattr(onednn, '_told', set())
  with caplog.at_level('INFO', logger='resflax'):
    assert onednn.resolve('auto') == 'xla'
  assert any('no oneDNN 3.x in /nowhere' in r.getMessage() for r in caplog.records)
  with pytest.raises(ConfigError, match='conv_impl=onednn: no oneDNN'):
    onednn.resolve('onednn')


def test_find_onednn_names_what_is_missing(monkeypatch, tmp_path):
  monkeypatch.setenv('RESFLAX_ONEDNN_ROOT', str(tmp_path))
  with pytest.raises(onednn.OnednnUnavailable, match='pip install'):
    onednn.find_onednn()


@needs_onednn
@pytest.mark.slow  # compiles the library into a new cache (~10-20 s)
def test_library_is_built_once_into_the_cache(monkeypatch, tmp_path):
  monkeypatch.setenv('RESFLAX_OPS_CACHE', str(tmp_path))
  path = onednn.build_library()
  assert path.parent == tmp_path and path.name.startswith('onednn_conv-')
  assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left
  mtime = path.stat().st_mtime_ns
  assert onednn.build_library() == path and path.stat().st_mtime_ns == mtime


# Training: a small CNN on mnist_5k, 6 steps, with XLA's and with oneDNN's convolutions.
def _cnn_args(data_dir, workdir, *extra):
  return ('train', '--config', CONFIGS / 'mnist_rescnn_deep.py', '--config.dataset=mnist_5k',
          f'--config.data_dir={data_dir}', '--config.model=mnist_rescnn_shallow',
          '--config.batch_size=32', '--config.log_every_steps=1', '--config.progress=none',
          '--config.checkpoint_every_steps=3', '--workdir', workdir, *extra)


@pytest.fixture(scope='module')
def onednn_run(data_dir, tmp_path_factory):
  workdir = tmp_path_factory.mktemp('onednn')
  run_in_process(*_cnn_args(data_dir, workdir, '--config.num_train_steps=6',
                            '--config.conv_impl=onednn'))
  return workdir


@needs_onednn
def test_training_matches_xla_and_records_the_backend(onednn_run, data_dir, tmp_path):
  run_in_process(*_cnn_args(data_dir, tmp_path, '--config.num_train_steps=6',
                            '--config.conv_impl=xla'))
  ours, xla = read_metrics(onednn_run), read_metrics(tmp_path)
  assert [r['step'] for r in ours] == [r['step'] for r in xla]
  for a, b in zip(ours, xla):
    assert a['loss'] == pytest.approx(b['loss'], rel=1e-3)
  info = json.loads((onednn_run / 'model.json').read_text())['backend']
  assert info['conv_impl'] == 'onednn' and info['platform'] == 'cpu'
  assert json.loads((tmp_path / 'model.json').read_text())['backend']['conv_impl'] == 'xla'


@needs_onednn
@pytest.mark.slow  # two more short runs (~30 s)
def test_onednn_runs_are_reproducible_and_resume_bit_exact(onednn_run, data_dir, tmp_path):
  again = tmp_path / 'again'
  run_cli(*_cnn_args(data_dir, again, '--config.num_train_steps=6', '--config.conv_impl=onednn'),
          check=True)
  assert read_metrics(again) == read_metrics(onednn_run)
  resumed = tmp_path / 'resumed'
  run_cli(*_cnn_args(data_dir, resumed, '--config.num_train_steps=3', '--config.conv_impl=onednn'),
          check=True)
  run_cli(*_cnn_args(data_dir, resumed, '--config.num_train_steps=6', '--config.conv_impl=onednn'),
          check=True)
  train_rows = lambda w: [r for r in read_metrics(w) if r['split'] == 'train']  # (3 ends in an eval)
  assert train_rows(resumed) == train_rows(onednn_run)
  chex.assert_trees_all_equal(load_checkpoint(resumed / 'checkpoints' / '6'),
                              load_checkpoint(onednn_run / 'checkpoints' / '6'))


@needs_onednn
@pytest.mark.slow  # two short runs (~30 s)
def test_persistent_compilation_cache_serves_the_custom_calls(data_dir, tmp_path):
  """A rerun loads its steps (with their oneDNN custom calls) from JAX's persistent cache."""
  env = {'RESFLAX_COMPILATION_CACHE': str(tmp_path / 'cache')}
  args = lambda w: _cnn_args(data_dir, tmp_path / w, '--config.num_train_steps=2',
                             '--config.conv_impl=onednn')
  run_cli(*args('a'), env=env, check=True)
  entries = sorted(p.name for p in (tmp_path / 'cache').iterdir())
  assert entries
  run_cli(*args('b'), env=env, check=True)
  assert sorted(p.name for p in (tmp_path / 'cache').iterdir()) == entries  # all hits
  assert read_metrics(tmp_path / 'a') == read_metrics(tmp_path / 'b')


@needs_onednn
def test_an_analysis_of_a_onednn_run_runs_on_xla_convolutions(onednn_run, tmp_path):
  """The Hessian's H v is forward-over-reverse (``jax.jvp`` of ``jax.grad``), which the oneDNN op
  does not define: the analyses apply the model itself, on XLA's convolutions, whatever
  ``conv_impl`` trained it."""
  run_in_process('analyze', 'hessian', '--workdir', onednn_run, '--out', tmp_path,
                 '--num_examples', '32')
  result = json.loads((tmp_path / 'hessian.json').read_text())
  assert result['top_eigenvalues'] and np.all(np.isfinite(result['top_eigenvalues']))
