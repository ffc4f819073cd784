"""data_prep.prepare: tiny ffmpeg-made videos → TFDS dataset; alignment, splits, bad input."""

import json
import pathlib

import numpy as np
import pytest

from daetalker_jax.data import audio as audio_lib
from daetalker_jax.data import dataset
from daetalker_jax.data import contract
from daetalker_jax.data import video_io
from data_prep import annotators
from data_prep import prepare
from tests import _videos


# Its module fixtures are built once: pytest-xdist runs the whole module on one worker.
pytestmark = pytest.mark.xdist_group('prepare')


SIZE = 32


@pytest.fixture(scope='module')
def built(tmp_path_factory):
  root = tmp_path_factory.mktemp('prep')
  src = _videos.make_source_folder(root / 'src')
  out = root / 'data'
  report = prepare.prepare(src, out, size=SIZE, crop='none', max_clip_seconds=1.0, seed=0)
  return src, out, report


def _no_leftovers(parent: pathlib.Path, name: str) -> None:
  left = [p.name for p in parent.iterdir() if p.name.lstrip('.').startswith(name)]   # temp folders are hidden
  assert not left, f'left behind: {left}'


def _clips(out):
  return {s: list(dataset.iterate_clips(out, s)) for s in ('train', 'val', 'test')}


def test_video_io_alignment(tmp_path):
  """read_video: 25 fps frames, audio tone exactly in the loud frames, 30 fps resampled."""
  p = _videos.make_video(tmp_path / 'a.mp4', num_frames=25, loud_frames=(3, 17))
  v = video_io.read_video(p)
  frames = np.stack(list(v.frames))
  assert frames.shape == (25, 40, 48, 3) and frames.dtype == np.uint8
  levels = frames[:, -8:, :, 0].mean((1, 2))  # bottom rows: the moving square never goes there
  np.testing.assert_allclose(levels, [_videos.frame_level(k) for k in range(25)], atol=3)
  a = v.audio_for(25)
  assert a.shape == (25 * 640,) and a.dtype == np.float32
  energy = np.square(a.reshape(25, 640)).mean(1)
  assert set(np.nonzero(energy > 0.01)[0]) == {3, 17}
  # 30 fps source: frame 6 at 30 fps spans 0.2-0.233 s → frame 5 at 25 fps (0.2-0.24 s).
  p = _videos.make_video(tmp_path / 'b.mp4', num_frames=30, fps=30, loud_frames=(6,))
  v = video_io.read_video(p)
  assert sum(1 for _ in v.frames) == 25
  energy = np.square(v.audio_for(25).reshape(25, 640)).mean(1)
  assert np.argmax(energy) == 5


def test_load_audio(tmp_path):
  p = _videos.make_video(tmp_path / 'a.mp4', num_frames=25, loud_frames=(2,))
  a = audio_lib.load_audio(p)
  assert a.dtype == np.float32 and a.ndim == 1 and abs(len(a) - 16000) < 700
  np.testing.assert_allclose(np.abs(a).max(), 0.5, atol=0.05)
  a8 = audio_lib.load_audio(p, sr=8000)
  assert abs(len(a8) - 8000) < 400
  with pytest.raises(audio_lib.AudioError, match='no audio stream'):
    audio_lib.load_audio(_videos.make_video(tmp_path / 'silent.mp4', audio=False))
  (tmp_path / 'x.wav').write_text('nope')
  with pytest.raises(audio_lib.AudioError, match='x.wav'):
    audio_lib.load_audio(tmp_path / 'x.wav')


def test_video_writer_roundtrip(tmp_path):
  frames = _videos.make_frames(12, 32, 32)
  tone = _videos.make_audio(12, 25, loud_frames=(4,))
  with video_io.VideoWriter(tmp_path / 'w.mp4', fps=25, size=32, audio=tone) as w:
    for f in frames:
      w.write(f)
  assert [p.name for p in tmp_path.iterdir()] == ['w.mp4']
  v = video_io.read_video(tmp_path / 'w.mp4')
  got = np.stack(list(v.frames))
  assert got.shape == (12, 32, 32, 3)
  np.testing.assert_allclose(got[:, -6:, :, 0].mean((1, 2)), frames[:, -6:, :, 0].mean((1, 2)), atol=4)
  assert np.argmax(np.square(v.audio_for(12).reshape(12, 640)).mean(1)) == 4
  # An exception inside the block leaves nothing behind.
  with pytest.raises(RuntimeError):
    with video_io.VideoWriter(tmp_path / 'x.mp4', size=32) as w:
      w.write(frames[0])
      raise RuntimeError('boom')
  assert sorted(p.name for p in tmp_path.iterdir()) == ['w.mp4']


def test_dataset_contents(built):
  src, out, report = built
  clips = _clips(out)
  all_clips = [c for cs in clips.values() for c in cs]
  # synth_0002 (28 frames) → 25 + 3, and the 3-frame tail is below min_clip_frames.
  assert len(all_clips) == report['clips'] == 3 + 3 + 2
  assert report['frames_dropped'] == {'short_clip': 3}
  for c in all_clips:
    n = c['num_frames']
    assert c['images'].shape == (n, SIZE, SIZE, 3) and c['images'].dtype == np.uint8
    assert c['audio'].shape == (n * 640,) and c['audio'].dtype == np.int16
    assert c['pose'].shape == (n, 3) and c['landmarks'].shape == (n, 68, 2)
    assert not c['landmarks_valid'].any()
    k = c['start_frame'] + np.arange(n)
    # The right source frames, in order (grey level of the bottom rows identifies the frame).
    levels = c['images'][:, -4:, :, 1].astype(float).mean((1, 2))
    src_k = np.round(k * 30 / 25).astype(int) if 'fast' in c['clip_id'] else k  # fps=25 picks nearest
    np.testing.assert_allclose(levels, [_videos.frame_level(i) for i in src_k], atol=4)
    if 'fast' not in c['clip_id']:
      # Audio sample 640*k belongs to frame k: the tone is exactly in the loud frames.
      energy = np.square(contract.int16_to_float(c['audio'], np.float64).reshape(n, 640)).mean(1)
      assert set(k[energy > 0.01]) == set(_videos.LOUD) & set(k), c['clip_id']
    if c['clip_id'].startswith('synth'):
      np.testing.assert_allclose(c['pose'], _videos.sidecar_pose(pathlib.Path(c['source']))[k], atol=1e-5)
      np.testing.assert_allclose(c['box'], np.tile([0, 0, 40, 40], (n, 1)))
    else:
      np.testing.assert_array_equal(c['pose'], 0)
  long = sorted((c['start_frame'], c['num_frames']) for c in all_clips if 'long' in c['clip_id'])
  assert long == [(0, 25), (25, 25), (50, 10)]
  long_box = next(c['box'][0] for c in all_clips if 'long' in c['clip_id'])
  np.testing.assert_allclose(long_box, [4, 0, 44, 40])  # centred square of the 48x40 frame
  fast = [c for c in all_clips if 'fast' in c['clip_id']]
  assert [c['num_frames'] for c in fast] == [25, 5]  # 1.2 s at 30 fps → 30 frames at 25 fps


def test_split_by_clip_and_info(built):
  _, out, report = built
  ids = {s: [c['clip_id'] for c in dataset.iterate_clips(out, s)] for s in ('train', 'val', 'test')}
  flat = [i for v in ids.values() for i in v]
  assert len(flat) == len(set(flat)) == 8
  assert all(len(v) >= 1 for v in ids.values())
  info = dataset.dataset_info(out)
  assert info['image_size'] == SIZE
  for s in ids:
    assert info['splits'][s]['clips'] == len(ids[s])
    assert sorted(dataset.clip_ids(out, s)) == sorted(ids[s])
  assert sum(v['frames'] for v in info['splits'].values()) == report['frames_kept'] == 20 + 24 + 25 + 60 + 30
  manifest = json.loads((out / 'manifest.json').read_text())
  assert {pathlib.Path(s['source']).name for s in manifest['sources']} == {
      'synth_0000.mp4', 'synth_0001.mp4', 'synth_0002.mp4', 'long.mkv', 'fast.mp4'}
  rep = json.loads((out / 'report.json').read_text())
  # Identity by folder (the default): the first folder under --src, or --src's own name.
  identity = {c['clip_id']: c['identity'] for s in manifest['sources'] for c in s['clips']}
  assert identity == {cid: 'sub' if cid.startswith('sub__long') else 'src' for cid in flat}
  assert {c['clip_id']: c['identity'] for v in _clips(out).values() for c in v} == identity
  assert rep['split_by'] == info['split_by'] == 'clip'
  assert rep['identities'] == info['identities'] == {
      s: sorted({identity[c] for c in v}) for s, v in ids.items()}
  assert rep['face_coverage'] == round(159 / 162, 4)
  assert rep['validation']['totals']['frames_kept'] == 162  # faces kept (short clips cut later)
  assert any('short footage' in w for w in rep['validation']['warnings'])


def test_assign_splits():
  ids = [f'c{i}' for i in range(10)]
  a = prepare.assign_splits(ids, 0.1, 0.1, seed=0)
  assert a == prepare.assign_splits(list(reversed(ids)), 0.1, 0.1, seed=0)
  assert sorted(a.values()).count('val') == 1 and sorted(a.values()).count('test') == 1
  assert a != prepare.assign_splits(ids, 0.1, 0.1, seed=1)
  three = prepare.assign_splits(ids[:3], 0.1, 0.1, seed=0)
  assert sorted(three.values()) == ['test', 'train', 'val']
  assert prepare.assign_splits(ids[:1], 0.1, 0.1, seed=0) == {'c0': 'train'}
  assert sorted(prepare.assign_splits(ids[:2], 0.1, 0.1, seed=0).values()) == ['train', 'val']
  assert set(prepare.assign_splits(ids, 0.0, 0.0, seed=0).values()) == {'train'}


def test_assign_identity_splits():
  clips = {f'{p}_{i}': p for p in 'abcdefghij' for i in range(3)}
  a = prepare.assign_identity_splits(clips, 0.1, 0.2, seed=0)
  assert a == prepare.assign_identity_splits(dict(reversed(list(clips.items()))), 0.1, 0.2, seed=0)
  per_person = {p: {a[c] for c in clips if clips[c] == p} for p in set(clips.values())}
  assert all(len(v) == 1 for v in per_person.values())          # a person's clips share one split
  assert sorted(v.pop() for v in per_person.values()).count('test') == 2
  assert a != prepare.assign_identity_splits(clips, 0.1, 0.2, seed=1)
  three = prepare.assign_identity_splits({'x': 'a', 'y': 'b', 'z': 'c'}, 0.01, 0.01, seed=0)
  assert sorted(three.values()) == ['test', 'train', 'val']   # at least one identity each
  assert set(prepare.assign_identity_splits(clips, 0.0, 0.0, seed=0).values()) == {'train'}
  with pytest.raises(prepare.PrepareError, match=r'2 identities \(a, b\) cannot fill train, val and test; need at '):
    prepare.assign_identity_splits({'x': 'a', 'y': 'b'}, 0.1, 0.1, seed=0)
  assert sorted(prepare.assign_identity_splits({'x': 'a', 'y': 'b'}, 0.0, 0.1, seed=0).values()) == ['test', 'train']


def test_default_crop_per_source(tmp_path, capsys):
  """Without --crop a synthface video (sidecar) is read whole, any other video goes through face tracking;
  a video where tracking finds no face is skipped with one line that names the default."""
  src = tmp_path / 'src'
  synth = _videos.make_video(src / 'synth_0000.mp4', num_frames=20, width=40, height=40, sidecar=True)
  plain = _videos.make_video(src / 'plain.mp4', num_frames=20, width=40, height=40)   # no face in it
  assert prepare.resolve_crop(None, synth) == 'none' and prepare.resolve_crop(None, plain) == 'auto'
  assert prepare.resolve_crop('box:0,0,8,8', synth) == 'box:0,0,8,8'
  out = tmp_path / 'data'
  assert _run_cli(src, out) == 0
  err = [l for l in capsys.readouterr().err.splitlines() if 'plain.mp4' in l]
  assert err == [f'prepare: skipping {plain}: no usable face in any of 20 frames (no face: 20) [--crop auto is the '
                 'default for videos without a synthface sidecar; --crop none keeps whole frames]'], err
  manifest = json.loads((out / 'manifest.json').read_text())
  assert manifest['settings']['crop'] == 'default'
  assert {pathlib.Path(s['source']).name: (s['crop'], s['status']) for s in manifest['sources']} == {
      'synth_0000.mp4': ('none', 'ok'), 'plain.mp4': ('auto', 'skipped')}
  assert dataset.dataset_info(out)['crop'] == 'none'   # the crop of every clip in the dataset
  clips = [c for s in ('train', 'val', 'test') for c in dataset.iterate_clips(out, s)]
  np.testing.assert_allclose(clips[0]['box'][0], [0, 0, 40, 40])
  _assert_fails(capsys, src, tmp_path / 'strict', 'plain.mp4: no usable face', '--strict')
  # An explicit --crop applies to every source, as before.
  assert _run_cli(src, out, '--overwrite', '--crop', 'none') == 0
  manifest = json.loads((out / 'manifest.json').read_text())
  assert {s['crop'] for s in manifest['sources']} == {'none'} and len(manifest['sources']) == 2


def _run_cli(src, out, *extra):
  return prepare.main(['--src', str(src), '--out', str(out), '--size', str(SIZE), *extra])


def _assert_fails(capsys, src, out, match, *extra):
  assert _run_cli(src, out, *extra) == 1
  err = capsys.readouterr().err.strip().splitlines()
  assert err[-1].startswith('prepare: error:') and match in err[-1], err
  assert 'Traceback' not in '\n'.join(err)
  assert not out.exists()
  _no_leftovers(out.parent, out.name)


def _make_bad_source(tmp_path, kind):
  """A source folder with one kind of bad input (or one good video, for the bad flags)."""
  src = tmp_path / kind
  if kind == 'empty':
    src.mkdir()
  elif kind == 'notvideo':
    src.mkdir()
    (src / 'clip.mp4').write_text('this is not a video')
  elif kind == 'noaudio':
    _videos.make_video(src / 'mute.mp4', audio=False)
  elif kind == 'trunc':         # moov atom at the end: the container itself is unreadable
    _videos.truncate(_videos.make_video(src / 'cut.mp4', num_frames=50))
  elif kind == 'trunc_faststart':   # faststart: readable header, frames missing at the end
    _videos.truncate(_videos.make_video(src / 'cut.mp4', num_frames=100, faststart=True), 0.6)
  elif kind == 'good':
    _videos.make_video(src / 'a.mp4')
  # 'missing': no folder at all
  return src


@pytest.mark.parametrize('kind,extra,match', [
    ('empty', (), 'no video files'),
    ('missing', (), 'not a directory'),
    ('notvideo', (), 'clip.mp4: not a readable video'),
    ('noaudio', (), 'mute.mp4: no audio track'),
    ('trunc', (), 'cut.mp4: not a readable video, or truncated'),
    ('trunc_faststart', (), 'cut.mp4: truncated video: decoded'),
    ('good', ('--crop', 'fancy'), "--crop fancy: unknown annotator 'fancy'; choose from auto, box"),
    ('good', ('--crop', 'box:1,2'), 'expected box:x0,y0,x1,y1'),
    ('good', ('--crop', 'box:100,100,120,120'), 'lies outside'),
    ('good', ('--val-fraction', '0.6', '--test-fraction', '0.5'), '--val-fraction'),
], ids=['empty', 'missing', 'not_video', 'no_audio', 'truncated', 'truncated_faststart', 'unknown_crop',
        'short_box', 'box_outside', 'fractions'])
def test_bad_inputs(tmp_path, capsys, kind, extra, match):
  _assert_fails(capsys, _make_bad_source(tmp_path, kind), tmp_path / 'data', match, *extra)


def test_mixed_folder(tmp_path, capsys):
  src = tmp_path / 'src'
  _videos.make_video(src / 'good.mp4', num_frames=30)
  _videos.make_video(src / 'other.mov', num_frames=20, sidecar=False)
  (src / 'notes.mp4').write_text('not a video')
  _videos.make_video(src / 'mute.mkv', audio=False)
  (src / 'readme.txt').write_text('ignored: not a video extension')
  out = tmp_path / 'data'
  _assert_fails(capsys, src, out, 'mute.mkv: no audio track', '--strict', '--crop', 'box:4,0,44,40')  # first bad file
  assert _run_cli(src, out, '--crop', 'box:4,0,44,40') == 0
  err = capsys.readouterr().err
  assert 'skipping ' + str(src / 'mute.mkv') + ': no audio track' in err
  assert str(src / 'notes.mp4') in err
  manifest = json.loads((out / 'manifest.json').read_text())
  status = {pathlib.Path(s['source']).name: s['status'] for s in manifest['sources']}
  assert status == {'good.mp4': 'ok', 'other.mov': 'ok', 'notes.mp4': 'skipped', 'mute.mkv': 'skipped'}
  clips = [c for s in ('train', 'val', 'test') for c in dataset.iterate_clips(out, s)]
  assert sum(c['num_frames'] for c in clips) == 50
  np.testing.assert_allclose(clips[0]['box'][0], [4, 0, 44, 40])
  _no_leftovers(tmp_path, 'data.')
  # An existing dataset is kept unless --overwrite; with it, replaced atomically.
  assert _run_cli(src, out) == 1 and 'already exists' in capsys.readouterr().err
  assert _run_cli(src, out, '--overwrite', '--max-clip-seconds', '0.4', '--crop', 'box:4,0,44,40') == 0
  assert len([c for s in ('train', 'val', 'test') for c in dataset.iterate_clips(out, s)]) > len(clips)
  _no_leftovers(tmp_path, 'data.')


@annotators.register('failing_for_test')
class _FailingAnnotator(annotators.FrameAnnotator):
  """A real annotator that breaks on frame 10 of its second video (a crash mid-build)."""

  def __init__(self, arg, size):
    del arg, size
    self.videos = 0

  def begin(self, source, info):
    self.videos += 1

  def annotate_frame(self, frame, index):
    if self.videos == 2 and index == 10:
      raise RuntimeError('annotator crashed')
    return annotators.Annotation(box=(0, 0, frame.shape[1], frame.shape[1]), drop='blurry' if index == 3 else None)


def test_crash_leaves_nothing(tmp_path):
  src = tmp_path / 'src'
  for i in range(2):
    _videos.make_video(src / f'v{i}.mp4', num_frames=20, width=40, height=40)
  with pytest.raises(RuntimeError, match='annotator crashed'):
    prepare.prepare(src, tmp_path / 'data', size=SIZE, crop='failing_for_test')
  assert not (tmp_path / 'data').exists()
  _no_leftovers(tmp_path, 'data')


def test_dropped_frames_split_clips(tmp_path):
  @annotators.register('drop_for_test')
  class DropAnnotator(annotators.FrameAnnotator):
    def __init__(self, arg, size):
      del arg, size

    def annotate_frame(self, frame, index):
      lm = np.tile([[10.0, 20.0]], (68, 1))
      return annotators.Annotation(box=(0, 0, 40, 40), landmarks=lm, pose=np.array([1., 2., 3.]),
                                   drop='no_face' if index in (8, 9, 21) else None)
  del DropAnnotator  # registered
  src = tmp_path / 'src'
  _videos.make_video(src / 'v.mp4', num_frames=30, width=40, height=40)
  report = prepare.prepare(src, tmp_path / 'data', size=SIZE, crop='drop_for_test',
                           val_fraction=0, test_fraction=0, min_clip_frames=5)
  clips = sorted(((c['start_frame'], c['num_frames'], c) for c in dataset.iterate_clips(tmp_path / 'data', 'train')),
                 key=lambda t: t[0])
  # Frames 0-7 | drop 8,9 | 10-20 | drop 21 | 22-29.
  assert [(s, n) for s, n, _ in clips] == [(0, 8), (10, 11), (22, 8)]
  assert report['frames_dropped'] == {'no_face': 3}
  c = clips[1][2]
  np.testing.assert_allclose(c['landmarks'][0, 0], [10 * SIZE / 40, 20 * SIZE / 40])  # crop pixels
  assert c['landmarks_valid'].all()
  np.testing.assert_allclose(c['pose'], np.tile([1., 2., 3.], (11, 1)))
  energy = np.square(c['audio'].reshape(11, 640).astype(float)).mean(1)
  assert c['audio'].shape == (11 * 640,) and np.all(energy == 0)


def test_face_crop_from_synthface_landmarks(synth_videos, tiny_dataset, tmp_path):
  """--crop face: one box per clip around the sidecar landmarks, inside the frame; the mouth gets bigger."""
  out = tmp_path / 'face'
  prepare.prepare(synth_videos, out, size=32, crop='face', val_fraction=0.17, test_fraction=0.17, seed=0)
  face = {c['clip_id']: c for s in ('train', 'val', 'test') for c in dataset.iterate_clips(out, s)}
  whole = {c['clip_id']: c for s in ('train', 'val', 'test') for c in dataset.iterate_clips(tiny_dataset, s)}
  assert set(face) == set(whole)
  for cid, c in face.items():
    box = np.asarray(c['box'])
    assert (box == box[0]).all() and box[0, 0] >= 0 and box[0, 1] >= 0 and box[0, 2] <= 64 and box[0, 3] <= 64
    assert c['landmarks_valid'].all()
    lm = np.asarray(c['landmarks'])
    assert lm.min() >= 0 and lm.max() <= 32
    mouth = lambda x: np.ptp(x[:, 48:60, 0], axis=1).mean()      # mouth width in crop pixels
    assert mouth(lm) > 1.15 * mouth(np.asarray(whole[cid]['landmarks'])), cid
  with pytest.raises(prepare.PrepareError, match='face:x'):
    prepare.make_annotator('face:x', 32)


def test_annotator_registry():
  assert {'auto', 'box', 'face', 'none'} <= set(annotators.names())
  assert annotators.get('box') is prepare.FixedBoxAnnotator
  # An unknown name is a one-line error that lists the choices.
  with pytest.raises(prepare.PrepareError, match=r"--crop nope:1: unknown annotator 'nope'; choose from auto, box"):
    prepare.make_annotator('nope:1', 32)
