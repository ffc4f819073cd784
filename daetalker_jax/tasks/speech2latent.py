"""Task `speech2latent`: audio windows → per-frame DAE latents (+ head pose), DAE-Talker stage 2.

Targets are the z_sem of every frame from the frozen DAE encoder (`daetalker_jax/extract.py`),
z-normalised with the train-split statistics. Loss = latent loss (L1 or MSE over real, unpadded frames)
+ pose_weight · MSE of the pose adaptor's yaw/pitch/roll prediction (degrees / pose_scale). Training feeds
the ground-truth pose to the adaptor's projection; evaluation reports both (a) pose given and (b) pose
predicted, the error of always predicting the mean latent (the bar to beat), the pose error in degrees
with its correlation, and the latent error with the audio replaced by silence (does the model listen?).
"""

import functools
import os
from typing import Any

from absl import logging
from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from daetalker_jax import tasks
from daetalker_jax.data import dataset
from daetalker_jax.importers import wav2vec2 as w2v_import
from daetalker_jax.models import speech2latent as s2l

P = jax.P


def create_model(config: ml_collections.ConfigDict, rngs: nnx.Rngs) -> s2l.Speech2Latent:
  cfg = w2v_import.s2l_config(config.model, dtype=tasks.compute_dtype(config), remat=config.remat)  # reads a wav2vec2 config.json
  return s2l.Speech2Latent(cfg, rngs=rngs)


def frozen(path: tuple[str, ...]) -> bool:
  """The wav2vec2 front end is frozen: the optimizer keeps no state for it (train.create_optimizer)."""
  return s2l.FROZEN(path, None)


def load_pretrained(config: ml_collections.ConfigDict, model: s2l.Speech2Latent) -> bool:
  """Loads the frozen wav2vec2 weights (config.model.wav2vec2_path) into a fresh model, in place.

  Called by the loop once, on a run's fresh start (not on resume: the checkpoint holds them). Returns
  whether anything was loaded (log-mel has nothing to load).
  """
  if config.model.frontend != 'wav2vec2':
    return False
  w2v_import.load_wav2vec2_into(model.wav2vec2, config.model.wav2vec2_path)
  return True


# --------------------------------------------------------------------------------------------------------
# Data.
# --------------------------------------------------------------------------------------------------------
def _windows(config, split, *, batch_size, seed, train, process_index=0, process_count=1):
  from daetalker_jax.data import pipelines  # pylint: disable=g-import-not-at-top
  return pipelines.windows_pipeline(
      config.data.data_dir, split, window=config.data.window, batch_size=batch_size, seed=seed,
      train=train, latents=config.data.latents, normalize_latents=config.data.normalize_latents,
      process_index=process_index, process_count=process_count)


def batch_spec(config: ml_collections.ConfigDict) -> dict[str, tuple[tuple[int, ...], Any]]:
  """One training window (shapes, dtypes) of `make_datasets`' stream, without data."""
  from daetalker_jax.data import pipelines  # pylint: disable=g-import-not-at-top
  return pipelines.window_example_spec(int(config.data.window),
                                       int(config.model.latent_dim) if config.data.latents else None)


def make_datasets(config: ml_collections.ConfigDict, process_index: int, process_count: int,
                  start_step: int = 0) -> tuple[Any, dict[str, np.ndarray]]:
  """Per-process window stream (positioned at `start_step`) and a fixed set of validation windows.

  Every process reads only its own 1/process_count of the clips; the stream is deterministic given (seed,
  process), and a resumed run starts it at batch `start_step` by index, without replaying the batches before.
  """
  from daetalker_jax.data import pipelines  # pylint: disable=g-import-not-at-top
  if not config.data.data_dir:
    raise ValueError('config.data.data_dir is empty: pass --config.data.data_dir=DATA_DIR')
  train_iter = pipelines.windows_pipeline(
      config.data.data_dir, 'train', window=config.data.window, batch_size=config.batch_size // process_count,
      seed=config.seed, train=True, latents=config.data.latents,
      normalize_latents=config.data.normalize_latents, process_index=process_index,
      process_count=process_count, start_batch=start_step)
  if start_step:
    logging.info('Input stream positioned at batch %d (the batches before it are not read).', start_step)
  # Validation: every window of the val split (non-overlapping, padded + masked), capped in number.
  parts, n = [], 0
  for b in _windows(config, 'val', batch_size=8, seed=0, train=False):
    parts.append({k: np.asarray(v) for k, v in b.items()})
    n += len(b['mask'])
    if n >= config.num_eval_windows:
      break
  if not parts:
    raise ValueError(f'{config.data.data_dir}: the val split has no windows to evaluate on')
  eval_inputs = {k: np.concatenate([p[k] for p in parts])[:config.num_eval_windows] for k in parts[0]}
  return train_iter, eval_inputs


def data_stats(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Stored in the checkpoint meta: generation needs them to turn predictions back into latents."""
  stats = dataset.load_latent_stats(config.data.data_dir, config.data.latents)
  return {'data_dir': os.path.abspath(config.data.data_dir), 'latents': config.data.latents,
          'latent_mean': stats['mean'].tolist(), 'latent_std': stats['std'].tolist(),
          'normalize_latents': bool(config.data.normalize_latents),
          'pose_scale': float(config.loss.pose_scale)}


# --------------------------------------------------------------------------------------------------------
# Loss.
# --------------------------------------------------------------------------------------------------------
def _masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean of x (B, W, C) over real frames (mask (B, W)) and channels."""
  m = mask[..., None].astype(x.dtype)
  return (x * m).sum() / jnp.maximum(m.sum() * x.shape[-1], 1.0)


def latent_error(kind: str, pred: jax.Array, target: jax.Array, mask: jax.Array) -> jax.Array:
  diff = pred - target
  if kind == 'l1':
    return _masked_mean(jnp.abs(diff), mask)
  if kind == 'mse':
    return _masked_mean(diff ** 2, mask)
  raise ValueError(f"config.loss.latent_loss must be 'l1' or 'mse', got {kind!r}")


def loss_fn(config: ml_collections.ConfigDict, model: s2l.Speech2Latent, batch: dict[str, jax.Array],
            rng: jax.Array, *, train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
  """latent loss (normalised latents, real frames) + pose_weight · pose MSE (normalised degrees)."""
  del rng  # Dropout streams are reseeded on the model by the loop.
  mask = batch['mask']                                       # (B, W) bool
  pose = batch['pose'] / config.loss.pose_scale              # (B, W, 3) normalised yaw/pitch/roll
  out = model(batch['audio'], mask=mask, pose=pose, pose_mode='gt', deterministic=not train)
  latent_loss = latent_error(config.loss.latent_loss, out['latent'], batch['latent'], mask)
  pose_loss = _masked_mean((out['pose_pred'] - pose) ** 2, mask)
  loss = latent_loss + config.loss.pose_weight * pose_loss
  return loss, {'latent_loss': latent_loss, 'pose_loss': pose_loss}


# --------------------------------------------------------------------------------------------------------
# Evaluation.
# --------------------------------------------------------------------------------------------------------
def _build_eval_fn(graphdef, mesh, kind: str, pose_scale: float):
  def run(state, batch):
    model = nnx.merge(graphdef, state)
    model.eval()
    mask, target = batch['mask'], batch['latent']
    pose = batch['pose'] / pose_scale
    gt = model(batch['audio'], mask=mask, pose=pose, pose_mode='gt')
    pred = model(batch['audio'], mask=mask, pose_mode='predicted')
    silent = model(jnp.zeros_like(batch['audio']), mask=mask, pose_mode='predicted')
    err = functools.partial(latent_error, kind)
    return {
        'latent_error': err(gt['latent'], target, mask),
        'latent_error_pred_pose': err(pred['latent'], target, mask),
        'latent_error_silence': err(silent['latent'], target, mask),
        # Normalised latents have mean 0: the error of always predicting the dataset's mean latent.
        'latent_error_mean_baseline': err(jnp.zeros_like(target), target, mask),
        'pose_pred': gt['pose_pred'] * pose_scale,           # (B, W, 3) degrees
    }
  rep = jax.sharding.NamedSharding(mesh, P())
  return jax.jit(run, out_shardings=rep)


class Evaluator:
  """Held-out latent error (GT / predicted pose / silence / mean baseline) and pose error of the EMA.

  Built once per run (tasks.Task.make_evaluator); its jitted function is compiled at the first eval.
  """

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    del workdir
    self.config = config
    self._fn = None

  def __call__(self, model: nnx.Module, ema_model: nnx.Module, eval_inputs: dict[str, np.ndarray], step: int,
               writer) -> dict[str, float]:
    del model, step, writer
    config = self.config
    graphdef, state = nnx.split(ema_model)
    mesh = jax.tree.leaves(state)[0].sharding.mesh
    if self._fn is None:
      self._fn = _build_eval_fn(graphdef, mesh, config.loss.latent_loss, float(config.loss.pose_scale))
    rep = jax.sharding.NamedSharding(mesh, P())
    batch = {k: jax.make_array_from_process_local_data(rep, v, v.shape) for k, v in eval_inputs.items()}
    out = self._fn(state, batch)
    out = jax.tree.map(lambda a: np.asarray(a.addressable_data(0)), out)
    mask = eval_inputs['mask'].astype(bool)
    pose_pred, pose_true = out.pop('pose_pred')[mask], eval_inputs['pose'][mask]  # (n, 3) degrees
    metrics = {f'eval/{k}': float(v) for k, v in out.items()}
    metrics['eval/pose_mae_deg'] = float(np.abs(pose_pred - pose_true).mean())
    for i, name in enumerate(('yaw', 'pitch', 'roll')):
      if pose_true[:, i].std() > 1e-6 and pose_pred[:, i].std() > 1e-6:
        metrics[f'eval/pose_r_{name}'] = float(np.corrcoef(pose_pred[:, i], pose_true[:, i])[0, 1])
    return metrics


TASK = tasks.Task(name='speech2latent', create_model=create_model, make_datasets=make_datasets, loss_fn=loss_fn,
                  make_evaluator=Evaluator, data_stats=data_stats, frozen=frozen, load_pretrained=load_pretrained,
                  batch_spec=batch_spec)
