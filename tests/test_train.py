"""End-to-end runs of `python -m daetalker_jax.main` on a tiny prepared dataset (flax train_test style).

Each run is a subprocess on 1 CPU device (2 for the two-process run and its one-process twin) with the test
session's persistent compilation cache (conftest.py), so the runs after the first reuse its compiled step.
Checks: outputs appear (checkpoint, TensorBoard events, reconstruction PNG), a run SIGKILLed between two
checkpoints resumes to exactly the parameters of an uninterrupted run, SIGTERM checkpoints the step it stops at
and exits cleanly, a NaN stops training with a clear error and keeps the last good checkpoint, and two
processes (jax.distributed over gloo) train to the parameters of one process that reads their global batch.
The interruptions come from tests/_main_with_hooks.py at a chosen step, not from racing the run's clock.
"""

import os
import pathlib
import re
import signal
import socket
import subprocess
import sys

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
def cache_dir():
  """The session's compilation cache (conftest.py sets it for this process and its children)."""
  return os.environ['JAX_COMPILATION_CACHE_DIR']


def _env(cache_dir, devices=1, **extra):
  env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='2', CUDA_VISIBLE_DEVICES='',
             XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}',
             JAX_COMPILATION_CACHE_DIR=str(cache_dir), PYTHONPATH=str(REPO))
  env.update(extra)
  return env


def _cmd(workdir, data_dir, *flags, module='daetalker_jax.main'):
  return [sys.executable, '-m', module, '--config=configs/dae.py:variant=tiny',
          f'--workdir={workdir}', f'--config.data.data_dir={data_dir}', *MICRO_FLAGS,
          f'--config.num_train_steps={STEPS}', '--config.log_every_steps=2',
          '--config.checkpoint_every_steps=2', f'--config.eval_every_steps={STEPS}', '--verbose', *flags]


def _run(cmd, env, timeout=900):
  proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
  return proc


def _steps(workdir):
  d = pathlib.Path(workdir) / 'checkpoints'
  return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.is_dir() else []


def _weights(workdir, which, step=None):
  model, _ = checkpoint.load_model(str(workdir), which=which, step=step)
  return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))]


@pytest.fixture(scope='module')
def full_run(tmp_path_factory, tiny_dataset, cache_dir):
  workdir = tmp_path_factory.mktemp('full_run')
  proc = _run(_cmd(workdir, tiny_dataset), _env(cache_dir))
  assert proc.returncode == 0, proc.stderr[-4000:]
  return workdir


@pytest.mark.xdist_group('train_full_run')   # one worker builds full_run for both
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
  # diffae zero-initialises its output convolution and the tiny config warms the learning rate up over 20
  # steps: the predicted noise stays ~0 for these 6 steps, so the loss is the mean of eps^2 over the batch
  # (8 x 32 x 32 x 3 draws of N(0, 1): 1 within a few hundredths).
  assert len(losses) == 3 and all(abs(float(l) - 1.0) < 0.06 for l in losses), losses
  # The checkpoint rebuilds the model for extraction / generation with its EMA weights.
  model, config = checkpoint.load_model(str(full_run))
  assert config.model.image_size == 32 and config.num_train_steps == STEPS
  z = model.encode(np.zeros((2, 32, 32, 3), np.float32))
  assert z.shape == (2, 32) and np.all(np.isfinite(np.asarray(z)))
  ema, params = _weights(full_run, 'ema'), _weights(full_run, 'params')
  assert any(not np.array_equal(a, b) for a, b in zip(ema, params))


def _killed_then_resumed(cmd, env, workdir, kill_at_save):
  """Runs `cmd` (a tests._main_with_hooks command) until it SIGKILLs itself at the save of step `kill_at_save`,
  then again to the end; returns the resumed run's stderr."""
  proc = _run(cmd, dict(env, DAETALKER_TEST_KILL_AT_SAVE=str(kill_at_save)))
  assert proc.returncode == -signal.SIGKILL, proc.stderr[-4000:]
  assert f'[hooks] SIGKILL at the save of step {kill_at_save}' in proc.stderr
  killed_at = _steps(workdir)
  assert killed_at and killed_at[-1] < kill_at_save, killed_at
  proc = _run(cmd, env)
  assert proc.returncode == 0, proc.stderr[-4000:]
  assert 'Resumed from' in proc.stderr and f'at step {killed_at[-1]}' in proc.stderr
  assert f'at step {killed_at[-1]}' in (workdir / 'log.txt').read_text()   # the log file has it too
  return proc.stderr


@pytest.mark.xdist_group('train_full_run')
def test_resume_after_sigkill_matches_uninterrupted_run(full_run, tiny_dataset, cache_dir, tmp_path):
  # Killed at the save of step 4: steps 3 and 4 are lost, the run resumes from checkpoint 2.
  workdir = tmp_path / 'killed'
  _killed_then_resumed(_cmd(workdir, tiny_dataset, module='tests._main_with_hooks'), _env(cache_dir), workdir,
                       kill_at_save=4)
  assert _steps(workdir) == [2, 4, 6]
  for which in ('params', 'ema'):
    for a, b in zip(_weights(workdir, which), _weights(full_run, which), strict=True):
      np.testing.assert_array_equal(a, b)


def test_sigterm_checkpoints_current_step_and_exits(tiny_dataset, cache_dir, tmp_path):
  # SIGTERM while step 5's batch is drawn: step 5 finishes, is saved (checkpoints every 3 steps: 3, then 5),
  # and the run exits 0 far from its 100000 steps.
  workdir = tmp_path / 'term'
  proc = _run(_cmd(workdir, tiny_dataset, '--config.num_train_steps=100000', '--config.checkpoint_every_steps=3',
                   '--config.eval_every_steps=100000', module='tests._main_with_hooks'),
              _env(cache_dir, DAETALKER_TEST_TERM_AT_STEP='4'))
  assert proc.returncode == 0, proc.stderr[-4000:]
  stopped = re.search(r'Stopped by signal at step (\d+)', proc.stderr)
  assert stopped, proc.stderr[-4000:]
  assert int(stopped.group(1)) == 5 and _steps(workdir) == [3, 5]   # the state at the signal is saved


def test_nan_stops_with_clear_error_and_keeps_last_good_checkpoint(tiny_dataset, tmp_path):
  # lr(0) = 0, lr(1) = 5e37 (warmup): the update of step 1 blows the weights up, so the loss of step 2
  # is not finite. Checkpoints 1 and 2 hold finite states; the NaN state is never saved. In this process (the
  # loop raises; main prints the exception's one line): a subprocess would only add imports and a compile.
  from configs import dae as dae_config  # pylint: disable=g-import-not-at-top
  from daetalker_jax import metrics  # pylint: disable=g-import-not-at-top
  from daetalker_jax import train  # pylint: disable=g-import-not-at-top
  config = dae_config.get_config('variant=tiny')
  config.model.update(model_channels=32, channel_mult=(1, 2), enc_channel_mult=(1, 2), embed_channels=32,
                      enc_out_channels=32, enc_num_res_block=1)
  config.data.data_dir, config.num_train_steps, config.eval_every_steps = str(tiny_dataset), STEPS, 0
  config.optim.learning_rate, config.optim.warmup_steps, config.optim.grad_clip = 1e38, 2, 0
  config.checkpoint_every_steps = config.log_every_steps = 1
  workdir = tmp_path / 'nan'
  with pytest.raises(metrics.NonFiniteError, match=r'non-finite [a-z_, ]+ at optimizer step 2 '):
    train.train_and_evaluate(config, str(workdir))
  assert _steps(workdir) == [1, 2]
  for w in _weights(workdir, 'params'):
    assert np.all(np.isfinite(w))


def _free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def test_two_processes_train_like_one_process_on_their_global_batch(tiny_dataset, cache_dir, tmp_path):
  """Two processes (1 device each, jax.distributed over gloo) and one process with 2 devices that reads both
  processes' local batches as its global batch (tests/_global_batch_task.py) reach the same parameters. The
  learning rate is full from the second update on, so that a process reading the other's data, or gradients
  not reduced over the processes, move the parameters visibly elsewhere."""
  flags = ('--config.num_train_steps=2', '--config.checkpoint_every_steps=1', '--config.optim.warmup_steps=1',
           '--config.optim.learning_rate=1e-3', '--config.log_every_steps=1')
  workdir = tmp_path / 'two'
  port = _free_port()
  procs = [subprocess.Popen(
      _cmd(workdir, tiny_dataset, '--config.distributed=True', '--config.eval_every_steps=2', *flags),
      cwd=REPO, env=_env(cache_dir, JAX_COORDINATOR_ADDRESS=f'localhost:{port}', JAX_NUM_PROCESSES='2',
                         JAX_PROCESS_ID=str(i)),
      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for i in range(2)]
  one = tmp_path / 'one'
  single = _run(_cmd(one, tiny_dataset, '--config.task=tests._global_batch_task', '--config.eval_every_steps=0',
                     *flags), _env(cache_dir, devices=2))
  outs = [p.communicate(timeout=900)[1] for p in procs]
  for p, err in zip(procs, outs):
    assert p.returncode == 0, err[-4000:]
  assert single.returncode == 0, single.stderr[-4000:]
  assert 'JAX process 1 / 2; local devices 1, global devices 2' in outs[1]
  assert _steps(workdir) == _steps(one) == [1, 2]
  assert len(list(workdir.glob('events.out.tfevents.*'))) == 1  # only process 0 writes summaries
  assert (workdir / 'recon' / 'step_0000002.png').is_file()
  # Step 1 runs at learning rate 0 (warmup): checkpoint 1 holds the initial weights; step 2 moves them.
  init, two, reference = (_weights(w, 'params', s) for w, s in ((workdir, 1), (workdir, 2), (one, 2)))
  moved = max(float(np.abs(a - b).max()) for a, b in zip(two, init, strict=True))
  gap = max(float(np.abs(a - b).max()) for a, b in zip(two, reference, strict=True))
  assert moved > 5e-4 and gap < 1e-5, (moved, gap)


def test_generic_task_resumes_after_sigkill_like_an_uninterrupted_run(tiny_dataset, cache_dir, tmp_path):
  """The same for a generic method's task (the VQ autoencoder that DiffTalk and the landmark renderer decode with,
  mouth box weighted as the landmark demo trains it): killed at the save of step 4, resumed from checkpoint 2."""
  def cmd(workdir):
    return [sys.executable, '-m', 'tests._main_with_hooks', '--config=configs/autoencoder.py:variant=tiny',
            f'--workdir={workdir}', f'--config.data.data_dir={tiny_dataset}', '--config.num_train_steps=4',
            '--config.checkpoint_every_steps=2', '--config.eval_every_steps=0', '--config.log_every_steps=2',
            '--config.optim.warmup_steps=1', '--config.loss.mouth_weight=5.0', '--verbose']
  uninterrupted, killed = tmp_path / 'uninterrupted', tmp_path / 'killed'
  proc = _run(cmd(uninterrupted), _env(cache_dir))
  assert proc.returncode == 0, proc.stderr[-4000:]
  _killed_then_resumed(cmd(killed), _env(cache_dir), killed, kill_at_save=4)
  assert _steps(killed) == _steps(uninterrupted) == [2, 4]
  for which in ('params', 'ema'):
    a, b = _weights(killed, which), _weights(uninterrupted, which)
    assert len(a) == len(b) > 0 and any(np.abs(x).max() > 0 for x in a)
    for x, y in zip(a, b, strict=True):
      np.testing.assert_array_equal(x, y)
