"""Evaluation of a generic-identity method (DiffTalk, landmark diffusion) on held-out clips: each clip dubbed with its own speech.

For every clip (of a split whose identities were never trained on, with `prepare --split-by identity`) the
pipeline animates the clip's own face crops from the clip's audio, and the generated crops are compared with
the real ones:
  - the strict mouth metrics (docs/EVALUATION.md, strict mouth metrics; synthface), with the soft r as a secondary number;
  - PSNR / SSIM over the frame and PSNR over the mouth box (landmarks 48-67);
  - the jitter ratio (frame-to-frame change, generated / real);
  - identity colours: the mean RGB distance between generated and real frames at fixed face points (cheeks,
    upper and lower lip) located by the clip's landmarks;
  - identity preservation against the ground truth (synthface identities, whose true skin, hair and lip
    colours `prepare` keeps in manifest.json): `identity_<part>` is the mean RGB distance (0-441) of the
    generated frames to the true colour at the part's points, over the frames where the real frame shows that
    colour there (within 30: hair can be out of the crop, a cheek can be blushed); `identity_<part>_real` is the
    same for the real frames (the floor: compression and blending) and `identity_<part>_frames` the share of
    frames scored. Skin: the forehead and both cheeks; hair: above the brows (0.65 of chin→nose-bridge beyond the
    nose bridge, clipped into the crop); lips: the lower lip.
Results: a JSON file (per clip and frame-weighted means) and `mouths_<clip_id>.png` per clip beside it.
"""

from __future__ import annotations

import json
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


# Ground-truth identity points: (part, function of the (68, 2) landmarks in pixels -> (P, 2) points).
_UP = lambda p: p[27] - p[8]                      # chin -> nose bridge
TRUTH_POINTS = {
    'skin': lambda p: np.stack([p[27] + 0.2 * _UP(p), (p[4] + p[48]) / 2, (p[12] + p[54]) / 2]),
    'hair': lambda p: (p[27] + 0.65 * _UP(p))[None],
    'lips': lambda p: ((p[57] + p[66]) / 2)[None],
}
TRUTH_VISIBLE = 30.0   # a real frame shows the part where it is within this RGB distance of the true colour


def _patch_mean(im: np.ndarray, x: int, y: int, radius: int) -> np.ndarray:
  """Mean RGB of the (2r+1)² patch of `im` centred on (x, y)."""
  return im[y - radius:y + radius + 1, x - radius:x + radius + 1].reshape(-1, 3).astype(np.float64).mean(0)


def identity_truth(generated: np.ndarray, real: np.ndarray, landmarks: np.ndarray,
                   colours: dict[str, Any], radius: int = 1) -> dict[str, float]:
  """Generated (and real) colour vs a synthface identity's true colours (module doc); landmarks are pixels."""
  size = real.shape[1]
  out = {}
  for part, points in TRUTH_POINTS.items():
    if part not in colours:
      continue
    truth = np.asarray(colours[part], np.float64)
    gen_d, real_d, frames = [], [], 0
    for g, r, p in zip(generated, real, landmarks):
      shown = False
      for x, y in np.round(points(np.asarray(p, np.float64))).astype(int).clip(radius, size - 1 - radius):
        dr = np.linalg.norm(_patch_mean(r, x, y, radius) - truth)
        if dr < TRUTH_VISIBLE:
          real_d.append(dr)
          gen_d.append(np.linalg.norm(_patch_mean(g, x, y, radius) - truth))
          shown = True
      frames += shown
    out[f'identity_{part}'] = float(np.mean(gen_d)) if gen_d else float('nan')
    out[f'identity_{part}_real'] = float(np.mean(real_d)) if real_d else float('nan')
    out[f'identity_{part}_frames'] = frames / max(len(real), 1)
  return out


def truth_line(m: dict[str, float]) -> str:
  """'identity vs the true colours: skin 6 (real 4), ...' from a metrics dict with identity_* entries."""
  parts = [f"{p} {m[f'identity_{p}']:.0f} (real {m[f'identity_{p}_real']:.0f})" for p in TRUTH_POINTS
           if f'identity_{p}' in m and np.isfinite(m[f'identity_{p}'])]
  return 'identity vs the true colours, RGB distance: ' + ', '.join(parts)


def identity_colours_of(data_dir: str) -> dict[str, dict[str, Any]]:
  """The true colours per identity that `prepare` kept for synthface identities ({} for other data)."""
  path = os.path.join(data_dir, 'manifest.json')
  try:
    with open(path) as f:
      return json.load(f).get('identity_colours', {})
  except (OSError, ValueError):
    return {}


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
      d.append(np.linalg.norm(_patch_mean(g, x, y, radius) - _patch_mean(r, x, y, radius)))
    out[f'colour_{name}'] = float(np.mean(d))
  return out


def clip_metrics(generated: np.ndarray, real: np.ndarray, landmarks: np.ndarray, audio: np.ndarray,
                 colours: dict[str, Any] | None = None) -> dict[str, Any]:
  """Every metric of one clip (module doc); `colours`: the identity's true colours, when known."""
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', RuntimeWarning)
    m = mouth_metrics.strict_mouth_metrics(generated, real, audio)
  m.update(psnr=image_metrics.psnr(generated, real), ssim=image_metrics.ssim(generated, real),
           psnr_mouth=mouth_box_psnr(generated, real, np.concatenate([landmarks[:, 48:68].min(1),
                                                                      landmarks[:, 48:68].max(1)], axis=1)),
           jitter_ratio=image_metrics.jitter_ratio(generated, real), **identity_colours(generated, real, landmarks))
  if colours:
    m.update(identity_truth(generated, real, np.asarray(landmarks) * real.shape[1], colours))
  return m


def summarise(per_clip: list[dict[str, Any]]) -> dict[str, float]:
  """The frame-weighted mean of every number of the per-clip dicts (`num_frames` each), NaNs left out."""
  keys = [k for k, v in per_clip[0].items() if isinstance(v, (int, float)) and k not in ('num_frames', 'seconds')]
  weights = np.array([c['num_frames'] for c in per_clip], np.float64)
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', RuntimeWarning)
    return {k: float(np.nansum([c[k] * w for c, w in zip(per_clip, weights)]) /
                     max(np.sum(weights[[np.isfinite(c[k]) for c in per_clip]]), 1e-9))
            for k in keys if all(k in c for c in per_clip)}


def evaluate_clips(pipeline, clips: Iterable[dict[str, Any]], out: str, *, make_source: Callable | None = None,
                   say: Callable[[str], None] = print, colours: dict[str, Any] | None = None) -> dict[str, Any]:
  """Runs `pipeline` (with set_source) on every clip; writes `out` (JSON) and the mouth strips. `make_source`:
  clip -> FaceSource (default: the clip's own crops at the pipeline's size). `colours`: true colours per identity
  (`identity_colours_of(data_dir)`) for the ground-truth identity metrics."""
  if make_source is None:
    from daetalker_jax.inference import face_source  # pylint: disable=g-import-not-at-top
    size = pipeline.codec.image_size
    make_source = lambda c: face_source.from_crops(c['images'], c['landmarks'], c['landmarks_valid'], size,
                                                   c['clip_id'])
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
    m = clip_metrics(generated, real, lms, audio[:len(generated) * 640], (colours or {}).get(clip.get('identity', '')))
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
  summary = summarise(per_clip)
  weights = np.array([c['num_frames'] for c in per_clip], np.float64)
  results = {'method': pipeline.method, 'guidance': getattr(pipeline, 'guidance', 1.0),
             **({'motion_scale': pipeline.motion_scale} if hasattr(pipeline, 'motion_scale') else {}),
             'num_clips': len(per_clip), 'num_frames': int(weights.sum()),
             'identities': sorted({c['identity'] for c in per_clip}), 'summary': summary, 'clips': per_clip,
             'timing': {'total_s': time.perf_counter() - t_start,
                        'frames_per_s': float(weights.sum()) / max(sum(c['seconds'] for c in per_clip), 1e-9)}}
  report.write_json(out, results)
  say(f"mean over {len(per_clip)} clips: strict r {summary['strict_r']:.3f}, recall {summary['open_recall']:.2f}, "
      f"amplitude {summary['amplitude_ratio']:.2f}, closed in silence {summary['closed_in_silence']:.2f}, "
      f"PSNR {summary['psnr']:.2f} dB (mouth {summary['psnr_mouth']:.2f}), SSIM {summary['ssim']:.3f}")
  if 'identity_skin' in summary:
    say(truth_line(summary))
  say(f'wrote {out}')
  return results
