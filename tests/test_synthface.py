"""Tests of the synthetic talking face: files, lengths, ground truth read back from decoded mp4s."""
import json
import pathlib

import cv2
import numpy as np
import pytest

from data_prep import espeak
from data_prep import synthface
from data_prep import synthface_render

CLIPS, SECONDS, SIZE = 2, 3.0, 64


# Its module fixtures are built once: pytest-xdist runs the whole module on one worker.
pytestmark = pytest.mark.xdist_group('synthface')


@pytest.fixture(scope='module')
def datasets(tmp_path_factory):
  """Seed 0 twice (2 workers, then 1 in-process) and seed 1 once; each made exactly once."""
  root = tmp_path_factory.mktemp('synthface')
  a = root / 'a'
  synthface.generate_dataset(a, CLIPS, SECONDS, SIZE, seed=0, workers=2)
  b = root / 'b'
  synthface.generate_dataset(b, CLIPS, SECONDS, SIZE, seed=0, workers=1)
  c = root / 'c'
  synthface.generate_dataset(c, 1, SECONDS, SIZE, seed=1, workers=1)
  return {'a': a, 'b': b, 'c': c, 'root': root}


def _clip(d: pathlib.Path, i: int):
  stem = d / f'synth_{i:04d}'
  sidecar = json.loads(stem.with_suffix('.json').read_text())
  return stem, sidecar


def _measure_mp4(stem):
  return [synthface.measure_frame(f) for f in synthface.read_mp4_frames(stem.with_suffix('.mp4'))]


def test_files_and_lengths(datasets):
  d = datasets['a']
  names = sorted(p.name for p in d.iterdir())
  expected = [f'synth_{i:04d}.{ext}' for i in range(CLIPS) for ext in ('json', 'mp4', 'wav')]
  assert names == sorted(expected)
  assert sorted(p.name for p in datasets['root'].iterdir()) == ['a', 'b', 'c']  # no temp dirs left
  for i in range(CLIPS):
    stem, sc = _clip(d, i)
    n = sc['num_frames']
    assert n == int(SECONDS * 25)
    assert (sc['clip_id'], sc['fps'], sc['sample_rate'], sc['size']) == (
        f'synth_{i:04d}', 25, 16000, SIZE)
    assert set(sc['frames']) == {
        'mouth_open', 'mouth_width', 'blink', 'yaw', 'pitch', 'roll', 'phoneme', 'landmarks'}
    assert all(len(v) == n for v in sc['frames'].values())
    assert sc['text'] and sc['voice']['name']
    wav = synthface.read_wav(stem.with_suffix('.wav'))
    assert len(wav) == n * synthface.SAMPLES_PER_FRAME  # exact
    assert np.abs(wav).max() > 1000  # there is speech
    frames = synthface.read_mp4_frames(stem.with_suffix('.mp4'))
    assert frames.shape == (n, SIZE, SIZE, 3)
    audio = synthface.read_mp4_audio(stem.with_suffix('.mp4'))
    assert abs(len(audio) - len(wav)) <= 1024  # AAC priming / last-frame padding
    m = min(len(audio), len(wav))
    assert np.corrcoef(audio[:m].astype(float), wav[:m].astype(float))[0, 1] > 0.9


def test_pose_and_blink_ranges(datasets):
  for i in range(CLIPS):
    f = _clip(datasets['a'], i)[1]['frames']
    for name, limit in (('yaw', 15), ('pitch', 10), ('roll', 8)):
      x = np.asarray(f[name])
      assert np.abs(x).max() <= limit and x.std() > 0.3
      assert np.abs(np.diff(x)).max() < 2.0  # smooth: under 2 degrees per frame
    blink = np.asarray(f['blink'])
    assert blink.max() == 1.0 and blink.min() == 0.0


def test_mouth_opening_read_back_from_mp4(datasets):
  for i in range(CLIPS):
    stem, sc = _clip(datasets['a'], i)
    measured = np.array([m['mouth_open'] for m in _measure_mp4(stem)])
    truth = np.asarray(sc['frames']['mouth_open'])
    r = np.corrcoef(measured, truth)[0, 1]
    assert r >= 0.9, f'clip {i}: Pearson r {r:.3f}'


def test_roll_and_yaw_read_back_from_mp4(datasets):
  for i in range(CLIPS):
    stem, sc = _clip(datasets['a'], i)
    ms = _measure_mp4(stem)
    roll = np.array([m['roll'] for m in ms])
    found = ~np.isnan(roll)
    assert found.mean() > 0.8  # irises are missing only around blinks
    truth = np.asarray(sc['frames']['roll'])
    err = np.abs(roll[found] - truth[found]).mean()
    assert err <= 2.0, f'clip {i}: roll mean abs error {err:.2f} deg'
    yaw = np.array([m['yaw_proxy'] for m in ms])[found]
    assert np.corrcoef(yaw, np.asarray(sc['frames']['yaw'])[found])[0, 1] > 0.9


def test_measurement_survives_jpeg(datasets):
  """The prepared dataset stores JPEG crops: re-encode the decoded frames and measure again."""
  stem, sc = _clip(datasets['a'], 0)
  ms = []
  for f in synthface.read_mp4_frames(stem.with_suffix('.mp4')):
    jpg = cv2.imencode('.jpg', f[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 85])[1]
    rgb = np.ascontiguousarray(cv2.imdecode(jpg, cv2.IMREAD_COLOR)[..., ::-1])
    ms.append(synthface.measure_frame(rgb))
  mouth = np.array([m['mouth_open'] for m in ms])
  assert np.corrcoef(mouth, sc['frames']['mouth_open'])[0, 1] >= 0.9
  roll = np.array([m['roll'] for m in ms])
  found = ~np.isnan(roll)
  assert np.abs(roll[found] - np.asarray(sc['frames']['roll'])[found]).mean() <= 2.0


def test_silence_keeps_the_mouth_closed(datasets):
  count = 0
  for i in range(CLIPS):
    stem, sc = _clip(datasets['a'], i)
    centres = (np.arange(sc['num_frames']) + 0.5) / 25
    gap = np.full(len(centres), np.inf)  # seconds to the nearest spoken phoneme
    for _, start, stop in sc['phonemes']:
      gap = np.minimum(gap, np.maximum(0.0, np.maximum(start - centres, centres - stop)))
    labels = np.asarray(sc['frames']['phoneme'])
    assert np.all(labels[gap > 0] == '_')
    silent = gap >= 0.1
    count += silent.sum()
    assert np.all(np.asarray(sc['frames']['mouth_open'])[silent] == 0.0)
    measured = np.array([m['mouth_open'] for m in _measure_mp4(stem)])
    assert measured[silent].max() < 2e-4  # speaking frames measure ~1e-2
    speaking = np.asarray(sc['frames']['mouth_open']) > 0.5
    assert speaking.any() and measured[speaking].min() > 5e-3
  assert count >= 5


def test_mouth_follows_the_audio_without_lag(datasets):
  """The cross-correlation of audio loudness and mouth opening peaks within one frame of lag 0."""
  for i in range(CLIPS):
    stem, sc = _clip(datasets['a'], i)
    n = sc['num_frames']
    wav = synthface.read_wav(stem.with_suffix('.wav')).astype(np.float64)
    rms = np.sqrt((wav.reshape(n, -1) ** 2).mean(1))
    mouth = np.asarray(sc['frames']['mouth_open'])
    a, b = (rms - rms.mean()) / rms.std(), (mouth - mouth.mean()) / mouth.std()
    lags = np.arange(-6, 7)
    xc = [np.mean(a[max(0, l):n + min(0, l)] * b[max(0, -l):n - max(0, l)]) for l in lags]
    assert abs(lags[int(np.argmax(xc))]) <= 1 and max(xc) > 0.5, (i, np.round(xc, 2))


def test_same_seed_same_bytes_other_seed_differs(datasets):
  for i in range(CLIPS):
    for ext in ('mp4', 'json', 'wav'):
      a = (datasets['a'] / f'synth_{i:04d}.{ext}').read_bytes()
      b = (datasets['b'] / f'synth_{i:04d}.{ext}').read_bytes()
      assert a == b, f'synth_{i:04d}.{ext} differs between runs with the same seed'
  for ext in ('mp4', 'json', 'wav'):
    assert ((datasets['a'] / f'synth_0000.{ext}').read_bytes() !=
            (datasets['c'] / f'synth_0000.{ext}').read_bytes())
  assert _clip(datasets['a'], 0)[1]['text'] != _clip(datasets['a'], 1)[1]['text']


def test_existing_output_and_bad_arguments(datasets, tmp_path):
  with pytest.raises(FileExistsError, match='not empty'):
    synthface.generate_dataset(datasets['a'], 1, 1.0, SIZE, seed=0, workers=1)
  with pytest.raises(ValueError, match='even'):
    synthface.generate_dataset(tmp_path / 'x', 1, 1.0, 63, seed=0, workers=1)
  with pytest.raises(ValueError, match='uint8'):
    synthface.measure_frame(np.zeros((8, 8, 3), np.float32))
  with pytest.raises(ValueError, match='unknown voice'):
    espeak.synthesize('hello', voice='no-such-voice')
  assert not (tmp_path / 'x').exists()


def test_overwrite_replaces_atomically(tmp_path):
  out = tmp_path / 'out'
  synthface.generate_dataset(out, 1, 1.0, 32, seed=3, workers=1)
  first = (out / 'synth_0000.json').read_bytes()
  synthface.generate_dataset(out, 1, 1.0, 32, seed=4, workers=1, overwrite=True)
  assert (out / 'synth_0000.json').read_bytes() != first
  assert sorted(p.name for p in tmp_path.iterdir()) == ['out']


def test_crash_leaves_no_partial_dataset(tmp_path, monkeypatch):
  real = synthface.write_clip

  def crash_on_second(out_dir, index, **kw):
    if index == 1:
      raise RuntimeError('simulated crash')
    return real(out_dir, index, **kw)

  monkeypatch.setattr(synthface, 'write_clip', crash_on_second)
  with pytest.raises(RuntimeError, match='simulated'):
    synthface.generate_dataset(tmp_path / 'out', 2, 1.0, 32, seed=0, workers=1)
  assert list(tmp_path.iterdir()) == []  # neither the output nor the temp folder


def test_cli_rejects_bad_size(tmp_path, capsys):
  with pytest.raises(SystemExit) as e:
    synthface.main(['--out', str(tmp_path / 'o'), '--size', '65'])
  assert e.value.code == 2 and 'even' in capsys.readouterr().err


def test_palette_stays_out_of_reserved_colour_windows():
  colours = list(synthface_render.PALETTE.values()) + list(synthface_render.BACKGROUND_RGB)
  for name, rgb in synthface_render.RESERVED.items():
    hi = synthface_render.TOLERANCE[name][1]
    for c in colours:
      assert np.linalg.norm(np.subtract(c, rgb)) > hi + 10, (name, c)
  bg = synthface_render.background(96).reshape(-1, 3).astype(float)
  for name, rgb in synthface_render.RESERVED.items():
    assert np.linalg.norm(bg - rgb, axis=1).min() > synthface_render.TOLERANCE[name][1] + 10


@pytest.mark.parametrize('size', [32, 64, 128, 256])
def test_measure_rendered_frames(size):
  def render(**kw):
    pose = dict(mouth_open=0.0, mouth_width=0.5, blink=0.0, yaw=0.0, pitch=0.0, roll=0.0)
    pose.update(kw)
    return synthface_render.render_frame(size, **pose)
  opening = [synthface.measure_frame(render(mouth_open=o))['mouth_open'] for o in (0, .3, .6, .9)]
  assert opening[0] == 0.0 and opening[3] > opening[2] > 0, opening
  if size >= 64:  # at 32 px a 0.3 opening is about one pixel high
    assert opening[2] > opening[1] > 0, opening
  closed = synthface.measure_frame(render(blink=1.0))
  assert closed['iris_left'] is None and closed['iris_right'] is None and np.isnan(closed['roll'])
  if size >= 64:
    for yaw, pitch, roll in ((15, 10, 8), (-15, -10, -8), (5, -10, 3)):
      m = synthface.measure_frame(render(yaw=yaw, pitch=pitch, roll=roll, mouth_open=0.5))
      assert abs(m['roll'] - roll) < 1.5, (yaw, pitch, roll, m['roll'])
      assert np.sign(m['yaw_proxy']) == np.sign(yaw)


def test_visemes_and_tracks():
  assert synthface.viseme('p')[0] == synthface.viseme('m')[0] == synthface.viseme('_:')[0] == 0.0
  assert synthface.viseme('f')[0] < 0.15
  assert synthface.viseme('A:')[0] > synthface.viseme('E')[0] > synthface.viseme('i:')[0]
  assert synthface.viseme('u:')[1] < 0.3 < synthface.viseme('i:')[1]  # rounded narrow, spread wide
  tracks = synthface.viseme_tracks([('A:', 0.4, 0.8), ('m', 0.8, 1.0)], num_frames=50)
  mo = tracks['mouth_open']
  assert mo[:5].max() == 0.0 and mo[15] > 0.9 and mo[-10:].max() == 0.0
  assert (tracks['phoneme'][0], tracks['phoneme'][15], tracks['phoneme'][22]) == ('_', 'A:', 'm')
  blink = synthface.blink_track(synthface.clip_rng(0, 0), 25 * 30)
  starts = np.flatnonzero(np.diff((blink > 0.9).astype(int)) == 1) / 25
  assert len(starts) >= 4 and np.diff(starts).min() >= 1.9 and np.diff(starts).max() <= 6.1


def test_espeak_phoneme_events_and_reproducibility():
  def speak(history):
    with espeak.Speaker() as speaker:
      for text in history:
        speaker.synthesize(text, voice='en+f3')
      return speaker.synthesize('Bob opens the map.', voice='en-us', rate=170, pitch=50)
  utt = speak([])
  # A fresh Speaker reproduces the samples exactly; history in another engine does not matter.
  espeak.synthesize('Something else first.', voice='en+m3')
  assert np.array_equal(speak([]).audio, utt.audio)
  assert speak(['A different history.']).phonemes  # (its samples may differ: engine state)
  assert utt.sample_rate == 22050 and len(utt.audio) > 0.5 * utt.sample_rate
  times = [p.start_ms for p in utt.phonemes]
  assert times == sorted(times) and times[-1] <= 1000 * len(utt.audio) / utt.sample_rate
  names = [p.name for p in utt.phonemes]
  assert 'b' in names and 'm' in names and 'p' in names


def _box(points, pad=0.0):
  return points.min(0) - pad, points.max(0) + pad


@pytest.mark.parametrize('size', [64, 128])
def test_landmarks_follow_the_drawn_face(size):
  """The 68 landmarks sit on what render_frame draws: the mouth inside the lip points, irises in the eyes."""
  rng = np.random.default_rng(size)
  for k in range(8):
    kw = dict(mouth_open=[0.0, 0.3, 0.6, 0.9][k % 4], mouth_width=rng.uniform(0, 1), blink=0.0,
              yaw=rng.uniform(-15, 15), pitch=rng.uniform(-10, 10), roll=rng.uniform(-8, 8))
    img = synthface_render.render_frame(size, **kw)
    lm = synthface_render.face_landmarks(size, **kw)
    assert lm.shape == (68, 2) and lm.dtype == np.float32
    dist = np.linalg.norm(img.astype(float) - synthface_render.MOUTH_RGB, axis=-1)
    ys, xs = np.nonzero(dist <= synthface_render.STRICT_DISTANCE)
    if kw['mouth_open'] > 0:
      assert len(xs) > 0
      lo, hi = _box(lm[60:68], pad=1.0)       # the inner lip points enclose the open mouth
      inside = (xs >= lo[0]) & (xs <= hi[0]) & (ys >= lo[1]) & (ys <= hi[1])
      assert inside.mean() > 0.97, (kw, inside.mean())
      lo, hi = _box(lm[48:60])
      assert hi[1] - lo[1] > (_box(lm[60:68])[1] - _box(lm[60:68])[0])[1]   # outer lips taller than inner
    else:
      assert len(xs) == 0 and np.ptp(lm[60:68, 1]) < 0.1 * size       # closed: inner lips meet
    m = synthface.measure_frame(img)
    for iris, eye in ((m['iris_left'], lm[36:42]), (m['iris_right'], lm[42:48])):
      lo, hi = _box(eye, pad=1.0)
      assert lo[0] <= iris[0] <= hi[0] and lo[1] <= iris[1] <= hi[1], (kw, iris, lo, hi)
    # Reading order: jaw left → right through the chin, nose tip below the eyes, mouth below the nose.
    assert lm[0, 0] < lm[8, 0] < lm[16, 0] and lm[8, 1] > lm[57, 1] > lm[33, 1] > lm[27, 1]
    assert lm[36, 0] < lm[39, 0] < lm[42, 0] < lm[45, 0] and lm[48, 0] < lm[54, 0]


def test_sidecar_carries_landmarks(datasets):
  _, sidecar = _clip(datasets['a'], 0)
  lm = np.asarray(sidecar['frames']['landmarks'])
  assert lm.shape == (sidecar['num_frames'], 68, 2)
  f = sidecar['frames']
  i = int(np.argmax(f['mouth_open']))
  want = synthface_render.face_landmarks(SIZE, **{k: f[k][i] for k in synthface._POSE_KEYS})
  np.testing.assert_allclose(lm[i], want, atol=0.006)
