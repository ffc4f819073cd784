"""Reporting of an evaluation run: the per-clip line, the summary table, frame-weighted means, contact sheet."""

from __future__ import annotations

from collections.abc import Sequence
import math
from typing import Any

import numpy as np

from daetalker_jax import atomic
from daetalker_jax import metrics as metrics_lib

SHEET_FRAMES = 6                              # frames per clip in the contact sheet
SHEET_CLIPS = 4                               # clips in the contact sheet
# Summary: these metrics are averaged over clips weighted by the frames they are computed on, not by the
# clip length; counts are summed.
_SUMMARY_WEIGHTS = {'open_recall': 'num_open_frames', 'amplitude_ratio': 'num_open_frames',
                    'teeth_recall': 'num_teeth_frames'}
_SUMMARY_SUMS = ('num_open_frames', 'num_teeth_frames')


def json_safe(x: Any) -> Any:
  """`x` with NaN → None and ±inf → "inf"/"-inf" (strict JSON), numpy scalars → Python numbers."""
  if isinstance(x, dict):
    return {k: json_safe(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [json_safe(v) for v in x]
  if isinstance(x, (np.floating, np.integer)):
    x = x.item()
  if isinstance(x, float):
    if math.isnan(x):
      return None
    if math.isinf(x):
      return 'inf' if x > 0 else '-inf'
  return x


def write_json(path: str, obj: dict[str, Any]) -> None:
  """Strict JSON (`json_safe`) written atomically."""
  atomic.write_json(path, json_safe(obj), allow_nan=False)


def mean_over_clips(clips: list[dict[str, Any]], group: str) -> dict[str, float]:
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
# On synthface the colour-window (soft) lip-sync numbers are secondary to the strict ones (docs/EVALUATION.md, strict mouth metrics).
_SOFT_LABELS = {'lip_sync_r': 'soft r (secondary)', 'lip_sync_lag': 'soft r best lag (secondary)',
                'lip_sync_r_truth': 'soft r vs truth (secondary)',
                'mouth_closed_in_silence': 'soft closed in silence (sec.)'}


def clip_line(per_clip: dict[str, Any]) -> str:
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
