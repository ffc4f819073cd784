"""The repository is self-contained (nothing reads files from outside the clone, a sibling folder) and its
dependencies run one way: the library never imports data_prep, models/ do no file I/O, no `__main__` tricks."""

import ast
import pathlib
import re
import subprocess
import tokenize

REPO = pathlib.Path(__file__).resolve().parents[1]
# A path that leaves the repository for a sibling `shared` folder, however it is spelt.
OUTSIDE = re.compile(r"""\.\./shared|parents?\[?\d*\]?\s*/\s*['"]shared['"]|parent\s*/\s*['"]shared['"]""")


def _tracked(*patterns):
  out = subprocess.run(['git', 'ls-files', *patterns], cwd=REPO, capture_output=True, text=True, check=False)
  files = [REPO / f for f in out.stdout.split()] if out.returncode == 0 else []
  if not files:  # not a git checkout (an unpacked archive): every file on disk
    files = [p for pat in patterns for p in REPO.rglob(pat.lstrip('*/'))]
  return [f for f in files if f.is_file() and '.venv' not in f.parts]


def test_no_code_reads_outside_the_repository():
  files = _tracked('*.py', 'Makefile', '.ci/run', '*.sh', '*.cfg', '*.toml', '*.ini')
  assert any(f.name == 'conftest.py' for f in files)
  offenders = [f'{f.relative_to(REPO)}:{i}' for f in files if f.name != 'test_repository.py'
               for i, line in enumerate(f.read_text(errors='replace').splitlines(), 1) if OUTSIDE.search(line)]
  assert not offenders, f'paths outside the repository: {offenders}'


def test_pattern_catches_the_old_reference_path():
  sibling = 'sha' + 'red'   # spelt apart so that this file itself names no outside path
  assert OUTSIDE.search(f"REFERENCE = REPO.parent / '{sibling}' / 'reference' / 'diffae'")
  assert OUTSIDE.search(f'np.load("../{sibling}/reference/diffae/ddim_io.npz")')
  assert not OUTSIDE.search("REFERENCE = pathlib.Path(__file__).parent / 'reference' / 'diffae'")


def test_reference_data_is_in_the_repository_and_small():
  ref = REPO / 'tests' / 'reference' / 'diffae'
  names = {'README.md', 'tiny_config.json', 'tiny_params.json', 'tiny_io.npz', 'tiny_intermediates.npz',
           'ddim_io.npz', 'ffhq128_autoenc_130M_params.json', 'ffhq256_autoenc_params.json'}
  assert names <= {p.name for p in ref.iterdir()}
  assert sum(p.stat().st_size for p in ref.iterdir()) < 4_000_000


# ----- dependencies run one way (docs/ARCHITECTURE.md) ------------------------------------------------------

def _library_files(folder: str = 'daetalker_jax') -> list[pathlib.Path]:
  return sorted(p for p in (REPO / folder).rglob('*.py') if '__pycache__' not in p.parts)


def _imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
  """(line, module) of every import, also `importlib.import_module('x')` / `__import__('x')` with a literal."""
  found = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      found += [(node.lineno, a.name) for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      found.append((node.lineno, node.module))
    elif (isinstance(node, ast.Call) and getattr(node.func, 'attr', getattr(node.func, 'id', None)) in
          ('import_module', '__import__') and node.args and isinstance(node.args[0], ast.Constant)):
      found.append((node.lineno, str(node.args[0].value)))
  return found


def _code_only(path: pathlib.Path) -> list[tuple[int, str]]:
  """(line, text) of a file's code with comments and strings (docstrings included) blanked out."""
  lines = path.read_text().splitlines()
  with open(path, 'rb') as f:
    for tok in tokenize.tokenize(f.readline):
      if tok.type in (tokenize.COMMENT, tokenize.STRING):
        (r0, c0), (r1, c1) = tok.start, tok.end
        for r in range(r0, r1 + 1):
          a, b = (c0 if r == r0 else 0), (c1 if r == r1 else len(lines[r - 1]))
          lines[r - 1] = lines[r - 1][:a] + ' ' * (b - a) + lines[r - 1][b:]
  return list(enumerate(lines, 1))


def test_library_does_not_import_data_prep():
  files = _library_files()
  assert any(f.name == 'eval_metrics.py' for f in files)
  offenders = [f'{f.relative_to(REPO)}:{line}: {module}' for f in files
               for line, module in _imported_modules(ast.parse(f.read_text()))
               if module == 'data_prep' or module.startswith('data_prep.')]
  assert not offenders, f'daetalker_jax/ imports data_prep (data_prep may import the library, not back): {offenders}'


# File I/O in a model module: open(), numpy/json/pickle/torch loading and saving, paths, the importers.
MODEL_IO = re.compile(r'\bopen\(|\bnp\.(load|save|savez\w*|fromfile|loadtxt|savetxt)\(|'
                      r'\.(read|write)_(bytes|text)\(|\bjson\.(load|dump)s?\(|\bpickle\b|\btorch\b|'
                      r'\bsafetensors\b|\bos\.path\b|\bpathlib\b|\bshutil\b|\bgfile\b|\btf\.io\b|\bimporters\b')


def test_models_do_no_file_io():
  files = _library_files('daetalker_jax/models')
  assert any(f.name == 'speech2latent.py' for f in files)
  offenders = [f'{f.relative_to(REPO)}:{i}: {text.strip()}' for f in files
               for i, text in _code_only(f) if MODEL_IO.search(text)]
  assert not offenders, f'file I/O in models/ (it belongs in importers/ or a task): {offenders}'


def test_model_io_pattern():
  for line in ("with open(path) as f:", "x = np.load('w.npz')", "p.read_bytes()", "json.load(f)",
               "sd = torch.load(p)", "from daetalker_jax.importers import wav2vec2", "os.path.join(a, b)"):
    assert MODEL_IO.search(line), line
  assert not MODEL_IO.search('h = self.proj(x)  ')


def test_no_main_module_tricks():
  """Modules find each other by import or a registry, never through `sys.modules['__main__']`."""
  main_guard = re.compile(r"""^\s*if __name__ == ['"]__main__['"]\W""")
  offenders = [f'{f.relative_to(REPO)}:{i}' for f in _tracked('*.py') if f.name != 'test_repository.py'
               for i, line in enumerate(f.read_text(errors='replace').splitlines(), 1)
               if '__main__' in line and not main_guard.match(line)]
  assert not offenders, f"'__main__' used outside the `if __name__ == '__main__':` guard: {offenders}"
