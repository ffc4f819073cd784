"""Entry point: `python -m daetalker_jax.main --config=configs/dae.py:variant=tiny --workdir=/tmp/dae`.

Flags choose the config file (any field can be overridden: `--config.batch_size=16`) and the working
directory (checkpoints, TensorBoard events, sample grids). `config.task` picks what runs: a training
task from `daetalker_jax/tasks/` through `train.train_and_evaluate`, or a non-training job registered in
`_JOBS` below (e.g. latent extraction).

Backend: the run starts by logging the backend and the process / device counts. On a CPU backend it
refuses what is meant for accelerators (`config.distributed=True`, the 128/256 px DAE variants), so that a
TPU VM or GPU host with the CPU-only jaxlib (`make install` without ACCEL=tpu|cuda12) fails at once instead
of training on its CPU. `--allow_cpu` (or `config.allow_cpu=True` in a config file, or choosing the CPU
explicitly with JAX_PLATFORMS=cpu) runs them on the CPU anyway.

Multi-host: with `--config.distributed=True` every process calls `jax.distributed.initialize()`, which
auto-detects Cloud TPU pods, SLURM and Open MPI; elsewhere set JAX_COORDINATOR_ADDRESS=host:port,
JAX_NUM_PROCESSES and JAX_PROCESS_ID (see docs/TRAINING.md and scripts/launch_*.sh).
"""

import importlib
import os

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags
import tensorflow as tf

import daetalker_jax
from daetalker_jax import console

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, TensorBoard events and samples.')
config_flags.DEFINE_config_file('config', None, 'Training configuration file.', lock_config=True)
flags.DEFINE_bool('verbose', False, 'Library INFO logs on stderr too (they always go to WORKDIR/log.txt).')
flags.DEFINE_bool('allow_cpu', False, 'Run distributed jobs and the 128/256 px DAE variants on a CPU backend '
                  '(refused by default: there they mean the accelerator jaxlib is missing).')
flags.mark_flags_as_required(['config', 'workdir'])

# Non-training jobs by config.task: 'module:function' called as function(config, workdir).
_JOBS: dict[str, str] = {
    'extract': 'daetalker_jax.extract:run',   # workdir = the DAE's; latents written beside the dataset
}
# DAE variants (configs/dae.py) sized for accelerators: a CPU takes days per epoch.
ACCELERATOR_VARIANTS = ('128', '256')


class BackendError(RuntimeError):
  """The config needs an accelerator and JAX found only the CPU."""


def cpu_requested(platforms: str | None = None) -> bool:
  """Whether `platforms` (by default JAX's: JAX_PLATFORMS or --jax_platforms) chooses the CPU alone. The package's
  own choice on a CPU host with libtpu (daetalker_jax.AUTO_CPU) is not the user's."""
  if platforms is None and daetalker_jax.AUTO_CPU:
    return False
  platforms = jax.config.jax_platforms if platforms is None else platforms
  return [p.strip() for p in (platforms or '').split(',')] == ['cpu']


def check_backend(config, platform: str, *, allow_cpu: bool = False) -> str | None:
  """Why `config` must not run on the `platform` backend ('cpu', 'gpu', 'tpu'), or None when it may.

  On a CPU backend, distributed runs and the ACCELERATOR_VARIANTS are refused unless `allow_cpu` (the flag,
  or the config's own `allow_cpu` field) says the CPU is meant.
  """
  if platform != 'cpu' or allow_cpu or config.get('allow_cpu', False):
    return None
  what = []
  if config.get('distributed', False):
    what.append('config.distributed=True')
  if str(config.get('variant', '')) in ACCELERATOR_VARIANTS:
    what.append(f'variant {config.variant}')
  if not what:
    return None
  return (f'{" and ".join(what)} on a CPU backend: install the accelerator jaxlib (make install ACCEL=tpu or '
          f'ACCEL=cuda12, docs/TRAINING.md), or pass --allow_cpu to run on the CPU anyway')


def _initialize_distributed() -> None:
  """`jax.distributed.initialize`, from the environment when JAX_NUM_PROCESSES/JAX_PROCESS_ID are set."""
  kwargs = {}
  if 'JAX_NUM_PROCESSES' in os.environ:
    kwargs = dict(coordinator_address=os.environ['JAX_COORDINATOR_ADDRESS'],
                  num_processes=int(os.environ['JAX_NUM_PROCESSES']),
                  process_id=int(os.environ['JAX_PROCESS_ID']))
  # On CPU, cross-process collectives use gloo (JAX's default `jax_cpu_collectives_implementation`).
  jax.distributed.initialize(**kwargs)


def run(config, workdir: str, *, allow_cpu: bool = False) -> None:
  """Runs `config.task`; raises BackendError first when the backend cannot serve the config (check_backend)."""
  if config.get('distributed', False):
    _initialize_distributed()   # before anything touches a backend
  platform = jax.default_backend()
  logging.info('JAX process %d / %d; local devices %d, global devices %d (%s)', jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count(), platform)
  console.stage(f'[main] backend {platform} ({jax.devices()[0].device_kind}): {jax.device_count()} devices, '
                f'process {jax.process_index() + 1} of {jax.process_count()}')
  problem = check_backend(config, platform, allow_cpu=allow_cpu or cpu_requested())
  if problem:
    raise BackendError(problem)
  if config.task in _JOBS:
    module, fn = _JOBS[config.task].split(':')
    getattr(importlib.import_module(module), fn)(config, workdir)
  else:
    from daetalker_jax import train  # pylint: disable=g-import-not-at-top
    train.train_and_evaluate(config, workdir)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Too many command-line arguments: {argv[1:]}')
  log = console.setup(FLAGS.workdir, verbose=FLAGS.verbose)
  console.stage(f'[main] task {FLAGS.config.task} in {FLAGS.workdir} (logs: {log})')
  # TensorFlow only feeds data: keep it off the accelerators so it cannot take their memory.
  tf.config.set_visible_devices([], 'GPU')
  try:
    run(FLAGS.config, FLAGS.workdir, allow_cpu=FLAGS.allow_cpu)
  except BackendError as e:
    logging.warning('refused: %s', e)     # to WORKDIR/log.txt; the terminal gets the line below
    raise SystemExit(f'[main] error: {e}') from None


if __name__ == '__main__':
  jax.config.config_with_absl()
  app.run(main)
