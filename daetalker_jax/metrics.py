"""Training metrics kept on device, fetched in bulk, checked for NaN/Inf; image metrics and grids.

The train loop must not sync with the host every step (`float(loss)` would serialise dispatch and
compute), so per-step metric dicts of device scalars are buffered here and fetched together every
`log_every_steps`, which is also where non-finite values are caught.
"""

import math
from typing import Any

import jax
import numpy as np

from daetalker_jax import atomic


class NonFiniteError(FloatingPointError):
  """A training metric (loss, grad norm, ...) became NaN or Inf."""


class MetricsBuffer:
  """Per-step device metrics, fetched and averaged on `flush`."""

  def __init__(self):
    self._steps: list[int] = []
    self._metrics: list[dict[str, Any]] = []

  def __len__(self) -> int:
    return len(self._steps)

  def add(self, step: int, metrics: dict[str, Any]) -> None:
    """`step` is the 0-based index of the optimizer step that produced `metrics`."""
    self._steps.append(step)
    self._metrics.append(metrics)

  def flush(self) -> dict[str, float]:
    """Fetches the buffered metrics (one host sync), raises NonFiniteError, returns their means."""
    if not self._metrics:
      return {}
    steps, fetched = self._steps, jax.device_get(self._metrics)
    self._steps, self._metrics = [], []
    bad = [(s, k) for s, m in zip(steps, fetched) for k, v in m.items()
           if not np.all(np.isfinite(np.asarray(v, np.float64)))]
    if bad:
      first = bad[0][0]
      keys = ', '.join(k for s, k in bad if s == first)
      raise NonFiniteError(
          f'non-finite {keys} at optimizer step {first} (checked steps {steps[0]}..{steps[-1]}); '
          f'training stopped before saving this state')
    return {k: float(np.mean([np.mean(m[k]) for m in fetched])) for k in fetched[0]}


def psnr(x: np.ndarray, y: np.ndarray, data_range: float = 2.0) -> np.ndarray:
  """Per-image PSNR in dB of (N,H,W,C) images; `data_range` 2 for images in [-1, 1]."""
  x = np.asarray(x, np.float64)
  y = np.asarray(y, np.float64)
  mse = np.mean((x - y) ** 2, axis=tuple(range(1, x.ndim)))
  return 10.0 * np.log10(data_range ** 2 / np.maximum(mse, 1e-12))


def to_uint8(x: np.ndarray) -> np.ndarray:
  """Images in [-1, 1] → uint8 [0, 255]."""
  return np.clip(np.round((np.asarray(x, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def image_grid(rows: list[np.ndarray], pad: int = 2) -> np.ndarray:
  """Rows of (N,H,W,3) images in [-1, 1] → one uint8 (R*(H+pad)+pad, N*(W+pad)+pad, 3) grid."""
  n, h, w, c = rows[0].shape
  grid = np.full((len(rows) * (h + pad) + pad, n * (w + pad) + pad, c), 255, np.uint8)
  for r, row in enumerate(rows):
    if row.shape != rows[0].shape:
      raise ValueError(f'image_grid: row {r} has shape {row.shape}, row 0 has {rows[0].shape}')
    for i, img in enumerate(to_uint8(row)):
      y, x = pad + r * (h + pad), pad + i * (w + pad)
      grid[y:y + h, x:x + w] = img
  return grid


def write_png(path: atomic.PathLike, image: np.ndarray) -> None:
  """Writes a uint8 (H,W,3) image atomically (temp file + rename), so readers never see half a PNG."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  atomic.write_with(path, lambda tmp: Image.fromarray(image).save(tmp, format='PNG'), suffix='.png')


def count_params(tree: Any) -> int:
  return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))
