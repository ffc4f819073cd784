"""Task `landmarks`: Stage A of landmark diffusion, speech → lip and jaw landmarks (models/audio2landmarks.py).

Examples (data/examples.make_landmark_batch, without images): T consecutive frames' speech windows and context
landmarks, K landmark sets of other frames of the clip, and the true motion landmarks.
Loss, in each frame's pose-normalised frame (eye distance 1): L1 of the 29 motion points + velocity_weight x L1
of their frame-to-frame change, over frames with landmarks.
Evaluation on fixed validation windows (held-out identities with `prepare --split-by identity`), in image
space: eval/landmark_l1 (normalised frame), eval/lmd (mean distance of the 20 mouth points, % of the crop
side: the LMD of the literature, in a resolution-free unit), eval/opening_r (Pearson r of predicted vs true
inner-lip opening over every frame of every window).
"""

from __future__ import annotations

import os
from typing import Any

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from daetalker_jax import tasks
from daetalker_jax.models import audio2landmarks as a2l


def create_model(config: ml_collections.ConfigDict, rngs: nnx.Rngs) -> a2l.Audio2Landmarks:
  return a2l.build(config, rngs=rngs, dtype=tasks.compute_dtype(config))


def window_args(config: ml_collections.ConfigDict) -> dict[str, Any]:
  s = config.model.stage_a
  return dict(num_frames=int(s.num_frames), num_refs=int(s.num_refs), audio_window=int(config.data.audio_window))


def batch_spec(config: ml_collections.ConfigDict) -> dict[str, tuple[tuple[int, ...], Any]]:
  """One training example (shapes, dtypes) by `examples.make_landmark_batch` on a blank store, without data."""
  from daetalker_jax.data import examples  # pylint: disable=g-import-not-at-top
  args = window_args(config)
  store = examples.blank_store(image_size=int(config.data.image_size),
                               feat_dim=int(config.model.stage_a.audio_dim), num_frames=2 * args['num_frames'] + 2)
  return tasks.example_spec(examples.make_landmark_batch(store, np.random.default_rng(0), 1, images=False, **args))


def make_datasets(config: ml_collections.ConfigDict, process_index: int, process_count: int,
                  start_step: int = 0) -> tuple[Any, dict[str, np.ndarray]]:
  from daetalker_jax.data import examples  # pylint: disable=g-import-not-at-top
  if not config.data.data_dir:
    raise ValueError('config.data.data_dir is empty: pass --config.data.data_dir=DATA_DIR '
                     '(a folder written by `python -m data_prep.prepare`)')
  from daetalker_jax.data import speech  # pylint: disable=g-import-not-at-top
  args = dict(image_size=int(config.data.image_size), images=False, frontend=speech.for_config(config),
              **window_args(config))
  train_iter = examples.landmark_examples(
      config.data.data_dir, 'train', batch_size=config.batch_size // process_count, seed=config.seed,
      process_index=process_index, process_count=process_count, start_batch=start_step, **args)
  eval_inputs = examples.fixed_landmark_examples(config.data.data_dir, 'val', config.num_eval_images, **args)
  return train_iter, eval_inputs


def data_stats(config: ml_collections.ConfigDict) -> dict[str, Any]:
  return {'data_dir': os.path.abspath(config.data.data_dir) if config.data.data_dir else ''}


def landmark_loss(pred: jax.Array, batch: dict[str, jax.Array], velocity_weight: float
                  ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """L1 + velocity L1 of pose-normalised motion points pred (B, T, 29, 2) against batch['motion'] (image)."""
  context = batch['context'].astype(jnp.float32)
  target = a2l.normalise(batch['motion'].astype(jnp.float32), a2l.pose_frame(context))
  valid = batch['valid'].astype(jnp.float32)                                              # (B, T)
  l1 = jnp.abs(pred - target).mean((-1, -2))
  l1 = jnp.sum(l1 * valid) / jnp.maximum(valid.sum(), 1.0)
  vel = jnp.abs(jnp.diff(pred, axis=1) - jnp.diff(target, axis=1)).mean((-1, -2))
  vvalid = valid[:, 1:] * valid[:, :-1]
  vel = jnp.sum(vel * vvalid) / jnp.maximum(vvalid.sum(), 1.0)
  return l1 + velocity_weight * vel, {'landmark_l1': l1, 'velocity_l1': vel}


def loss_fn(config: ml_collections.ConfigDict, model: a2l.Audio2Landmarks, batch: dict[str, jax.Array],
            rng: jax.Array, *, train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
  del rng, train
  pred = model(batch['audio'], batch['context'], batch['ref_sets'])
  return landmark_loss(pred, batch, float(config.loss.velocity_weight))


def landmark_metrics(pred: np.ndarray, true: np.ndarray, valid: np.ndarray | None = None) -> dict[str, float]:
  """pred/true (..., 29, 2) motion points as image fractions -> lmd (% of the side, mouth points), l1 (image
  fractions), opening_r (Pearson r of inner-lip opening over all frames)."""
  pred, true = np.asarray(pred, np.float64).reshape(-1, 29, 2), np.asarray(true, np.float64).reshape(-1, 29, 2)
  if valid is not None:
    keep = np.asarray(valid).reshape(-1) > 0
    pred, true = pred[keep], true[keep]
  mouth = slice(9, 29)
  lmd = 100 * np.linalg.norm(pred[:, mouth] - true[:, mouth], axis=-1).mean()
  po, to = np.asarray(a2l.mouth_opening(pred)), np.asarray(a2l.mouth_opening(true))
  r = float(np.corrcoef(po, to)[0, 1]) if po.std() > 1e-9 and to.std() > 1e-9 else float('nan')
  return {'lmd': float(lmd), 'l1': float(np.abs(pred - true).mean()), 'opening_r': r}


class Evaluator:
  """Stage A on fixed validation windows (module doc)."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    del workdir
    self.config = config
    self._predict = None

  def __call__(self, model: nnx.Module, ema_model: nnx.Module, eval_inputs: dict[str, np.ndarray], step: int,
               writer) -> dict[str, float]:
    del model, step, writer
    if self._predict is None:
      graphdef = nnx.graphdef(ema_model)
      self._predict = jax.jit(lambda state, a, c, r: nnx.merge(graphdef, state).predict_image(a, c, r))
    pred = np.asarray(self._predict(nnx.state(ema_model), eval_inputs['audio'], eval_inputs['context'],
                                    eval_inputs['ref_sets']))
    m = landmark_metrics(pred, eval_inputs['motion'], eval_inputs['valid'])
    norm = a2l.normalise(jnp.asarray(pred), a2l.pose_frame(jnp.asarray(eval_inputs['context'])))
    true_n = a2l.normalise(jnp.asarray(eval_inputs['motion']), a2l.pose_frame(jnp.asarray(eval_inputs['context'])))
    return {'eval/landmark_l1': float(jnp.abs(norm - true_n).mean()), 'eval/lmd': m['lmd'],
            'eval/opening_r': m['opening_r']}


TASK = tasks.Task(name='landmarks', create_model=create_model, make_datasets=make_datasets, loss_fn=loss_fn,
                  make_evaluator=Evaluator, data_stats=data_stats, batch_spec=batch_spec)
