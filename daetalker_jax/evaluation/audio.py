"""Audio for evaluation: checked sample arrays, per-frame level and the silence mask.

Frame t covers samples [640 t, 640 (t + 1)), the data contract's alignment (`daetalker_jax.data.contract`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from daetalker_jax.data import contract
from daetalker_jax.data.contract import SAMPLES_PER_FRAME  # 640


def checked_audio(audio: Any, fn: str = 'eval_metrics') -> np.ndarray:
  """`audio` as a numpy array after checking it is mono (T,) and int16 or float; `fn` names the caller."""
  a = np.asarray(audio)
  if a.ndim != 1:
    raise ValueError(f'{fn}: audio must be mono (T,), got shape {a.shape}')
  if a.dtype != np.int16 and not np.issubdtype(a.dtype, np.floating):
    raise ValueError(f'{fn}: audio must be int16 or float in [-1, 1], got dtype {a.dtype}')
  return a


def audio_float(audio: Any, fn: str = 'eval_metrics') -> np.ndarray:
  """float64 (T,) in [-1, 1] from int16 (/ 32768) or float audio."""
  a = checked_audio(audio, fn)
  return contract.int16_to_float(a, np.float64) if a.dtype == np.int16 else a.astype(np.float64)


def audio_int16_scale(audio: Any, fn: str = 'eval_metrics') -> np.ndarray:
  """float64 (T,) on the int16 scale, as `scipy.io.wavfile.read` gives a 16-bit file.

  float audio is rescaled with the contract's × 32768 (rounded, clipped), so audio read from int16 (/ 32768)
  gets back exactly its stored samples.
  """
  a = checked_audio(audio, fn)
  return (a if a.dtype == np.int16 else contract.float_to_int16(a)).astype(np.float64)


def frame_rms_dbfs(audio16k: Any, num_frames: int | None = None) -> np.ndarray:
  """(num_frames,) RMS level of each 40 ms (640-sample) frame in dBFS: 20 log10(rms), full scale = 1.0.

  Frame t covers samples [640 t, 640 (t + 1)) — the same alignment as the dataset. A full-scale sine
  reads -3 dBFS, digital silence -inf. Samples missing at the end count as zeros.
  """
  a = audio_float(audio16k)
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
