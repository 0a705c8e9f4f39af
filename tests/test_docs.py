"""The documentation is run: every command in README.md and docs/*.md, every link and path.

Each fenced ```bash or ```python block sits right under one marker line that says how it is tested
(other fenced blocks are ```text and are not run):

  <!-- test: run -->                    run in the default suite (offline, seconds)
  <!-- test: slow -->                   run by ``pytest -m slow`` (offline, longer)
  <!-- test: skip (REASON): why -->     never run; REASON is one of ``SKIP_REASONS``
  <!-- test: excerpt of PATH -->        a python block abridged from PATH (``...`` marks cuts):
                                        its other lines are lines of PATH, in the same order

``run`` and ``slow`` take options after ``;``, the only changes the test makes to a block:

  train-args: ARGS   appended to each ``resflax train`` command of a bash block, to keep it short
                     (``--config.num_train_steps=2``); the block must have one
  env: NAME=VALUE    an environment variable for the block (``env: PYTHONPATH=examples/my_block``)

How a page's blocks run: in the order of the page, in one fresh directory per page (so a block can
use the run a previous block trained), which holds links to this checkout's ``experiments/configs``,
``examples`` and ``scripts`` and an empty ``experiments/results``. ``resflax`` and ``python`` are
this checkout's (shims first on ``PATH``), ``TFDS_DATA_DIR`` holds the offline mnist_5k, and a bash
block runs under ``set -euo pipefail``. A page's default test runs its ``run`` blocks; its slow test
runs its ``run`` and ``slow`` blocks, in a directory of its own.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PAGES = [REPO / 'README.md', *sorted((REPO / 'docs').glob('*.md'))]
LANGUAGES = ('bash', 'python', 'text')
SKIP_REASONS = {
    'install': 'installs packages (needs the package index)',
    'pytest': 'the test suite itself',
    'server': 'starts a server that runs until stopped',
    'network': 'downloads data or needs internet',
    'gcloud': 'talks to Google Cloud',
    'gpu': 'needs NVIDIA GPUs',
    'tpu': 'needs a TPU',
    'data': "needs data of the user's own",
    'long': 'minutes to hours of compute',
}
# Top-level folders whose paths, when the docs name them in code, must exist in the checkout.
PATH_ROOTS = ('resflax', 'experiments', 'scripts', 'examples', 'tests', 'docs', '.ci')
MARKER = re.compile(r'^<!-- test: (.*) -->$')
BLOCK_TIMEOUT_S = 900


@dataclasses.dataclass
class Block:
  page: pathlib.Path
  line: int  # 1-based line of the opening fence
  lang: str
  code: str
  marker: str | None  # the text of the marker line above the fence, if any

  @property
  def where(self) -> str:
    return f'{self.page.relative_to(REPO)}:{self.line}'

  def parsed(self) -> tuple[str, dict[str, str]]:
    """(mode, options): mode is run | slow | skip | excerpt."""
    head, *options = [part.strip() for part in self.marker.split(';')]
    mode = head.split()[0]
    opts = {}
    for option in options:
      key, _, value = option.partition(':')
      opts[key.strip()] = value.strip()
    return mode, opts


def _fences(page: pathlib.Path) -> list[tuple[int, str, list[str]]]:
  """(line of the opening fence, its info string, the lines inside) for each fenced block."""
  lines = page.read_text().splitlines()
  out, i = [], 0
  while i < len(lines):
    stripped = lines[i].strip()
    if stripped.startswith('```'):
      start, info = i, stripped[3:].strip()
      i += 1
      while i < len(lines) and lines[i].strip() != '```':
        i += 1
      assert i < len(lines), f'{page}:{start + 1}: unclosed code fence'
      out.append((start, info, lines[start + 1:i]))
    i += 1
  return out


def blocks_of(page: pathlib.Path) -> list[Block]:
  lines = page.read_text().splitlines()
  result = []
  for start, info, body in _fences(page):
    above = MARKER.match(lines[start - 1].strip()) if start else None
    result.append(Block(page, start + 1, info, '\n'.join(body) + '\n',
                        above.group(1).strip() if above else None))
  return result


ALL_BLOCKS = [b for page in PAGES for b in blocks_of(page)]


def _prose(page: pathlib.Path) -> str:
  """The page without its fenced blocks (links and headings live outside them)."""
  lines = page.read_text().splitlines()
  for start, _, body in _fences(page):
    for k in range(start, start + len(body) + 2):
      lines[k] = ''
  return '\n'.join(lines)


# --------------------------------------------------------------------------------------------
# Every block is tested or says why not.
# --------------------------------------------------------------------------------------------
def test_the_docs_pages_exist():
  names = {p.name for p in PAGES}
  assert {'README.md', 'experiments.md', 'steering.md', 'studies.md', 'devices.md',
          'performance.md', 'library.md', 'guarantees.md'} <= names, names


def test_every_block_runs_or_says_why_not():
  problems = []
  for b in ALL_BLOCKS:
    if b.lang not in LANGUAGES:
      problems.append(f'{b.where}: fence language {b.lang!r}, not one of {LANGUAGES}')
      continue
    if b.lang == 'text':
      if b.marker is not None:
        problems.append(f'{b.where}: a ```text block is not run; drop its test marker')
      continue
    if b.marker is None:
      problems.append(f'{b.where}: no <!-- test: ... --> line above this {b.lang} block')
      continue
    mode, opts = b.parsed()
    if mode in ('run', 'slow'):
      if b.marker.split(';')[0].strip() != mode:
        problems.append(f'{b.where}: {b.marker!r}: options go after ";"')
      for key, value in opts.items():
        if key not in ('train-args', 'env') or not value:
          problems.append(f'{b.where}: unknown or empty option {key!r} (train-args, env)')
      if 'train-args' in opts and (b.lang != 'bash' or not _train_lines(b.code)):
        problems.append(f'{b.where}: train-args on a block without a `resflax train` command')
      if 'env' in opts and '=' not in opts['env']:
        problems.append(f'{b.where}: env takes NAME=VALUE')
    elif mode == 'skip':
      m = re.fullmatch(r'skip \((\w+)\): (.+)', b.marker)
      if not m or m.group(1) not in SKIP_REASONS:
        problems.append(f'{b.where}: {b.marker!r}: write `skip (REASON): why`, REASON one of '
                        f'{sorted(SKIP_REASONS)}')
    elif mode == 'excerpt':
      if b.lang != 'python' or not re.fullmatch(r'excerpt of \S+', b.marker):
        problems.append(f'{b.where}: {b.marker!r}: `excerpt of PATH`, on a python block')
    else:
      problems.append(f'{b.where}: unknown test mode in {b.marker!r} (run, slow, skip, excerpt)')
  assert not problems, '\n'.join(problems)


def test_the_default_suite_runs_commands_of_the_readme_and_the_docs():
  running = [b for b in ALL_BLOCKS if b.marker and b.parsed()[0] == 'run']
  assert any(b.page.name == 'README.md' and 'resflax train' in b.code for b in running)
  assert len({b.page for b in running}) >= 3, [b.where for b in running]


def test_excerpts_are_lines_of_their_files():
  excerpts = [b for b in ALL_BLOCKS if b.marker and b.parsed()[0] == 'excerpt']
  assert excerpts
  for b in excerpts:
    source = REPO / b.marker.split(' of ', 1)[1]
    assert source.is_file(), f'{b.where}: {source} does not exist'
    lines = iter([l.strip() for l in source.read_text().splitlines()])
    for line in b.code.splitlines():
      line = line.strip()
      if not line or line == '...':
        continue
      assert any(l == line for l in lines), (
          f'{b.where}: this line is not in {source.name} (or not in this order); '
          f'copy it again from the file:\n  {line}')


# --------------------------------------------------------------------------------------------
# Links, anchors, paths and test names.
# --------------------------------------------------------------------------------------------
def github_anchors(page: pathlib.Path) -> set[str]:
  """The heading anchors GitHub makes: lower case, punctuation dropped, spaces to '-', and '-N'
  after the N-th repeat."""
  seen: dict[str, int] = {}
  anchors = set()
  for line in _prose(page).splitlines():
    m = re.match(r'^#{1,6}\s+(.*?)\s*#*\s*$', line)
    if not m:
      continue
    slug = re.sub(r'[^\w\- ]', '', m.group(1).lower()).replace(' ', '-')
    n = seen.get(slug, 0)
    seen[slug] = n + 1
    anchors.add(slug if n == 0 else f'{slug}-{n}')
  return anchors


def test_github_anchors_follow_githubs_rule():
  page = REPO / 'docs' / 'studies.md'
  assert 'instruments-resflax-analyze-resflaxanalysis' in github_anchors(page)
  assert 'seed-002s-claims' in github_anchors(page)


@pytest.mark.parametrize('page', PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_and_anchors_resolve(page):
  problems = []
  prose = re.sub(r'`[^`\n]*`', '', _prose(page))  # code spans are not links
  for target in re.findall(r'\]\(([^)\s]+)\)', prose):
    if re.match(r'[a-z]+:', target):  # http:, https:, mailto:
      continue
    path, _, anchor = target.partition('#')
    dest = (page.parent / path).resolve() if path else page
    if not dest.exists():
      problems.append(f'{target}: {dest} does not exist')
    elif anchor:
      if dest.suffix != '.md':
        problems.append(f'{target}: an anchor into a file that is not markdown')
      elif anchor not in github_anchors(dest):
        problems.append(f'{target}: no heading #{anchor} in {dest.relative_to(REPO)}')
  assert not problems, f'{page.relative_to(REPO)}:\n' + '\n'.join(problems)


def _named_paths(text: str) -> set[str]:
  roots = '|'.join(re.escape(r) for r in PATH_ROOTS)
  found = set()
  for m in re.finditer(rf'(?<![\w./~$<-])(?:{roots})/[\w./*-]*', text):
    path = m.group(0).rstrip('.,:;')
    found.add(path)
  return found


@pytest.mark.parametrize('page', PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_the_files_and_tests_the_docs_name_exist(page):
  text = page.read_text()
  code = ' '.join(re.findall(r'`([^`\n]+)`', _prose(page)))
  code += ' ' + ' '.join(b.code for b in blocks_of(page))
  missing = [p for p in sorted(_named_paths(code))
             if not (list(REPO.glob(p)) if '*' in p else (REPO / p).exists())]
  assert not missing, f'{page.relative_to(REPO)} names files that do not exist: {missing}'
  defined = set()
  for test_file in (REPO / 'tests').glob('test_*.py'):
    defined |= set(re.findall(r'^def (test_\w+)', test_file.read_text(), re.M))
  named = set(re.findall(r'`(test_\w+)`', text))
  assert named <= defined, (f'{page.relative_to(REPO)} names tests that do not exist: '
                            f'{sorted(named - defined)}')


# --------------------------------------------------------------------------------------------
# Running the blocks.
# --------------------------------------------------------------------------------------------
def _train_lines(code: str) -> list[str]:
  return [l for l in _join_continuations(code).splitlines()
          if re.match(r'\s*(?:\w+=\S+\s+)*resflax train\b', l)]


def _join_continuations(code: str) -> str:
  return re.sub(r'\s*\\\n\s*', ' ', code)


def with_train_args(code: str, args: str) -> str:
  """``args`` appended to each ``resflax train`` command of ``code`` (before a trailing comment)."""
  out = []
  for line in _join_continuations(code).splitlines():
    if re.match(r'\s*(?:\w+=\S+\s+)*resflax train\b', line):
      command, comment = re.match(r'(.*?)(\s+#.*)?$', line).groups()
      line = f'{command} {args}{comment or ""}'
    out.append(line)
  return '\n'.join(out) + '\n'


def test_train_args_go_before_a_comment_and_after_a_continued_line():
  code = ('resflax eval --workdir w\n'
          'resflax train --config c.py \\\n    --workdir w   # note\n')
  assert with_train_args(code, '--config.num_train_steps=2') == (
      'resflax eval --workdir w\n'
      'resflax train --config c.py --workdir w --config.num_train_steps=2   # note\n')


@pytest.fixture
def docs_env(data_dir, tmp_path):
  """(a function making a page's working directory, the environment its blocks run in)."""
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  for name, invoke in (('resflax', f'"{sys.executable}" -m resflax.cli'),
                       ('python', f'"{sys.executable}"')):
    shim = bin_dir / name
    shim.write_text(f'#!/bin/sh\nPYTHONPATH="{REPO}${{PYTHONPATH:+:$PYTHONPATH}}" '
                    f'exec {invoke} "$@"\n')
    shim.chmod(0o755)
  env = {**os.environ, 'PATH': f'{bin_dir}{os.pathsep}{os.environ["PATH"]}',
         'TFDS_DATA_DIR': data_dir, 'TF_CPP_MIN_LOG_LEVEL': '3'}

  def workdir(name: str) -> pathlib.Path:
    cwd = tmp_path / name
    (cwd / 'experiments' / 'results').mkdir(parents=True)
    (cwd / 'experiments' / 'configs').symlink_to(REPO / 'experiments' / 'configs')
    for folder in ('examples', 'scripts'):
      (cwd / folder).symlink_to(REPO / folder)
    return cwd

  return workdir, env


def run_block(block: Block, cwd: pathlib.Path, env: dict[str, str]) -> None:
  _, opts = block.parsed()
  env = dict(env)
  if 'env' in opts:
    name, _, value = opts['env'].partition('=')
    env[name] = value
  if block.lang == 'bash':
    code = with_train_args(block.code, opts['train-args']) if 'train-args' in opts else block.code
    argv = ['bash', '-c', 'set -euo pipefail\n' + code]
  else:
    script = cwd.parent / f'{cwd.name}_line{block.line}.py'
    script.write_text(block.code)
    argv = ['python', str(script)]
  result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=BLOCK_TIMEOUT_S)
  assert result.returncode == 0, (
      f'{block.where} failed (exit {result.returncode}):\n{block.code}\n'
      f'--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}')


def _blocks_to_run(page: pathlib.Path, modes: tuple[str, ...]) -> list[Block]:
  return [b for b in blocks_of(page) if b.lang in ('bash', 'python') and b.marker
          and b.parsed()[0] in modes]


DEFAULT_PAGES = [p for p in PAGES if _blocks_to_run(p, ('run',))]
SLOW_PAGES = [p for p in PAGES if _blocks_to_run(p, ('slow',))]


@pytest.mark.parametrize('page', DEFAULT_PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_the_commands_of_a_page_run(page, docs_env):
  make_workdir, env = docs_env
  cwd = make_workdir(page.stem)
  for block in _blocks_to_run(page, ('run',)):
    run_block(block, cwd, env)


@pytest.mark.slow
@pytest.mark.parametrize('page', SLOW_PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_all_the_offline_commands_of_a_page_run(page, docs_env):
  make_workdir, env = docs_env
  cwd = make_workdir(page.stem)
  for block in _blocks_to_run(page, ('run', 'slow')):
    run_block(block, cwd, env)
