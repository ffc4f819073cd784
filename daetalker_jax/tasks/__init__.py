"""Training tasks: the typed protocol every task implements, and the lookup by `config.task`.

A task module `daetalker_jax/tasks/<name>.py` defines `TASK = Task(...)`. The fields are its whole
interface with the training loop (train.py); optional hooks are declared as None, never probed for.

  create_model(config, rngs) -> nnx.Module
  make_datasets(config, process_index, process_count, start_step=0) -> (train_iter, eval_inputs)
      train_iter yields process-local numpy batches, positioned at `start_step`.
  loss_fn(config, model, batch, rng, *, train) -> (loss, metrics)
  make_evaluator(config, workdir) -> Evaluator
      called once per run; the evaluator owns its compiled functions (nothing is cached at module level)
      and is called at every eval step as evaluator(model, ema_model, eval_inputs, step, writer) -> metrics.
  data_stats(config) -> dict                  stored in the checkpoint's JSON meta (default: {})
  frozen(path) -> bool | None                 parameters the optimizer leaves alone (train.create_optimizer;
                                              config.optim.frozen names whole top-level modules as well)
  load_pretrained(config, model) -> bool | None   loads weights into a fresh model after init
  batch_spec(config) -> {name: (shape, dtype)}    one training example of make_datasets' stream, without data
                                              (the pod plan compiles the train step on it: daetalker_jax/plan.py)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
import dataclasses
import importlib
import re
from typing import Any, Protocol

from flax import nnx
import jax
import ml_collections
import numpy as np

Config = ml_collections.ConfigDict


class Evaluator(Protocol):
  """A task's periodic evaluation, built once per run by `Task.make_evaluator`."""

  def __call__(self, model: nnx.Module, ema_model: nnx.Module, eval_inputs: dict[str, np.ndarray], step: int,
               writer: Any) -> dict[str, float]:
    ...


def _no_stats(config: Config) -> dict[str, Any]:
  del config
  return {}


@dataclasses.dataclass(frozen=True)
class Task:
  """Everything the training loop needs from one trainable thing (see the module doc)."""
  name: str
  create_model: Callable[[Config, nnx.Rngs], nnx.Module]
  make_datasets: Callable[..., tuple[Iterator[dict[str, np.ndarray]], dict[str, np.ndarray]]]
  loss_fn: Callable[..., tuple[jax.Array, dict[str, jax.Array]]]
  make_evaluator: Callable[[Config, str], Evaluator]
  data_stats: Callable[[Config], dict[str, Any]] = _no_stats
  frozen: Callable[[tuple[str, ...]], bool] | None = None
  load_pretrained: Callable[[Config, nnx.Module], bool] | None = None
  batch_spec: Callable[[Config], dict[str, tuple[tuple[int, ...], Any]]] | None = None


def compute_dtype(config: Config, platform: str | None = None) -> str:
  """The compute dtype of `config.dtype`: 'auto' (the full variants' default) is bfloat16 on an accelerator and
  float32 on the CPU (`platform`, default JAX's backend); parameters and Adam moments stay float32 either way."""
  dtype = str(config.get('dtype', 'float32'))
  if dtype != 'auto':
    return dtype
  return 'float32' if (platform or jax.default_backend()) == 'cpu' else 'bfloat16'


def example_spec(batch: dict[str, np.ndarray]) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
  """(shape, dtype) of one example of a numpy batch (the leading axis dropped)."""
  return {k: (tuple(np.shape(v)[1:]), np.asarray(v).dtype) for k, v in batch.items()}


def global_batch(spec: dict[str, tuple[tuple[int, ...], Any]], batch_size: int,
                 sharding: Any = None) -> dict[str, jax.ShapeDtypeStruct]:
  """The abstract global batch (`batch_size` examples of `spec`), with `sharding` attached when given."""
  return {k: jax.ShapeDtypeStruct((batch_size, *shape), dtype, sharding=sharding) for k, (shape, dtype) in spec.items()}


def get_task(name: str) -> Task:
  """The `TASK` of `daetalker_jax.tasks.<name>` (or, for a dotted name, of that module)."""
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
  task = getattr(module, 'TASK', None)
  if not isinstance(task, Task):
    raise ValueError(f'task module {module_name} defines no TASK = tasks.Task(...)')
  return task
