"""XLA:CPU settings that resflax chooses for a run, and what a run records of them.

jaxlib 0.10's XLA:CPU hands convolutions (forward, input gradient, kernel gradient) to YNNPACK
(``__ynn_fusion`` custom calls in the compiled HLO), where they train the convolutional seed and
zoo models slower than XLA's Eigen kernels (x1.22 geometric mean over 8 models with
``--xla_cpu_experimental_ynn_fusion_type=dot``; README "Performance",
``experiments/results/bench/cpu_backend.md``). ``=dot`` also drops YNNPACK's other fusions
(elementwise, reductions: 132 of 134 in a ResNet-20 step), which the rest of a step needs: with
oneDNN convolutions (``conv_impl='auto'``) the step is faster without it. So resflax removes only
the convolutions from jaxlib's list: ``=-individual_convolution`` (convolutions on Eigen, the
compiled step otherwise jaxlib's own). ``configure()`` adds that flag to ``XLA_FLAGS`` when the
user has not set the flag themselves; it must run before JAX creates its CPU backend (XLA reads
``XLA_FLAGS`` once, then), so ``import resflax`` calls it.

``RESFLAX_XLA_CPU_CONVS=ynnpack`` (or any value of the flag in ``XLA_FLAGS``) keeps jaxlib's own
choice.
"""

from __future__ import annotations

import os
import sys

YNN_FLAG = '--xla_cpu_experimental_ynn_fusion_type'
EIGEN_CONVS = f'{YNN_FLAG}=-individual_convolution'  # convolutions to Eigen, nothing else
ENV_OPT_OUT = 'RESFLAX_XLA_CPU_CONVS'  # 'ynnpack': leave XLA_FLAGS alone

_state = {'added': False}


def _backend_started() -> bool:
  """Has JAX created a backend in this process already (so XLA_FLAGS is read and fixed)?"""
  bridge = sys.modules.get('jax._src.xla_bridge')
  return bool(bridge is not None and getattr(bridge, '_backends', None))


def configure(environ=None) -> bool:
  """Adds ``EIGEN_CONVS`` to ``XLA_FLAGS`` unless the user set ``YNN_FLAG`` (or opted out with
  ``$RESFLAX_XLA_CPU_CONVS=ynnpack``) or JAX's backend already started. True if it added it.

  A no-op on GPU/TPU: the flag only concerns XLA:CPU.
  """
  env = os.environ if environ is None else environ
  flags = env.get('XLA_FLAGS', '')
  if YNN_FLAG in flags or env.get(ENV_OPT_OUT, '').strip().lower() == 'ynnpack':
    return False
  if environ is None and _backend_started():
    return False
  env['XLA_FLAGS'] = f'{flags} {EIGEN_CONVS}'.strip()
  if environ is None:
    _state['added'] = True
  return True


def user_xla_flags() -> str:
  """``XLA_FLAGS`` without what ``configure`` added (what a child process should start from)."""
  flags = os.environ.get('XLA_FLAGS', '')
  if _state['added']:
    flags = ' '.join(t for t in flags.split() if t != EIGEN_CONVS)
  return flags


def xla_cpu_convolutions(flags: str | None = None) -> str:
  """'eigen' or 'ynnpack': where XLA:CPU sends convolutions under these ``XLA_FLAGS``."""
  flags = os.environ.get('XLA_FLAGS', '') if flags is None else flags
  value = None
  for token in flags.split():
    if token.startswith(YNN_FLAG + '='):
      value = token.split('=', 1)[1]
  if value is None:
    return 'ynnpack'
  items = value.split(',')
  if all(i[:1] in '+-' for i in items if i):  # +x / -x edit jaxlib's default list
    return 'eigen' if any(i.startswith('-') and 'conv' in i for i in items) else 'ynnpack'
  return 'ynnpack' if any('conv' in i for i in items) else 'eigen'


def describe(conv_impl: str | None = None) -> dict:
  """What a run records (``model.json``'s ``backend``): the platform, XLA_FLAGS, where XLA:CPU's
  convolutions go, whether resflax set the flag, and the convolution implementation in use."""
  import jax  # pylint: disable=g-import-not-at-top
  platform = jax.default_backend()
  info = {'platform': platform, 'jax': jax.__version__,
          'xla_flags': os.environ.get('XLA_FLAGS', ''),
          'flags_set_by_resflax': _state['added']}
  if platform == 'cpu':
    info['xla_cpu_convolutions'] = xla_cpu_convolutions()
  if conv_impl is not None:
    info['conv_impl'] = conv_impl
  return info
