"""Correlation of per-frame series: Pearson r, r at a lag, and the best lag (conventions: `evaluation/__init__`)."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np


def pearson(a: Any, b: Any) -> float:
  """Pearson correlation r of two equal-length 1-D series (float64).

  nan with a RuntimeWarning when either series is constant (r is undefined) or shorter than 2.
  """
  a = np.asarray(a, np.float64).reshape(-1)
  b = np.asarray(b, np.float64).reshape(-1)
  if a.shape != b.shape:
    raise ValueError(f'eval_metrics.pearson: series lengths differ: {a.size} vs {b.size}')
  if a.size < 2:
    warnings.warn('eval_metrics.pearson: fewer than 2 samples; r is nan', RuntimeWarning, stacklevel=2)
    return float('nan')
  da, db = a - a.mean(), b - b.mean()
  na, nb = math.sqrt(float(np.dot(da, da))), math.sqrt(float(np.dot(db, db)))
  if na == 0.0 or nb == 0.0:
    warnings.warn('eval_metrics.pearson: a series is constant; r is nan', RuntimeWarning, stacklevel=2)
    return float('nan')
  return float(np.clip(np.dot(da, db) / (na * nb), -1.0, 1.0))


def lagged_pearson(a: Any, b: Any, lag: int) -> float:
  """Pearson r of a[t + lag] against b[t] over the overlap: lag > 0 tests whether `a` lags `b`."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.shape != b.shape:
    raise ValueError(f'eval_metrics.lagged_pearson: series lengths differ: {a.size} vs {b.size}')
  n = a.size
  if abs(lag) >= n:
    return float('nan')
  if lag >= 0:
    return pearson(a[lag:], b[:n - lag])
  return pearson(a[:n + lag], b[-lag:])


def best_lag(a: Any, b: Any, max_lag: int = 5) -> tuple[int, float]:
  """The lag in [-max_lag, max_lag] maximising `lagged_pearson(a, b, lag)`, and that r.

  For lip sync: `best_lag(gen_mouth, real_mouth)` = by how many frames the generated mouth motion
  trails the real one (0 when in sync; negative when it runs ahead). nan r's are skipped; (0, nan)
  when every lag is nan.
  """
  best = (0, float('nan'))
  for lag in range(-max_lag, max_lag + 1):
    with warnings.catch_warnings():
      warnings.simplefilter('ignore', RuntimeWarning)
      r = lagged_pearson(a, b, lag)
    if not math.isnan(r) and (math.isnan(best[1]) or r > best[1] or (r == best[1] and abs(lag) < abs(best[0]))):
      best = (lag, r)
  return best
