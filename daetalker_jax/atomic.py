"""Atomic writes: a reader (or a rerun after a crash) sees the old file or the complete new one, never half.

Every writer here writes into a temporary sibling of the target (same folder, so the same file system) and
renames it over the target with `os.replace`, which is atomic on POSIX. On any error the temporary is removed
and the target is untouched.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

PathLike = str | os.PathLike[str]


def _readable_mode(path: PathLike, mode: int = 0o666) -> None:
  # mkstemp / mkdtemp create 0600 / 0700; the result should get the permissions a plain open() / mkdir()
  # would give it.
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(path, mode & ~umask)


@contextlib.contextmanager
def temp_path(path: PathLike, suffix: str = '') -> Iterator[str]:
  """Yields a temporary path beside `path`; when the block exits cleanly it is renamed onto `path`.

      with atomic.temp_path('out.npz') as tmp:
        np.savez(tmp, ...)                      # (numpy adds no suffix when `tmp` ends in .npz)
  """
  path = os.fspath(path)
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f'.{os.path.basename(path)}.', suffix=suffix or '.tmp', dir=folder)
  os.close(fd)
  try:
    yield tmp
    _readable_mode(tmp)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_with(path: PathLike, write_fn: Callable[[str], Any], suffix: str = '') -> None:
  """Calls write_fn(tmp_path) and renames the result onto `path`."""
  with temp_path(path, suffix) as tmp:
    write_fn(tmp)


def write_bytes(path: PathLike, data: bytes) -> None:
  with temp_path(path) as tmp, open(tmp, 'wb') as f:
    f.write(data)


def write_text(path: PathLike, text: str) -> None:
  write_bytes(path, text.encode('utf-8'))


def write_json(path: PathLike, obj: Any, *, indent: int = 1, allow_nan: bool = True, default=None) -> None:
  """JSON written atomically (`allow_nan=False` for strict JSON)."""
  write_text(path, json.dumps(obj, indent=indent, allow_nan=allow_nan, default=default) + '\n')


@contextlib.contextmanager
def temp_dir(path: PathLike) -> Iterator[pathlib.Path]:
  """Yields an empty temporary folder beside `path`; on a clean exit it replaces `path` as a whole.

  An existing `path` is moved aside only once the new folder is complete, then deleted; on error the
  temporary folder is deleted and `path` is left as it was.
  """
  out = pathlib.Path(path)
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f'.{out.name}.tmp-', dir=out.parent))
  try:
    yield tmp
    _readable_mode(tmp, 0o777)
    old = None
    if out.exists():
      old = pathlib.Path(tempfile.mkdtemp(prefix=f'.{out.name}.old-', dir=out.parent))
      os.replace(out, old / out.name)
    os.replace(tmp, out)
    if old is not None:
      shutil.rmtree(old, ignore_errors=True)
  finally:
    if tmp.exists():
      shutil.rmtree(tmp, ignore_errors=True)
