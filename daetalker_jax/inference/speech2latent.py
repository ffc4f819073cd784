"""speech2latent over audio of any length: windows, crossfades, smoothing (DAE-Talker stage 2 at inference).

The audio runs in windows of `chunk_frames` (30 s) overlapping by `overlap_frames` (2 s), linearly
crossfaded, so memory does not grow with the length. Every window is padded (with a mask; padding never
changes the real frames' outputs) to one length, so one compiled program serves them all.
"""

from __future__ import annotations

from flax import nnx
import jax
import numpy as np

from daetalker_jax.data import contract

SPF = contract.SAMPLES_PER_FRAME


def window_starts(n: int, window: int, overlap: int) -> list[int]:
  """Start frames of the s2l windows: consecutive windows share exactly `overlap` frames."""
  starts = [0]
  while starts[-1] + window < n:
    starts.append(starts[-1] + window - overlap)
  return starts


def smooth_latents(latents: np.ndarray, sigma: float) -> np.ndarray:
  """Gaussian filter over time (axis 0) with `sigma` frames; edges use the nearest frame."""
  if sigma <= 0:
    return latents
  import scipy.ndimage  # pylint: disable=g-import-not-at-top
  return scipy.ndimage.gaussian_filter1d(latents, sigma, axis=0, mode='nearest').astype(np.float32)


class LatentPredictor:
  """A trained Speech2Latent model's jitted window functions, compiled once per window length."""

  def __init__(self, model: nnx.Module):
    graphdef, self._state = nnx.split(model)

    def run(state, audio, mask, pose, gain, predicted: bool):
      m = nnx.merge(graphdef, state)
      if predicted:   # feed back the model's own pose prediction, times `gain`
        pose = m(audio, mask=mask, pose_mode='predicted')['pose_pred']          # (1, W, 3)
      out = m(audio, mask=mask, pose=pose * gain, pose_mode='supplied')
      return out['latent'], out['pose_pred']

    self._run = jax.jit(run, static_argnames='predicted')

  def __call__(self, audio: np.ndarray, *, pose: np.ndarray | None, pose_gain: float = 1.0,
               chunk_frames: int = 750, overlap_frames: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Latents (N, D) (as the model outputs them, i.e. normalised) and predicted pose (N, 3) for N*640 samples.

    `pose` (N, 3) in the model's normalised units, or None to feed back its own prediction. A clip shorter
    than a window is padded only to a whole second.
    """
    n = len(audio) // SPF
    if n * SPF != len(audio) or n == 0:
      raise ValueError(f'LatentPredictor: audio of {len(audio)} samples is not a positive multiple of {SPF}')
    window = chunk_frames if n > chunk_frames else -(-n // contract.FPS) * contract.FPS
    pose_in = np.zeros((n, 3), np.float32) if pose is None else np.asarray(pose, np.float32)
    starts = window_starts(n, window, overlap_frames)
    acc = weights = pose_acc = None
    ramp = (np.arange(overlap_frames, dtype=np.float32) + 0.5) / max(overlap_frames, 1)
    for k, s in enumerate(starts):
      e = min(s + window, n)
      a = np.zeros((1, window * SPF), np.float32)
      a[0, :(e - s) * SPF] = audio[s * SPF:e * SPF]
      mask = np.zeros((1, window), bool)
      mask[0, :e - s] = True
      p = np.zeros((1, window, 3), np.float32)
      p[0, :e - s] = pose_in[s:e]
      latent, pose_pred = self._run(self._state, a, mask, p, np.float32(pose_gain), predicted=pose is None)
      latent, pose_pred = np.asarray(latent)[0, :e - s], np.asarray(pose_pred)[0, :e - s]
      if acc is None:
        acc = np.zeros((n, latent.shape[-1]), np.float32)
        weights = np.zeros((n, 1), np.float32)
        pose_acc = np.zeros((n, 3), np.float32)
      w = np.ones(e - s, np.float32)
      if k > 0 and overlap_frames:
        w[:overlap_frames] = ramp[:e - s]                                   # fade in over the shared frames
      if k + 1 < len(starts) and overlap_frames:
        w[-overlap_frames:] = np.minimum(w[-overlap_frames:], ramp[::-1])   # fade out
      acc[s:e] += w[:, None] * latent
      pose_acc[s:e] += w[:, None] * pose_pred
      weights[s:e] += w[:, None]
    return acc / weights, pose_acc / weights

