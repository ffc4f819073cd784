"""The diffae conditional UNet ("BeatGANs") and the diffusion autoencoder that pairs it with its encoder.

Port of diffae's BeatGANsUNetModel / BeatGANsAutoencModel (github.com/phizaz/diffae, model/unet.py and
model/unet_autoenc.py) in Flax NNX, NHWC. The tree mirrors the PyTorch module tree (`input_blocks[i][j]`,
`middle_block[j]`, `output_blocks[i][j]`), so official checkpoints import by name
(`daetalker_jax/importers/diffae.py`) and reproduce the official outputs.

  eps = unet(x_t (B,H,W,C), t (B,), cond (B, enc_out_channels))
  every res block: h = GN(h); h = h*(1+t_s)+t_b; h = h*(1+z_s); h = conv(dropout(SiLU(h)))
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from daetalker_jax.models import layers
from daetalker_jax.models.encoder import SemanticEncoder
from daetalker_jax.models.unet_config import UNetConfig, config_from_dict  # noqa: F401 (unet.config_from_dict)


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
    # Optional linear read-out of z_sem, trained by an auxiliary loss (tasks/dae.py: the mouth probe) so that
    # z_sem must carry what it reads; not used at inference.
    self.probe = (nnx.Linear(cfg.enc_out_channels, cfg.enc_probe_outputs, param_dtype=cfg.params_dtype, rngs=rngs)
                  if cfg.enc_probe_outputs else None)

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
