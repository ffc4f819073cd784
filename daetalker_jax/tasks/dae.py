"""Task `dae`: train the diffusion autoencoder (semantic encoder + conditional UNet) on face frames.

Loss: diffae's L2 eps loss at a uniformly drawn t; z_sem = encoder(x0) is computed inside the loss, so
the encoder learns end to end through the UNet's conditioning (no other loss touches it).
Evaluation (through the DAE codec, inference/dae_codec.py): a fixed set of validation frames is encoded
with the EMA model and decoded by DDIM twice —
from its DDIM-inverted x_T (how well the pair (z_sem, x_T) reconstructs the frame) and from one shared
noise image (what generation does: DAE-Talker decodes every frame from the same x_T) — written as a
grid (rows: input, inverted-x_T decode, shared-x_T decode) to TensorBoard and to WORKDIR/recon/*.png,
with the PSNR of both decodes, and the strict mouth metrics (docs/EVALUATION.md) of the shared-x_T decodes
against their own input frames: does the latent alone carry the open mouth? (nan off synthface.)
"""

import os
from typing import Any
import warnings

from absl import logging
from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from daetalker_jax import diffusion
from daetalker_jax import eval_metrics as em
from daetalker_jax import metrics as metrics_lib
from daetalker_jax import tasks
from daetalker_jax.inference import dae_codec
from daetalker_jax.models import unet



def create_model(config: ml_collections.ConfigDict, rngs: nnx.Rngs) -> unet.DiffusionAutoencoder:
  """The DAE of `config.model`, computing in `config.dtype` with float32 parameters."""
  cfg = unet.config_from_dict(config.model, dtype=tasks.compute_dtype(config), param_dtype='float32', remat=config.remat)
  return unet.DiffusionAutoencoder(cfg, rngs=rngs)


def _schedule(config: ml_collections.ConfigDict):
  return diffusion.schedule_from_config(config.diffusion)


# --------------------------------------------------------------------------------------------------------
# Data.
# --------------------------------------------------------------------------------------------------------
def train_keys(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The frame fields a training batch carries: (B,H,W,3) images; the pose is not used by the DAE; the mouth box
  only by a mouth-weighted loss, the mouth points only by the probe."""
  keys = ('image',)
  if _mouth_weight(config) != 1.0:
    keys += ('mouth_box', 'mouth_valid')
  if _probe_weight(config):
    keys += ('mouth_points', 'mouth_valid')
  return tuple(dict.fromkeys(keys))


def batch_spec(config: ml_collections.ConfigDict) -> dict[str, tuple[tuple[int, ...], Any]]:
  """One training example of `make_datasets`' stream (shapes and dtypes), without data."""
  from daetalker_jax.data import pipelines  # pylint: disable=g-import-not-at-top
  spec = pipelines.frame_example_spec(int(config.model.image_size))
  return {k: spec[k] for k in train_keys(config)}


def make_datasets(config: ml_collections.ConfigDict, process_index: int, process_count: int,
                  start_step: int = 0) -> tuple[Any, dict[str, np.ndarray]]:
  """Per-process training iterator (positioned at `start_step`) and the fixed validation frames.

  Every process reads only its own 1/process_count of the frames, batch_size/process_count per step. The
  stream is deterministic given (seed, process): a resumed run starts it at batch `start_step` by index
  (nothing before it is decoded), so it sees exactly the batches an uninterrupted run would.
  """
  from daetalker_jax.data import pipelines  # pylint: disable=g-import-not-at-top
  if not config.data.data_dir:
    raise ValueError('config.data.data_dir is empty: pass --config.data.data_dir=DATA_DIR '
                     '(a folder written by `python -m data_prep.prepare`)')
  size = config.model.image_size
  stream = pipelines.frames_pipeline(
      config.data.data_dir, 'train', image_size=size, batch_size=config.batch_size // process_count,
      seed=config.seed, train=True, process_index=process_index, process_count=process_count,
      start_batch=start_step, hflip=config.data.hflip)
  if start_step:
    logging.info('Input stream positioned at batch %d (the batches before it are not read).', start_step)
  keys = train_keys(config)
  train_iter = ({k: b[k] for k in keys} for b in stream)
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
def _mouth_weight(config: ml_collections.ConfigDict) -> float:
  return float((config.get('loss', None) or {}).get('mouth_weight', 1.0))


def mouth_pixel_weight(config: ml_collections.ConfigDict, batch: dict[str, jax.Array],
                       size: tuple[int, int]) -> jax.Array | None:
  """(B, H, W, 1) loss weights: config.loss.mouth_weight inside the mouth box (landmarks 48-67, grown by
  `mouth_margin` of its size on each side) of the frames that have landmarks, 1 elsewhere; None when the weight
  is 1 (off). Shared by the DAE and the autoencoder tasks, whose batches carry mouth_box/mouth_valid then."""
  weight = _mouth_weight(config)
  if weight == 1.0:
    return None
  if 'mouth_box' not in batch:
    raise ValueError('config.loss.mouth_weight needs batches with mouth_box/mouth_valid (make_datasets)')
  return diffusion.box_weight(batch['mouth_box'], batch['mouth_valid'], size, weight,
                              margin=float(config.loss.get('mouth_margin', 0.0)))


def _probe_weight(config: ml_collections.ConfigDict) -> float:
  return float((config.get('loss', None) or {}).get('mouth_probe_weight', 0.0))


PROBE_OUTPUTS = 42   # the mouth probe's target: mouth centre (2) + 20 mouth landmarks relative to it (40)


def mouth_probe_target(points: jax.Array) -> jax.Array:
  """(B, 20, 2) mouth landmarks as fractions of the side -> (B, 42): the centre in [-1, 1] and the shape
  (points minus centre) ×10, so that opening and width are O(1) numbers rather than a few hundredths."""
  centre = points.mean(axis=1)
  shape = (points - centre[:, None]) * 10.0
  return jnp.concatenate([centre * 2.0 - 1.0, shape.reshape(points.shape[0], -1)], axis=1)


def loss_fn(config: ml_collections.ConfigDict, model: unet.DiffusionAutoencoder, batch: dict[str, jax.Array],
            rng: jax.Array, *, train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Mean L2 loss (diffae): t ~ U{0..T-1}, x_t = q_sample(x0, t, eps), ||eps - eps_θ(x_t, t, z)||²
  (or the same on v when config.diffusion.prediction = 'v').

  Options of `config.loss` (absent or off: diffae's plain loss): `mouth_weight` > 1 weighs the pixels of the
  mouth box (landmarks 48-67, grown by `mouth_margin` of its size on each side) that much more, in frames
  that have landmarks; `snr_gamma` > 0 applies min-SNR-γ timestep weighting; `mouth_probe_weight` > 0 adds
  that times the mean squared error of the model's linear probe (z_sem -> mouth landmarks, `mouth_probe_target`)
  in frames with landmarks, so the encoder must put the mouth's shape into z_sem (metrics: probe_loss).
  """
  del train  # Dropout mode is set on the model by the caller.
  x0 = batch['image']                                   # (B,H,W,3) in [-1, 1]
  schedule = _schedule(config)
  opts = config.get('loss', None) or {}
  pixel_weight = mouth_pixel_weight(config, batch, x0.shape[1:3])
  gamma = float(opts.get('snr_gamma', 0.0)) or None
  cond = model.encode(x0)                               # (B, D), differentiated: encoder trains end to end
  loss, _ = diffusion.diffusion_loss(lambda x, t, c: model(x, t, cond=c), schedule, x0, rng, cond=cond,
                                     pixel_weight=pixel_weight, snr_gamma=gamma)
  metrics = {}
  if _probe_weight(config):
    if getattr(model, 'probe', None) is None:
      raise ValueError(f'config.loss.mouth_probe_weight needs config.model.enc_probe_outputs={PROBE_OUTPUTS}')
    if 'mouth_points' not in batch:
      raise ValueError('config.loss.mouth_probe_weight needs batches with mouth_points/mouth_valid (make_datasets)')
    err = jnp.mean(jnp.square(model.probe(cond) - mouth_probe_target(batch['mouth_points'])), axis=1)
    valid = batch['mouth_valid'].astype(jnp.float32)
    probe_loss = jnp.sum(err * valid) / jnp.maximum(jnp.sum(valid), 1.0)
    loss = loss + _probe_weight(config) * probe_loss
    metrics['probe_loss'] = probe_loss
  return loss, metrics


# --------------------------------------------------------------------------------------------------------
# Evaluation.
# --------------------------------------------------------------------------------------------------------
def strict_mouth_scalars(rec: np.ndarray, real: np.ndarray, name: str) -> dict[str, float]:
  """eval/{strict_r,open_recall,amplitude_ratio}_<name>: strict mouth metrics of reconstructions vs inputs.

  `rec` and `real` are the same frames (float, [-1, 1]), so the comparison is pairwise; the frames are
  not a clip, so there is no lag. nan when the real mouths do not open (e.g. not synthface).
  """
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', RuntimeWarning)
    s = em.strict_mouth_scores(em.strict_mouth_series(np.clip(rec, -1, 1)), em.strict_mouth_series(real))
  return {f'eval/{k}_{name}': float(s[k]) for k in ('strict_r', 'open_recall', 'amplitude_ratio')}


class Evaluator:
  """EMA reconstructions of the fixed validation frames: grid image + PNG + PSNR + strict mouth metrics.

  Built once per run (tasks.Task.make_evaluator). The DAE codec (inference/dae_codec.py) is made at the
  first eval and given the new EMA weights at every later one, so the program compiles once.
  """

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    self.config, self.workdir = config, workdir
    self.codec: dae_codec.DAECodec | None = None

  def __call__(self, model: nnx.Module, ema_model: nnx.Module, eval_inputs: dict[str, np.ndarray], step: int,
               writer) -> dict[str, float]:
    del model  # Samples come from the EMA weights, as in diffae.
    x0 = eval_inputs['image']                                                # (N,H,W,3) in [-1, 1]
    if self.codec is None:
      mesh = jax.tree.leaves(nnx.state(ema_model))[0].sharding.mesh
      self.codec = dae_codec.DAECodec(ema_model, self.config, steps=int(self.config.diffusion.sample_steps),
                                      batch=len(x0), mesh=mesh)
    else:
      self.codec.set_weights(ema_model)
    noise = self.codec.seed_noise(self.config.seed + 1)                      # the shared x_T of every eval
    _, rec_inv, rec_shared = self.codec.reconstruct(x0, noise)
    rec_inv, rec_shared = [r.astype(np.float32) / 127.5 - 1.0 for r in (rec_inv, rec_shared)]
    grid = metrics_lib.image_grid([x0, rec_inv, rec_shared])
    writer.write_images(step, {'eval/reconstructions': grid[None]})
    if jax.process_index() == 0:
      metrics_lib.write_png(os.path.join(self.workdir, 'recon', f'step_{step:07d}.png'), grid)
    return {'eval/psnr_inverted': float(np.mean(metrics_lib.psnr(rec_inv, x0))),
            'eval/psnr_shared_noise': float(np.mean(metrics_lib.psnr(rec_shared, x0))),
            **strict_mouth_scalars(rec_shared, x0, 'shared_noise')}


TASK = tasks.Task(name='dae', create_model=create_model, make_datasets=make_datasets, loss_fn=loss_fn,
                  batch_spec=batch_spec,
                  make_evaluator=Evaluator, data_stats=data_stats)
