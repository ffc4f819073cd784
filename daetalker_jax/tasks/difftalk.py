"""Task `difftalk`: train DiffTalk's latent denoiser (models/difftalk.py) on many people's frames.

Loss (DiffTalk): eps MSE in the frozen first stage's latent space, t ~ U{0..T-1} under the sqrt-linear
schedule, for z_0 = E(target), conditioned on [E(masked target), E(reference)] (concatenated) and on the
audio + landmark context token (cross-attention). The audio, smoother and landmark nets and the UNet train
together; the first stage (`first_stage` in the model) is frozen (`frozen`) and loaded from config.first_stage
at a fresh start (`load_pretrained`). `config.loss.mouth_weight` > 1 weighs the latent pixels of the mouth box.
Examples (data/examples.py): every step draws frames with landmarks, a reference of the same clip at least
config.data.min_reference_gap frames away, and the speech around each frame.
Evaluation: fixed validation examples generated with the EMA model from one seeded x_T (the DiffTalk codec,
inference/difftalk_codec.py, as generation uses), written as a grid (rows: masked target, reference,
generated, real) to TensorBoard and WORKDIR/samples/, with eval/psnr, eval/psnr_mouth (the mouth box) and the
strict mouth metrics of the generated frames against the real ones (docs/EVALUATION.md; nan off synthface).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Any
import warnings

from absl import logging
from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from daetalker_jax import diffusion
from daetalker_jax import metrics as metrics_lib
from daetalker_jax import tasks
from daetalker_jax.evaluation import generic
from daetalker_jax.evaluation import mouth as mouth_eval
from daetalker_jax.inference import difftalk_codec
from daetalker_jax.models import difftalk
from daetalker_jax.models import vq


def create_model(config: ml_collections.ConfigDict, rngs: nnx.Rngs) -> difftalk.DiffTalk:
  return difftalk.build(config, rngs=rngs, dtype=tasks.compute_dtype(config))


def frozen(path: tuple[str, ...]) -> bool:
  """The first stage is frozen: no updates, no optimizer state."""
  return bool(path) and path[0] == 'first_stage'


def _same_shape(have: vq.VQConfig, want: vq.VQConfig, where: str) -> None:
  ignore = ('image_size', 'dtype', 'param_dtype')
  diff = [f'{f.name}: {getattr(have, f.name)!r} there, {getattr(want, f.name)!r} in config.model.first_stage'
          for f in dataclasses.fields(vq.VQConfig)
          if f.name not in ignore and getattr(have, f.name) != getattr(want, f.name)]
  if diff:
    raise ValueError(f'config.first_stage={where}: another autoencoder shape ({"; ".join(diff)})')


def load_first_stage(path: str, target: vq.VQModel) -> None:
  """Fills `target` from an `autoencoder` workdir (its EMA weights), a diffusers VQModel folder or a .ckpt."""
  p = pathlib.Path(path)
  if (p / 'checkpoints').is_dir():
    from daetalker_jax import checkpoint  # pylint: disable=g-import-not-at-top
    model, cfg = checkpoint.load_model(str(p))
    if cfg.task != 'autoencoder':
      raise ValueError(f'config.first_stage={path}: a {cfg.task!r} workdir, expected an autoencoder workdir')
    _same_shape(model.cfg, target.cfg, path)
    nnx.update(target, nnx.state(model, nnx.Param))
    return
  if not p.exists():
    raise ValueError(f'config.first_stage={path}: no such file or folder (an autoencoder workdir, a diffusers '
                     'VQModel folder or an LDM/DiffTalk .ckpt)')
  from daetalker_jax.importers import vq as vq_importer  # pylint: disable=g-import-not-at-top
  source, state_dict = vq_importer.read_pretrained(path)
  _same_shape(source, target.cfg, path)
  vq_importer.import_state_dict(target, state_dict, source=str(path))


def load_pretrained(config: ml_collections.ConfigDict, model: difftalk.DiffTalk) -> bool:
  """Loads the frozen first stage (config.first_stage) on a fresh start; an empty path is an error unless
  config.allow_random_first_stage (tests only: a random autoencoder makes a useless model)."""
  if not config.first_stage:
    if config.get('allow_random_first_stage', False):
      logging.warning('config.first_stage is empty: training on a RANDOM first stage (tests only)')
      return False
    raise ValueError('config.first_stage is empty: pass --config.first_stage=DIR (an autoencoder workdir, a '
                     'diffusers VQModel folder or an LDM/DiffTalk .ckpt)')
  load_first_stage(config.first_stage, model.first_stage)
  logging.info('First stage loaded from %s', config.first_stage)
  return True


# --------------------------------------------------------------------------------------------------------
# Data.
# --------------------------------------------------------------------------------------------------------
def _example_args(config: ml_collections.ConfigDict) -> dict[str, Any]:
  from daetalker_jax.data import speech  # pylint: disable=g-import-not-at-top
  return dict(image_size=int(config.model.first_stage.image_size), audio_frames=int(config.data.audio_frames),
              audio_window=int(config.data.audio_window), min_gap=int(config.data.min_reference_gap),
              frontend=speech.for_config(config))


def batch_spec(config: ml_collections.ConfigDict) -> dict[str, tuple[tuple[int, ...], Any]]:
  """One training example (shapes, dtypes) by `examples.make_batch` on a blank store, without data."""
  from daetalker_jax.data import examples  # pylint: disable=g-import-not-at-top
  gap = int(config.data.min_reference_gap)
  store = examples.blank_store(image_size=int(config.model.first_stage.image_size),
                               feat_dim=int(config.model.cond.audio_dim), num_frames=2 * gap + 2)
  batch = examples.make_batch(store, np.random.default_rng(0), 1, audio_frames=int(config.data.audio_frames),
                              audio_window=int(config.data.audio_window), min_gap=gap)
  return tasks.example_spec(batch)


def require_data_dir(config: ml_collections.ConfigDict) -> None:
  if not config.data.data_dir:
    raise ValueError('config.data.data_dir is empty: pass --config.data.data_dir=DATA_DIR '
                     '(a folder written by `python -m data_prep.prepare`)')


def make_datasets(config: ml_collections.ConfigDict, process_index: int, process_count: int,
                  start_step: int = 0) -> tuple[Any, dict[str, np.ndarray]]:
  """Per-process example stream positioned at `start_step` (data/examples.py) and fixed val examples."""
  from daetalker_jax.data import examples  # pylint: disable=g-import-not-at-top
  require_data_dir(config)
  train_iter = examples.talking_examples(
      config.data.data_dir, 'train', batch_size=config.batch_size // process_count, seed=config.seed,
      process_index=process_index, process_count=process_count, start_batch=start_step, **_example_args(config))
  eval_inputs = examples.fixed_examples(config.data.data_dir, 'val', config.num_eval_images, **_example_args(config))
  return train_iter, eval_inputs


def data_stats(config: ml_collections.ConfigDict) -> dict[str, Any]:
  return {'data_dir': os.path.abspath(config.data.data_dir) if config.data.data_dir else '',
          'first_stage': config.first_stage}


# --------------------------------------------------------------------------------------------------------
# Loss.
# --------------------------------------------------------------------------------------------------------
def mouth_pixel_weight(opts: ml_collections.ConfigDict, box: jax.Array, size: tuple[int, int]) -> jax.Array | None:
  """Latent-pixel weights: opts.mouth_weight inside the mouth box grown by opts.mouth_margin, 1 elsewhere (None
  when the weight is 1: the plain eps MSE)."""
  if float(opts.mouth_weight) == 1.0:
    return None
  return diffusion.box_weight(box, jnp.ones(box.shape[:1], bool), size, float(opts.mouth_weight),
                              margin=float(opts.mouth_margin))


def loss_fn(config: ml_collections.ConfigDict, model: difftalk.DiffTalk, batch: dict[str, jax.Array],
            rng: jax.Array, *, train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
  """DiffTalk's eps MSE in latent space (module doc)."""
  del train
  fs = model.first_stage
  encode = lambda x: jax.lax.stop_gradient(fs.encode(x).astype(jnp.float32))
  z0, masked, reference = encode(batch['image']), encode(batch['masked']), encode(batch['reference'])
  cond = (masked, reference, model.context(batch['audio'], batch['landmarks']))
  opts = config.loss
  pixel_weight = mouth_pixel_weight(opts, batch['mouth_box'], z0.shape[1:3])
  loss, _ = diffusion.diffusion_loss(lambda x, t, c: model(x, t, c), diffusion.schedule_from_config(config.diffusion),
                                     z0, rng, cond=cond, pixel_weight=pixel_weight)
  return loss, {}


# --------------------------------------------------------------------------------------------------------
# Evaluation.
# --------------------------------------------------------------------------------------------------------
class Evaluator:
  """EMA samples of fixed validation examples: grid + PNG + PSNR (frame, mouth box) + strict mouth metrics."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    self.config, self.workdir = config, workdir
    self.codec: difftalk_codec.DiffTalkCodec | None = None

  def __call__(self, model: nnx.Module, ema_model: nnx.Module, eval_inputs: dict[str, np.ndarray], step: int,
               writer) -> dict[str, float]:
    del model
    n = len(eval_inputs['image'])
    if self.codec is None:
      mesh = jax.tree.leaves(nnx.state(ema_model))[0].sharding.mesh
      self.codec = difftalk_codec.DiffTalkCodec(ema_model, self.config, steps=int(self.config.diffusion.sample_steps),
                                                batch=n, mesh=mesh)
    else:
      self.codec.set_weights(ema_model)
    generated = self.codec.sample(eval_inputs, self.codec.seed_noise(self.config.seed + 1))
    return sample_report(self.workdir, step, writer, eval_inputs, generated)


def sample_report(workdir: str, step: int, writer, eval_inputs: dict[str, np.ndarray], generated: np.ndarray
                  ) -> dict[str, float]:
  """The generic methods' eval: a grid (masked, reference, generated, real) to TensorBoard and
  WORKDIR/samples/, PSNR over the frame and the mouth box, the strict mouth metrics."""
  real = np.round((np.asarray(eval_inputs['image']) + 1) * 127.5).clip(0, 255).astype(np.uint8)
  as_float = lambda u: u.astype(np.float32) / 127.5 - 1.0
  rows = [eval_inputs['masked'], eval_inputs['reference'], as_float(generated), as_float(real)]
  grid = metrics_lib.image_grid(rows)
  writer.write_images(step, {'eval/samples': grid[None]})
  if jax.process_index() == 0:
    metrics_lib.write_png(os.path.join(workdir, 'samples', f'step_{step:07d}.png'), grid)
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', RuntimeWarning)
    strict = mouth_eval.strict_mouth_scores(mouth_eval.strict_mouth_series(generated),
                                            mouth_eval.strict_mouth_series(real))
  return {'eval/psnr': float(np.mean(metrics_lib.psnr(as_float(generated), as_float(real)))),
          'eval/psnr_mouth': generic.mouth_box_psnr(generated, real, eval_inputs['mouth_box']),
          **{f'eval/{k}': float(strict[k]) for k in ('strict_r', 'open_recall', 'amplitude_ratio')}}


TASK = tasks.Task(name='difftalk', create_model=create_model, make_datasets=make_datasets, loss_fn=loss_fn,
                  make_evaluator=Evaluator, data_stats=data_stats, frozen=frozen, load_pretrained=load_pretrained,
                  batch_spec=batch_spec)
