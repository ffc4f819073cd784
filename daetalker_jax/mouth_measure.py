"""Reading the synthetic face's mouth (and irises) back from any frame by their reserved colours.

Library side of `data_prep.synthface_render` (which draws the face with these colours and re-exports
every name here): evaluation measures generated frames with it without importing data_prep. Three
colours are reserved -- mouth interior, iris and teeth -- and the renderer keeps every other colour
outside the `TOLERANCE` windows, so a frame needs no metadata to be measured.

`measure_frame` reads the mouth with soft weights (a smear counts as partly open); `strict_mouth` counts
only pixels within `STRICT_DISTANCE` of the mouth colours (the headline lip-sync metrics, DESIGN §7).
Coordinates are pixels (x right, y down) with pixel centres at integers.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

# Reserved colours (RGB). Nothing else in the image may come near them.
MOUTH_RGB = (90, 10, 20)
IRIS_RGB = (40, 90, 200)
TEETH_RGB = (245, 245, 240)
RESERVED = {'mouth': MOUTH_RGB, 'iris': IRIS_RGB, 'teeth': TEETH_RGB}

# Colour-distance windows of measure_frame, per reserved colour: weight 1 at RGB distance <= lo,
# 0 at >= hi, linear between (a pixel half covered by the colour gets a partial weight). Every
# palette colour lies further than hi + 10 from the reserved colour, so only the reserved parts
# count; the width absorbs h264/JPEG drift and 4:2:0 chroma smearing. Teeth are only counted next
# to mouth interior (the eye whites are only ~70 away from the teeth colour).
TOLERANCE = {'mouth': (30.0, 75.0), 'iris': (40.0, 95.0), 'teeth': (30.0, 58.0)}
# strict_mouth (DESIGN §7): a pixel is mouth interior / teeth only within this RGB distance of the
# colour, with no partial weights, so a smeared, half-rendered mouth does not count as open.
STRICT_DISTANCE = 30.0


def _weights(img: np.ndarray, name: str) -> np.ndarray:
  """Soft membership (float32 (H, W) in [0, 1]) of every pixel in a reserved colour."""
  d = np.sqrt(((img - np.asarray(RESERVED[name], np.float32)) ** 2).sum(-1))
  lo, hi = TOLERANCE[name]
  return np.clip((hi - d) / (hi - lo), 0.0, 1.0)


def _centroid(weights: np.ndarray) -> tuple[float, float] | None:
  total = float(weights.sum())
  if total <= 0:
    return None
  ys, xs = np.indices(weights.shape)
  return float((weights * xs).sum() / total), float((weights * ys).sum() / total)


def _check_frame(img: np.ndarray, fn: str) -> np.ndarray:
  img = np.asarray(img)
  if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
    raise ValueError(f'{fn}: expected uint8 (H, W, 3) RGB, got {img.dtype} {img.shape}')
  return img


def _teeth_kernel(h: int, w: int) -> np.ndarray:
  """The neighbourhood in which teeth must touch mouth interior (about 5% of the frame side)."""
  k = max(3, int(round(0.05 * max(h, w))) | 1)
  return np.ones((k, k), np.uint8)


def strict_mouth(img: np.ndarray) -> dict:
  """Strict open-mouth area of a frame (DESIGN §7): only pixels that clearly are the mouth colours.

  A pixel is mouth interior when its plain Euclidean RGB distance to `MOUTH_RGB` is at most
  `STRICT_DISTANCE` (30), and teeth when it is within 30 of `TEETH_RGB` and next to (within the
  `measure_frame` neighbourhood of, ~5% of the frame side) a strict mouth-interior pixel. Unlike
  `measure_frame` there are no partial weights: a blurred or half-rendered mouth, whose pixels are
  blends of the mouth and lip colours, counts as (mostly) closed.

  Args:
    img: uint8 (H, W, 3) RGB.

  Returns:
    interior: fraction of the image that is strict mouth interior.
    teeth: fraction of the image that is strict teeth next to it.
    area: interior + teeth, the strict open-mouth area (0 when closed).
  """
  img = _check_frame(img, 'strict_mouth')
  h, w = img.shape[:2]
  f = img.astype(np.float32)
  dist = lambda rgb: np.sqrt(((f - np.asarray(rgb, np.float32)) ** 2).sum(-1))
  interior = dist(MOUTH_RGB) <= STRICT_DISTANCE
  teeth = dist(TEETH_RGB) <= STRICT_DISTANCE
  if interior.any() and teeth.any():
    teeth &= cv2.dilate(interior.astype(np.uint8), _teeth_kernel(h, w)) > 0
  else:
    teeth[:] = False
  n_interior, n_teeth = int(interior.sum()), int(teeth.sum())
  return {'interior': n_interior / (h * w), 'teeth': n_teeth / (h * w),
          'area': (n_interior + n_teeth) / (h * w)}


def measure_frame(img: np.ndarray) -> dict:
  """Reads mouth opening and eye positions from a frame by its reserved colours.

  Works on any RGB frame (generated, decoded from h264/JPEG, or a model's output): it needs no
  metadata. Coordinates are pixels (x right, y down) with pixel centres at integers.

  Args:
    img: uint8 (H, W, 3) RGB.

  Returns:
    mouth_open: area fraction of the image covered by mouth interior + teeth (0 when closed).
    mouth_centroid: (x, y) of that area, or None.
    iris_left, iris_right: (x, y) iris centroids (left = smaller x), or None when not visible.
    roll: degrees, angle of the iris line (nan unless both irises are found).
    yaw_proxy: horizontal offset of the iris midpoint from the image centre in units of the iris
      distance (grows with yaw; nan unless both irises are found).
  """
  img = _check_frame(img, 'measure_frame')
  h, w = img.shape[:2]
  f = img.astype(np.float32)
  mouth = _weights(f, 'mouth')
  # Teeth count only next to mouth interior: elsewhere near-white (eye whites) is not a mouth.
  near_mouth = cv2.dilate((mouth > 0).astype(np.uint8), _teeth_kernel(h, w)) > 0
  teeth = _weights(f, 'teeth') * near_mouth
  opening = np.maximum(mouth, teeth)
  result = {'mouth_open': float(opening.sum() / (h * w)), 'mouth_centroid': _centroid(opening)}

  iris = _weights(f, 'iris')
  # Components of the (closed) iris mask: compression can split one iris into pieces.
  binary = cv2.morphologyEx((iris > 0).astype(np.uint8), cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
  n, labels = cv2.connectedComponents(binary, connectivity=8)
  mass = np.bincount(labels.ravel(), weights=iris.ravel(), minlength=n)[1:]  # label 0 = background
  min_mass = max(1.0, 2e-4 * h * w)
  eyes = []
  for i in np.argsort(-mass):  # the heaviest pieces that are far enough apart to be two eyes
    if mass[i] < min_mass or len(eyes) == 2:
      break
    c = _centroid(iris * (labels == i + 1))
    if c is not None and all(abs(c[0] - e[0]) > 0.12 * w for e in eyes):
      eyes.append(c)
  eyes.sort()
  left = right = None
  if len(eyes) == 2:
    left, right = eyes
  elif len(eyes) == 1:
    if eyes[0][0] < w / 2:
      left = eyes[0]
    else:
      right = eyes[0]
  result['iris_left'], result['iris_right'] = left, right
  if left is not None and right is not None:
    dx, dy = right[0] - left[0], right[1] - left[1]
    result['roll'] = math.degrees(math.atan2(dy, dx))
    result['yaw_proxy'] = ((left[0] + right[0]) / 2 - (w - 1) / 2) / max(math.hypot(dx, dy), 1e-6)
  else:
    result['roll'] = result['yaw_proxy'] = float('nan')
  return result
