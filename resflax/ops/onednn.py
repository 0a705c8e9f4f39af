"""oneDNN 2-D convolutions for XLA:CPU through the XLA FFI, and ``conv_impl``: which models use them.

XLA:CPU's convolutions are x1.6 (geometric mean) slower than oneDNN's in whole train steps here (README
"Performance").
``conv2d`` calls oneDNN (the library PyTorch and TensorFlow use on CPU) through three XLA FFI
custom calls, forward, input gradient and kernel gradient (``onednn_conv.cc``), under a
``jax.custom_vjp`` whose backward pass is again made of them, so ``jax.jit``, ``jax.grad`` (of any
order) and ``jax.vmap`` (one call per example) work; forward mode (``jax.jvp``) does not: use
``conv_impl='xla'`` for it. Float32, NHWC x HWIO, strides, non-negative padding, feature groups;
values equal ``lax.conv_general_dilated``'s to float32 rounding (``tests/test_onednn.py``).

The C++ source ships with the package and is compiled on first use (``g++ -O2``, ~5-10 s) into
``~/.cache/resflax/ops`` (``$RESFLAX_OPS_CACHE``), keyed by the source, jax and oneDNN, and renamed
into place whole, so processes never see half a library. oneDNN 3.x comes from the PyPI wheels
``onednn-cpu-gomp`` + ``onednn-devel-cpu-gomp`` (installed with resflax on x86-64 Linux), or from
``$RESFLAX_ONEDNN_ROOT`` (a prefix with ``include/`` and ``lib/``). Without them, a compiler, or on
another platform, resflax uses XLA's convolutions and says why in one line.

``conv_impl`` (``--config.conv_impl``): 'xla'; 'onednn'; 'auto' (oneDNN on a single-device CPU
run where it builds, XLA elsewhere). Models are not edited: ``route(apply_fn, impl)`` returns the
model's apply function under a flax method interceptor that computes each ``nn.Conv`` with
``conv2d`` on the module's own ``kernel`` and ``bias`` (so parameters and checkpoints are the
same), and leaves to XLA what ``conv2d`` does not do (dilation, 1-D / 3-D, another dtype, masks).

oneDNN runs on its OpenMP threads (``OMP_NUM_THREADS``, default: every core) while the XLA thread
that called it waits; the calls are serialised, so the two pools do not oversubscribe the cores
during a convolution. ``OMP_WAIT_POLICY`` is set to PASSIVE (unless set) so that OpenMP's threads
sleep, instead of spinning, while XLA computes the rest of the step.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import pathlib
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from resflax.errors import ConfigError
from resflax.ops.conv import explicit_padding

SOURCE = pathlib.Path(__file__).with_name('onednn_conv.cc')
IMPLS = ('auto', 'xla', 'onednn')
_TARGETS = {'fwd': 'ResflaxOnednnConvFwd', 'bwd_data': 'ResflaxOnednnConvBwdData',
            'bwd_weights': 'ResflaxOnednnConvBwdWeights'}
_PREFIX = 'resflax_onednn_conv_'  # + 'fwd' | 'bwd_data' | 'bwd_weights': the FFI target names


class OnednnUnavailable(Exception):
  """oneDNN convolutions cannot be built or loaded here; the message says why."""


# ----------------------------------------------------------------------------------------------
# Finding oneDNN and building the library.
# ----------------------------------------------------------------------------------------------
def _prefixes() -> list[pathlib.Path]:
  env = os.environ.get('RESFLAX_ONEDNN_ROOT')
  if env:
    return [pathlib.Path(env)]
  seen, out = set(), []
  for p in (sys.prefix, sysconfig.get_paths().get('data'), sys.base_prefix, '/usr/local', '/usr'):
    if p and p not in seen:
      seen.add(p)
      out.append(pathlib.Path(p))
  return out


def find_onednn() -> tuple[pathlib.Path, pathlib.Path, str]:
  """``(include dir, lib dir, version)`` of a oneDNN 3.x install; raises OnednnUnavailable."""
  found_old = None
  for prefix in _prefixes():
    header = prefix / 'include' / 'oneapi' / 'dnnl' / 'dnnl_version.h'
    libs = [prefix / sub / name for sub in ('lib', 'lib64', 'lib/x86_64-linux-gnu')
            for name in ('libdnnl.so', 'libdnnl.so.3')]
    lib = next((l for l in libs if l.exists()), None)
    if not header.exists() or lib is None:
      continue
    text = header.read_text()
    version = '.'.join(re.search(rf'#define DNNL_VERSION_{part}\s+(\d+)', text).group(1)
                       for part in ('MAJOR', 'MINOR', 'PATCH'))
    if int(version.split('.')[0]) < 3:
      found_old = f'{version} in {prefix}'
      continue
    return header.parents[2], lib.parent, version
  where = ', '.join(map(str, _prefixes()))
  raise OnednnUnavailable(
      (f'oneDNN {found_old} is older than 3.0' if found_old else f'no oneDNN 3.x in {where}')
      + " (pip install 'onednn-cpu-gomp==2023.2.0' 'onednn-devel-cpu-gomp==2023.2.0', or set "
      '$RESFLAX_ONEDNN_ROOT)')


def cache_dir() -> pathlib.Path:
  return pathlib.Path(os.path.expanduser(
      os.environ.get('RESFLAX_OPS_CACHE', os.path.join('~', '.cache', 'resflax', 'ops'))))


def build_library() -> pathlib.Path:
  """The compiled handler library (built on first use); raises OnednnUnavailable."""
  if sys.platform != 'linux':
    raise OnednnUnavailable(f'oneDNN convolutions are built for Linux only, not {sys.platform}')
  include, libdir, version = find_onednn()
  cxx = os.environ.get('CXX') or shutil.which('g++') or shutil.which('c++')
  if not cxx:
    raise OnednnUnavailable('no C++ compiler (g++) found; install one or set $CXX')
  source = SOURCE.read_bytes()
  key = hashlib.sha256(b'\0'.join([source, jax.__version__.encode(), version.encode(),
                                   str(libdir).encode(), cxx.encode()])).hexdigest()[:16]
  out = cache_dir() / f'onednn_conv-{key}.so'
  if out.exists():
    return out
  try:
    out.parent.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise OnednnUnavailable(f'cannot create {out.parent} ({e.strerror}); set $RESFLAX_OPS_CACHE')
  fd, tmp = tempfile.mkstemp(prefix=out.name + '.', suffix='.tmp', dir=out.parent)
  os.close(fd)
  cmd = [cxx, '-O2', '-shared', '-fPIC', '-std=c++17', '-w', f'-I{jax.ffi.include_dir()}',
         f'-I{include}', str(SOURCE), f'-L{libdir}', '-ldnnl', f'-Wl,-rpath,{libdir}', '-o', tmp]
  try:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
      lines = [l for l in proc.stderr.splitlines() if 'error' in l] or proc.stderr.splitlines()
      raise OnednnUnavailable(f'compiling {SOURCE.name} failed: {" | ".join(lines[:2])[:300]}')
    os.replace(tmp, out)  # atomic: another process sees no library or a whole one
  except (OSError, subprocess.SubprocessError) as e:
    raise OnednnUnavailable(f'compiling {SOURCE.name} failed: {e}') from None
  finally:
    if os.path.exists(tmp):
      os.unlink(tmp)
  return out


_status: dict = {}


def load() -> str | None:
  """Builds, loads and registers the FFI targets once per process. None if that worked, else the
  reason (one line)."""
  if 'reason' in _status:
    return _status['reason']
  reason = None
  try:
    os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')  # before libgomp starts (see docstring)
    lib = ctypes.cdll.LoadLibrary(str(build_library()))
    for kind, symbol in _TARGETS.items():
      jax.ffi.register_ffi_target(_PREFIX + kind, jax.ffi.pycapsule(getattr(lib, symbol)),
                                  platform='cpu')
  except OnednnUnavailable as e:
    reason = str(e)
  except OSError as e:
    reason = f'loading the oneDNN convolution library failed: {e}'
  _status['reason'] = reason
  return reason


def available() -> bool:
  return load() is None


# ----------------------------------------------------------------------------------------------
# The op.
# ----------------------------------------------------------------------------------------------
def _out_hw(x_shape, k_shape, strides, pads):
  return tuple((x_shape[1 + i] + pads[i][0] + pads[i][1] - k_shape[i]) // strides[i] + 1
               for i in range(2))


def _call(kind, out_shape, a, b, strides, pads, groups):
  return jax.ffi.ffi_call(_PREFIX + kind, jax.ShapeDtypeStruct(out_shape, jnp.float32),
                          vmap_method='sequential')(
      a, b, strides=np.asarray(strides, np.int64),
      padding=np.asarray([p for pair in pads for p in pair], np.int64), groups=np.int64(groups))


# Three bilinear ops, each differentiated by the others: with <dy, F(x, w)> = <D(dy, w), x>
# = <W(x, dy), w>, F's vjp is (D(g, w), W(x, g)), D's is (F(c, w), W(c, dy)) and W's (D(dy, c),
# F(x, c)). Static arguments: shapes, strides, pads, groups.
@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _fwd(x, w, strides, pads, groups):
  ho, wo = _out_hw(x.shape, w.shape, strides, pads)
  return _call('fwd', (x.shape[0], ho, wo, w.shape[3]), x, w, strides, pads, groups)


def _fwd_fwd(x, w, strides, pads, groups):
  return _fwd(x, w, strides, pads, groups), (x, w)


def _fwd_bwd(strides, pads, groups, res, g):
  x, w = res
  return (_bwd_data(g, w, x.shape, strides, pads, groups),
          _bwd_weights(x, g, w.shape, strides, pads, groups))


_fwd.defvjp(_fwd_fwd, _fwd_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _bwd_data(dy, w, x_shape, strides, pads, groups):
  return _call('bwd_data', x_shape, dy, w, strides, pads, groups)


def _bwd_data_fwd(dy, w, x_shape, strides, pads, groups):
  return _bwd_data(dy, w, x_shape, strides, pads, groups), (dy, w)


def _bwd_data_bwd(x_shape, strides, pads, groups, res, c):
  dy, w = res
  return _fwd(c, w, strides, pads, groups), _bwd_weights(c, dy, w.shape, strides, pads, groups)


_bwd_data.defvjp(_bwd_data_fwd, _bwd_data_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _bwd_weights(x, dy, w_shape, strides, pads, groups):
  return _call('bwd_weights', w_shape, x, dy, strides, pads, groups)


def _bwd_weights_fwd(x, dy, w_shape, strides, pads, groups):
  return _bwd_weights(x, dy, w_shape, strides, pads, groups), (x, dy)


def _bwd_weights_bwd(w_shape, strides, pads, groups, res, c):
  x, dy = res
  return _bwd_data(dy, c, x.shape, strides, pads, groups), _fwd(x, c, strides, pads, groups)


_bwd_weights.defvjp(_bwd_weights_fwd, _bwd_weights_bwd)


def supports(x_shape, x_dtype, kernel_shape, kernel_dtype, strides, pads, groups=1) -> bool:
  """Whether ``conv2d`` computes this convolution (else use ``lax.conv_general_dilated``)."""
  return (len(x_shape) == 4 and len(kernel_shape) == 4 and x_dtype == jnp.float32
          and kernel_dtype == jnp.float32 and groups >= 1 and x_shape[3] % groups == 0
          and kernel_shape[3] % groups == 0 and kernel_shape[2] * groups == x_shape[3]
          and all(s >= 1 for s in strides) and all(p >= 0 for pair in pads for p in pair)
          and all(d > 0 for d in _out_hw(x_shape, kernel_shape, strides, pads)) and x_shape[0] > 0)


def conv2d(x: jax.Array, kernel: jax.Array, strides=(1, 1), padding='SAME',
           feature_group_count: int = 1) -> jax.Array:
  """``lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=('NHWC', 'HWIO',
  'NHWC'), feature_group_count=...)`` computed by oneDNN. ``padding``: 'SAME', 'VALID', an int or
  ``((top, bottom), (left, right))``. Raises OnednnUnavailable if oneDNN cannot be loaded."""
  reason = load()
  if reason:
    raise OnednnUnavailable(reason)
  strides = (strides, strides) if isinstance(strides, int) else tuple(int(s) for s in strides)
  pads = tuple((int(lo), int(hi)) for lo, hi in
               explicit_padding(padding, x.shape[1:3], kernel.shape[:2], strides))
  if not supports(x.shape, x.dtype, kernel.shape, kernel.dtype, strides, pads,
                  feature_group_count):
    raise ValueError(f'oneDNN conv2d does not support x {x.shape} {x.dtype}, kernel '
                     f'{kernel.shape} {kernel.dtype}, strides {strides}, padding {pads}, '
                     f'groups {feature_group_count}')
  return _fwd(x, kernel, strides, pads, int(feature_group_count))


# ----------------------------------------------------------------------------------------------
# conv_impl: routing a model's nn.Conv layers.
# ----------------------------------------------------------------------------------------------
_told: set = set()
_log = logging.getLogger(__name__)


def _info(message: str) -> None:
  if message not in _told:
    _told.add(message)
    _log.info('%s', message)


def resolve(conv_impl: str) -> str:
  """'xla' or 'onednn' for ``--config.conv_impl`` on this machine.

  'auto' is oneDNN on a CPU run with one device where it builds (x1.6 geometric mean in train steps over
  jaxlib's default on the convolutional seed and zoo models, README "Performance"), XLA elsewhere
  (GPU/TPU, and several CPU devices, where a custom call would gather the sharded batch).
  'onednn' raises a ConfigError where it cannot be built.
  """
  if conv_impl not in IMPLS:
    raise ConfigError(f"unknown --config.conv_impl={conv_impl!r}: use one of {', '.join(IMPLS)}")
  if conv_impl == 'xla':
    return 'xla'
  if jax.default_backend() != 'cpu':
    if conv_impl == 'onednn':
      raise ConfigError(f'--config.conv_impl=onednn runs on CPU only, not on '
                        f'{jax.default_backend()}: use --config.conv_impl=auto')
    return 'xla'
  if conv_impl == 'auto' and (jax.device_count() > 1):
    return 'xla'
  reason = load()
  if reason is None:
    return 'onednn'
  if conv_impl == 'onednn':
    raise ConfigError(f'--config.conv_impl=onednn: {reason}; or use --config.conv_impl=auto')
  _info(f"XLA's convolutions: {reason}")
  return 'xla'


def _plan(module: nn.Conv, x):
  """``(strides, pads, groups)`` if ``conv2d`` can compute this ``nn.Conv`` call, else None."""
  if type(module) is not nn.Conv or not hasattr(x, 'shape') or x.ndim != 4:  # pylint: disable=unidiomatic-typecheck
    return None
  ks = module.kernel_size
  if isinstance(ks, int) or len(ks) != 2 or module.mask is not None or not module.shared_weights:
    return None
  if module.conv_general_dilated is not None or module.conv_general_dilated_cls is not None:
    return None
  two = lambda v: (1, 1) if v is None else ((v, v) if isinstance(v, int) else tuple(v))
  if two(module.input_dilation) != (1, 1) or two(module.kernel_dilation) != (1, 1):
    return None
  if (module.dtype not in (None, jnp.float32) or module.param_dtype != jnp.float32
      or x.dtype != jnp.float32):
    return None
  if not module.has_variable('params', 'kernel'):  # init: let nn.Conv create the parameters
    return None
  padding = module.padding
  if isinstance(padding, str) and padding.upper() not in ('SAME', 'VALID'):
    return None
  strides = two(module.strides)
  try:
    pads = tuple((int(lo), int(hi)) for lo, hi in
                 explicit_padding(nn.linear.canonicalize_padding(padding, 2), x.shape[1:3], ks,
                                  strides))
  except (ValueError, TypeError):
    return None
  kernel = module.get_variable('params', 'kernel')
  groups = module.feature_group_count
  if kernel.shape != (*ks, x.shape[3] // groups, module.features):
    return None
  if not supports(x.shape, x.dtype, kernel.shape, kernel.dtype, strides, pads, groups):
    return None
  return strides, pads, groups


def _intercept(next_fun, args, kwargs, context):
  if context.method_name != '__call__' or kwargs or len(args) != 1:
    return next_fun(*args, **kwargs)
  module, x = context.module, args[0]
  plan = _plan(module, x)
  if plan is None:
    return next_fun(*args, **kwargs)
  strides, pads, groups = plan
  y = _fwd(x, module.get_variable('params', 'kernel'), strides, pads, groups)
  if module.use_bias:
    y = y + module.get_variable('params', 'bias')
  return y


def route(apply_fn, conv_impl: str):
  """``apply_fn`` (a Linen ``model.apply``) with its ``nn.Conv`` layers computed by ``conv2d``
  when ``conv_impl`` is 'onednn' (as ``resolve`` returns it); ``apply_fn`` itself for 'xla'."""
  if conv_impl == 'xla':
    return apply_fn
  if conv_impl != 'onednn':
    raise ValueError(f"route takes a resolved conv_impl, 'xla' or 'onednn', not {conv_impl!r}")
  reason = load()
  if reason:
    raise OnednnUnavailable(reason)
  return _Routed(apply_fn)


class _Routed:
  """A picklable, hashable wrapper (a TrainState's static ``apply_fn``)."""

  def __init__(self, apply_fn):
    self.apply_fn = apply_fn
    functools.update_wrapper(self, apply_fn, updated=())

  def __call__(self, *args, **kwargs):
    with nn.intercept_methods(_intercept):
      return self.apply_fn(*args, **kwargs)

  def __eq__(self, other):
    return isinstance(other, _Routed) and other.apply_fn == self.apply_fn

  def __hash__(self):
    return hash((_Routed, self.apply_fn))
