"""Paste-back: the generated face crop blended into the source video it was cropped from.

A prepared dataset stores the crop box of every frame; the face is warped into that box and blended with a
feathered mask, so the crop's edge does not show. Separate from the scored output: the metrics always read
the model's own decodes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
import functools
import os

import numpy as np

from daetalker_jax.data import video_io
from daetalker_jax.inference import clips
from daetalker_jax.inference.errors import GenerateError


def paste_boxes(data_dir: str, source: str) -> np.ndarray:
  """(M, 4) crop box of every frame of `source` (frame index → box), filled in where no clip covers it.

  Frames not in any clip (no face found, or cut) take the box of the nearest covered frame.
  """
  want = os.path.realpath(source)
  found: dict[int, np.ndarray] = {}
  for ex in clips.clip_examples(data_dir):
    src = ex['source'].decode()
    if os.path.realpath(src) != want and os.path.basename(src) != os.path.basename(want):
      continue
    start = int(ex['start_frame'])
    for i, box in enumerate(np.asarray(ex['frames']['box'], np.float32)):
      found[start + i] = box
  if not found:
    raise GenerateError(f'--paste-back={source}: no clip of this source video in {data_dir}')
  idx = np.array(sorted(found))
  boxes = np.stack([found[i] for i in idx])
  full = np.arange(idx[-1] + 1)
  nearest = np.clip(np.searchsorted(idx, full), 0, len(idx) - 1)
  left = np.clip(nearest - 1, 0, len(idx) - 1)
  use_left = np.abs(idx[left] - full) < np.abs(idx[nearest] - full)
  return boxes[np.where(use_left, left, nearest)]


@functools.lru_cache(maxsize=4)
def feather_mask(size: int, feather: float = 0.12) -> np.ndarray:
  """(S, S) float32 alpha: 1 inside, falling linearly to exactly 0 on the outermost pixels (`feather`·S)."""
  ramp = max(1.0, feather * size)
  d = np.minimum(np.arange(size), size - 1 - np.arange(size)).astype(np.float32)  # pixels to the edge row
  r = np.clip(d / ramp, 0.0, 1.0).astype(np.float32)
  return np.minimum(r[:, None], r[None, :])


def paste_face(frame: np.ndarray, face: np.ndarray, box: np.ndarray) -> np.ndarray:
  """Pastes `face` (S, S, 3) uint8 into `frame` (H, W, 3) uint8 at `box` (x0, y0, x1, y1) with a feather."""
  import cv2  # pylint: disable=g-import-not-at-top
  h, w = frame.shape[:2]
  s = face.shape[0]
  x0, y0, x1, y1 = [float(v) for v in box]
  # Face pixel centre (i + 0.5) maps to x0 + (i + 0.5)·sx; cv2's affine maps pixel centres (integers).
  sx, sy = (x1 - x0) / s, (y1 - y0) / s
  m = np.array([[sx, 0, x0 + 0.5 * sx - 0.5], [0, sy, y0 + 0.5 * sy - 0.5]], np.float32)
  interp = cv2.INTER_LINEAR if sx >= 1 else cv2.INTER_AREA
  warped = cv2.warpAffine(face, m, (w, h), flags=interp, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
  alpha = cv2.warpAffine(feather_mask(s), m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                         borderValue=0)[..., None]
  out = frame.astype(np.float32) * (1 - alpha) + warped.astype(np.float32) * alpha
  return np.clip(np.round(out), 0, 255).astype(np.uint8)


def output_size(source: str) -> tuple[int, int]:
  """(width, height) of the pasted video: the source's, which must be even for h264/yuv420p."""
  try:
    info = video_io.probe(source)
  except video_io.VideoError as e:
    raise GenerateError(f'--paste-back: {e}') from None
  if info.width % 2 or info.height % 2:
    raise GenerateError(f'--paste-back={source}: frame size {info.width}x{info.height} is odd; '
                        'h264/yuv420p needs even sizes')
  return info.width, info.height


def iter_pasted(faces: Iterable[np.ndarray], source: str, data_dir: str) -> Iterator[np.ndarray]:
  """Batches of source frames with the generated faces (batches of (b, S, S, 3) uint8) pasted in.

  A source shorter than the audio holds its last frame.
  """
  boxes = paste_boxes(data_dir, source)
  frames = video_io.iter_frames(source)
  last = None
  k = 0
  try:
    for batch in faces:
      out = []
      for face in batch:
        frame = next(frames, None)
        if frame is None:
          if last is None:
            raise GenerateError(f'--paste-back={source}: no frames could be decoded')
          frame = last
        last = frame
        out.append(paste_face(frame, face, boxes[min(k, len(boxes) - 1)]))
        k += 1
      yield np.stack(out)
  finally:
    frames.close()
