"""Test setup: CPU only, 8 fake XLA devices for sharding tests, TensorFlow kept off any GPU.

The environment must be set before JAX or TensorFlow is imported, so it happens at the top of this file.
"""
import os

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('CUDA_VISIBLE_DEVICES', '')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
if '--xla_force_host_platform_device_count' not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                             ' --xla_force_host_platform_device_count=8').strip()

import pathlib  # noqa: E402

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
REFERENCE = REPO.parent / 'shared' / 'reference' / 'diffae'


@pytest.fixture(scope='session')
def reference_dir() -> pathlib.Path:
  """The official diffae reference vectors (../shared/reference/diffae)."""
  if not REFERENCE.is_dir():
    raise FileNotFoundError(f'reference vectors not found at {REFERENCE}')
  return REFERENCE
