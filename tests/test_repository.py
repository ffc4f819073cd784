"""The repository is self-contained: nothing in it reads files from outside the clone (a sibling folder)."""

import pathlib
import re
import subprocess

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
