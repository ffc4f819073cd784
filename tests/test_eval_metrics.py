"""Evaluation metrics on cases with known answers."""

import math

import numpy as np
import pytest

from daetalker_jax import eval_metrics as em

MOUTH_RGB = (90, 10, 20)   # the reserved synthface mouth-interior colour (DESIGN.md §4)


def _frames(n=4, size=32, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


# ----- image metrics ------------------------------------------------------------------------------

def test_identical_frames():
  a = _frames()
  assert em.psnr(a, a) == math.inf
  assert em.ssim(a, a) == pytest.approx(1.0, abs=1e-5)
  f = a.astype(np.float32) / 127.5 - 1.0          # the same frames in the model's [-1, 1] range
  assert em.psnr(f, a) == math.inf or em.psnr(f, a) > 100
  assert em.temporal_jitter(np.repeat(a[:1], 5, axis=0)) == 0.0


def test_psnr_known_value_and_ranges():
  a = np.full((2, 16, 16, 3), 100, np.uint8)
  b = np.full((2, 16, 16, 3), 110, np.uint8)
  # Constant error 10/255 on the [0, 1] scale: PSNR = 20 log10(25.5).
  assert em.psnr(a, b) == pytest.approx(20 * math.log10(25.5), abs=1e-4)
  # The same frames given as [-1, 1] floats give the same number.
  fa, fb = a / 127.5 - 1.0, b / 127.5 - 1.0
  assert em.psnr(fa, fb) == pytest.approx(20 * math.log10(25.5), abs=1e-3)
  with pytest.raises(ValueError, match=r'\[-1, 1\]'):
    em.psnr(a.astype(np.float32), b.astype(np.float32))    # 0..255 floats are a caller bug
  with pytest.raises(ValueError, match='shapes differ'):
    em.psnr(a, b[:1])


def test_noise_lowers_psnr_and_ssim_monotonically():
  rng = np.random.default_rng(1)
  clean = np.clip(rng.normal(0, 0.3, (3, 32, 32, 3)), -1, 1).astype(np.float32)
  noise = rng.normal(size=clean.shape).astype(np.float32)
  psnrs, ssims = [], []
  for sigma in (0.01, 0.03, 0.1, 0.3):
    noisy = np.clip(clean + sigma * noise, -1, 1)
    psnrs.append(em.psnr(noisy, clean))
    ssims.append(em.ssim(noisy, clean))
  assert all(x > y for x, y in zip(psnrs, psnrs[1:])), psnrs
  assert all(x > y for x, y in zip(ssims, ssims[1:])), ssims
  # sigma 0.01 on [-1, 1] = 0.005 on [0, 1]: PSNR ~ 46 dB (clipping only lowers the error).
  assert 45.0 < psnrs[0] < 47.5


def test_temporal_jitter():
  black = np.zeros((1, 8, 8, 3), np.uint8)
  white = np.full((1, 8, 8, 3), 255, np.uint8)
  flicker = np.concatenate([black, white, black, white])
  assert em.temporal_jitter(flicker) == pytest.approx(1.0)
  slow = np.concatenate([black, black + 51, black + 102])      # 0.2 per step
  assert em.temporal_jitter(slow) == pytest.approx(0.2)
  assert em.jitter_ratio(flicker, slow) == pytest.approx(5.0)
  with pytest.warns(RuntimeWarning, match='static'):
    assert math.isnan(em.jitter_ratio(flicker, np.concatenate([black, black])))


# ----- correlation and lip sync -------------------------------------------------------------------

def _mouth_series(n=120, seed=0):
  """Smooth speech-like opening in [0, 1] with closures."""
  rng = np.random.default_rng(seed)
  x = np.convolve(rng.uniform(-0.6, 1.0, n + 8), np.ones(5) / 5, mode='valid')[:n]
  return np.clip(x, 0.0, 1.0)


def test_pearson():
  a = _mouth_series()
  assert em.pearson(a, a) == pytest.approx(1.0)
  assert em.pearson(a, -2 * a + 3) == pytest.approx(-1.0)
  with pytest.warns(RuntimeWarning, match='constant'):
    assert math.isnan(em.pearson(a, np.ones_like(a)))
  with pytest.raises(ValueError, match='lengths differ'):
    em.pearson(a, a[:-1])


def test_shifted_series_correlates_less_and_lag_is_found():
  ref = _mouth_series(200)
  shifted = np.roll(ref, 3)                       # generated mouth 3 frames late
  aligned = em.pearson(ref, ref)
  late = em.pearson(shifted, ref)
  assert late < aligned - 0.05
  lag, r = em.best_lag(shifted, ref, max_lag=5)
  assert lag == 3 and r == pytest.approx(1.0)
  assert em.best_lag(ref, shifted, max_lag=5)[0] == -3


def _draw_mouths(openings, size=64):
  """Frames with a mouth-interior rectangle whose height follows `openings` (0 = closed)."""
  frames = np.full((len(openings), size, size, 3), (180, 140, 120), np.uint8)
  for f, o in zip(frames, openings):
    h = int(round(o * 12))
    if h:
      f[40:40 + h, 22:42] = MOUTH_RGB
  return frames


def test_lip_sync_correlation_from_frames():
  pytest.importorskip('data_prep.synthface_render')
  ref = _mouth_series(60)
  real = _draw_mouths(ref)
  assert em.lip_sync_correlation(real, real) == pytest.approx(1.0)
  series = em.mouth_open_series(real)
  # 20 px wide, round(12 o) px tall, on a 64x64 frame.
  np.testing.assert_allclose(series, 20 * np.round(ref * 12) / 64 ** 2, atol=1e-6)
  late = _draw_mouths(np.roll(ref, 3))
  assert em.lip_sync_correlation(late, real) < em.lip_sync_correlation(real, real) - 0.05
  # [-1, 1] float frames are measured the same way.
  assert em.lip_sync_correlation(real / 127.5 - 1.0, real) == pytest.approx(1.0)


def test_mouth_landmark_distance():
  rng = np.random.default_rng(0)
  real = rng.uniform(20, 100, (5, 68, 2))
  real[:, 36] = (30.0, 50.0)
  real[:, 45] = (90.0, 50.0)                      # inter-ocular distance 60
  assert em.mouth_landmark_distance(real, real) == 0.0
  gen = real.copy()
  gen[:, 48:68] += (3.0, 4.0)                     # every mouth point 5 px off
  gen[:, :48] += 50.0                             # non-mouth points do not count
  assert em.mouth_landmark_distance(gen, real) == pytest.approx(5 / 60)
  assert em.mouth_landmark_distance(2 * gen, 2 * real) == pytest.approx(5 / 60)   # scale-free
  valid = np.array([True, False, False, False, False])
  gen2 = gen.copy()
  gen2[1:, 48:68] += 100.0                        # invalid frames are ignored
  assert em.mouth_landmark_distance(gen2, real, valid) == pytest.approx(5 / 60)
  with pytest.warns(RuntimeWarning, match='no frame'):
    assert math.isnan(em.mouth_landmark_distance(gen, real, np.zeros(5, bool)))


# ----- silence ------------------------------------------------------------------------------------

def _speech_and_pauses():
  """40 frames: speech 0-9, pause 10-19 (digital zero), speech 20-29 with a 2-frame gap at 24-25,
  pause 30-39 with -70 dBFS noise."""
  spf = em.SAMPLES_PER_FRAME
  t = np.arange(40 * spf) / 16000
  audio = 0.3 * np.sin(2 * np.pi * 220 * t)
  audio[10 * spf:20 * spf] = 0.0
  audio[24 * spf:26 * spf] = 0.0
  audio[30 * spf:] = 10 ** (-70 / 20) * np.random.default_rng(0).normal(size=10 * spf)
  return audio.astype(np.float32)


def test_frame_levels_and_silence_mask():
  audio = _speech_and_pauses()
  db = em.frame_rms_dbfs(audio)
  assert db.shape == (40,)
  assert db[0] == pytest.approx(20 * math.log10(0.3 / math.sqrt(2)), abs=0.05)   # sine RMS
  assert db[12] == -math.inf and db[35] == pytest.approx(-70, abs=1)
  # int16 input is read on the same full scale.
  db16 = em.frame_rms_dbfs(np.round(audio * 32768).astype(np.int16))
  assert db16[0] == pytest.approx(db[0], abs=0.01)
  mask = em.silence_mask(audio, 40)
  # Both long pauses without their first/last frame; the 2-frame gap is too short to be a pause.
  expected = np.zeros(40, bool)
  expected[11:19] = True
  expected[31:39] = True
  np.testing.assert_array_equal(mask, expected)
  no_edges = em.silence_mask(audio, 40, edge_frames=0, min_silence_frames=2)
  assert no_edges[10] and no_edges[24] and no_edges[25] and no_edges[39] and not no_edges[9]
  assert not no_edges[23] and not no_edges[26]


def test_mouth_closed_in_silence_rate():
  audio = _speech_and_pauses()
  mouth = np.full(40, 0.05)                       # open while speaking
  mouth[10:20] = 0.0
  mouth[30:40] = 0.0
  assert em.mouth_closed_in_silence_rate(mouth, audio) == 1.0
  mouth[15] = 0.05                                # opens once in the first pause
  mouth[31:33] = 0.02                             # and twice in the second
  assert em.mouth_closed_in_silence_rate(mouth, audio) == pytest.approx(13 / 16)
  mouth[10] = 0.05                                # edge frames are not judged
  assert em.mouth_closed_in_silence_rate(mouth, audio) == pytest.approx(13 / 16)
  with pytest.warns(RuntimeWarning, match='no silent'):
    speech_only = np.sin(np.arange(40 * 640) / 5.0).astype(np.float32)
    assert math.isnan(em.mouth_closed_in_silence_rate(mouth, speech_only))
  with pytest.raises(ValueError, match='audio covers'):
    em.mouth_closed_in_silence_rate(mouth, audio[:20 * 640])


# ----- SyncNet procedure pieces -------------------------------------------------------------------

# python_speech_features 0.6 `mfcc(x, 16000)` of `_psf_signal(6400)` (computed once with the package).
GOLD_ROWS = {
    0: [19.251669801, 17.1101215377, -13.6201176032, -13.6815287632, 13.8233226358, 25.3716505642,
        -1.88564842873, -39.663539688, -43.9351931647, -17.4719808447, 2.10543516865, -7.91378429395,
        -25.6716118394],
    13: [19.580752412, 27.5879218187, -14.4959452722, -28.0616631554, -9.77780687945, 1.4416672362,
         -15.6573038772, -34.9584932403, -19.6416610182, 20.135808485, 42.298541513, 25.4387861421,
         -4.35931743847],
    38: [20.3597946115, 11.8501519316, -23.947924112, -34.70713601, -10.3873379184, 20.0413949314,
         24.6623666284, 3.61241369538, -14.2902977285, -14.1345464476, -4.09291100838, 1.13600557696,
         2.07394659216],
}
GOLD_SUM = [642.589528171, 617.973163813, -739.341886289, -1067.75961824, -234.089767941, 442.207790798,
            17.3202204495, -803.870332895, -752.362550036, 106.308354128, 633.093055267, 205.479455571,
            -439.749419959]
GOLD_SILENT_ROW_C0 = -36.0436533891   # frame 26 is all zeros: log(float eps)


def _psf_signal(n):
  t = np.arange(n) / 16000.0
  x = (8000 * np.sin(2 * np.pi * (200 * t + 900 * t ** 2)) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
       + 3000 * np.sin(2 * np.pi * 1234.5 * t))
  x[4000:4800] = 0
  return np.round(x).astype(np.int16)


def test_mfcc_matches_python_speech_features():
  feat = em.mfcc(_psf_signal(6400), 16000)
  assert feat.shape == (39, 13)                   # 4 per video frame - 1: 1 + ceil((6400 - 400) / 160)
  for i, row in GOLD_ROWS.items():
    np.testing.assert_allclose(feat[i], row, rtol=1e-9, atol=1e-8)
  np.testing.assert_allclose(feat.sum(0), GOLD_SUM, rtol=1e-9, atol=1e-7)
  assert feat[26, 0] == pytest.approx(GOLD_SILENT_ROW_C0, abs=1e-8)
  assert em.mfcc(_psf_signal(300)).shape == (1, 13)   # shorter than one window: one padded frame


def test_lse_offset_search():
  rng = np.random.default_rng(0)
  t, d, k = 60, 32, 4
  base = rng.normal(size=(t + 2 * k, d)).astype(np.float32)
  # video[i] = audio[i - k]: the mouth shows a sound k frames after it is heard (audio leads).
  video = base[0:t]
  audio = base[k:k + t] + 0.01 * rng.normal(size=(t, d)).astype(np.float32)
  r = em.lse_from_embeddings(video, audio, vshift=15)
  assert r['offset'] == k
  assert r['dists'].shape == (t, 31)
  # The last k video windows meet the zero padding (distance |v| ~ sqrt(d)), as in the script.
  edge = np.linalg.norm(video[t - k:] + 1e-6, axis=1).sum() / t
  assert edge < r['lse_d'] < edge + 0.1 and r['lse_c'] > 5.0
  r_rev = em.lse_from_embeddings(audio, video, vshift=15)   # the roles swapped: the other sign
  assert r_rev['offset'] == -k
  aligned = em.lse_from_embeddings(video, video, vshift=15)
  assert aligned['offset'] == 0 and aligned['lse_d'] == pytest.approx(1e-6 * math.sqrt(d), rel=1e-2)
  # Embeddings unrelated to each other: no confident offset.
  noise = em.lse_from_embeddings(video, rng.normal(size=(t, d)).astype(np.float32), vshift=15)
  assert noise['lse_c'] < r['lse_c'] / 5 and noise['lse_d'] > r['lse_d'] * 10


def test_lse_matches_calc_pdist_reference():
  """Against syncnet_python's calc_pdist + evaluate, written with torch as the script does."""
  torch = pytest.importorskip('torch')
  rng = np.random.default_rng(3)
  v = rng.normal(size=(12, 16)).astype(np.float32)
  a = rng.normal(size=(12, 16)).astype(np.float32)
  vshift = 5
  feat1, feat2 = torch.from_numpy(v), torch.from_numpy(a)
  feat2p = torch.nn.functional.pad(feat2, (0, 0, vshift, vshift))
  dists = [torch.nn.functional.pairwise_distance(feat1[[i], :].repeat(2 * vshift + 1, 1),
                                                 feat2p[i:i + 2 * vshift + 1, :]) for i in range(len(feat1))]
  mdist = torch.mean(torch.stack(dists, 1), 1)
  minval, minidx = torch.min(mdist, 0)
  r = em.lse_from_embeddings(v, a, vshift)
  np.testing.assert_allclose(r['dists'], torch.stack(dists).numpy(), rtol=1e-6)
  assert r['offset'] == vshift - int(minidx)
  assert r['lse_d'] == pytest.approx(float(minval), rel=1e-6)
  assert r['lse_c'] == pytest.approx(float(torch.median(mdist) - minval), rel=1e-5)


def test_syncnet_face_crop():
  """The crop of run_pipeline.crop_video: from the box top to 1.8 half-sizes below the centre."""
  frame = np.zeros((160, 160, 3), np.uint8)
  # Box (40, 40, 80, 80): half-size 20, centre (60, 60) -> rows 40..96, columns 32..88.
  frame[40:96, 32:88] = 200
  crop = em.syncnet_face_crop(frame, (40, 40, 80, 80))
  assert crop.shape == (224, 224, 3)
  assert np.all(crop == 200)
  frame[40:96, 32:88] = 0
  assert np.all(em.syncnet_face_crop(frame, (40, 40, 80, 80)) == 0)
  # Near the border the script pads with the value 110.
  edge = em.syncnet_face_crop(np.zeros((100, 100, 3), np.uint8), (0, 0, 40, 40))
  assert edge[0, 0, 0] == 110 and edge[-1, -1, 0] == 0
