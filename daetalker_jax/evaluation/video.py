"""Metrics of one generated clip against its real clip (no model involved: usable on any pair of videos).

`video_metrics` is what `python -m daetalker_jax.evaluate` and the demo report per clip: image metrics,
and lip sync read from the synthface mouth colours (strict first, docs/EVALUATION.md, strict mouth metrics) or from dlib's 68 landmarks
of real video (`detect_landmarks`).
"""

from __future__ import annotations

import functools
import math
from typing import Any
import warnings

import numpy as np

from daetalker_jax import eval_metrics as em

# Real video: the mouth counts as closed when the inner-lip gap (landmarks 62-66) is below this fraction
# of the inter-ocular distance (a closed mouth reads ~0-0.02, speech openings 0.05-0.4).
LIP_GAP_CLOSED = 0.04


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
  from daetalker_jax import face_detect  # pylint: disable=g-import-not-at-top
  return face_detect.make_detector('dlib'), face_detect.load_shape_predictor(face_detect.shape_predictor_path())


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
