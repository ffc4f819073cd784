"""Evaluation of a generic-identity method (DiffTalk, landmark diffusion) on held-out clips: each clip dubbed with its own speech.

For every clip (of a split whose identities were never trained on, with `prepare --split-by identity`) the
pipeline animates the clip's own face crops from the clip's audio, and the generated crops are compared with
the real ones:
  - the strict mouth metrics (DESIGN.md §7; synthface), with the soft r as a secondary number;
  - PSNR / SSIM over the frame and PSNR over the mouth box (landmarks 48-67);
  - the jitter ratio (frame-to-frame change, generated / real);
  - identity colours: the mean RGB distance between generated and real frames at fixed face points (cheeks,
    upper and lower lip) located by the clip's landmarks; the real frames are the person's ground truth.
Results: a JSON file (per clip and frame-weighted means) and `mouths_<clip_id>.png` per clip beside it.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from daetalker_jax.evaluation import image as image_metrics
from daetalker_jax.evaluation import mouth as mouth_metrics
from daetalker_jax.evaluation import report

# Face points where identity colours are read: (name, landmark a, landmark b) -> the midpoint of a and b.
COLOUR_POINTS = (('cheek_left', 4, 48), ('cheek_right', 12, 54), ('upper_lip', 51, 62), ('lower_lip', 57, 66))


def mouth_box_psnr(generated: np.ndarray, real: np.ndarray, boxes: np.ndarray) -> float:
  """Mean PSNR (dB) over each frame's mouth box (x0, y0, x1, y1) as fractions of the side (uint8 frames)."""
  size = real.shape[1]
  vals = []
  for g, r, b in zip(generated, real, np.asarray(boxes, np.float64)):
    x0, y0 = np.floor(b[:2] * size).astype(int).clip(0, size)
    x1, y1 = np.ceil(b[2:] * size).astype(int).clip(0, size)
    if x1 > x0 and y1 > y0:
      vals.append(image_metrics.psnr(g[None, y0:y1, x0:x1], r[None, y0:y1, x0:x1]))
  return float(np.mean(vals)) if vals else float('nan')


def identity_colours(generated: np.ndarray, real: np.ndarray, landmarks: np.ndarray, radius: int = 1
                     ) -> dict[str, float]:
  """Mean RGB distance (0-441) of generated vs real (2r+1)² patches at COLOUR_POINTS, per point."""
  size = real.shape[1]
  out = {}
  for name, a, b in COLOUR_POINTS:
    d = []
    for g, r, p in zip(generated, real, landmarks):
      x, y = np.round((p[a] + p[b]) / 2 * size).astype(int).clip(radius, size - 1 - radius)
      pg = g[y - radius:y + radius + 1, x - radius:x + radius + 1].reshape(-1, 3).astype(np.float64).mean(0)
      pr = r[y - radius:y + radius + 1, x - radius:x + radius + 1].reshape(-1, 3).astype(np.float64).mean(0)
      d.append(np.linalg.norm(pg - pr))
    out[f'colour_{name}'] = float(np.mean(d))
  return out


def clip_metrics(generated: np.ndarray, real: np.ndarray, landmarks: np.ndarray, audio: np.ndarray
                 ) -> dict[str, Any]:
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', RuntimeWarning)
    m = mouth_metrics.strict_mouth_metrics(generated, real, audio)
  m.update(psnr=image_metrics.psnr(generated, real), ssim=image_metrics.ssim(generated, real),
           psnr_mouth=mouth_box_psnr(generated, real, np.concatenate([landmarks[:, 48:68].min(1),
                                                                      landmarks[:, 48:68].max(1)], axis=1)),
           jitter_ratio=image_metrics.jitter_ratio(generated, real), **identity_colours(generated, real, landmarks))
  return m


def evaluate_clips(pipeline, clips: Iterable[dict[str, Any]], out: str, *, make_source: Callable,
                   say: Callable[[str], None] = print) -> dict[str, Any]:
  """Runs `pipeline` (with set_source) on every clip; writes `out` (JSON) and the mouth strips."""
  per_clip, t_start = [], time.perf_counter()
  for clip in clips:
    t0 = time.perf_counter()
    source = make_source(clip)
    pipeline.set_source(source)
    audio = clip['audio']
    video = pipeline(audio.astype(np.float32) / 32768.0 if audio.dtype == np.int16 else audio)
    generated = np.concatenate(list(video.frames))
    order = video.info['source_order']
    real, lms = source.crops[order], source.landmarks[order]
    m = clip_metrics(generated, real, lms, audio[:len(generated) * 640])
    strip = os.path.join(os.path.dirname(os.path.abspath(out)), f"mouths_{clip['clip_id']}.png")
    mouth_metrics.save_mouth_strip(strip, generated, real)
    # Landmark diffusion's track scores (LMD, opening r, landmark jitter), when the pipeline has them.
    m.update({k: float(video.info[k]) for k in ('lmd', 'opening_r', 'landmark_jitter_ratio') if k in video.info})
    m.update(clip_id=clip['clip_id'], identity=clip.get('identity', ''), num_frames=len(generated),
             frames_without_face=int(video.info['frames_without_face']), mouth_strip=strip,
             seconds=time.perf_counter() - t0)
    per_clip.append(m)
    say(f"  {clip['clip_id']} ({m['identity'] or 'no identity'}): strict r {m['strict_r']:.2f}, recall "
        f"{m['open_recall']:.2f}, amplitude {m['amplitude_ratio']:.2f}, PSNR {m['psnr']:.1f} dB, "
        f"{m['seconds']:.1f} s")
  keys = [k for k, v in per_clip[0].items() if isinstance(v, (int, float)) and k not in ('num_frames', 'seconds')]
  weights = np.array([c['num_frames'] for c in per_clip], np.float64)
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', RuntimeWarning)
    summary = {k: float(np.nansum([c[k] * w for c, w in zip(per_clip, weights)]) /
                        max(np.sum(weights[[np.isfinite(c[k]) for c in per_clip]]), 1e-9)) for k in keys}
  results = {'method': pipeline.method, 'num_clips': len(per_clip), 'num_frames': int(weights.sum()),
             'identities': sorted({c['identity'] for c in per_clip}), 'summary': summary, 'clips': per_clip,
             'timing': {'total_s': time.perf_counter() - t_start,
                        'frames_per_s': float(weights.sum()) / max(sum(c['seconds'] for c in per_clip), 1e-9)}}
  report.write_json(out, results)
  say(f"mean over {len(per_clip)} clips: strict r {summary['strict_r']:.3f}, recall {summary['open_recall']:.2f}, "
      f"amplitude {summary['amplitude_ratio']:.2f}, closed in silence {summary['closed_in_silence']:.2f}, "
      f"PSNR {summary['psnr']:.2f} dB (mouth {summary['psnr_mouth']:.2f}), SSIM {summary['ssim']:.3f}")
  say(f'wrote {out}')
  return results
