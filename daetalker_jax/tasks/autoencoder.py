"""Task `autoencoder`: train DiffTalk's first stage, the VQ autoencoder (models/vq.py), on face frames.

Loss: the VQ-VAE objective, l1_weight * mean|x - x'| + l2_weight * mean (x - x')^2 + codebook_weight *
(codebook + beta * commitment), with x' decoded from the straight-through quantised latent
(config.loss). `mouth_weight` > 1 makes the two means weigh the pixels of the mouth box (landmarks 48-67, grown
by `mouth_margin`) that much more: the mouth is a few % of a face crop, and an autoencoder trained on the
plain mean shrinks and blurs open mouths, which caps every renderer decoded by it. LDM trains its VQ-f4 with a
patch-GAN discriminator and an LPIPS perceptual term on top; neither is here, so a run of this task alone
gives blurrier reconstructions than the published model (start from its weights with config.pretrained to
fine-tune). Also note LDM's quantiser weighs the two VQ terms the other way round (its "legacy" beta:
commitment + beta * codebook); this task uses VQ-VAE's.
Evaluation: the fixed validation frames reconstructed by the EMA model, written as a grid (rows: input,
reconstruction) to TensorBoard and WORKDIR/recon/step_*.png, with eval/psnr and eval/codebook_usage (the
fraction of codebook entries those frames use).
"""

import dataclasses
import os
from typing import Any

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from daetalker_jax import diffusion
from daetalker_jax import metrics as metrics_lib
from daetalker_jax import sharding
from daetalker_jax import tasks
from daetalker_jax.models import vq
from daetalker_jax.tasks import dae as dae_task


def create_model(config: ml_collections.ConfigDict, rngs: nnx.Rngs) -> vq.VQModel:
  """The VQ autoencoder of `config.model`, computing in `config.dtype` with float32 parameters."""
  return vq.VQModel(vq.config_from_dict(config.model, dtype=tasks.compute_dtype(config), param_dtype='float32'), rngs=rngs)


def load_pretrained(config: ml_collections.ConfigDict, model: vq.VQModel) -> bool:
  """Fills `model` from `config.pretrained` (a diffusers VQModel folder or an LDM / DiffTalk .ckpt), if set."""
  path = config.get('pretrained', '')
  if not path:
    return False
  from daetalker_jax.importers import vq as vq_importer  # pylint: disable=g-import-not-at-top
  source, state_dict = vq_importer.read_pretrained(path)
  ignore = ('image_size', 'dtype', 'param_dtype')   # not recorded by the weights / execution only
  diff = [f'{f.name}: {getattr(source, f.name)!r} there, {getattr(model.cfg, f.name)!r} in config.model'
          for f in dataclasses.fields(vq.VQConfig)
          if f.name not in ignore and getattr(source, f.name) != getattr(model.cfg, f.name)]
  if diff:
    raise ValueError(f'config.pretrained={path}: another model shape ({"; ".join(diff)})')
  vq_importer.import_state_dict(model, state_dict, source=str(path))
  return True


# --------------------------------------------------------------------------------------------------------
# Data.
# --------------------------------------------------------------------------------------------------------
# The DAE task's frame stream and fixed validation frames (per-process share, resume by index) and its data
# stats; its batches are {'image'}, plus mouth_box/mouth_valid when config.loss.mouth_weight != 1.
make_datasets = dae_task.make_datasets
data_stats = dae_task.data_stats
batch_spec = dae_task.batch_spec


# --------------------------------------------------------------------------------------------------------
# Loss.
# --------------------------------------------------------------------------------------------------------
def codebook_usage(indices: jax.Array, n_embed: int) -> jax.Array:
  """Fraction of the `n_embed` codebook entries that occur in `indices` (any shape)."""
  return jnp.zeros((n_embed,), jnp.float32).at[indices.reshape(-1)].set(1.0).mean()


def loss_fn(config: ml_collections.ConfigDict, model: vq.VQModel, batch: dict[str, jax.Array],
            rng: jax.Array, *, train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
  """l1 * mean|x - x'| + l2 * mean (x - x')^2 + codebook_weight * (codebook + beta * commitment); with
  config.loss.mouth_weight > 1 the two means weigh the mouth box's pixels that much more."""
  del rng, train   # Deterministic: no dropout, no noise.
  opts = config.loss
  x = batch['image']                                    # (B,H,W,3) in [-1, 1]
  recon, aux = model(x)
  err = recon.astype(jnp.float32) - x.astype(jnp.float32)
  weight = dae_task.mouth_pixel_weight(config, batch, x.shape[1:3])    # (B,H,W,1) or None (mouth_weight 1)
  l1, l2 = diffusion.weighted_mean(jnp.abs(err), weight), diffusion.weighted_mean(jnp.square(err), weight)
  vq_loss = aux['codebook_loss'] + float(opts.beta) * aux['commitment_loss']
  loss = float(opts.l1_weight) * l1 + float(opts.l2_weight) * l2 + float(opts.codebook_weight) * vq_loss
  return loss, {'loss_l1': l1, 'loss_l2': l2, 'loss_codebook': aux['codebook_loss'],
                'loss_commitment': aux['commitment_loss'],
                'codebook_usage': codebook_usage(aux['indices'], model.cfg.n_embed)}


# --------------------------------------------------------------------------------------------------------
# Evaluation.
# --------------------------------------------------------------------------------------------------------
class Evaluator:
  """EMA reconstructions of the fixed validation frames: grid image + PNG + PSNR + codebook usage.

  Built once per run (tasks.Task.make_evaluator); its jitted reconstruction compiles at the first eval and
  takes the new EMA weights as an argument at every later one.
  """

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    self.config, self.workdir = config, workdir
    self._reconstruct = None
    self._rep = None

  def _compile(self, graphdef: Any, mesh: jax.sharding.Mesh) -> None:
    self._rep = rep = sharding.replicated(mesh)

    def reconstruct(state, x):
      m = nnx.merge(graphdef, state)
      m.eval()
      recon, aux = m(x)
      return recon.astype(jnp.float32), aux['indices']

    self._reconstruct = jax.jit(reconstruct, out_shardings=(rep, rep),
                                compiler_options=diffusion.compiler_options())

  def __call__(self, model: nnx.Module, ema_model: nnx.Module, eval_inputs: dict[str, np.ndarray], step: int,
               writer) -> dict[str, float]:
    del model  # Reconstructions come from the EMA weights.
    x0 = np.asarray(eval_inputs['image'], np.float32)                      # (N,H,W,3) in [-1, 1]
    graphdef, state = nnx.split(ema_model)
    if self._reconstruct is None:
      self._compile(graphdef, jax.tree.leaves(state)[0].sharding.mesh)
    # Replicated on the mesh (every process holds all the frames); the weights keep their own sharding.
    x = jax.make_array_from_callback(x0.shape, self._rep, lambda index: x0[index])
    recon, indices = self._reconstruct(state, x)
    recon = np.clip(np.asarray(recon.addressable_data(0)), -1.0, 1.0)
    indices = np.asarray(indices.addressable_data(0))
    grid = metrics_lib.image_grid([x0, recon])
    writer.write_images(step, {'eval/reconstructions': grid[None]})
    if jax.process_index() == 0:
      metrics_lib.write_png(os.path.join(self.workdir, 'recon', f'step_{step:07d}.png'), grid)
    n_embed = int(self.config.model.n_embed)
    return {'eval/psnr': float(np.mean(metrics_lib.psnr(recon, x0))),
            'eval/codebook_usage': len(np.unique(indices)) / n_embed}


TASK = tasks.Task(name='autoencoder', create_model=create_model, make_datasets=make_datasets, loss_fn=loss_fn,
                  make_evaluator=Evaluator, data_stats=data_stats, load_pretrained=load_pretrained,
                  batch_spec=batch_spec)
