"""Training tasks, chosen by name from `config.task` (a module `daetalker_jax.tasks.<name>`).

A task module provides (see docs/ARCHITECTURE.md):
  create_model(config, rngs) -> nnx.Module
  make_datasets(config, process_index, process_count, start_step=0) -> (train_iter, eval_inputs)
  loss_fn(config, model, batch, rng, *, train) -> (loss, metrics)
  evaluate(config, model, ema_model, eval_inputs, workdir, step, writer) -> metrics
  data_stats(config) -> dict  (optional: stored in the checkpoint's JSON meta)
  frozen(path) -> bool  (optional: parameters the optimizer leaves alone, see train.create_optimizer)
  load_pretrained(config, model) -> bool  (optional: load weights into a fresh model after init)
"""

import importlib
import re
import types

_REQUIRED = ('create_model', 'make_datasets', 'loss_fn', 'evaluate')


def get_task(name: str) -> types.ModuleType:
  """Imports `daetalker_jax.tasks.<name>` (or, for a dotted name, that module) and checks its API."""
  if not re.fullmatch(r'[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*', name or ''):
    raise ValueError(f'config.task={name!r} is not a valid task name')
  module_name = name if '.' in name else f'{__name__}.{name}'
  try:
    module = importlib.import_module(module_name)
  except ModuleNotFoundError as e:
    if e.name != module_name:
      raise
    raise ValueError(f'config.task={name!r}: no module {module_name} '
                     f'(tasks live in daetalker_jax/tasks/<name>.py)') from e
  missing = [f for f in _REQUIRED if not hasattr(module, f)]
  if missing:
    raise ValueError(f'task module {module_name} lacks the task functions {missing}')
  return module
