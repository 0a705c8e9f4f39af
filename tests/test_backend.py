"""resflax.backend: XLA:CPU convolutions on Eigen by default, the user's XLA_FLAGS never overridden."""

import functools
import os
import subprocess
import sys

import pytest

from resflax import backend

# Compiles a convolution's gradient after `import resflax` (which must come first, as in a run) and
# prints XLA_FLAGS and whether the compiled HLO hands convolutions to YNNPACK.
PROBE = """
import os, resflax, jax, jax.numpy as jnp
from jax import lax
x, w = jnp.ones((64, 28, 28, 32)), jnp.ones((3, 3, 32, 64))
f = lambda x, w: lax.conv_general_dilated(x, w, (1, 1), 'SAME',
                                          dimension_numbers=('NHWC', 'HWIO', 'NHWC')).sum()
hlo = jax.jit(jax.grad(f, argnums=(0, 1))).lower(x, w).compile().as_text()
a, b = jnp.ones((256, 512)), jnp.ones((512, 512))  # an MLP layer: YNNPACK's other fusions
g = lambda a, b: jnp.sum(jax.nn.relu(a @ b) * 2.0 + 1.0)
mlp = jax.jit(jax.grad(g, argnums=(0, 1))).lower(a, b).compile().as_text().count('__ynn_fusion')
print(mlp, repr(os.environ.get('XLA_FLAGS')), '__ynn_fusion' in hlo)
"""


def _probe(**env):
  return _probe_once(tuple(sorted(env.items())))


@functools.cache  # one process per environment: two tests probe the same ones
def _probe_once(env):
  env = dict(env)
  full = {k: v for k, v in os.environ.items() if k not in ('XLA_FLAGS', backend.ENV_OPT_OUT)}
  out = subprocess.run([sys.executable, '-c', PROBE], env={**full, **env}, capture_output=True,
                       text=True, timeout=300, check=True).stdout.strip().splitlines()[-1]
  mlp, rest = out.split(' ', 1)
  flags, ynn = rest.rsplit(' ', 1)
  return int(mlp), eval(flags), ynn == 'True'  # pylint: disable=eval-used


@pytest.mark.parametrize('env,flags,ynn', [
    ({}, backend.EIGEN_CONVS, False),  # absent: added, convolutions on Eigen
    ({'XLA_FLAGS': '--xla_cpu_experimental_ynn_fusion_type=individual_convolution,dot'},
     '--xla_cpu_experimental_ynn_fusion_type=individual_convolution,dot', True),  # untouched
    ({backend.ENV_OPT_OUT: 'ynnpack'}, None, True),  # opted out: jaxlib's own choice
])
def test_flag_added_only_when_the_user_set_none(env, flags, ynn):
  assert _probe(**env)[1:] == (flags, ynn)


def test_the_flag_moves_only_the_convolutions():
  """The rest of a step keeps jaxlib's YNNPACK fusions (``=dot`` would drop them)."""
  assert _probe()[0] == _probe(**{backend.ENV_OPT_OUT: 'ynnpack'})[0] > 0


def test_configure_keeps_other_flags_and_reads_the_choice():
  env = {'XLA_FLAGS': '--xla_force_host_platform_device_count=2'}
  assert backend.configure(env)
  assert env['XLA_FLAGS'] == f'--xla_force_host_platform_device_count=2 {backend.EIGEN_CONVS}'
  assert not backend.configure(env)  # set once
  assert backend.xla_cpu_convolutions(env['XLA_FLAGS']) == 'eigen'
  assert backend.xla_cpu_convolutions('') == 'ynnpack'
  assert backend.xla_cpu_convolutions(f'{backend.YNN_FLAG}=-individual_convolution') == 'eigen'
  assert backend.xla_cpu_convolutions(f'{backend.YNN_FLAG}=+eltwise') == 'ynnpack'
