"""Image metrics of generated frames: PSNR, SSIM and temporal jitter (conventions: `evaluation/__init__`)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np


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


def uint8_frames(frames: Any, fn: str) -> np.ndarray:
  """(N, H, W, 3) uint8 frames; float [-1, 1] frames are converted (rounded). `fn` names the caller."""
  x = np.asarray(frames)
  if x.dtype != np.uint8:
    x = np.round(to_unit_range(x) * 255.0).astype(np.uint8)
  if x.ndim != 4 or x.shape[-1] != 3:
    raise ValueError(f'eval_metrics.{fn}: expected (N, H, W, 3) frames, got {x.shape}')
  return x


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
