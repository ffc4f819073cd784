"""Evaluation metrics for generated talking-face video (DESIGN.md §7), independent of the models.

Conventions used by every function here:
- Frames are (..., H, W, 3) RGB, either uint8 0..255 or floating point in [-1, 1] (the model's range).
  Image metrics map both to [0, 1] first (uint8 / 255, float (x + 1) / 2), so PSNR has peak 1.0 — the
  same number as PSNR with peak 255 on uint8 frames — and SSIM uses a data range of 1.0.
- Audio is mono 16 kHz, float in [-1, 1] or int16; a video frame is 40 ms = 640 samples (25 fps).
- Per-frame series (mouth opening, ...) are 1-D numpy arrays with one value per video frame.
Degenerate inputs (a constant series, no silent frames) give nan with a `RuntimeWarning`, never a crash,
so one odd clip does not stop an evaluation run.

Lip sync on synthface has two readings of the mouth. The headline is strict (`strict_mouth_metrics`,
DESIGN.md §7): only pixels within 30 RGB units of the mouth-interior / teeth colours count as open mouth,
so a smeared, half-rendered mouth reads closed. The soft colour-window reading (`mouth_open_series`,
`lip_sync_correlation`) gives a smear partial credit; it is kept as a secondary number only.

SyncNet LSE-C / LSE-D reproduce `SyncNetInstance.evaluate` of joonson/syncnet_python (the procedure
Wav2Lip's `scores_LSE` scripts run); see `sync_scores`.
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx

SAMPLE_RATE = 16_000
FPS = 25
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS      # 640
MOUTH = slice(48, 68)                       # 68-point (iBUG/dlib) mouth: outer lip 48-59, inner 60-67
OUTER_EYE_CORNERS = (36, 45)                # left eye outer corner, right eye outer corner


# ----------------------------------------------------------------------------------------------------
# Image metrics
# ----------------------------------------------------------------------------------------------------

def to_unit_range(frames: Any) -> np.ndarray:
  """uint8 0..255 → float32 /255; float [-1, 1] → (x + 1) / 2. Anything else is an error."""
  x = np.asarray(frames)
  if x.dtype == np.uint8:
    return x.astype(np.float32) / 255.0
  if not np.issubdtype(x.dtype, np.floating):
    raise ValueError(f'eval_metrics: frames must be uint8 or float in [-1, 1], got dtype {x.dtype}')
  x = x.astype(np.float32)
  lo, hi = float(np.min(x)), float(np.max(x))
  if lo < -1.01 or hi > 1.01:
    raise ValueError(f'eval_metrics: float frames must lie in [-1, 1], got range [{lo:.3g}, {hi:.3g}]')
  return np.clip((x + 1.0) * 0.5, 0.0, 1.0)


def _paired(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
  a, b = to_unit_range(a), to_unit_range(b)
  if a.shape != b.shape:
    raise ValueError(f'eval_metrics: frame shapes differ: {a.shape} vs {b.shape}')
  if a.ndim < 3 or a.shape[-1] != 3:
    raise ValueError(f'eval_metrics: expected (..., H, W, 3) frames, got {a.shape}')
  return a, b


def psnr(a: Any, b: Any) -> float:
  """Mean over frames of the per-frame PSNR in dB, peak 1.0 on the [0, 1] scale (= peak 255 for uint8).

  PSNR_frame = -10 log10(mean over H, W, C of (a - b)^2). Identical frames give inf (and so does the mean
  if any frame is identical). `a`, `b`: (H, W, 3) or (N, H, W, 3), uint8 or float [-1, 1].
  """
  import dm_pix  # Lazy: keeps `import eval_metrics` light for callers that only need series metrics.

  a, b = _paired(a, b)
  with np.errstate(divide='ignore'):
    values = np.asarray(dm_pix.psnr(a, b))
  return float(np.mean(values))


def ssim(a: Any, b: Any) -> float:
  """Mean over frames of SSIM (Wang et al. 2004; 11x11 Gaussian window, sigma 1.5, k1 .01, k2 .03).

  Computed by `dm_pix.ssim` on the [0, 1] scale with max_val 1.0, per channel then averaged over pixels
  and channels of a frame. Identical frames give 1.0 (up to float rounding). Frames must be at least
  11 pixels on each side.
  """
  import dm_pix

  a, b = _paired(a, b)
  if min(a.shape[-3:-1]) < 11:
    raise ValueError(f'eval_metrics.ssim: frames must be at least 11x11 pixels, got {a.shape[-3:-1]}')
  return float(np.mean(np.asarray(dm_pix.ssim(a, b, max_val=1.0))))


def temporal_jitter(frames: Any) -> float:
  """Mean absolute frame-to-frame change, mean over t, H, W, C of |x[t+1] - x[t]| on the [0, 1] scale.

  0 for a static video. Measures flicker: compare a generated clip against the real clip with
  `jitter_ratio` (real talking video has some motion, so the ratio, not the value, is the metric).
  """
  x = to_unit_range(frames)
  if x.ndim != 4 or x.shape[0] < 2:
    raise ValueError(f'eval_metrics.temporal_jitter: expected (N>=2, H, W, 3) frames, got {x.shape}')
  return float(np.mean(np.abs(np.diff(x, axis=0))))


def jitter_ratio(gen_frames: Any, real_frames: Any) -> float:
  """temporal_jitter(gen) / temporal_jitter(real): 1 = as much frame-to-frame change as the real video.

  > 1 means flicker beyond the real motion; nan (with a warning) if the real video is static.
  """
  g, r = temporal_jitter(gen_frames), temporal_jitter(real_frames)
  if r == 0.0:
    warnings.warn('eval_metrics.jitter_ratio: the real video is static (jitter 0); ratio is nan',
                  RuntimeWarning, stacklevel=2)
    return float('nan')
  return g / r


# ----------------------------------------------------------------------------------------------------
# Series metrics: correlation, lip motion, silence
# ----------------------------------------------------------------------------------------------------

def pearson(a: Any, b: Any) -> float:
  """Pearson correlation r of two equal-length 1-D series (float64).

  nan with a RuntimeWarning when either series is constant (r is undefined) or shorter than 2.
  """
  a = np.asarray(a, np.float64).reshape(-1)
  b = np.asarray(b, np.float64).reshape(-1)
  if a.shape != b.shape:
    raise ValueError(f'eval_metrics.pearson: series lengths differ: {a.size} vs {b.size}')
  if a.size < 2:
    warnings.warn('eval_metrics.pearson: fewer than 2 samples; r is nan', RuntimeWarning, stacklevel=2)
    return float('nan')
  da, db = a - a.mean(), b - b.mean()
  na, nb = math.sqrt(float(np.dot(da, da))), math.sqrt(float(np.dot(db, db)))
  if na == 0.0 or nb == 0.0:
    warnings.warn('eval_metrics.pearson: a series is constant; r is nan', RuntimeWarning, stacklevel=2)
    return float('nan')
  return float(np.clip(np.dot(da, db) / (na * nb), -1.0, 1.0))


def lagged_pearson(a: Any, b: Any, lag: int) -> float:
  """Pearson r of a[t + lag] against b[t] over the overlap: lag > 0 tests whether `a` lags `b`."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.shape != b.shape:
    raise ValueError(f'eval_metrics.lagged_pearson: series lengths differ: {a.size} vs {b.size}')
  n = a.size
  if abs(lag) >= n:
    return float('nan')
  if lag >= 0:
    return pearson(a[lag:], b[:n - lag])
  return pearson(a[:n + lag], b[-lag:])


def best_lag(a: Any, b: Any, max_lag: int = 5) -> tuple[int, float]:
  """The lag in [-max_lag, max_lag] maximising `lagged_pearson(a, b, lag)`, and that r.

  For lip sync: `best_lag(gen_mouth, real_mouth)` = by how many frames the generated mouth motion
  trails the real one (0 when in sync; negative when it runs ahead). nan r's are skipped; (0, nan)
  when every lag is nan.
  """
  best = (0, float('nan'))
  for lag in range(-max_lag, max_lag + 1):
    with warnings.catch_warnings():
      warnings.simplefilter('ignore', RuntimeWarning)
      r = lagged_pearson(a, b, lag)
    if not math.isnan(r) and (math.isnan(best[1]) or r > best[1] or (r == best[1] and abs(lag) < abs(best[0]))):
      best = (lag, r)
  return best


def _default_measure_frame() -> Callable[[np.ndarray], dict]:
  # Lazy: data_prep (OpenCV drawing, espeak) is not needed by the rest of this module.
  # synthface_render is the light module that data_prep.synthface re-exports measure_frame from.
  try:
    from data_prep.synthface_render import measure_frame
  except ImportError:
    from data_prep.synthface import measure_frame
  return measure_frame


def _uint8_frames(frames: Any, fn: str) -> np.ndarray:
  """(N, H, W, 3) uint8 frames; float [-1, 1] frames are converted (rounded)."""
  x = np.asarray(frames)
  if x.dtype != np.uint8:
    x = np.round(to_unit_range(x) * 255.0).astype(np.uint8)
  if x.ndim != 4 or x.shape[-1] != 3:
    raise ValueError(f'eval_metrics.{fn}: expected (N, H, W, 3) frames, got {x.shape}')
  return x


def mouth_open_series(frames: Any, measure_fn: Callable[[np.ndarray], dict] | None = None) -> np.ndarray:
  """(N,) mouth opening per frame from the reserved mouth colours (`data_prep.synthface.measure_frame`).

  The value is the fraction of the image covered by mouth interior + teeth (0 = closed). Works on any
  frame, real or generated, because it only reads colours. Float [-1, 1] frames are converted to uint8.
  """
  x = _uint8_frames(frames, 'mouth_open_series')
  measure_fn = measure_fn or _default_measure_frame()
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


def _audio_float(audio: Any) -> np.ndarray:
  a = np.asarray(audio)
  if a.ndim != 1:
    raise ValueError(f'eval_metrics: audio must be mono (T,), got shape {a.shape}')
  if a.dtype == np.int16:
    return a.astype(np.float64) / 32768.0
  if not np.issubdtype(a.dtype, np.floating):
    raise ValueError(f'eval_metrics: audio must be int16 or float in [-1, 1], got dtype {a.dtype}')
  return a.astype(np.float64)


def frame_rms_dbfs(audio16k: Any, num_frames: int | None = None) -> np.ndarray:
  """(num_frames,) RMS level of each 40 ms (640-sample) frame in dBFS: 20 log10(rms), full scale = 1.0.

  Frame t covers samples [640 t, 640 (t + 1)) — the same alignment as the dataset. A full-scale sine
  reads -3 dBFS, digital silence -inf. Samples missing at the end count as zeros.
  """
  a = _audio_float(audio16k)
  n = num_frames if num_frames is not None else a.size // SAMPLES_PER_FRAME
  a = np.pad(a[:n * SAMPLES_PER_FRAME], (0, max(0, n * SAMPLES_PER_FRAME - a.size)))
  rms = np.sqrt(np.mean(a.reshape(n, SAMPLES_PER_FRAME) ** 2, axis=1))
  with np.errstate(divide='ignore'):
    return 20.0 * np.log10(rms)


def silence_mask(audio16k: Any, num_frames: int, *, threshold_db: float = -40.0,
                 min_silence_frames: int = 3, edge_frames: int = 1) -> np.ndarray:
  """(num_frames,) bool: frames inside a pause of the speech.

  A frame is quiet when its RMS is below `threshold_db` dBFS. Only runs of at least
  `min_silence_frames` quiet frames (3 = 120 ms) count as silence, so the short closures of stop
  consonants inside words are not taken for pauses; then `edge_frames` frames are dropped at each
  end of a run, because the mouth is still closing/opening there (coarticulation).
  """
  quiet = frame_rms_dbfs(audio16k, num_frames) < threshold_db
  mask = np.zeros(num_frames, bool)
  t = 0
  while t < num_frames:
    if not quiet[t]:
      t += 1
      continue
    end = t
    while end < num_frames and quiet[end]:
      end += 1
    if end - t >= min_silence_frames:
      mask[t + edge_frames:end - edge_frames] = True
    t = end
  return mask


def mouth_closed_in_silence_rate(mouth_open_series: Any, audio16k: Any, *, threshold_db: float = -40.0,
                                 closed_threshold: float = 5e-4, min_silence_frames: int = 3,
                                 edge_frames: int = 1) -> float:
  """Fraction of the silent frames (see `silence_mask`) whose mouth is closed.

  closed: mouth_open_series[t] <= closed_threshold. The default suits `mouth_open_series` (a fraction
  of the image area): a closed synthface mouth reads 0..1e-4 after JPEG coding, a nearly closed one
  (synthface mouth_open 0.1, as for f/v) ~8e-4 at 64 px and ~3e-3 at 256 px, an open vowel > 8e-3.
  The audio must cover the frames (num_frames*640 samples, up to one frame short). nan with a warning
  when the clip has no silent frame.
  """
  m = np.asarray(mouth_open_series, np.float64).reshape(-1)
  n_audio = int(math.ceil(np.asarray(audio16k).shape[0] / SAMPLES_PER_FRAME))
  if n_audio < m.size - 1:
    raise ValueError(f'eval_metrics.mouth_closed_in_silence_rate: audio covers {n_audio} frames, '
                     f'the series has {m.size}')
  silent = silence_mask(audio16k, m.size, threshold_db=threshold_db,
                        min_silence_frames=min_silence_frames, edge_frames=edge_frames)
  if not silent.any():
    warnings.warn('eval_metrics.mouth_closed_in_silence_rate: no silent frames; rate is nan',
                  RuntimeWarning, stacklevel=2)
    return float('nan')
  return float(np.mean(m[silent] <= closed_threshold))


# ----------------------------------------------------------------------------------------------------
# Strict mouth metrics (synthface, DESIGN.md §7)
# ----------------------------------------------------------------------------------------------------

STRICT_OPEN_AREA = 0.01      # a real frame is open when its strict mouth covers >= 1% of the crop
STRICT_RECALL_RATIO = 0.4    # an open frame is recalled when the generated area is >= 40% of the real one
STRICT_TEETH_AREA = 1e-3     # teeth show when strict teeth cover more than this fraction of the crop
STRICT_CLOSED_AREA = 5e-4    # a generated mouth is closed when its strict area is at most this
STRICT_MAX_LAG = 2           # strict_best_lag is searched in [-2, 2] frames


def strict_mouth_series(frames: Any) -> dict[str, np.ndarray]:
  """Per-frame strict mouth areas (`data_prep.synthface_render.strict_mouth`) of (N, H, W, 3) frames.

  Returns (N,) float64 arrays, fractions of the frame: 'area' (strict mouth interior + teeth, the open
  mouth), 'interior' and 'teeth'. Float [-1, 1] frames are converted to uint8 first.
  """
  from data_prep.synthface_render import strict_mouth  # pylint: disable=g-import-not-at-top
  x = _uint8_frames(frames, 'strict_mouth_series')
  ms = [strict_mouth(f) for f in x]
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
  """Strict lip-sync metrics of a generated synthface clip against the real one (DESIGN.md §7).

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
  real = _uint8_frames(real_frames, 'mouth_strip')
  gens = list(gen_frames) if isinstance(gen_frames, (list, tuple)) else [gen_frames]
  rows = [_uint8_frames(g, 'mouth_strip') for g in gens] + [real]
  if any(row.shape != real.shape for row in rows):
    raise ValueError(f'eval_metrics.mouth_strip: frame shapes differ: {[row.shape for row in rows]}')
  area = strict_mouth_series(real)['area'] if real_area is None else real_area
  idx = most_open_frames(area, k)
  s = real.shape[1]
  if s > max_size:
    import cv2  # pylint: disable=g-import-not-at-top
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
  from daetalker_jax import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
  strip = mouth_strip(gen_frames, real_frames, k, **kwargs)
  metrics_lib.write_png(os.fspath(path), strip)
  return strip


# ----------------------------------------------------------------------------------------------------
# SyncNet LSE-C / LSE-D (joonson/syncnet_python SyncNetInstance.evaluate)
# ----------------------------------------------------------------------------------------------------

def _mel_filterbank(nfilt: int, nfft: int, samplerate: int, lowfreq: float, highfreq: float) -> np.ndarray:
  """python_speech_features.get_filterbanks: triangles on FFT bins floor((nfft+1) f / sr)."""
  hz2mel = lambda hz: 2595.0 * np.log10(1.0 + hz / 700.0)
  mel2hz = lambda mel: 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
  melpoints = np.linspace(hz2mel(lowfreq), hz2mel(highfreq), nfilt + 2)
  bins = np.floor((nfft + 1) * mel2hz(melpoints) / samplerate)
  fbank = np.zeros((nfilt, nfft // 2 + 1))
  for j in range(nfilt):
    for i in range(int(bins[j]), int(bins[j + 1])):
      fbank[j, i] = (i - bins[j]) / (bins[j + 1] - bins[j])
    for i in range(int(bins[j + 1]), int(bins[j + 2])):
      fbank[j, i] = (bins[j + 2] - i) / (bins[j + 2] - bins[j + 1])
  return fbank


def mfcc(signal: Any, samplerate: int = SAMPLE_RATE, *, winlen: float = 0.025, winstep: float = 0.01,
         numcep: int = 13, nfilt: int = 26, nfft: int = 512, preemph: float = 0.97,
         ceplifter: int = 22) -> np.ndarray:
  """(num_frames, numcep) MFCC, identical to `python_speech_features.mfcc(signal, samplerate)` v0.6.

  The defaults are that function's: 25 ms rectangular windows every 10 ms (100 Hz), zero-padded to
  cover the signal (num_frames = 1 + ceil((T - 400) / 160)), pre-emphasis 0.97, |rfft(512)|^2 / 512,
  26 mel triangles 0..sr/2, log, orthonormal DCT-II, lifter 22, and coefficient 0 replaced by the log
  frame energy. No scaling of the input: SyncNet was trained on int16 sample values, so pass int16
  (or floats on that scale); the log energy shifts by 2 ln(scale) otherwise.
  """
  import scipy.fft

  sig = np.asarray(signal, np.float64).reshape(-1)
  sig = np.append(sig[0], sig[1:] - preemph * sig[:-1])
  # round_half_up of winlen*sr / winstep*sr, as sigproc.framesig does.
  frame_len = int(math.floor(winlen * samplerate + 0.5))
  frame_step = int(math.floor(winstep * samplerate + 0.5))
  n = sig.size
  num_frames = 1 if n <= frame_len else 1 + int(math.ceil((n - frame_len) / frame_step))
  pad = (num_frames - 1) * frame_step + frame_len - n
  sig = np.concatenate([sig, np.zeros(pad)])
  idx = np.arange(frame_len)[None, :] + frame_step * np.arange(num_frames)[:, None]
  frames = sig[idx]                                                  # (F, frame_len)
  pspec = np.square(np.abs(np.fft.rfft(frames, nfft))) / nfft       # (F, nfft/2 + 1)
  energy = pspec.sum(axis=1)
  energy = np.where(energy == 0, np.finfo(float).eps, energy)
  feat = pspec @ _mel_filterbank(nfilt, nfft, samplerate, 0.0, samplerate / 2).T
  feat = np.where(feat == 0, np.finfo(float).eps, feat)
  feat = scipy.fft.dct(np.log(feat), type=2, axis=1, norm='ortho')[:, :numcep]
  if ceplifter > 0:
    feat = feat * (1.0 + (ceplifter / 2.0) * np.sin(np.pi * np.arange(numcep) / ceplifter))
  feat[:, 0] = np.log(energy)
  return feat


def _audio_int16_scale(audio16k: Any) -> np.ndarray:
  """Audio as float64 on the int16 scale, as `scipy.io.wavfile.read` gives it to the script."""
  a = np.asarray(audio16k)
  if a.ndim != 1:
    raise ValueError(f'eval_metrics.sync_scores: audio must be mono (T,), got shape {a.shape}')
  if a.dtype == np.int16:
    return a.astype(np.float64)
  if not np.issubdtype(a.dtype, np.floating):
    raise ValueError(f'eval_metrics.sync_scores: audio must be int16 or float in [-1, 1], got {a.dtype}')
  # Readers here give int16 / 32768 and writers use * 32768 (video_io.to_int16), so this restores the
  # stored samples exactly.
  return np.clip(np.round(a.astype(np.float64) * 32768.0), -32768, 32767)


def syncnet_face_crop(frame: np.ndarray, box: Sequence[float], crop_scale: float = 0.4) -> np.ndarray:
  """The face crop of syncnet_python's `run_pipeline.crop_video`, resized to 224x224.

  From a face box (x0, y0, x1, y1) in frame pixels: half-size bs = max(w, h) / 2; the crop spans
  [cy - bs, cy + bs (1 + 2 crop_scale)] vertically and cx +- bs (1 + crop_scale) horizontally (more room
  below the chin than above the brows), on the frame padded with the value 110. Use it when frames
  are whole video frames; frames that already are face crops go to `sync_scores` as they are.
  """
  import cv2

  x0, y0, x1, y1 = (float(v) for v in box)
  bs = max(y1 - y0, x1 - x0) / 2
  bsi = int(bs * (1 + 2 * crop_scale))
  padded = np.pad(frame, ((bsi, bsi), (bsi, bsi), (0, 0)), 'constant', constant_values=110)
  my, mx = (y0 + y1) / 2 + bsi, (x0 + x1) / 2 + bsi
  face = padded[int(my - bs):int(my + bs * (1 + 2 * crop_scale)),
                int(mx - bs * (1 + crop_scale)):int(mx + bs * (1 + crop_scale))]
  return cv2.resize(face, (224, 224))


def lse_from_embeddings(im_feat: Any, cc_feat: Any, vshift: int = 15) -> dict[str, Any]:
  """Offset, LSE-D and LSE-C from per-window video and audio embeddings (`calc_pdist` + `evaluate`).

  dists[i, j] = ||im_feat[i] - cc_pad[i + j] + 1e-6||_2 with cc_pad = cc_feat zero-padded by `vshift`
  windows at both ends (torch.nn.functional.pairwise_distance, eps 1e-6), j = 0..2 vshift.
  mdist[j] = mean_i dists[i, j]; LSE-D = min_j mdist (`Min dist`), LSE-C = median_j mdist - LSE-D
  (`Confidence`), offset = vshift - argmin_j mdist (`AV offset`, in frames). With offset k > 0 the
  video window i matches the audio window i - k: the audio leads the video by k frames.
  """
  v = np.asarray(im_feat, np.float32)
  a = np.asarray(cc_feat, np.float32)
  if v.shape != a.shape or v.ndim != 2:
    raise ValueError(f'eval_metrics.lse_from_embeddings: embeddings must be matching (T, D), got {v.shape} {a.shape}')
  t = v.shape[0]
  win = 2 * vshift + 1
  ap = np.pad(a, ((vshift, vshift), (0, 0)))
  idx = np.arange(t)[:, None] + np.arange(win)[None, :]                 # (T, win)
  dists = np.linalg.norm(v[:, None, :] - ap[idx] + np.float32(1e-6), axis=-1)   # (T, win)
  mdist = dists.mean(axis=0)
  minidx = int(np.argmin(mdist))
  minval = float(mdist[minidx])
  median = float(np.sort(mdist)[(win - 1) // 2])                        # torch.median: lower median
  return dict(offset=vshift - minidx, lse_d=minval, lse_c=median - minval, dists=dists)


@functools.partial(jax.jit, static_argnums=0)
def _syncnet_forward(graphdef, state, lips, mfccs):
  model = nnx.merge(graphdef, state)
  return model.forward_lip(lips), model.forward_aud(mfccs)


def syncnet_embeddings(frames_uint8: Any, audio16k: Any, model, *, batch_size: int = 16
                       ) -> tuple[np.ndarray, np.ndarray]:
  """Per-window SyncNet lip and audio embeddings, windows as in `SyncNetInstance.evaluate`.

  Window i (i = 0 .. min_length - 6, min_length = min(N, floor(T / 640))) is frames i..i+4 and MFCC
  frames 4i..4i+19 of `mfcc(audio)` over the whole clip. Frames are face crops, resized to 224x224
  (cv2 bilinear, as `crop_video` writes them), converted to BGR (the script reads them with
  cv2.imread) and fed as raw 0..255 floats. Returns (im_feat, cc_feat), each (windows, 1024).
  """
  import cv2
  x = np.asarray(frames_uint8)
  if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3:
    raise ValueError(f'eval_metrics.sync_scores: frames must be uint8 (N, H, W, 3) RGB, got {x.dtype} {x.shape}')
  audio = _audio_int16_scale(audio16k)
  min_length = min(x.shape[0], audio.size // SAMPLES_PER_FRAME)
  lastframe = min_length - 5
  if lastframe < 1:
    raise ValueError(f'eval_metrics.sync_scores: need at least 6 frames of video and audio, got {min_length}')
  if x.shape[0] * SAMPLES_PER_FRAME != audio.size:
    warnings.warn(f'eval_metrics.sync_scores: audio ({audio.size / SAMPLE_RATE:.4f}s) and video '
                  f'({x.shape[0] / FPS:.4f}s) lengths are different', RuntimeWarning, stacklevel=2)
  bgr = np.stack([cv2.resize(f, (224, 224))[..., ::-1] if f.shape[:2] != (224, 224) else f[..., ::-1]
                  for f in x[:min_length]])                            # (N, 224, 224, 3) uint8 BGR
  cc = mfcc(audio, SAMPLE_RATE).T.astype(np.float32)                  # (13, F)

  graphdef, state = nnx.split(model)
  im_feat, cc_feat = [], []
  for start in range(0, lastframe, batch_size):
    ids = np.arange(start, start + batch_size)
    n = int(np.sum(ids < lastframe))
    ids = np.minimum(ids, lastframe - 1)                                # pad the last batch: one compile
    lips = np.stack([bgr[i:i + 5] for i in ids]).astype(np.float32)    # (B, 5, 224, 224, 3)
    mf = np.stack([cc[:, 4 * i:4 * i + 20] for i in ids])[..., None]   # (B, 13, 20, 1)
    v, a = _syncnet_forward(graphdef, state, lips, mf)
    im_feat.append(np.asarray(v)[:n])
    cc_feat.append(np.asarray(a)[:n])
  return np.concatenate(im_feat), np.concatenate(cc_feat)


def sync_scores(frames_uint8: Any, audio16k: Any, model, *, vshift: int = 15, batch_size: int = 16
                ) -> dict[str, float | int]:
  """SyncNet LSE-C (higher = better sync), LSE-D (lower = better) and AV offset of one clip.

  Reproduces syncnet_python `SyncNetInstance.evaluate` with `--vshift 15` as Wav2Lip's
  `calculate_scores_real_videos.sh` runs it: 25 fps face-crop frames (N, H, W, 3) uint8 RGB, 16 kHz
  mono audio (int16, or float [-1, 1] which is rescaled to int16 values), MFCC at 100 Hz, 5-frame /
  20-MFCC windows, distances over offsets -vshift..vshift (see `lse_from_embeddings`). Papers report
  the mean of lse_c and lse_d over clips. Differences from running the script on an mp4: no JPEG / XVID
  re-encoding of the frames in between, and no face detection (pass face crops; `syncnet_face_crop`
  reproduces the script's crop from a face box).
  """
  im_feat, cc_feat = syncnet_embeddings(frames_uint8, audio16k, model, batch_size=batch_size)
  r = lse_from_embeddings(im_feat, cc_feat, vshift)
  return dict(lse_c=r['lse_c'], lse_d=r['lse_d'], offset=r['offset'])


def load_syncnet(path: str | os.PathLike | None):
  """(model, '') from a `syncnet_v2.model` file, or (None, reason) so the caller can report LSE as unavailable.

  A missing path or file is not an error here: SyncNet weights are an optional user download.
  A file that exists but is not a SyncNet state_dict still raises (a wrong file should not pass silently).
  """
  if not path:
    return None, 'no SyncNet weights given (pass syncnet_v2.model from joonson/syncnet_python)'
  if not os.path.isfile(path):
    return None, f'{path}: SyncNet weights file not found'
  from daetalker_jax.importers import syncnet as syncnet_import

  return syncnet_import.load_syncnet_weights(path), ''
