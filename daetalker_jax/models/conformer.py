"""Conformer blocks (Gulati et al., 2020) with rotary self-attention and padding masks.

Block (the paper's Eq. 1, macaron style):
  x = x + 1/2 FFN(x)
  x = x + MHSA(x)            rotary positions (RoFormer, Su et al. 2021) on queries and keys
  x = x + Conv(x)            LN -> pointwise 2C -> GLU -> depthwise conv (kernel 13) -> LN -> SiLU -> pointwise
  x = x + 1/2 FFN(x)
  y = LayerNorm(x)
The paper's BatchNorm after the depthwise conv is a LayerNorm here: batch statistics would mix padding
into real frames and differ between training and inference.

Padding: `mask` (B, T) is True for real frames. Padded keys are excluded from attention and padded
frames are zeroed before the depthwise conv, so real outputs do not depend on padded inputs. Outputs at
padded positions are meaningless (not zeroed); callers mask their losses.
"""

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx


def rotary(x: jax.Array, base: float = 10_000.0) -> jax.Array:
  """Rotary position embedding on (B, T, N, H) (H even), positions 0..T-1, half-split rotation."""
  _, t, _, h = x.shape
  inv = 1.0 / base ** (jnp.arange(0, h // 2, dtype=jnp.float32) * 2.0 / h)   # (H/2,)
  ang = jnp.arange(t, dtype=jnp.float32)[:, None] * inv[None, :]             # (T, H/2)
  cos, sin = jnp.cos(ang)[None, :, None, :], jnp.sin(ang)[None, :, None, :]
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


class FeedForward(nnx.Module):
  """LN -> Linear(C, mult*C) -> SiLU -> dropout -> Linear(mult*C, C) -> dropout."""

  def __init__(self, dim: int, mult: int, dropout: float, *, dtype: Any, param_dtype: Any, rngs: nnx.Rngs):
    self.norm = nnx.LayerNorm(dim, epsilon=1e-5, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.fc1 = nnx.Linear(dim, mult * dim, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.fc2 = nnx.Linear(mult * dim, dim, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.dropout = nnx.Dropout(dropout, rngs=rngs)

  def __call__(self, x: jax.Array, *, deterministic: bool) -> jax.Array:
    h = jax.nn.silu(self.fc1(self.norm(x)))
    h = self.dropout(h, deterministic=deterministic)
    return self.dropout(self.fc2(h), deterministic=deterministic)


class RotarySelfAttention(nnx.Module):
  """LN -> multi-head self-attention with rotary q/k and a key padding mask -> dropout."""

  def __init__(self, dim: int, num_heads: int, dropout: float, *, dtype: Any, param_dtype: Any,
               rngs: nnx.Rngs):
    if dim % num_heads or (dim // num_heads) % 2:
      raise ValueError(f'conformer: d_model {dim} must split into {num_heads} heads of even size')
    self.num_heads = num_heads
    self.norm = nnx.LayerNorm(dim, epsilon=1e-5, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.qkv = nnx.Linear(dim, 3 * dim, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.out = nnx.Linear(dim, dim, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.attn_dropout = nnx.Dropout(dropout, rngs=rngs)
    self.dropout = nnx.Dropout(dropout, rngs=rngs)

  def __call__(self, x: jax.Array, mask: jax.Array, *, deterministic: bool) -> jax.Array:
    b, t, d = x.shape
    n, hd = self.num_heads, d // self.num_heads
    q, k, v = jnp.split(self.qkv(self.norm(x)).reshape(b, t, 3 * n, hd), 3, axis=2)   # (B, T, N, H)
    q, k = rotary(q), rotary(k)
    logits = jnp.einsum('btnh,bsnh->bnts', q, k).astype(jnp.float32) / jnp.sqrt(hd)
    logits = jnp.where(mask[:, None, None, :], logits, jnp.finfo(jnp.float32).min)
    probs = self.attn_dropout(jax.nn.softmax(logits, axis=-1), deterministic=deterministic)
    o = jnp.einsum('bnts,bsnh->btnh', probs.astype(v.dtype), v).reshape(b, t, d)
    return self.dropout(self.out(o), deterministic=deterministic)


class ConvModule(nnx.Module):
  """LN -> pointwise (2C) -> GLU -> [zero padding] -> depthwise conv -> LN -> SiLU -> pointwise -> dropout."""

  def __init__(self, dim: int, kernel_size: int, dropout: float, *, dtype: Any, param_dtype: Any,
               rngs: nnx.Rngs):
    self.norm = nnx.LayerNorm(dim, epsilon=1e-5, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.pw1 = nnx.Linear(dim, 2 * dim, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    # 'SAME' with an odd kernel is symmetric: output t sees t - k//2 .. t + k//2.
    self.dw = nnx.Conv(dim, dim, kernel_size, padding='SAME', feature_group_count=dim, dtype=dtype,
                       param_dtype=param_dtype, rngs=rngs)
    self.dw_norm = nnx.LayerNorm(dim, epsilon=1e-5, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.pw2 = nnx.Linear(dim, dim, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.dropout = nnx.Dropout(dropout, rngs=rngs)

  def __call__(self, x: jax.Array, mask: jax.Array, *, deterministic: bool) -> jax.Array:
    h = jax.nn.glu(self.pw1(self.norm(x)), axis=-1)       # (B, T, C)
    h = jnp.where(mask[:, :, None], h, 0)                 # padded frames must not leak through the conv
    h = jax.nn.silu(self.dw_norm(self.dw(h)))
    return self.dropout(self.pw2(h), deterministic=deterministic)


class ConformerBlock(nnx.Module):
  """One Conformer block; `__call__(x (B,T,C), mask (B,T) bool) -> (B,T,C)`."""

  def __init__(self, dim: int, num_heads: int, *, ff_mult: int = 4, kernel_size: int = 13,
               dropout: float = 0.1, dtype: Any = jnp.float32, param_dtype: Any = jnp.float32,
               rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.ff1 = FeedForward(dim, ff_mult, dropout, **kw)
    self.attn = RotarySelfAttention(dim, num_heads, dropout, **kw)
    self.conv = ConvModule(dim, kernel_size, dropout, **kw)
    self.ff2 = FeedForward(dim, ff_mult, dropout, **kw)
    self.norm = nnx.LayerNorm(dim, epsilon=1e-5, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

  def __call__(self, x: jax.Array, mask: jax.Array, *, deterministic: bool) -> jax.Array:
    x = x + 0.5 * self.ff1(x, deterministic=deterministic)
    x = x + self.attn(x, mask, deterministic=deterministic)
    x = x + self.conv(x, mask, deterministic=deterministic)
    x = x + 0.5 * self.ff2(x, deterministic=deterministic)
    return self.norm(x)


class Conformer(nnx.Module):
  """A stack of Conformer blocks, optionally rematerialised per block to save activation memory."""

  def __init__(self, dim: int, num_heads: int, num_blocks: int, *, ff_mult: int = 4, kernel_size: int = 13,
               dropout: float = 0.1, remat: bool = False, dtype: Any = jnp.float32,
               param_dtype: Any = jnp.float32, rngs: nnx.Rngs):
    self.remat = remat
    self.blocks = nnx.List([
        ConformerBlock(dim, num_heads, ff_mult=ff_mult, kernel_size=kernel_size, dropout=dropout,
                       dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        for _ in range(num_blocks)])

  def __call__(self, x: jax.Array, mask: jax.Array, *, deterministic: bool) -> jax.Array:
    mask = mask.astype(bool)                              # (B, T)
    for block in self.blocks:
      if self.remat:
        x = nnx.remat(lambda blk, h, m: blk(h, m, deterministic=deterministic))(block, x, mask)
      else:
        x = block(x, mask, deterministic=deterministic)
    return x
