"""Generation: speech audio (+ pose and noise options) → talking-face mp4 (DAE-Talker stage 3).

  python -m daetalker_jax.generate --audio speech.wav --dae DAE_WORKDIR --s2l S2L_WORKDIR --out video.mp4

Pipeline (docs/GENERATE.md has every option):
  1. audio: any ffmpeg-readable file → 16 kHz mono float32; N = round(samples / 640) video frames, the
     audio padded / trimmed to N*640 samples (the data contract: samples [640k, 640(k+1)) ↔ frame k).
  2. speech2latent on the raw audio (its front end computes the features), in windows of `chunk_frames`
     (30 s) overlapping by `overlap_frames` and linearly crossfaded, so memory does not grow with the
     length; windows are padded with a mask (padding never changes the real frames' outputs), so one
     program serves every window. The pose fed to the pose adaptor is the model's own prediction, a
     dataset clip's track, a .npy file, or zeros ("still"), times `--pose-scale`.
  3. latents de-normalised with the mean/std stored in the s2l checkpoint, optionally smoothed over time.
  4. DDIM decoding of every frame from ONE shared x_T (seeded noise, or the DDIM inversion of a real
     frame): frames in fixed-size batches sharded over the mesh's batch axes, `lax.scan` over the steps
     inside one jitted function; the last partial batch is padded to the full batch, so the program is
     compiled once per (batch, steps, resolution).
  5. frames → uint8 on the device → streamed to ffmpeg (h264 yuv420p, the input audio as AAC) while the
     next batch computes (JAX dispatch is asynchronous); at most two batches of frames are alive, so a
     10-minute input never holds its 15,000 frames in memory. Optionally the face is pasted back into
     the source video it was cropped from (stored crop boxes, feathered mask).

The output file appears only when it is complete (VideoWriter writes a temp file and renames it); every
input is validated before any work starts, so bad input gives a one-line error and no file.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
import dataclasses
import functools
import math
import os
import re
import sys
import time
from typing import Any

from absl import logging
from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from daetalker_jax import checkpoint
from daetalker_jax import diffusion
from daetalker_jax import sharding
from daetalker_jax.data import audio as audio_lib
from daetalker_jax.data import video_io

P = jax.P
FPS = video_io.FPS
SAMPLE_RATE = video_io.SAMPLE_RATE
SAMPLES_PER_FRAME = video_io.SAMPLES_PER_FRAME       # 640
MIN_SECONDS = 0.5                                    # shorter audio is refused (below ~12 frames)
DAE_TASKS = ('dae',)
S2L_TASKS = ('s2l', 'speech2latent')
POSE_CHOICES = 'predicted | still | reference:CLIP_ID | FILE.npy'


class GenerateError(ValueError):
  """Unusable input for generation; the message is one line naming the file/option and the problem."""


@dataclasses.dataclass(frozen=True)
class Options:
  """Everything that changes the generated video besides the input audio and the two checkpoints."""
  steps: int = 20                     # DDIM steps
  noise: str = 'seed:0'               # 'seed:N' | 'invert:CLIP_ID:FRAME' (needs data_dir)
  pose: str = 'predicted'             # see POSE_CHOICES
  pose_scale: float = 1.0             # multiplies the pose fed to the pose adaptor (0 = still)
  smooth: float = 0.0                 # Gaussian sigma (frames) over time applied to the latents; 0 = off
  batch: int = 16                     # frames per DDIM batch (rounded up to a multiple of the devices)
  bf16: bool = False                  # DAE computes in bfloat16 (parameters stay float32)
  data_dir: str = ''                  # prepared dataset (for invert:, reference:, paste-back)
  paste_back: str = ''                # source video to paste the generated face into
  chunk_frames: int = 750             # speech2latent window (30 s)
  overlap_frames: int = 50            # overlap (2 s) crossfaded between windows


# --------------------------------------------------------------------------------------------------------
# Validation of the inputs (all before any heavy work).
# --------------------------------------------------------------------------------------------------------
def num_frames_for(num_samples: int) -> int:
  """Video frames for an audio length: round(samples / 640), halves rounding up."""
  return int(math.floor(num_samples / SAMPLES_PER_FRAME + 0.5))


def load_speech(path: str | os.PathLike[str]) -> np.ndarray:
  """The input speech as float32 16 kHz mono, refusing files that are not audio or are too short."""
  try:
    audio = audio_lib.load_audio(path, sr=SAMPLE_RATE)
  except audio_lib.AudioError as e:
    raise GenerateError(str(e)) from None
  seconds = len(audio) / SAMPLE_RATE
  if seconds < MIN_SECONDS:
    raise GenerateError(f'{path}: audio is {seconds:.2f} s long; generation needs at least {MIN_SECONDS} s')
  return audio


def parse_noise(spec: str) -> tuple[str, Any]:
  """'seed:N' → ('seed', N); 'invert:CLIP_ID:FRAME' → ('invert', (clip_id, frame))."""
  m = re.fullmatch(r'seed:(\d+)', spec or '')
  if m:
    return 'seed', int(m.group(1))
  m = re.fullmatch(r'invert:(.+):(\d+)', spec or '')
  if m:
    return 'invert', (m.group(1), int(m.group(2)))
  raise GenerateError(f'--noise={spec!r}: expected seed:N or invert:CLIP_ID:FRAME')


def parse_pose(spec: str) -> tuple[str, str | None]:
  """'predicted' | 'still' | 'reference:CLIP_ID' | a path ending in .npy → (kind, argument)."""
  if spec in ('predicted', 'still'):
    return spec, None
  if spec.startswith('reference:') and len(spec) > len('reference:'):
    return 'reference', spec[len('reference:'):]
  if spec.endswith('.npy'):
    if not os.path.isfile(spec):
      raise GenerateError(f'--pose={spec}: no such file')
    return 'file', spec
  raise GenerateError(f'--pose={spec!r}: expected {POSE_CHOICES}')


def validate_options(opts: Options) -> None:
  """Raises GenerateError for any option that cannot work (cheap checks, no model loaded)."""
  if opts.steps < 1 or opts.steps > 1000:
    raise GenerateError(f'--steps={opts.steps}: must be in 1..1000')
  if opts.batch < 1:
    raise GenerateError(f'--batch={opts.batch}: must be >= 1')
  if opts.smooth < 0 or not math.isfinite(opts.smooth):
    raise GenerateError(f'--smooth={opts.smooth}: must be a finite sigma >= 0 (frames)')
  if not math.isfinite(opts.pose_scale):
    raise GenerateError(f'--pose-scale={opts.pose_scale}: must be finite')
  if opts.overlap_frames < 0 or opts.chunk_frames <= opts.overlap_frames:
    raise GenerateError(f'chunk_frames={opts.chunk_frames} must exceed overlap_frames={opts.overlap_frames} >= 0')
  noise_kind, _ = parse_noise(opts.noise)
  pose_kind, _ = parse_pose(opts.pose)
  needs_data = [n for n, need in (('--noise invert:', noise_kind == 'invert'),
                                  ('--pose reference:', pose_kind == 'reference'),
                                  ('--paste-back', bool(opts.paste_back))) if need]
  if needs_data and not opts.data_dir:
    raise GenerateError(f'{needs_data[0]} needs --data DATA_DIR (the prepared dataset)')
  if opts.data_dir and not os.path.isfile(os.path.join(opts.data_dir, 'dataset_info.json')):
    raise GenerateError(f'--data={opts.data_dir}: not a prepared dataset (no dataset_info.json)')
  if opts.paste_back and not os.path.isfile(opts.paste_back):
    raise GenerateError(f'--paste-back={opts.paste_back}: no such file')


# --------------------------------------------------------------------------------------------------------
# Checkpoints.
# --------------------------------------------------------------------------------------------------------
def read_meta(workdir: str, flag: str, tasks: tuple[str, ...]) -> dict[str, Any]:
  """The JSON meta of the latest checkpoint in `workdir`, checked to come from one of `tasks`."""
  if not os.path.isdir(workdir):
    raise GenerateError(f'{flag}={workdir}: no such directory')
  if not os.path.isdir(checkpoint.checkpoint_dir(workdir)):
    raise GenerateError(f'{flag}={workdir}: not a training workdir (no checkpoints/ folder)')
  ckpt = checkpoint.Checkpointer(workdir, read_only=True, async_save=False)
  try:
    if ckpt.latest_step() is None:
      raise GenerateError(f'{flag}={workdir}: no complete checkpoint in {ckpt.directory}')
    meta = ckpt.restore_meta()
  except GenerateError:
    raise
  except Exception as e:  # pylint: disable=broad-except  (orbax raises many types for a damaged dir)
    raise GenerateError(f'{flag}={workdir}: unreadable checkpoint ({" ".join(str(e).split())[:200]})') from None
  finally:
    ckpt.close()
  task = meta.get('config', {}).get('task')
  if task not in tasks:
    raise GenerateError(f'{flag}={workdir}: checkpoint of task {task!r}, expected {" or ".join(tasks)}')
  return meta


def load_checkpoint(workdir: str, flag: str, tasks: tuple[str, ...]
                    ) -> tuple[nnx.Module, ml_collections.ConfigDict, dict[str, Any]]:
  """(EMA model in eval mode, its training config, the meta's data statistics)."""
  meta = read_meta(workdir, flag, tasks)
  try:
    model, config = checkpoint.load_model(workdir, which='ema')
  except (ValueError, FileNotFoundError) as e:
    raise GenerateError(f'{flag}={workdir}: {" ".join(str(e).split())}') from None
  return model, config, dict(meta.get('data_stats') or {})


def latent_stats(config: ml_collections.ConfigDict, stats: dict[str, Any], data_dir: str, dim: int
                 ) -> tuple[np.ndarray, np.ndarray]:
  """(mean, std) (D,) that undo the s2l training normalisation (identity when it trained unnormalised).

  Read from the checkpoint's meta (`latent_mean`/`latent_std`), else from DATA_DIR/latents/<name>/stats.json.
  """
  if not stats.get('normalize_latents', config.data.get('normalize_latents', True)):
    return np.zeros(dim, np.float32), np.ones(dim, np.float32)
  if 'latent_mean' in stats and 'latent_std' in stats:
    mean, std = np.asarray(stats['latent_mean'], np.float32), np.asarray(stats['latent_std'], np.float32)
  else:
    from daetalker_jax.data import dataset  # pylint: disable=g-import-not-at-top
    root = data_dir or config.data.get('data_dir', '')
    try:
      s = dataset.load_latent_stats(root, config.data.latents)
    except (ValueError, OSError) as e:
      raise GenerateError(f'--s2l: the checkpoint stores no latent mean/std and {e}') from None
    mean, std = s['mean'], s['std']
  if mean.shape != (dim,) or std.shape != (dim,):
    raise GenerateError(f'--s2l: latent statistics have shape {mean.shape}/{std.shape}, the model outputs {dim}')
  return mean, std


# --------------------------------------------------------------------------------------------------------
# Dataset look-ups (reference pose, inversion frame, paste-back boxes).
# --------------------------------------------------------------------------------------------------------
def _clip_examples(data_dir: str):
  """Every clip of every split as numpy, images left as JPEG bytes (only the used ones get decoded)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from daetalker_jax.data import dataset  # pylint: disable=g-import-not-at-top
  try:
    splits = [s for s in dataset.get_builder(data_dir).info.splits if dataset.num_clips(data_dir, s)]
  except dataset.DatasetError as e:
    raise GenerateError(str(e)) from None
  for split in splits:
    yield from tfds.as_numpy(dataset.load_clips(data_dir, split, decode_images=False))


def find_clip(data_dir: str, clip_id: str, flag: str) -> dict[str, Any]:
  for ex in _clip_examples(data_dir):
    if ex['clip_id'].decode() == clip_id:
      return ex
  raise GenerateError(f'{flag}: no clip {clip_id!r} in {data_dir}')


def reference_frame(data_dir: str, clip_id: str, frame: int) -> np.ndarray:
  """Frame `frame` of a dataset clip as float32 (S, S, 3) in [-1, 1]."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  ex = find_clip(data_dir, clip_id, '--noise')
  images = ex['frames']['image']
  if not 0 <= frame < len(images):
    raise GenerateError(f'--noise: clip {clip_id!r} has {len(images)} frames; frame {frame} does not exist')
  img = tf.io.decode_jpeg(images[frame], channels=3).numpy()
  return img.astype(np.float32) / 127.5 - 1.0


def loop_to(track: np.ndarray, n: int) -> np.ndarray:
  """Repeats (loops) or trims a (M, ...) track to exactly n rows."""
  reps = -(-n // len(track))
  return np.concatenate([track] * reps, axis=0)[:n]


def pose_track(kind: str, arg: str | None, n: int, data_dir: str) -> np.ndarray | None:
  """(n, 3) yaw/pitch/roll in degrees, or None for the model's own prediction."""
  if kind == 'predicted':
    return None
  if kind == 'still':
    return np.zeros((n, 3), np.float32)
  if kind == 'reference':
    track = np.asarray(find_clip(data_dir, arg, '--pose')['frames']['pose'], np.float32)
  else:
    try:
      track = np.load(arg, allow_pickle=False)
    except (OSError, ValueError) as e:
      raise GenerateError(f'--pose={arg}: not a readable .npy file ({e})') from None
    track = np.asarray(track, np.float32)
    if track.ndim != 2 or track.shape[1] != 3 or not len(track):
      raise GenerateError(f'--pose={arg}: expected an (N, 3) array of yaw/pitch/roll degrees, '
                          f'got shape {track.shape}')
    if not np.all(np.isfinite(track)):
      raise GenerateError(f'--pose={arg}: contains NaN/Inf')
  if len(track) != n:
    logging.info('Pose track of %d frames looped/trimmed to %d frames.', len(track), n)
  return loop_to(track, n)


def paste_boxes(data_dir: str, source: str) -> np.ndarray:
  """(M, 4) crop box of every frame of `source` (frame index → box), filled in where no clip covers it.

  Frames not in any clip (no face found, or cut) take the box of the nearest covered frame.
  """
  want = os.path.realpath(source)
  found: dict[int, np.ndarray] = {}
  for ex in _clip_examples(data_dir):
    src = ex['source'].decode()
    if os.path.realpath(src) != want and os.path.basename(src) != os.path.basename(want):
      continue
    start = int(ex['start_frame'])
    for i, box in enumerate(np.asarray(ex['frames']['box'], np.float32)):
      found[start + i] = box
  if not found:
    raise GenerateError(f'--paste-back={source}: no clip of this source video in {data_dir}')
  idx = np.array(sorted(found))
  boxes = np.stack([found[i] for i in idx])
  full = np.arange(idx[-1] + 1)
  nearest = np.clip(np.searchsorted(idx, full), 0, len(idx) - 1)
  left = np.clip(nearest - 1, 0, len(idx) - 1)
  use_left = np.abs(idx[left] - full) < np.abs(idx[nearest] - full)
  return boxes[np.where(use_left, left, nearest)]


@functools.lru_cache(maxsize=4)
def feather_mask(size: int, feather: float = 0.12) -> np.ndarray:
  """(S, S) float32 alpha: 1 inside, falling linearly to exactly 0 on the outermost pixels (`feather`·S)."""
  ramp = max(1.0, feather * size)
  d = np.minimum(np.arange(size), size - 1 - np.arange(size)).astype(np.float32)  # pixels to the edge row
  r = np.clip(d / ramp, 0.0, 1.0).astype(np.float32)
  return np.minimum(r[:, None], r[None, :])


def paste_face(frame: np.ndarray, face: np.ndarray, box: np.ndarray) -> np.ndarray:
  """Pastes `face` (S, S, 3) uint8 into `frame` (H, W, 3) uint8 at `box` (x0, y0, x1, y1) with a feather."""
  import cv2  # pylint: disable=g-import-not-at-top
  h, w = frame.shape[:2]
  s = face.shape[0]
  x0, y0, x1, y1 = [float(v) for v in box]
  # Face pixel centre (i + 0.5) maps to x0 + (i + 0.5)·sx; cv2's affine maps pixel centres (integers).
  sx, sy = (x1 - x0) / s, (y1 - y0) / s
  m = np.array([[sx, 0, x0 + 0.5 * sx - 0.5], [0, sy, y0 + 0.5 * sy - 0.5]], np.float32)
  interp = cv2.INTER_LINEAR if sx >= 1 else cv2.INTER_AREA
  warped = cv2.warpAffine(face, m, (w, h), flags=interp, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
  alpha = cv2.warpAffine(feather_mask(s), m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                         borderValue=0)[..., None]
  out = frame.astype(np.float32) * (1 - alpha) + warped.astype(np.float32) * alpha
  return np.clip(np.round(out), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------------------
# speech2latent over long audio.
# --------------------------------------------------------------------------------------------------------
def _s2l_fn(graphdef, predicted: bool):
  """Jitted window → (latent, pose_pred); `predicted` feeds back the model's own pose times `gain`.

  (Not cached on the graphdef: the s2l graph holds lists, which are unhashable.)
  """

  def run(state, audio, mask, pose, gain):
    model = nnx.merge(graphdef, state)
    if predicted:
      pose = model(audio, mask=mask, pose_mode='predicted')['pose_pred']         # (1, W, 3)
    out = model(audio, mask=mask, pose=pose * gain, pose_mode='supplied')
    return out['latent'], out['pose_pred']

  return jax.jit(run)


def window_starts(n: int, window: int, overlap: int) -> list[int]:
  """Start frames of the s2l windows: consecutive windows share exactly `overlap` frames."""
  starts = [0]
  while starts[-1] + window < n:
    starts.append(starts[-1] + window - overlap)
  return starts


def predict_latents(model: nnx.Module, audio: np.ndarray, *, pose: np.ndarray | None, pose_gain: float = 1.0,
                    chunk_frames: int = 750, overlap_frames: int = 50) -> tuple[np.ndarray, np.ndarray]:
  """Latents (N, D) (as the model outputs them, i.e. normalised) and predicted pose (N, 3) for N*640 samples.

  `pose` (N, 3) in the model's normalised units, or None to feed back its own prediction. Audio longer
  than `chunk_frames` runs in windows overlapping by `overlap_frames`, blended with linear ramps. Every
  window is padded (with a mask) to one length, so one compiled program serves them all; a clip shorter
  than a window is padded only to a whole second.
  """
  n = len(audio) // SAMPLES_PER_FRAME
  if n * SAMPLES_PER_FRAME != len(audio) or n == 0:
    raise ValueError(f'predict_latents: audio of {len(audio)} samples is not a positive multiple of 640')
  window = chunk_frames if n > chunk_frames else -(-n // FPS) * FPS
  graphdef, state = nnx.split(model)
  fn = _s2l_fn(graphdef, pose is None)
  pose_in = np.zeros((n, 3), np.float32) if pose is None else np.asarray(pose, np.float32)
  acc = weights = pose_acc = None
  starts = window_starts(n, window, overlap_frames)
  for k, s in enumerate(starts):
    e = min(s + window, n)
    a = np.zeros((1, window * SAMPLES_PER_FRAME), np.float32)
    a[0, :(e - s) * SAMPLES_PER_FRAME] = audio[s * SAMPLES_PER_FRAME:e * SAMPLES_PER_FRAME]
    mask = np.zeros((1, window), bool)
    mask[0, :e - s] = True
    p = np.zeros((1, window, 3), np.float32)
    p[0, :e - s] = pose_in[s:e]
    latent, pose_pred = fn(state, a, mask, p, np.float32(pose_gain))
    latent, pose_pred = np.asarray(latent)[0, :e - s], np.asarray(pose_pred)[0, :e - s]
    if acc is None:
      acc = np.zeros((n, latent.shape[-1]), np.float32)
      weights = np.zeros((n, 1), np.float32)
      pose_acc = np.zeros((n, 3), np.float32)
    w = np.ones(e - s, np.float32)
    ramp = (np.arange(overlap_frames, dtype=np.float32) + 0.5) / max(overlap_frames, 1)
    if k > 0 and overlap_frames:
      w[:overlap_frames] = ramp[:e - s]                                   # fade in over the shared frames
    if k + 1 < len(starts) and overlap_frames:
      w[-overlap_frames:] = np.minimum(w[-overlap_frames:], ramp[::-1])   # fade out
    acc[s:e] += w[:, None] * latent
    pose_acc[s:e] += w[:, None] * pose_pred
    weights[s:e] += w[:, None]
  return acc / weights, pose_acc / weights


def smooth_latents(latents: np.ndarray, sigma: float) -> np.ndarray:
  """Gaussian filter over time (axis 0) with `sigma` frames; edges use the nearest frame."""
  if sigma <= 0:
    return latents
  import scipy.ndimage  # pylint: disable=g-import-not-at-top
  return scipy.ndimage.gaussian_filter1d(latents, sigma, axis=0, mode='nearest').astype(np.float32)


# --------------------------------------------------------------------------------------------------------
# DDIM decoding.
# --------------------------------------------------------------------------------------------------------
def _round_up(x: int, m: int) -> int:
  return -(-x // m) * m


class FrameDecoder:
  """Decodes latents to uint8 frames by DDIM from one shared x_T, in fixed-size sharded batches.

  One jitted program per (batch, steps, resolution): the scan over the steps runs on the devices, the
  batch is split over the mesh's ('data', 'fsdp') axes, the weights and x_T are replicated.
  """

  def __init__(self, model: nnx.Module, config: ml_collections.ConfigDict, *, steps: int, batch: int,
               bf16: bool = False, mesh: jax.sharding.Mesh | None = None):
    if bf16:
      from daetalker_jax.tasks import dae  # pylint: disable=g-import-not-at-top
      cfg = ml_collections.ConfigDict(config.to_dict())
      cfg.dtype = 'bfloat16'
      fresh = dae.create_model(cfg, nnx.Rngs(0))
      nnx.update(fresh, nnx.state(model, nnx.Param))
      fresh.eval()
      model = fresh
    self.mesh = mesh or sharding.create_mesh([('data', -1), ('fsdp', 1)])
    self.batch = _round_up(batch, sharding.batch_size_divisor(self.mesh))
    self.steps = steps
    self.image_size = int(config.model.image_size)
    self.latent_dim = int(config.model.enc_out_channels)
    self.schedule = diffusion.schedule_from_config(config.diffusion)
    try:
      table = diffusion.table_for(self.schedule, steps)
    except ValueError as e:
      raise GenerateError(f'--steps={steps}: {e}') from None
    rep = sharding.replicated(self.mesh)
    self._batch_sharding = sharding.batch_sharding(self.mesh)
    graphdef, state = nnx.split(model)
    self._state = jax.device_put(state, rep)
    schedule = self.schedule

    def decode(state, x_T, cond):
      m = nnx.merge(graphdef, state)
      x = jnp.broadcast_to(x_T, (cond.shape[0], *x_T.shape[1:]))           # one x_T for every frame
      x = jax.lax.with_sharding_constraint(x, self._batch_sharding)
      x0 = diffusion.ddim_sample(diffusion.model_eps_fn(m, schedule), schedule, x, cond, steps=steps, table=table)
      return jnp.round((jnp.clip(x0, -1, 1) + 1) * 127.5).astype(jnp.uint8)  # (B,H,W,3)

    def invert(state, x0):
      m = nnx.merge(graphdef, state)
      return diffusion.ddim_invert(diffusion.model_eps_fn(m, schedule), schedule, x0, m.encode(x0), steps=steps,
                                   table=table)

    self._decode = jax.jit(decode, in_shardings=(rep, rep, self._batch_sharding),
                           out_shardings=self._batch_sharding)
    self._invert = jax.jit(invert, in_shardings=(rep, rep), out_shardings=rep)
    self._rep = rep

  def seed_noise(self, seed: int) -> np.ndarray:
    """x_T (1, S, S, 3) ~ N(0, I) from a seed."""
    return np.asarray(jax.random.normal(jax.random.key(seed), (1, self.image_size, self.image_size, 3),
                                        jnp.float32))

  def inverted_noise(self, image: np.ndarray) -> np.ndarray:
    """x_T (1, S, S, 3) of a real frame (S, S, 3) in [-1, 1] by DDIM inversion with its own z_sem."""
    if image.shape != (self.image_size, self.image_size, 3):
      raise GenerateError(f'--noise invert: reference frame is {image.shape[:2]}, the DAE works at '
                          f'{self.image_size} px')
    return np.asarray(self._invert(self._state, jax.device_put(image[None].astype(np.float32), self._rep)))

  def num_compiles(self) -> int:
    """Programs compiled for decoding so far (1 for any number of batches of one run)."""
    return self._decode._cache_size()  # pylint: disable=protected-access

  def iter_frames(self, latents: np.ndarray, x_T: np.ndarray) -> Iterator[np.ndarray]:
    """Yields uint8 (b, S, S, 3) batches of frames for latents (N, D), one batch ahead on the devices."""
    n, d = latents.shape
    if d != self.latent_dim:
      raise GenerateError(f'latents have {d} dims, the DAE expects {self.latent_dim}')
    x_T = jax.device_put(np.asarray(x_T, np.float32), self._rep)

    def launch(start):
      cond = np.zeros((self.batch, d), np.float32)                         # last batch: padded rows
      cond[:min(self.batch, n - start)] = latents[start:start + self.batch]
      return start, self._decode(self._state, x_T, jax.device_put(cond, self._batch_sharding))

    pending = launch(0)
    for nxt in range(self.batch, n + self.batch, self.batch):
      following = launch(nxt) if nxt < n else None                         # async: computes while we copy
      start, frames = pending
      yield np.asarray(frames)[:min(self.batch, n - start)]
      pending = following


# --------------------------------------------------------------------------------------------------------
# The whole pipeline.
# --------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Prepared:
  """Everything decided before the first frame is decoded."""
  audio: np.ndarray          # (N*640,) float32, the frames' audio
  input_audio: np.ndarray    # (T,) float32 16 kHz, what gets muxed (the input's own length)
  latents: np.ndarray        # (N, D) de-normalised (and smoothed) z_sem
  pose_pred: np.ndarray      # (N, 3) degrees, the s2l pose prediction
  decoder: FrameDecoder
  x_T: np.ndarray            # (1, S, S, 3)

  @property
  def num_frames(self) -> int:
    return len(self.latents)


def prepare(audio_path: str, dae_dir: str, s2l_dir: str, opts: Options) -> Prepared:
  """Validates every input, loads both models and runs speech2latent; no frame decoded, no file written."""
  validate_options(opts)
  speech = load_speech(audio_path)
  dae_model, dae_config, _ = load_checkpoint(dae_dir, '--dae', DAE_TASKS)
  s2l_model, s2l_config, s2l_stats = load_checkpoint(s2l_dir, '--s2l', S2L_TASKS)
  dim = int(dae_config.model.enc_out_channels)
  if int(s2l_config.model.latent_dim) != dim:
    raise GenerateError(f'--s2l={s2l_dir}: predicts {s2l_config.model.latent_dim}-d latents, the DAE in '
                        f'{dae_dir} uses {dim}-d')
  mean, std = latent_stats(s2l_config, s2l_stats, opts.data_dir, dim)
  deg_per_unit = float(s2l_stats.get('pose_scale', s2l_config.get('loss', {}).get('pose_scale', 1.0)))

  n = num_frames_for(len(speech))
  audio = audio_lib.fit_to_frames(speech, n)                                 # (N*640,)
  pose_kind, pose_arg = parse_pose(opts.pose)
  pose = pose_track(pose_kind, pose_arg, n, opts.data_dir)
  latents, pose_pred = predict_latents(
      s2l_model, audio, pose=None if pose is None else pose / deg_per_unit, pose_gain=opts.pose_scale,
      chunk_frames=opts.chunk_frames, overlap_frames=opts.overlap_frames)
  latents = smooth_latents(latents * std + mean, opts.smooth)

  decoder = FrameDecoder(dae_model, dae_config, steps=opts.steps, batch=opts.batch, bf16=opts.bf16)
  noise_kind, noise_arg = parse_noise(opts.noise)
  if noise_kind == 'seed':
    x_T = decoder.seed_noise(noise_arg)
  else:
    x_T = decoder.inverted_noise(reference_frame(opts.data_dir, *noise_arg))
  return Prepared(audio=audio, input_audio=speech, latents=latents, pose_pred=pose_pred * deg_per_unit,
                  decoder=decoder, x_T=x_T)


def iter_output_frames(prep: Prepared, opts: Options) -> Iterator[np.ndarray]:
  """Batches of final uint8 frames: the generated faces, or the source frames with the face pasted in."""
  faces = prep.decoder.iter_frames(prep.latents, prep.x_T)
  if not opts.paste_back:
    yield from faces
    return
  boxes = paste_boxes(opts.data_dir, opts.paste_back)
  source = video_io.iter_frames(opts.paste_back)
  last = None
  k = 0
  try:
    for batch in faces:
      out = []
      for face in batch:
        frame = next(source, None)
        if frame is None:
          if last is None:
            raise GenerateError(f'--paste-back={opts.paste_back}: no frames could be decoded')
          frame = last                                    # source shorter than the audio: hold its last frame
        last = frame
        out.append(paste_face(frame, face, boxes[min(k, len(boxes) - 1)]))
        k += 1
      yield np.stack(out)
  finally:
    source.close()


def output_size(opts: Options, prep: Prepared) -> tuple[int, int]:
  """(width, height) of the output video; the source's size (made even) when pasting back."""
  if opts.paste_back:
    try:
      info = video_io.probe(opts.paste_back)
    except video_io.VideoError as e:
      raise GenerateError(f'--paste-back: {e}') from None
    if info.width % 2 or info.height % 2:
      raise GenerateError(f'--paste-back={opts.paste_back}: frame size {info.width}x{info.height} is odd; '
                          'h264/yuv420p needs even sizes')
    return info.width, info.height
  s = prep.decoder.image_size
  return s, s


def generate(audio_path: str, dae_dir: str, s2l_dir: str, out_path: str, opts: Options = Options(), *,
             frames_out: Callable[[np.ndarray], None] | None = None, progress: bool = True) -> dict[str, Any]:
  """Writes the talking-face mp4 for `audio_path`; returns a summary dict.

  `frames_out`, if given, receives every batch of final uint8 frames (b, H, W, 3) before encoding.
  Nothing is written at `out_path` unless the whole video was encoded.
  """
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  t0 = time.perf_counter()
  if not str(out_path).endswith('.mp4'):
    raise GenerateError(f'--out={out_path}: the output must be an .mp4 file')
  prep = prepare(audio_path, dae_dir, s2l_dir, opts)
  size = output_size(opts, prep)
  n = prep.num_frames
  written = 0
  with video_io.VideoWriter(out_path, fps=FPS, size=size, audio=prep.input_audio) as writer, \
       tqdm(total=n, unit='frame', desc='DDIM', disable=not progress, dynamic_ncols=True) as bar:
    for batch in iter_output_frames(prep, opts):
      if frames_out is not None:
        frames_out(batch)
      for frame in batch:
        writer.write(frame)
      written += len(batch)
      bar.update(len(batch))
  wall = time.perf_counter() - t0
  summary = dict(out=str(out_path), frames=written, seconds=written / FPS, wall_s=wall,
                 fps=written / wall if wall > 0 else float('inf'), compiles=prep.decoder.num_compiles())
  return summary


def generate_frames(audio_path: str, dae_dir: str, s2l_dir: str, opts: Options = Options()) -> np.ndarray:
  """All frames (N, H, W, 3) uint8 of a SHORT input, without encoding (tests, notebooks)."""
  prep = prepare(audio_path, dae_dir, s2l_dir, opts)
  return np.concatenate(list(iter_output_frames(prep, opts)))


# --------------------------------------------------------------------------------------------------------
# Command line.
# --------------------------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog='python -m daetalker_jax.generate', description='Speech audio → talking-face mp4 (DAE-Talker).')
  p.add_argument('--audio', required=True, help='speech file (any ffmpeg-readable audio or video)')
  p.add_argument('--dae', required=True, help='DAE training workdir (task dae)')
  p.add_argument('--s2l', required=True, help='speech2latent training workdir (task s2l)')
  p.add_argument('--out', required=True, help='output .mp4')
  p.add_argument('--steps', type=int, default=20, help='DDIM steps (default 20)')
  p.add_argument('--noise', default='seed:0', help='shared x_T: seed:N or invert:CLIP_ID:FRAME (needs --data)')
  p.add_argument('--pose', default='predicted', help=POSE_CHOICES + ' (degrees)')
  p.add_argument('--pose-scale', type=float, default=1.0, help='multiplies the head pose (default 1)')
  p.add_argument('--smooth', type=float, default=0.0, help='Gaussian sigma over time for the latents, frames')
  p.add_argument('--batch', type=int, default=16, help='frames per DDIM batch (default 16)')
  p.add_argument('--bf16', action='store_true', help='DAE computes in bfloat16')
  p.add_argument('--data', default='', help='prepared dataset (for invert:, reference:, --paste-back)')
  p.add_argument('--paste-back', default='', help='source video to paste the face back into (needs --data)')
  p.add_argument('--chunk-seconds', type=float, default=30.0, help='speech2latent window (default 30 s)')
  p.add_argument('--overlap-seconds', type=float, default=2.0, help='crossfaded window overlap (default 2 s)')
  p.add_argument('--quiet', action='store_true', help='no progress bar')
  return p


def main(argv: list[str] | None = None) -> int:
  args = _parser().parse_args(argv)
  opts = Options(steps=args.steps, noise=args.noise, pose=args.pose, pose_scale=args.pose_scale,
                 smooth=args.smooth, batch=args.batch, bf16=args.bf16, data_dir=args.data,
                 paste_back=args.paste_back, chunk_frames=int(round(args.chunk_seconds * FPS)),
                 overlap_frames=int(round(args.overlap_seconds * FPS)))
  try:
    s = generate(args.audio, args.dae, args.s2l, args.out, opts, progress=not args.quiet)
  except (GenerateError, video_io.VideoError, OSError) as e:
    print(f'error: {" ".join(str(e).split())}', file=sys.stderr)
    return 1
  print(f'{s["out"]}: {s["frames"]} frames, {s["seconds"]:.2f} s of video, wall {s["wall_s"]:.1f} s, '
        f'{s["fps"]:.2f} frames/s')
  return 0


if __name__ == '__main__':
  sys.exit(main())
