"""Create a Cloud TPU VM, install resflax on every host, train, fetch the results, delete the VM.

One gcloud command per step; ``--dry-run`` prints them (one a line, shell-quoted) and runs nothing::

  python scripts/tpu_vm.py all --name my-tpu --zone us-central2-b --project my-proj \\
      --accelerator-type v4-32 --spot --config experiments/configs/cifar10_resmlp.py \\
      --workdir gs://my-bucket/runs/c10 -- --config.data_dir=gs://my-bucket/tensorflow_datasets

Steps (``all`` runs them in this order and stops at the first failure):

- ``create``: ``gcloud compute tpus tpu-vm create`` (``--spot`` for a spot VM);
- ``setup``: puts the project in ``~/resflax`` on every host -- this checkout's files (tracked and
  untracked, not git-ignored) as one tarball, or ``git clone --repo-url`` -- and runs
  ``pip install -e ".[tpu]"`` there;
- ``run``: ``resflax train --config C --workdir W [args after --]`` on every host at once (each host
  runs the same command; the training loop joins them up). Run it again to resume;
- ``fetch``: copies the workdir here, into ``--dest``: from worker 0 for a local workdir, with
  ``gcloud storage cp`` for a ``gs://`` one;
- ``delete``: deletes the VM.

See "Running on a TPU VM" in docs/devices.md.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import posixpath
import re
import shlex
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
STEPS = ('create', 'setup', 'run', 'fetch', 'delete')
REMOTE_DIR = 'resflax'  # the checkout on each host, relative to the home directory
# Runtime image per TPU generation (``gcloud compute tpus tpu-vm versions list`` shows them all).
VERSIONS = {'v5litepod': 'v2-alpha-tpuv5-lite', 'v5p': 'v2-alpha-tpuv5', 'v6e': 'v2-alpha-tpuv6e'}
DEFAULT_VERSION = 'tpu-ubuntu2204-base'  # v2, v3, v4


def is_pod_slice(accelerator_type: str) -> bool:
  """More than one host: every TPU generation has at most 8 chips / cores per single-host type."""
  return int(accelerator_type.rsplit('-', 1)[1]) > 8


def tpu_vm(verb: str, *args: str, a: argparse.Namespace) -> list[str]:
  return ['gcloud', 'compute', 'tpus', 'tpu-vm', verb, *args, f'--zone={a.zone}', f'--project={a.project}']


def on_hosts(a: argparse.Namespace, command: str, worker: str = 'all') -> list[str]:
  return tpu_vm('ssh', a.name, f'--worker={worker}', '--command', command, a=a)


def tarball(a: argparse.Namespace) -> str:
  return os.path.join(tempfile.gettempdir(), f'resflax-{a.name}.tar.gz')


def setup_commands(a: argparse.Namespace) -> list[list[str] | str]:
  """The project into ~/resflax on every host, then ``pip install -e ".[tpu]"`` there."""
  install = f'cd ~/{REMOTE_DIR} && python3 -m pip install -e ".[tpu]"'
  if a.repo_url:
    clone = (f'(test -d ~/{REMOTE_DIR}/.git || git clone {shlex.quote(a.repo_url)} ~/{REMOTE_DIR}) && '
             f'git -C ~/{REMOTE_DIR} pull --ff-only')
    return [on_hosts(a, f'{clone} && {install}')]
  repo, archive = shlex.quote(str(REPO)), shlex.quote(tarball(a))
  pack = (f'git -C {repo} ls-files -z --cached --others --exclude-standard | '
          f'tar -C {repo} --null -T - -czf {archive}')  # a shell pipeline, run here
  unpack = f'mkdir -p ~/{REMOTE_DIR} && tar -xzf ~/resflax.tar.gz -C ~/{REMOTE_DIR}'
  return [pack,
          tpu_vm('scp', tarball(a), f'{a.name}:resflax.tar.gz', '--worker=all', a=a),
          on_hosts(a, f'{unpack} && {install}')]


def commands(step: str, a: argparse.Namespace) -> list[list[str] | str]:
  """The commands of one step: an argv list each, or a string for a local shell pipeline."""
  if step == 'create':
    version = a.version or VERSIONS.get(a.accelerator_type.split('-')[0], DEFAULT_VERSION)
    return [tpu_vm('create', a.name, f'--accelerator-type={a.accelerator_type}',
                   f'--version={version}', *(['--spot'] if a.spot else []), a=a)]
  if step == 'setup':
    return setup_commands(a)
  if step == 'run':
    train = ['python3', '-m', 'resflax.cli', 'train', '--config', a.config, '--workdir', a.workdir, *a.extra]
    return [on_hosts(a, f'cd ~/{REMOTE_DIR} && {shlex.join(train)}')]
  if step == 'fetch':
    workdir = a.workdir.rstrip('/')
    if workdir.startswith('gs://'):
      return [['gcloud', 'storage', 'cp', '--recursive', workdir, a.dest, f'--project={a.project}']]
    remote = workdir if posixpath.isabs(workdir) else posixpath.join(REMOTE_DIR, workdir)
    return [tpu_vm('scp', '--recurse', f'{a.name}:{remote}', a.dest, '--worker=0', a=a)]
  return [tpu_vm('delete', a.name, '--quiet', a=a)]  # delete


def parse(argv: list[str]) -> argparse.Namespace:
  extra = argv[argv.index('--') + 1:] if '--' in argv else []
  argv = argv[:argv.index('--')] if '--' in argv else argv
  if '--dry-run' in extra:  # `resflax train` has no --dry-run: never run gcloud for a misplaced one
    extra = [x for x in extra if x != '--dry-run']
    argv = [*argv, '--dry-run']
  p = argparse.ArgumentParser(
      prog='tpu_vm.py', description=__doc__.split('\n\n')[0],
      formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog='arguments after -- go to `resflax train` unchanged, e.g. -- --config.batch_size=256')
  p.add_argument('step', choices=(*STEPS, 'all'))
  p.add_argument('--name', required=True, help='TPU VM name (lower case letters, digits, -)')
  p.add_argument('--zone', required=True, help='e.g. us-central2-b (v4), us-west4-a (v5e)')
  p.add_argument('--project', required=True, help='Google Cloud project id')
  p.add_argument('--dry-run', action='store_true', help='print the commands, run nothing')
  g = p.add_argument_group('create')
  g.add_argument('--accelerator-type', help='e.g. v4-8 (one host), v4-32 (a 4-host pod slice)')
  g.add_argument('--version', help='TPU runtime image (default: by accelerator type, '
                 f'{DEFAULT_VERSION} for v2-v4)')
  g.add_argument('--spot', action='store_true', help='a spot VM: cheaper, can be preempted any time')
  g = p.add_argument_group('setup')
  g.add_argument('--repo-url', help='git clone this on every host (default: copy this checkout)')
  g = p.add_argument_group('run / fetch')
  g.add_argument('--config', help='experiment config, relative to the repository root')
  g.add_argument('--workdir', help='run directory; gs://BUCKET/runs/NAME (needed on pod slices)')
  g.add_argument('--dest', default='runs', help='local directory fetch copies the workdir into')
  a = p.parse_args(argv)
  a.extra = extra
  steps = STEPS if a.step == 'all' else (a.step,)
  if not re.fullmatch(r'[a-z]([-a-z0-9]{0,61}[a-z0-9])?', a.name):
    p.error(f'--name {a.name!r}: use lower case letters, digits and -, starting with a letter')
  if 'create' in steps and not a.accelerator_type:
    p.error('create needs --accelerator-type (e.g. v4-8)')
  if a.accelerator_type and not re.fullmatch(r'v\d+[a-z]*-\d+', a.accelerator_type):
    p.error(f'--accelerator-type {a.accelerator_type!r}: expected a type like v4-8, v4-32, v5litepod-8')
  for step, flag in (('run', 'config'), ('run', 'workdir'), ('fetch', 'workdir')):
    if step in steps and not getattr(a, flag):
      p.error(f'{step} needs --{flag}')
  if 'setup' in steps and not a.repo_url and not (REPO / '.git').exists():
    p.error(f'{REPO} is not a git checkout, so setup cannot tell its files from build outputs: '
            'use --repo-url')
  if extra and 'run' not in steps:
    p.error(f'arguments after -- are for run; {a.step} takes none')
  local = a.workdir and not a.workdir.startswith('gs://')
  if 'run' in steps and local and a.accelerator_type and is_pod_slice(a.accelerator_type):
    p.error(f'{a.accelerator_type} is a pod slice: --workdir must be on GCS (gs://...), one '
            'directory that every host writes its part of each checkpoint to')
  if a.step == 'all' and a.spot and local:
    print('tpu_vm.py: warning: a spot VM with a local --workdir loses its checkpoints when it is '
          'preempted; use gs://... to resume', file=sys.stderr)
  return a


def main(argv: list[str] | None = None) -> int:
  a = parse(sys.argv[1:] if argv is None else argv)
  for step in STEPS if a.step == 'all' else (a.step,):
    for cmd in commands(step, a):
      line = cmd if isinstance(cmd, str) else shlex.join(cmd)
      if a.dry_run:
        print(line)
        continue
      print(f'+ {line}', file=sys.stderr, flush=True)
      if step == 'fetch':
        os.makedirs(a.dest, exist_ok=True)
      code = subprocess.run(cmd, shell=isinstance(cmd, str), check=False).returncode
      if code:
        print(f'tpu_vm.py: {step} failed (exit {code})', file=sys.stderr)
        if a.step == 'all' and step != 'create':
          print(f'tpu_vm.py: the VM still exists; delete it with: {shlex.join(commands("delete", a)[0])}',
                file=sys.stderr)
        return code
  return 0


if __name__ == '__main__':
  sys.exit(main())
