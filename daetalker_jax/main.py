"""Entry point: `python -m daetalker_jax.main --config=configs/dae.py:variant=tiny --workdir=/tmp/dae`.

Flags choose the config file (any field can be overridden: `--config.batch_size=16`) and the working
directory (checkpoints, TensorBoard events, sample grids). `config.task` picks what runs: a training
task from `daetalker_jax/tasks/` through `train.train_and_evaluate`, or a non-training job registered in
`_JOBS` below (e.g. latent extraction).

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

from daetalker_jax import console

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, TensorBoard events and samples.')
config_flags.DEFINE_config_file('config', None, 'Training configuration file.', lock_config=True)
flags.DEFINE_bool('verbose', False, 'Library INFO logs on stderr too (they always go to WORKDIR/log.txt).')
flags.mark_flags_as_required(['config', 'workdir'])

# Non-training jobs by config.task: 'module:function' called as function(config, workdir).
_JOBS: dict[str, str] = {
    'extract': 'daetalker_jax.extract:run',   # workdir = the DAE's; latents written beside the dataset
}


def _initialize_distributed() -> None:
  """`jax.distributed.initialize`, from the environment when JAX_NUM_PROCESSES/JAX_PROCESS_ID are set."""
  kwargs = {}
  if 'JAX_NUM_PROCESSES' in os.environ:
    kwargs = dict(coordinator_address=os.environ['JAX_COORDINATOR_ADDRESS'],
                  num_processes=int(os.environ['JAX_NUM_PROCESSES']),
                  process_id=int(os.environ['JAX_PROCESS_ID']))
  # On CPU, cross-process collectives use gloo (JAX's default `jax_cpu_collectives_implementation`).
  jax.distributed.initialize(**kwargs)


def run(config, workdir: str) -> None:
  if config.get('distributed', False):
    _initialize_distributed()
  logging.info('JAX process %d / %d; local devices %d, global devices %d (%s)', jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count(), jax.devices()[0].platform)
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
  run(FLAGS.config, FLAGS.workdir)


if __name__ == '__main__':
  jax.config.config_with_absl()
  app.run(main)
