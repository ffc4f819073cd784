"""Audio front ends in JAX: log-mel spectrogram and waveform normalisation.

Everything here is jit-able and batched, so the speech2latent model computes its features on the device
from raw 16 kHz audio windows (`windows_pipeline` delivers `(B, W*640)` float32 samples).

Log-mel definition (matches `librosa.feature.melspectrogram(y, sr=16000, n_fft=400, hop_length=160,
win_length=400, window='hann', center=True, pad_mode='constant', power=2.0, n_mels=80, fmin=0,
fmax=8000)` followed by `log(mel + 1e-5)`; the filterbank is `librosa.filters.mel` (Slaney scale and
norm, librosa's defaults)):

* Mel frame j is centred on sample 160*j (librosa `center=True`: the signal is zero-padded by
  n_fft//2 = 200 samples on each side).
* For N samples we return exactly N // 160 frames. librosa returns 1 + N // 160: the extra last frame is
  centred on (or after) the end of the signal, and we drop it so that the frame count is a whole multiple
  of the video rate.
* Alignment with video (25 fps, 640 samples per frame): for W video frames (N = 640*W samples) there are
  exactly 4*W mel frames, and mel frames 4k..4k+3 are centred at 0, 10, 20 and 30 ms into the 40 ms span
  of video frame k, i.e. mel frame j belongs to video frame j // 4.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from daetalker_jax.data import contract
from daetalker_jax.data.contract import SAMPLE_RATE, SAMPLES_PER_FRAME  # 16 kHz, 640 samples per video frame

N_FFT = 400               # 25 ms analysis window
HOP = 160                 # 10 ms hop -> 100 Hz mel frames
N_MELS = 80               # mel bins
FMIN, FMAX = 0.0, 8000.0  # mel filterbank range (Hz)
LOG_EPS = 1e-5            # log(mel + eps)
MEL_PER_VIDEO_FRAME = SAMPLES_PER_FRAME // HOP  # 4


def validate_audio(audio, sample_rate: int, *, name: str = 'audio') -> np.ndarray:
  """Checks user-supplied audio and returns it as float32 numpy.

  Call this at the boundary where audio enters from a file or a user (not inside jit, where the values
  are not known). Raises a one-line ValueError naming `name` and the problem.
  """
  if sample_rate != SAMPLE_RATE:
    raise ValueError(f'{name}: sample rate is {sample_rate} Hz, expected {SAMPLE_RATE} Hz '
                     '(resample first, e.g. librosa.resample)')
  audio = np.asarray(audio)
  if audio.dtype == np.int16:
    audio = contract.int16_to_float(audio)
  audio = audio.astype(np.float32, copy=False)
  if audio.ndim == 2 and audio.shape[1] == 2 and audio.shape[0] > 2:
    raise ValueError(f'{name}: audio shaped {audio.shape} looks like stereo; mix it down to mono first')
  if audio.ndim not in (1, 2):
    raise ValueError(f'{name}: expected mono audio shaped (N,) or (B, N), got shape {audio.shape}')
  if audio.shape[-1] == 0:
    raise ValueError(f'{name}: audio is empty (0 samples)')
  if not np.all(np.isfinite(audio)):
    raise ValueError(f'{name}: audio contains NaN or Inf samples')
  return audio


@functools.lru_cache(maxsize=8)
def mel_filterbank(sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS,
                   fmin: float = FMIN, fmax: float = FMAX) -> np.ndarray:
  """librosa's Slaney mel filterbank, transposed for `power @ fb`: (n_fft//2+1, n_mels) float32."""
  import librosa  # pylint: disable=g-import-not-at-top  (host-only dependency, imported lazily)
  fb = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
  return np.ascontiguousarray(fb.T.astype(np.float32))


@functools.lru_cache(maxsize=8)
def _hann(n: int) -> np.ndarray:
  # Periodic Hann window, as scipy.signal.get_window('hann', n) (what librosa uses).
  return (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)).astype(np.float32)


def num_mel_frames(num_samples: int) -> int:
  """Number of log-mel frames for `num_samples` samples (N // 160; 4 per video frame)."""
  return num_samples // HOP


def log_mel(audio: jax.Array, *, n_mels: int = N_MELS) -> jax.Array:
  """Log-mel spectrogram of 16 kHz audio; jit-able and batched.

  Args:
    audio: (..., N) float waveform in [-1, 1] at 16 kHz.
    n_mels: number of mel bins.
  Returns:
    (..., N // 160, n_mels) float32 log(mel power + 1e-5); frame j centred on sample 160*j.
  """
  if audio.ndim < 1:
    raise ValueError(f'features.log_mel: audio must have a time axis, got shape {audio.shape}')
  n = audio.shape[-1]
  frames = num_mel_frames(n)
  if frames == 0:
    raise ValueError(f'features.log_mel: audio has {n} samples, need at least {HOP} for one frame')
  x = audio.astype(jnp.float32)
  pad = [(0, 0)] * (x.ndim - 1) + [(N_FFT // 2, N_FFT // 2)]
  x = jnp.pad(x, pad)                                          # (..., N + 400), center=True
  idx = np.arange(frames)[:, None] * HOP + np.arange(N_FFT)[None, :]   # (F, 400) static
  x = x[..., idx] * _hann(N_FFT)                               # (..., F, 400)
  spec = jnp.fft.rfft(x, n=N_FFT, axis=-1)                     # (..., F, 201)
  power = jnp.real(spec) ** 2 + jnp.imag(spec) ** 2
  # HIGHEST: the default TPU/GPU matmul precision (bf16 passes) would cost ~1e-2 in the log domain.
  mel = jnp.matmul(power, mel_filterbank(n_mels=n_mels), precision=jax.lax.Precision.HIGHEST)
  return jnp.log(mel + LOG_EPS)                                # (..., F, n_mels)


def normalize_waveform(audio: jax.Array, mask: jax.Array | None = None, eps: float = 1e-7) -> jax.Array:
  """Zero-mean, unit-variance per example over the valid samples (HF `do_normalize`), padding zeroed.

  Args:
    audio: (B, N) waveform.
    mask: (B, N) bool, True for real samples; None = all real.
  Returns:
    (B, N) float32, `(x - mean) / sqrt(var + eps)` on real samples (as `Wav2Vec2FeatureExtractor`),
    0 on padding.
  """
  x = audio.astype(jnp.float32)
  if mask is None:
    mask = jnp.ones(x.shape, bool)
  m = mask.astype(jnp.float32)
  count = jnp.maximum(m.sum(-1, keepdims=True), 1.0)
  mean = (x * m).sum(-1, keepdims=True) / count
  var = (((x - mean) * m) ** 2).sum(-1, keepdims=True) / count
  return jnp.where(mask, (x - mean) / jnp.sqrt(var + eps), 0.0)
