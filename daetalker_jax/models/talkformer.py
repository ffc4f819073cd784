"""Stage B of landmark diffusion (docs/LANDMARK.md): a diffusion renderer that follows landmarks, in Flax NNX.

  model = LandmarkDiffusion(cfg..., rngs=rngs)
  cond = model.condition(masked, reference, landmarks, ref_landmarks)      # once per frame (or per clip)
  eps = model(z_t, t, cond)

The denoiser is the LDM UNet (models/ldm_unet.py) over [z_t, latent of the masked target] whose attention
blocks are TalkFormer blocks instead of spatial transformers. A TalkFormer block, on the image tokens
h = proj_in(GN(x)) + a 2-D sine position code:
  1. motion cross-attention: h += A(LN(h), landmark tokens); one token per landmark of the target frame (68:
     the 39 context points tracked in the source, the 29 motion points from Stage A or the truth), built from
     Fourier features of its coordinates, of its offset from the same point in the reference frame, and an
     id embedding (`LandmarkTokens`). The keys are smooth functions of the coordinates, so the diffusion loss
     has a gradient with respect to the landmarks: it reaches Stage A in the end-to-end fine-tune.
  2. implicit warping: h += A(LN(h), reference tokens); the reference frame's features at this block's
     resolution (`ReferenceEncoder`, with the same position code) followed by the reference landmark tokens
     (the "keys" that say where each part of the reference face is). They depend only on the reference, so the
     sampler computes them once per clip and reuses them at every DDIM step (`condition`).
  3. h += GEGLU-FF(LN(h)); out = x + proj_out(h).
The attention and feed-forward output projections and proj_out are zero-initialised (the block starts as the
identity). Every landmark is an image fraction in [0, 1] (x right, y down).

`space` (config) picks where the renderer works: 'latent' (a frozen VQ first stage, as DiffTalk; the default)
or 'pixel' (no autoencoder: the UNet denoises the image itself).
The whole model keeps Stage A in `stage_a` (models/audio2landmarks.py) so that one checkpoint holds both stages
and the end-to-end fine-tune trains them together.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from daetalker_jax.models import audio2landmarks
from daetalker_jax.models import config_util
from daetalker_jax.models import layers
from daetalker_jax.models import ldm_unet
from daetalker_jax.models import vq

SPACES = ('latent', 'pixel')


@dataclasses.dataclass(frozen=True)
class TalkFormerConfig(config_util.Dtypes):
  """Shapes of the TalkFormer conditioning (the UNet's shapes are an LDMUNetConfig)."""
  space: str = 'latent'          # latent (VQ first stage) | pixel
  token_dim: int = 128           # landmark and reference token width
  fourier_bands: int = 8         # sin/cos of 2^k pi x, k < bands, per coordinate
  offset_scale: float = 4.0      # offsets from the reference landmarks are multiplied by this before Fourier
  ref_channels: int = 64         # width of the reference encoder's convolutions
  head_channels: int = 32        # channels per attention head in the TalkFormer blocks
  concat_reference: bool = False  # also concatenate the reference latent to the UNet input (as DiffTalk does)
  dtype: str = 'float32'
  param_dtype: str = 'float32'

  def __post_init__(self):
    if self.space not in SPACES:
      raise ValueError(f'config.model.talkformer.space={self.space!r}: expected one of {SPACES}')


def config_from_dict(d: Mapping[str, Any], **overrides: Any) -> TalkFormerConfig:
  return config_util.from_dict(TalkFormerConfig, d, overrides, 'config.model.talkformer')


def fourier(x: jax.Array, bands: int) -> jax.Array:
  """(..., C) -> (..., 2 * bands * C): sin and cos of 2^k pi x."""
  freqs = (2.0 ** jnp.arange(bands)) * jnp.pi
  a = (x[..., None] * freqs).reshape(*x.shape[:-1], -1)
  return jnp.concatenate([jnp.sin(a), jnp.cos(a)], axis=-1)


def position_code(h: int, w: int, dim: int) -> jax.Array:
  """(h*w, dim) fixed 2-D sine code of pixel centres (dim/2 for x, dim/2 for y)."""
  q = dim // 4
  freqs = np.exp(-math.log(10_000.0) * np.arange(q) / max(q, 1))
  ys, xs = np.meshgrid((np.arange(h) + 0.5) / h * 64, (np.arange(w) + 0.5) / w * 64, indexing='ij')
  parts = [f(c.reshape(-1, 1) * freqs) for c in (xs, ys) for f in (np.sin, np.cos)]
  code = np.concatenate(parts, axis=1)
  return jnp.asarray(np.pad(code, ((0, 0), (0, dim - code.shape[1]))), jnp.float32)


class LandmarkTokens(nnx.Module):
  """(B, 68, 2) landmarks + (B, 68, 2) reference landmarks -> (B, 68, token_dim)."""

  def __init__(self, cfg: TalkFormerConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    kw = dict(dtype=jnp.float32, param_dtype=cfg.params_dtype, rngs=rngs)
    n_in = 2 * 2 * 2 * cfg.fourier_bands
    self.fc1 = nnx.Linear(n_in, cfg.token_dim, **kw)
    self.fc2 = nnx.Linear(cfg.token_dim, cfg.token_dim, **kw)
    self.ids = nnx.Embed(68, cfg.token_dim, param_dtype=cfg.params_dtype, rngs=rngs)

  def __call__(self, points: jax.Array, ref_points: jax.Array) -> jax.Array:
    c = self.cfg
    p, r = points.astype(jnp.float32), ref_points.astype(jnp.float32)
    f = jnp.concatenate([fourier(p, c.fourier_bands), fourier(c.offset_scale * (p - r), c.fourier_bands)], -1)
    return self.fc2(jax.nn.silu(self.fc1(f))) + self.ids(jnp.arange(68))


class ReferenceEncoder(nnx.Module):
  """Reference image (latent) -> feature tokens at each downsample factor of the UNet: {h*w: (B, h*w, dim)}."""

  def __init__(self, cfg: TalkFormerConfig, in_channels: int, levels: int, *, rngs: nnx.Rngs):
    kw = dict(dtype=cfg.compute_dtype, param_dtype=cfg.params_dtype, rngs=rngs)
    ch = cfg.ref_channels
    self.stem = layers.conv(in_channels, ch, 3, **kw)
    self.convs = nnx.List([layers.conv(ch, ch, 3, **kw) for _ in range(levels)])
    self.downs = nnx.List([layers.conv(ch, ch, 3, strides=2, **kw) for _ in range(levels - 1)])
    self.out = nnx.List([nnx.Linear(ch, cfg.token_dim, **kw) for _ in range(levels)])
    self.token_dim = cfg.token_dim

  def __call__(self, image: jax.Array) -> dict[str, jax.Array]:
    h = self.stem(image)
    tokens = {}
    for i, conv in enumerate(self.convs):
      h = h + conv(jax.nn.silu(h))
      b, hh, ww, ch = h.shape
      tokens[str(hh * ww)] = self.out[i](h.reshape(b, hh * ww, ch)) + position_code(hh, ww, self.token_dim)
      if i < len(self.downs):
        h = self.downs[i](jax.nn.silu(h))
    return tokens


class TalkFormerBlock(nnx.Module):
  """One TalkFormer block at `channels` (module doc); the context is {'motion': tokens, 'ref': {hw: tokens}}."""
  takes_context = True

  def __init__(self, channels: int, cfg: TalkFormerConfig, *, groups: int, dtype, param_dtype, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    if channels % cfg.head_channels:
      raise ValueError(f'TalkFormer: width {channels} is not divisible by head_channels {cfg.head_channels}')
    heads = channels // cfg.head_channels
    ln = lambda: nnx.LayerNorm(channels, epsilon=1e-5, use_fast_variance=False, **kw)
    self.channels = channels
    self.norm = layers.GroupNorm(channels, dtype=dtype, param_dtype=param_dtype, num_groups=groups, epsilon=1e-6)
    self.proj_in = layers.linear(channels, channels, **kw)
    self.norm_motion = ln()
    self.motion_attn = ldm_unet.CrossAttention(channels, cfg.token_dim, heads, cfg.head_channels, **kw)
    self.norm_warp = ln()
    self.warp_attn = ldm_unet.CrossAttention(channels, cfg.token_dim, heads, cfg.head_channels, **kw)
    self.norm_ff = ln()
    self.ff_proj = layers.linear(channels, 2 * 4 * channels, **kw)
    self.ff_out = layers.linear(4 * channels, channels, zero=True, **kw)
    self.proj_out = layers.linear(channels, channels, zero=True, **kw)
    for attn in (self.motion_attn, self.warp_attn):    # zero-initialised residual outputs
      attn.to_out.kernel[...] = jnp.zeros_like(attn.to_out.kernel[...])

  def __call__(self, x: jax.Array, context: dict[str, Any]) -> jax.Array:
    b, hh, ww, c = x.shape
    h = self.proj_in(self.norm(x).reshape(b, hh * ww, c)) + position_code(hh, ww, c).astype(x.dtype)
    ref = context['ref'][str(hh * ww)]
    warp_keys = jnp.concatenate([ref, context['ref_landmarks']], axis=1)
    h = h + self.motion_attn(self.norm_motion(h), context['motion'])
    h = h + self.warp_attn(self.norm_warp(h), warp_keys)
    a, g = jnp.split(self.ff_proj(self.norm_ff(h)), 2, axis=-1)
    h = h + self.ff_out(a * jax.nn.gelu(g, approximate=False))
    return x + self.proj_out(h).reshape(b, hh, ww, c).astype(x.dtype)


class LandmarkDiffusion(nnx.Module):
  """Stage A (`stage_a`), the frozen first stage (`first_stage`, latent space only) and the renderer."""
  # What the sampler (inference/difftalk_codec.py) conditions on: landmarks are the target's 68 points (Stage A's
  # motion points already joined to the tracked context points), ref_landmarks the reference frame's.
  CONDITIONS = ('masked', 'reference', 'landmarks', 'ref_landmarks')

  def __init__(self, cfg: TalkFormerConfig, unet: ldm_unet.LDMUNetConfig, stage_a: audio2landmarks.Audio2LandmarksConfig,
               first_stage: vq.VQConfig | None, *, rngs: nnx.Rngs):
    z = first_stage.embed_dim if cfg.space == 'latent' else 3
    if cfg.space == 'latent' and first_stage is None:
      raise ValueError('LandmarkDiffusion: space latent needs config.model.first_stage')
    inputs = 3 if cfg.concat_reference else 2
    if unet.in_channels != inputs * z or unet.out_channels != z:
      what = '[z_t, masked, reference]' if cfg.concat_reference else '[z_t, masked]'
      raise ValueError(f'LandmarkDiffusion: the UNet takes {what} ({inputs * z} channels) and predicts eps ({z}); '
                       f'got in_channels={unet.in_channels}, out_channels={unet.out_channels}')
    self.cfg = cfg
    self.first_stage = vq.VQModel(first_stage, rngs=rngs) if cfg.space == 'latent' else None
    self.stage_a = audio2landmarks.Audio2Landmarks(stage_a, rngs=rngs)
    self.tokens = LandmarkTokens(cfg, rngs=rngs)
    self.reference_encoder = ReferenceEncoder(cfg, z, len(unet.channel_mult), rngs=rngs)
    make = lambda ch, kw: TalkFormerBlock(ch, cfg, groups=unet.norm_groups, **kw)
    self.unet = ldm_unet.LDMUNet(unet, rngs=rngs, make_transformer=make)

  # Image <-> the space the renderer denoises.
  def encode(self, images: jax.Array) -> jax.Array:
    if self.first_stage is None:
      return images.astype(jnp.float32)
    return self.first_stage.encode(images).astype(jnp.float32)

  def decode(self, z: jax.Array) -> jax.Array:
    return z if self.first_stage is None else self.first_stage.decode(z)

  def reference_context(self, reference_z: jax.Array, ref_landmarks: jax.Array) -> dict[str, Any]:
    """What depends only on the reference (computed once per clip by the sampler)."""
    out = {'ref': self.reference_encoder(reference_z), 'ref_landmarks': self.tokens(ref_landmarks, ref_landmarks)}
    if self.cfg.concat_reference:
      out['ref_z'] = reference_z
    return out

  def condition(self, masked_z: jax.Array, reference: dict[str, Any], landmarks: jax.Array,
                ref_landmarks: jax.Array) -> tuple[jax.Array, dict[str, Any]]:
    """(masked latent, context) for `__call__`; landmarks / ref_landmarks (B, 68, 2) image fractions."""
    if landmarks.shape[1:] != (68, 2) or ref_landmarks.shape[1:] != (68, 2):
      raise ValueError(f'LandmarkDiffusion: landmarks must be (batch, 68, 2), got {tuple(landmarks.shape)} and '
                       f'{tuple(ref_landmarks.shape)}')
    context = {**reference, 'motion': self.tokens(landmarks, ref_landmarks)}
    if self.cfg.concat_reference:   # the reference latent joins the UNet input, beside the masked target
      masked_z = jnp.concatenate([masked_z, context.pop('ref_z').astype(masked_z.dtype)], axis=-1)
    return masked_z, context

  def sample_condition(self, masked: jax.Array, reference: jax.Array, landmarks: jax.Array,
                       ref_landmarks: jax.Array) -> tuple[jax.Array, dict[str, Any]]:
    """The sampler's cond from CONDITIONS (images in [-1, 1] at the model's size)."""
    ref = self.reference_context(self.encode(reference), ref_landmarks)
    return self.condition(self.encode(masked), ref, landmarks, ref_landmarks)

  @property
  def latent_channels(self) -> int:
    return 3 if self.first_stage is None else self.first_stage.cfg.embed_dim

  @property
  def latent_factor(self) -> int:
    return 1 if self.first_stage is None else 2 ** (len(self.first_stage.cfg.ch_mult) - 1)

  def __call__(self, z_t: jax.Array, t: jax.Array, cond: tuple[jax.Array, dict[str, Any]]) -> jax.Array:
    masked, context = cond
    return self.unet(jnp.concatenate([z_t, masked.astype(z_t.dtype)], axis=-1), t, context)


def build(config: Any, *, rngs: nnx.Rngs, dtype: str = 'float32') -> LandmarkDiffusion:
  """The LandmarkDiffusion of a config's `model` block (talkformer, unet, stage_a, first_stage)."""
  m = config.model
  tf = config_from_dict(m.talkformer, dtype=dtype)
  first = vq.config_from_dict(m.first_stage, dtype=dtype) if tf.space == 'latent' else None
  return LandmarkDiffusion(tf, ldm_unet.config_from_dict(m.unet, dtype=dtype, remat=bool(config.get('remat', False))),
                           audio2landmarks.config_from_dict(m.stage_a, dtype=dtype), first, rngs=rngs)
