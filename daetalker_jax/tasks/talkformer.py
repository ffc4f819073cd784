"""Task `talkformer`: landmark diffusion's renderer (Stage B), and the end-to-end fine-tune of both stages.

Model: models/talkformer.LandmarkDiffusion (frozen first stage, Stage A, TalkFormer UNet). Examples:
data/examples.make_landmark_batch (the target frame, masked below the nose tip, a reference frame of the clip,
their 68 landmarks, and Stage A's window of T frames around the target).
Loss: eps MSE in the first stage's latent space (or on pixels, model.talkformer.space=pixel) under DiffTalk's
sqrt-linear schedule, conditioned on [E(masked target)] (concatenated) and, through the TalkFormer blocks, on
the target's 68 landmarks and the reference. Which landmarks (config.loss.end_to_end):
  - False (stage=renderer): the ground truth; Stage A is frozen (config.optim.frozen).
  - True (stage=e2e): the 39 tracked context points and Stage A's 29 predicted motion points of the target
    frame, so the diffusion gradient (times config.loss.e2e_weight) reaches Stage A; Stage A's own L1 +
    velocity loss (times config.loss.landmark_weight) keeps it tied to the truth.
Fresh start: the first stage from config.first_stage, Stage A from config.stage_a_from (a `landmarks` workdir);
config.init_from (a talkformer workdir) starts the e2e stage from the renderer stage.
Evaluation: fixed validation examples sampled with the EMA model from one seeded x_T with the landmarks of
config.eval_landmarks (predicted: Stage A's, as generation; truth), as a grid (masked, reference, generated,
real) in TensorBoard and WORKDIR/samples/, with eval/psnr, eval/psnr_mouth, the strict mouth metrics and
eval/lmd (Stage A's mouth landmark distance, % of the side).
"""

from __future__ import annotations

import os
from typing import Any

from absl import logging
from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from daetalker_jax import diffusion
from daetalker_jax import tasks
from daetalker_jax.inference import difftalk_codec
from daetalker_jax.models import audio2landmarks as a2l
from daetalker_jax.models import talkformer
from daetalker_jax.tasks import difftalk as difftalk_task
from daetalker_jax.tasks import landmarks as landmarks_task


def create_model(config: ml_collections.ConfigDict, rngs: nnx.Rngs) -> talkformer.LandmarkDiffusion:
  return talkformer.build(config, rngs=rngs, dtype=tasks.compute_dtype(config))


def frozen(path: tuple[str, ...]) -> bool:
  """The first stage is always frozen (Stage A too in stage=renderer, through config.optim.frozen)."""
  return bool(path) and path[0] == 'first_stage'


def load_pretrained(config: ml_collections.ConfigDict, model: talkformer.LandmarkDiffusion) -> bool:
  """First stage (config.first_stage, latent space) and Stage A (config.stage_a_from) on a fresh start."""
  loaded = False
  if model.first_stage is not None:
    loaded = difftalk_task.load_pretrained(config, model)
  if config.stage_a_from:
    from daetalker_jax import checkpoint  # pylint: disable=g-import-not-at-top
    stage_a, cfg = checkpoint.load_model(config.stage_a_from)
    if cfg.task != 'landmarks':
      raise ValueError(f'config.stage_a_from={config.stage_a_from}: a {cfg.task!r} workdir, expected a landmarks '
                       'workdir')
    if stage_a.cfg != model.stage_a.cfg:
      raise ValueError(f'config.stage_a_from={config.stage_a_from}: another Stage A shape ({stage_a.cfg} there, '
                       f'{model.stage_a.cfg} in config.model.stage_a)')
    from daetalker_jax.data import speech  # pylint: disable=g-import-not-at-top
    theirs, ours = speech.Frontend.from_config(cfg.data), speech.Frontend.from_config(config.data)
    if theirs != ours:
      raise ValueError(f'config.stage_a_from={config.stage_a_from}: Stage A was trained on another speech front end '
                       f'({theirs.kind} {theirs.path} layer {theirs.layer}; here {ours.kind} {ours.path} layer '
                       f'{ours.layer}): pass the same config.data.frontend / wav2vec2_* settings')
    nnx.update(model.stage_a, nnx.state(stage_a, nnx.Param))
    logging.info('Stage A loaded from %s', config.stage_a_from)
    loaded = True
  elif config.stage == 'renderer' and config.eval_landmarks == 'predicted':
    logging.warning('config.stage_a_from is empty: Stage A is random and frozen, so the predicted-landmark eval '
                    'is meaningless (pass a landmarks workdir)')
  return loaded


# --------------------------------------------------------------------------------------------------- data
def example_args(config: ml_collections.ConfigDict) -> dict[str, Any]:
  from daetalker_jax.data import speech  # pylint: disable=g-import-not-at-top
  return dict(image_size=int(config.model.first_stage.image_size), min_gap=int(config.data.min_reference_gap),
              frontend=speech.for_config(config), **landmarks_task.window_args(config))


def batch_spec(config: ml_collections.ConfigDict) -> dict[str, tuple[tuple[int, ...], Any]]:
  """One training example (shapes, dtypes) by `examples.make_landmark_batch` on a blank store, without data."""
  from daetalker_jax.data import examples  # pylint: disable=g-import-not-at-top
  gap = int(config.data.min_reference_gap)
  store = examples.blank_store(image_size=int(config.model.first_stage.image_size),
                               feat_dim=int(config.model.stage_a.audio_dim), num_frames=2 * gap + 2)
  return tasks.example_spec(examples.make_landmark_batch(store, np.random.default_rng(0), 1, min_gap=gap,
                                                         **landmarks_task.window_args(config)))


def make_datasets(config: ml_collections.ConfigDict, process_index: int, process_count: int,
                  start_step: int = 0) -> tuple[Any, dict[str, np.ndarray]]:
  from daetalker_jax.data import examples  # pylint: disable=g-import-not-at-top
  difftalk_task.require_data_dir(config)
  train_iter = examples.landmark_examples(
      config.data.data_dir, 'train', batch_size=config.batch_size // process_count, seed=config.seed,
      process_index=process_index, process_count=process_count, start_batch=start_step, **example_args(config))
  eval_inputs = examples.fixed_landmark_examples(config.data.data_dir, 'val', config.num_eval_images,
                                                 **example_args(config))
  return train_iter, eval_inputs


def data_stats(config: ml_collections.ConfigDict) -> dict[str, Any]:
  return {'data_dir': os.path.abspath(config.data.data_dir) if config.data.data_dir else '',
          'first_stage': config.first_stage, 'stage_a_from': config.stage_a_from}


# --------------------------------------------------------------------------------------------------- loss
def predicted_landmarks(model: talkformer.LandmarkDiffusion, batch: dict[str, Any]) -> tuple[jax.Array, jax.Array]:
  """(target frame's 68 landmarks with Stage A's motion points (B, 68, 2), Stage A's normalised output)."""
  pred_n = model.stage_a(batch['audio'], batch['context'], batch['ref_sets'])              # (B, T, 29, 2)
  context = batch['context'].astype(jnp.float32)
  pred = a2l.to_image(pred_n, a2l.pose_frame(context))
  centre = context.shape[1] // 2
  return a2l.join_68(context[:, centre], pred[:, centre]), pred_n


def loss_fn(config: ml_collections.ConfigDict, model: talkformer.LandmarkDiffusion, batch: dict[str, jax.Array],
            rng: jax.Array, *, train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The renderer's eps MSE (+ Stage A's landmark loss end to end); module doc."""
  del train
  opts = config.loss
  encode = lambda x: jax.lax.stop_gradient(model.encode(x))
  z0, masked, ref_z = encode(batch['image']), encode(batch['masked']), encode(batch['reference'])
  metrics = {}
  extra = 0.0
  if opts.end_to_end:
    lms, pred_n = predicted_landmarks(model, batch)
    w = float(opts.e2e_weight)
    lms = jax.lax.stop_gradient(lms) + w * (lms - jax.lax.stop_gradient(lms))   # the gradient scaled by w
    extra, metrics = landmarks_task.landmark_loss(pred_n, batch, float(opts.velocity_weight))
    extra = float(opts.landmark_weight) * extra
  else:
    lms = batch['landmarks']
  cond = model.condition(masked, model.reference_context(ref_z, batch['ref_landmarks']), lms, batch['ref_landmarks'])
  pixel_weight = difftalk_task.mouth_pixel_weight(opts, batch['mouth_box'], z0.shape[1:3])
  loss, _ = diffusion.diffusion_loss(lambda x, t, c: model(x, t, c), diffusion.schedule_from_config(config.diffusion),
                                     z0, rng, cond=cond, pixel_weight=pixel_weight)
  if opts.end_to_end:
    metrics = {**metrics, 'diffusion_loss': loss}
  return loss + extra, metrics


# --------------------------------------------------------------------------------------------- evaluation
class Evaluator:
  """EMA samples of fixed validation examples (module doc)."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    if config.eval_landmarks not in ('predicted', 'truth'):
      raise ValueError(f'config.eval_landmarks={config.eval_landmarks!r}: expected predicted or truth')
    self.config, self.workdir = config, workdir
    self.codec: difftalk_codec.DiffTalkCodec | None = None
    self._predict = None

  def __call__(self, model: nnx.Module, ema_model: nnx.Module, eval_inputs: dict[str, np.ndarray], step: int,
               writer) -> dict[str, float]:
    del model
    n = len(eval_inputs['image'])
    if self.codec is None:
      mesh = jax.tree.leaves(nnx.state(ema_model))[0].sharding.mesh
      self.codec = difftalk_codec.DiffTalkCodec(ema_model, self.config, steps=int(self.config.diffusion.sample_steps),
                                                batch=n, mesh=mesh)
      graphdef = nnx.graphdef(ema_model)
      self._predict = jax.jit(lambda state, b: predicted_landmarks(nnx.merge(graphdef, state), b)[0])
    else:
      self.codec.set_weights(ema_model)
    predicted = np.asarray(self._predict(nnx.state(ema_model), {k: eval_inputs[k] for k in
                                                                 ('audio', 'context', 'ref_sets')}))
    lms = predicted if self.config.eval_landmarks == 'predicted' else eval_inputs['landmarks']
    inputs = dict(eval_inputs, landmarks=lms)
    generated = self.codec.sample(inputs, self.codec.seed_noise(self.config.seed + 1))
    report = difftalk_task.sample_report(self.workdir, step, writer, eval_inputs, generated)
    lm_m = landmarks_task.landmark_metrics(predicted[:, a2l.MOTION_LANDMARKS],
                                           np.asarray(eval_inputs['landmarks'])[:, a2l.MOTION_LANDMARKS])
    return {**report, 'eval/lmd': lm_m['lmd']}


TASK = tasks.Task(name='talkformer', create_model=create_model, make_datasets=make_datasets, loss_fn=loss_fn,
                  make_evaluator=Evaluator, data_stats=data_stats, frozen=frozen, load_pretrained=load_pretrained,
                  batch_spec=batch_spec)
