"""resflax as a library: models from the user's own files (import paths, presets, model_kwargs,
config.imports), the model contract, ``resflax.load(...).predict`` and ``resflax.train``, and the
example under ``examples/my_block`` run end to end as docs/library.md says."""

import json
import os
import pathlib
import re
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

import resflax
from resflax import config as config_lib
from resflax import models
from resflax.errors import ConfigError, ResflaxError, ShapeMismatchError, UnknownNameError

from conftest import CONFIGS, REPO, main_in_process, run_cli

EXAMPLE = REPO / 'examples' / 'my_block'


def _example_env():
  return {'PYTHONPATH': os.pathsep.join(p for p in (str(EXAMPLE), os.environ.get('PYTHONPATH'))
                                        if p)}


# A user's module, written to a temporary package: the shapes of things researchers write.
USER_MODULE = '''
import flax.linen as nn
import jax.numpy as jnp

from resflax import models


class TinyNet(nn.Module):  # the contract, and nothing more: no dtype, no axis_name
  num_outputs: int = 10
  width: int = 8

  @nn.compact
  def __call__(self, x, *, train: bool):
    x = nn.relu(nn.Dense(self.width)(x.reshape(x.shape[0], -1)))
    return nn.Dense(self.num_outputs)(x)


def make_tiny(num_outputs, width=4):  # a factory returning a module
  return TinyNet(num_outputs=num_outputs, width=width)


def not_a_module(num_outputs):
  return 42


class NoOutputs(nn.Module):
  @nn.compact
  def __call__(self, x, *, train: bool):
    return x


class NoTrain(nn.Module):
  num_outputs: int = 10

  @nn.compact
  def __call__(self, x):
    return nn.Dense(self.num_outputs)(x)


models.register('user_tiny', TinyNet, source='a test', width=6)
'''


@pytest.fixture
def user_package(tmp_path, monkeypatch):
  """``userpkg.nets`` importable from a temporary directory; registrations undone afterwards."""
  package = tmp_path / 'userpkg'
  package.mkdir()
  (package / '__init__.py').write_text('')
  (package / 'nets.py').write_text(USER_MODULE)
  monkeypatch.syspath_prepend(str(tmp_path))
  monkeypatch.setattr(models, 'MODELS', dict(models.MODELS))
  for name in [m for m in sys.modules if m.startswith('userpkg')]:
    monkeypatch.delitem(sys.modules, name)
  yield 'userpkg.nets'
  for name in [m for m in sys.modules if m.startswith('userpkg')]:
    sys.modules.pop(name, None)


def _param_count(module, shape=(28, 28, 1)):
  return models.count_params(module, shape)


def test_an_import_path_builds_the_users_class_or_factory_with_kwargs(user_package):
  net = models.build(f'{user_package}:TinyNet', num_outputs=3, width=5)
  assert type(net).__name__ == 'TinyNet' and net.width == 5 and net.num_outputs == 3
  assert _param_count(net) == 784 * 5 + 5 + 5 * 3 + 3
  made = models.build(f'{user_package}:make_tiny', num_outputs=2)
  assert made.width == 4 and made.num_outputs == 2


def test_a_preset_is_a_factory_plus_defaults_that_model_kwargs_override(user_package):
  config_lib.import_modules({'imports': (user_package,)})
  assert models.build('user_tiny', num_outputs=10).width == 6  # the registered default
  assert models.build('user_tiny', num_outputs=10, width=9).width == 9
  # Built-in presets take keyword arguments the same way.
  assert models.build('mnist_resmlp', num_outputs=10).dropout_rate == 0.5
  assert models.build('mnist_resmlp', num_outputs=10, dropout_rate=0.1).dropout_rate == 0.1
  deep = models.get_spec('mnist_rescnn_deep')
  assert deep.defaults == {'num_blocks': 19, 'body': 'deep'}
  assert models.build('mnist_rescnn_deep', num_outputs=10, num_blocks=3).num_blocks == 3


def test_register_refuses_a_built_in_name():
  with pytest.raises(ConfigError, match="'resnet20' is built into resflax"):
    models.register('resnet20', models.MODELS['mnist_resmlp'].factory)


@pytest.mark.parametrize('path, message', [
    ('no_such_pkg.nets:Net', r"cannot import no_such_pkg.nets \(ModuleNotFoundError.*PYTHONPATH"),
    ('{pkg}:Missing', r"has no 'Missing'; it has .*TinyNet"),
    ('{pkg}:not_a_module', r'built a int, not a flax.linen.Module'),
    ('{pkg}:NoOutputs', r'has no num_outputs field: add `num_outputs: int`'),
    ('{pkg}:NoTrain', r'__call__ takes no `train` argument'),
    ('{pkg}', r'unknown model'),
])
def test_bad_model_names_are_one_line_errors(user_package, path, message):
  with pytest.raises(ResflaxError, match=message) as e:
    models.build(path.format(pkg=user_package), num_outputs=10)
  assert '\n' not in str(e.value)


def test_a_keyword_the_model_does_not_take_is_named_with_the_ones_it_takes(user_package):
  with pytest.raises(ConfigError, match=r"takes no keyword 'widht' \(--config.model_kwargs.widht\)"
                     r": it takes width"):
    models.build(f'{user_package}:TinyNet', num_outputs=10, widht=3)
  with pytest.raises(ConfigError, match="takes no keyword 'depth'.*dropout_rate"):
    models.build('mnist_resmlp', num_outputs=10, depth=3)


def test_a_model_without_dtype_or_axis_name_trains_under_jit_and_is_refused_under_pmap(
    user_package):
  path = f'{user_package}:TinyNet'
  assert models.build(path, num_outputs=10) is not None
  with pytest.raises(ConfigError, match='has no axis_name field.*--config.parallel=jit'):
    models.build(path, num_outputs=10, axis_name='data')
  with pytest.raises(ConfigError, match='has no dtype field.*--config.dtype=float32'):
    models.build(path, num_outputs=10, dtype='bfloat16')


def test_model_kwargs_and_imports_from_the_command_line():
  config = config_lib.load(CONFIGS / 'mnist_resmlp.py')
  config_lib.override(config, 'model_kwargs.dropout_rate', '0.25')
  config_lib.override(config, 'model_kwargs.dense_additive', 'true')
  config_lib.override(config, 'model_kwargs.name_like', 'projection')
  config_lib.override(config, 'imports', 'mypkg.models,other')
  assert config.model_kwargs.to_dict() == {'dropout_rate': 0.25, 'dense_additive': True,
                                           'name_like': 'projection'}
  assert config.imports == ('mypkg.models', 'other')
  with pytest.raises(ConfigError, match='unknown config key --config.model_kwargz.x'):
    config_lib.override(config, 'model_kwargz.x', '1')


def test_a_missing_import_is_one_line():
  with pytest.raises(ConfigError, match=r"--config.imports: cannot import 'no_such_mod'"):
    config_lib.import_modules({'imports': ('no_such_mod',)})


def test_an_old_run_directory_without_the_new_keys_still_matches_its_config():
  current = json.loads(config_lib.to_json(config_lib.load(CONFIGS / 'mnist_resmlp.py')))
  saved = {k: v for k, v in current.items() if k not in ('model_kwargs', 'imports')}
  assert config_lib.differences(saved, current) == []
  changed = {**current, 'model_kwargs': {'dropout_rate': 0.1}}
  assert config_lib.differences(saved, changed) == [
      "model_kwargs: {} -> {'dropout_rate': 0.1}"]


def test_a_user_model_trains_with_resflax_train_and_loads_for_predict(user_package, data_dir,
                                                                      tmp_path):
  config = config_lib.load(CONFIGS / 'mnist_resmlp.py')
  workdir = tmp_path / 'run'
  result = resflax.train(config, workdir, model=f'{user_package}:TinyNet', dataset='mnist_5k',
                         data_dir=data_dir, num_train_steps=3, progress='none')
  assert result['step'] == 3
  saved = json.loads((workdir / 'config.json').read_text())
  assert saved['model'] == 'userpkg.nets:TinyNet' and saved['model_kwargs'] == {}
  run = resflax.load(workdir)
  assert run.step == 3 and run.input_shape == (28, 28, 1) and run.model.width == 8
  images = np.random.default_rng(0).integers(0, 256, (5, 28, 28, 1), np.uint8)
  out = run.predict(images)
  expected = run.model.apply(run.variables, jnp.asarray(images, jnp.float32) / 255., train=False)
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(run.predict(images.astype(np.float32) / 255.), out, atol=1e-6)
  assert run.predict(images, batch_size=2).shape == (5, 10)  # batched, last batch padded
  with pytest.raises(ShapeMismatchError, match=r'predict takes a batch \[N, 28, 28, 1\]'):
    run.predict(images[0])


def test_load_reads_no_dataset(user_package, data_dir, tmp_path, monkeypatch):
  workdir = tmp_path / 'run'
  resflax.train(CONFIGS / 'mnist_resmlp.py', workdir, dataset='mnist_5k', data_dir=data_dir,
                num_train_steps=2, progress='none')
  from resflax import data as data_lib
  from resflax.data import pipeline, sources

  def refuse(*args, **kwargs):
    raise AssertionError('resflax.load touched the dataset')

  monkeypatch.setattr(data_lib, 'build', refuse)
  monkeypatch.setattr(pipeline, 'prepared_builder', refuse)
  monkeypatch.setattr(sources, 'prepared_builder', refuse)
  run = resflax.load(workdir)
  assert run.input_shape == (784,) and run.image_shape == (28, 28, 1)
  assert run.predict(np.zeros((2, 28, 28, 1), np.uint8)).shape == (2, 10)


def test_load_of_a_directory_that_is_not_a_run_is_one_line(tmp_path):
  with pytest.raises(ResflaxError, match='config.json not found'):
    resflax.load(tmp_path)
  (tmp_path / 'config.json').write_bytes(b'\x00\xff binary')
  with pytest.raises(ResflaxError, match='config.json is not UTF-8 text'):
    resflax.load(tmp_path)


def test_resflax_models_lists_presets_with_sources_and_sizes(user_package, capsys):
  result = run_cli('models', 'mnist_resmlp', 'gated_mlp', '--imports', 'my_block',
                   env=_example_env(), check=True)
  assert '| mnist_resmlp | classification | 784 | 235,402 |' in result.stdout
  assert 'seed 002 In[2]' in result.stdout
  assert re.search(r'\| gated_mlp \| classification \| 28x28x1 \| [\d,]+ \| depth=3, width=128 \| '
                   r'2002.05202', result.stdout), result.stdout
  code, _, err = main_in_process(capsys, 'models', 'no_such_model')
  assert code == 2 and "unknown model 'no_such_model'" in err


def test_the_example_block_trains_evaluates_reports_and_predicts(capsys, data_dir, tmp_path,
                                                                 monkeypatch):
  """docs/library.md "Your own model": one file of the user's own plus a config."""
  env, workdir = _example_env(), tmp_path / 'my_block'
  config = EXAMPLE / 'config.py'
  trained = run_cli('train', '--config', config, '--workdir', workdir,
                    f'--config.data_dir={data_dir}', '--config.progress=none', env=env, check=True)
  final = float(re.search(r'^final .*accuracy=([\d.]+)', trained.stdout, re.M).group(1))
  assert final > 0.8  # one epoch of mnist_5k
  # eval, summary, report and predict in this process, with the example on its path as
  # PYTHONPATH puts it for `resflax train` above. (Importing the example registers its preset: on
  # a copy of the registry, undone after the test.)
  monkeypatch.syspath_prepend(str(EXAMPLE))
  monkeypatch.setattr(models, 'MODELS', dict(models.MODELS))
  monkeypatch.delitem(sys.modules, 'my_block', raising=False)
  code, evaluated, err = main_in_process(capsys, 'eval', '--workdir', workdir)
  assert code == 0, err
  accuracy = float(re.search(r'accuracy=([\d.]+)', evaluated).group(1))
  assert accuracy == pytest.approx(final, abs=1e-4)
  code, summary, err = main_in_process(capsys, 'summary', '--config', config,
                                       f'--config.data_dir={data_dir}')
  assert code == 0, err
  assert 'GEGLUBody' in summary and 'trainable_params=' in summary
  code, report, err = main_in_process(capsys, 'report', workdir, '--out', tmp_path / 'report')
  assert code == 0, err
  table = (tmp_path / 'report' / 'report.md').read_text()
  params = int(re.search(r'trainable_params=(\d+)', summary).group(1))
  assert f'| my_block | my_block:GatedMLP | mnist_5k | 0 | {params:,} |' in table, report
  # The same run from Python: predict on the test split agrees with eval's accuracy.
  run = resflax.load(workdir)
  test = tfds.as_numpy(tfds.builder('mnist_5k', data_dir=data_dir).as_dataset(
      'test', batch_size=-1))
  predicted = run.predict(test['image']).argmax(-1)
  assert float(np.mean(predicted == test['label'])) == pytest.approx(accuracy, abs=1e-3)


def test_sweep_takes_model_kwargs_of_a_user_model(user_package, capsys):
  from resflax import sweep
  code = sweep.main(['--config', str(CONFIGS / 'mnist_resmlp.py'), '--root', 'runs/s',
                     '--print-only', '--grid', 'model_kwargs.width=4,8',
                     f'--config.model={user_package}:TinyNet'])
  lines = capsys.readouterr().out.splitlines()
  assert code == 0 and len(lines) == 2
  assert lines[0].endswith('--config.model=userpkg.nets:TinyNet --config.model_kwargs.width=4')
  assert 'runs/s/width-8' in lines[1]


def test_presets_take_the_papers_keywords_without_new_entries():
  """--config.model=resnet56 --config.model_kwargs.depth=110 / width=32 / shortcut=..."""
  shape = (32, 32, 3)
  assert models.count_params(models.build('resnet56', num_outputs=10, depth=110), shape) == 1_727_962
  wide = models.build('resnet56', num_outputs=10, width=32)
  assert wide.width == 32 and models.count_params(wide, shape) > 3 * 853_018
  # ResNet-56 with ResNet-D shortcuts: the projection's parameters, after an average pool.
  resnet_d = models.build('resnet56', num_outputs=10, shortcut='avgpool_projection')
  assert models.count_params(resnet_d, shape) == 855_770  # = resnet56_b
  with pytest.raises(ConfigError, match="no shortcut 'B'"):
    models.count_params(models.build('resnet20', num_outputs=10, shortcut='B'), shape)
