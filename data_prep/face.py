"""Face analysis for real video: detection, tracking, landmarks, smoothed crops, head pose.

`FaceTracker` turns a stream of RGB frames into a stream of `FrameAnnotation`s, one per frame, in
order. It is the `--crop auto` step of `data_prep.prepare`:

    tracker = FaceTracker(128)
    for ann in check_faces(tracker(frames), source=path):
      ...  # ann.crop (128,128,3) uint8 or None (then ann.drop_reason says why)

Per frame (the "analysis" stage):
  1. Detection. dlib's HOG frontal-face detector (`detector='dlib'`) or OpenCV's Haar cascade
     (`'haar'`, the fallback when dlib is missing). While a face is tracked, the detector runs
     only on a region of interest around the last box, rescaled so the face is ~100 px (the HOG
     window is 80 px), several times cheaper than a full frame. Every `detect_every` frames, or
     when the ROI finds nothing, it scans the whole frame (resized so that the smallest face of
     interest just fills the HOG window). After a second without a face, that search runs only
     every 5th frame. Among several detections the one overlapping the track is kept; with no
     track, one 1.5x wider than all others (the speaker before a crowd); with no clear winner
     the frame is dropped as 'several faces'. A face that jumps (no
     overlap with the last box, or 1.4x larger/smaller: a cut) is followed, but its first frame
     is dropped as 'face jumped' so that the clip and the smoothing split there.
  2. Landmarks: dlib's 68-point shape predictor on the full-resolution frame.
  3. A square box from the landmarks: side = `margin` x face size (the larger of the jaw width
     and the brow-to-chin height), centre at the landmark box centre raised by `lift` x face
     height, i.e. a little above the nose tip: the loose framing common for talking-face crops
     (the whole face, some hair and neck).
  4. Head pose by `cv2.solvePnP` of 14 landmarks against a generic 3D face (`pose_from_landmarks`).

Then the "smoothing" stage: the box centre, box side and the three angles are smoothed over time
by a weighted local-linear fit (a Savitzky-Golay filter of order 1 with Gaussian weights) over at
most `window` frames on each side, never across a dropped frame (a drop splits the clip anyway).
The fit is centred inside a run and stays unbiased for steady motion at the run's ends, where the
window is one-sided. Only `window` future frames are buffered, so memory does not grow with the
video. The box is then rounded to whole pixels, cut out (padded where it leaves the frame) and
resized to `size` x `size` with `cv2.INTER_AREA`.

Pose sign convention (degrees; the same as data_prep.synthface_render):
  yaw   > 0: the head turns to the subject's left, so the nose moves to the image right;
  pitch > 0: the head tilts up (chin up), the nose moves up in the image;
  roll  > 0: the face turns clockwise on screen (the image-right eye goes down). A frame turned
             by cv2.getRotationMatrix2D(angle=+a), which is counter-clockwise, reads roll - a.
All zero = looking straight into the camera. R = Rz(roll) Ry(-yaw) Rx(-pitch) in camera axes
(x right, y down, z forward) maps the generic face (frontal, camera-aligned) into the camera
frame; synthface writes the same R as Rz(roll) Ry(yaw) Rx(pitch) in axes with z towards the
camera. Angles are absolute but only as good as a generic face allows: a person whose proportions
differ from the model reads a constant offset of a few degrees, mostly in pitch (the astronaut
portrait in the tests, chin slightly down, reads pitch -9).
"""

from __future__ import annotations

import collections
import dataclasses
import math
import time
from collections.abc import Iterable, Iterator, Sequence

import cv2
import numpy as np

from daetalker_jax.data import video_io
# Detectors and the landmark model live in the library (evaluation uses them too); re-exported here.
from daetalker_jax.face_detect import dlib  # None without dlib-bin (the Haar cascade works without it)
from daetalker_jax.face_detect import load_shape_predictor, make_detector, shape_predictor_path
from data_prep import annotators


# Drop reasons (FrameAnnotation.drop_reason); the manifest counts them.
NO_FACE = 'no face'
SEVERAL_FACES = 'several faces'
FACE_TOO_SMALL = 'face too small'
FACE_AT_BORDER = 'face at border'
FACE_JUMPED = 'face jumped'  # the tracked face moved or resized too far in one frame: a cut
DROP_REASONS = (NO_FACE, SEVERAL_FACES, FACE_TOO_SMALL, FACE_AT_BORDER, FACE_JUMPED)
_MAX_ZOOM_STEP = 1.4  # detector-box size ratio between consecutive frames that counts as a cut
# After a face has been missing this many frames (a cutaway, a slide), the full-frame search
# (the costliest step) runs only every _SEARCH_PERIOD frames; the frames between are 'no face'.
_SEARCH_EVERY_FRAME_FOR = 25
_SEARCH_PERIOD = 5
_ROI = 0.8  # ROI half-side in detector-box widths
_DOMINANT = 1.5  # without a track, a face this many times wider than any other is the subject

# Generic 3D face (an anthropometric model, in cm), for 14 of dlib's 68 points. The widely copied
# table (glAnthropometric3DModel, as used by lincolnhard/head-pose-estimation) has x towards the
# image left, y up and z towards the camera; here it is converted to camera axes (x right, y down,
# z away from the camera) so that a face looking into the camera has rotation = identity.
POSE_LANDMARKS = (17, 21, 22, 26, 36, 39, 42, 45, 31, 35, 48, 54, 57, 8)
_MODEL_TABLE = np.array([
    [6.825897, 6.760612, 4.402142],    # 17 brow, outer end (image left)
    [1.330353, 7.122144, 6.903745],    # 21 brow, inner end
    [-1.330353, 7.122144, 6.903745],   # 22
    [-6.825897, 6.760612, 4.402142],   # 26
    [5.311432, 5.485328, 3.987654],    # 36 eye, outer corner
    [1.789930, 5.393625, 4.413414],    # 39 eye, inner corner
    [-1.789930, 5.393625, 4.413414],   # 42
    [-5.311432, 5.485328, 3.987654],   # 45
    [2.005628, 1.409845, 6.165652],    # 31 nostril wing
    [-2.005628, 1.409845, 6.165652],   # 35
    [2.774015, -2.080775, 5.048531],   # 48 mouth corner
    [-2.774015, -2.080775, 5.048531],  # 54
    [0.000000, -3.116408, 6.097667],   # 57 lower lip
    [0.000000, -7.415691, 4.070434],   # 8 chin
], np.float64)
FACE_MODEL_3D = -_MODEL_TABLE  # (14, 3) camera axes: x right, y down, z forward


class NoFaceError(ValueError):
  """No face was found anywhere in a source file (the message names the file)."""


@dataclasses.dataclass
class FrameAnnotation:
  """What the tracker says about one frame. A dropped frame has only `index` and `drop_reason`."""
  index: int                                       # position in the input stream
  crop: np.ndarray | None = None                   # (size, size, 3) uint8 RGB
  box: tuple[float, float, float, float] | None = None  # x0, y0, x1, y1 of the crop, source px
  landmarks: np.ndarray | None = None              # (68, 2) float32, crop pixels
  pose: tuple[float, float, float] | None = None   # yaw, pitch, roll, degrees (smoothed)
  drop_reason: str | None = None
  source_landmarks: np.ndarray | None = None       # (68, 2) float32, source px (unsmoothed)

  @property
  def kept(self) -> bool:
    return self.drop_reason is None


@dataclasses.dataclass
class _Raw:
  """Per-frame analysis before temporal smoothing."""
  index: int
  frame: np.ndarray | None = None
  landmarks: np.ndarray | None = None  # (68, 2) float64, source px
  box: np.ndarray | None = None        # (3,) cx, cy, side in source px
  pose: np.ndarray | None = None       # (3,) yaw, pitch, roll deg
  drop_reason: str | None = None


@dataclasses.dataclass
class _Track:
  """What the tracker remembers between frames of one stream."""
  det: np.ndarray | None = None    # detector box (x0, y0, x1, y1) of the last face, source px
  face_px: float | None = None     # its face size (face_size of the landmarks), px
  tracking: bool = False           # False once the face is lost (det is then the last seen)
  last_full: int = -(10 ** 9)      # frame of the last whole-frame detection
  lost_since: int | None = None    # first frame of the current absence


# ----------------------------------------------------------------------------------------------
# Geometry helpers.
# ----------------------------------------------------------------------------------------------

def _iou(a: np.ndarray, b: np.ndarray) -> float:
  """Intersection over union of two (x0, y0, x1, y1) boxes."""
  ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
  iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
  inter = ix * iy
  union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
  return inter / union if union > 0 else 0.0


def face_size(landmarks: np.ndarray) -> float:
  """Face size in px: max(jaw width, brow-to-chin height); stable under yaw and roll."""
  width = np.linalg.norm(landmarks[16] - landmarks[0])
  height = np.linalg.norm(landmarks[17:27].mean(0) - landmarks[8])
  return float(max(width, height))


def box_from_landmarks(landmarks: np.ndarray, *, margin: float = 1.7,
                       lift: float = 0.1) -> np.ndarray:
  """Square crop (cx, cy, side) in source px from (68, 2) landmarks.

  side = margin * face_size; the centre is the landmark box centre moved up by lift * face
  height (the landmarks stop at the brows, the crop should include the forehead).
  """
  lo, hi = landmarks.min(0), landmarks.max(0)
  cx, cy = (lo + hi) / 2
  height = hi[1] - lo[1]
  return np.array([cx, cy - lift * height, margin * face_size(landmarks)], np.float64)


def square_to_corners(box: np.ndarray) -> tuple[int, int, int]:
  """(cx, cy, side) float → integer top-left corner and side of the pixels that are cut out."""
  side = max(1, int(round(box[2])))
  x0 = int(round(box[0] - side / 2))
  y0 = int(round(box[1] - side / 2))
  return x0, y0, side


def crop_square(frame: np.ndarray, x0: int, y0: int, side: int, size: int, *,
                pad: str = 'edge') -> np.ndarray:
  """Cuts the square [x0, x0+side) x [y0, y0+side) out of `frame` and resizes it to `size`.

  Parts outside the frame are filled by repeating the edge pixels (`pad='edge'`), mirroring
  (`'reflect'`) or black (`'black'`).
  """
  h, w = frame.shape[:2]
  ix0, iy0 = max(x0, 0), max(y0, 0)
  ix1, iy1 = min(x0 + side, w), min(y0 + side, h)
  if ix1 <= ix0 or iy1 <= iy0:
    region = np.zeros((side, side, 3), np.uint8)
  else:
    region = frame[iy0:iy1, ix0:ix1]
    top, left = iy0 - y0, ix0 - x0
    bottom, right = y0 + side - iy1, x0 + side - ix1
    if top or left or bottom or right:
      border = {'edge': cv2.BORDER_REPLICATE, 'reflect': cv2.BORDER_REFLECT_101,
                'black': cv2.BORDER_CONSTANT}[pad]
      if pad == 'reflect' and max(top, bottom) >= region.shape[0] or \
         pad == 'reflect' and max(left, right) >= region.shape[1]:
        border = cv2.BORDER_REPLICATE  # reflection needs a region larger than the pad
      region = cv2.copyMakeBorder(np.ascontiguousarray(region), top, bottom, left, right,
                                  border, value=(0, 0, 0))
  if region.shape[0] == size and region.shape[1] == size:
    return np.ascontiguousarray(region)
  return cv2.resize(region, (size, size), interpolation=cv2.INTER_AREA)


def outside_fraction(x0: int, y0: int, side: int, width: int, height: int) -> float:
  """Fraction of the square's area that lies outside a width x height frame."""
  ix = max(0, min(x0 + side, width) - max(x0, 0))
  iy = max(0, min(y0 + side, height) - max(y0, 0))
  return 1.0 - ix * iy / float(side * side)


# ----------------------------------------------------------------------------------------------
# Head pose.
# ----------------------------------------------------------------------------------------------

def rotation_to_euler(rot: np.ndarray) -> tuple[float, float, float]:
  """Rotation (generic face → camera axes) → (yaw, pitch, roll) degrees, module convention."""
  # rot = Rz(r) Ry(b) Rx(a) with b = -yaw, a = -pitch (rotations about camera x right, y down).
  b = -math.asin(float(np.clip(rot[2, 0], -1.0, 1.0)))
  a = math.atan2(rot[2, 1], rot[2, 2])
  r = math.atan2(rot[1, 0], rot[0, 0])
  return -math.degrees(b), -math.degrees(a), math.degrees(r)


def euler_to_rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
  """Inverse of `rotation_to_euler` (degrees → 3x3), for tests and synthetic renders."""
  a, b, r = math.radians(-pitch), math.radians(-yaw), math.radians(roll)
  rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
  ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
  rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
  return rz @ ry @ rx


def camera_matrix(width: int, height: int) -> np.ndarray:
  """Pinhole camera with focal length = frame width (~53° horizontal field), centred."""
  f = float(width)
  return np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], np.float64)


def pose_from_landmarks(landmarks: np.ndarray, width: int,
                        height: int) -> tuple[float, float, float] | None:
  """(yaw, pitch, roll) degrees from (68, 2) source-px landmarks, or None if solvePnP fails."""
  image_pts = np.ascontiguousarray(landmarks[list(POSE_LANDMARKS)], np.float64)
  # Start in front of the camera at roughly the right distance (model ~14 cm wide), so the
  # iterative solver cannot settle on the mirror solution behind the camera.
  span = float(np.ptp(image_pts[:, 0])) or 1.0
  f = float(width)
  centre = image_pts.mean(0)
  dist = f * 13.6 / span
  tvec0 = np.array([[(centre[0] - width / 2) * dist / f], [(centre[1] - height / 2) * dist / f],
                    [dist]], np.float64)
  rvec0 = np.zeros((3, 1), np.float64)
  ok, rvec, _ = cv2.solvePnP(FACE_MODEL_3D, image_pts, camera_matrix(width, height), None,
                             rvec0, tvec0, useExtrinsicGuess=True, flags=cv2.SOLVEPNP_ITERATIVE)
  if not ok:
    return None
  rot, _ = cv2.Rodrigues(rvec)
  return rotation_to_euler(rot)


# ----------------------------------------------------------------------------------------------
# Temporal smoothing.
# ----------------------------------------------------------------------------------------------

def local_linear(values: np.ndarray, offsets: np.ndarray, sigma: float) -> np.ndarray:
  """Weighted least-squares line through (offsets, values), evaluated at offset 0.

  values (K, D), offsets (K,) frame offsets from the frame being smoothed; Gaussian weights.
  For a symmetric window this is a Gaussian-weighted mean; for a one-sided window (the ends of a
  run) it extrapolates the local trend instead of lagging behind it.
  """
  if len(offsets) == 1:
    return values[0]
  k = offsets.astype(np.float64)
  w = np.exp(-0.5 * (k / sigma) ** 2)
  s0, s1, s2 = w.sum(), (w * k).sum(), (w * k * k).sum()
  sv = (w[:, None] * values).sum(0)
  skv = (w[:, None] * k[:, None] * values).sum(0)
  det = s0 * s2 - s1 * s1
  if det <= 1e-9 * s0 * s0:
    return sv / s0
  return (s2 * sv - s1 * skv) / det


# ----------------------------------------------------------------------------------------------
# The tracker.
# ----------------------------------------------------------------------------------------------

class FaceTracker:
  """Streaming face detection, tracking, landmarks, smoothed crops and head pose.

  Calling the tracker on an iterable of frames (uint8 (H, W, 3) RGB, one size per stream)
  returns an iterator of `FrameAnnotation`, one per input frame, in order; each call starts a
  fresh track, so one tracker can serve many files (not concurrently). Memory: `window` + 1
  frames are held.
  """

  def __init__(self, size: int, *, window: int = 5, min_face: float = 64.0,
               detector: str = 'auto', margin: float = 1.7, lift: float = 0.1,
               detect_every: int = 25, pad: str = 'edge',
               max_outside: float = 0.4, smooth_pose: bool = True, crops: bool = True):
    """Args:
      size: side of the output crops in px.
      window: smoothing half-window in frames (look-ahead buffer); 0 turns smoothing off.
      min_face: faces smaller than this (face_size, source px) are dropped ('face too small').
      detector: 'dlib', 'haar' or 'auto'.
      margin: crop side / face size (1.6-1.8 frames the head like common talking-face crops).
      lift: crop centre above the landmark box centre, as a fraction of the face height.
      detect_every: full-frame detection period while tracking (ROI detection in between).
      pad: how the crop is filled outside the frame: 'edge', 'reflect' or 'black'.
      max_outside: frames whose crop box lies more than this fraction outside the frame are
        dropped ('face at border').
      smooth_pose: smooth yaw/pitch/roll with the same filter as the box.
      crops: cut out the crops (False when the caller crops from `box` itself).
    """
    if size < 8:
      raise ValueError(f'crop size must be >= 8 px, got {size}')
    if window < 0:
      raise ValueError(f'smoothing window must be >= 0, got {window}')
    if pad not in ('edge', 'reflect', 'black'):
      raise ValueError(f'pad must be edge, reflect or black, got {pad!r}')
    self.size = int(size)
    self.window = int(window)
    self.min_face = float(min_face)
    self.margin = float(margin)
    self.lift = float(lift)
    self.detect_every = max(1, int(detect_every))
    self.pad = pad
    self.max_outside = float(max_outside)
    self.smooth_pose = smooth_pose
    self.crops = crops
    self.detector_name = 'dlib' if detector == 'auto' and dlib is not None else (
        'haar' if detector == 'auto' else detector)
    self._detector = make_detector(detector)
    if dlib is None:
      raise ImportError('68-point landmarks need the dlib module (pip install dlib-bin)')
    self._predictor = load_shape_predictor(shape_predictor_path())
    # Of the last call, for profiling: detector runs ('full', 'roi') and seconds per stage.
    self.stats = collections.Counter()

  # -- per-frame analysis ------------------------------------------------------------------------

  def _detect_full(self, frame: np.ndarray, face_px: float | None) -> list[np.ndarray]:
    """Whole-frame detection; boxes in source px.

    The frame is resized so that the smallest face worth finding just fills the detector's
    window: `min_face` while searching, or 60% of the tracked face while tracking (a much
    smaller second face cannot be confused with it). For large faces that is a big downscale,
    which is where most of the speed comes from (HOG cost ~ pixels).
    """
    h, w = frame.shape[:2]
    smallest = max(self.min_face, 0.6 * face_px) if face_px else self.min_face
    # Detector boxes are ~0.8 x face_size (jaw width; no brows-to-chin margin).
    scale = self._detector.min_size / (0.8 * smallest)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    image = frame if size == (w, h) else cv2.resize(
        frame, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    self.stats['full'] += 1
    return [b / np.array([size[0] / w, size[1] / h] * 2) for b in self._detector(image, 0)]

  def _detect_roi(self, frame: np.ndarray, prev: np.ndarray) -> list[np.ndarray]:
    """Detection in a square 1.6x the previous detector box, rescaled so the face is ~100 px."""
    h, w = frame.shape[:2]
    bw = max(prev[2] - prev[0], prev[3] - prev[1])
    cx, cy = (prev[0] + prev[2]) / 2, (prev[1] + prev[3]) / 2
    x0, y0 = int(max(0, cx - _ROI * bw)), int(max(0, cy - _ROI * bw))
    x1, y1 = int(min(w, cx + _ROI * bw)), int(min(h, cy + _ROI * bw))
    if x1 - x0 < 8 or y1 - y0 < 8:
      return []
    scale = 100.0 / bw
    region = frame[y0:y1, x0:x1]
    image = cv2.resize(region, (max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale))),
                       interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    self.stats['roi'] += 1
    return [b / scale + np.array([x0, y0, x0, y0]) for b in self._detector(image, 0)]

  def _choose(self, boxes: list[np.ndarray], prev: np.ndarray | None,
              recent: np.ndarray | None = None) -> tuple[np.ndarray | None, str | None]:
    """Picks the tracked face among detections: (box, None) or (None, drop reason).

    prev: the tracked box of the previous frame, or else `recent`, the last box of a track lost
    moments ago. The detection that overlaps it clearly wins; otherwise a single detection (the
    caller checks it for a jump), or one 1.5x wider than all others; else 'several faces'.
    """
    if not boxes:
      return None, NO_FACE
    ref = prev if prev is not None else recent
    if ref is not None and len(boxes) > 1:
      ious = sorted(((_iou(b, ref), i) for i, b in enumerate(boxes)), reverse=True)
      if ious[0][0] > 0.3 and ious[1][0] < 0.1:
        return boxes[ious[0][1]], None
    if len(boxes) == 1:
      return boxes[0], None
    widths = sorted(((b[2] - b[0], i) for i, b in enumerate(boxes)), reverse=True)
    if widths[0][0] >= _DOMINANT * widths[1][0]:  # the speaker, and a face in the background
      return boxes[widths[0][1]], None
    return None, SEVERAL_FACES

  def _analyze(self, index: int, frame: np.ndarray, track: _Track) -> _Raw:
    """Detection → landmarks → raw box and pose for one frame; updates `track` in place."""
    h, w = frame.shape[:2]
    prev = track.det if track.tracking else None
    boxes = None
    t0 = time.perf_counter()
    if prev is not None and index - track.last_full < self.detect_every:
      boxes = self._detect_roi(frame, prev)
      if len(boxes) != 1:
        boxes = None
    recent = None  # the box of a face lost moments ago: breaks ties, hints at the size
    if boxes is None:
      lost = 0 if track.lost_since is None else index - track.lost_since
      if lost >= _SEARCH_EVERY_FRAME_FOR and lost % _SEARCH_PERIOD:
        return _Raw(index, drop_reason=NO_FACE)  # long absence: look only now and then
      if prev is None and track.det is not None and lost < _SEARCH_EVERY_FRAME_FOR:
        recent = track.det
      hint = track.face_px if prev is not None or recent is not None else None
      boxes = self._detect_full(frame, hint)
      track.last_full = index
    det, reason = self._choose(boxes, prev, recent)
    t1 = time.perf_counter()
    self.stats['seconds_detect'] += t1 - t0
    if det is None:
      if reason == NO_FACE:  # lost: search the whole frame from now on
        track.tracking = False
        if track.lost_since is None:
          track.lost_since = index
      return _Raw(index, drop_reason=reason)
    track.tracking, track.lost_since, track.det = True, None, det
    if prev is not None:
      ratio = (det[2] - det[0]) / (prev[2] - prev[0])
      if _iou(det, prev) < 0.05 or not 1 / _MAX_ZOOM_STEP < ratio < _MAX_ZOOM_STEP:
        # A cut (or a switch to another face): follow the new face, but drop this frame so the
        # clip is split and the smoothing does not blend the two shots.
        track.face_px = (det[2] - det[0]) / 0.8
        return _Raw(index, drop_reason=FACE_JUMPED)
    rect = dlib.rectangle(int(round(det[0])), int(round(det[1])), int(round(det[2])) - 1,
                          int(round(det[3])) - 1)
    shape = self._predictor(frame, rect)
    lm = np.array([(p.x, p.y) for p in shape.parts()], np.float64)  # (68, 2)
    t2 = time.perf_counter()
    self.stats['seconds_landmarks'] += t2 - t1
    track.face_px = face_size(lm)
    if track.face_px < self.min_face:
      return _Raw(index, drop_reason=FACE_TOO_SMALL)
    box = box_from_landmarks(lm, margin=self.margin, lift=self.lift)
    pose = pose_from_landmarks(lm, w, h)
    self.stats['seconds_pose'] += time.perf_counter() - t2
    return _Raw(index, frame=frame, landmarks=lm, box=box,
                pose=np.array(pose if pose is not None else (np.nan,) * 3))

  # -- smoothing and output ----------------------------------------------------------------------

  def _emit(self, cur: _Raw, past: Sequence[_Raw], future: Sequence[_Raw]) -> FrameAnnotation:
    if cur.drop_reason is not None:
      return FrameAnnotation(cur.index, drop_reason=cur.drop_reason)
    run = list(past) + [cur] + list(future)
    offsets = np.array([r.index - cur.index for r in run])
    sigma = max(self.window / 2.0, 0.5)
    box = local_linear(np.stack([r.box for r in run]), offsets, sigma)
    pose = cur.pose
    if self.smooth_pose:
      good = [i for i, r in enumerate(run) if np.all(np.isfinite(r.pose))]
      if good:
        pose = local_linear(np.stack([run[i].pose for i in good]), offsets[good], sigma)
    h, w = cur.frame.shape[:2]
    x0, y0, side = square_to_corners(box)
    if outside_fraction(x0, y0, side, w, h) > self.max_outside:
      return FrameAnnotation(cur.index, drop_reason=FACE_AT_BORDER)
    t0 = time.perf_counter()
    crop = crop_square(cur.frame, x0, y0, side, self.size, pad=self.pad) if self.crops else None
    self.stats['seconds_crop'] += time.perf_counter() - t0
    lm = ((cur.landmarks - (x0, y0)) * (self.size / side)).astype(np.float32)
    return FrameAnnotation(
        index=cur.index, crop=crop, box=(float(x0), float(y0), float(x0 + side), float(y0 + side)),
        landmarks=lm,
        pose=None if not np.all(np.isfinite(pose)) else tuple(float(v) for v in pose),
        source_landmarks=cur.landmarks.astype(np.float32))

  def __call__(self, frames: Iterable[np.ndarray]) -> Iterator[FrameAnnotation]:
    self.stats = collections.Counter()
    track = _Track()
    history: collections.deque[_Raw] = collections.deque(maxlen=max(self.window, 1))
    pending: collections.deque[_Raw] = collections.deque()
    shape = None

    def emit_first() -> FrameAnnotation:
      cur = pending.popleft()
      future = []
      for r in list(pending)[:self.window]:
        if r.drop_reason is not None:
          break
        future.append(r)
      past = list(history)[-self.window:] if self.window else []
      ann = self._emit(cur, past, future)
      cur.frame = None  # past frames only lend their box and pose to the filter
      if cur.drop_reason is None:
        history.append(cur)
      else:
        history.clear()
      return ann

    for index, frame in enumerate(frames):
      frame = np.asarray(frame)
      if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f'frame {index}: expected uint8 (H, W, 3) RGB, got {frame.dtype} '
                         f'{frame.shape}')
      if shape is None:
        shape = frame.shape
      elif frame.shape != shape:
        raise ValueError(f'frame {index}: size {frame.shape} differs from the first frame {shape}')
      pending.append(self._analyze(index, frame, track))
      while len(pending) > self.window:
        yield emit_first()
    while pending:
      yield emit_first()


# ----------------------------------------------------------------------------------------------
# Stream helpers for prepare.py.
# ----------------------------------------------------------------------------------------------

def check_faces(annotations: Iterable[FrameAnnotation], source: str) -> Iterator[FrameAnnotation]:
  """Passes annotations through; raises NoFaceError naming `source` if no frame kept a face."""
  total = kept = 0
  reasons = collections.Counter()
  for ann in annotations:
    total += 1
    if ann.kept:
      kept += 1
    else:
      reasons[ann.drop_reason] += 1
    yield ann
  if total == 0:
    raise NoFaceError(f'{source}: no frames decoded')
  if kept == 0:
    why = ', '.join(f'{k}: {v}' for k, v in reasons.most_common())
    raise NoFaceError(f'{source}: no usable face in any of {total} frames ({why})')


@dataclasses.dataclass
class SplitStats:
  """Counts from `split_clips`: what became clips and what was skipped."""
  clips: int = 0
  frames_in_clips: int = 0
  short_pieces: int = 0        # runs of kept frames shorter than min_frames
  short_frames: int = 0
  dropped: collections.Counter = dataclasses.field(default_factory=collections.Counter)


def split_clips(annotations: Iterable[FrameAnnotation], *, min_frames: int, max_frames: int,
                stats: SplitStats | None = None) -> Iterator[list[FrameAnnotation]]:
  """Groups a stream of annotations into clips of consecutive kept frames.

  A dropped frame ends a clip. Runs shorter than `min_frames` are skipped (counted in `stats`).
  Runs longer than `max_frames` are cut into pieces of at most `max_frames`, none shorter than
  `max_frames // 2`, so no frame of a long run is lost (needs max_frames >= 2 * min_frames).
  Holds at most max_frames + min_frames annotations.
  """
  if min_frames < 1 or max_frames < 2 * min_frames:
    raise ValueError(f'need 1 <= min_frames and max_frames >= 2*min_frames, got '
                     f'{min_frames}, {max_frames}')
  stats = stats if stats is not None else SplitStats()
  run: list[FrameAnnotation] = []

  def finish(piece):
    stats.clips += 1
    stats.frames_in_clips += len(piece)
    return piece

  def close_run():
    if len(run) < min_frames:
      if run:
        stats.short_pieces += 1
        stats.short_frames += len(run)
      return []
    if len(run) <= max_frames:
      return [finish(list(run))]
    half = len(run) // 2  # max < len < max + min: two pieces, each >= max/2 >= min
    return [finish(run[:half]), finish(run[half:])]

  for ann in annotations:
    if not ann.kept:
      stats.dropped[ann.drop_reason] += 1
      yield from close_run()
      run = []
      continue
    run.append(ann)
    if len(run) >= max_frames + min_frames:
      yield finish(run[:max_frames])
      run = run[max_frames:]
  yield from close_run()


# ----------------------------------------------------------------------------------------------
# `--crop auto` for data_prep.prepare.
# ----------------------------------------------------------------------------------------------

@annotators.register('auto')
class AutoAnnotator(annotators.FrameAnnotator):
  """`--crop auto[:dlib|haar]` of data_prep.prepare: FaceTracker behind the FrameAnnotator interface.

  prepare crops from the box itself (black padding), so the tracker skips its own crops here; landmarks
  are handed over in source pixels.
  """

  def __init__(self, arg: str, size: int):
    try:
      self._tracker = FaceTracker(size, detector=arg or 'auto', crops=False)
    except (ValueError, ImportError, FileNotFoundError) as e:
      raise annotators.AnnotatorError(f'--crop auto:{arg}: {e}') from None
    self._source = ''

  def begin(self, source, info) -> None:
    del info
    self._source = str(source)

  def annotate(self, frames):
    pending = collections.deque()  # frames the tracker has read but not yet annotated

    def remember(stream):
      for frame in stream:
        pending.append(frame)
        yield frame

    try:
      for ann in check_faces(self._tracker(remember(frames)), self._source):
        frame = pending.popleft()
        if not ann.kept:  # prepare's reasons are identifiers: 'no_face', 'short_clip'
          yield frame, annotators.Annotation(drop=ann.drop_reason.replace(' ', '_'))
          continue
        pose = np.asarray(ann.pose if ann.pose is not None else (0.0, 0.0, 0.0), np.float32)
        yield frame, annotators.Annotation(box=ann.box, landmarks=ann.source_landmarks, pose=pose)
    except NoFaceError as e:
      raise video_io.VideoError(str(e)) from None

  def end(self) -> dict:
    return dict(face_detector=self._tracker.detector_name,
                face_detections=dict(self._tracker.stats))
