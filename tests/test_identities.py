"""Generic identities: synthface `--identities N`, the prepared dataset's `identity` and `--split-by identity`.

Six identities over eight 2-second 64 px clips (clips 6 and 7 reuse identities 0 and 1): the drawn colours
keep clear of the three reserved colours (as parameters, in rendered frames and in the decoded mp4s),
`measure_frame` reads every identity's mouth and irises against the sidecar, identity k is the same person
in every clip, and `data_prep.prepare --split-by identity` keeps each person in one split. Also: datasets
prepared before identities still load (identity '') and feed the pipelines.
"""
import json
import pathlib

import numpy as np
import pytest

from daetalker_jax.data import dataset
from daetalker_jax.data import pipelines
from data_prep import prepare
from data_prep import synthface
from data_prep import synthface_render as render
from tests import _videos

N_IDS, CLIPS, SECONDS, SIZE = 6, 8, 2.0, 64


# Its module fixtures are built once: pytest-xdist runs the whole module on one worker.
pytestmark = pytest.mark.xdist_group('identities')


POSES = [dict(mouth_open=0.0, mouth_width=0.5, blink=0.0, yaw=0.0, pitch=0.0, roll=0.0),
         dict(mouth_open=0.9, mouth_width=0.9, blink=0.0, yaw=15.0, pitch=10.0, roll=8.0),
         dict(mouth_open=0.5, mouth_width=0.1, blink=0.3, yaw=-15.0, pitch=-10.0, roll=-8.0),
         dict(mouth_open=0.3, mouth_width=0.6, blink=1.0, yaw=6.0, pitch=-4.0, roll=3.0)]


@pytest.fixture(scope='module')
def videos(tmp_path_factory) -> pathlib.Path:
  out = tmp_path_factory.mktemp('identities') / 'videos'
  synthface.generate_dataset(out, CLIPS, SECONDS, SIZE, seed=0, workers=1, identities=N_IDS)
  return out


@pytest.fixture(scope='module')
def prepared(videos, tmp_path_factory):
  out = tmp_path_factory.mktemp('identities_data') / 'data'
  report = prepare.prepare(videos, out, size=32, split_by='identity', val_fraction=0.17, test_fraction=0.17,
                           seed=0)  # no --crop: the sidecar sources resolve to 'none'
  return out, report


def _sidecar(videos: pathlib.Path, i: int) -> dict:
  return json.loads((videos / f'synth_{i:04d}.json').read_text())


def _features_mask(lm: np.ndarray, size: int, pad: float) -> np.ndarray:
  """True outside the mouth (landmarks 48-67) and eye (36-41, 42-47) boxes grown by `pad` pixels."""
  mask = np.ones((size, size), bool)
  for part in (slice(48, 68), slice(36, 42), slice(42, 48)):
    lo = np.floor(lm[part].min(0) - pad).astype(int).clip(0, size)
    hi = np.ceil(lm[part].max(0) + pad).astype(int).clip(0, size - 1)
    mask[lo[1]:hi[1] + 1, lo[0]:hi[0] + 1] = False
  return mask


def _reserved_distance(img: np.ndarray, mask: np.ndarray) -> dict[str, float]:
  """The least RGB distance of the masked pixels from each reserved colour."""
  px = img.reshape(-1, 3)[mask.ravel()].astype(np.float64)
  return {name: float(np.linalg.norm(px - rgb, axis=1).min()) for name, rgb in render.RESERVED.items()}


# ----------------------------------------------------------------------------------------------
# The identity draw.


def test_identity_depends_on_seed_and_k_only():
  a = render.draw_identity(0, 3)
  assert a == render.draw_identity(0, 3) == json.loads(json.dumps(a))   # reproducible, JSON-exact
  assert a != render.draw_identity(0, 4) and a != render.draw_identity(1, 3)
  assert set(a) == set(render.DEFAULT_IDENTITY) and set(a['palette']) == set(render.PALETTE)
  with pytest.raises(ValueError, match='>= 0'):
    render.draw_identity(0, -1)
  with pytest.raises(ValueError, match='bad identity parameters'):
    render.render_frame(32, identity={'palette': {}}, **POSES[0])


def test_identity_colours_clear_of_reserved_colours():
  margins = render.reserved_margins()
  assert all(margins[n] >= max(60.0, render.TOLERANCE[n][1] + 10) for n in render.RESERVED)
  assert render.colour_problems(None) == []  # the default look passes the same rule
  skins = []
  for k in range(24):
    ident = render.draw_identity(0, k)
    assert render.colour_problems(ident) == [], k
    for cname, c in render.identity_colours(ident).items():
      for name, rgb in render.RESERVED.items():
        d = np.linalg.norm(np.subtract(c, rgb))
        assert d >= margins[name] > render.STRICT_DISTANCE, (k, cname, c, name, d)
    texture = render.background(96, ident['background']).reshape(-1, 3).astype(np.float64)
    for name, rgb in render.RESERVED.items():
      assert np.linalg.norm(texture - rgb, axis=1).min() > render.TOLERANCE[name][1], (k, name)
    skins.append(ident['palette']['skin'])
  skins = np.asarray(skins, np.float64)
  assert np.ptp(skins.mean(1)) > 60  # light to medium brown, not one tone
  # A colour near a reserved one is named by the rule.
  bad = json.loads(json.dumps(render.DEFAULT_IDENTITY))
  bad['palette']['hair'] = [80, 20, 30]
  assert any(p.startswith('hair') and 'mouth' in p for p in render.colour_problems(bad))


def test_rendered_identities_use_reserved_colours_only_in_mouth_and_eyes():
  """No pixel outside the mouth and eye boxes is within the measuring windows (so also not within the strict
  30) of a reserved colour, for every identity, size and pose."""
  for k in range(N_IDS):
    ident = render.draw_identity(0, k)
    for size in (32, 64, 128):
      for pose in POSES:
        img = render.render_frame(size, identity=ident, **pose)
        lm = render.face_landmarks(size, identity=ident, **pose)
        d = _reserved_distance(img, _features_mask(lm, size, pad=1.5))
        for name, dist in d.items():
          assert dist > max(render.TOLERANCE[name][1], render.STRICT_DISTANCE), (k, size, pose, name, dist)


def test_identity_shapes_the_face():
  """The drawn geometry reaches the landmarks and the pixels: irises inside the eye points, mouth measured."""
  looks = [render.draw_identity(0, k) for k in range(N_IDS)]
  pose = dict(mouth_open=0.6, mouth_width=0.5, blink=0.0, yaw=0.0, pitch=0.0, roll=0.0)
  eye_gap = []
  for ident in looks:
    img = render.render_frame(128, identity=ident, **pose)
    lm = render.face_landmarks(128, identity=ident, **pose)
    m = render.measure_frame(img)
    for iris, eye in ((m['iris_left'], lm[36:42]), (m['iris_right'], lm[42:48])):
      assert np.all(eye.min(0) - 1 <= iris) and np.all(iris <= eye.max(0) + 1)
    assert m['mouth_open'] > 0 and abs(m['roll']) < 0.5
    eye_gap.append(m['iris_right'][0] - m['iris_left'][0])
  assert np.ptp(eye_gap) > 3  # eye spacing and face width differ between people (pixels at 128)
  frames = [render.render_frame(64, identity=ident, **pose).astype(int) for ident in looks]
  assert all(np.abs(frames[i] - frames[j]).mean() > 5 for i in range(N_IDS) for j in range(i))


# ----------------------------------------------------------------------------------------------
# Clips with identities.


def test_default_look_is_unchanged(tmp_path):
  for pose in POSES[:2]:
    np.testing.assert_array_equal(render.render_frame(64, **pose),
                                  render.render_frame(64, identity=render.DEFAULT_IDENTITY, **pose))
  plain = synthface.make_clip(0, seconds=0.4, size=32, seed=0)
  assert not {'identity', 'identity_name', 'identities', 'identity_params'} & set(plain['sidecar'])
  one = synthface.make_clip(0, seconds=0.4, size=32, seed=0, identities=3)
  np.testing.assert_array_equal(one['audio'], plain['audio'])   # speech and motion do not depend on N
  assert one['sidecar']['frames']['mouth_open'] == plain['sidecar']['frames']['mouth_open']
  assert one['sidecar']['identity_params'] == render.draw_identity(0, 0)
  with pytest.raises(ValueError, match='--identities'):
    synthface.generate_dataset(tmp_path / 'x', 1, 0.4, 32, seed=0, workers=1, identities=0)
  assert not (tmp_path / 'x').exists()


def test_sidecars_name_the_identity(videos):
  sides = [_sidecar(videos, i) for i in range(CLIPS)]
  for i, sc in enumerate(sides):
    k = i % N_IDS
    assert (sc['identity'], sc['identities'], sc['identity_name']) == (k, N_IDS, f'synth_s0_id{k:03d}')
    assert sc['identity_params'] == render.draw_identity(0, k)
  # Identity k is the same person in clips k and k + 6: same parameters, same pixels for the same pose.
  for a, b in ((0, 6), (1, 7)):
    assert sides[a]['identity_params'] == sides[b]['identity_params']
    np.testing.assert_array_equal(render.render_frame(SIZE, identity=sides[a]['identity_params'], **POSES[1]),
                                  render.render_frame(SIZE, identity=sides[b]['identity_params'], **POSES[1]))
  assert sides[0]['identity_params'] != sides[1]['identity_params']
  # ... and in the decoded videos: the background corner (never covered by the head) matches.
  corner = lambda i: synthface.read_mp4_frames(videos / f'synth_{i:04d}.mp4')[:, :5, :5].astype(float).mean((0, 1, 2))
  c0, c6, c1 = corner(0), corner(6), corner(1)
  assert np.abs(c0 - c6).max() < 3 and np.abs(c0 - c1).max() > 10


def test_measure_frame_reads_every_identity(videos):
  """Mouth area against the sidecar's mouth_open, irises inside the sidecar's eye landmarks, roll; and no
  reserved colour outside the mouth and eyes of the decoded h264 frames."""
  for i in range(CLIPS):
    sc = _sidecar(videos, i)
    frames = synthface.read_mp4_frames(videos / f'synth_{i:04d}.mp4')
    ms = [render.measure_frame(f) for f in frames]
    mouth = np.array([m['mouth_open'] for m in ms])
    truth = np.asarray(sc['frames']['mouth_open'])
    assert np.corrcoef(mouth, truth)[0, 1] >= 0.9, (i, np.corrcoef(mouth, truth)[0, 1])
    assert mouth[truth == 0].max(initial=0) < 2e-4
    lms = np.asarray(sc['frames']['landmarks'])
    roll = np.array([m['roll'] for m in ms])
    found = ~np.isnan(roll)
    assert found.mean() > 0.8
    assert np.abs(roll[found] - np.asarray(sc['frames']['roll'])[found]).mean() <= 2.0, i
    for m, lm, ok in zip(ms, lms, found):
      if ok:
        for iris, eye in ((m['iris_left'], lm[36:42]), (m['iris_right'], lm[42:48])):
          assert np.all(eye.min(0) - 1.5 <= iris) and np.all(iris <= eye.max(0) + 1.5), (i, iris, eye)
    for f, lm in zip(frames[::5], lms[::5]):
      d = _reserved_distance(f, _features_mask(lm, SIZE, pad=3))
      assert min(d.values()) > render.STRICT_DISTANCE, (i, d)


# ----------------------------------------------------------------------------------------------
# The prepared dataset.


def test_prepare_splits_by_identity(videos, prepared):
  out, report = prepared
  clips = {s: list(dataset.iterate_clips(out, s)) for s in dataset.SPLITS}
  people = {s: {c['identity'] for c in cs} for s, cs in clips.items()}
  for c in (c for cs in clips.values() for c in cs):  # the clip's identity is its sidecar's
    assert c['identity'] == json.loads(pathlib.Path(c['source']).with_suffix('.json').read_text())['identity_name']
  assert all(people[a].isdisjoint(people[b]) for a in people for b in people if a < b)
  assert (len(people['train']), len(people['val']), len(people['test'])) == (4, 1, 1)
  assert set().union(*people.values()) == {f'synth_s0_id{k:03d}' for k in range(N_IDS)}
  expected = {s: sorted(v) for s, v in people.items()}
  assert report['identities'] == expected and report['split_by'] == 'identity'
  manifest = json.loads((out / 'manifest.json').read_text())
  assert manifest['identities'] == expected and manifest['settings']['split_by'] == 'identity'
  assert {s['crop'] for s in manifest['sources']} == {'none'} and report['crop'] == 'none'
  info = dataset.dataset_info(out)
  assert info['split_by'] == 'identity' and info['identities'] == expected and info['crop'] == 'none'
  # Clips 0 and 6 show identity 0: they land in the same split.
  split_of = {c['clip_id']: s for s, cs in clips.items() for c in cs}
  assert split_of['synth_0000_000'] == split_of['synth_0006_000']
  b = next(pipelines.frames_pipeline(out, 'train', image_size=32, batch_size=4, seed=0))  # reads the new field's
  assert b['image'].shape == (4, 32, 32, 3) and b['mouth_valid'].all()                    # records as before


def test_manifest_keeps_true_colours_and_identity_metrics_read_them(videos, prepared):
  """prepare keeps each synthface identity's true skin/hair/lip colours; evaluation/generic.identity_truth reads
  the real frames close to them, and a generated face in another person's colours far from them."""
  from daetalker_jax.evaluation import generic  # pylint: disable=g-import-not-at-top
  out, _ = prepared
  colours = generic.identity_colours_of(str(out))
  assert set(colours) == {f'synth_s0_id{k:03d}' for k in range(N_IDS)}
  assert colours['synth_s0_id003'] == {k: render.draw_identity(0, 3)['palette'][k] for k in ('skin', 'hair', 'lips')}
  clips = [c for s in dataset.SPLITS for c in dataset.iterate_clips(out, s)]
  a = next(c for c in clips if c['identity'] == 'synth_s0_id000')
  b = next(c for c in clips if c['identity'] == 'synth_s0_id003')
  lm = a['landmarks'] / a['images'].shape[1]
  same = generic.identity_truth(a['images'], a['images'], a['landmarks'], colours['synth_s0_id000'])
  for part, shown in (('skin', 0.9), ('lips', 0.5)):   # 32-px frames: the lower lip is a few pixels thick
    assert same[f'identity_{part}_frames'] > shown, same
    assert same[f'identity_{part}'] == same[f'identity_{part}_real'] < 25, same
  # Another person's frames in place of the generated ones (same size and pose range): far from the truth.
  n = min(len(a['images']), len(b['images']))
  other = generic.identity_truth(b['images'][:n], a['images'][:n], a['landmarks'][:n], colours['synth_s0_id000'])
  assert other['identity_skin'] > same['identity_skin'] + 15, (other, same)
  # clip_metrics adds them when the colours are known (landmarks as fractions there), and only then.
  audio = a['audio'][:n * 640]
  m = generic.clip_metrics(a['images'][:n], a['images'][:n], lm[:n], audio, colours['synth_s0_id000'])
  assert m['identity_skin'] == pytest.approx(same['identity_skin'], abs=5)
  assert 'identity_skin' not in generic.clip_metrics(a['images'][:n], a['images'][:n], lm[:n], audio)


def test_identity_split_needs_enough_identities(tmp_path, capsys):
  src = tmp_path / 'src'
  for person in ('ann', 'bob'):
    for i in range(2):
      _videos.make_video(src / person / f'take{i}.mp4', num_frames=10, width=32, height=32)
  assert {prepare.source_identity(src, p) for p in prepare.find_videos(src)} == {'ann', 'bob'}
  assert prepare.source_identity(src, src / 'ann' / 'take1.mp4', 'file') == 'ann__take1'
  out = tmp_path / 'data'
  argv = ['--src', str(src), '--out', str(out), '--size', '16', '--crop', 'none', '--split-by', 'identity']
  assert prepare.main(argv) == 1
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and 'prepare: error: --split-by identity: 2 identities (ann, bob)' in err[0], err
  assert 'need at least 3' in err[0] and not out.exists()
  # Without a test split two people suffice; by file, every take is its own identity.
  report = prepare.prepare(src, out, size=16, crop='none', split_by='identity', test_fraction=0, min_clip_frames=2)
  assert sorted(report['identities']['train'] + report['identities']['val']) == ['ann', 'bob']
  assert report['identities']['test'] == []
  report = prepare.prepare(src, out, size=16, crop='none', split_by='identity', identity_from='file',
                           min_clip_frames=2, overwrite=True)
  ids = report['identities']
  assert sorted(ids['train'] + ids['val'] + ids['test']) == ['ann__take0', 'ann__take1', 'bob__take0', 'bob__take1']
  assert len(ids['val']) == len(ids['test']) == 1


def test_datasets_without_identity_still_load(tmp_path, monkeypatch):
  """A dataset written before the `identity` feature (and its metadata) reads with identity '' and feeds
  the pipelines."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from data_prep import tfds_writer  # pylint: disable=g-import-not-at-top
  new_features = tfds_writer.make_features

  def old_features(size):
    f = new_features(size)
    return tfds.features.FeaturesDict({k: f[k] for k in f.keys() if k != 'identity'})

  real_add = tfds_writer.SourceStage.add_clip
  monkeypatch.setattr(tfds_writer, 'make_features', old_features)
  monkeypatch.setattr(tfds_writer.SourceStage, 'add_clip',
                      lambda self, ex: real_add(self, {k: v for k, v in ex.items() if k != 'identity'}))
  src = tmp_path / 'src'
  for i in range(3):
    _videos.make_video(src / f'v{i}.mp4', num_frames=12, width=32, height=32)
  out = tmp_path / 'data'
  prepare.prepare(src, out, size=16, crop='none', seed=0)
  monkeypatch.undo()
  meta = out / 'metadata.json'
  if meta.is_file():  # as old datasets: no split_by / identities metadata
    m = json.loads(meta.read_text())
    meta.write_text(json.dumps({k: v for k, v in m.items() if k not in ('split_by', 'identities')}))
  assert 'identity' not in (out / 'features.json').read_text()
  info = dataset.dataset_info(out)
  assert info['split_by'] == 'clip' and info['identities'] is None
  clips = [c for s in dataset.SPLITS for c in dataset.iterate_clips(out, s)]
  assert len(clips) == 3 and all(c['identity'] == '' for c in clips)
  assert 'identity' not in dataset.load_clips(out, 'train').element_spec
  b = next(pipelines.frames_pipeline(out, 'train', image_size=16, batch_size=2, seed=0))
  assert b['image'].shape == (2, 16, 16, 3)
  w = next(pipelines.windows_pipeline(out, 'train', window=4, batch_size=2, seed=0))
  assert w['audio'].shape == (2, 4 * 640)
