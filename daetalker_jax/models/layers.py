"""Building blocks of the diffae ("BeatGANs") UNet and semantic encoder, in Flax NNX.

Ported from the official diffae (github.com/phizaz/diffae, model/blocks.py and model/nn.py) so that official
checkpoints load by name and reproduce the official outputs to float32 precision. Layout is NHWC. Attribute
names mirror the PyTorch module names (`in_norm` = `in_layers.0`, `emb_proj` = `emb_layers.1`, ...); the
mapping lives in `daetalker_jax/importers/diffae.py`.

Every module takes `dtype` (the compute dtype: float32 or bfloat16) and `param_dtype` (float32). Group norm
statistics and the attention softmax run in at least float32 (`wide(dtype)`), like diffae's GroupNorm32 and
its `softmax(weight.float())`; float64 works too (with jax_enable_x64), for exact checks against diffae.
"""

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

Dtype = Any

# PyTorch's default Conv2d/Linear init (kaiming_uniform with a=sqrt(5)) is U(+-1/sqrt(fan_in)), i.e. variance
# 1/(3 fan_in). Used for fresh models so that training from scratch behaves like diffae's.
torch_default_init = nnx.initializers.variance_scaling(1 / 3, 'fan_in', 'uniform')
zeros_init = nnx.initializers.zeros_init()


def wide(dtype: Dtype) -> jnp.dtype:
  """The dtype for statistics, softmax and heads: float32, or float64 when computing in float64."""
  return jnp.promote_types(dtype, jnp.float32)


def timestep_embedding(t: jax.Array, dim: int, max_period: float = 10_000., dtype: Dtype = jnp.float32
                       ) -> jax.Array:
  """Sinusoidal embedding of (possibly fractional) timesteps, cos first then sin, as diffae's nn.py.

  t: (B,) int or float. Returns (B, dim) in `dtype` (float32).
  """
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=dtype) / half)  # (half,)
  args = t.astype(dtype)[:, None] * freqs[None]  # (B, half)
  emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
  if dim % 2:
    emb = jnp.concatenate([emb, jnp.zeros_like(emb[:, :1])], axis=-1)
  return emb


class GroupNorm(nnx.Module):
  """GroupNorm(min(32, C) groups, eps 1e-5) computed in >= float32, output cast to the compute dtype.

  Written out (rather than nnx.GroupNorm) to keep the two-pass float32 variance that PyTorch uses, which
  the float32 parity tests against the official model rely on. `num_groups` overrides min(32, C).
  """

  def __init__(self, channels: int, *, dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32,
               epsilon: float = 1e-5, num_groups: int | None = None):
    self.num_groups = num_groups or min(32, channels)
    if channels % self.num_groups:
      raise ValueError(f'GroupNorm: {channels} channels are not divisible into {self.num_groups} groups')
    self.epsilon = epsilon
    self.dtype = dtype
    self.scale = nnx.Param(jnp.ones((channels,), param_dtype))
    self.bias = nnx.Param(jnp.zeros((channels,), param_dtype))

  def __call__(self, x: jax.Array) -> jax.Array:
    *lead, c = x.shape  # (B, ..., C)
    g = self.num_groups
    f = wide(x.dtype)
    xf = x.astype(f).reshape(lead[0], -1, g, c // g)  # (B, L, G, C/G)
    mean = xf.mean(axis=(1, 3), keepdims=True)
    var = jnp.square(xf - mean).mean(axis=(1, 3), keepdims=True)
    y = ((xf - mean) * jax.lax.rsqrt(var + self.epsilon)).reshape(x.shape)
    y = y * self.scale.get_value().astype(f) + self.bias.get_value().astype(f)
    return y.astype(self.dtype)


def conv(cin: int, cout: int, kernel: int, *, zero: bool = False, strides: int = 1, dtype: Dtype,
         param_dtype: Dtype, rngs: nnx.Rngs) -> nnx.Conv:
  """A 2-D conv with PyTorch's padding (kernel // 2 on each side) and init; `zero` = diffae's zero_module."""
  p = kernel // 2
  return nnx.Conv(cin, cout, (kernel, kernel), strides=strides, padding=((p, p), (p, p)), dtype=dtype,
                  param_dtype=param_dtype, kernel_init=zeros_init if zero else torch_default_init,
                  bias_init=zeros_init, rngs=rngs)


def linear(cin: int, cout: int, *, zero: bool = False, dtype: Dtype, param_dtype: Dtype,
           rngs: nnx.Rngs) -> nnx.Linear:
  return nnx.Linear(cin, cout, dtype=dtype, param_dtype=param_dtype,
                    kernel_init=zeros_init if zero else torch_default_init, bias_init=zeros_init, rngs=rngs)


def downsample_avg(x: jax.Array) -> jax.Array:
  """2x2 average pool, stride 2 (diffae's Downsample(use_conv=False)). (B,H,W,C) -> (B,H/2,W/2,C)."""
  b, h, w, c = x.shape
  return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def upsample_nearest(x: jax.Array) -> jax.Array:
  """Nearest-neighbour 2x upsampling (F.interpolate(scale_factor=2, mode='nearest'))."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class ResBlock(nnx.Module):
  """diffae's ResBlock: GN-SiLU-(up/down)-conv, then conditioned GN-SiLU-dropout-conv, plus a skip path.

  Conditioning (diffae's apply_conditions with two_cond, time first):
    h = GN(h); h = h * (1 + t_s) + t_b; h = h * (1 + z_s); h = conv(dropout(SiLU(h)))
  where (t_s, t_b) = Linear(SiLU(emb)) and z_s = Linear(SiLU(cond)). With `emb_channels=None` (the semantic
  encoder) the block has only the first half: out = skip(x) + conv(SiLU(GN(x))).
  """

  def __init__(self, channels: int, out_channels: int | None = None, *, emb_channels: int | None = None,
               cond_channels: int | None = None, dropout: float = 0., up: bool = False, down: bool = False,
               zero_init: bool = True, dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32,
               rngs: nnx.Rngs):
    out_channels = out_channels or channels
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.up, self.down = up, down
    self.in_norm = GroupNorm(channels, dtype=dtype, param_dtype=param_dtype)
    self.in_conv = conv(channels, out_channels, 3, **kw)
    self.use_condition = emb_channels is not None
    if self.use_condition:
      self.emb_proj = linear(emb_channels, 2 * out_channels, **kw)
      self.cond_proj = linear(cond_channels, out_channels, **kw) if cond_channels else None
      self.out_norm = GroupNorm(out_channels, dtype=dtype, param_dtype=param_dtype)
      # No RNG stream is stored when dropout is off, so such models carry only parameters.
      self.dropout = nnx.Dropout(dropout, rngs=rngs if dropout > 0 else None)
      self.out_conv = conv(out_channels, out_channels, 3, zero=zero_init, **kw)
    self.skip = conv(channels, out_channels, 1, **kw) if out_channels != channels else None

  def _resample(self, x: jax.Array) -> jax.Array:
    if self.up:
      return upsample_nearest(x)
    if self.down:
      return downsample_avg(x)
    return x

  def __call__(self, x: jax.Array, emb: jax.Array | None = None, cond: jax.Array | None = None,
               *, rngs: nnx.Rngs | None = None) -> jax.Array:
    # x: (B,H,W,C); emb: (B, emb_channels) time embedding; cond: (B, cond_channels) semantic latent.
    h = nnx.silu(self.in_norm(x))
    h, x = self._resample(h), self._resample(x)  # diffae resamples between the SiLU and the conv
    h = self.in_conv(h)
    if self.use_condition:
      h = self.out_norm(h)
      # diffae applies conditioning only when the time embedding is given (two_cond needs both).
      if emb is not None:
        t_s, t_b = jnp.split(self.emb_proj(nnx.silu(emb))[:, None, None, :].astype(h.dtype), 2, axis=-1)
        h = h * (1 + t_s) + t_b
        if cond is not None and self.cond_proj is not None:
          h = h * (1 + self.cond_proj(nnx.silu(cond))[:, None, None, :].astype(h.dtype))
      h = self.out_conv(self.dropout(nnx.silu(h), rngs=rngs))
    if self.skip is not None:
      x = self.skip(x)
    return x + h


class AttentionBlock(nnx.Module):
  """Spatial self-attention with diffae's legacy QKV layout (heads split before q/k/v), 1x1 convs as Linear.

  qkv channel layout per head h: [h*3c : h*3c+c] = q, then k, then v (QKVAttentionLegacy).
  """

  def __init__(self, channels: int, *, num_heads: int = 1, num_head_channels: int = -1,
               dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32, zero_init: bool = True,
               rngs: nnx.Rngs):
    if num_head_channels != -1:
      if channels % num_head_channels:
        raise ValueError(f'AttentionBlock: {channels} channels not divisible by {num_head_channels} per head')
      num_heads = channels // num_head_channels
    self.num_heads = num_heads
    self.dtype = dtype
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.norm = GroupNorm(channels, dtype=dtype, param_dtype=param_dtype)
    self.qkv = linear(channels, 3 * channels, **kw)
    self.proj_out = linear(channels, channels, zero=zero_init, **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    b, hh, ww, c = x.shape
    n, ch = self.num_heads, c // self.num_heads
    qkv = self.qkv(self.norm(x).reshape(b, hh * ww, c)).reshape(b, hh * ww, n, 3, ch)  # (B, L, heads, 3, ch)
    scale = 1 / math.sqrt(math.sqrt(ch))  # applied to q and k separately, as diffae (fp16 stability)
    q, k, v = qkv[:, :, :, 0] * scale, qkv[:, :, :, 1] * scale, qkv[:, :, :, 2]  # (B, L, heads, ch)
    w = jnp.einsum('bthc,bshc->bhts', q, k)
    w = jax.nn.softmax(w.astype(wide(w.dtype)), axis=-1).astype(v.dtype)  # (B, heads, L, L)
    a = jnp.einsum('bhts,bshc->bthc', w, v).reshape(b, hh * ww, c)
    return x + self.proj_out(a).reshape(b, hh, ww, c).astype(x.dtype)


class Downsample(nnx.Module):
  """Strided 3x3 conv (diffae's Downsample(use_conv=True)); used only when resblock_updown=False."""

  def __init__(self, channels: int, *, dtype: Dtype, param_dtype: Dtype, rngs: nnx.Rngs):
    self.op = conv(channels, channels, 3, strides=2, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.op(x)


class Upsample(nnx.Module):
  """Nearest 2x then 3x3 conv (diffae's Upsample(use_conv=True)); used only when resblock_updown=False."""

  def __init__(self, channels: int, *, dtype: Dtype, param_dtype: Dtype, rngs: nnx.Rngs):
    self.conv = conv(channels, channels, 3, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.conv(upsample_nearest(x))


def apply_sequential(layers: nnx.List, h: jax.Array, emb: jax.Array | None = None,
                     cond: jax.Array | None = None, rngs: nnx.Rngs | None = None) -> jax.Array:
  """diffae's TimestepEmbedSequential: res blocks get (emb, cond), everything else only the features."""
  for layer in layers:
    if isinstance(layer, ResBlock):
      h = layer(h, emb, cond, rngs=rngs)
    else:
      h = layer(h)
  return h
