"""The face a generic-identity method animates: a source video, one photo, or a prepared dataset clip.

  src = face_source.from_video('talk.mp4', size=256)    # every frame: detect, 68 landmarks, square crop
  src = face_source.from_image('photo.jpg', size=256)   # one frame
  src = face_source.from_dataset_clip(DATA_DIR, 'spk1_000', size=256)   # crops + landmarks as prepared

A `FaceSource` holds the full frames, the square face crops at the model's size, the 68 landmarks as fractions
of the crop side, each crop's box in frame pixels and whether a face was found. Frames without a face keep
`valid = False`: the pipelines pass them through untouched and count them. Crop boxes of a video are
smoothed over time (a centred moving average of the boxes of neighbouring frames with a face), so the crop
does not jitter with the detector. The crop is a square around the landmarks, `margin` times their extent.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from daetalker_jax import face_detect
from daetalker_jax.data import video_io
from daetalker_jax.inference.errors import GenerateError


@dataclasses.dataclass
class FaceSource:
  frames: np.ndarray      # (M, H, W, 3) uint8 full frames (for a dataset clip: the crops themselves)
  crops: np.ndarray       # (M, S, S, 3) uint8 face crops at the model's size
  landmarks: np.ndarray   # (M, 68, 2) float32 fractions of the crop side
  boxes: np.ndarray       # (M, 4) float32 crop box (x0, y0, x1, y1) in frame pixels
  valid: np.ndarray       # (M,) bool: a face (and its landmarks) was found
  paste: bool             # True: outputs are pasted back into `frames`; False: the crops are the output
  name: str

  def __len__(self) -> int:
    return len(self.crops)


def crop(frame: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
  """The square `box` (x0, y0, x1, y1) of `frame` resampled to (size, size); outside the frame: edge pixels."""
  x0, y0, x1, y1 = [float(v) for v in box]
  s = (x1 - x0) / size
  m = np.array([[1 / s, 0, (0.5 - x0) / s - 0.5], [0, 1 / s, (0.5 - y0) / s - 0.5]], np.float32)
  interp = cv2.INTER_AREA if s > 1 else cv2.INTER_LINEAR
  return cv2.warpAffine(frame, m, (size, size), flags=interp, borderMode=cv2.BORDER_REPLICATE)


def box_from_landmarks(points: np.ndarray, margin: float = 1.6) -> np.ndarray:
  """A square box centred on the landmarks' extent, `margin` times its larger side, a little below the
  centre of the points (they start at the brows, the chin is the bottom)."""
  lo, hi = points.min(0), points.max(0)
  cx, cy = (lo + hi) / 2
  side = margin * float(max(hi - lo))
  cy -= 0.05 * side
  return np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], np.float32)


def _landmarks(frame: np.ndarray, detector, predictor) -> np.ndarray | None:
  """68 landmarks (px) of the largest face in `frame`, or None."""
  boxes = detector(frame) or detector(frame, 1)
  if not boxes:
    return None
  import dlib  # pylint: disable=g-import-not-at-top
  b = max(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
  shape = predictor(frame, dlib.rectangle(int(b[0]), int(b[1]), int(b[2]) - 1, int(b[3]) - 1))
  return np.array([[p.x, p.y] for p in shape.parts()], np.float32)


def smooth_boxes(boxes: np.ndarray, valid: np.ndarray, radius: int = 3) -> np.ndarray:
  """Centre and side of each box averaged over the valid boxes within ±radius frames; invalid frames take the
  nearest valid frame's box."""
  out = boxes.copy()
  idx = np.flatnonzero(valid)
  if not len(idx):
    return out
  cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
  side = boxes[:, 2] - boxes[:, 0]
  for i in range(len(boxes)):
    near = idx[np.abs(idx - i) <= radius]
    if not len(near):
      near = idx[[np.argmin(np.abs(idx - i))]]
    c = np.array([cx[near].mean(), cy[near].mean()])
    s = side[near].mean()
    out[i] = [c[0] - s / 2, c[1] - s / 2, c[0] + s / 2, c[1] + s / 2]
  return out


def _annotate(frames: np.ndarray, size: int, name: str, detector: str, margin: float) -> FaceSource:
  det = face_detect.make_detector(detector)
  predictor = face_detect.load_shape_predictor()
  pts = [_landmarks(f, det, predictor) for f in frames]
  valid = np.array([p is not None for p in pts])
  h, w = frames.shape[1:3]
  side = min(h, w)                                  # no face anywhere: the centred square (never used)
  centre = np.array([(w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2], np.float32)
  raw = np.stack([box_from_landmarks(p, margin) if p is not None else centre for p in pts])
  boxes = smooth_boxes(raw, valid)
  crops = np.stack([crop(f, b, size) for f, b in zip(frames, boxes)])
  lms = np.zeros((len(frames), 68, 2), np.float32)
  for i, p in enumerate(pts):
    if p is not None:
      lms[i] = (p - boxes[i, :2]) / (boxes[i, 2] - boxes[i, 0])
  return FaceSource(frames=frames, crops=crops, landmarks=lms, boxes=boxes, valid=valid, paste=True, name=name)


def from_image(path: str, size: int, *, detector: str = 'auto', margin: float = 1.6) -> FaceSource:
  """One photo; GenerateError when it cannot be read or has no face."""
  img = cv2.imread(str(path), cv2.IMREAD_COLOR)
  if img is None:
    raise GenerateError(f'--image={path}: not a readable image')
  src = _annotate(cv2.cvtColor(img, cv2.COLOR_BGR2RGB)[None], size, str(path), detector, margin)
  if not src.valid[0]:
    raise GenerateError(f'--image={path}: no face found in the photo')
  return src


def from_video(path: str, size: int, *, detector: str = 'auto', margin: float = 1.6,
               max_frames: int | None = None) -> FaceSource:
  """Every frame of a video (at most `max_frames`); GenerateError when no frame has a face."""
  try:
    frames = []
    for f in video_io.iter_frames(path):
      frames.append(f)
      if max_frames and len(frames) >= max_frames:
        break
  except video_io.VideoError as e:
    raise GenerateError(f'--video: {e}') from None
  if not frames:
    raise GenerateError(f'--video={path}: no frames could be decoded')
  src = _annotate(np.stack(frames), size, str(path), detector, margin)
  if not src.valid.any():
    raise GenerateError(f'--video={path}: no face found in any of its {len(frames)} frames')
  return src


def from_dataset_clip(data_dir: str, clip_id: str, size: int) -> FaceSource:
  """A prepared clip: its crops (resized to `size`) and landmarks; outputs are crops (no paste-back)."""
  from daetalker_jax.inference import clips  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  ex = clips.find_clip(data_dir, clip_id, '--clip')
  f = ex['frames']
  imgs = np.stack([tf.io.decode_jpeg(j, channels=3).numpy() for j in f['image']])
  return from_crops(imgs, f['landmarks'], f['landmarks_valid'], size, f'{data_dir}:{clip_id}')


def from_crops(images: np.ndarray, landmarks: np.ndarray, valid: np.ndarray, size: int, name: str) -> FaceSource:
  """Face crops that are already prepared (uint8 (N, s, s, 3), landmarks (N, 68, 2) in crop pixels), resized to
  `size`; outputs are crops (no paste-back)."""
  side = images.shape[1]
  if side != size:
    interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    images = np.stack([cv2.resize(im, (size, size), interpolation=interp) for im in images])
  valid = np.asarray(valid, bool)
  if not valid.any():
    raise GenerateError(f'{name}: no frame has landmarks (prepare real video with --crop auto)')
  boxes = np.tile(np.array([0, 0, size, size], np.float32), (len(images), 1))
  return FaceSource(frames=images, crops=images, landmarks=np.asarray(landmarks, np.float32) / side,
                    boxes=boxes, valid=valid, paste=False, name=name)
