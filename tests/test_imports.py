"""No import cycles inside ``resflax/``: every module's imports, lazy ones included, read from source."""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / 'resflax'


def _modules() -> dict[str, pathlib.Path]:
  mods = {}
  for path in PACKAGE.rglob('*.py'):
    parts = list(path.relative_to(PACKAGE.parent).with_suffix('').parts)
    if parts[-1] == '__init__':
      parts = parts[:-1]
    mods['.'.join(parts)] = path
  return mods


def _edges(mods: dict[str, pathlib.Path]) -> dict[str, set[str]]:
  """``{module: modules of resflax it imports}`` (``from a import b``: ``a.b`` if a module)."""

  def owner(name):  # the longest prefix of ``name`` that is a module of the package
    while name and name not in mods:
      name = name.rpartition('.')[0]
    return name or None

  edges = {m: set() for m in mods}
  for mod, path in mods.items():
    package = mod if path.name == '__init__.py' else mod.rpartition('.')[0]
    for node in ast.walk(ast.parse(path.read_text())):
      names = []
      if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom):
        base = node.module or ''
        if node.level:
          base = '.'.join(package.split('.')[:len(package.split('.')) - node.level + 1] +
                          ([base] if base else []))
        names = [f'{base}.{a.name}' for a in node.names]  # a name that is no module: base
      for name in names:
        target = owner(name)
        if target and target != mod:
          edges[mod].add(target)
  return edges


def test_no_import_cycles_inside_resflax():
  edges = _edges(_modules())
  cycles, state = [], {}

  def visit(mod, stack):
    state[mod] = 'open'
    for nxt in sorted(edges[mod]):
      if state.get(nxt) == 'open':
        cycles.append(' -> '.join(stack[stack.index(nxt):] + [nxt]))
      elif nxt not in state:
        visit(nxt, stack + [nxt])
    state[mod] = 'done'

  for mod in sorted(edges):
    if mod not in state:
      visit(mod, [mod])
  assert not cycles, cycles


def test_the_cycle_check_sees_a_lazy_import(tmp_path, monkeypatch):
  """The check itself: two modules that import each other, one inside a function, are a cycle."""
  package = tmp_path / 'resflax'
  package.mkdir()
  (package / '__init__.py').write_text('')
  (package / 'a.py').write_text('from resflax import b\n')
  (package / 'b.py').write_text('def f():\n  from resflax import a\n')
  monkeypatch.setattr(__import__(__name__), 'PACKAGE', package)
  edges = _edges(_modules())
  assert edges['resflax.a'] == {'resflax.b'} and edges['resflax.b'] == {'resflax.a'}
