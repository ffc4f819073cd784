"""Task `dae`: train the diffusion autoencoder (semantic encoder + conditional UNet) on face frames.

Loss: diffae's L2 eps loss at a uniformly drawn t; z_sem = encoder(x0) is computed inside the loss, so
the encoder learns end to end through the UNet's conditioning (no other loss touches it).
Evaluation: a fixed set of validation frames is encoded with the EMA model and decoded by DDIM twice —
from its DDIM-inverted x_T (how well the pair (z_sem, x_T) reconstructs the frame) and from one shared
noise image (what generation does: DAE-Talker decodes every frame from the same x_T) — written as a
grid (rows: input, inverted-x_T decode, shared-x_T decode) to TensorBoard and to WORKDIR/recon/*.png,
with the PSNR of both decodes.
"""

import itertools
import os
from typing import Any

from absl import logging
from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from daetalker_jax import diffusion
from daetalker_jax import metrics as metrics_lib
from daetalker_jax.models import unet

P = jax.P


def create_model(config: ml_collections.ConfigDict, rngs: nnx.Rngs) -> unet.DiffusionAutoencoder:
  """The DAE of `config.model`, computing in `config.dtype` with float32 parameters."""
  cfg = unet.config_from_dict(config.model, dtype=config.dtype, param_dtype='float32', remat=config.remat)
  return unet.DiffusionAutoencoder(cfg, rngs=rngs)


def _schedule(config: ml_collections.ConfigDict):
  return diffusion.schedule_from_config(config.diffusion)


# --------------------------------------------------------------------------------------------------------
# Data.
# --------------------------------------------------------------------------------------------------------
def make_datasets(config: ml_collections.ConfigDict, process_index: int, process_count: int,
                  start_step: int = 0) -> tuple[Any, dict[str, np.ndarray]]:
  """Per-process training iterator (positioned at `start_step`) and the fixed validation frames.

  Every process reads its own 1/process_count of the frames, batch_size/process_count per step. The
  stream is deterministic given (seed, process): a resumed run skips the `start_step` batches already
  consumed, so it sees exactly the batches an uninterrupted run would.
  """
  from daetalker_jax.data import pipelines  # pylint: disable=g-import-not-at-top
  if not config.data.data_dir:
    raise ValueError('config.data.data_dir is empty: pass --config.data.data_dir=DATA_DIR '
                     '(a folder written by `python -m data_prep.prepare`)')
  size = config.model.image_size
  stream = pipelines.frames_pipeline(
      config.data.data_dir, 'train', image_size=size, batch_size=config.batch_size // process_count,
      seed=config.seed, train=True, process_index=process_index, process_count=process_count,
      shuffle_buffer=config.data.shuffle_buffer, hflip=config.data.hflip)
  train_iter = ({'image': b['image']} for b in stream)  # (B,H,W,3); the pose is not used by the DAE
  if start_step:
    logging.info('Skipping %d already-trained batches of the input stream.', start_step)
    train_iter = itertools.islice(train_iter, start_step, None)
  # Every process reads the same validation frames (their eval computations must agree), spread evenly
  # over the first num_eval_images*16 frames of the val split rather than one clip's consecutive frames.
  eval_batch = next(pipelines.frames_pipeline(
      config.data.data_dir, 'val', image_size=size, batch_size=config.num_eval_images * 16, seed=0,
      train=False, process_index=0, process_count=1))
  images = np.asarray(eval_batch['image'], np.float32)[np.asarray(eval_batch['mask'], bool)]
  if not len(images):
    raise ValueError(f'{config.data.data_dir}: the val split has no frames for the reconstruction eval')
  images = images[np.linspace(0, len(images) - 1, min(config.num_eval_images, len(images))).round().astype(int)]
  return train_iter, {'image': images}


def data_stats(config: ml_collections.ConfigDict) -> dict[str, Any]:
  return {'data_dir': os.path.abspath(config.data.data_dir) if config.data.data_dir else '',
          'image_size': int(config.model.image_size)}


# --------------------------------------------------------------------------------------------------------
# Loss.
# --------------------------------------------------------------------------------------------------------
def loss_fn(config: ml_collections.ConfigDict, model: unet.DiffusionAutoencoder, batch: dict[str, jax.Array],
            rng: jax.Array, *, train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Mean L2 loss (diffae): t ~ U{0..T-1}, x_t = q_sample(x0, t, eps), ||eps - eps_θ(x_t, t, z)||²
  (or the same on v when config.diffusion.prediction = 'v')."""
  del train  # Dropout mode is set on the model by the caller.
  x0 = batch['image']                                   # (B,H,W,3) in [-1, 1]
  schedule = _schedule(config)
  cond = model.encode(x0)                               # (B, D), differentiated: encoder trains end to end
  loss, _ = diffusion.diffusion_loss(lambda x, t, c: model(x, t, cond=c), schedule, x0, rng, cond=cond)
  return loss, {}


# --------------------------------------------------------------------------------------------------------
# Evaluation.
# --------------------------------------------------------------------------------------------------------
_RECONSTRUCT_CACHE: dict[Any, Any] = {}


def _reconstruct_fn(graphdef, model_cfg, mesh, steps: int, schedule: diffusion.Schedule):
  """Jitted encode → DDIM invert → DDIM decode (from the inverted and from a shared x_T); replicated out.

  Cached by the model's (hashable) UNetConfig, which determines its graph, so periodic evals compile once.
  """
  key = (model_cfg, mesh, steps, schedule.num_timesteps, schedule.beta_start, schedule.beta_end,
         schedule.prediction)
  if key not in _RECONSTRUCT_CACHE:
    _RECONSTRUCT_CACHE[key] = _build_reconstruct_fn(graphdef, mesh, steps, schedule)
  return _RECONSTRUCT_CACHE[key]


def _build_reconstruct_fn(graphdef, mesh, steps, schedule):

  def reconstruct(state, x0, noise):
    model = nnx.merge(graphdef, state)
    model.eval()
    eps_fn = diffusion.model_eps_fn(model, schedule)
    cond = model.encode(x0)                                                  # (N, D)
    x_T = diffusion.ddim_invert(eps_fn, schedule, x0, cond, steps=steps)     # (N,H,W,3)
    from_inverted = diffusion.ddim_sample(eps_fn, schedule, x_T, cond, steps=steps)
    shared = jnp.broadcast_to(noise, x0.shape)                               # one x_T for every frame
    from_shared = diffusion.ddim_sample(eps_fn, schedule, shared, cond, steps=steps)
    return from_inverted, from_shared

  rep = jax.sharding.NamedSharding(mesh, P())
  return jax.jit(reconstruct, out_shardings=(rep, rep))


def evaluate(config: ml_collections.ConfigDict, model: nnx.Module, ema_model: nnx.Module,
             eval_inputs: dict[str, np.ndarray], workdir: str, step: int, writer) -> dict[str, float]:
  """EMA reconstructions of the fixed validation frames: grid image + PNG + PSNR."""
  del model  # Samples come from the EMA weights, as in diffae.
  graphdef, state = nnx.split(ema_model)
  mesh = jax.tree.leaves(state)[0].sharding.mesh
  rep = jax.sharding.NamedSharding(mesh, P())
  x0 = eval_inputs['image']                                                  # (N,H,W,3)
  noise = jax.random.normal(jax.random.key(config.seed + 1), (1, *x0.shape[1:]), jnp.float32)
  d = config.diffusion
  fn = _reconstruct_fn(graphdef, ema_model.cfg, mesh, int(d.sample_steps), _schedule(config))
  to_global = lambda a: jax.make_array_from_process_local_data(rep, np.asarray(a), a.shape)
  rec_inv, rec_shared = fn(state, to_global(x0), to_global(np.asarray(noise)))
  rec_inv = np.asarray(rec_inv.addressable_data(0))
  rec_shared = np.asarray(rec_shared.addressable_data(0))
  grid = metrics_lib.image_grid([x0, np.clip(rec_inv, -1, 1), np.clip(rec_shared, -1, 1)])
  writer.write_images(step, {'eval/reconstructions': grid[None]})
  if jax.process_index() == 0:
    metrics_lib.write_png(os.path.join(workdir, 'recon', f'step_{step:07d}.png'), grid)
  return {'eval/psnr_inverted': float(np.mean(metrics_lib.psnr(rec_inv, x0))),
          'eval/psnr_shared_noise': float(np.mean(metrics_lib.psnr(rec_shared, x0)))}
