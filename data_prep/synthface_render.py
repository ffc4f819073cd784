"""Drawing and measuring the synthetic face (DESIGN §4), in the default look or as a drawn identity.

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

Identities. `render_frame(..., identity=None)` draws the default look (`DEFAULT_IDENTITY`: `PALETTE`,
`BACKGROUND_RGB` and the fixed geometry). `draw_identity(seed, k)` draws another person from (seed, k)
only: face shape (the head's half-width and half-height), skin tone (and the shades derived from it),
hair shape (hairline, temples, volume, long hair behind the head) and colour, brows (height, arch,
thickness, colour), nose (length, width), eye spacing, lip colour, shirt colour and the background
texture (two colours, wave pattern, noise). The result is a JSON-ready dict that `render_frame` and
`face_landmarks` take as `identity=`. The reserved colours are the same for every identity, and a draw is
rejected (and drawn again from the same stream) until every colour it uses lies at least
`reserved_margins()` from each reserved colour, and every blend of two of its colours (an anti-aliased
edge, the background texture) beyond the measuring window `TOLERANCE[name][1]` (`colour_problems`); both
exceed the strict reading's 30 units by far. Since the mouth interior is a dark red, this excludes very dark
skin and near-black hair (the darkest skin drawn is a medium brown, the darkest hair a dark ash brown).

Pose convention: R = Rz(roll) @ Ry(yaw) @ Rx(pitch) in image axes (x right, y down, z towards the
camera). Positive yaw moves the nose to the image's right, positive pitch moves it up, positive
roll turns the face clockwise on screen (the right eye goes down): roll = atan2(dy, dx) of the
iris line in image coordinates.
"""
from __future__ import annotations

import colorsys
import dataclasses
import functools
import json
import math
from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np

# The reserved colours and the measurements live in the library (daetalker_jax.mouth_measure); they are
# re-exported here, so data_prep.synthface_render.measure_frame etc. keep working.
from daetalker_jax.mouth_measure import (  # noqa: F401 (re-exported)
    IRIS_RGB, MOUTH_RGB, RESERVED, STRICT_DISTANCE, TEETH_RGB, TOLERANCE, measure_frame, strict_mouth)

# Every other colour drawn (RGB) in the default look.
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

# The default look as identity parameters (the format `draw_identity` returns; lengths in head units,
# i.e. the head's semi-axes, except `head`, a fraction of the frame side). Rendering it is rendering
# with identity=None, byte for byte.
DEFAULT_IDENTITY: dict[str, Any] = {
    'palette': {name: list(rgb) for name, rgb in PALETTE.items()},
    # t = 0.5 + sum amp*sin(2 pi (fx x + fy y) + phase) + ring amp*cos(2 pi f |(x, y) - (cx, cy)|)
    #     + noise_amp * (unit-variance blurred noise of noise_seed), clipped to [0, 1]; x, y in [0, 1).
    'background': {'colors': [list(c) for c in BACKGROUND_RGB],
                   'waves': [[3.0, 2.0, 0.0, 0.22], [-1.5, 5.0, 1.0, 0.16]],
                   'ring': [0.3, 0.7, 7.0, 0.12], 'noise_seed': 20230331, 'noise_amp': 0.08},
    'head': [0.37, 0.45],                                         # half-width, half-height / frame side
    'eye_spacing': 0.42,                                          # |u| of the eye centres
    'brow': {'height': 0.29, 'arch': 0.05, 'thickness': 0.03},    # thickness: fraction of the frame side
    'nose': {'length': 1.0, 'width': 1.0},                        # scale of the default nose
    'hair': {'hairline': 0.5, 'temple': 0.12, 'volume': 1.0, 'length': 0.0},  # length 0: no long hair
}

# Colours that the identity's parameters do not choose (the same in every look).
_FIXED_COLOURS = ('sclera', 'pupil')

_SUPERSAMPLE_TARGET = 256  # draw on a canvas of at least this many pixels, then INTER_AREA down.


def _surface(u: np.ndarray, v: np.ndarray, dz: np.ndarray | float = 0.0) -> np.ndarray:
  """Points on the front of the unit head ellipsoid at normalised (u, v), pushed out by dz."""
  u, v = np.broadcast_arrays(np.asarray(u, np.float64), np.asarray(v, np.float64))
  w = np.sqrt(np.clip(1.0 - u * u - v * v, 0.0, None)) + dz
  return np.stack([u, v, w], axis=-1)  # (..., 3) in units of the semi-axes (a, b, c)


@functools.lru_cache(maxsize=1)
def _ellipsoid_points() -> np.ndarray:
  """Sample points of the whole head ellipsoid (for the outline, the hair cap and long hair)."""
  th = np.linspace(0.0, np.pi, 25)[1:-1]  # polar angle from the top (-y)
  ph = np.linspace(0.0, 2 * np.pi, 48, endpoint=False)
  th, ph = np.meshgrid(th, ph, indexing='ij')
  pts = np.stack([np.sin(th) * np.cos(ph), -np.cos(th), np.sin(th) * np.sin(ph)], -1).reshape(-1, 3)
  return np.concatenate([pts, [[0.0, -1.0, 0.0], [0.0, 1.0, 0.0]]])


@functools.lru_cache(maxsize=64)
def _hair_cap(hairline: float, temple: float) -> np.ndarray:
  """The ellipsoid points of the hair cap: above a hairline at v = -hairline that rises towards the temples."""
  pts = _ellipsoid_points()
  return pts[pts[:, 1] < -hairline + temple * np.abs(pts[:, 0])]


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
  y, p, r = (math.radians(x) for x in (yaw, pitch, roll))
  rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
  ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
  rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
  return rz @ ry @ rx


@functools.lru_cache(maxsize=32)
def _background(size: int, key: str) -> np.ndarray:
  b = json.loads(key)
  yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
  t = 0.5
  for fx, fy, phase, amp in b['waves']:
    t = t + amp * np.sin(2 * np.pi * (fx * xx + fy * yy) + phase)
  cx, cy, freq, amp = b['ring']
  t = t + amp * np.cos(2 * np.pi * freq * np.hypot(xx - cx, yy - cy))
  rng = np.random.default_rng(int(b['noise_seed']))
  noise = cv2.GaussianBlur(rng.standard_normal((size, size)), (0, 0), max(0.6, size / 96))
  t = np.clip(t + b['noise_amp'] * noise / max(noise.std(), 1e-6), 0.0, 1.0)[..., None]
  c0, c1 = (np.asarray(c, np.float64) for c in b['colors'])
  return np.round(c0 * (1 - t) + c1 * t).astype(np.uint8)


def background(size: int, params: Mapping[str, Any] | None = None) -> np.ndarray:
  """The textured background (uint8 (size, size, 3) RGB, cached: do not modify it).

  `params` is an identity's 'background' entry; None is the default look's, the same for every clip and seed.
  """
  return _background(size, json.dumps(params or DEFAULT_IDENTITY['background'], sort_keys=True))


# ----------------------------------------------------------------------------------------------
# Identities.


@dataclasses.dataclass(frozen=True)
class _Look:
  """An identity's parameters, resolved for drawing."""
  palette: dict[str, tuple[int, int, int]]
  background: dict[str, Any]
  head: tuple[float, float]
  eye_u: float
  brow_height: float
  brow_arch: float
  brow_thickness: float
  nose_length: float
  nose_width: float
  hairline: float
  temple: float
  hair_volume: float
  hair_length: float


def _resolve(identity: Mapping[str, Any] | None) -> _Look:
  """The look of `identity` (draw_identity's dict, e.g. read back from a sidecar); None = the default look."""
  p = DEFAULT_IDENTITY if identity is None else identity
  try:
    palette = {name: tuple(int(c) for c in p['palette'][name]) for name in PALETTE}
    if any(len(c) != 3 for c in palette.values()):
      raise ValueError('colours must be [r, g, b]')
    brow, nose, hair = p['brow'], p['nose'], p['hair']
    return _Look(palette=palette, background=dict(p['background']),
                 head=(float(p['head'][0]), float(p['head'][1])), eye_u=float(p['eye_spacing']),
                 brow_height=float(brow['height']), brow_arch=float(brow['arch']),
                 brow_thickness=float(brow['thickness']), nose_length=float(nose['length']),
                 nose_width=float(nose['width']), hairline=float(hair['hairline']),
                 temple=float(hair['temple']), hair_volume=float(hair['volume']), hair_length=float(hair['length']))
  except (KeyError, TypeError, ValueError, IndexError) as e:
    raise ValueError(f'synthface: bad identity parameters ({type(e).__name__}: {e})') from None


def reserved_margins() -> dict[str, float]:
  """Least RGB distance of any identity colour from each reserved colour: mouth 100, iris 105, teeth 68.

  The measuring window's outer edge plus 10 (as for the default palette), and never under 60 (twice the
  strict reading's 30); the mouth plus 25: its dark red lies near the dark thin lines (lashes, brows, lids,
  nostrils), whose colours h264's chroma subsampling shifts the most. The default palette keeps them too.
  """
  return {name: max(60.0, TOLERANCE[name][1] + (25.0 if name == 'mouth' else 10.0)) for name in RESERVED}


def identity_colours(identity: Mapping[str, Any] | None) -> dict[str, tuple[int, int, int]]:
  """Every colour an identity draws besides the reserved ones: its palette and the two background colours."""
  look = _resolve(identity)
  c0, c1 = (tuple(int(v) for v in c) for c in look.background['colors'])
  return {**look.palette, 'background0': c0, 'background1': c1}


_BLEND_SLACK = 3.0  # RGB units beyond the measuring window for blends: rounding to uint8, resampling


def colour_problems(identity: Mapping[str, Any] | None) -> list[str]:
  """Why an identity's colours may come near a reserved colour (empty: they may not).

  Each colour must lie at least `reserved_margins()` from each reserved colour, and every blend of two of
  them (anti-aliased edges, the background texture) at least `TOLERANCE[name][1]` + 3 (beyond measure_frame's
  window, with room for rounding). The pupil is blended only with the lids (it otherwise meets only the
  iris and the sclera, as in the default look).
  """
  colours = identity_colours(identity)
  names = list(colours)
  rgbs = np.asarray([colours[n] for n in names], np.float64)                    # (C, 3)
  i, j = np.triu_indices(len(names), 1)                                         # every pair of colours
  pupil = names.index('pupil')
  eye = [names.index('lash'), names.index('lid')]
  keep = ((i != pupil) & (j != pupil)) | np.isin(np.where(i == pupil, j, i), eye)
  i, j = i[keep], j[keep]
  a, d = rgbs[i], rgbs[j] - rgbs[i]
  margins = reserved_margins()
  problems = []
  for name, rgb in RESERVED.items():
    rgb = np.asarray(rgb, np.float64)
    dist = np.linalg.norm(rgbs - rgb, axis=1)
    for c in np.flatnonzero(dist < margins[name]):
      problems.append(f'{names[c]} {colours[names[c]]} is {dist[c]:.0f} from the {name} colour (< {margins[name]:.0f})')
    # The nearest blend of each pair: a + t (b - a) with t the clipped projection of the reserved colour.
    t = np.clip(((rgb - a) * d).sum(1) / np.maximum((d * d).sum(1), 1e-9), 0.0, 1.0)
    blend = np.linalg.norm(a + t[:, None] * d - rgb, axis=1)
    limit = TOLERANCE[name][1] + _BLEND_SLACK
    for p in np.flatnonzero(blend < limit):
      problems.append(f'blends of {names[i[p]]} and {names[j[p]]} come {blend[p]:.0f} from the {name} colour '
                      f'(< {limit:.0f})')
  return problems


def identity_rng(seed: int, k: int) -> np.random.Generator:
  """Identity k's own stream: (seed, k, 1) -- distinct from the clips' (seed, index) streams."""
  return np.random.default_rng(np.random.SeedSequence([int(seed), int(k), 1]))


# Skin tones from light to medium brown, and families of hair and lip colours (RGB).
_SKIN_TONES = ((246, 218, 198), (232, 188, 156), (212, 160, 122), (186, 134, 100), (160, 114, 86))
_HAIR_COLOURS = ((236, 218, 170), (212, 176, 118), (170, 128, 88), (134, 108, 84), (114, 106, 102),
                 (168, 94, 62), (196, 112, 70), (160, 158, 156))
_LIP_TINTS = ((204, 86, 96), (186, 92, 114), (210, 112, 100), (178, 98, 92))


def _rgb(x) -> list[int]:
  return [int(v) for v in np.clip(np.round(np.asarray(x, np.float64)), 0, 255)]


def _hsv(rng: np.random.Generator, s: tuple[float, float], v: tuple[float, float]) -> np.ndarray:
  return 255 * np.asarray(colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(*s), rng.uniform(*v)))


def _draw_once(rng: np.random.Generator) -> dict[str, Any]:
  """One unchecked draw of identity parameters (floats rounded as the sidecar stores them)."""
  r4 = lambda x: round(float(x), 4)
  t = rng.uniform(0, len(_SKIN_TONES) - 1)
  i = min(int(t), len(_SKIN_TONES) - 2)
  skin = (np.multiply(_SKIN_TONES[i], 1 - (t - i)) + np.multiply(_SKIN_TONES[i + 1], t - i)
          + rng.normal(0, 4, 3) + rng.uniform(-6, 6) * np.array([1.0, 0.0, -1.0]))
  hair = np.asarray(_HAIR_COLOURS[rng.integers(len(_HAIR_COLOURS))]) * rng.uniform(0.92, 1.08) + rng.normal(0, 5, 3)
  brow = hair * rng.uniform(0.88, 1.0)
  # The lids touch the dark pupil: h264's shared chroma would turn a strongly red lid line next to it into
  # something near the (dark red) mouth colour, so their colours keep only a third of their chroma.
  grey = lambda c: (np.asarray(c) + 2 * np.mean(c)) / 3
  lips = skin * (1 - (s := rng.uniform(0.45, 0.75))) + np.asarray(_LIP_TINTS[rng.integers(len(_LIP_TINTS))]) * s
  palette = {
      'skin': skin, 'skin_shade': skin * (0.888, 0.839, 0.805), 'neck': skin * (0.845, 0.785, 0.753),
      'cheek': skin * (1.0, 0.87, 0.92), 'hair': hair, 'brow': brow, 'lid': grey(skin * (0.78, 0.7, 0.68)),
      'lash': grey(brow), 'sclera': PALETTE['sclera'], 'pupil': PALETTE['pupil'],
      'nose': skin * (0.922, 0.86, 0.831), 'nostril': skin * (0.86, 0.78, 0.76), 'lips': lips,
      'lip_line': lips * (0.8, 0.85, 0.85), 'shirt': _hsv(rng, (0.15, 0.6), (0.3, 0.75))}
  bg0 = _hsv(rng, (0.08, 0.45), (0.45, 0.85))
  bg1 = bg0 * rng.uniform(0.72, 0.88) + rng.normal(0, 6, 3)
  waves = [[r4(rng.uniform(-6, 6)), r4(rng.uniform(-6, 6)), r4(rng.uniform(0, 2 * np.pi)), r4(amp)]
           for amp in (rng.uniform(0.15, 0.25), rng.uniform(0.1, 0.2))]
  brow_height, brow_arch = rng.uniform(0.26, 0.31), rng.uniform(0.02, 0.07)
  temple = rng.uniform(0.06, 0.18)
  # The hair cap's lowest edge (about hairline - 0.92 temple) stays above the brows.
  low = brow_height + brow_arch + 0.05 + 0.92 * temple
  a = rng.uniform(0.33, 0.4)
  return {
      'palette': {k: _rgb(v) for k, v in palette.items()},
      'background': {'colors': [_rgb(bg0), _rgb(bg1)], 'waves': waves,
                     'ring': [r4(rng.uniform(0, 1)), r4(rng.uniform(0, 1)), r4(rng.uniform(3, 9)),
                              r4(rng.uniform(0.06, 0.14))],
                     'noise_seed': int(rng.integers(2**31)), 'noise_amp': r4(rng.uniform(0.04, 0.1))},
      'head': [r4(a), r4(rng.uniform(a + 0.05, 0.47))],
      'eye_spacing': r4(rng.uniform(0.37, 0.46)),
      'brow': {'height': r4(brow_height), 'arch': r4(brow_arch), 'thickness': r4(rng.uniform(0.02, 0.04))},
      'nose': {'length': r4(rng.uniform(0.88, 1.12)), 'width': r4(rng.uniform(0.8, 1.3))},
      'hair': {'hairline': r4(rng.uniform(low, low + 0.15)), 'temple': r4(temple),
               'volume': r4(rng.uniform(1.0, 1.12)),
               'length': r4(rng.uniform(0.2, 1.0)) if rng.uniform() < 0.5 else 0.0},
  }


def draw_identity(seed: int, k: int) -> dict[str, Any]:
  """Identity k of `seed`: the parameters of one person (JSON-ready, format of `DEFAULT_IDENTITY`).

  A function of (seed, k) only, so identity k is the same person in every clip that uses it. Draws that
  fail `colour_problems` are discarded and drawn again from the identity's own stream.
  """
  if int(k) < 0:
    raise ValueError(f'synthface: identity index must be >= 0, got {k}')
  rng = identity_rng(seed, k)
  for _ in range(1000):
    params = _draw_once(rng)
    if not colour_problems(params):
      return params
  raise RuntimeError(f'synthface: no identity {k} of seed {seed} keeps clear of the reserved colours')


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

  def __init__(self, big: int, *, mouth_open: float, yaw: float, pitch: float, roll: float,
               head: tuple[float, float] = (0.37, 0.45)):
    self.scale = np.array([head[0], head[1], 0.36]) * big  # semi-axes (a, b, c) of the head in pixels
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
_EYE = dict(v=-0.07, w=0.21, up=0.15, lo=0.1)   # eye centre v (u: the look's eye_spacing), half-width, lid heights


def _brow_line(look: _Look, n: int) -> tuple[np.ndarray, np.ndarray]:
  """(u, v) of the image-right brow, inner end first (the left one mirrors u); it moves with the eyes."""
  u = np.linspace(0.2, 0.64, n)
  v = -look.brow_height - look.brow_arch * np.sin(np.pi * (u - 0.2) / 0.44)
  return u + (look.eye_u - 0.42), v


def face_landmarks(size: int, *, mouth_open: float, mouth_width: float, blink: float, yaw: float,
                   pitch: float, roll: float, identity: Mapping[str, Any] | None = None) -> np.ndarray:
  """The frame's 68 facial landmarks (iBUG/dlib order), float32 (68, 2) in output pixels (x, y).

  Taken from the same 3D feature points that `render_frame` draws: jaw line 0-16 (on the head outline
  below the eyes), brows 17-26, nose 27-35, eyes 36-47 (corners and lids), outer lips 48-59 and the
  mouth opening 60-67 (its upper and lower edges meet when the mouth is closed). Points 0-35 follow
  the ellipsoid's surface, so on a turned head they are where the feature is drawn, not a silhouette.
  `identity` is the face's look, as for render_frame.
  """
  look = _resolve(identity)
  ss = max(1, math.ceil(_SUPERSAMPLE_TARGET / size))
  face = _Face(size * ss, mouth_open=float(np.clip(mouth_open, 0, 1)), yaw=yaw, pitch=pitch, roll=roll,
               head=look.head)
  blink = float(np.clip(blink, 0.0, 1.0))
  a = np.linspace(np.pi * 0.95, np.pi * 0.05, 17)                    # right ear → chin → left ear
  jaw = face.feature(0.97 * np.cos(a), -0.02 + 0.97 * np.sin(a))
  bu, bv = _brow_line(look, 5)
  brow = lambda side: face.feature(side * bu, bv)
  brows = np.concatenate([brow(-1)[::-1], brow(1)])                  # 17-21 image left, 22-26 right
  bridge = face.feature(np.zeros(4), np.linspace(-0.07, 0.30, 4) * look.nose_length, np.linspace(0.0, 0.2, 4))
  nostrils = face.feature(np.linspace(-0.1, 0.1, 5) * look.nose_width, np.full(5, 0.27) * look.nose_length,
                          np.full(5, 0.15))
  e = _EYE
  up_h = e['up'] * (1.0 - blink) - e['lo'] * blink
  eyes = []
  for side in (-1, 1):                                               # 36-41 image left, 42-47 right
    u0 = side * look.eye_u
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
                 pitch: float, roll: float, identity: Mapping[str, Any] | None = None) -> np.ndarray:
  """Draws one face; returns uint8 (size, size, 3) RGB.

  Args:
    size: output side in pixels (any value in 16..1024; the dataset uses 32..512).
    mouth_open: 0 (closed) .. 1 (wide open).
    mouth_width: 0 (rounded, narrow) .. 1 (spread).
    blink: 0 (eyes open) .. 1 (closed).
    yaw, pitch, roll: head pose in degrees (module docstring has the convention).
    identity: the person's parameters (`draw_identity`); None draws the default look.
  """
  if not 16 <= size <= 1024:
    raise ValueError(f'synthface: size must be in 16..1024, got {size}')
  look = _resolve(identity)
  pal = look.palette
  ss = max(1, math.ceil(_SUPERSAMPLE_TARGET / size))
  big = size * ss
  bg = background(size, look.background)
  img = cv2.resize(bg, (big, big), interpolation=cv2.INTER_NEAREST) if ss > 1 else bg.copy()
  mouth_open = float(np.clip(mouth_open, 0.0, 1.0))
  mouth_width = float(np.clip(mouth_width, 0.0, 1.0))
  blink = float(np.clip(blink, 0.0, 1.0))
  face = _Face(big, mouth_open=mouth_open, yaw=yaw, pitch=pitch, roll=roll, head=look.head)
  scale, centre, rot = face.scale, face.centre, face.rot
  jaw_drop, hull, feature = face.jaw_drop, face.hull, face.feature
  head_pts = _ellipsoid_points()

  # Long hair: behind the head, neck and shoulders, down to v = length.
  if look.hair_length > 0:
    back = head_pts[head_pts[:, 1] < look.hair_length] * (np.array([1.1, 1.03, 1.0]) * look.hair_volume)
    _fill(img, hull(back), pal['hair'])

  # Neck and shoulders: under the head, following yaw and roll a little.
  neck_x = centre[0] + 0.25 * scale[0] * math.sin(math.radians(yaw))
  neck = np.array([[neck_x - 0.42 * scale[0], centre[1]], [neck_x + 0.42 * scale[0], centre[1]],
                   [neck_x + 0.5 * scale[0], big], [neck_x - 0.5 * scale[0], big]])
  _fill(img, neck, pal['neck'])
  shirt = np.array([[0, big], [0, 0.93 * big], [neck_x - 0.6 * scale[0], 0.9 * big],
                    [neck_x, 0.97 * big], [neck_x + 0.6 * scale[0], 0.9 * big],
                    [big, 0.93 * big], [big, big]])
  _fill(img, shirt, pal['shirt'])

  # Head: a shaded outline and a lit inner part offset towards the light (upper left).
  outline = hull(jaw_drop(head_pts))
  _fill(img, outline, pal['skin_shade'])
  mid = outline.mean(0)
  _fill(img, mid + 0.92 * (outline - mid) - 0.025 * big, pal['skin'])
  for side in (-1, 1):
    th = np.linspace(0, 2 * np.pi, 20, endpoint=False)
    _fill(img, feature(side * 0.52 + 0.13 * np.cos(th), 0.24 + 0.09 * np.sin(th)), pal['cheek'])
  # Only the cap points facing the camera: the hidden back of the cap would cover the forehead.
  hair_pts = _hair_cap(look.hairline, look.temple)
  hair_pts = hair_pts[(hair_pts @ rot.T)[:, 2] > -0.05]
  if look.hair_volume != 1.0:
    hair_pts = hair_pts * look.hair_volume
  _fill(img, hull(hair_pts), pal['hair'])

  # Brows.
  bu, bv = _brow_line(look, 9)
  for side in (-1, 1):
    _line(img, feature(side * bu, bv), pal['brow'], look.brow_thickness * big)

  # Eyes: almond between an upper lid (lowered by the blink) and a lower lid; iris and pupil are
  # clipped to the opening. Both eyes use the same shape so clipping never tilts the iris line.
  th = np.linspace(0.0, np.pi, 17)
  ew, eh_up, eh_lo = _EYE['w'], _EYE['up'], _EYE['lo']
  up_h = eh_up * (1.0 - blink) - eh_lo * blink
  for side in (-1, 1):
    u0, v0 = side * look.eye_u, _EYE['v']
    upper = feature(u0 + ew * np.cos(th), v0 - up_h * np.sin(th))
    lower = feature(u0 - ew * np.cos(th), v0 + eh_lo * np.sin(th))
    if up_h > 0.01:
      almond = np.concatenate([upper, lower])
      _fill(img, almond, pal['sclera'])
      ring = np.linspace(0, 2 * np.pi, 24, endpoint=False)
      ri = 0.055 * big / scale[0]  # iris radius in u units (round in the image when frontal)
      for radius, color in ((ri, IRIS_RGB), (0.45 * ri, pal['pupil'])):
        circle = feature(u0 + radius * np.cos(ring),
                         v0 + radius * scale[0] / scale[1] * np.sin(ring), 0.02)
        _fill(img, _clip_convex(circle, almond), color)
    _line(img, upper, pal['lash'], 0.016 * big)
    _line(img, lower, pal['lid'], 0.008 * big)

  # Nose: a wedge towards the tip, then the nostril curve.
  nl, nw = look.nose_length, look.nose_width
  nose = np.concatenate([feature(np.array([-0.03, -0.11, -0.05]) * nw, np.array([-0.04, 0.27, 0.31]) * nl,
                                 [0.0, 0.05, 0.14]),
                         feature([0.0], np.array([0.30]) * nl, [0.2]),
                         feature(np.array([0.05, 0.11, 0.03]) * nw, np.array([0.31, 0.27, -0.04]) * nl,
                                 [0.14, 0.05, 0.0])])
  _fill(img, nose, pal['nose'])
  u = np.linspace(-0.1, 0.1, 9)
  bump = np.cos(np.pi * u / 0.2)
  _line(img, feature(u * nw, (0.30 - 0.03 * bump) * nl, 0.12 + 0.06 * bump), pal['nostril'], 0.012 * big)

  # Mouth: lips around an interior whose height is mouth_open and whose width is mouth_width.
  # The interior (and teeth) area is what measure_frame reads back.
  w, h, t, shape, top_in, bot_in = _mouth_shape(mouth_open, mouth_width)
  vm = _MOUTH_V
  cupid = 1.0 - 0.35 * np.exp(-(t / 0.18) ** 2)  # the dip in the middle of the upper lip
  lips = np.concatenate([feature(w * t, top_in - 0.075 * shape * cupid - 0.005),
                         feature(w * t[::-1], bot_in[::-1] + 0.085 * shape[::-1] + 0.005)])
  _fill(img, lips, pal['lips'])
  if mouth_open > 0.02:
    interior = np.concatenate([feature(w * t, top_in), feature(w * t[::-1], bot_in[::-1])])
    _fill(img, interior, MOUTH_RGB)
    if mouth_open > 0.12:  # upper teeth over a fixed share of the opening (area stays linear)
      tu = np.linspace(-0.62, 0.62, 9) * w
      band = np.concatenate([feature(tu, np.full_like(tu, vm - 0.3)),
                             feature(tu[::-1], np.full_like(tu, vm - 0.05 * h))])
      _fill(img, _clip_convex(band, interior), TEETH_RGB)
  else:
    _line(img, feature(w * t, np.full_like(t, vm)), pal['lip_line'], 0.012 * big)

  if ss > 1:
    img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
  return img
