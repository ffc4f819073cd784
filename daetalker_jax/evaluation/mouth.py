"""Lip-sync metrics from the mouth: synthface mouth series (strict and soft), landmark distance, closed
mouth in silence, and the mouth strip picture (docs/EVALUATION.md, strict mouth metrics; conventions: `evaluation/__init__`).

Lip sync on synthface has two readings of the mouth (`daetalker_jax.mouth_measure`). The headline is strict
(`strict_mouth_metrics`): only pixels within 30 RGB units of the mouth-interior / teeth colours count as
open mouth, so a smeared, half-rendered mouth reads closed. The soft colour-window reading
(`mouth_open_series`, `lip_sync_correlation`) gives a smear partial credit; it is a secondary number only.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from daetalker_jax import metrics as metrics_lib
from daetalker_jax import mouth_measure
from daetalker_jax.data import contract
from daetalker_jax.evaluation import audio as audio_lib
from daetalker_jax.evaluation.image import uint8_frames
from daetalker_jax.evaluation.series import best_lag, pearson

MOUTH = slice(48, 68)                       # 68-point (iBUG/dlib) mouth: outer lip 48-59, inner 60-67
OUTER_EYE_CORNERS = (36, 45)                # left eye outer corner, right eye outer corner

STRICT_OPEN_AREA = 0.01      # a real frame is open when its strict mouth covers >= 1% of the crop
STRICT_RECALL_RATIO = 0.4    # an open frame is recalled when the generated area is >= 40% of the real one
STRICT_TEETH_AREA = 1e-3     # teeth show when strict teeth cover more than this fraction of the crop
STRICT_CLOSED_AREA = 5e-4    # a generated mouth is closed when its strict area is at most this
STRICT_MAX_LAG = 2           # strict_best_lag is searched in [-2, 2] frames


# ----------------------------------------------------------------------------------------------------
# Soft mouth series and landmarks
# ----------------------------------------------------------------------------------------------------

def mouth_open_series(frames: Any, measure_fn: Callable[[np.ndarray], dict] | None = None) -> np.ndarray:
  """(N,) mouth opening per frame from the reserved mouth colours (`mouth_measure.measure_frame`).

  The value is the fraction of the image covered by mouth interior + teeth (0 = closed). Works on any
  frame, real or generated, because it only reads colours. Float [-1, 1] frames are converted to uint8.
  """
  x = uint8_frames(frames, 'mouth_open_series')
  measure_fn = measure_fn or mouth_measure.measure_frame
  return np.array([measure_fn(f)['mouth_open'] for f in x], np.float64)


def lip_sync_correlation(gen_frames: Any, real_frames: Any,
                         measure_fn: Callable[[np.ndarray], dict] | None = None) -> float:
  """Pearson r between the mouth-opening series of generated and real frames (synthface lip sync).

  1 = the generated mouth opens and closes exactly when (and proportionally to how much) the real one
  does. Both clips must have the same number of frames. nan with a warning if either mouth never moves.
  """
  g = mouth_open_series(gen_frames, measure_fn)
  r = mouth_open_series(real_frames, measure_fn)
  if g.shape != r.shape:
    raise ValueError(f'eval_metrics.lip_sync_correlation: {g.size} generated vs {r.size} real frames')
  return pearson(g, r)


def mouth_landmark_distance(gen_landmarks: Any, real_landmarks: Any, valid: Any = None) -> float:
  """Mean Euclidean distance of the 20 mouth landmarks (68-point indices 48-67), per-frame normalised.

  For frame t: mean over the mouth points of ||gen[t, i] - real[t, i]||, divided by the real frame's
  inter-ocular distance ||real[t, 36] - real[t, 45]|| (outer eye corners, the 300-W convention), so the
  number is independent of the crop size; then the mean over frames. Landmarks are (N, 68, 2) in any
  pixel units (both in the same frame). `valid`: optional (N,) bool, frames to use (e.g. both landmark
  sets detected); nan with a warning when no frame is usable.
  """
  g = np.asarray(gen_landmarks, np.float64)
  r = np.asarray(real_landmarks, np.float64)
  if g.shape != r.shape or g.ndim != 3 or g.shape[1:] != (68, 2):
    raise ValueError(f'eval_metrics.mouth_landmark_distance: expected two (N, 68, 2) arrays, '
                     f'got {g.shape} and {r.shape}')
  iod = np.linalg.norm(r[:, OUTER_EYE_CORNERS[0]] - r[:, OUTER_EYE_CORNERS[1]], axis=-1)     # (N,)
  keep = iod > 0
  if valid is not None:
    keep &= np.asarray(valid, bool).reshape(-1)
  if not keep.any():
    warnings.warn('eval_metrics.mouth_landmark_distance: no frame with valid landmarks; nan',
                  RuntimeWarning, stacklevel=2)
    return float('nan')
  d = np.linalg.norm(g[keep, MOUTH] - r[keep, MOUTH], axis=-1).mean(axis=1)               # (n,)
  return float(np.mean(d / iod[keep]))


def mouth_closed_in_silence_rate(mouth_open_series: Any, audio16k: Any, *, threshold_db: float = -40.0,
                                 closed_threshold: float = 5e-4, min_silence_frames: int = 3,
                                 edge_frames: int = 1) -> float:
  """Fraction of the silent frames (see `audio.silence_mask`) whose mouth is closed.

  closed: mouth_open_series[t] <= closed_threshold. The default suits `mouth_open_series` (a fraction
  of the image area): a closed synthface mouth reads 0..1e-4 after JPEG coding, a nearly closed one
  (synthface mouth_open 0.1, as for f/v) ~8e-4 at 64 px and ~3e-3 at 256 px, an open vowel > 8e-3.
  The audio must cover the frames (num_frames*640 samples, up to one frame short). nan with a warning
  when the clip has no silent frame.
  """
  m = np.asarray(mouth_open_series, np.float64).reshape(-1)
  n_audio = int(math.ceil(np.asarray(audio16k).shape[0] / contract.SAMPLES_PER_FRAME))
  if n_audio < m.size - 1:
    raise ValueError(f'eval_metrics.mouth_closed_in_silence_rate: audio covers {n_audio} frames, '
                     f'the series has {m.size}')
  silent = audio_lib.silence_mask(audio16k, m.size, threshold_db=threshold_db,
                                  min_silence_frames=min_silence_frames, edge_frames=edge_frames)
  if not silent.any():
    warnings.warn('eval_metrics.mouth_closed_in_silence_rate: no silent frames; rate is nan',
                  RuntimeWarning, stacklevel=2)
    return float('nan')
  return float(np.mean(m[silent] <= closed_threshold))


# ----------------------------------------------------------------------------------------------------
# Strict mouth metrics (synthface, docs/EVALUATION.md, strict mouth metrics)
# ----------------------------------------------------------------------------------------------------

def strict_mouth_series(frames: Any) -> dict[str, np.ndarray]:
  """Per-frame strict mouth areas (`mouth_measure.strict_mouth`) of (N, H, W, 3) frames.

  Returns (N,) float64 arrays, fractions of the frame: 'area' (strict mouth interior + teeth, the open
  mouth), 'interior' and 'teeth'. Float [-1, 1] frames are converted to uint8 first.
  """
  x = uint8_frames(frames, 'strict_mouth_series')
  ms = [mouth_measure.strict_mouth(f) for f in x]
  return {k: np.array([m[k] for m in ms], np.float64) for k in ('area', 'interior', 'teeth')}


def _nan_with_warning(message: str) -> float:
  warnings.warn(f'eval_metrics.strict_mouth_scores: {message}', RuntimeWarning, stacklevel=3)
  return float('nan')
def strict_mouth_scores(gen: dict[str, np.ndarray], real: dict[str, np.ndarray],
                        audio16k: Any = None) -> dict[str, float | int]:
  """`strict_mouth_metrics` from the `strict_mouth_series` of generated and real frames (no soft_r).

  Use it when the series are already measured; the keys and their meaning are those of
  `strict_mouth_metrics`.
  """
  g, r = np.asarray(gen['area'], np.float64), np.asarray(real['area'], np.float64)
  if g.shape != r.shape:
    raise ValueError(f'eval_metrics.strict_mouth_scores: {g.size} generated vs {r.size} real frames')
  out: dict[str, float | int] = {}
  moves = r.size > 1 and np.ptp(r) > 0
  if moves and np.ptp(g) == 0:  # the generated mouth never changes (e.g. never opens): no sync at all
    out.update(strict_r=0.0, strict_r_best=0.0, strict_best_lag=0)
  else:
    out['strict_r'] = pearson(g, r)
    lag, r_best = best_lag(g, r, STRICT_MAX_LAG)
    out.update(strict_r_best=r_best, strict_best_lag=int(lag))
  is_open = r >= STRICT_OPEN_AREA
  out['num_open_frames'] = int(is_open.sum())
  if is_open.any():
    ratio = g[is_open] / r[is_open]
    out['open_recall'] = float(np.mean(ratio >= STRICT_RECALL_RATIO))
    out['amplitude_ratio'] = float(np.median(ratio))
  else:
    out['open_recall'] = out['amplitude_ratio'] = _nan_with_warning(
        f'the real mouth is never open (strict area >= {STRICT_OPEN_AREA}); recall and amplitude are nan')
  shows = np.asarray(real['teeth']) > STRICT_TEETH_AREA
  out['num_teeth_frames'] = int(shows.sum())
  if shows.any():
    out['teeth_recall'] = float(np.mean(np.asarray(gen['teeth'])[shows] > STRICT_TEETH_AREA))
  else:
    out['teeth_recall'] = _nan_with_warning('the real teeth never show; teeth_recall is nan')
  out['closed_in_silence'] = float('nan') if audio16k is None else mouth_closed_in_silence_rate(
      g, audio16k, closed_threshold=STRICT_CLOSED_AREA)
  return out


def strict_mouth_metrics(gen_frames: Any, real_frames: Any, audio16k: Any = None) -> dict[str, float | int]:
  """Strict lip-sync metrics of a generated synthface clip against the real one (docs/EVALUATION.md, strict mouth metrics).

  The mouth is read by `strict_mouth_series` (only pixels within 30 RGB units of the mouth colours), so
  a blurred or half-rendered mouth scores as closed. Both clips: (N, H, W, 3) uint8 or float [-1, 1].

  Returns:
    strict_r: Pearson r of the generated vs real strict area at lag 0. 0 (not nan) when the generated
      area never changes while the real one does, so clips whose mouth never opens are not dropped from
      means; nan when the real mouth never changes.
    strict_r_best, strict_best_lag: the best r over lags in [-2, 2] and that lag (`best_lag`'s sign:
      +k = the generated mouth trails the real one by k frames, i.e. gen[t + k] matches real[t];
      negative = it runs ahead).
    open_recall: of the frames where the real strict area is >= 1% of the crop (`num_open_frames`), the
      share whose generated strict area is >= 40% of the real one.
    amplitude_ratio: median over those frames of generated / real strict area (1 = as wide as real).
    teeth_recall: of the frames where the real teeth cover > 0.1% of the crop (`num_teeth_frames`), the
      share where the generated teeth do too.
    closed_in_silence: share of the silent frames (`silence_mask` of `audio16k`) whose generated strict
      area is <= 5e-4 (`mouth_closed_in_silence_rate`); nan without audio or without silent frames.
    soft_r: the lenient colour-window r (`lip_sync_correlation`), a secondary number only.
    num_open_frames, num_teeth_frames: the frame counts behind the recalls.
  Recall and amplitude are nan (with a RuntimeWarning) when no real frame is open, teeth_recall when the
  real teeth never show.
  """
  out = strict_mouth_scores(strict_mouth_series(gen_frames), strict_mouth_series(real_frames), audio16k)
  out['soft_r'] = lip_sync_correlation(gen_frames, real_frames)
  return out


def most_open_frames(real_area: Any, k: int = 8) -> np.ndarray:
  """Indices, in time order, of the `k` frames with the largest real strict area (earlier on ties)."""
  area = np.asarray(real_area, np.float64).reshape(-1)
  return np.sort(np.argsort(-area, kind='stable')[:k])


def mouth_strip(gen_frames: Any, real_frames: Any, k: int = 8, *, real_area: Any = None,
                max_size: int = 128, pad: int = 2) -> np.ndarray:
  """uint8 image: generated frames above the real ones, at the `k` frames where the real mouth is most open.

  Args:
    gen_frames: (N, S, S, 3) frames, or a sequence of such clips (one row each, top to bottom).
    real_frames: (N, S, S, 3) real frames (the bottom row); uint8 or float [-1, 1] like gen_frames.
    k: columns (fewer when the clip is shorter); `most_open_frames` by strict area, in time order.
    real_area: the real clip's `strict_mouth_series(...)['area']` if already measured.
    max_size: frames larger than this are shrunk to it (keeps the PNG small).
    pad: white pixels between and around the frames.

  Returns:
    (rows * (s + pad) + pad, columns * (s + pad) + pad, 3) uint8, s = min(S, max_size).
  """
  real = uint8_frames(real_frames, 'mouth_strip')
  gens = list(gen_frames) if isinstance(gen_frames, (list, tuple)) else [gen_frames]
  rows = [uint8_frames(g, 'mouth_strip') for g in gens] + [real]
  if any(row.shape != real.shape for row in rows):
    raise ValueError(f'eval_metrics.mouth_strip: frame shapes differ: {[row.shape for row in rows]}')
  area = strict_mouth_series(real)['area'] if real_area is None else real_area
  idx = most_open_frames(area, k)
  s = real.shape[1]
  if s > max_size:
    rows = [np.stack([cv2.resize(f, (max_size, max_size), interpolation=cv2.INTER_AREA) for f in row[idx]])
            for row in rows]
    idx, s = np.arange(len(idx)), max_size
  strip = np.full((len(rows) * (s + pad) + pad, len(idx) * (s + pad) + pad, 3), 255, np.uint8)
  for i, row in enumerate(rows):
    for j, t in enumerate(idx):
      y, x = pad + i * (s + pad), pad + j * (s + pad)
      strip[y:y + s, x:x + s] = row[t]
  return strip


def save_mouth_strip(path: str | os.PathLike, gen_frames: Any, real_frames: Any, k: int = 8,
                     **kwargs) -> np.ndarray:
  """Writes `mouth_strip(gen_frames, real_frames, k, **kwargs)` as a PNG (atomically); returns the image."""
  strip = mouth_strip(gen_frames, real_frames, k, **kwargs)
  metrics_lib.write_png(os.fspath(path), strip)
  return strip
