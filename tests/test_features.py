"""Log-mel front end: parity with librosa, frame count / alignment, input validation."""

import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest

from daetalker_jax.data import features


def _speechlike(n: int, seed: int = 0) -> np.ndarray:
  rng = np.random.default_rng(seed)
  t = np.arange(n) / features.SAMPLE_RATE
  # Harmonics with a moving pitch, an amplitude envelope, a silent gap and a little noise: exercises
  # loud and near-silent bins (the log is most sensitive there).
  f0 = 120 + 40 * np.sin(2 * np.pi * 1.5 * t)
  phase = 2 * np.pi * np.cumsum(f0) / features.SAMPLE_RATE
  x = sum(np.sin(k * phase) / k for k in range(1, 12)) * (0.3 + 0.2 * np.sin(2 * np.pi * 3 * t))
  x[n // 3: n // 2] = 0.0
  x = x + 1e-3 * rng.standard_normal(n)
  return (0.5 * x / np.abs(x).max()).astype(np.float32)


def _librosa_logmel(y: np.ndarray) -> np.ndarray:
  mel = librosa.feature.melspectrogram(
      y=y, sr=16000, n_fft=400, hop_length=160, win_length=400, window='hann', center=True,
      pad_mode='constant', power=2.0, n_mels=80, fmin=0.0, fmax=8000.0)
  return np.log(mel + 1e-5).T  # (F, 80)


def test_log_mel_matches_librosa():
  w = 10                                        # video frames
  y = _speechlike(w * 640)
  ours = np.asarray(jax.jit(features.log_mel)(jnp.asarray(y)[None]))[0]
  ref = _librosa_logmel(y)
  assert ref.shape == (4 * w + 1, 80)          # librosa: 1 + N // hop
  assert ours.shape == (4 * w, 80)             # ours: exactly 4 per video frame
  err = np.abs(ours - ref[:4 * w]).max()
  print(f'log-mel max abs err vs librosa: {err:.2e} (values span {ref.min():.1f}..{ref.max():.1f})')
  assert err < 1e-4
  # The comparison is sensitive: a one-sample shift of the signal moves the spectrum visibly.
  shifted = np.asarray(features.log_mel(jnp.asarray(np.roll(y, 40))[None]))[0]
  assert np.abs(shifted - ref[:4 * w]).max() > 0.1


def test_frames_align_with_video_frames():
  # An impulse in video frame k shows up in mel frames centred within +-200 samples of it, and the
  # frame count is 4 per video frame for any W.
  for w in (1, 3, 7):
    assert features.log_mel(jnp.zeros((2, w * 640))).shape == (2, 4 * w, 80)
  w, k = 6, 3
  y = np.zeros(w * 640, np.float32)
  y[k * 640 + 320] = 1.0                        # centre of video frame k
  lm = np.asarray(features.log_mel(jnp.asarray(y)))
  active = np.nonzero(lm.max(-1) > np.log(1e-5) + 1.0)[0]
  assert set(active // 4) == {k}                # only mel frames of video frame k see it
  assert list(active) == [4 * k + 1, 4 * k + 2, 4 * k + 3]


def test_validate_audio_errors():
  good = np.zeros(640, np.float32)
  assert features.validate_audio(good, 16000).dtype == np.float32
  np.testing.assert_allclose(features.validate_audio(np.array([16384], np.int16), 16000), [0.5])
  with pytest.raises(ValueError, match='sample rate is 44100'):
    features.validate_audio(good, 44100)
  with pytest.raises(ValueError, match='empty'):
    features.validate_audio(np.zeros(0), 16000)
  bad = good.copy()
  bad[3] = np.nan
  with pytest.raises(ValueError, match='my.wav: audio contains NaN'):
    features.validate_audio(bad, 16000, name='my.wav')
  with pytest.raises(ValueError, match='looks like stereo'):
    features.validate_audio(np.zeros((1000, 2)), 16000)
  with pytest.raises(ValueError, match='at least 160'):
    features.log_mel(jnp.zeros((1, 100)))


def test_normalize_waveform_uses_real_samples_only():
  rng = np.random.default_rng(0)
  x = rng.standard_normal((2, 1000)).astype(np.float32) * 3 + 1
  mask = np.arange(1000)[None] < np.array([[1000], [600]])
  out = np.asarray(features.normalize_waveform(jnp.asarray(x), jnp.asarray(mask)))
  ref1 = (x[1, :600] - x[1, :600].mean()) / np.sqrt(x[1, :600].var() + 1e-7)
  np.testing.assert_allclose(out[1, :600], ref1, atol=1e-5)
  assert np.all(out[1, 600:] == 0)
  np.testing.assert_allclose(out[0].std(), 1.0, atol=1e-4)
