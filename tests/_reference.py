"""The official diffae reference data (tests/reference/diffae): helpers and the tiny model's weights.

The tiny model's 7 MB of weights are not stored. They were made by a seeded recipe (README.md there):
one torch generator seeded 1, one `torch.randn` per parameter in `named_parameters()` order, scaled by
the parameter's kind. `tiny_params.json` lists the names, shapes and kinds in that order, and the
sha256 of the original file's tensors, so `rebuild_tiny_weights` can be checked bit for bit.
"""

import hashlib
import json
import math
import pathlib

import jax.numpy as jnp
import numpy as np

REFERENCE = pathlib.Path(__file__).resolve().parent / 'reference' / 'diffae'

_SCALE = {  # kind → how one N(0, 1) draw becomes the parameter (the exact float32 expressions)
    'weight': lambda r, shape: r * (1 / math.sqrt(math.prod(shape[1:]))),
    'bias': lambda r, shape: 0.05 * r,
    'norm_weight': lambda r, shape: 1 + 0.1 * r,
    'norm_bias': lambda r, shape: 0.1 * r,
}


def tiny_param_spec() -> dict:
  return json.loads((REFERENCE / 'tiny_params.json').read_text())


def rebuild_tiny_weights() -> dict[str, np.ndarray]:
  """The tiny diffae model's state_dict (float32 numpy, PyTorch names and layouts), rebuilt with torch."""
  import torch  # pylint: disable=g-import-not-at-top
  g = torch.Generator().manual_seed(1)
  out = {}
  for name, shape, kind in tiny_param_spec()['params']:
    out[name] = _SCALE[kind](torch.randn(shape, generator=g), shape).numpy()
  return out


def weights_digest(state_dict: dict[str, np.ndarray]) -> str:
  """sha256 over (name, float32 little-endian bytes) of every parameter, in `tiny_params.json` order."""
  h = hashlib.sha256()
  for name, _, _ in tiny_param_spec()['params']:
    h.update(name.encode())
    h.update(np.ascontiguousarray(state_dict[name], '<f4').tobytes())
  return h.hexdigest()


def nhwc(a):
  return jnp.asarray(np.asarray(a).transpose(0, 2, 3, 1))


def nchw(a):
  return np.asarray(a, np.float64).transpose(0, 3, 1, 2)


def max_err(a, b):
  return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
