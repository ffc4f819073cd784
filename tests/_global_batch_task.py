"""A test task: the DAE task whose one process reads, every step, the global batch that two processes of the
real task read together (process 0's local batch, then process 1's), so that a one-process run can be compared
with a two-process run step for step (tests/test_train.py). Use it as --config.task=tests._global_batch_task."""

import dataclasses

import numpy as np

from daetalker_jax.tasks import dae

SHARES = 2


def make_datasets(config, process_index, process_count, start_step=0):
  if (process_index, process_count) != (0, 1):
    raise ValueError('tests._global_batch_task stands for all the processes: run it as one process')
  streams, evals = zip(*(dae.TASK.make_datasets(config, i, SHARES, start_step=start_step) for i in range(SHARES)))

  def global_batches():
    for parts in zip(*streams):
      yield {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
  return global_batches(), evals[0]


TASK = dataclasses.replace(dae.TASK, name='tests._global_batch_task', make_datasets=make_datasets)
