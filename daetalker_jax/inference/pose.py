"""Head-pose tracks for generation: the model's own prediction, still, a dataset clip's, or a .npy file."""

from __future__ import annotations

import os

from absl import logging
import numpy as np

from daetalker_jax.inference import clips
from daetalker_jax.inference.errors import GenerateError

POSE_CHOICES = 'predicted | still | reference:CLIP_ID | FILE.npy'


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
    track = np.asarray(clips.find_clip(data_dir, arg, '--pose')['frames']['pose'], np.float32)
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
