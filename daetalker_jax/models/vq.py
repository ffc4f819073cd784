"""The VQ-regularised autoencoder of latent diffusion (LDM's "VQ-f4"), the first stage of DiffTalk, in Flax NNX.

Port of LDM's VQModel (Rombach et al. 2022; the taming-transformers Encoder / Decoder / VectorQuantizer2),
numerically the same model as diffusers' `VQModel` with DownEncoderBlock2D / UpDecoderBlock2D blocks. The
tree mirrors LDM's module tree (`encoder.down[i].block[j].norm1`, `encoder.mid.attn_1.q`,
`decoder.up[i].upsample.conv`, `quantize.embedding`, ...), so LDM / DiffTalk checkpoints import by name
(`daetalker_jax/importers/vq.py`). As in LDM, `decoder.up[i]` is the level at resolution / 2^i: the decoder
runs the list backwards (diffusers' `up_blocks` are in running order).

  z = model.encode(x)      x (B,H,W,in_channels) in [-1, 1] -> z (B,H/f,W/f,embed_dim), BEFORE quantisation
  x = model.decode(z)      quantises first (nearest codebook entry), then post_quant_conv and the decoder
  x = model.decode_code(indices)   indices (B,H/f,W/f) int
  z_q, indices, codebook_loss, commitment_loss = model.quantize(z)   (the `quantize` submodule, LDM's name)
  recon, aux = model(x)    aux: codebook_loss, commitment_loss, indices

f = 2^(len(ch_mult)-1). The published VQ-f4 (`VQConfig()`): ch 128, ch_mult (1,2,4), 2 res blocks per level,
no attention in the levels, one single-head attention in each middle block, GroupNorm(32, eps 1e-6), SiLU,
3-channel codes, 8192 entries, 55,322,782 parameters; 256 px -> 64x64x3. Latents are used unscaled.

Layout NHWC. `dtype` is the compute dtype (float32 or bfloat16); group norm statistics, the attention
softmax and everything in the quantiser run in at least float32.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from daetalker_jax.models import config_util
from daetalker_jax.models import layers
from daetalker_jax.models.unet import count_params  # noqa: F401 (vq.count_params)

Dtype = Any


@dataclasses.dataclass(frozen=True)
class VQConfig(config_util.Dtypes):
  """Shapes of the VQ autoencoder; names follow LDM's ddconfig (+ embed_dim, n_embed)."""
  image_size: int = 256                    # training resolution (the model itself is fully convolutional)
  in_channels: int = 3                     # image channels
  out_channels: int = 3                    # reconstructed image channels
  ch: int = 128                            # base width; level widths are ch * ch_mult
  ch_mult: tuple[int, ...] = (1, 2, 4)     # width multiplier per level; downsampling factor 2^(levels-1)
  num_res_blocks: int = 2                  # res blocks per encoder level (decoder: one more)
  z_channels: int = 3                      # encoder output / decoder input channels
  embed_dim: int = 3                       # codebook vector size (quant_conv: z_channels -> embed_dim)
  n_embed: int = 8192                      # codebook entries
  norm_groups: int = 32                    # GroupNorm groups (LDM: 32)
  dtype: str = 'float32'                   # compute dtype: float32 | bfloat16
  param_dtype: str = 'float32'             # parameter dtype

  def __post_init__(self):
    object.__setattr__(self, 'ch_mult', tuple(int(m) for m in self.ch_mult))
    if not self.ch_mult:
      raise ValueError('VQConfig: ch_mult is empty')
    for width in {self.ch * m for m in self.ch_mult}:
      if width % self.norm_groups:
        raise ValueError(f'VQConfig: width {width} is not divisible into norm_groups={self.norm_groups}')
    if self.image_size % self.factor:
      raise ValueError(f'VQConfig: image_size {self.image_size} is not divisible by the factor {self.factor}')

  @property
  def factor(self) -> int:
    """Spatial downsampling factor of the latent."""
    return 2 ** (len(self.ch_mult) - 1)

  @property
  def latent_shape(self) -> tuple[int, int, int]:
    """(H, W, C) of the latent of an image_size image."""
    s = self.image_size // self.factor
    return (s, s, self.embed_dim)


def config_from_dict(d: Mapping[str, Any], **overrides: Any) -> VQConfig:
  """VQConfig from `config.model` (a ConfigDict or dict), e.g. `config_from_dict(config.model, dtype=...)`."""
  return config_util.from_dict(VQConfig, d, overrides, 'config.model (VQ autoencoder)')


# --------------------------------------------------------------------------------------------------------
# Blocks.
# --------------------------------------------------------------------------------------------------------
def _norm(channels: int, cfg: VQConfig, rngs: nnx.Rngs) -> nnx.GroupNorm:
  # Two-pass variance (PyTorch's), statistics in >= float32.
  return nnx.GroupNorm(channels, num_groups=cfg.norm_groups, epsilon=1e-6, use_fast_variance=False,
                       dtype=cfg.compute_dtype, param_dtype=cfg.params_dtype, rngs=rngs)


def _conv(cin: int, cout: int, kernel: int, cfg: VQConfig, rngs: nnx.Rngs) -> nnx.Conv:
  return layers.conv(cin, cout, kernel, dtype=cfg.compute_dtype, param_dtype=cfg.params_dtype, rngs=rngs)


class ResnetBlock(nnx.Module):
  """x + conv2(SiLU(GN(conv1(SiLU(GN(x)))))), with a 1x1 `nin_shortcut` when the width changes (no dropout)."""

  def __init__(self, cin: int, cout: int, cfg: VQConfig, *, rngs: nnx.Rngs):
    self.norm1 = _norm(cin, cfg, rngs)
    self.conv1 = _conv(cin, cout, 3, cfg, rngs)
    self.norm2 = _norm(cout, cfg, rngs)
    self.conv2 = _conv(cout, cout, 3, cfg, rngs)
    self.nin_shortcut = _conv(cin, cout, 1, cfg, rngs) if cin != cout else None

  def __call__(self, x: jax.Array) -> jax.Array:
    h = self.conv1(nnx.silu(self.norm1(x)))
    h = self.conv2(nnx.silu(self.norm2(h)))
    if self.nin_shortcut is not None:
      x = self.nin_shortcut(x)
    return x + h


class AttnBlock(nnx.Module):
  """Single-head spatial self-attention with a residual; LDM's 1x1-conv q/k/v/proj_out are Linear here."""

  def __init__(self, channels: int, cfg: VQConfig, *, rngs: nnx.Rngs):
    kw = dict(dtype=cfg.compute_dtype, param_dtype=cfg.params_dtype, rngs=rngs)
    self.norm = _norm(channels, cfg, rngs)
    self.q = layers.linear(channels, channels, **kw)
    self.k = layers.linear(channels, channels, **kw)
    self.v = layers.linear(channels, channels, **kw)
    self.proj_out = layers.linear(channels, channels, **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    b, hh, ww, c = x.shape
    h = self.norm(x).reshape(b, hh * ww, c)
    q, k, v = self.q(h), self.k(h), self.v(h)                                # (B, L, C)
    w = jnp.einsum('btc,bsc->bts', q, k) * (1 / math.sqrt(c))
    w = jax.nn.softmax(w.astype(layers.wide(w.dtype)), axis=-1).astype(v.dtype)   # (B, L, L)
    a = jnp.einsum('bts,bsc->btc', w, v)
    return x + self.proj_out(a).reshape(b, hh, ww, c).astype(x.dtype)


class Downsample(nnx.Module):
  """Zero pad (0, 1) on the bottom / right, then a 3x3 stride-2 conv (LDM's asymmetric padding)."""

  def __init__(self, channels: int, cfg: VQConfig, *, rngs: nnx.Rngs):
    self.conv = nnx.Conv(channels, channels, (3, 3), strides=2, padding=((0, 1), (0, 1)),
                         dtype=cfg.compute_dtype, param_dtype=cfg.params_dtype,
                         kernel_init=layers.torch_default_init, bias_init=layers.zeros_init, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.conv(x)


class Upsample(nnx.Module):
  """Nearest-neighbour x2, then a 3x3 conv."""

  def __init__(self, channels: int, cfg: VQConfig, *, rngs: nnx.Rngs):
    self.conv = _conv(channels, channels, 3, cfg, rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.conv(layers.upsample_nearest(x))


class Level(nnx.Module):
  """One resolution of the encoder (`block` then `downsample`) or decoder (`block` then `upsample`)."""

  def __init__(self, cin: int, cout: int, n_blocks: int, cfg: VQConfig, *, down: bool = False, up: bool = False,
               rngs: nnx.Rngs):
    self.block = nnx.List([ResnetBlock(cin if j == 0 else cout, cout, cfg, rngs=rngs) for j in range(n_blocks)])
    if down:
      self.downsample = Downsample(cout, cfg, rngs=rngs)
    if up:
      self.upsample = Upsample(cout, cfg, rngs=rngs)
    self.down, self.up = down, up

  def __call__(self, x: jax.Array) -> jax.Array:
    for block in self.block:
      x = block(x)
    if self.down:
      x = self.downsample(x)
    if self.up:
      x = self.upsample(x)
    return x


class MidBlock(nnx.Module):
  """ResnetBlock, AttnBlock, ResnetBlock at the lowest resolution."""

  def __init__(self, channels: int, cfg: VQConfig, *, rngs: nnx.Rngs):
    self.block_1 = ResnetBlock(channels, channels, cfg, rngs=rngs)
    self.attn_1 = AttnBlock(channels, cfg, rngs=rngs)
    self.block_2 = ResnetBlock(channels, channels, cfg, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.block_2(self.attn_1(self.block_1(x)))


class Encoder(nnx.Module):
  """conv_in -> levels (each but the last downsamples) -> mid -> GN -> SiLU -> conv_out (z_channels)."""

  def __init__(self, cfg: VQConfig, *, rngs: nnx.Rngs):
    widths = [cfg.ch * m for m in cfg.ch_mult]
    self.conv_in = _conv(cfg.in_channels, cfg.ch, 3, cfg, rngs)
    self.down = nnx.List([Level(([cfg.ch] + widths)[i], widths[i], cfg.num_res_blocks, cfg,
                                down=i != len(widths) - 1, rngs=rngs) for i in range(len(widths))])
    self.mid = MidBlock(widths[-1], cfg, rngs=rngs)
    self.norm_out = _norm(widths[-1], cfg, rngs)
    self.conv_out = _conv(widths[-1], cfg.z_channels, 3, cfg, rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    h = self.conv_in(x)
    for level in self.down:
      h = level(h)
    h = self.mid(h)
    return self.conv_out(nnx.silu(self.norm_out(h)))


class Decoder(nnx.Module):
  """conv_in -> mid -> levels from the lowest resolution up (each but the last upsamples) -> GN -> SiLU -> conv_out.

  `up[i]` works at resolution / 2^i and has num_res_blocks + 1 res blocks (LDM's order; run backwards).
  """

  def __init__(self, cfg: VQConfig, *, rngs: nnx.Rngs):
    widths = [cfg.ch * m for m in cfg.ch_mult]
    self.conv_in = _conv(cfg.z_channels, widths[-1], 3, cfg, rngs)
    self.mid = MidBlock(widths[-1], cfg, rngs=rngs)
    # Level i takes the width of level i+1 (the one run before it), or the mid width for the last.
    self.up = nnx.List([Level((widths + [widths[-1]])[i + 1], widths[i], cfg.num_res_blocks + 1, cfg,
                              up=i != 0, rngs=rngs) for i in range(len(widths))])
    self.norm_out = _norm(widths[0], cfg, rngs)
    self.conv_out = _conv(widths[0], cfg.out_channels, 3, cfg, rngs)

  def __call__(self, z: jax.Array) -> jax.Array:
    h = self.mid(self.conv_in(z))
    for level in reversed(self.up):
      h = level(h)
    return self.conv_out(nnx.silu(self.norm_out(h)))


class VectorQuantizer(nnx.Module):
  """Nearest-codebook-entry quantisation with the straight-through estimator (VQ-VAE, van den Oord et al.).

  `embedding`: (n_embed, embed_dim), initialised U(+-1/n_embed) as LDM. Distances, losses and the
  straight-through output are float32 (or wider).
  """

  def __init__(self, n_embed: int, embed_dim: int, *, param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
    self.embedding = nnx.Param(jax.random.uniform(rngs.params(), (n_embed, embed_dim), param_dtype,
                                                  -1.0 / n_embed, 1.0 / n_embed))

  def indices(self, z: jax.Array) -> jax.Array:
    """Index (B,H,W) int32 of the nearest codebook entry (squared L2) of each vector of z (B,H,W,D)."""
    e = self.embedding.get_value()
    f = layers.wide(z.dtype)
    zf, e = z.astype(f), e.astype(f)
    # ||z - e||^2 = ||z||^2 - 2 z.e + ||e||^2, with full-precision dots (no TF32 / bf16 passes).
    dots = jnp.einsum('bhwd,nd->bhwn', zf, e, precision=jax.lax.Precision.HIGHEST)
    d = jnp.sum(zf * zf, axis=-1, keepdims=True) - 2 * dots + jnp.sum(e * e, axis=-1)
    return jnp.argmin(d, axis=-1).astype(jnp.int32)

  def lookup(self, indices: jax.Array) -> jax.Array:
    """Codebook vectors (..., D) of indices (...)."""
    return jnp.take(self.embedding.get_value(), indices, axis=0)

  def __call__(self, z: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """(z_q, indices, codebook_loss, commitment_loss) of z (B,H,W,D).

    z_q = z + sg(e - z) (the straight-through estimator: forward e, gradient to z as identity);
    codebook_loss = mean((e - sg(z))^2) (moves the codebook); commitment_loss = mean((z - sg(e))^2)
    (moves the encoder). Both are scalars, float32.
    """
    d = self.embedding.get_value().shape[1]
    if z.ndim != 4 or z.shape[-1] != d:
      raise ValueError(f'VQModel.quantize: expected (B, h, w, {d}) latents, got {z.shape}')
    idx = self.indices(z)
    f = layers.wide(z.dtype)
    zf, e = z.astype(f), self.lookup(idx).astype(f)
    codebook_loss = jnp.mean(jnp.square(e - jax.lax.stop_gradient(zf)))
    commitment_loss = jnp.mean(jnp.square(zf - jax.lax.stop_gradient(e)))
    z_q = zf + jax.lax.stop_gradient(e - zf)
    return z_q, idx, codebook_loss, commitment_loss


# --------------------------------------------------------------------------------------------------------
# The model.
# --------------------------------------------------------------------------------------------------------
class VQModel(nnx.Module):
  """LDM's VQModel: encoder -> quant_conv -> quantize -> post_quant_conv -> decoder (see the module doc)."""

  def __init__(self, cfg: VQConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.encoder = Encoder(cfg, rngs=rngs)
    self.quant_conv = _conv(cfg.z_channels, cfg.embed_dim, 1, cfg, rngs)
    self.quantize = VectorQuantizer(cfg.n_embed, cfg.embed_dim, param_dtype=cfg.params_dtype, rngs=rngs)
    self.post_quant_conv = _conv(cfg.embed_dim, cfg.z_channels, 1, cfg, rngs)
    self.decoder = Decoder(cfg, rngs=rngs)

  def _check_image(self, x: jax.Array) -> None:
    f = self.cfg.factor
    if x.ndim != 4 or x.shape[-1] != self.cfg.in_channels or x.shape[1] % f or x.shape[2] % f:
      raise ValueError(f'VQModel.encode: expected (B, H, W, {self.cfg.in_channels}) images with H and W divisible '
                       f'by {f}, got {x.shape}')

  def encode(self, x: jax.Array) -> jax.Array:
    """Latent (B,H/f,W/f,embed_dim) of images x (B,H,W,in_channels) in [-1, 1], before quantisation."""
    self._check_image(x)
    return self.quant_conv(self.encoder(x.astype(self.cfg.compute_dtype)))

  def decode_quantized(self, z_q: jax.Array) -> jax.Array:
    """Images (B,H,W,out_channels) from already quantised latents (no codebook lookup)."""
    return self.decoder(self.post_quant_conv(z_q.astype(self.cfg.compute_dtype)))

  def decode(self, z: jax.Array) -> jax.Array:
    """Images (B,H,W,out_channels) of latents z (B,h,w,embed_dim): quantised first, as LDM's decode."""
    z_q, *_ = self.quantize(z)
    return self.decode_quantized(z_q)

  def decode_code(self, indices: jax.Array) -> jax.Array:
    """Images of codebook indices (B,h,w) int."""
    if indices.ndim != 3:
      raise ValueError(f'VQModel.decode_code: expected (B, h, w) indices, got {indices.shape}')
    return self.decode_quantized(self.quantize.lookup(indices))

  def __call__(self, x: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """(reconstruction, aux) of images x; aux = {'codebook_loss', 'commitment_loss', 'indices' (B,h,w)}."""
    z_q, idx, codebook_loss, commitment_loss = self.quantize(self.encode(x))
    recon = self.decode_quantized(z_q)
    return recon, {'codebook_loss': codebook_loss, 'commitment_loss': commitment_loss, 'indices': idx}
