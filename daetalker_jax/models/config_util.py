"""What every model-shape dataclass shares: building it from a config block, and its dtypes as jnp dtypes."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

import jax.numpy as jnp

T = TypeVar('T')


def from_dict(cls: type[T], d: Mapping[str, Any], overrides: Mapping[str, Any], what: str) -> T:
  """`cls(**d, **overrides)` from a dict or ConfigDict; unknown keys are one ValueError naming `what`."""
  d = {**(d.to_dict() if hasattr(d, 'to_dict') else dict(d)), **overrides}
  known = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(d) - known)
  if unknown:
    raise ValueError(f'{what}: unknown fields {unknown}; known: {sorted(known)}')
  return cls(**d)


class Dtypes:
  """Mixin for a config with string fields `dtype` (compute) and `param_dtype`."""
  dtype: str
  param_dtype: str

  @property
  def compute_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.dtype)

  @property
  def params_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.param_dtype)
