"""The diffae semantic encoder: the UNet's down half without time conditioning, pooled to z_sem.

Port of diffae's BeatGANsEncoderModel as built by BeatGANsAutoencModel (use_time_condition=False,
pool='adaptivenonzero'): the res blocks have only their first half (GN-SiLU-conv + skip), attention sits at
`enc_attn_resolutions`, and the head is GN -> SiLU -> global average pool -> 1x1 conv.
"""

from __future__ import annotations

import jax
from flax import nnx

from daetalker_jax.models import layers
from daetalker_jax.models.unet_config import UNetConfig


class SemanticEncoder(nnx.Module):
  """x0 (B,H,W,C) in [-1,1] -> z_sem (B, enc_out_channels)."""

  def __init__(self, cfg: UNetConfig, *, rngs: nnx.Rngs):
    if cfg.enc_pool != 'adaptivenonzero':
      raise ValueError(f'SemanticEncoder: enc_pool={cfg.enc_pool!r} is not supported (only adaptivenonzero)')
    self.cfg = cfg
    dtype, param_dtype = cfg.compute_dtype, cfg.params_dtype
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    mc = cfg.model_channels
    mults = cfg.enc_channel_mult or cfg.channel_mult
    attn_res = cfg.enc_attn_resolutions or cfg.attention_resolutions
    attn = lambda c: layers.AttentionBlock(c, num_heads=cfg.num_heads, num_head_channels=cfg.num_head_channels,
                                           **kw)
    ch = int(mults[0] * mc)
    blocks = [nnx.List([layers.conv(cfg.in_channels, ch, 3, **kw)])]
    resolution = cfg.image_size
    for level, mult in enumerate(mults):
      for _ in range(cfg.enc_num_res_block):
        out = int(mult * mc)
        block = [layers.ResBlock(ch, out, **kw)]
        ch = out
        if resolution in attn_res:
          block.append(attn(ch))
        blocks.append(nnx.List(block))
      if level != len(mults) - 1:
        resolution //= 2
        down = (layers.ResBlock(ch, ch, down=True, **kw) if cfg.resblock_updown else
                layers.Downsample(ch, **kw))
        blocks.append(nnx.List([down]))
    self.input_blocks = nnx.List(blocks)
    self.middle_block = nnx.List([layers.ResBlock(ch, ch, **kw), attn(ch), layers.ResBlock(ch, ch, **kw)])
    # The head runs in float32 whatever the compute dtype, as diffae's (it is not converted to fp16).
    self.head_dtype = layers.wide(dtype)
    self.out_norm = layers.GroupNorm(ch, dtype=self.head_dtype, param_dtype=param_dtype)
    self.out_conv = layers.linear(ch, cfg.enc_out_channels, dtype=self.head_dtype, param_dtype=param_dtype,
                                  rngs=rngs)  # diffae: a 1x1 conv after the pool

  def __call__(self, x: jax.Array, *, intermediates: dict | None = None) -> jax.Array:
    h = x.astype(self.cfg.compute_dtype)
    for i, block in enumerate(self.input_blocks):
      h = layers.apply_sequential(block, h)
      if intermediates is not None:
        intermediates[f'encoder.input_blocks.{i}'] = h
    h = layers.apply_sequential(self.middle_block, h)
    if intermediates is not None:
      intermediates['encoder.middle_block'] = h
    h = nnx.silu(self.out_norm(h.astype(self.head_dtype)))
    h = h.mean(axis=(1, 2))  # (B, C) global average pool
    return self.out_conv(h)  # (B, enc_out_channels) float32
