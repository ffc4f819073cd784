"""Helpers for comparing against the official diffae reference arrays (NCHW float64 ↔ our NHWC)."""

import jax.numpy as jnp
import numpy as np


def nhwc(a):
  return jnp.asarray(np.asarray(a).transpose(0, 2, 3, 1))


def nchw(a):
  return np.asarray(a, np.float64).transpose(0, 3, 1, 2)


def max_err(a, b):
  return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
