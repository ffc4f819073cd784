"""A real checkpoint of a fresh, perturbed model, for tests that need trained-looking weights fast."""

import pathlib

from flax import nnx
import jax
import jax.numpy as jnp

from daetalker_jax import checkpoint
from daetalker_jax import tasks
from daetalker_jax import train


def save_random_checkpoint(config, workdir: pathlib.Path, data_stats: dict, seed: int, step: int = 0) -> pathlib.Path:
  """A fresh model of `config.task`, weights perturbed by N(0, 0.05²) (diffae zero-initialises its output
  convolutions, so an unperturbed DAE would ignore its latent), saved as a real checkpoint of step `step`."""
  model = tasks.get_task(config.task).create_model(config, nnx.Rngs(seed))
  _, params, _, other = nnx.split(model, nnx.Param, nnx.RngState, ...)
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed + 100), len(leaves))
  params = jax.tree.unflatten(treedef, [p + 0.05 * jax.random.normal(k, p.shape, p.dtype)
                                        for p, k in zip(leaves, keys)])
  tx, _ = train.create_optimizer(config)
  state = train.TrainState(step=jnp.full((), step, jnp.int32), params=params, other=other,
                           opt_state=tx.init(params), ema=jax.tree.map(jnp.copy, params))
  ckpt = checkpoint.Checkpointer(str(workdir), async_save=False)
  ckpt.save(step, state, checkpoint.make_meta(config, step, data_stats))
  ckpt.wait_until_finished()
  ckpt.close()
  return workdir
