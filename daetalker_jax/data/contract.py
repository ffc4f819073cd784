"""The data contract's numbers, defined once (docs/DATA.md).

Video is 25 frames/s and audio 16 kHz mono, so video frame k owns the audio samples [640k, 640(k+1)).
Audio is stored as int16 PCM and handled as float32 in [-1, 1]: reading divides by 32768, writing multiplies
by 32768, rounds and clips, so a read → write round trip keeps every sample exactly.
"""

import numpy as np

FPS = 25                                   # video frames per second
SAMPLE_RATE = 16_000                       # audio samples per second (mono)
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS     # 640 audio samples per video frame
INT16_SCALE = 32768.0                      # float = int16 / INT16_SCALE


def int16_to_float(audio: np.ndarray, dtype=np.float32) -> np.ndarray:
  """int16 PCM (any shape) → float in [-1, 1) (`dtype`, float32 by default)."""
  return np.asarray(audio).astype(dtype) / dtype(INT16_SCALE)


def float_to_int16(audio: np.ndarray) -> np.ndarray:
  """float in [-1, 1] → int16 PCM (× 32768, rounded, clipped): the inverse of `int16_to_float`."""
  x = np.round(np.asarray(audio, np.float64) * INT16_SCALE)
  return np.clip(x, -32768, 32767).astype(np.int16)


def frames_for_samples(num_samples: int) -> int:
  """Video frames for an audio length: round(samples / 640), halves rounding up."""
  return int(np.floor(num_samples / SAMPLES_PER_FRAME + 0.5))
