"""Evaluation metrics on cases with known answers."""

import math
import warnings

import numpy as np
import pytest

from daetalker_jax import eval_metrics as em
from daetalker_jax import mouth_measure
from daetalker_jax.data import contract
from daetalker_jax.mouth_measure import MOUTH_RGB   # the reserved synthface mouth-interior colour (docs/DATA.md)


# Its module fixtures are built once: pytest-xdist runs the whole module on one worker.
pytestmark = pytest.mark.xdist_group('eval_metrics')


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
  db16 = em.frame_rms_dbfs(contract.float_to_int16(audio))
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
  import torch  # pylint: disable=g-import-not-at-top
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


# ----- strict mouth metrics (docs/EVALUATION.md) --------------------------------------------------------

@pytest.fixture(scope='module')
def synth_clip():
  """A real 6-second synthface clip rendered at 64 px (no video coding): frames and audio."""
  from data_prep import synthface  # pylint: disable=g-import-not-at-top
  clip = synthface.make_clip(0, seconds=6.0, size=64, seed=0)
  frames = np.stack(list(synthface.render_clip(clip['sidecar'])))
  return {'frames': frames, 'audio': clip['audio']}


def _delayed(frames, k):
  """The clip k frames late (k > 0: frame t shows real frame t - k) or early (k < 0), edges repeated."""
  if k >= 0:
    return np.concatenate([frames[:1].repeat(k, 0), frames[:len(frames) - k]])
  return np.concatenate([frames[-k:], frames[-1:].repeat(-k, 0)])


def test_strict_mouth_counts_only_clear_mouth_colours():
  from data_prep import synthface_render
  frame = np.full((40, 40, 3), (180, 140, 120), np.uint8)
  frame[20:24, 10:20] = MOUTH_RGB                                   # 40 px of interior
  frame[19, 10:20] = mouth_measure.TEETH_RGB                        # 10 px of teeth right above it
  frame[2:4, 2:6] = mouth_measure.TEETH_RGB                         # 8 white px far away: not teeth
  frame[30:32, 10:20] = (90 + 18, 10 + 18, 20 + 18)                 # 31 units off: not mouth
  frame[34:36, 10:20] = (90 + 17, 10 + 17, 20 + 17)                 # 29.4 units off: mouth
  m = mouth_measure.strict_mouth(frame)
  assert m['interior'] == pytest.approx(60 / 1600) and m['teeth'] == pytest.approx(10 / 1600)
  assert m['area'] == pytest.approx(70 / 1600)
  # A smear of mouth and lip colours, 47 units from the mouth colour: partly open to the soft reading,
  # closed to the strict one.
  smear = np.full((40, 40, 3), (180, 140, 120), np.uint8)
  smear[20:24, 10:20] = (121, 37, 42)
  assert mouth_measure.strict_mouth(smear)['area'] == 0.0
  assert mouth_measure.measure_frame(smear)['mouth_open'] > 0.0
  closed = synthface_render.render_frame(64, mouth_open=0.0, mouth_width=0.5, blink=0.0, yaw=0, pitch=0, roll=0)
  assert mouth_measure.strict_mouth(closed)['area'] == 0.0         # eye whites are never teeth


def test_strict_metrics_of_an_identical_clip_are_perfect(synth_clip):
  real, audio = synth_clip['frames'], synth_clip['audio']
  m = em.strict_mouth_metrics(real, real.copy(), audio)
  assert m['strict_r'] == pytest.approx(1.0) and m['strict_r_best'] == pytest.approx(1.0)
  assert m['strict_best_lag'] == 0
  assert m['open_recall'] == 1.0 and m['amplitude_ratio'] == 1.0
  assert m['num_open_frames'] >= 8                                  # the clip does open its mouth
  assert m['teeth_recall'] == 1.0 and m['num_teeth_frames'] >= 1
  assert m['closed_in_silence'] == 1.0                              # synthface closes the mouth in pauses
  assert m['soft_r'] == pytest.approx(1.0)
  # The same frames in the model's [-1, 1] range are read the same way.
  f = em.strict_mouth_metrics(real / 127.5 - 1.0, real)
  assert f['open_recall'] == 1.0 and f['strict_r'] == pytest.approx(1.0) and math.isnan(f['closed_in_silence'])


def test_smeared_mouth_fails_strict_but_passes_soft(synth_clip):
  """A blurred copy of the clip: the mouth is a smear that still moves in time. The soft colour windows
  still call it synced; the strict metrics see that the mouth is never clearly open."""
  import cv2  # pylint: disable=g-import-not-at-top
  real = synth_clip['frames']
  smeared = np.stack([cv2.GaussianBlur(f, (0, 0), 2.0) for f in real])    # sigma 2 px at 64 px
  m = em.strict_mouth_metrics(smeared, real, synth_clip['audio'])
  assert m['soft_r'] > 0.6, m                                       # the lenient score: "in sync"
  assert m['open_recall'] < 0.2 and m['amplitude_ratio'] < 0.2, m   # the strict score: not open
  assert m['teeth_recall'] < 0.5, m
  assert m['soft_r'] - m['open_recall'] > 0.5                       # the two readings disagree


def test_strict_best_lag_follows_a_shift(synth_clip):
  """best_lag's sign: +k = the generated mouth trails the real one by k frames (gen[t + k] ~ real[t])."""
  real = synth_clip['frames']
  for k in (1, 2, -1):
    m = em.strict_mouth_metrics(_delayed(real, k), real)
    assert m['strict_best_lag'] == k, (k, m)
    assert m['strict_r_best'] > m['strict_r'] and m['strict_r_best'] > 0.95, (k, m)
  # Further than the +-2 search: the best lag sits at the edge, short of the true shift.
  assert em.strict_mouth_metrics(_delayed(real, 4), real)['strict_best_lag'] == 2


def test_strict_metrics_degenerate_clips():
  closed = _draw_mouths(np.zeros(10))
  moving = _draw_mouths(np.linspace(0, 1, 10))
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    m = em.strict_mouth_scores(em.strict_mouth_series(moving), em.strict_mouth_series(closed))
  assert any('never open' in str(w.message) for w in caught)
  assert math.isnan(m['open_recall']) and math.isnan(m['amplitude_ratio']) and m['num_open_frames'] == 0
  assert math.isnan(m['strict_r'])                                  # nothing to follow: r is undefined
  # A generated mouth that never opens against a real one that does: r 0, recall 0 (not nan).
  with pytest.warns(RuntimeWarning, match='teeth never show'):      # (no teeth drawn at all)
    m = em.strict_mouth_scores(em.strict_mouth_series(closed), em.strict_mouth_series(moving))
  assert m['strict_r'] == 0.0 and m['strict_r_best'] == 0.0 and m['open_recall'] == 0.0
  assert m['amplitude_ratio'] == 0.0 and m['num_open_frames'] > 0


def test_mouth_strip_shows_the_most_open_frames_in_time_order(tmp_path):
  openings = np.array([0.1, 0.9, 0.0, 0.5, 1.0, 0.2, 0.7, 0.3])
  real = _draw_mouths(openings)                                      # 64 px
  gen = real.copy()
  gen[:, 0, 0] = np.arange(len(gen))[:, None] * 20                 # tag every generated frame
  strip = em.mouth_strip(gen, real, k=3, pad=2)
  assert strip.shape == (2 * 66 + 2, 3 * 66 + 2, 3) and strip.dtype == np.uint8
  idx = [1, 4, 6]                                                   # the 3 widest, in time order
  np.testing.assert_array_equal(em.most_open_frames(em.strict_mouth_series(real)['area'], 3), idx)
  for j, t in enumerate(idx):
    x = 2 + j * 66
    np.testing.assert_array_equal(strip[2:66, x:x + 64], gen[t])    # generated on top
    np.testing.assert_array_equal(strip[68:132, x:x + 64], real[t])  # real below
  three = em.mouth_strip([gen, gen], real, k=20)                    # two generated rows; k > N: all frames
  assert three.shape == (3 * 66 + 2, 8 * 66 + 2, 3)
  big = em.mouth_strip(np.repeat(np.repeat(gen, 4, 1), 4, 2), np.repeat(np.repeat(real, 4, 1), 4, 2), k=2)
  assert big.shape == (2 * 130 + 2, 2 * 130 + 2, 3)                # 256 px frames shrunk to 128
  with pytest.raises(ValueError, match='shapes differ'):
    em.mouth_strip(gen[:-1], real)


def test_saved_mouth_strip_is_a_small_png(synth_clip, tmp_path):
  from PIL import Image
  real = synth_clip['frames']
  noisy = np.clip(real + np.random.default_rng(0).normal(0, 8, real.shape), 0, 255).astype(np.uint8)
  strip = em.save_mouth_strip(tmp_path / 'mouths.png', noisy, real)
  assert strip.shape == (2 * 66 + 2, 8 * 66 + 2, 3)
  np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / 'mouths.png')), strip)
  assert (tmp_path / 'mouths.png').stat().st_size < 200_000
  # The columns are the 8 frames where the real strict mouth is widest, in time order.
  area = em.strict_mouth_series(real)['area']
  idx = em.most_open_frames(area)
  assert len(idx) == 8 and np.all(np.diff(idx) > 0) and area[idx].min() == np.sort(area)[-8]
  np.testing.assert_array_equal(strip[68:132, 2:66], real[idx[0]])
