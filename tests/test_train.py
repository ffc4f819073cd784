"""End-to-end runs of `python -m daetalker_jax.main` on a tiny prepared dataset (flax train_test style).

Each run is a subprocess on 1 CPU device (2 for the two-process run) with a shared persistent compilation
cache, so the runs after the first reuse its compiled step. Checks: outputs appear (checkpoint,
TensorBoard events, reconstruction PNG), a SIGKILLed run resumes to exactly the parameters of an
uninterrupted run, SIGTERM checkpoints and exits cleanly, a NaN stops training with a clear error and
keeps the last good checkpoint, and two processes (jax.distributed over gloo) train together.
"""

import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time

from flax import nnx
import jax
import numpy as np
import pytest
import tensorflow as tf

from daetalker_jax import checkpoint

REPO = pathlib.Path(__file__).resolve().parents[1]
STEPS = 6

# A model smaller than variant=tiny (one down level) so that every run compiles quickly.
MICRO_FLAGS = [
    '--config.model.model_channels=32', '--config.model.channel_mult=(1,2)',
    '--config.model.enc_channel_mult=(1,2)', '--config.model.embed_channels=32',
    '--config.model.enc_out_channels=32', '--config.model.enc_num_res_block=1',
    '--config.num_eval_images=4', '--config.diffusion.sample_steps=2',
]


@pytest.fixture(scope='module')
def cache_dir(tmp_path_factory):
  return tmp_path_factory.mktemp('jax_cache')


def _env(cache_dir, devices=1, **extra):
  env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='2', CUDA_VISIBLE_DEVICES='',
             XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}',
             JAX_COMPILATION_CACHE_DIR=str(cache_dir), PYTHONPATH=str(REPO))
  env.update(extra)
  return env


def _cmd(workdir, data_dir, *flags):
  return [sys.executable, '-m', 'daetalker_jax.main', '--config=configs/dae.py:variant=tiny',
          f'--workdir={workdir}', f'--config.data.data_dir={data_dir}', *MICRO_FLAGS,
          f'--config.num_train_steps={STEPS}', '--config.log_every_steps=2',
          '--config.checkpoint_every_steps=2', f'--config.eval_every_steps={STEPS}', '--verbose', *flags]


def _run(cmd, env, timeout=900):
  proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
  return proc


def _steps(workdir):
  d = pathlib.Path(workdir) / 'checkpoints'
  return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.is_dir() else []


def _weights(workdir, which):
  model, _ = checkpoint.load_model(str(workdir), which=which)
  return jax.tree.leaves(nnx.state(model, nnx.Param))


@pytest.fixture(scope='module')
def full_run(tmp_path_factory, tiny_dataset, cache_dir):
  workdir = tmp_path_factory.mktemp('full_run')
  proc = _run(_cmd(workdir, tiny_dataset), _env(cache_dir))
  assert proc.returncode == 0, proc.stderr[-4000:]
  return workdir


def test_main_writes_checkpoint_events_and_png(full_run):
  assert _steps(full_run) == [2, 4, 6]
  assert (full_run / 'recon' / f'step_{STEPS:07d}.png').is_file()
  events = list(full_run.glob('events.out.tfevents.*'))
  assert len(events) == 1
  tags, losses = set(), []
  for e in tf.compat.v1.train.summary_iterator(str(events[0])):
    for v in e.summary.value:
      tags.add(v.tag)
      if v.tag == 'loss':
        losses.append(tf.make_ndarray(v.tensor) if v.HasField('tensor') else v.simple_value)
  for tag in ('loss', 'grad_norm', 'learning_rate', 'steps_per_sec', 'images_per_sec',
              'eval/psnr_inverted', 'eval/psnr_shared_noise', 'eval/reconstructions'):
    assert tag in tags, (tag, sorted(tags))
  assert len(losses) == 3 and all(0.1 < float(l) < 10 for l in losses)
  # The checkpoint rebuilds the model for extraction / generation with its EMA weights.
  model, config = checkpoint.load_model(str(full_run))
  assert config.model.image_size == 32 and config.num_train_steps == STEPS
  z = model.encode(np.zeros((2, 32, 32, 3), np.float32))
  assert z.shape == (2, 32) and np.all(np.isfinite(np.asarray(z)))
  ema, params = _weights(full_run, 'ema'), _weights(full_run, 'params')
  assert any(not np.array_equal(a, b) for a, b in zip(ema, params))


def test_resume_after_sigkill_matches_uninterrupted_run(full_run, tiny_dataset, cache_dir, tmp_path):
  workdir = tmp_path / 'killed'
  proc = subprocess.Popen(_cmd(workdir, tiny_dataset), cwd=REPO, env=_env(cache_dir),
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 900
  while not _steps(workdir) and proc.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  _, stderr = proc.communicate()
  killed_at = _steps(workdir)
  assert killed_at and killed_at[-1] < STEPS, (killed_at, stderr[-3000:])

  proc = _run(_cmd(workdir, tiny_dataset), _env(cache_dir))
  assert proc.returncode == 0, proc.stderr[-4000:]
  assert 'Resumed from' in proc.stderr and f'at step {killed_at[-1]}' in proc.stderr
  assert f'at step {killed_at[-1]}' in (workdir / 'log.txt').read_text()   # the log file has it too
  assert _steps(workdir)[-1] == STEPS
  for which in ('params', 'ema'):
    for a, b in zip(_weights(workdir, which), _weights(full_run, which)):
      np.testing.assert_array_equal(a, b)


def test_sigterm_checkpoints_current_step_and_exits(tiny_dataset, cache_dir, tmp_path):
  workdir = tmp_path / 'term'
  proc = subprocess.Popen(_cmd(workdir, tiny_dataset, '--config.num_train_steps=100000',
                               '--config.checkpoint_every_steps=3', '--config.eval_every_steps=100000'),
                          cwd=REPO, env=_env(cache_dir), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
  deadline = time.time() + 900
  while not _steps(workdir) and proc.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  time.sleep(0.5)
  proc.send_signal(signal.SIGTERM)
  _, stderr = proc.communicate(timeout=600)
  assert proc.returncode == 0, stderr[-4000:]
  assert 'Stopped by signal' in stderr
  stopped = re.search(r'Stopped by signal at step (\d+)', stderr)
  assert stopped, stderr[-4000:]
  assert _steps(workdir)[-1] == int(stopped.group(1)) >= 3  # the state at the signal is saved


def test_nan_stops_with_clear_error_and_keeps_last_good_checkpoint(tiny_dataset, cache_dir, tmp_path):
  # lr(0) = 0, lr(1) = 5e37 (warmup): the update of step 1 blows the weights up, so the loss of step 2
  # is not finite. Checkpoints 1 and 2 hold finite states; the NaN state is never saved.
  workdir = tmp_path / 'nan'
  proc = _run(_cmd(workdir, tiny_dataset, '--config.optim.learning_rate=1e38', '--config.optim.warmup_steps=2',
                   '--config.optim.grad_clip=0', '--config.checkpoint_every_steps=1',
                   '--config.log_every_steps=1'), _env(cache_dir))
  assert proc.returncode != 0
  assert re.search(r'NonFiniteError: non-finite [a-z_, ]+ at optimizer step 2 ', proc.stderr), proc.stderr[-4000:]
  assert _steps(workdir) == [1, 2]
  for w in _weights(workdir, 'params'):
    assert np.all(np.isfinite(w))


def _free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def test_two_processes_train_and_checkpoint(tiny_dataset, cache_dir, tmp_path):
  workdir = tmp_path / 'two'
  port = _free_port()
  procs = [subprocess.Popen(
      _cmd(workdir, tiny_dataset, '--config.distributed=True', '--config.num_train_steps=2',
           '--config.eval_every_steps=2'),
      cwd=REPO, env=_env(cache_dir, JAX_COORDINATOR_ADDRESS=f'localhost:{port}', JAX_NUM_PROCESSES='2',
                         JAX_PROCESS_ID=str(i)),
      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for i in range(2)]
  outs = [p.communicate(timeout=900)[1] for p in procs]
  for p, err in zip(procs, outs):
    assert p.returncode == 0, err[-4000:]
  assert 'JAX process 1 / 2; local devices 1, global devices 2' in outs[1]
  assert _steps(workdir) == [2]
  assert len(list(workdir.glob('events.out.tfevents.*'))) == 1  # only process 0 writes summaries
  assert (workdir / 'recon' / 'step_0000002.png').is_file()
  assert all(np.all(np.isfinite(w)) for w in _weights(workdir, 'params'))
