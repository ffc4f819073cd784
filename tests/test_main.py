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


_TASK_CONFIGS = sorted(p.stem for p in (REPO / 'configs').glob('*.py') if p.stem not in ('__init__', 'common'))


def test_every_config_file_is_covered():
  assert _TASK_CONFIGS == ['autoencoder', 'dae', 'difftalk', 'landmarks', 's2l', 'talkformer']


@pytest.mark.parametrize('name', _TASK_CONFIGS)
def test_main_runs_every_task_config(name, tiny_dataset, tiny_latents, tmp_path, monkeypatch, capsys):
  """`main` with each configs/<name>.py:variant=tiny, loaded as the CLI loads it, on the tests' tiny dataset: the
  backend check passes on the CPU and the task it names trains: its model, its first training batch and its
  loss fit together (traced with abstract weights: the compiled runs are the task tests' fixtures)."""
  import jax  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  from daetalker_jax import tasks  # pylint: disable=g-import-not-at-top
  from daetalker_jax import train  # pylint: disable=g-import-not-at-top
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, 'config', flag_values=fv, lock_config=True)
  fv([sys.argv[0], f'--config={REPO}/configs/{name}.py:variant=tiny'])
  config = fv.config
  config.data.data_dir = str(tiny_dataset)   # (a fresh FlagValues registers no --config.* override flags)
  traced = []

  def trace_one_step(cfg, workdir):
    task = tasks.get_task(cfg.task)
    graphdef, state = nnx.split(nnx.eval_shape(lambda: task.create_model(cfg, nnx.Rngs(0))))
    batches, _ = task.make_datasets(cfg, 0, 1)
    batch = next(iter(batches))
    loss = jax.eval_shape(lambda s: task.loss_fn(cfg, nnx.merge(graphdef, s), batch, jax.random.key(0),
                                                 train=True)[0], state)
    traced.append((cfg.task, workdir, loss.shape))
  monkeypatch.setattr(train, 'train_and_evaluate', trace_one_step)
  main.run(config, str(tmp_path))
  assert '[main] backend cpu' in capsys.readouterr().out
  assert traced == [(config.task, str(tmp_path), ())]
