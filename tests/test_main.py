"""daetalker_jax.main: the backend check that keeps accelerator-sized runs off a CPU-only jaxlib.

The check is a pure function of (config, backend platform); `run` applies it before any work, and the CLI
turns a refusal into one line on stderr.
"""

import os
import pathlib
import re
import subprocess
import sys

import pytest

from configs import dae as dae_config
from configs import s2l as s2l_config
from daetalker_jax import main

REPO = pathlib.Path(__file__).resolve().parents[1]
HOW = ('on a CPU backend: install the accelerator jaxlib (make install ACCEL=tpu or ACCEL=cuda12, '
       'docs/TRAINING.md), or pass --allow_cpu to run on the CPU anyway')


def _config(variant='tiny', *, distributed=False, allow_cpu=None):
  config = dae_config.get_config(f'variant={variant}')
  config.distributed = distributed
  if allow_cpu is not None:          # a config file that defines the field (the shipped ones do not)
    with config.unlocked():
      config.allow_cpu = allow_cpu
  return config


@pytest.mark.parametrize('variant', ['128', '256'])
def test_refuses_accelerator_variants_on_cpu(variant):
  assert main.check_backend(_config(variant), 'cpu') == f'variant {variant} {HOW}'


def test_refuses_distributed_on_cpu():
  assert main.check_backend(_config(distributed=True), 'cpu') == f'config.distributed=True {HOW}'


def test_refuses_both_in_one_line():
  message = main.check_backend(_config('256', distributed=True), 'cpu')
  assert message == f'config.distributed=True and variant 256 {HOW}'
  assert '\n' not in message


@pytest.mark.parametrize('platform', ['gpu', 'tpu'])
def test_accelerators_take_every_config(platform):
  assert main.check_backend(_config('256', distributed=True), platform) is None


@pytest.mark.parametrize('configs,variant', [(dae_config, v) for v in ('tiny', 'demo', '64')] +
                         [(s2l_config, v) for v in ('tiny', 'demo', 'base')])
def test_cpu_sized_configs_run_on_cpu(configs, variant):
  assert main.check_backend(configs.get_config(f'variant={variant}'), 'cpu') is None


def test_allow_cpu_flag_or_config_field():
  assert main.check_backend(_config('128', distributed=True), 'cpu', allow_cpu=True) is None
  assert main.check_backend(_config('128', distributed=True, allow_cpu=True), 'cpu') is None
  assert main.check_backend(_config('128', allow_cpu=False), 'cpu') == f'variant 128 {HOW}'


@pytest.mark.parametrize('platforms,expected', [('cpu', True), (' cpu ', True), ('cuda,cpu', False),
                                                ('tpu', False), ('', False)])
def test_cpu_requested_means_the_cpu_alone(platforms, expected):
  assert main.cpu_requested(platforms) is expected


def test_cpu_requested_reads_jax_platforms():
  assert main.cpu_requested() is (os.environ.get('JAX_PLATFORMS') == 'cpu')   # conftest sets it


def test_run_refuses_before_any_work(monkeypatch, tmp_path):
  monkeypatch.setattr(main, 'cpu_requested', lambda: False)   # the tests set JAX_PLATFORMS=cpu
  with pytest.raises(main.BackendError, match=f'^{re.escape("variant 128 " + HOW)}$'):
    main.run(_config('128'), str(tmp_path / 'work'))
  assert not (tmp_path / 'work').exists()


def test_cli_prints_the_backend_and_a_one_line_refusal(tmp_path):
  # JAX picks its backend itself here (no JAX_PLATFORMS): the CPU, as on a host without the accelerator jaxlib.
  env = {k: v for k, v in os.environ.items() if k not in ('JAX_PLATFORMS', 'XLA_FLAGS')}
  env.update(CUDA_VISIBLE_DEVICES='', TF_CPP_MIN_LOG_LEVEL='2', PYTHONPATH=str(REPO))
  proc = subprocess.run([sys.executable, '-m', 'daetalker_jax.main', '--config=configs/dae.py:variant=128',
                         f'--workdir={tmp_path}'], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert '[main] backend cpu (cpu): 1 devices, process 1 of 1' in proc.stdout, proc.stdout
  assert proc.stderr.strip().splitlines()[-1] == f'[main] error: variant 128 {HOW}', proc.stderr[-3000:]
  assert 'refused: variant 128' in (tmp_path / 'log.txt').read_text()
