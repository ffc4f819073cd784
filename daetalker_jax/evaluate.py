"""End-to-end evaluation on held-out clips (DESIGN.md §7): DAE reconstruction, speech2latent, and video.

  python -m daetalker_jax.evaluate --dae DAE_WORKDIR --s2l S2L_WORKDIR --data DATA_DIR --split test \
      [--max-clips 8 --max-frames 250 --steps 20 --out results.json --syncnet syncnet_v2.model]

For every clip of the split (at most --max-clips, each cut to --max-frames):
  1. DAE reconstruction: the real frames are encoded (z_sem) and decoded by DDIM (a) from their own
     DDIM-inverted x_T (the DAE's upper bound: "how well can it reproduce a frame at all") and (b) from
     the one shared seeded x_T that generation uses (what the latent alone carries). PSNR / SSIM vs real.
  2. speech2latent on the clip's audio with (a) the ground-truth pose and (b) its own predicted pose:
     latent error vs the encoder's z_sem (normalised latents, the training loss' L1/MSE), the error of the
     mean latent as the bar to beat, and the pose adaptor's error in degrees.
  3. Video: both latent tracks decoded from the shared x_T (exactly `generate`'s decoder) and compared
     with the real frames: PSNR, SSIM, lip sync, mouth closed during silence, temporal jitter ratio.
     Lip sync depends on the data: synthface (a `<source>.json` sidecar beside the source video) → the
     strict mouth metrics of DESIGN.md §7 as the headline (`eval_metrics.strict_mouth_metrics`: only pixels
     within 30 RGB units of the mouth colours count as open mouth; strict r at lag 0 and best lag in ±2,
     open-mouth recall, amplitude ratio, teeth recall, closed in silence), and as secondary numbers the
     soft colour-window reading (`measure_frame`): Pearson r of the mouth opening of generated vs real
     frames (+ the best lag, + r against the sidecar's exact mouth_open); real video prepared with --crop
     auto → dlib 68 landmarks of the generated frames, mean mouth-landmark distance / inter-ocular distance.
     SyncNet LSE-C / LSE-D on the generated (and, for reference, the real) crops when --syncnet is given.
Results: a JSON file (per clip and frame-weighted means; NaN → null, ±inf → "inf"/"-inf"), a short table on
stdout, a contact sheet PNG beside the JSON (per clip three rows: real | generated with GT pose |
generated with predicted pose) and, on synthface, per clip `mouths_<clip_id>.png` beside the JSON: the 8
frames where the real mouth is most open (rows: GT pose | predicted pose | real).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import pathlib
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from daetalker_jax import diffusion
from daetalker_jax import eval_metrics as em
from daetalker_jax import generate
from daetalker_jax import metrics as metrics_lib
from daetalker_jax import sharding

SAMPLES_PER_FRAME = em.SAMPLES_PER_FRAME      # 640
SHEET_FRAMES = 6                              # frames per clip in the contact sheet
SHEET_CLIPS = 4                               # clips in the contact sheet
# Real video: the mouth counts as closed when the inner-lip gap (landmarks 62-66) is below this fraction
# of the inter-ocular distance (a closed mouth reads ~0-0.02, speech openings 0.05-0.4).
LIP_GAP_CLOSED = 0.04
UNAVAILABLE_SYNCNET = 'unavailable (no weights)'
MOUTH_STRIP_FRAMES = 8                        # columns of mouths_<clip_id>.png
# Summary: these metrics are averaged over clips weighted by the frames they are computed on, not by the
# clip length; counts are summed.
_SUMMARY_WEIGHTS = {'open_recall': 'num_open_frames', 'amplitude_ratio': 'num_open_frames',
                    'teeth_recall': 'num_teeth_frames'}
_SUMMARY_SUMS = ('num_open_frames', 'num_teeth_frames')


class EvaluateError(ValueError):
  """Unusable input for evaluation; the message is one line naming the file/option and the problem."""


# --------------------------------------------------------------------------------------------------------
# Video metrics of one clip (no model involved: usable on any pair of videos).
# --------------------------------------------------------------------------------------------------------
def lip_gap_series(landmarks: np.ndarray) -> np.ndarray:
  """(N,) inner-lip gap ||lm[66] - lm[62]|| / inter-ocular distance of (N, 68, 2) landmarks."""
  lm = np.asarray(landmarks, np.float64)
  iod = np.linalg.norm(lm[:, 36] - lm[:, 45], axis=-1)
  return np.linalg.norm(lm[:, 66] - lm[:, 62], axis=-1) / np.maximum(iod, 1e-6)


def video_metrics(real: np.ndarray, gen: np.ndarray, audio: np.ndarray, *, kind: str = 'synthface',
                  real_landmarks: np.ndarray | None = None, gen_landmarks: np.ndarray | None = None,
                  landmarks_valid: np.ndarray | None = None, truth_mouth: np.ndarray | None = None,
                  syncnet: Any = None) -> dict[str, float]:
  """Metrics of a generated clip `gen` against the real clip `real` (both uint8 (N, S, S, 3)) and its audio.

  kind: 'synthface' (mouth read from the reserved colours), 'landmarks' (real video with 68 landmarks of
  both clips given) or 'none' (image metrics only). `audio`: the clip's N*640 samples (float or int16).
  On synthface the headline is strict (`eval_metrics.strict_mouth_scores`: strict_r, strict_r_best,
  strict_best_lag, open_recall, amplitude_ratio, teeth_recall, strict_closed_in_silence (+ `_real`),
  num_open_frames, num_teeth_frames); lip_sync_r, lip_sync_lag, lip_sync_r_best_lag, lip_sync_r_truth and
  mouth_closed_in_silence (+ `_real`) are the soft colour-window reading, secondary.
  """
  if real.shape != gen.shape:
    raise ValueError(f'evaluate.video_metrics: real {real.shape} and generated {gen.shape} differ')
  out = {'psnr': em.psnr(gen, real), 'ssim': em.ssim(gen, real), 'jitter_ratio': em.jitter_ratio(gen, real)}
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', RuntimeWarning)   # degenerate clips give nan, recorded as null
    if kind == 'synthface':
      sg, sr = em.strict_mouth_series(gen), em.strict_mouth_series(real)
      strict = em.strict_mouth_scores(sg, sr, audio)
      strict['strict_closed_in_silence'] = strict.pop('closed_in_silence')
      strict['strict_closed_in_silence_real'] = em.mouth_closed_in_silence_rate(
          sr['area'], audio, closed_threshold=em.STRICT_CLOSED_AREA)
      out.update(strict)
      measure = em._default_measure_frame()  # pylint: disable=protected-access
      mg, mr = [measure(f) for f in gen], [measure(f) for f in real]     # one pass over the pixels each
      g = np.array([m['mouth_open'] for m in mg])                        # = em.mouth_open_series
      r = np.array([m['mouth_open'] for m in mr])
      out['lip_sync_r'] = em.pearson(g, r)
      out['lip_sync_lag'], out['lip_sync_r_best_lag'] = em.best_lag(g, r)
      out['mouth_closed_in_silence'] = em.mouth_closed_in_silence_rate(g, audio)
      out['mouth_closed_in_silence_real'] = em.mouth_closed_in_silence_rate(r, audio)
      if truth_mouth is not None:
        out['lip_sync_r_truth'] = em.pearson(g, truth_mouth)
      # Does the head pose follow? Roll from the iris line of both clips (irises are found from ~64 px up).
      rg, rr = np.array([m['roll'] for m in mg]), np.array([m['roll'] for m in mr])
      ok = np.isfinite(rg) & np.isfinite(rr)
      out['roll_measured_mae_deg'] = float(np.mean(np.abs(rg[ok] - rr[ok]))) if ok.any() else float('nan')
    elif kind == 'landmarks':
      valid = np.ones(len(real), bool) if landmarks_valid is None else np.asarray(landmarks_valid, bool)
      out['mouth_landmark_distance'] = em.mouth_landmark_distance(gen_landmarks, real_landmarks, valid)
      g = lip_gap_series(gen_landmarks)
      r = lip_gap_series(real_landmarks)
      out['lip_sync_r'] = em.pearson(g[valid], r[valid]) if valid.sum() > 1 else float('nan')
      silent = em.silence_mask(audio, len(real)) & valid                  # frames with landmarks only
      for key, series in (('mouth_closed_in_silence', g), ('mouth_closed_in_silence_real', r)):
        out[key] = float(np.mean(series[silent] <= LIP_GAP_CLOSED)) if silent.any() else float('nan')
    if syncnet is not None and len(gen) >= 6:
      s = em.sync_scores(gen, audio, syncnet)
      out.update(lse_c=s['lse_c'], lse_d=s['lse_d'], av_offset=s['offset'])
  return out


@functools.lru_cache(maxsize=1)
def _dlib_models():
  import dlib  # pylint: disable=g-import-not-at-top
  from data_prep import face  # pylint: disable=g-import-not-at-top
  return face.make_detector('dlib'), dlib.shape_predictor(face.shape_predictor_path())


def detect_landmarks(frames: np.ndarray, fallback: np.ndarray, fallback_valid: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, int]:
  """68 dlib landmarks of every frame (N, S, S, 3) uint8, in crop pixels: (landmarks, valid, detected).

  Crops are upscaled so the face is larger than the HOG detector's 80 px window; where no face is found,
  the landmark predictor starts from the box of the real frame's landmarks (`fallback`, same crop).
  """
  import cv2  # pylint: disable=g-import-not-at-top
  import dlib  # pylint: disable=g-import-not-at-top
  detector, predictor = _dlib_models()
  n, s = frames.shape[:2]
  up = max(1, int(math.ceil(240 / s)))
  out = np.zeros((n, 68, 2), np.float32)
  valid = np.zeros(n, bool)
  detected = 0
  for i, frame in enumerate(frames):
    img = cv2.resize(frame, (s * up, s * up), interpolation=cv2.INTER_LINEAR) if up > 1 else frame
    boxes = detector(img, 0)
    if boxes:
      box = max(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
      detected += 1
    elif fallback_valid[i]:
      lo, hi = fallback[i].min(0) * up, fallback[i].max(0) * up
      box = np.array([lo[0], lo[1], hi[0], hi[1]])
    else:
      continue
    rect = dlib.rectangle(*[int(round(v)) for v in box])
    shape = predictor(img, rect)
    out[i] = np.array([(p.x, p.y) for p in shape.parts()], np.float32) / up
    valid[i] = True
  return out, valid, detected


# --------------------------------------------------------------------------------------------------------
# Models.
# --------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Models:
  """Both checkpoints and what is needed to go between their units."""
  dae: nnx.Module
  dae_config: Any
  s2l: nnx.Module
  s2l_config: Any
  mean: np.ndarray             # (D,) latent normalisation of the s2l training
  std: np.ndarray              # (D,)
  deg_per_unit: float          # pose degrees per normalised unit
  latent_loss: str             # 'l1' | 'mse', the s2l training loss = the latent error reported


def load_models(dae_dir: str, s2l_dir: str, data_dir: str) -> Models:
  """Loads both EMA models through generate's validated loader (one-line errors for bad workdirs)."""
  dae, dae_config, _ = generate.load_checkpoint(dae_dir, '--dae', generate.DAE_TASKS)
  s2l, s2l_config, stats = generate.load_checkpoint(s2l_dir, '--s2l', generate.S2L_TASKS)
  dim = int(dae_config.model.enc_out_channels)
  if int(s2l_config.model.latent_dim) != dim:
    raise EvaluateError(f'--s2l={s2l_dir}: predicts {s2l_config.model.latent_dim}-d latents, the DAE in '
                        f'{dae_dir} uses {dim}-d')
  mean, std = generate.latent_stats(s2l_config, stats, data_dir, dim)
  deg = float(stats.get('pose_scale', s2l_config.get('loss', {}).get('pose_scale', 1.0)))
  kind = str(s2l_config.get('loss', {}).get('latent_loss', 'l1'))
  return Models(dae=dae, dae_config=dae_config, s2l=s2l, s2l_config=s2l_config, mean=mean, std=std,
                deg_per_unit=deg, latent_loss=kind)


class Reconstructor:
  """Jitted encode → DDIM invert → DDIM decode from the inverted and from the shared x_T, in fixed batches.

  Returns z_sem (B, D) and both reconstructions as uint8, batch sharded over the mesh like the decoder.
  """

  def __init__(self, model: nnx.Module, config: Any, *, steps: int, batch: int, mesh: jax.sharding.Mesh):
    self.batch = batch
    schedule = diffusion.schedule_from_config(config.diffusion)
    table = diffusion.table_for(schedule, steps)
    rep, bs = sharding.replicated(mesh), sharding.batch_sharding(mesh)
    graphdef, state = nnx.split(model)
    self._state = jax.device_put(state, rep)
    self._bs = bs
    to_u8 = lambda x: jnp.round((jnp.clip(x, -1, 1) + 1) * 127.5).astype(jnp.uint8)

    def run(state, images, noise):
      m = nnx.merge(graphdef, state)
      eps_fn = diffusion.model_eps_fn(m, schedule)
      x0 = images.astype(jnp.float32) / 127.5 - 1.0                          # (B,S,S,3)
      cond = m.encode(x0)                                                     # (B,D)
      x_T = diffusion.ddim_invert(eps_fn, schedule, x0, cond, steps=steps, table=table)
      rec_inv = diffusion.ddim_sample(eps_fn, schedule, x_T, cond, steps=steps, table=table)
      shared = jax.lax.with_sharding_constraint(jnp.broadcast_to(noise, x0.shape), bs)
      rec_shared = diffusion.ddim_sample(eps_fn, schedule, shared, cond, steps=steps, table=table)
      return cond.astype(jnp.float32), to_u8(rec_inv), to_u8(rec_shared)

    self._run = jax.jit(run, in_shardings=(rep, bs, rep), out_shardings=(bs, bs, bs))
    self._rep = rep

  def __call__(self, images: np.ndarray, x_T: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """images uint8 (N, S, S, 3) → (z (N, D), rec_inverted uint8, rec_shared uint8)."""
    noise = jax.device_put(np.asarray(x_T, np.float32), self._rep)
    zs, invs, shs = [], [], []
    for start in range(0, len(images), self.batch):
      chunk = images[start:start + self.batch]
      k = len(chunk)
      if k < self.batch:                                                      # pad: one compilation
        chunk = np.concatenate([chunk, np.repeat(chunk[-1:], self.batch - k, axis=0)])
      z, inv, sh = self._run(self._state, jax.device_put(chunk, self._bs), noise)
      zs.append(np.asarray(z)[:k])
      invs.append(np.asarray(inv)[:k])
      shs.append(np.asarray(sh)[:k])
    return np.concatenate(zs), np.concatenate(invs), np.concatenate(shs)


# --------------------------------------------------------------------------------------------------------
# Data.
# --------------------------------------------------------------------------------------------------------
def resize_frames(images: np.ndarray, size: int) -> np.ndarray:
  """uint8 (N, s, s, 3) → (N, size, size, 3) (area filter down, linear up); unchanged at the same size."""
  if images.shape[1] == size:
    return images
  import cv2  # pylint: disable=g-import-not-at-top
  interp = cv2.INTER_AREA if images.shape[1] > size else cv2.INTER_LINEAR
  return np.stack([cv2.resize(f, (size, size), interpolation=interp) for f in images])


def synthface_truth(source: str, start: int, n: int) -> np.ndarray | None:
  """(n,) exact mouth_open of a synthface clip from its sidecar `<source stem>.json`, or None."""
  side = pathlib.Path(source).with_suffix('.json')
  if not side.is_file():
    return None
  try:
    m = json.loads(side.read_text())['frames']['mouth_open']
  except (ValueError, KeyError, TypeError):
    return None
  m = np.asarray(m, np.float64)[start:start + n]
  return m if len(m) == n else None


def lip_sync_kind(data_dir: str, first_clip: dict[str, Any]) -> str:
  """'synthface' (sidecar beside the source), 'landmarks' (crop 'auto': dlib landmarks), else 'none'."""
  from daetalker_jax.data import dataset  # pylint: disable=g-import-not-at-top
  if synthface_truth(first_clip['source'], first_clip['start_frame'], 1) is not None:
    return 'synthface'
  crop = str(dataset.dataset_info(data_dir).get('crop') or '')
  return 'landmarks' if crop == 'auto' else 'none'


def iter_eval_clips(data_dir: str, split: str, max_clips: int | None, max_frames: int | None
                    ) -> Iterator[dict[str, Any]]:
  from daetalker_jax.data import dataset  # pylint: disable=g-import-not-at-top
  if dataset.num_clips(data_dir, split) == 0:
    raise EvaluateError(f'--data={data_dir}: split {split!r} has no clips')
  for i, clip in enumerate(dataset.iterate_clips(data_dir, split)):
    if max_clips is not None and i >= max_clips:
      return
    n = clip['num_frames'] if not max_frames else min(clip['num_frames'], max_frames)
    for key in ('images', 'pose', 'landmarks', 'landmarks_valid', 'box'):
      clip[key] = clip[key][:n]
    clip['audio'] = clip['audio'][:n * SAMPLES_PER_FRAME]
    clip['num_frames'] = n
    yield clip


# --------------------------------------------------------------------------------------------------------
# The evaluation.
# --------------------------------------------------------------------------------------------------------
def _latent_error(kind: str, pred: np.ndarray, target: np.ndarray) -> float:
  d = np.asarray(pred, np.float64) - np.asarray(target, np.float64)
  return float(np.mean(np.abs(d)) if kind == 'l1' else np.mean(d ** 2))


def _mean_over_clips(clips: list[dict[str, Any]], group: str) -> dict[str, float]:
  """Frame-weighted mean of every metric of `group` over clips, skipping NaN (inf propagates).

  The strict recalls are weighted by the frames they count (`_SUMMARY_WEIGHTS`), frame counts summed.
  """
  keys = sorted({k for c in clips for k in c[group]})
  out = {}
  for k in keys:
    if k in _SUMMARY_SUMS:
      out[k] = float(sum(c[group][k] for c in clips if k in c[group]))
      continue
    by = _SUMMARY_WEIGHTS.get(k)
    vals = [(float(c[group][k]), c[group].get(by, 0) if by else c['num_frames']) for c in clips if k in c[group]]
    vals = [(v, w) for v, w in vals if not math.isnan(v)]
    out[k] = float(np.average([v for v, _ in vals], weights=[w for _, w in vals])) if vals else float('nan')
  return out


def _json_safe(x: Any) -> Any:
  if isinstance(x, dict):
    return {k: _json_safe(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_json_safe(v) for v in x]
  if isinstance(x, (np.floating, np.integer)):
    x = x.item()
  if isinstance(x, float):
    if math.isnan(x):
      return None
    if math.isinf(x):
      return 'inf' if x > 0 else '-inf'
  return x


def write_json(path: str, obj: dict[str, Any]) -> None:
  """Strict JSON written atomically (temp file + rename)."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(suffix='.json', dir=directory)
  try:
    with os.fdopen(fd, 'w') as f:
      json.dump(_json_safe(obj), f, indent=1, allow_nan=False)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def contact_sheet(rows_per_clip: Sequence[Sequence[np.ndarray]], frames: int = SHEET_FRAMES) -> np.ndarray:
  """uint8 grid: per clip its rows (each (N, S, S, 3) uint8), `frames` evenly spaced frames per row.

  A label column names the rows (real | GT pose | pred pose) when the frames are large enough to read.
  """
  import cv2  # pylint: disable=g-import-not-at-top
  blocks = []
  for rows in rows_per_clip:
    n = len(rows[0])
    idx = np.unique(np.linspace(0, n - 1, min(frames, n)).round().astype(int))
    blocks.append(metrics_lib.image_grid([r[idx].astype(np.float32) / 127.5 - 1.0 for r in rows]))
  width = max(b.shape[1] for b in blocks)
  blocks = [np.pad(b, ((0, 0), (0, width - b.shape[1]), (0, 0)), constant_values=255) for b in blocks]
  sheet = np.concatenate(blocks, axis=0)
  s = rows_per_clip[0][0].shape[1]
  if s >= 32:
    label_w = 80
    labels = np.full((sheet.shape[0], label_w, 3), 255, np.uint8)
    names = ('real', 'GT pose', 'pred pose')
    y = 2
    for rows in rows_per_clip:
      for r in range(len(rows)):
        cv2.putText(labels, names[r % 3], (3, y + s // 2 + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1,
                    cv2.LINE_AA)
        y += s + 2
    sheet = np.concatenate([labels, sheet], axis=1)
  return sheet


def evaluate(dae_dir: str, s2l_dir: str, data_dir: str, split: str = 'test', *, max_clips: int | None = None,
             max_frames: int | None = None, steps: int = 20, batch: int = 16, seed: int = 0,
             smooth: float = 0.0, bf16: bool = False, syncnet_path: str | None = None,
             out: str = 'results.json', sheet: str | None = None, progress: bool = True) -> dict[str, Any]:
  """Runs the whole evaluation; writes `out` (JSON) and the contact sheet; returns the results dict."""
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  from daetalker_jax.data import dataset  # pylint: disable=g-import-not-at-top
  t_start = time.perf_counter()
  if not os.path.isfile(os.path.join(data_dir, 'dataset_info.json')):
    raise EvaluateError(f'--data={data_dir}: not a prepared dataset (no dataset_info.json)')
  if split not in dataset.SPLITS:
    raise EvaluateError(f'--split={split!r}: expected one of {dataset.SPLITS}')
  if max_clips is not None and max_clips < 1:
    raise EvaluateError(f'--max-clips={max_clips}: must be >= 1')
  if max_frames is not None and max_frames < 6:
    raise EvaluateError(f'--max-frames={max_frames}: must be >= 6 (jitter and SyncNet need several frames)')
  generate.validate_options(generate.Options(steps=steps, batch=batch, smooth=smooth))
  syncnet, syncnet_note = em.load_syncnet(syncnet_path)
  if syncnet is None and syncnet_path:
    raise EvaluateError(f'--syncnet: {syncnet_note}')

  if not out.endswith('.json'):                       # a folder (`make eval`): results.json + sheet.png in it
    out, sheet = os.path.join(out, 'results.json'), sheet or os.path.join(out, 'sheet.png')
  models = load_models(dae_dir, s2l_dir, data_dir)
  decoder = generate.FrameDecoder(models.dae, models.dae_config, steps=steps, batch=batch, bf16=bf16)
  recon = Reconstructor(models.dae, models.dae_config, steps=steps, batch=decoder.batch, mesh=decoder.mesh)
  x_T = decoder.seed_noise(seed)
  size = decoder.image_size
  num = dataset.num_clips(data_dir, split)
  total = num if max_clips is None else min(num, max_clips)
  say = (lambda msg: print(msg, flush=True)) if progress else (lambda msg: None)
  say(f'evaluate: {total} {split} clip(s) of {data_dir}, DAE {size} px, {steps} DDIM steps, '
      f'{jax.device_count()} device(s)')

  clips, sheet_rows, kind = [], [], None
  t_models = time.perf_counter() - t_start
  for clip in tqdm(iter_eval_clips(data_dir, split, max_clips, max_frames), total=total, unit='clip',
                   desc='evaluate', disable=not progress, dynamic_ncols=True):
    t0 = time.perf_counter()
    kind = kind or lip_sync_kind(data_dir, clip)
    n = clip['num_frames']
    real = resize_frames(clip['images'], size)                              # (N,S,S,3) uint8
    audio = clip['audio'].astype(np.float32) / 32768.0                      # (N*640,)
    pose = clip['pose'].astype(np.float32)                                  # (N,3) degrees

    # 1. DAE reconstruction and the encoder's latents (speech2latent's targets).
    z, rec_inv, rec_shared = recon(real, x_T)
    z_norm = (z - models.mean) / models.std
    dae_m = {'psnr_inverted': em.psnr(rec_inv, real), 'ssim_inverted': em.ssim(rec_inv, real),
             'psnr_shared_noise': em.psnr(rec_shared, real), 'ssim_shared_noise': em.ssim(rec_shared, real)}

    # 2. speech2latent with the GT pose and with its own predicted pose.
    s2l_kw = dict(chunk_frames=generate.Options.chunk_frames, overlap_frames=generate.Options.overlap_frames)
    lat = {'gt_pose': generate.predict_latents(models.s2l, audio, pose=pose / models.deg_per_unit, **s2l_kw),
           'pred_pose': generate.predict_latents(models.s2l, audio, pose=None, **s2l_kw)}
    baseline = _latent_error(models.latent_loss, np.zeros_like(z_norm), z_norm)

    # 3. Generated video for both latent tracks, from the shared x_T, and its metrics.
    truth = synthface_truth(clip['source'], clip['start_frame'], n) if kind == 'synthface' else None
    per_clip = {'clip_id': clip['clip_id'], 'num_frames': n, 'dae_recon': dae_m}
    gens = []
    for name, (latent, pose_pred) in lat.items():
      frames = generate.smooth_latents(latent * models.std + models.mean, smooth)
      gen = np.concatenate(list(decoder.iter_frames(frames, x_T)))
      gens.append(gen)
      extra = {}
      if kind == 'landmarks':
        lm, ok, det = detect_landmarks(gen, clip['landmarks'], clip['landmarks_valid'])
        extra = dict(gen_landmarks=lm, real_landmarks=clip['landmarks'],
                     landmarks_valid=ok & clip['landmarks_valid'])
      m = video_metrics(real, gen, audio, kind=kind, truth_mouth=truth, syncnet=syncnet, **extra)
      if kind == 'landmarks':
        m['face_detected_rate'] = det / n
      m['latent_error'] = _latent_error(models.latent_loss, latent, z_norm)
      m['latent_error_mean_baseline'] = baseline
      err = np.abs(pose_pred * models.deg_per_unit - pose)                  # (N,3) degrees
      m['pose_mae_deg'] = float(err.mean())
      for i, axis in enumerate(('yaw', 'pitch', 'roll')):
        m[f'pose_mae_deg_{axis}'] = float(err[:, i].mean())
      per_clip[name] = m
    if syncnet is not None and n >= 6:
      s = em.sync_scores(real, audio, syncnet)
      per_clip['real'] = {'lse_c': s['lse_c'], 'lse_d': s['lse_d'], 'av_offset': s['offset']}
    if truth is not None:
      with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)
        per_clip.setdefault('real', {})['lip_sync_r_truth'] = em.pearson(em.mouth_open_series(real), truth)
        per_clip['real']['strict_r_truth'] = em.pearson(em.strict_mouth_series(real)['area'], truth)
    if kind == 'synthface':                                # the picture behind the strict numbers
      strip = os.path.join(os.path.dirname(os.path.abspath(out)), f"mouths_{clip['clip_id']}.png")
      em.save_mouth_strip(strip, gens, real, MOUTH_STRIP_FRAMES)
      per_clip['mouth_strip'] = strip
    per_clip['seconds'] = time.perf_counter() - t0
    clips.append(per_clip)
    if len(sheet_rows) < SHEET_CLIPS:
      sheet_rows.append([real, *gens])
    say(f"  {clip['clip_id']}: {n} frames, {_clip_line(per_clip)} (GT / pred pose), {per_clip['seconds']:.1f} s")

  groups = ('gt_pose', 'pred_pose', 'dae_recon') + (('real',) if any('real' in c for c in clips) else ())
  summary = {g: _mean_over_clips([c for c in clips if g in c], g) for g in groups}
  frames_total = sum(c['num_frames'] for c in clips)
  sheet = sheet or os.path.splitext(out)[0] + '_sheet.png'
  results = {
      'dae': os.path.abspath(dae_dir), 's2l': os.path.abspath(s2l_dir), 'data': os.path.abspath(data_dir),
      'split': split, 'steps': steps, 'seed': seed, 'smooth': smooth, 'bf16': bf16, 'image_size': size,
      'num_clips': len(clips), 'num_frames': frames_total, 'lip_sync_kind': kind,
      'latent_loss': models.latent_loss,
      'syncnet': 'used' if syncnet is not None else UNAVAILABLE_SYNCNET,
      'summary': summary, 'clips': clips, 'contact_sheet': os.path.abspath(sheet),
      'decoder_compiles': decoder.num_compiles(),
      'timing': {'load_s': t_models, 'total_s': time.perf_counter() - t_start,
                 'frames_per_s': frames_total / max(sum(c['seconds'] for c in clips), 1e-9)},
  }
  metrics_lib.write_png(sheet, contact_sheet(sheet_rows))
  write_json(out, results)
  say(format_table(results))
  say(f'wrote {out} and {sheet}')
  return results


# --------------------------------------------------------------------------------------------------------
# Reporting.
# --------------------------------------------------------------------------------------------------------
_ROWS = (  # (label, key, format)
    ('strict r (lag 0)', 'strict_r', '{:.3f}'),
    ('strict r (best lag, +-2)', 'strict_r_best', '{:.3f}'),
    ('strict best lag (frames)', 'strict_best_lag', '{:+.1f}'),
    ('open-mouth recall', 'open_recall', '{:.3f}'),
    ('amplitude ratio (gen/real)', 'amplitude_ratio', '{:.3f}'),
    ('teeth recall', 'teeth_recall', '{:.3f}'),
    ('closed in silence (strict)', 'strict_closed_in_silence', '{:.3f}'),
    ('  (real video)', 'strict_closed_in_silence_real', '{:.3f}'),
    ('open frames (real, all clips)', 'num_open_frames', '{:.0f}'),
    ('PSNR (dB)', 'psnr', '{:.2f}'),
    ('SSIM', 'ssim', '{:.3f}'),
    ('lip sync r (mouth)', 'lip_sync_r', '{:.3f}'),
    ('lip sync best lag (frames)', 'lip_sync_lag', '{:+.1f}'),
    ('lip sync r vs truth', 'lip_sync_r_truth', '{:.3f}'),
    ('mouth landmark dist (/IOD)', 'mouth_landmark_distance', '{:.4f}'),
    ('mouth closed in silence', 'mouth_closed_in_silence', '{:.3f}'),
    ('  (real video)', 'mouth_closed_in_silence_real', '{:.3f}'),
    ('jitter ratio (gen/real)', 'jitter_ratio', '{:.3f}'),
    ('roll from irises, MAE (deg)', 'roll_measured_mae_deg', '{:.2f}'),
    ('latent error', 'latent_error', '{:.4f}'),
    ('  (mean-latent baseline)', 'latent_error_mean_baseline', '{:.4f}'),
    ('pose adaptor MAE (deg)', 'pose_mae_deg', '{:.2f}'),
    ('SyncNet LSE-C', 'lse_c', '{:.3f}'),
    ('SyncNet LSE-D', 'lse_d', '{:.3f}'),
)
# On synthface the colour-window (soft) lip-sync numbers are secondary to the strict ones (DESIGN.md §7).
_SOFT_LABELS = {'lip_sync_r': 'soft r (secondary)', 'lip_sync_lag': 'soft r best lag (secondary)',
                'lip_sync_r_truth': 'soft r vs truth (secondary)',
                'mouth_closed_in_silence': 'soft closed in silence (sec.)'}


def _clip_line(per_clip: dict[str, Any]) -> str:
  """One clip's headline numbers, 'GT / pred' pairs: strict mouth metrics (synthface), then PSNR."""
  g, p = per_clip['gt_pose'], per_clip['pred_pose']
  pair = lambda key, f: f'{_fmt(g.get(key), f)} / {_fmt(p.get(key), f)}'
  parts = []
  if 'strict_r' in g:
    parts += [f"strict r {pair('strict_r', '{:.2f}')}", f"open recall {pair('open_recall', '{:.2f}')} "
              f"({g['num_open_frames']} open frames)", f"amplitude {pair('amplitude_ratio', '{:.2f}')}"]
  return ', '.join(parts + [f"PSNR {pair('psnr', '{:.2f}')} dB"])


def _fmt(v: Any, f: str) -> str:
  if v is None or (isinstance(v, float) and math.isnan(v)):
    return 'n/a'
  if isinstance(v, float) and math.isinf(v):
    return 'inf'
  return f.format(v)


def format_table(results: dict[str, Any]) -> str:
  """A short human-readable table of the summary (GT pose | predicted pose)."""
  s = results['summary']
  synthface = results['lip_sync_kind'] == 'synthface'
  lines = [f"{results['num_clips']} clip(s), {results['num_frames']} frames, {results['steps']} DDIM steps, "
           f"lip sync by {results['lip_sync_kind']}"]
  if synthface:
    lines.append('headline: strict mouth metrics (only pixels within 30 RGB of the mouth colours count); '
                 'soft colour-window scores are secondary')
  lines.append(f"{'metric':<30}{'GT pose':>12}{'pred pose':>12}")
  for label, key, f in _ROWS:
    label = _SOFT_LABELS.get(key, label) if synthface else label
    if key in s['gt_pose'] or key in s['pred_pose']:
      lines.append(f"{label:<30}{_fmt(s['gt_pose'].get(key), f):>12}{_fmt(s['pred_pose'].get(key), f):>12}")
  if results['syncnet'] != 'used':
    lines.append(f"{'SyncNet LSE-C / LSE-D':<30}{results['syncnet']:>24}")
  d = s['dae_recon']
  lines.append(f"DAE reconstruction PSNR/SSIM: inverted x_T {_fmt(d['psnr_inverted'], '{:.2f}')} dB / "
               f"{_fmt(d['ssim_inverted'], '{:.3f}')}, shared x_T {_fmt(d['psnr_shared_noise'], '{:.2f}')} dB / "
               f"{_fmt(d['ssim_shared_noise'], '{:.3f}')}")
  real = s.get('real', {})
  if real:
    lines.append('real video: ' + ', '.join(f'{k} {_fmt(v, "{:.3f}")}' for k, v in real.items()))
  return '\n'.join(lines)


# --------------------------------------------------------------------------------------------------------
# Command line.
# --------------------------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog='python -m daetalker_jax.evaluate',
                              description='Evaluate DAE + speech2latent on held-out clips (DESIGN.md §7).')
  p.add_argument('--dae', required=True, help='DAE training workdir (task dae)')
  p.add_argument('--s2l', required=True, help='speech2latent training workdir')
  p.add_argument('--data', required=True, help='prepared dataset (data_prep.prepare --out)')
  p.add_argument('--split', default='test', help='train | val | test (default test)')
  p.add_argument('--max-clips', type=int, default=None, help='evaluate at most this many clips')
  p.add_argument('--max-frames', type=int, default=None, help='cut every clip to this many frames')
  p.add_argument('--steps', type=int, default=20, help='DDIM steps (default 20)')
  p.add_argument('--batch', type=int, default=16, help='frames per DDIM batch (default 16)')
  p.add_argument('--seed', type=int, default=0, help='seed of the shared x_T (default 0)')
  p.add_argument('--smooth', type=float, default=0.0, help='Gaussian sigma over time for the latents')
  p.add_argument('--bf16', action='store_true', help='DAE computes in bfloat16')
  p.add_argument('--syncnet', default='', help='syncnet_v2.model (joonson/syncnet_python) for LSE-C/LSE-D')
  p.add_argument('--out', default='results.json',
                 help='results .json file, or a folder for results.json + sheet.png (default results.json)')
  p.add_argument('--sheet', default='', help='contact sheet PNG (default: beside --out, *_sheet.png)')
  p.add_argument('--quiet', action='store_true', help='no progress output')
  return p


def main(argv: list[str] | None = None) -> int:
  args = _parser().parse_args(argv)
  try:
    evaluate(args.dae, args.s2l, args.data, args.split, max_clips=args.max_clips, max_frames=args.max_frames,
             steps=args.steps, batch=args.batch, seed=args.seed, smooth=args.smooth, bf16=args.bf16,
             syncnet_path=args.syncnet or None, out=args.out, sheet=args.sheet or None,
             progress=not args.quiet)
  except (EvaluateError, generate.GenerateError, OSError) as e:
    print(f'error: {" ".join(str(e).split())}', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())
