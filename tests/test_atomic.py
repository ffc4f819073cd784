"""daetalker_jax.atomic: a reader sees the old file (or folder) or the complete new one, never half."""

import json
import os
import stat

import pytest

from daetalker_jax import atomic


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


def test_writers_replace_the_file(tmp_path):
  path = tmp_path / 'sub' / 'out.json'          # the folder is created
  atomic.write_json(path, {'a': 1})
  assert json.loads(path.read_text()) == {'a': 1}
  atomic.write_text(path, 'new')
  assert path.read_text() == 'new'
  atomic.write_bytes(path, b'\x00\x01')
  assert path.read_bytes() == b'\x00\x01'
  atomic.write_with(path, lambda tmp: open(tmp, 'w').write('via write_with'))
  assert path.read_text() == 'via write_with'
  assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~_umask()   # not mkstemp's 0600
  assert os.listdir(path.parent) == ['out.json']                  # no temp file left


def test_strict_json_rejects_nan(tmp_path):
  path = tmp_path / 'x.json'
  atomic.write_json(path, {'ok': True})
  with pytest.raises(ValueError):
    atomic.write_json(path, {'bad': float('nan')}, allow_nan=False)
  assert json.loads(path.read_text()) == {'ok': True}
  assert os.listdir(tmp_path) == ['x.json']


@pytest.mark.parametrize('interrupt', [RuntimeError, KeyboardInterrupt])
def test_a_failing_writer_leaves_the_old_file(tmp_path, interrupt):
  path = tmp_path / 'out.png'
  path.write_bytes(b'old')

  def half_then_fail(tmp):
    with open(tmp, 'wb') as f:
      f.write(b'half')
    raise interrupt('writer failed')

  with pytest.raises(interrupt, match='writer failed'):
    atomic.write_with(path, half_then_fail, suffix='.png')
  assert path.read_bytes() == b'old'
  assert os.listdir(tmp_path) == ['out.png']


def test_temp_path_keeps_the_suffix(tmp_path):
  with atomic.temp_path(tmp_path / 'a.npz', suffix='.npz') as tmp:
    assert tmp.endswith('.npz') and os.path.dirname(tmp) == str(tmp_path)
    open(tmp, 'wb').close()
  assert os.listdir(tmp_path) == ['a.npz']


def test_temp_dir_replaces_a_folder_on_success(tmp_path):
  out = tmp_path / 'data'
  out.mkdir()
  (out / 'old.txt').write_text('old')
  with atomic.temp_dir(out) as tmp:
    assert tmp.parent == tmp_path and tmp != out
    (tmp / 'new.txt').write_text('new')
    assert (out / 'old.txt').exists()            # the old folder stays until the new one is complete
  assert sorted(os.listdir(out)) == ['new.txt']
  assert os.listdir(tmp_path) == ['data']        # neither the temp nor the old folder is left
  assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~_umask()   # not mkdtemp's 0700


@pytest.mark.parametrize('existing', [False, True])
def test_temp_dir_leaves_the_folder_on_failure(tmp_path, existing):
  out = tmp_path / 'data'
  if existing:
    out.mkdir()
    (out / 'old.txt').write_text('old')
  with pytest.raises(RuntimeError, match='build failed'):
    with atomic.temp_dir(out) as tmp:
      (tmp / 'new.txt').write_text('new')
      raise RuntimeError('build failed')
  if existing:
    assert os.listdir(out) == ['old.txt'] and (out / 'old.txt').read_text() == 'old'
    assert os.listdir(tmp_path) == ['data']
  else:
    assert os.listdir(tmp_path) == []
