"""Audio loading and resampling.

Every audio file the project reads (a user's speech for generation, an evaluation clip) goes
through `load_audio`, so the whole codebase sees one format: float32 mono in [-1, 1] at 16 kHz.
ffmpeg does the decoding, so anything it reads works (wav, mp3, flac, m4a, or the audio track of a
video). Speech features (log-mel, wav2vec2 inputs) are built on top of this elsewhere.
"""

from __future__ import annotations

import os
import subprocess

import numpy as np
import scipy.signal

from daetalker_jax.data import contract
from daetalker_jax.data import video_io
from daetalker_jax.data.contract import SAMPLE_RATE


class AudioError(ValueError):
  """An audio file cannot be used; the message names the file and the problem (one line)."""


def load_audio(path: str | os.PathLike[str], sr: int = SAMPLE_RATE) -> np.ndarray:
  """Decodes any ffmpeg-readable file to float32 mono (T,) in [-1, 1] at `sr` Hz."""
  path = str(path)
  if not os.path.isfile(path):
    raise AudioError(f'{path}: no such file')
  cmd = [video_io.ffmpeg_exe(), '-nostdin', '-v', 'error', '-i', path, '-map', '0:a:0', '-vn',
         '-ac', '1', '-ar', str(sr), '-f', 'f32le', '-']
  proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
  err = ' '.join(proc.stderr.decode(errors='replace').split())[-300:]
  if proc.returncode != 0:
    if 'matches no streams' in err:
      raise AudioError(f'{path}: no audio stream')
    raise AudioError(f'{path}: not a readable audio file ({err or "ffmpeg exit " + str(proc.returncode)})')
  audio = np.frombuffer(proc.stdout, np.float32).copy()
  if audio.size == 0:
    raise AudioError(f'{path}: audio stream is empty')
  if not np.all(np.isfinite(audio)):
    raise AudioError(f'{path}: audio contains NaN/Inf samples')
  return audio


def resample(audio: np.ndarray, sr_in: int, sr_out: int = SAMPLE_RATE) -> np.ndarray:
  """Polyphase resampling (anti-aliased) of a mono float signal; returns float32."""
  audio = np.asarray(audio, np.float32)
  if sr_in == sr_out:
    return audio
  g = np.gcd(int(sr_in), int(sr_out))
  return scipy.signal.resample_poly(audio, sr_out // g, sr_in // g).astype(np.float32)


def to_int16(audio: np.ndarray) -> np.ndarray:
  """float [-1, 1] → int16 (clipped), the storage format of the dataset."""
  return contract.float_to_int16(audio)


def to_float32(audio: np.ndarray) -> np.ndarray:
  """int16 → float32 in [-1, 1); float input is returned as float32 unchanged."""
  audio = np.asarray(audio)
  if audio.dtype == np.int16:
    return contract.int16_to_float(audio)
  return audio.astype(np.float32)


def fit_to_frames(audio: np.ndarray, num_frames: int) -> np.ndarray:
  """Pads with zeros / trims to exactly num_frames * 640 samples (the data contract)."""
  return video_io.align_audio(np.asarray(audio), num_frames, 0.0)
