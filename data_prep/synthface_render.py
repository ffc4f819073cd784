"""Drawing and measuring the synthetic face (DESIGN §4).

The face is a set of 3D feature points on an ellipsoidal head (outline, hair cap, brows, eyes with
iris and pupil, nose, lips, mouth interior, teeth). Each frame rotates them by the head pose and
projects them orthographically (weak perspective), so yaw and pitch look like a head turning, and
the line between the two irises is tilted by exactly the roll angle. Drawing is OpenCV with
anti-aliased polygons on a supersampled canvas, downsampled with area averaging.

Three colours are reserved so that any frame -- generated, re-encoded, or produced by a model --
can be measured without the generator's metadata (`measure_frame`): the mouth interior, the iris
and the teeth. Every other colour the renderer uses (`PALETTE`, and the background texture range)
stays well outside the colour windows `TOLERANCE` that measure_frame uses for them. The colours and
the measurements (`measure_frame`, `strict_mouth`) live in `daetalker_jax.mouth_measure`, so that
evaluation needs no data_prep; they are re-exported here.

Pose convention: R = Rz(roll) @ Ry(yaw) @ Rx(pitch) in image axes (x right, y down, z towards the
camera). Positive yaw moves the nose to the image's right, positive pitch moves it up, positive
roll turns the face clockwise on screen (the right eye goes down): roll = atan2(dy, dx) of the
iris line in image coordinates.
"""
from __future__ import annotations

import functools
import math

import cv2
import numpy as np

# The reserved colours and the measurements live in the library (daetalker_jax.mouth_measure); they are
# re-exported here, so data_prep.synthface_render.measure_frame etc. keep working.
from daetalker_jax.mouth_measure import (  # noqa: F401 (re-exported)
    IRIS_RGB, MOUTH_RGB, RESERVED, STRICT_DISTANCE, TEETH_RGB, TOLERANCE, measure_frame, strict_mouth)

# Every other colour drawn (RGB).
PALETTE = {
    'skin': (232, 186, 154),
    'skin_shade': (206, 156, 124),
    'neck': (196, 146, 116),
    'cheek': (232, 162, 142),
    'hair': (128, 102, 76),
    'brow': (122, 98, 78),
    'lid': (150, 108, 88),
    'lash': (125, 100, 92),
    'sclera': (218, 206, 188),
    'pupil': (30, 45, 95),
    'nose': (214, 160, 128),
    'nostril': (170, 116, 96),
    'lips': (192, 104, 104),
    'lip_line': (152, 88, 82),
    'shirt': (72, 104, 92),
}
# The background texture blends these two colours (every blend is a convex combination).
BACKGROUND_RGB = ((150, 162, 120), (112, 128, 98))

_SUPERSAMPLE_TARGET = 256  # draw on a canvas of at least this many pixels, then INTER_AREA down.


def _surface(u: np.ndarray, v: np.ndarray, dz: np.ndarray | float = 0.0) -> np.ndarray:
  """Points on the front of the unit head ellipsoid at normalised (u, v), pushed out by dz."""
  u, v = np.broadcast_arrays(np.asarray(u, np.float64), np.asarray(v, np.float64))
  w = np.sqrt(np.clip(1.0 - u * u - v * v, 0.0, None)) + dz
  return np.stack([u, v, w], axis=-1)  # (..., 3) in units of the semi-axes (a, b, c)


@functools.lru_cache(maxsize=1)
def _ellipsoid_points() -> tuple[np.ndarray, np.ndarray]:
  """Sample points of the whole head ellipsoid (for the outline) and of the hair cap."""
  th = np.linspace(0.0, np.pi, 25)[1:-1]  # polar angle from the top (-y)
  ph = np.linspace(0.0, 2 * np.pi, 48, endpoint=False)
  th, ph = np.meshgrid(th, ph, indexing='ij')
  pts = np.stack([np.sin(th) * np.cos(ph), -np.cos(th), np.sin(th) * np.sin(ph)], -1).reshape(-1, 3)
  pts = np.concatenate([pts, [[0.0, -1.0, 0.0], [0.0, 1.0, 0.0]]])
  # Hair: a cap above a hairline that rises towards the temples.
  hair = pts[pts[:, 1] < -0.5 + 0.12 * np.abs(pts[:, 0])]
  return pts, hair


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
  y, p, r = (math.radians(x) for x in (yaw, pitch, roll))
  rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
  ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
  rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
  return rz @ ry @ rx


@functools.lru_cache(maxsize=8)
def background(size: int) -> np.ndarray:
  """The fixed textured background (uint8 (size, size, 3) RGB); the same for every clip and seed."""
  yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
  t = (0.5 + 0.22 * np.sin(2 * np.pi * (3 * xx + 2 * yy)) +
       0.16 * np.sin(2 * np.pi * (5 * yy - 1.5 * xx) + 1.0) +
       0.12 * np.cos(2 * np.pi * 7 * np.hypot(xx - 0.3, yy - 0.7)))
  rng = np.random.default_rng(20230331)  # fixed: the background is part of the dataset's identity
  noise = cv2.GaussianBlur(rng.standard_normal((size, size)), (0, 0), max(0.6, size / 96))
  t = np.clip(t + 0.08 * noise / max(noise.std(), 1e-6), 0.0, 1.0)[..., None]
  c0, c1 = (np.asarray(c, np.float64) for c in BACKGROUND_RGB)
  return np.round(c0 * (1 - t) + c1 * t).astype(np.uint8)


def _fill(img: np.ndarray, pts: np.ndarray, color) -> None:
  """Anti-aliased polygon fill with 4 fractional bits of sub-pixel precision."""
  if len(pts) >= 3:
    cv2.fillPoly(img, [np.round(pts * 16).astype(np.int32)], color, cv2.LINE_AA, shift=4)


def _line(img: np.ndarray, pts: np.ndarray, color, thickness: float) -> None:
  cv2.polylines(img, [np.round(pts * 16).astype(np.int32)], False, color,
                max(1, int(round(thickness))), cv2.LINE_AA, shift=4)


def _clip_convex(poly: np.ndarray, clip: np.ndarray) -> np.ndarray:
  """Intersection of two convex polygons (float (N, 2)); empty (0, 2) when they do not overlap."""
  if len(poly) < 3 or len(clip) < 3:
    return np.zeros((0, 2))
  poly = cv2.convexHull(poly.astype(np.float32))
  clip = cv2.convexHull(clip.astype(np.float32))
  area, inter = cv2.intersectConvexConvex(poly, clip)
  if inter is None or area <= 0:
    return np.zeros((0, 2))
  return inter.reshape(-1, 2).astype(np.float64)


class _Face:
  """The face's 3D geometry for one frame: head units (the semi-axes) → canvas pixels."""

  def __init__(self, big: int, *, mouth_open: float, yaw: float, pitch: float, roll: float):
    self.scale = np.array([0.37, 0.45, 0.36]) * big  # semi-axes (a, b, c) of the head in pixels
    self.centre = np.array([0.5, 0.49]) * big
    self.rot = _rotation(yaw, pitch, roll)
    self.jaw = 0.11 * mouth_open  # the chin drops with the mouth (in units of b)

  def jaw_drop(self, p: np.ndarray) -> np.ndarray:
    p = p.copy()
    p[..., 1] += self.jaw * np.clip((p[..., 1] - 0.45) / 0.2, 0.0, 1.0)
    return p

  def project(self, p: np.ndarray) -> np.ndarray:  # (..., 3) head units -> (..., 2) canvas pixels
    return (p * self.scale) @ self.rot.T[:, :2] + self.centre

  def hull(self, p: np.ndarray) -> np.ndarray:
    return cv2.convexHull(self.project(p).astype(np.float32)).reshape(-1, 2).astype(np.float64)

  def feature(self, u, v, dz=0.0) -> np.ndarray:
    return self.project(self.jaw_drop(_surface(u, v, dz)))


def _mouth_shape(mouth_open: float, mouth_width: float):
  """Half-width w, the lip/interior outlines' parameter t and the interior's top/bottom v (head units)."""
  w = 0.3 * (0.85 + 0.3 * mouth_width)
  h = 0.28 * mouth_open
  t = np.linspace(-1.0, 1.0, 25)
  shape = np.sqrt(1.0 - t * t)
  return w, h, t, shape, _MOUTH_V - 0.35 * h * shape, _MOUTH_V + 0.65 * h * shape


_MOUTH_V = 0.5          # v of the mouth line
_EYE = dict(u=0.42, v=-0.07, w=0.21, up=0.15, lo=0.1)   # eye centre (u = ±u), half-width, lid heights


def face_landmarks(size: int, *, mouth_open: float, mouth_width: float, blink: float, yaw: float,
                   pitch: float, roll: float) -> np.ndarray:
  """The frame's 68 facial landmarks (iBUG/dlib order), float32 (68, 2) in output pixels (x, y).

  Taken from the same 3D feature points that `render_frame` draws: jaw line 0-16 (on the head outline
  below the eyes), brows 17-26, nose 27-35, eyes 36-47 (corners and lids), outer lips 48-59 and the
  mouth opening 60-67 (its upper and lower edges meet when the mouth is closed). Points 0-35 follow
  the ellipsoid's surface, so on a turned head they are where the feature is drawn, not a silhouette.
  """
  ss = max(1, math.ceil(_SUPERSAMPLE_TARGET / size))
  face = _Face(size * ss, mouth_open=float(np.clip(mouth_open, 0, 1)), yaw=yaw, pitch=pitch, roll=roll)
  blink = float(np.clip(blink, 0.0, 1.0))
  a = np.linspace(np.pi * 0.95, np.pi * 0.05, 17)                    # right ear → chin → left ear
  jaw = face.feature(0.97 * np.cos(a), -0.02 + 0.97 * np.sin(a))
  bu = np.linspace(0.2, 0.64, 5)
  brow = lambda side: face.feature(side * bu, -0.29 - 0.05 * np.sin(np.pi * (bu - 0.2) / 0.44))
  brows = np.concatenate([brow(-1)[::-1], brow(1)])                  # 17-21 image left, 22-26 right
  bridge = face.feature(np.zeros(4), np.linspace(-0.07, 0.30, 4), np.linspace(0.0, 0.2, 4))
  nostrils = face.feature(np.linspace(-0.1, 0.1, 5), np.full(5, 0.27), np.full(5, 0.15))
  e = _EYE
  up_h = e['up'] * (1.0 - blink) - e['lo'] * blink
  eyes = []
  for side in (-1, 1):                                               # 36-41 image left, 42-47 right
    u0 = side * e['u']
    c = np.array([-1, -0.5, 0.5, 1, 0.5, -0.5]) * e['w']    # leftmost corner first, upper lid, lower lid
    v = np.array([0, -up_h * 0.87, -up_h * 0.87, 0, e['lo'] * 0.87, e['lo'] * 0.87])
    eyes.append(face.feature(u0 + c, e['v'] + v))
  w, h, _, _, _, _ = _mouth_shape(mouth_open, mouth_width)
  ot = np.array([-1, -0.6, -0.25, 0, 0.25, 0.6, 1])
  oshape = np.sqrt(1 - ot * ot)
  top_in = _MOUTH_V - 0.35 * h * oshape
  bot_in = _MOUTH_V + 0.65 * h * oshape
  cupid = 1.0 - 0.35 * np.exp(-(ot / 0.18) ** 2)
  outer_top = face.feature(w * ot, top_in - 0.075 * oshape * cupid - 0.005)          # 48-54
  outer_bot = face.feature(w * ot[5:0:-1], bot_in[5:0:-1] + 0.085 * oshape[5:0:-1] + 0.005)  # 55-59
  it = np.array([-0.9, -0.45, 0, 0.45, 0.9])
  ishape = np.sqrt(1 - it * it)
  inner_top = face.feature(w * it, _MOUTH_V - 0.35 * h * ishape)                     # 60-64
  inner_bot = face.feature(w * it[3:0:-1], _MOUTH_V + 0.65 * h * ishape[3:0:-1])      # 65-67
  pts = np.concatenate([jaw, brows, bridge, nostrils, *eyes, outer_top, outer_bot, inner_top, inner_bot])
  assert pts.shape == (68, 2), pts.shape
  return ((pts + 0.5) / ss - 0.5).astype(np.float32)   # canvas → output pixel centres (INTER_AREA)


def render_frame(size: int, *, mouth_open: float, mouth_width: float, blink: float, yaw: float,
                 pitch: float, roll: float) -> np.ndarray:
  """Draws one face; returns uint8 (size, size, 3) RGB.

  Args:
    size: output side in pixels (any value in 16..1024; the dataset uses 32..512).
    mouth_open: 0 (closed) .. 1 (wide open).
    mouth_width: 0 (rounded, narrow) .. 1 (spread).
    blink: 0 (eyes open) .. 1 (closed).
    yaw, pitch, roll: head pose in degrees (module docstring has the convention).
  """
  if not 16 <= size <= 1024:
    raise ValueError(f'synthface: size must be in 16..1024, got {size}')
  ss = max(1, math.ceil(_SUPERSAMPLE_TARGET / size))
  big = size * ss
  img = cv2.resize(background(size), (big, big), interpolation=cv2.INTER_NEAREST) if ss > 1 else (
      background(size).copy())
  mouth_open = float(np.clip(mouth_open, 0.0, 1.0))
  mouth_width = float(np.clip(mouth_width, 0.0, 1.0))
  blink = float(np.clip(blink, 0.0, 1.0))
  face = _Face(big, mouth_open=mouth_open, yaw=yaw, pitch=pitch, roll=roll)
  scale, centre, rot = face.scale, face.centre, face.rot
  jaw_drop, hull, feature = face.jaw_drop, face.hull, face.feature

  # Neck and shoulders: under the head, following yaw and roll a little.
  neck_x = centre[0] + 0.25 * scale[0] * math.sin(math.radians(yaw))
  neck = np.array([[neck_x - 0.42 * scale[0], centre[1]], [neck_x + 0.42 * scale[0], centre[1]],
                   [neck_x + 0.5 * scale[0], big], [neck_x - 0.5 * scale[0], big]])
  _fill(img, neck, PALETTE['neck'])
  shirt = np.array([[0, big], [0, 0.93 * big], [neck_x - 0.6 * scale[0], 0.9 * big],
                    [neck_x, 0.97 * big], [neck_x + 0.6 * scale[0], 0.9 * big],
                    [big, 0.93 * big], [big, big]])
  _fill(img, shirt, PALETTE['shirt'])

  # Head: a shaded outline and a lit inner part offset towards the light (upper left).
  head_pts, hair_pts = _ellipsoid_points()
  outline = hull(jaw_drop(head_pts))
  _fill(img, outline, PALETTE['skin_shade'])
  mid = outline.mean(0)
  _fill(img, mid + 0.92 * (outline - mid) - 0.025 * big, PALETTE['skin'])
  for side in (-1, 1):
    th = np.linspace(0, 2 * np.pi, 20, endpoint=False)
    _fill(img, feature(side * 0.52 + 0.13 * np.cos(th), 0.24 + 0.09 * np.sin(th)), PALETTE['cheek'])
  # Only the cap points facing the camera: the hidden back of the cap would cover the forehead.
  hair_pts = hair_pts[(hair_pts @ rot.T)[:, 2] > -0.05]
  _fill(img, hull(hair_pts), PALETTE['hair'])

  # Brows.
  for side in (-1, 1):
    u = np.linspace(0.2, 0.64, 9)
    _line(img, feature(side * u, -0.29 - 0.05 * np.sin(np.pi * (u - 0.2) / 0.44)), PALETTE['brow'],
          0.03 * big)

  # Eyes: almond between an upper lid (lowered by the blink) and a lower lid; iris and pupil are
  # clipped to the opening. Both eyes use the same shape so clipping never tilts the iris line.
  th = np.linspace(0.0, np.pi, 17)
  ew, eh_up, eh_lo = _EYE['w'], _EYE['up'], _EYE['lo']
  up_h = eh_up * (1.0 - blink) - eh_lo * blink
  for side in (-1, 1):
    u0, v0 = side * _EYE['u'], _EYE['v']
    upper = feature(u0 + ew * np.cos(th), v0 - up_h * np.sin(th))
    lower = feature(u0 - ew * np.cos(th), v0 + eh_lo * np.sin(th))
    if up_h > 0.01:
      almond = np.concatenate([upper, lower])
      _fill(img, almond, PALETTE['sclera'])
      ring = np.linspace(0, 2 * np.pi, 24, endpoint=False)
      ri = 0.055 * big / scale[0]  # iris radius in u units (round in the image when frontal)
      for radius, color in ((ri, IRIS_RGB), (0.45 * ri, PALETTE['pupil'])):
        circle = feature(u0 + radius * np.cos(ring),
                         v0 + radius * scale[0] / scale[1] * np.sin(ring), 0.02)
        _fill(img, _clip_convex(circle, almond), color)
    _line(img, upper, PALETTE['lash'], 0.016 * big)
    _line(img, lower, PALETTE['lid'], 0.008 * big)

  # Nose: a wedge towards the tip, then the nostril curve.
  nose = np.concatenate([feature([-0.03, -0.11, -0.05], [-0.04, 0.27, 0.31], [0.0, 0.05, 0.14]),
                         feature([0.0], [0.30], [0.2]),
                         feature([0.05, 0.11, 0.03], [0.31, 0.27, -0.04], [0.14, 0.05, 0.0])])
  _fill(img, nose, PALETTE['nose'])
  u = np.linspace(-0.1, 0.1, 9)
  bump = np.cos(np.pi * u / 0.2)
  _line(img, feature(u, 0.30 - 0.03 * bump, 0.12 + 0.06 * bump), PALETTE['nostril'], 0.012 * big)

  # Mouth: lips around an interior whose height is mouth_open and whose width is mouth_width.
  # The interior (and teeth) area is what measure_frame reads back.
  w, h, t, shape, top_in, bot_in = _mouth_shape(mouth_open, mouth_width)
  vm = _MOUTH_V
  cupid = 1.0 - 0.35 * np.exp(-(t / 0.18) ** 2)  # the dip in the middle of the upper lip
  lips = np.concatenate([feature(w * t, top_in - 0.075 * shape * cupid - 0.005),
                         feature(w * t[::-1], bot_in[::-1] + 0.085 * shape[::-1] + 0.005)])
  _fill(img, lips, PALETTE['lips'])
  if mouth_open > 0.02:
    interior = np.concatenate([feature(w * t, top_in), feature(w * t[::-1], bot_in[::-1])])
    _fill(img, interior, MOUTH_RGB)
    if mouth_open > 0.12:  # upper teeth over a fixed share of the opening (area stays linear)
      tu = np.linspace(-0.62, 0.62, 9) * w
      band = np.concatenate([feature(tu, np.full_like(tu, vm - 0.3)),
                             feature(tu[::-1], np.full_like(tu, vm - 0.05 * h))])
      _fill(img, _clip_convex(band, interior), TEETH_RGB)
  else:
    _line(img, feature(w * t, np.full_like(t, vm)), PALETTE['lip_line'], 0.012 * big)

  if ss > 1:
    img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
  return img
