"""Conformer: padding invariance, rotary relative positions, dropout switch, remat equivalence."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from daetalker_jax.models import conformer


def _model(**kw):
  return conformer.Conformer(16, 2, 2, kernel_size=5, dropout=0.1, rngs=nnx.Rngs(0), **kw)


@nnx.jit(static_argnames='deterministic')
def _apply(model, x, mask, deterministic=True):
  return model(x, mask, deterministic=deterministic)


def test_padding_does_not_change_real_frames():
  model = _model()
  rng = np.random.default_rng(0)
  x = rng.standard_normal((2, 12, 16)).astype(np.float32)
  lengths = np.array([12, 7])
  mask = np.arange(12)[None] < lengths[:, None]
  y = _apply(model, jnp.asarray(x), jnp.asarray(mask))
  # Garbage in the padded frames changes nothing in the real ones ...
  x2 = x.copy()
  x2[1, 7:] = 100 * rng.standard_normal((5, 16))
  y2 = _apply(model, jnp.asarray(x2), jnp.asarray(mask))
  np.testing.assert_allclose(np.asarray(y2[1, :7]), np.asarray(y[1, :7]), atol=1e-5)
  np.testing.assert_allclose(np.asarray(y2[0]), np.asarray(y[0]), atol=1e-5)
  # ... and the padded example equals the same frames run alone, unpadded.
  y_short = _apply(model, jnp.asarray(x[1:, :7]), jnp.ones((1, 7), bool))
  np.testing.assert_allclose(np.asarray(y[1, :7]), np.asarray(y_short[0]), atol=1e-5)
  # Without the mask the padding does leak (the test can fail).
  y3 = _apply(model, jnp.asarray(x2), jnp.ones((2, 12), bool))
  assert np.abs(np.asarray(y3[1, :7]) - np.asarray(y[1, :7])).max() > 1e-2


def test_rotary_scores_depend_on_relative_position_only():
  rng = np.random.default_rng(0)
  q = jnp.asarray(np.tile(rng.standard_normal((1, 1, 1, 8)), (1, 10, 1, 1)).astype(np.float32))
  k = jnp.asarray(np.tile(rng.standard_normal((1, 1, 1, 8)), (1, 10, 1, 1)).astype(np.float32))
  s = np.asarray(jnp.einsum('btnh,bsnh->ts', conformer.rotary(q), conformer.rotary(k)))   # (T, T)
  np.testing.assert_allclose(s[3, 1], s[8, 6], rtol=1e-5)       # offset 2 at two absolute positions
  np.testing.assert_allclose(s[0, 5], s[4, 9], rtol=1e-5)
  assert abs(s[3, 1] - s[3, 2]) > 1e-3                          # different offsets differ
  # Rotation preserves the norm.
  np.testing.assert_allclose(np.linalg.norm(np.asarray(conformer.rotary(q)), axis=-1),
                             np.linalg.norm(np.asarray(q), axis=-1), rtol=1e-5)


def test_dropout_switch_and_remat():
  x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 6, 16)).astype(np.float32))
  mask = jnp.ones((2, 6), bool)
  model = _model()
  a = _apply(model, x, mask)
  b = _apply(model, x, mask)
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  c = _apply(model, x, mask, deterministic=False)
  assert np.abs(np.asarray(c) - np.asarray(a)).max() > 1e-3
  remat = _model(remat=True)
  np.testing.assert_allclose(np.asarray(_apply(remat, x, mask)), np.asarray(a), atol=1e-6)

  @nnx.jit
  def grad_norm(m):
    g = nnx.grad(lambda m: (m(x, mask, deterministic=True) ** 2).mean())(m)
    return jnp.sqrt(sum(jnp.sum(l ** 2) for l in jax.tree.leaves(g)))
  np.testing.assert_allclose(float(grad_norm(remat)), float(grad_norm(model)), rtol=1e-4)


def test_bad_heads():
  with pytest.raises(ValueError, match='heads of even size'):
    conformer.Conformer(18, 4, 1, rngs=nnx.Rngs(0))
