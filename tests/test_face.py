"""Face analysis for real video (data_prep/face.py) and the validation report (data_prep/report.py).

The video is the astronaut photo moved, rolled by known angles and zoomed (tests/_astronaut.py),
so the right answers are known: where the face is, which frames have none, how much it is rolled.
"""

import collections
import io
import json
import math

import cv2
import numpy as np
import pytest

from data_prep import face
from data_prep import report as report_lib
from tests import _astronaut


# Its module fixtures are built once: pytest-xdist runs the whole module on one worker.
pytestmark = pytest.mark.xdist_group('face')


SIZE = 128


@pytest.fixture(scope='module')
def video():
  return _astronaut.make_video()


@pytest.fixture(scope='module')
def smoothed(video):
  """Annotations with the default smoothing (half-window 5)."""
  return list(face.FaceTracker(SIZE)(video.frames))


@pytest.fixture(scope='module')
def unsmoothed(video):
  return list(face.FaceTracker(SIZE, window=0)(video.frames))


def _runs(kept: np.ndarray) -> list[tuple[int, int]]:
  """[start, stop) of runs of True."""
  out, start = [], None
  for i, k in enumerate(list(kept) + [False]):
    if k and start is None:
      start = i
    elif not k and start is not None:
      out.append((start, i))
      start = None
  return out


def _centres(anns) -> np.ndarray:
  return np.array([[(a.box[0] + a.box[2]) / 2, (a.box[1] + a.box[3]) / 2] if a.kept
                   else [np.nan, np.nan] for a in anns])


def _jitter(anns, video) -> tuple[float, float]:
  """RMS second difference (px) of the crop centre, raw and relative to the known face motion."""
  centres = _centres(anns)
  kept = np.array([a.kept for a in anns])
  raw, rel = [], []
  for lo, hi in _runs(kept):
    if hi - lo >= 3:
      raw.append(np.diff(centres[lo:hi], 2, axis=0))
      rel.append(np.diff(centres[lo:hi] - video.anchor[lo:hi], 2, axis=0))
  rms = lambda d: float(np.sqrt(np.mean(np.concatenate(d) ** 2)))  # noqa: E731
  return rms(raw), rms(rel)


# ------------------------------------------------------------------------------------------------
# Tracking and crops.
# ------------------------------------------------------------------------------------------------

def test_face_found_in_every_non_blank_frame(video, smoothed):
  assert [a.index for a in smoothed] == list(range(len(video.frames)))
  kept = np.array([a.kept for a in smoothed])
  np.testing.assert_array_equal(kept, ~video.blank)
  assert {a.drop_reason for a in smoothed if not a.kept} == {face.NO_FACE}
  for a in smoothed:
    if not a.kept:
      assert a.crop is None and a.box is None and a.pose is None and a.landmarks is None
      continue
    assert a.crop.shape == (SIZE, SIZE, 3) and a.crop.dtype == np.uint8
    assert a.landmarks.shape == (68, 2) and a.landmarks.dtype == np.float32
    x0, y0, x1, y1 = a.box
    assert x1 - x0 == pytest.approx(y1 - y0)  # square
    # The face (its known centre) is inside the middle of the crop.
    ax, ay = video.anchor[a.index]
    assert x0 + 0.3 * (x1 - x0) < ax < x1 - 0.3 * (x1 - x0)
    assert y0 + 0.25 * (y1 - y0) < ay < y1 - 0.3 * (y1 - y0)
    # Landmarks in crop pixels, and consistent with the source landmarks and the box.
    assert np.all((a.landmarks > 0) & (a.landmarks < SIZE))
    back = a.landmarks * (x1 - x0) / SIZE + (x0, y0)
    np.testing.assert_allclose(back, a.source_landmarks, atol=1e-3)


def test_crop_size_follows_zoom(video, smoothed):
  """The crop side is proportional to the face size (the zoom), about 1.7x the face width."""
  side = np.array([a.box[2] - a.box[0] if a.kept else np.nan for a in smoothed])
  base = np.nanmedian(side[:20])
  assert 120 < base < 200  # astronaut face ~90 px wide, crop ~1.7x
  zoomed = np.nanargmax(video.scale)
  assert side[zoomed] / base == pytest.approx(video.scale[zoomed], rel=0.06)
  small = len(video.scale) - 1
  assert side[small] / base == pytest.approx(video.scale[small], rel=0.06)


def test_crop_jitter_small_and_reduced_by_smoothing(video, smoothed, unsmoothed):
  raw_s, rel_s = _jitter(smoothed, video)
  raw_u, rel_u = _jitter(unsmoothed, video)
  print(f'\ncrop-centre second difference RMS (px): smoothed raw {raw_s:.2f} relative {rel_s:.2f}; '
        f'unsmoothed raw {raw_u:.2f} relative {rel_u:.2f}')
  assert rel_s < 1.0
  assert rel_s < 0.7 * rel_u


def test_crop_content_is_the_face(video, smoothed):
  """The crops of a shifted-only frame and of the first frame show the same image (the track)."""
  a0 = smoothed[0]
  a1 = smoothed[10]  # shifted by ~17 px, same scale and roll
  diff = np.abs(a0.crop.astype(np.float32) - a1.crop.astype(np.float32)).mean()
  assert diff < 12.0, diff


# ------------------------------------------------------------------------------------------------
# Head pose.
# ------------------------------------------------------------------------------------------------

def test_pose_of_unrotated_frames_is_near_frontal(video, smoothed):
  pose = np.array([a.pose for a in smoothed if a.kept and video.cv_angle[a.index] == 0])
  yaw, pitch, roll = pose.T
  print(f'\nfrontal astronaut: yaw {np.median(yaw):.1f} pitch {np.median(pitch):.1f} '
        f'roll {np.median(roll):.1f} deg; std {pose.std(0).round(2)}')
  assert np.all(np.abs(yaw) < 10)
  # The portrait is taken with the chin slightly down: the generic model reads pitch ~ -9 deg.
  assert np.all(np.abs(pitch) < 12)
  assert np.all(np.abs(roll) < 6)  # her head is tilted ~3 deg clockwise
  assert np.all(pose.std(0) < 1.5)  # shifts and zoom do not change the pose


@pytest.mark.parametrize('which', ['unsmoothed', 'smoothed'])
def test_known_roll_is_recovered(video, which, request):
  anns = request.getfixturevalue(which)
  roll = np.array([a.pose[2] if a.kept else np.nan for a in anns])
  base = np.nanmedian(roll[(video.cv_angle == 0) & ~video.blank])
  for angle in (5.0, -5.0, 10.0, -10.0):
    idx = np.flatnonzero(video.cv_angle == angle)
    if which == 'smoothed':  # frames whose whole +-5 window holds the same roll
      idx = idx[5:-5]
    # cv2 angles turn the image counter-clockwise; our roll is clockwise-positive.
    err = roll[idx] - base + angle
    assert np.all(np.abs(err) < 3.0), (angle, err)


def test_pose_solver_recovers_a_known_rotation():
  """Project the generic face with a known pose; solvePnP must give it back with our signs."""
  w, h = 640, 480
  cam = face.camera_matrix(w, h)
  for yaw, pitch, roll in [(0, 0, 0), (20, 0, 0), (0, 15, 0), (0, 0, -12), (-25, -10, 8)]:
    rot = face.euler_to_rotation(yaw, pitch, roll)
    pts3 = face.FACE_MODEL_3D @ rot.T + (10.0, -5.0, 60.0)
    pts2 = (pts3 @ cam.T)[:, :2] / pts3[:, 2:]
    lm = np.zeros((68, 2))
    lm[list(face.POSE_LANDMARKS)] = pts2
    # Fill the other landmarks anywhere: only POSE_LANDMARKS are used.
    got = face.pose_from_landmarks(lm, w, h)
    np.testing.assert_allclose(got, (yaw, pitch, roll), atol=0.2)
    eyes = lm[[36, 45]]
    nose = lm[[31, 35]].mean(0)
    if yaw > 0:  # nose moves to the image right of the eye midpoint
      assert nose[0] > eyes[:, 0].mean() + 1
    if pitch > 0:  # nose moves up towards the eyes
      assert nose[1] - eyes[:, 1].mean() < 0.9 * (np.ptp(eyes[:, 0]) * 0.6)
    if roll < 0:  # counter-clockwise: the image-right eye goes up
      assert eyes[1, 1] < eyes[0, 1]


def test_pose_convention_matches_synthface():
  """synthface draws with R = Rz(roll) Ry(yaw) Rx(pitch) in axes with z towards the camera; ours
  has z away from it, so the same angles must give R_ours = F R_synth F with F = diag(1, 1, -1)."""
  from data_prep import synthface_render as render  # pylint: disable=g-import-not-at-top
  f = np.diag([1.0, 1.0, -1.0])
  synth_rotation = render._rotation  # pylint: disable=protected-access
  for yaw, pitch, roll in [(12, 0, 0), (0, 9, 0), (0, 0, 7), (-14, 6, -5)]:
    np.testing.assert_allclose(f @ synth_rotation(yaw, pitch, roll) @ f,
                               face.euler_to_rotation(yaw, pitch, roll), atol=1e-12)
    np.testing.assert_allclose(face.rotation_to_euler(face.euler_to_rotation(yaw, pitch, roll)),
                               (yaw, pitch, roll), atol=1e-9)


# ------------------------------------------------------------------------------------------------
# Detection edge cases.
# ------------------------------------------------------------------------------------------------

def test_no_face_anywhere_raises_with_the_file_name():
  rng = np.random.default_rng(0)
  frames = [np.full((120, 160, 3), 90, np.uint8),
            rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)] * 3
  tracker = face.FaceTracker(SIZE, window=2)
  seen = []
  with pytest.raises(face.NoFaceError, match=r'clip_07\.mp4: no usable face in any of 6 frames'):
    for ann in face.check_faces(tracker(frames), 'clip_07.mp4'):
      seen.append(ann.drop_reason)
  assert seen == [face.NO_FACE] * 6  # every frame was passed on before the error
  with pytest.raises(face.NoFaceError, match='empty.mp4: no frames'):
    list(face.check_faces(tracker([]), 'empty.mp4'))


def test_check_faces_passes_a_good_stream(video):
  anns = list(face.check_faces(face.FaceTracker(SIZE, window=1)(video.frames[:5]), 'a.mp4'))
  assert len(anns) == 5 and all(a.kept for a in anns)


def _two_faces(video, second: bool) -> np.ndarray:
  left = video.frames[0]
  right = left if second else np.full_like(left, 128)
  return np.concatenate([left, right], axis=1)


def test_several_faces(video):
  tracker = face.FaceTracker(SIZE, window=0, detect_every=1)
  # No track yet and two faces: ambiguous.
  anns = list(tracker([_two_faces(video, True)] * 2))
  assert [a.drop_reason for a in anns] == [face.SEVERAL_FACES] * 2
  # A face is tracked, then a second one appears: keep following the first.
  frames = [_two_faces(video, False)] * 3 + [_two_faces(video, True)] * 3
  anns = list(tracker(frames))
  assert all(a.kept for a in anns)
  w = video.frames.shape[2]
  assert all(a.box[2] < w + 20 for a in anns)  # stayed on the left face
  # The face leaves for two frames and comes back with company: the one where it was wins.
  blank = np.full_like(_two_faces(video, False), 128)
  frames = [_two_faces(video, False)] * 2 + [blank] * 2 + [_two_faces(video, True)] * 2
  anns = list(tracker(frames))
  assert [a.drop_reason for a in anns] == [None] * 2 + [face.NO_FACE] * 2 + [None] * 2
  assert all(a.box[2] < w + 20 for a in anns if a.kept)
  # No track, but one face much larger than the other: that one is the subject.
  small = np.full_like(video.frames[0], 128)
  part = cv2.resize(video.frames[0], None, fx=0.6, fy=0.6, interpolation=cv2.INTER_AREA)
  small[:part.shape[0], :part.shape[1]] = part
  frame = np.concatenate([small, video.frames[0]], axis=1)
  assert len(tracker._detect_full(frame, None)) == 2  # pylint: disable=protected-access
  anns = list(tracker([frame]))
  assert anns[0].kept and anns[0].box[0] > w - 20


def test_cut_splits_the_track(video):
  """A jump of the face (a cut) drops one frame, then the new position is followed."""
  frames = np.concatenate([video.frames[:8], np.roll(video.frames[8:16], 110, axis=2)])
  anns = list(face.FaceTracker(SIZE, window=3)(frames))
  assert [a.drop_reason for a in anns] == [None] * 8 + [face.FACE_JUMPED] + [None] * 7
  centres = _centres(anns)[:, 0] - video.anchor[:16, 0]
  np.testing.assert_allclose(centres[9:] - np.median(centres[:8]), 110, atol=4)
  # Smoothing did not blend the shots: the last frame before the cut is where the face was.
  assert abs(centres[7] - np.median(centres[:7])) < 3


def test_face_at_border(video):
  """A face near the edge: the crop is padded, or dropped when too much of it is outside."""
  frames = np.roll(video.frames[:3], -130, axis=2)  # face centre at x ~ 60 of 384
  anns = list(face.FaceTracker(SIZE, window=0)(frames))
  assert all(a.kept for a in anns) and all(a.box[0] < 0 for a in anns)
  left = anns[0].crop[:, :int(-anns[0].box[0] * SIZE / (anns[0].box[2] - anns[0].box[0])) - 1]
  assert left.std(axis=1).max() < 1e-6  # edge padding repeats the first column along each row
  anns = list(face.FaceTracker(SIZE, window=0, max_outside=0.01)(frames))
  assert [a.drop_reason for a in anns] == [face.FACE_AT_BORDER] * 3


def test_landmarks_follow_the_known_motion(video, unsmoothed):
  """Source landmarks mapped back through each frame's known warp agree across frames."""
  back = []
  for a in unsmoothed:
    if not a.kept:
      continue
    i = a.index
    m = cv2.getRotationMatrix2D(_astronaut.FACE_CENTRE, float(video.cv_angle[i]),
                                float(video.scale[i]))
    m[:, 2] += video.anchor[i] - _astronaut.FACE_CENTRE
    inv = cv2.invertAffineTransform(m)
    back.append(a.source_landmarks @ inv[:, :2].T + inv[:, 2])
  back = np.array(back)  # (K, 68, 2) in the photo's pixels
  err = np.linalg.norm(back - np.median(back, 0), axis=-1)
  print(f'\nlandmark consistency in photo px (face ~90 px wide): mean {err.mean():.2f}, '
        f'p95 {np.percentile(err, 95):.2f}')
  assert err.mean() < 2.0 and np.percentile(err, 95) < 4.0


def test_look_ahead_is_bounded(video):
  """The tracker reads at most window + 1 frames before it yields the first annotation."""
  read = []

  def frames():
    for i, f in enumerate(video.frames[:12]):
      read.append(i)
      yield f

  it = face.FaceTracker(SIZE, window=3)(frames())
  next(it)
  assert len(read) == 4
  next(it)
  assert len(read) == 5


def test_small_face_is_dropped(video):
  small = [cv2.resize(f, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
           for f in video.frames[:3]]
  anns = list(face.FaceTracker(SIZE, window=0, min_face=64)(small))
  assert [a.drop_reason for a in anns] == [face.FACE_TOO_SMALL] * 3
  anns = list(face.FaceTracker(SIZE, window=0, min_face=30)(small))
  assert all(a.kept for a in anns)


def test_haar_detector(video):
  anns = list(face.FaceTracker(SIZE, detector='haar', window=2)(video.frames[60:76]))
  kept = [a.kept for a in anns]
  assert kept == list(~video.blank[60:76])
  first = anns[0]
  assert first.crop.shape == (SIZE, SIZE, 3)


def test_bad_frames_raise():
  tracker = face.FaceTracker(SIZE)
  with pytest.raises(ValueError, match='frame 0: expected uint8'):
    list(tracker([np.zeros((32, 32, 3), np.float32)]))
  with pytest.raises(ValueError, match='frame 1: size'):
    list(tracker([np.zeros((32, 32, 3), np.uint8), np.zeros((32, 40, 3), np.uint8)]))
  with pytest.raises(ValueError, match='unknown face detector'):
    face.FaceTracker(SIZE, detector='cnn')


def test_mp4_roundtrip(video, tmp_path):
  """The maker writes a real h264/AAC mp4; its decoded frames track like the originals."""
  path = str(tmp_path / 'astronaut.mp4')
  _astronaut.write_mp4(path, video.frames[60:80], _astronaut.make_audio(20))
  frames = _astronaut.read_mp4(path)
  assert frames.shape == (20,) + video.frames.shape[1:]
  anns = list(face.FaceTracker(SIZE, window=2)(frames))
  assert [a.kept for a in anns] == list(~video.blank[60:80])


# ------------------------------------------------------------------------------------------------
# Geometry helpers.
# ------------------------------------------------------------------------------------------------

def test_crop_square_pads_outside_the_frame():
  frame = np.zeros((40, 60, 3), np.uint8)
  frame[:, :, 0] = np.arange(60, dtype=np.uint8)[None] * 4
  inside = face.crop_square(frame, 10, 5, 20, 20)
  np.testing.assert_array_equal(inside, frame[5:25, 10:30])
  black = face.crop_square(frame, -10, -10, 20, 20, pad='black')
  assert black[:10].max() == 0 and black[:, :10].max() == 0
  np.testing.assert_array_equal(black[10:, 10:], frame[:10, :10])
  edge = face.crop_square(frame, 50, 0, 20, 20, pad='edge')
  np.testing.assert_array_equal(edge[:, 10:, 0], np.full((20, 10), 59 * 4))
  assert face.crop_square(frame, 0, 0, 40, 10).shape == (10, 10, 3)
  assert face.outside_fraction(-10, -10, 20, 60, 40) == pytest.approx(0.75)


def test_local_linear_is_unbiased_at_run_ends():
  k = np.arange(-5, 1)  # one-sided window: the last frame of a run
  line = (3.0 + 2.0 * k)[:, None]
  assert face.local_linear(line, k, 2.5)[0] == pytest.approx(3.0)
  rng = np.random.default_rng(0)
  k = np.arange(-5, 6)
  noisy = rng.normal(size=(2000, 11))
  est = np.array([face.local_linear(n[:, None], k, 2.5)[0] for n in noisy])
  assert est.std() < 0.45  # noise is averaged (1.0 unsmoothed)


def _ann(kept: bool, i: int = 0) -> face.FrameAnnotation:
  return face.FrameAnnotation(i, box=(0, 0, 1, 1)) if kept else \
      face.FrameAnnotation(i, drop_reason=face.NO_FACE)


def test_split_clips():
  pattern = [1] * 3 + [0] + [1] * 10 + [0, 0] + [1] * 23 + [0] + [1] * 12
  anns = [_ann(bool(k), i) for i, k in enumerate(pattern)]
  stats = face.SplitStats()
  clips = list(face.split_clips(iter(anns), min_frames=5, max_frames=10, stats=stats))
  lengths = [len(c) for c in clips]
  # run of 3 skipped; 10 → one clip; 23 → 10 out at 15 held, then the last 13 → (6, 7);
  # 12 → (6, 6): no piece shorter than min_frames, no frame of a long run lost.
  assert lengths == [10, 10, 6, 7, 6, 6]
  assert stats.clips == 6 and stats.frames_in_clips == 45
  assert stats.short_pieces == 1 and stats.short_frames == 3
  assert stats.dropped == collections.Counter({face.NO_FACE: 4})
  for c in clips:  # consecutive frames only
    assert [a.index for a in c] == list(range(c[0].index, c[0].index + len(c)))
  with pytest.raises(ValueError, match='max_frames >= 2\\*min_frames'):
    list(face.split_clips(anns, min_frames=6, max_frames=10))


# ------------------------------------------------------------------------------------------------
# The validation report.
# ------------------------------------------------------------------------------------------------

def _stats(anns, audio, name='astronaut.mp4', fps=25.0):
  s = report_lib.SourceStats(name, fps_found=fps, duration=len(anns) / 25)
  for a in anns:
    s.add_annotation(a)
  for chunk in np.array_split(audio, 7):  # streamed in odd-sized chunks
    s.add_audio(chunk)
  return s


def _kinds(rep):
  return sorted({w.split(': ')[1] for w in rep.warnings})


def test_report_numbers(smoothed):
  audio = _astronaut.make_audio(len(smoothed))
  summary = _stats(smoothed, audio).summary()
  assert summary['frames'] == 100 and summary['frames_kept'] == 96
  assert summary['frames_dropped'] == {face.NO_FACE: 4}
  assert 120 < summary['face_px_median'] < 200
  assert summary['pose']['roll']['max'] - summary['pose']['roll']['min'] > 15
  a = summary['audio']
  assert a['seconds'] == pytest.approx(4.0)
  rms = math.sqrt(np.mean(audio.astype(np.float64) ** 2))
  assert a['rms_dbfs'] == pytest.approx(20 * math.log10(rms), abs=0.01)
  assert a['clipping_fraction'] == 0
  assert 0.1 < a['silence_fraction'] < 0.5  # the gaps between "syllables"
  # A full-scale sine is -3 dBFS.
  s = report_lib.SourceStats('sine')
  s.add_audio(np.sin(np.linspace(0, 2000 * np.pi, 16000)))
  assert s.summary()['audio']['rms_dbfs'] == pytest.approx(-3.01, abs=0.02)


def test_report_warnings(smoothed, tmp_path):
  n = len(smoothed)
  good = _stats(smoothed, _astronaut.make_audio(n))
  rep = report_lib.build_report([good], target_size=128)
  assert _kinds(rep) == ['short footage']  # only 4 s of video
  # A 256 px target is larger than the ~160 px face box.
  assert _kinds(report_lib.build_report([good], target_size=256)) == ['short footage', 'small face']
  # Three and a half minutes of the same source: no warning at all.
  long = [dict(good.summary(), source=f'part{i}.mp4', frames=1300, frames_kept=1300)
          for i in range(4)]
  assert report_lib.build_report(long, target_size=128).warnings == []
  # Audio problems.
  silent = _stats(smoothed, _astronaut.make_audio(n, silent_from=0.3), 'quiet.mp4')
  loud = _stats(smoothed, np.clip(_astronaut.make_audio(n, level=3.0), -1, 1), 'loud.mp4')
  slow = _stats(smoothed, _astronaut.make_audio(n), 'slow.mp4', fps=15.0)
  rep = report_lib.build_report([silent, loud, slow], target_size=128)
  assert any(w.startswith('quiet.mp4: mostly silence') for w in rep.warnings)
  assert any(w.startswith('loud.mp4: clipping') for w in rep.warnings)
  assert any(w.startswith('slow.mp4: low fps') for w in rep.warnings)
  assert not any(w.startswith('quiet.mp4: clipping') or w.startswith('loud.mp4: mostly')
                 for w in rep.warnings)
  # Heavy pose and low coverage.
  turned = [face.FrameAnnotation(i, box=(0, 0, 200, 200), pose=(40.0 if i % 5 == 0 else 0, 0, 0))
            for i in range(50)] + [face.FrameAnnotation(50 + i, drop_reason=face.NO_FACE)
                                   for i in range(60)]
  rep = report_lib.build_report([_stats(turned, np.zeros(0), 'turned.mp4')], target_size=128)
  assert _kinds(rep) == ['heavy pose', 'low coverage', 'short footage']
  # Printing and saving.
  out = io.StringIO()
  rep.print_report(out)
  text = out.getvalue()
  assert 'turned.mp4' in text and 'WARNING turned.mp4: heavy pose' in text
  path = tmp_path / 'sub' / 'report.json'
  rep.save_report(path)
  saved = json.loads(path.read_text())
  assert saved['warnings'] == rep.warnings
  assert saved['sources'][0]['heavy_yaw_fraction'] == pytest.approx(0.2)
  assert list(path.parent.iterdir()) == [path]  # no temp file left behind


# ------------------------------------------------------------------------------------------------
# The `--crop auto` adapter for data_prep.prepare.
# ------------------------------------------------------------------------------------------------

def test_prepare_annotator(video):
  from data_prep import prepare  # pylint: disable=g-import-not-at-top
  annotator = prepare.make_annotator('auto', 64)   # data_prep.face registered 'auto' when imported
  annotator.begin('astronaut.mp4', None)
  frames = video.frames[64:76]
  out = list(annotator.annotate(iter(frames)))
  assert len(out) == len(frames)
  for (frame, ann), src, blank in zip(out, frames, video.blank[64:76]):
    np.testing.assert_array_equal(frame, src)  # the frames come back in order
    if blank:
      assert ann.drop == 'no_face'
    else:
      assert ann.drop is None and ann.landmarks.shape == (68, 2) and ann.pose.shape == (3,)
      x0, y0, x1, y1 = ann.box
      assert np.all((ann.landmarks > (x0, y0)) & (ann.landmarks < (x1, y1)))
  assert annotator.end()['face_detector'] == 'dlib'
  annotator.begin('blank.mp4', None)
  with pytest.raises(prepare.video_io.VideoError, match='blank.mp4: no usable face'):
    list(annotator.annotate(iter(video.frames[68:72])))
