"""Experiment configs: the base config, loading a config file, and ``--config.key=value`` overrides.

An experiment file (``experiments/configs/*.py``) defines ``get_config()`` returning an
``ml_collections.ConfigDict``; it starts from ``base_config()`` so one override (say
``--config.batch_size=64``) works across experiments. Overrides keep the type of the existing value:
a wrong type or an unknown key is an error that names the key and the fix.
"""

from __future__ import annotations

import ast
import difflib
import importlib
import importlib.util
import json
import pathlib
import traceback

from etils import epath
import ml_collections

from resflax.errors import ConfigError

# Keys that may change when a run is resumed in the same workdir: they do not change the numbers
# of the steps already taken. The run length may grow too, unless the schedule depends on it.
RESUMABLE_KEYS = frozenset({
    'log_every_steps', 'log_block_metrics', 'checkpoint_every_steps', 'checkpoint_min_interval_s',
    'keep_checkpoints', 'progress', 'data_dir', 'download', 'data_on_device',
    'eval_batch_size', 'distributed', 'coordinator_address', 'num_processes', 'process_id',
    'distributed_timeout_s',
})
LENGTH_KEYS = frozenset({'num_epochs', 'num_train_steps'})
# The optimizer keys of configs saved before optimizer_kwargs existed (read by ``upgrade``).
LEGACY_OPTIMIZER_KEYS = ('amsgrad', 'momentum', 'nesterov')


def base_config() -> ml_collections.ConfigDict:
  """Every key an experiment may set, with its default. Experiments override what they need."""
  c = ml_collections.ConfigDict()
  # A registered preset (``resflax models`` lists them) or an import path package.module:Name of
  # a Linen module class / a function returning one; model_kwargs are passed to it (over the
  # preset's defaults), e.g. --config.model=resnet56 --config.model_kwargs.width=32.
  c.model = ''
  c.model_kwargs = ml_collections.ConfigDict()
  # Modules imported before anything is built, e.g. ('mypkg.models',): user code that registers
  # models (resflax.models.register) or tfds builders. Recorded, so eval/report/load import them too.
  c.imports = ()
  c.dataset = 'mnist'  # a name from resflax.data.DATASETS or any tfds builder ('fashion_mnist')
  c.image_key = ''  # the builder's image feature; '': 'image', or its only Image feature
  c.label_key = ''  # its integer label; '': 'label', or its only ClassLabel (cifar100: coarse_label)
  c.data_dir = ''  # tfds data dir; '' = tfds' default (~/tensorflow_datasets or $TFDS_DATA_DIR)
  c.download = True  # may tfds download a dataset that is not on disk?
  c.validation_split = 0.0  # 0: evaluate on 'test'; f > 0: hold out the last f of train (Keras)
  # Steering data (seed 000; resflax/data/steering.py, donkey_tub.py) and image augmentation.
  c.synthetic_train_size = 2000  # synthetic_steering: scenes in 'train'
  c.synthetic_test_size = 500  # synthetic_steering: scenes in 'test'
  c.synthetic_seed = 0  # synthetic_steering: the scenes drawn (independent of `seed`)
  c.tubs = ''  # donkey_tub: Donkeycar tub folders, comma-separated 'data/tub_1,data/tub_2'
  c.tub_split = 'record'  # donkey_tub: hold out validation_split by 'record' | 'session' (drive)
  c.skip_bad_records = False  # donkey_tub: skip bad records with a warning instead of an error
  c.augment_flip = False  # train: mirror half the images left-right (a regression label negates)
  c.augment_brightness = 0.0  # train, p=1/2: x + U[-b, b] (Donkeycar AUG_BRIGHTNESS_RANGE 0.2)
  c.augment_contrast = 0.0  # train, same draw: x * U[1 - c, 1 + c] (0: off)
  c.roi_crop = (0, 0, 0, 0)  # (top, bottom, left, right) border pixels zeroed: train, eval, export
  c.augment_crop_padding = 0  # train: zero-pad by p pixels, crop a random HxW (CIFAR papers: 4)
  c.normalize = False  # per-channel (x - mean) / std, mean and std of the training split

  c.batch_size = 128  # global batch, over all devices and processes
  c.eval_batch_size = 512  # a multiple of the device count (the last batch is padded)
  c.num_epochs = 10
  c.num_train_steps = -1  # > 0: stop after this many steps instead of num_epochs

  c.loss = 'softmax_cross_entropy'  # | 'keras_binary_crossentropy' (the seeds, exactly) | 'mse'
  # 'keras_adam' (Keras' Adam, the seeds'), any optax optimizer ('adamw', 'sgd', 'lamb', 'lion',
  # 'contrib.muon', ...) or 'module:function'; called with learning_rate= and optimizer_kwargs.
  c.optimizer = 'keras_adam'
  c.optimizer_kwargs = ml_collections.ConfigDict()  # e.g. {'amsgrad': True}, {'momentum': 0.9}
  c.learning_rate = 1e-3
  c.weight_decay = 0.0  # L2 penalty coefficient added to the gradient (as Keras' l2 regulariser)
  # 'constant' | 'cosine' | 'piecewise' (epochs), or an optax schedule ('exponential_decay', ...)
  # with lr_schedule_kwargs (in steps; learning_rate and the run length are passed for it).
  c.lr_schedule = 'constant'
  c.lr_schedule_kwargs = ml_collections.ConfigDict()
  c.lr_boundaries_epochs = ()  # piecewise: epochs at which the rate is multiplied by lr_decay
  c.lr_decay = 0.1
  c.warmup_epochs = 0.0

  # Mixed precision (GPU/TPU): 'bfloat16' computes activations in bf16; parameters, optimizer
  # state, BatchNorm statistics, the model's output and the loss stay float32.
  c.dtype = 'float32'
  # Convolutions on CPU: 'auto' (oneDNN through the XLA FFI where it builds, resflax/ops/onednn.py;
  # XLA elsewhere and on GPU/TPU) | 'xla' | 'onednn'. The same parameters and checkpoints.
  c.conv_impl = 'auto'
  # Keep the train split on the device and build each batch there (resflax/train/feed.py): 'auto'
  # (a split of <= 1 GiB under jit) | 'on' | 'off' (tf.data). The same batches either way.
  c.data_on_device = 'auto'

  c.seed = 0
  c.parallel = 'jit'  # global-view jax.jit over a 1-D ('data',) mesh of all devices | 'pmap'
  # Multi-host (jax.distributed): 'auto' starts it where jax detects a cluster of several
  # processes (mpirun, SLURM, multi-host TPU VMs, Kubernetes Jobs) or when a coordinator_address
  # is given; 'on' always; 'off' never.
  c.distributed = 'auto'
  c.coordinator_address = ''  # host:port of process 0 (or $JAX_COORDINATOR_ADDRESS)
  c.num_processes = 0  # 0: from the environment ($JAX_NUM_PROCESSES) / the cluster
  c.process_id = -1  # -1: from the environment ($JAX_PROCESS_ID) / the cluster
  c.distributed_timeout_s = 120  # give up (with an error) if the coordinator is not reached

  c.log_every_steps = 50
  c.log_block_metrics = False  # gradient flow: per-block grad_norm/ and update_ratio/ in metrics
  c.checkpoint_every_steps = 0  # > 0: also save every this many steps (always saved)
  # Epoch-end saves only when this many seconds passed since the last save (the last step and a
  # preemption always save). An orbax save costs ~0.2 s of CPU, more than an epoch of a small
  # dataset; 0: save at every epoch end.
  c.checkpoint_min_interval_s = 30.0
  c.keep_checkpoints = 3
  c.progress = 'auto'  # 'auto' (a bar on a terminal, lines otherwise) | 'bar' | 'lines' | 'none'
  return c


def seed002_recipe(model: str, dataset: str, *, batch_size: int,
                   validation_split: float) -> ml_collections.ConfigDict:
  """How seed 002 trains each of its models: Adam with AMSGrad at lr 1e-3, 10 epochs, evaluated on
  the test split (``validation_data``, ``validation_split=0``) or the last 20% of train (0.2).

  Loss: the seed compiles ``binary_crossentropy`` on a softmax output, a known mistake (Keras then
  reports binary accuracy, which flatters the model). resflax defaults to softmax cross-entropy;
  ``--config.loss=keras_binary_crossentropy`` reproduces the seed exactly.
  """
  c = base_config()
  c.model = model
  c.dataset = dataset
  c.batch_size = batch_size
  c.num_epochs = 10
  c.validation_split = validation_split
  c.optimizer = 'keras_adam'
  c.optimizer_kwargs = ml_collections.ConfigDict({'amsgrad': True})
  c.learning_rate = 1e-3
  c.loss = 'softmax_cross_entropy'
  return c


def steering_recipe(model: str) -> ml_collections.ConfigDict:
  """Seed 000's models trained as Donkeycar trains its pilots: MSE, Adam at lr 1e-3 (no AMSGrad),
  batch 128, 20 epochs, the last 20% of the records held out; offline synthetic scenes by default."""
  c = base_config()
  c.model = model
  c.dataset = 'synthetic_steering'
  c.batch_size = 128
  c.num_epochs = 20
  c.validation_split = 0.2
  c.optimizer = 'keras_adam'
  c.optimizer_kwargs = ml_collections.ConfigDict({'amsgrad': False})
  c.learning_rate = 1e-3
  c.loss = 'mse'
  return c


def cifar10_paper_recipe(model: str, *, num_epochs: int, lr_boundaries_epochs: tuple[int, ...],
                         weight_decay: float, nesterov: bool, batch_size: int = 128,
                         norm: str | None = None) -> ml_collections.ConfigDict:
  """The CIFAR-10 recipe that the ResNet-era papers share (1512.03385 sec. 4.2 and its followers):
  SGD with momentum 0.9 at lr 0.1, divided by 10 at ``lr_boundaries_epochs``; 4-pixel zero padding
  + random 32x32 crop, horizontal flip, per-channel normalisation; train on all 50k, test on 10k.
  The family configs (experiments/configs/*_cifar.py) differ only in the arguments. ``norm``: the
  models' ``model_kwargs.norm``: ``'batch_unbiased'`` for the recipes whose reference code ran on
  Torch7 / PyTorch / Caffe, whose BatchNorm keeps the unbiased running variance."""
  c = base_config()
  c.model = model
  c.dataset = 'cifar10'
  c.validation_split = 0.0
  c.augment_flip = True  # the papers' random horizontal flip
  c.augment_crop_padding = 4  # 4-pixel zero padding + random 32x32 crop
  c.normalize = True  # per-channel mean/std of the training split
  c.batch_size = batch_size
  c.num_epochs = num_epochs
  c.optimizer = 'sgd'
  c.learning_rate = 0.1
  c.optimizer_kwargs = ml_collections.ConfigDict({'momentum': 0.9, 'nesterov': nesterov})
  c.weight_decay = weight_decay
  c.lr_schedule = 'piecewise'
  c.lr_boundaries_epochs = tuple(lr_boundaries_epochs)
  c.lr_decay = 0.1
  c.loss = 'softmax_cross_entropy'
  if norm is not None:
    c.model_kwargs.norm = norm
  return c


def load(path: str | pathlib.Path) -> ml_collections.ConfigDict:
  """Runs ``get_config()`` of the experiment file at ``path``."""
  path = pathlib.Path(path)
  if not path.is_file():
    here = pathlib.Path('experiments/configs')
    known = ', '.join(sorted(p.name for p in here.glob('*.py'))) if here.is_dir() else ''
    raise ConfigError(
        f'config file {str(path)!r} not found: pass --config path/to/experiment.py'
        + (f' (experiments/configs has {known})' if known else ''))
  spec = importlib.util.spec_from_file_location(f'resflax_config_{path.stem}', path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except Exception as e:  # the file's own error, as path:line: message
    raise ConfigError(_where(path, e)) from None
  if not callable(getattr(module, 'get_config', None)):
    raise ConfigError(f'config file {str(path)!r} has no get_config(): define one that returns an '
                      'ml_collections.ConfigDict')
  try:
    config = module.get_config()
  except Exception as e:
    raise ConfigError(_where(path, e)) from None
  if not isinstance(config, ml_collections.ConfigDict):
    raise ConfigError(f'get_config() in {str(path)!r} must return an ml_collections.ConfigDict')
  if any(k in config for k in LEGACY_OPTIMIZER_KEYS):  # a file written for the old keys
    config = ml_collections.ConfigDict(upgrade(config.to_dict(), fill_defaults=False))
  return config


def upgrade(saved: dict, fill_defaults: bool = True) -> dict:
  """A config (a plain dict, e.g. an old run's ``config.json``) in today's keys, same numbers.

  Configs from before ``optimizer_kwargs`` set ``optimizer='adam'`` (Keras' Adam) + ``amsgrad``,
  or ``'sgd'`` + ``momentum`` / ``nesterov``: they become ``'keras_adam'`` with
  ``{'amsgrad': ...}`` and ``'sgd'`` with ``{'momentum': m, 'nesterov': n}`` (``{}`` for m = 0,
  plain SGD), as the recipes now write them. ``fill_defaults``: keys added since the config was
  saved take ``base_config()``'s values (a new key's default keeps the old behaviour).
  """
  config = dict(saved)
  if any(k in config for k in LEGACY_OPTIMIZER_KEYS):
    amsgrad = bool(config.pop('amsgrad', True))
    momentum = config.pop('momentum', 0.9)
    nesterov = bool(config.pop('nesterov', False))
    if not config.get('optimizer_kwargs'):
      if config.get('optimizer', 'adam') == 'adam':
        config['optimizer'], config['optimizer_kwargs'] = 'keras_adam', {'amsgrad': amsgrad}
      elif config['optimizer'] == 'sgd':
        config['optimizer_kwargs'] = {'momentum': momentum, 'nesterov': nesterov} if momentum else {}
  if fill_defaults:
    config = {**json.loads(to_json(base_config())), **config}
  return config


def _where(path: pathlib.Path, error: BaseException) -> str:
  """``path:line: ErrorType: message`` for an error raised while running a config file: the
  line of that file (the innermost frame in it; a syntax error's own line) that raised it."""
  line = None
  if isinstance(error, SyntaxError) and error.filename and (
      pathlib.Path(error.filename).resolve() == path.resolve()):
    line = error.lineno
  else:
    for frame, lineno in traceback.walk_tb(error.__traceback__):
      if pathlib.Path(frame.f_code.co_filename).resolve() == path.resolve():
        line = lineno
  message = (error.msg if isinstance(error, SyntaxError) else str(error)).splitlines()
  message = message[0] if message else ''
  fix = (': install it, or fix the import' if isinstance(error, ImportError)
         else ': fix the config file')
  return f'{path}:{line or "?"}: {type(error).__name__}: {message}{fix}'


def read_json(path, fix: str) -> dict:
  """A JSON file resflax wrote (``config.json``); one error naming it if it is garbled."""
  try:
    value = json.loads(epath.Path(path).read_bytes().decode('utf-8'))  # local or gs://
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    what = 'not UTF-8 text' if isinstance(e, UnicodeDecodeError) else f'not valid JSON ({e})'
    raise ConfigError(f'{path} is {what}: it is garbled; {fix}') from None
  if not isinstance(value, dict):
    raise ConfigError(f'{path} holds a JSON {type(value).__name__}, not an object: {fix}')
  return value


PROGRESS_MODES = ('auto', 'bar', 'lines', 'none')


def validate(config: ml_collections.ConfigDict) -> None:
  """Refuses values that mean nothing, one line each (keys a config does not have are skipped)."""
  get = config.get
  checks = [
      ('learning_rate', lambda v: v > 0, 'a rate > 0, e.g. 1e-3'),
      ('log_every_steps', lambda v: v >= 1, 'a number of steps >= 1'),
      ('keep_checkpoints', lambda v: v >= 1,
       'at least 1 (the latest checkpoint is never deleted)'),
      ('seed', lambda v: 0 <= v < 2**31, 'an integer in [0, 2**31)'),
      ('progress', lambda v: v in PROGRESS_MODES, f"one of {', '.join(PROGRESS_MODES)}"),
  ]
  for key, ok, fix in checks:
    if key in config and not ok(get(key)):
      raise ConfigError(f'--config.{key}={get(key)!r} means nothing: use {fix}')
  if ('num_epochs' in config and get('num_epochs') <= 0
      and not get('num_train_steps', -1) > 0):
    raise ConfigError(f"--config.num_epochs={get('num_epochs')!r} trains nothing: use "
                      'num_epochs > 0, or --config.num_train_steps > 0')


def _parse(key: str, text: str, current):
  """``text`` as a value of the same type as ``current``."""
  kind = type(current)
  try:
    if isinstance(current, bool):
      lowered = text.strip().lower()
      if lowered not in ('true', 'false', '1', '0'):
        raise ValueError
      return lowered in ('true', '1')
    if isinstance(current, int):
      return int(text)
    if isinstance(current, float):
      return float(text)
    if isinstance(current, str):
      return text
    if isinstance(current, (tuple, list)):
      try:
        value = ast.literal_eval(text if text.strip() else '()')
      except (ValueError, SyntaxError):  # bare words: --config.imports=mypkg.models,other
        value = tuple(part.strip() for part in text.split(',') if part.strip())
        if not all(part.replace('.', '').replace('_', '').isalnum() for part in value):
          raise
      value = tuple(value) if isinstance(value, (tuple, list)) else (value,)
      return kind(value)
    if current is None:  # a new key (of a *_kwargs dict): a Python literal, else the text
      if text.strip().lower() in ('true', 'false'):
        return text.strip().lower() == 'true'
      try:
        return ast.literal_eval(text)
      except (ValueError, SyntaxError):
        return text
    if isinstance(current, ml_collections.ConfigDict):  # a whole dict: "{'b1': 0.95}", '{}'
      value = ast.literal_eval(text)
      if not isinstance(value, dict):
        raise ValueError
      return ml_collections.ConfigDict(value)
  except (ValueError, SyntaxError):
    raise ConfigError(
        f'--config.{key}={text!r}: expected {kind.__name__} like the current value {current!r}'
    ) from None
  raise ConfigError(f'--config.{key}: values of type {kind.__name__} cannot be overridden')


def _all_keys(config: ml_collections.ConfigDict, prefix: str = '') -> list[str]:
  keys = []
  for k, v in config.items():
    keys.append(prefix + k)
    if isinstance(v, ml_collections.ConfigDict):
      keys += _all_keys(v, prefix + k + '.')
  return keys


def override(config: ml_collections.ConfigDict, key: str, text: str) -> None:
  """Sets ``config.<key>`` (dotted path) from the command-line ``text``, keeping its type.

  Under a ``*_kwargs`` dict (``model_kwargs``, ...) any key may be set: those are the keyword
  arguments of the model (or optimizer) the config names, and the value is read as a literal.
  """
  *parents, leaf = key.split('.')
  node = config
  for part in parents:
    node = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
  # Keys inside a `*_kwargs` dict are the user's to add (--config.optimizer_kwargs.b1=0.95).
  is_open = bool(parents) and parents[-1].endswith('_kwargs')
  if not isinstance(node, ml_collections.ConfigDict) or (leaf not in node and not is_open):
    close = difflib.get_close_matches(key, _all_keys(config), n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ''
    raise ConfigError(f'unknown config key --config.{key}{hint}: '
                      f"known keys are {', '.join(sorted(_all_keys(config)))}")
  with node.ignore_type():
    node[leaf] = _parse(key, text, node[leaf] if leaf in node else None)


def split_overrides(rest: list[str]) -> list[tuple[str, str]]:
  """``--config.a.b=v`` or ``--config.a.b v`` -> ``[('a.b', 'v')]``; anything else is an error."""
  overrides, i = [], 0
  while i < len(rest):
    arg = rest[i]
    if not arg.startswith('--config.'):
      raise ConfigError(f'unexpected argument {arg!r}: overrides look like --config.key=value')
    key, sep, value = arg[len('--config.'):].partition('=')
    if not sep:
      if i + 1 >= len(rest) or rest[i + 1].startswith('--'):
        raise ConfigError(f'--config.{key} has no value: write --config.{key}=VALUE')
      value, i = rest[i + 1], i + 1
    overrides.append((key, value))
    i += 1
  return overrides


def from_args(path: str, overrides: list[tuple[str, str]]) -> ml_collections.ConfigDict:
  """Loads ``path`` and applies ``[(key, text), ...]`` in order; returns a locked config."""
  config = load(path)
  for key, text in overrides:
    override(config, key, text)
  validate(config)
  config.lock()
  return config


def to_json(config: ml_collections.ConfigDict) -> str:
  """The config as stable, human-readable JSON (``config.json`` in a workdir)."""
  return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=list)


def from_saved(saved: dict) -> ml_collections.ConfigDict:
  """The config of a run directory from its ``config.json`` contents, in today's keys."""
  return ml_collections.ConfigDict(upgrade(saved))


def differences(saved: dict, current: dict) -> list[str]:
  """``key: saved -> current`` for each key that differs and matters for the numbers.

  Both go through ``upgrade`` first: a run saved with older keys compares in today's.
  """
  saved, current = upgrade(saved), upgrade(current)
  # The run length changes no step taken unless the schedule depends on it (cosine, optax's).
  free = RESUMABLE_KEYS | (LENGTH_KEYS if current.get('lr_schedule') in ('constant', 'piecewise')
                           else set())
  keys = sorted(set(saved) | set(current))
  return [f'{k}: {saved.get(k)!r} -> {current.get(k)!r}' for k in keys
          if k not in free and saved.get(k) != current.get(k)]


def import_modules(config) -> None:
  """Imports ``config.imports`` (user modules that register models or tfds builders)."""
  names = config.get('imports', ()) or ()
  if isinstance(names, str):
    names = tuple(n for n in names.split(',') if n)
  for name in names:
    try:
      importlib.import_module(name)
    except Exception as e:  # ImportError, or whatever the user's module raises on import
      raise ConfigError(f'--config.imports: cannot import {name!r} ({type(e).__name__}: {e}): put '
                        'its package on PYTHONPATH or pip install it') from None
