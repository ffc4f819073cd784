"""Checkpoints: one orbax CheckpointManager in `WORKDIR/checkpoints` with items `state` and `meta`.

`state` is the train state (params, opt_state, ema, step), saved asynchronously and restored straight
into its sharded layout (every process reads only its own shards). `meta` is JSON: the config that made
the run and the data statistics, so `load_model(workdir)` can rebuild the model with no other input.
Orbax writes each step to a temporary directory and renames it when complete, so a killed run never
leaves a checkpoint that looks complete; in multi-process runs orbax coordinates the processes and only
process 0 writes the JSON and finalises the directory.
"""

import json
import os
from typing import Any

from absl import logging
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

OFFICIAL_SUFFIXES = ('.ckpt', '.pt', '.pth', '.bin', '.safetensors')


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), 'checkpoints')


_REPLICA_PARALLEL: bool | None = None     # what this process registered (None: orbax's default, untouched)


def _register_array_handler() -> None:
  """Replica-parallel saving only where several processes write.

  Orbax's default splits every replicated array into one slice per replica so that the hosts of a pod share
  its writing. In one process every byte is written by the same host anyway; there the split only adds one
  small device program per slice (a tiny DiffTalk's two saves on 8 CPU devices: 56 s of slicing).
  """
  global _REPLICA_PARALLEL
  want = jax.process_count() > 1
  if _REPLICA_PARALLEL != want:
    ocp.type_handlers.register_type_handler(
        jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=want), override=True)
    _REPLICA_PARALLEL = want


class Checkpointer:
  """A thin wrapper around `ocp.CheckpointManager` for the train state and its JSON meta."""

  def __init__(self, workdir: str, *, keep: int = 3, async_save: bool = True, read_only: bool = False):
    _register_array_handler()
    self.directory = checkpoint_dir(workdir)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=not read_only, read_only=read_only,
        enable_async_checkpointing=async_save)
    self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=('state', 'meta'))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
    """Starts an (async) save of `state` at `step`; returns once the arrays are copied off the devices."""
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)

  def restore(self, step: int | None, abstract_state: Any) -> tuple[Any, dict[str, Any]]:
    """Restores into `abstract_state` (ShapeDtypeStructs carrying the target shardings)."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'{self.directory}: no checkpoint to restore')
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
    return restored['state'], restored['meta']

  def restore_meta(self, step: int | None = None) -> dict[str, Any]:
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'{self.directory}: no checkpoint found')
    return self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']

  def restore_subtree(self, step: int | None, abstract_subtree: dict[str, Any]) -> dict[str, Any]:
    """Restores only some top-level fields of the state (e.g. {'ema': ...}), skipping the optimizer."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'{self.directory}: no checkpoint found')
    restore_args = jax.tree.map(
        lambda x: ocp.ArrayRestoreArgs(sharding=x.sharding, global_shape=x.shape, dtype=x.dtype)
        if getattr(x, 'sharding', None) is not None else ocp.RestoreArgs(restore_type=np.ndarray),
        abstract_subtree)
    restored = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
        item=abstract_subtree, restore_args=restore_args, partial_restore=True)))
    return restored['state']

  def wait_until_finished(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


def make_meta(config: ml_collections.ConfigDict, step: int, data_stats: dict[str, Any] | None) -> dict[str, Any]:
  """The JSON item saved beside the state."""
  return {'config': json.loads(config.to_json_best_effort()), 'step': int(step),
          'data_stats': data_stats or {}, 'process_count': jax.process_count()}


def config_from_meta(meta: dict[str, Any]) -> ml_collections.ConfigDict:
  """The training config stored in a checkpoint's meta (tuples come back as lists; the model converts)."""
  return ml_collections.ConfigDict(meta['config'])


def is_official_checkpoint(path: str) -> bool:
  return os.path.isfile(path) and path.endswith(OFFICIAL_SUFFIXES)


def load_model(workdir: str, which: str = 'ema', step: int | None = None):
  """Rebuilds a trained model from a workdir for extraction / generation: returns (model, config).

  `which` is 'ema' (the weights to sample with) or 'params' (the raw optimizer weights). Only those
  weights are read; the optimizer state stays on disk. Arrays are placed on the default device (one
  process); callers that shard re-place them.
  """
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from daetalker_jax import tasks  # pylint: disable=g-import-not-at-top
  if which not in ('ema', 'params'):
    raise ValueError(f"load_model: which must be 'ema' or 'params', got {which!r}")
  ckpt = Checkpointer(workdir, read_only=True, async_save=False)
  try:
    step = ckpt.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'{checkpoint_dir(workdir)}: no checkpoint to load a model from')
    config = config_from_meta(ckpt.restore_meta(step))
    task = tasks.get_task(config.task)
    abstract = nnx.eval_shape(lambda: task.create_model(config, nnx.Rngs(0)))
    graphdef, abs_params, rest = nnx.split(abstract, nnx.Param, ...)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), abs_params)
    weights = ckpt.restore_subtree(step, {which: target})[which]
  finally:
    ckpt.close()
  # Non-parameter variables (RNG streams) are recreated rather than restored: jitted, so XLA drops the parameter
  # initialisers (an eager build runs every initialiser op by op: ~10 s for a small model on a CPU).
  fresh = jax.jit(lambda: nnx.split(task.create_model(config, nnx.Rngs(0)), nnx.Param, ...)[2])()
  del rest
  model = nnx.merge(graphdef, weights, fresh)
  model.eval()
  logging.info('Loaded %s weights of step %d from %s', which, step, workdir)
  return model, config


def load_init_weights(init_from: str, abstract_params: Any, create_model_fn) -> Any:
  """Weights to start a run from (`config.init_from`), matching `abstract_params` (with shardings).

  `init_from` is either another workdir (its latest EMA weights) or an official diffae checkpoint file
  (.ckpt/.pt/.safetensors), converted by `daetalker_jax.importers.diffae`.
  """
  if is_official_checkpoint(init_from):
    from flax import nnx  # pylint: disable=g-import-not-at-top
    from daetalker_jax.importers import diffae  # pylint: disable=g-import-not-at-top
    model = nnx.eval_shape(create_model_fn)  # no random init of weights about to be overwritten
    diffae.import_state_dict(model, diffae.load_state_dict(init_from), source=init_from)
    params = nnx.state(model, nnx.Param)
    return jax.tree.map(lambda x, a: jax.device_put(x, a.sharding), params, abstract_params)
  if os.path.isdir(checkpoint_dir(init_from)):
    ckpt = Checkpointer(init_from, read_only=True, async_save=False)
    try:
      return ckpt.restore_subtree(None, {'ema': abstract_params})['ema']
    finally:
      ckpt.close()
  raise FileNotFoundError(f'config.init_from={init_from!r}: neither a workdir with checkpoints/ nor a '
                          f'checkpoint file ending in {OFFICIAL_SUFFIXES}')
