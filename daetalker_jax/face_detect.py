"""Face detectors and dlib's 68-point landmark model, shared by data preparation and evaluation.

`make_detector('dlib' | 'haar' | 'auto')` gives a callable image -> face boxes; `load_shape_predictor()`
dlib's 68-point predictor. `data_prep.face` builds its tracker on these; `evaluate` uses them to find the
landmarks of generated frames (the library does not import data_prep).
"""

from __future__ import annotations

import functools
import importlib.util
import os

import cv2
import numpy as np

try:  # dlib-bin; the Haar cascade works without it.
  import dlib
except ImportError:  # pragma: no cover - depends on the environment
  dlib = None


def shape_predictor_path() -> str:
  """Path of dlib's 68-point model inside the `face_recognition_models` package.

  The package's own `pose_predictor_model_location()` imports `pkg_resources`, which current
  setuptools no longer ships, so the file is located without importing the package.
  """
  spec = importlib.util.find_spec('face_recognition_models')
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError('face_recognition_models is not installed (pip install '
                            'face-recognition-models): it holds the 68-landmark model')
  path = os.path.join(list(spec.submodule_search_locations)[0], 'models',
                      'shape_predictor_68_face_landmarks.dat')
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path}: 68-landmark model missing from face_recognition_models')
  return path


@functools.lru_cache(maxsize=2)
def load_shape_predictor(path: str | None = None):
  """dlib's 68-point predictor (a 100 MB file, ~1 s to load; default `shape_predictor_path()`): loaded once
  per process."""
  if dlib is None:
    raise ImportError('68-point landmarks need the dlib module (pip install dlib-bin)')
  return dlib.shape_predictor(path or shape_predictor_path())


class _Detector:
  """Face boxes (x0, y0, x1, y1 float, in the given image's px) from an RGB or gray image."""
  min_size = 80  # the smallest face (px) found without upsampling

  def __call__(self, image: np.ndarray, upsample: int = 0) -> list[np.ndarray]:
    raise NotImplementedError


class _DlibDetector(_Detector):
  min_size = 80

  def __init__(self):
    self._det = dlib.get_frontal_face_detector()

  def __call__(self, image, upsample=0):
    rects, scores, _ = self._det.run(image, upsample, 0.0)
    del scores
    return [np.array([r.left(), r.top(), r.right() + 1, r.bottom() + 1], np.float64)
            for r in rects]


class _HaarDetector(_Detector):
  min_size = 40

  def __init__(self):
    path = os.path.join(cv2.data.haarcascades, 'haarcascade_frontalface_default.xml')
    self._det = cv2.CascadeClassifier(path)
    if self._det.empty():
      raise FileNotFoundError(f'{path}: OpenCV Haar cascade not found')

  def __call__(self, image, upsample=0):
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    if upsample:
      gray = cv2.resize(gray, None, fx=2.0 ** upsample, fy=2.0 ** upsample,
                        interpolation=cv2.INTER_LINEAR)
    faces = self._det.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5,
                                       minSize=(self.min_size, self.min_size))
    k = 2.0 ** -upsample
    return [np.array([x, y, x + w, y + h], np.float64) * k for (x, y, w, h) in faces]


@functools.lru_cache(maxsize=4)
def make_detector(name: str) -> _Detector:
  """'dlib' (HOG), 'haar' (OpenCV cascade) or 'auto' (dlib when importable, else haar).

  Detectors are stateless and take ~0.4 s to build, so one per name is shared (cached).
  """
  if name == 'auto':
    name = 'dlib' if dlib is not None else 'haar'
  if name == 'dlib':
    if dlib is None:
      raise ImportError('detector=dlib needs the dlib module (pip install dlib-bin)')
    return _DlibDetector()
  if name == 'haar':
    return _HaarDetector()
  raise ValueError(f'unknown face detector {name!r} (expected dlib, haar or auto)')
