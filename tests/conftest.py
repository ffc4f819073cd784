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

from tests import _reference  # noqa: E402


@pytest.fixture(scope='session')
def reference_dir() -> pathlib.Path:
  """The official diffae reference vectors, kept in the repository (tests/reference/diffae, see its README)."""
  return _reference.REFERENCE


@pytest.fixture(scope='session')
def tiny_weights(tmp_path_factory) -> pathlib.Path:
  """The official tiny diffae model's weights as a .safetensors file, rebuilt from their seeded recipe."""
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  path = tmp_path_factory.mktemp('diffae') / 'tiny_weights.safetensors'
  save_file(_reference.rebuild_tiny_weights(), str(path))
  return path


@pytest.fixture(scope='session')
def synth_videos(tmp_path_factory) -> pathlib.Path:
  """Six 3-second synthface clips at 64 px (real mp4 files with h264 video and AAC audio)."""
  from data_prep import synthface  # pylint: disable=g-import-not-at-top
  out = tmp_path_factory.mktemp('synth') / 'videos'
  synthface.generate_dataset(out, clips=6, seconds=3.0, size=64, seed=0, workers=2)
  return out


@pytest.fixture(scope='session')
def tiny_dataset(synth_videos, tmp_path_factory) -> pathlib.Path:
  """The synthface clips ingested by the real `data_prep.prepare` at 32 px (4 train / 1 val / 1 test)."""
  from data_prep import prepare  # pylint: disable=g-import-not-at-top
  out = tmp_path_factory.mktemp('data') / 'tiny'
  prepare.prepare(synth_videos, out, size=32, crop='none', val_fraction=0.17, test_fraction=0.17, seed=0)
  return out


@pytest.fixture(scope='session')
def tiny_dae_workdir(tiny_dataset, tmp_path_factory) -> pathlib.Path:
  """A tiny DAE trained for 2 steps by the real loop on `tiny_dataset` (a real checkpoint)."""
  from configs import dae as dae_config  # pylint: disable=g-import-not-at-top
  from daetalker_jax import train  # pylint: disable=g-import-not-at-top
  config = dae_config.get_config('variant=tiny')
  config.data.data_dir = str(tiny_dataset)
  config.num_train_steps = 2
  config.checkpoint_every_steps = 2
  config.eval_every_steps = 0              # no evaluation (its tests train their own)
  config.log_every_steps = 1
  workdir = tmp_path_factory.mktemp('dae')
  train.train_and_evaluate(config, str(workdir))
  return workdir


@pytest.fixture(scope='session')
def tiny_latents(tiny_dae_workdir, tiny_dataset) -> str:
  """Latents of every frame of `tiny_dataset` from `tiny_dae_workdir`, under the name 'dae'."""
  from daetalker_jax import extract  # pylint: disable=g-import-not-at-top
  extract.extract_latents(str(tiny_dae_workdir), str(tiny_dataset), name='dae', batch_size=16)
  return 'dae'


@pytest.fixture(scope='session')
def official_cfg(reference_dir) -> dict:
  """BeatGANsAutoencConfig of the reference tiny diffae model."""
  import json  # pylint: disable=g-import-not-at-top
  return json.loads((reference_dir / 'tiny_config.json').read_text())['BeatGANsAutoencConfig']


@pytest.fixture(scope='session')
def tiny(tiny_weights, official_cfg):
  """The official tiny diffae model's weights imported into our DiffusionAutoencoder."""
  from daetalker_jax.importers import diffae  # pylint: disable=g-import-not-at-top
  return diffae.load_pretrained(tiny_weights, diffae.config_from_official(official_cfg))
