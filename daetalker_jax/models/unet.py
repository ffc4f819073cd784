"""The diffae conditional UNet ("BeatGANs") and the diffusion autoencoder that pairs it with its encoder.

Port of diffae's BeatGANsUNetModel / BeatGANsAutoencModel (github.com/phizaz/diffae, model/unet.py and
model/unet_autoenc.py) in Flax NNX, NHWC. The tree mirrors the PyTorch module tree (`input_blocks[i][j]`,
`middle_block[j]`, `output_blocks[i][j]`), so official checkpoints import by name
(`daetalker_jax/importers/diffae.py`) and reproduce the official outputs.

  eps = unet(x_t (B,H,W,C), t (B,), cond (B, enc_out_channels))
  every res block: h = GN(h); h = h*(1+t_s)+t_b; h = h*(1+z_s); h = conv(dropout(SiLU(h)))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from daetalker_jax.models import layers
from daetalker_jax.models.encoder import SemanticEncoder


@dataclasses.dataclass(frozen=True)
class UNetConfig:
  """Shapes of the UNet and its semantic encoder; field names follow diffae's BeatGANsAutoencConfig."""
  image_size: int = 64                     # input resolution (square)
  in_channels: int = 3                     # image channels
  model_channels: int = 64                 # base width; level widths are model_channels * channel_mult
  out_channels: int = 3                    # eps prediction
  num_res_blocks: int = 2                  # res blocks per level (decoder: one more)
  num_input_res_blocks: int | None = None  # res blocks per level on the way down (None: num_res_blocks)
  embed_channels: int = 512                # time embedding width
  attention_resolutions: tuple[int, ...] = (16,)  # resolutions with self-attention
  time_embed_channels: int | None = None   # sinusoidal width (None: model_channels)
  dropout: float = 0.1                     # dropout inside the res blocks
  channel_mult: tuple[int, ...] = (1, 2, 4, 8)   # width multiplier per level
  input_channel_mult: tuple[int, ...] | None = None  # down-path multipliers (None: channel_mult)
  num_heads: int = 1                       # attention heads
  num_head_channels: int = -1              # or channels per head (-1: use num_heads)
  num_heads_upsample: int = -1             # decoder heads (-1: num_heads)
  resblock_updown: bool = True             # resample inside res blocks (else strided conv / nearest+conv)
  resnet_two_cond: bool = True             # res blocks also scale by the semantic latent
  resnet_cond_channels: int | None = None  # width of the latent fed to the res blocks (None: embed_channels)
  resnet_use_zero_module: bool = True      # zero-init the last conv of each res block / attention / output
  enc_out_channels: int = 512              # z_sem width
  enc_attn_resolutions: tuple[int, ...] | None = None  # encoder attention (None: attention_resolutions)
  enc_pool: str = 'adaptivenonzero'        # encoder head (only 'adaptivenonzero')
  enc_num_res_block: int = 2               # encoder res blocks per level
  enc_channel_mult: tuple[int, ...] | None = None  # encoder multipliers (None: channel_mult)
  dtype: str = 'float32'                   # compute dtype: float32 | bfloat16
  param_dtype: str = 'float32'             # parameter dtype
  remat: bool = False                      # rematerialise each UNet block in the backward pass

  def __post_init__(self):
    for f in ('attention_resolutions', 'channel_mult', 'input_channel_mult', 'enc_attn_resolutions',
              'enc_channel_mult'):
      v = getattr(self, f)
      if v is not None:
        object.__setattr__(self, f, tuple(int(x) for x in v))
    n_levels = len(self.input_channel_mult or self.channel_mult)
    if self.image_size % 2 ** (n_levels - 1):
      raise ValueError(f'UNetConfig: image_size {self.image_size} is not divisible by 2^{n_levels - 1}')

  @property
  def compute_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.dtype)

  @property
  def params_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.param_dtype)


def config_from_dict(d: Mapping[str, Any], **overrides: Any) -> UNetConfig:
  """UNetConfig from `config.model` (a ConfigDict or dict), e.g. `config_from_dict(config.model, dtype=...)`."""
  d = {**(d.to_dict() if hasattr(d, 'to_dict') else dict(d)), **overrides}
  known = {f.name for f in dataclasses.fields(UNetConfig)}
  unknown = sorted(set(d) - known)
  if unknown:
    raise ValueError(f'config.model: unknown UNet fields {unknown}; known: {sorted(known)}')
  return UNetConfig(**d)


class BeatGANsUNet(nnx.Module):
  """eps(x_t, t, cond): the conditional UNet of diffae."""

  def __init__(self, cfg: UNetConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    dtype, param_dtype = cfg.compute_dtype, cfg.params_dtype
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.head_dtype = layers.wide(dtype)
    f32 = dict(dtype=self.head_dtype, param_dtype=param_dtype, rngs=rngs)
    mc, emb_ch = cfg.model_channels, cfg.embed_channels
    self.time_ch = cfg.time_embed_channels or mc
    # Kept in float32 like diffae (its fp16 conversion leaves the time MLP alone).
    self.time_embed = nnx.List([layers.linear(self.time_ch, emb_ch, **f32), layers.linear(emb_ch, emb_ch, **f32)])

    res_kw = dict(emb_channels=emb_ch, dropout=cfg.dropout, zero_init=cfg.resnet_use_zero_module,
                  cond_channels=(cfg.resnet_cond_channels or emb_ch) if cfg.resnet_two_cond else None, **kw)
    resblock = lambda cin, cout, **k: layers.ResBlock(cin, cout, **res_kw, **k)

    def attn(c, heads):
      return layers.AttentionBlock(c, num_heads=heads, num_head_channels=cfg.num_head_channels,
                                   zero_init=cfg.resnet_use_zero_module, **kw)

    in_mults = cfg.input_channel_mult or cfg.channel_mult
    ch = input_ch = int(cfg.channel_mult[0] * mc)
    blocks = [nnx.List([layers.conv(cfg.in_channels, ch, 3, **kw)])]
    skip_chans = [[] for _ in cfg.channel_mult]  # per level, the widths the decoder concatenates
    skip_chans[0].append(ch)
    self.input_num_blocks = [0] * len(cfg.channel_mult)
    self.input_num_blocks[0] = 1
    resolution = cfg.image_size
    for level, mult in enumerate(in_mults):
      for _ in range(cfg.num_input_res_blocks or cfg.num_res_blocks):
        block = [resblock(ch, int(mult * mc))]
        ch = int(mult * mc)
        if resolution in cfg.attention_resolutions:
          block.append(attn(ch, cfg.num_heads))
        blocks.append(nnx.List(block))
        skip_chans[level].append(ch)
        self.input_num_blocks[level] += 1
      if level != len(cfg.channel_mult) - 1:
        resolution //= 2
        blocks.append(nnx.List([resblock(ch, ch, down=True) if cfg.resblock_updown else
                                layers.Downsample(ch, **kw)]))
        skip_chans[level + 1].append(ch)
        self.input_num_blocks[level + 1] += 1
    self.input_blocks = nnx.List(blocks)

    self.middle_block = nnx.List([resblock(ch, ch), attn(ch, cfg.num_heads), resblock(ch, ch)])

    heads_up = cfg.num_heads if cfg.num_heads_upsample == -1 else cfg.num_heads_upsample
    blocks = []
    self.output_num_blocks = [0] * len(cfg.channel_mult)
    for level, mult in list(enumerate(cfg.channel_mult))[::-1]:
      for i in range(cfg.num_res_blocks + 1):
        skip = skip_chans[level].pop() if skip_chans[level] else 0
        block = [resblock(ch + skip, int(mc * mult))]
        ch = int(mc * mult)
        if resolution in cfg.attention_resolutions:
          block.append(attn(ch, heads_up))
        if level and i == cfg.num_res_blocks:
          resolution *= 2
          block.append(resblock(ch, ch, up=True) if cfg.resblock_updown else layers.Upsample(ch, **kw))
        blocks.append(nnx.List(block))
        self.output_num_blocks[level] += 1
    self.output_blocks = nnx.List(blocks)
    # The head runs in float32 (diffae casts h back to the input dtype before `out`).
    self.out_norm = layers.GroupNorm(ch, dtype=self.head_dtype, param_dtype=param_dtype)
    self.out_conv = layers.conv(input_ch, cfg.out_channels, 3, zero=cfg.resnet_use_zero_module, **f32)

  def __call__(self, x: jax.Array, t: jax.Array, cond: jax.Array | None, *, rngs: nnx.Rngs | None = None,
               intermediates: dict | None = None) -> jax.Array:
    """x (B,H,W,C), t (B,) int or float timesteps (not rescaled), cond (B, D) -> eps (B,H,W,out) float32.

    `rngs` overrides the dropout streams stored at construction; `intermediates`, when a dict, receives
    every block's output under diffae's module names (for debugging against the official model).
    """
    t = jnp.broadcast_to(jnp.asarray(t), x.shape[:1])
    t_sin = layers.timestep_embedding(t, self.time_ch, dtype=self.head_dtype)  # (B, time_ch), cos first
    emb = self.time_embed[1](nnx.silu(self.time_embed[0](t_sin)))  # (B, embed_channels)
    run = nnx.remat(layers.apply_sequential) if self.cfg.remat else layers.apply_sequential

    hs = [[] for _ in self.input_num_blocks]  # skip connections per level
    h = x.astype(self.cfg.compute_dtype)
    k = 0
    for level, n in enumerate(self.input_num_blocks):
      for _ in range(n):
        h = run(self.input_blocks[k], h, emb, cond, rngs)
        hs[level].append(h)
        if intermediates is not None:
          intermediates[f'input_blocks.{k}'] = h
        k += 1
    h = run(self.middle_block, h, emb, cond, rngs)
    if intermediates is not None:
      intermediates['middle_block'] = h
    k = 0
    for level, n in enumerate(self.output_num_blocks[::-1]):
      for _ in range(n):
        level_hs = hs[-level - 1]
        if level_hs:  # diffae: concat [h, lateral] on channels while laterals remain
          h = jnp.concatenate([h, level_hs.pop()], axis=-1)
        h = run(self.output_blocks[k], h, emb, cond, rngs)
        if intermediates is not None:
          intermediates[f'output_blocks.{k}'] = h
        k += 1
    return self.out_conv(nnx.silu(self.out_norm(h.astype(self.head_dtype))))


class DiffusionAutoencoder(nnx.Module):
  """The diffusion autoencoder: `encoder` (x0 -> z_sem) and `unet` (eps(x_t, t, z_sem))."""

  def __init__(self, cfg: UNetConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.encoder = SemanticEncoder(cfg, rngs=rngs)
    self.unet = BeatGANsUNet(cfg, rngs=rngs)

  def encode(self, x0: jax.Array) -> jax.Array:
    """x0 (B,H,W,C) in [-1,1] -> z_sem (B, enc_out_channels) float32."""
    return self.encoder(x0)

  def __call__(self, x_t: jax.Array, t: jax.Array, *, cond: jax.Array | None = None,
               x_start: jax.Array | None = None, rngs: nnx.Rngs | None = None) -> jax.Array:
    """eps prediction; give `cond` (z_sem) or `x_start` (encoded here, gradients flow into the encoder)."""
    if cond is None:
      if x_start is None:
        raise ValueError('DiffusionAutoencoder: pass cond= (z_sem) or x_start= (image to encode)')
      cond = self.encode(x_start)
    return self.unet(x_t, t, cond, rngs=rngs)


def count_params(module: nnx.Module) -> int:
  """Number of parameters (works on real and on nnx.eval_shape'd modules)."""
  return sum(int(x.size) for x in jax.tree.leaves(nnx.state(module, nnx.Param)))
