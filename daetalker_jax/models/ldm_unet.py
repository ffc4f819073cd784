"""The latent-diffusion (LDM) UNet with spatial-transformer cross-attention: DiffTalk's denoiser, in Flax NNX.

Port of CompVis latent-diffusion's `openaimodel.UNetModel` with `use_spatial_transformer=True` (the UNet that
DiffTalk trains), NHWC. The module tree mirrors LDM's (`input_blocks[i][j]`, `middle_block[j]`,
`output_blocks[i][j]`, `time_embed`, `out`), so LDM `model.diffusion_model.*` checkpoints and diffusers
`UNet2DConditionModel` folders import by name (`daetalker_jax/importers/ldm_unet.py`).

  eps = LDMUNet(cfg, rngs=rngs)(x (B,H,W,in_channels), t (B,), context (B,L,context_dim)) -> (B,H,W,out_channels)

  emb = MLP(sinusoid(t))                       # cos first, 4 * model_channels wide
  res block: h = conv(SiLU(GN(x))) + Linear(SiLU(emb)); out = skip(x) + conv0(dropout(SiLU(GN(h))))
  transformer (at the downsample factors in attention_resolutions and in the middle block):
    h = proj_in(GN(x)); per layer: h += SelfAttn(LN(h)); h += CrossAttn(LN(h), context); h += GEGLU-FF(LN(h))
    out = x + proj_out0(h)
  down: strided 3x3 conv; up: nearest x2 + 3x3 conv; decoder res blocks take [h, skip] concatenations.

conv0 / proj_out0 / the final conv are zero-initialised (LDM's zero_module). Group norms use `norm_groups`
groups (LDM: 32), eps 1e-5 in res blocks and the head, 1e-6 in transformers; they, the layer norms, the
softmax, the time MLP and the output head run in at least float32.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from daetalker_jax.models import config_util
from daetalker_jax.models import layers

Dtype = Any


@dataclasses.dataclass(frozen=True)
class LDMUNetConfig(config_util.Dtypes):
  """Shapes of the LDM UNet; names follow LDM's UNetModel. Defaults: DiffTalk's denoiser (~530M params)."""
  image_size: int = 64                     # latent resolution (documentation; any multiple of 2^(levels-1) runs)
  in_channels: int = 9                     # [z_t, masked-target latent, reference latent]
  out_channels: int = 3                    # eps
  model_channels: int = 256                # base width; level widths are model_channels * channel_mult
  channel_mult: tuple[int, ...] = (1, 2, 3, 4)
  num_res_blocks: int = 2                  # res blocks per level (decoder: one more)
  attention_resolutions: tuple[int, ...] = (2, 4, 8)  # downsample factors with a spatial transformer
  num_head_channels: int = 32              # channels per head (-1: use num_heads)
  num_heads: int = -1                      # heads per transformer, used only when num_head_channels == -1
  transformer_depth: int = 1               # transformer layers per spatial transformer
  context_dim: int = 128                   # width of the cross-attention context
  norm_groups: int = 32                    # group-norm groups (LDM: 32)
  dropout: float = 0.0                     # dropout inside the res blocks
  dtype: str = 'float32'                   # compute dtype: float32 | bfloat16
  param_dtype: str = 'float32'             # parameter dtype
  remat: bool = False                      # rematerialise each block in the backward pass

  def __post_init__(self):
    for f in ('channel_mult', 'attention_resolutions'):
      object.__setattr__(self, f, tuple(int(x) for x in getattr(self, f)))
    n = len(self.channel_mult)
    if n < 1 or min(self.channel_mult) < 1 or self.model_channels < 1 or self.num_res_blocks < 1:
      raise ValueError(f'LDMUNetConfig: bad widths model_channels={self.model_channels} '
                       f'channel_mult={self.channel_mult} num_res_blocks={self.num_res_blocks}')
    factors = {2 ** i for i in range(n)}
    bad = sorted(set(self.attention_resolutions) - factors)
    if bad:
      raise ValueError(f'LDMUNetConfig: attention_resolutions {bad} are not downsample factors of this UNet '
                       f'({sorted(factors)}); they are factors (LDM), not resolutions')
    if self.image_size % 2 ** (n - 1):
      raise ValueError(f'LDMUNetConfig: image_size {self.image_size} is not divisible by 2^{n - 1}')
    if self.num_head_channels == -1 and self.num_heads < 1:
      raise ValueError('LDMUNetConfig: set num_head_channels (> 0) or num_heads (> 0)')
    if self.num_head_channels != -1 and self.num_head_channels < 1:
      raise ValueError(f'LDMUNetConfig: num_head_channels must be > 0 or -1, got {self.num_head_channels}')
    if self.transformer_depth < 1 or self.context_dim < 1:
      raise ValueError(f'LDMUNetConfig: transformer_depth {self.transformer_depth} and context_dim '
                       f'{self.context_dim} must be >= 1')
    widths = [self.model_channels * m for m in self.channel_mult]
    for w in widths:
      if w % self.norm_groups:
        raise ValueError(f'LDMUNetConfig: width {w} is not divisible into norm_groups={self.norm_groups}')
    for w in self.attention_widths():
      self.heads(w)  # raises on indivisible widths

  def attention_widths(self) -> list[int]:
    """Widths of every spatial transformer's levels (attention levels and the middle block)."""
    levels = [i for i in range(len(self.channel_mult)) if 2 ** i in self.attention_resolutions]
    return [self.model_channels * self.channel_mult[i] for i in levels] + [
        self.model_channels * self.channel_mult[-1]]

  def heads(self, width: int) -> tuple[int, int]:
    """(num heads, channels per head) of a transformer of `width` channels, as LDM computes them."""
    if self.num_head_channels != -1:
      if width % self.num_head_channels:
        raise ValueError(f'LDMUNetConfig: width {width} is not divisible by num_head_channels '
                         f'{self.num_head_channels}')
      return width // self.num_head_channels, self.num_head_channels
    if width % self.num_heads:
      raise ValueError(f'LDMUNetConfig: width {width} is not divisible by num_heads {self.num_heads}')
    return self.num_heads, width // self.num_heads

  @property
  def time_embed_dim(self) -> int:
    return 4 * self.model_channels


def config_from_dict(d: Mapping[str, Any], **overrides: Any) -> LDMUNetConfig:
  """LDMUNetConfig from a dict / ConfigDict (e.g. `config.model.unet`); unknown keys are an error."""
  return config_util.from_dict(LDMUNetConfig, d, overrides, 'LDMUNetConfig')


class ResBlock(nnx.Module):
  """LDM's ResBlock (use_scale_shift_norm=False): the time embedding is added between the two convs."""

  def __init__(self, channels: int, out_channels: int, emb_channels: int, *, groups: int, dropout: float,
               dtype: Dtype, param_dtype: Dtype, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    nkw = dict(dtype=dtype, param_dtype=param_dtype, num_groups=groups, epsilon=1e-5)
    self.in_norm = layers.GroupNorm(channels, **nkw)
    self.in_conv = layers.conv(channels, out_channels, 3, **kw)
    self.emb_proj = layers.linear(emb_channels, out_channels, **kw)
    self.out_norm = layers.GroupNorm(out_channels, **nkw)
    self.dropout = nnx.Dropout(dropout, rngs=rngs if dropout > 0 else None)
    self.out_conv = layers.conv(out_channels, out_channels, 3, zero=True, **kw)
    self.skip = layers.conv(channels, out_channels, 1, **kw) if out_channels != channels else None

  def __call__(self, x: jax.Array, emb: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
    # x: (B,H,W,C); emb: (B, emb_channels).
    h = self.in_conv(nnx.silu(self.in_norm(x)))
    h = h + self.emb_proj(nnx.silu(emb))[:, None, None, :].astype(h.dtype)
    h = self.out_conv(self.dropout(nnx.silu(self.out_norm(h)), rngs=rngs))
    return (x if self.skip is None else self.skip(x)) + h


class CrossAttention(nnx.Module):
  """LDM's CrossAttention: bias-free q/k/v, scaled dot-product softmax attention, biased output projection."""

  def __init__(self, dim: int, context_dim: int, heads: int, dim_head: int, *, dtype: Dtype,
               param_dtype: Dtype, rngs: nnx.Rngs):
    inner = heads * dim_head
    self.heads, self.dim_head = heads, dim_head
    lin = lambda i, o, bias: nnx.Linear(i, o, use_bias=bias, dtype=dtype, param_dtype=param_dtype,
                                        kernel_init=layers.torch_default_init, bias_init=layers.zeros_init,
                                        rngs=rngs)
    self.to_q = lin(dim, inner, False)
    self.to_k = lin(context_dim, inner, False)
    self.to_v = lin(context_dim, inner, False)
    self.to_out = lin(inner, dim, True)

  def __call__(self, x: jax.Array, context: jax.Array) -> jax.Array:
    # x: (B, T, dim) queries; context: (B, S, context_dim) keys/values.
    split = lambda a: a.reshape(*a.shape[:2], self.heads, self.dim_head)  # (B, T, heads, dim_head)
    q, k, v = split(self.to_q(x)), split(self.to_k(context)), split(self.to_v(context))
    # XLA attention; logits and softmax in >= float32.
    a = jax.nn.dot_product_attention(q, k, v, scale=1 / math.sqrt(self.dim_head))
    return self.to_out(a.reshape(*x.shape[:2], self.heads * self.dim_head))


class BasicTransformerBlock(nnx.Module):
  """x += SelfAttn(LN1(x)); x += CrossAttn(LN2(x), context); x += W2 (a * gelu(g)), [a, g] = W1 LN3(x)."""

  def __init__(self, dim: int, context_dim: int, heads: int, dim_head: int, *, dtype: Dtype,
               param_dtype: Dtype, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    ln = lambda: nnx.LayerNorm(dim, epsilon=1e-5, use_fast_variance=False, dtype=dtype,
                               param_dtype=param_dtype, rngs=rngs)
    self.norm1 = ln()
    self.attn1 = CrossAttention(dim, dim, heads, dim_head, **kw)
    self.norm2 = ln()
    self.attn2 = CrossAttention(dim, context_dim, heads, dim_head, **kw)
    self.norm3 = ln()
    self.ff_proj = layers.linear(dim, 2 * 4 * dim, **kw)  # GEGLU: [value, gate]
    self.ff_out = layers.linear(4 * dim, dim, **kw)

  def __call__(self, x: jax.Array, context: jax.Array) -> jax.Array:
    h = self.norm1(x)
    x = x + self.attn1(h, h)
    x = x + self.attn2(self.norm2(x), context)
    a, g = jnp.split(self.ff_proj(self.norm3(x)), 2, axis=-1)
    return x + self.ff_out(a * jax.nn.gelu(g, approximate=False))


class SpatialTransformer(nnx.Module):
  """LDM's SpatialTransformer: GN(eps 1e-6) -> 1x1 proj_in -> transformer layers -> zero 1x1 proj_out, residual."""
  takes_context = True

  def __init__(self, channels: int, heads: int, dim_head: int, *, depth: int, context_dim: int, groups: int,
               dtype: Dtype, param_dtype: Dtype, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    inner = heads * dim_head
    self.norm = layers.GroupNorm(channels, dtype=dtype, param_dtype=param_dtype, num_groups=groups, epsilon=1e-6)
    self.proj_in = layers.linear(channels, inner, **kw)  # a 1x1 conv in LDM
    self.transformer_blocks = nnx.List([BasicTransformerBlock(inner, context_dim, heads, dim_head, **kw)
                                        for _ in range(depth)])
    self.proj_out = layers.linear(inner, channels, zero=True, **kw)

  def __call__(self, x: jax.Array, context: jax.Array) -> jax.Array:
    b, hh, ww, c = x.shape
    h = self.proj_in(self.norm(x).reshape(b, hh * ww, c))  # (B, HW, inner)
    for block in self.transformer_blocks:
      h = block(h, context)
    return x + self.proj_out(h).reshape(b, hh, ww, c).astype(x.dtype)


def _apply_block(block: nnx.List, h: jax.Array, emb: jax.Array, context: Any,
                 rngs: nnx.Rngs | None) -> jax.Array:
  """LDM's TimestepEmbedSequential: res blocks get emb, transformers (anything with `takes_context`) get the
  context, the rest only h."""
  for layer in block:
    if isinstance(layer, ResBlock):
      h = layer(h, emb, rngs=rngs)
    elif getattr(layer, 'takes_context', False):
      h = layer(h, context)
    else:
      h = layer(h)
  return h


class LDMUNet(nnx.Module):
  """eps(x_t, t, context): LDM's UNetModel with spatial transformers (DiffTalk's denoiser).

  `make_transformer(channels, kw)` replaces the spatial transformer at every attention level and in the middle
  block (the landmark renderer's TalkFormer blocks, models/talkformer.py); the context is then whatever those
  blocks take (any pytree), passed through untouched.
  """

  def __init__(self, cfg: LDMUNetConfig, *, rngs: nnx.Rngs,
               make_transformer: Callable[[int, dict[str, Any]], nnx.Module] | None = None):
    self.cfg = cfg
    self.custom_context = make_transformer is not None
    dtype, param_dtype = cfg.compute_dtype, cfg.params_dtype
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.head_dtype = layers.wide(dtype)
    f32 = dict(dtype=self.head_dtype, param_dtype=param_dtype, rngs=rngs)
    mc, emb_ch, groups = cfg.model_channels, cfg.time_embed_dim, cfg.norm_groups
    self.time_embed = nnx.List([layers.linear(mc, emb_ch, **f32), layers.linear(emb_ch, emb_ch, **f32)])

    def resblock(cin, cout):
      return ResBlock(cin, cout, emb_ch, groups=groups, dropout=cfg.dropout, **kw)

    def transformer(ch):
      if make_transformer is not None:
        return make_transformer(ch, kw)
      heads, dim_head = cfg.heads(ch)
      return SpatialTransformer(ch, heads, dim_head, depth=cfg.transformer_depth, context_dim=cfg.context_dim,
                                groups=groups, **kw)

    blocks = [nnx.List([layers.conv(cfg.in_channels, mc, 3, **kw)])]
    skip_chans = [mc]
    ch, ds = mc, 1
    for level, mult in enumerate(cfg.channel_mult):
      for _ in range(cfg.num_res_blocks):
        block = [resblock(ch, mult * mc)]
        ch = mult * mc
        if ds in cfg.attention_resolutions:
          block.append(transformer(ch))
        blocks.append(nnx.List(block))
        skip_chans.append(ch)
      if level != len(cfg.channel_mult) - 1:
        blocks.append(nnx.List([layers.Downsample(ch, **kw)]))
        skip_chans.append(ch)
        ds *= 2
    self.input_blocks = nnx.List(blocks)

    self.middle_block = nnx.List([resblock(ch, ch), transformer(ch), resblock(ch, ch)])

    blocks = []
    for level, mult in list(enumerate(cfg.channel_mult))[::-1]:
      for i in range(cfg.num_res_blocks + 1):
        block = [resblock(ch + skip_chans.pop(), mc * mult)]
        ch = mc * mult
        if ds in cfg.attention_resolutions:
          block.append(transformer(ch))
        if level and i == cfg.num_res_blocks:
          block.append(layers.Upsample(ch, **kw))
          ds //= 2
        blocks.append(nnx.List(block))
    self.output_blocks = nnx.List(blocks)
    # The head runs in >= float32 (LDM casts h back to the input dtype before `out`).
    self.out_norm = layers.GroupNorm(ch, dtype=self.head_dtype, param_dtype=param_dtype, num_groups=groups)
    self.out_conv = layers.conv(mc, cfg.out_channels, 3, zero=True, **f32)

  def _check(self, x: jax.Array, t: jax.Array, context: jax.Array) -> None:
    cfg = self.cfg
    if x.ndim != 4 or x.shape[-1] != cfg.in_channels:
      raise ValueError(f'LDMUNet: x must be (B,H,W,{cfg.in_channels}) NHWC, got shape {tuple(x.shape)}')
    k = 2 ** (len(cfg.channel_mult) - 1)
    if x.shape[1] % k or x.shape[2] % k:
      raise ValueError(f'LDMUNet: H, W = {x.shape[1]}, {x.shape[2]} must be multiples of {k}')
    if t.ndim > 1 or (t.ndim == 1 and t.shape[0] not in (1, x.shape[0])):
      raise ValueError(f'LDMUNet: t must be a scalar or (B,) = ({x.shape[0]},), got shape {tuple(t.shape)}')
    if self.custom_context:
      return
    if context is None or context.ndim != 3 or context.shape[0] != x.shape[0] or context.shape[-1] != cfg.context_dim:
      shape = None if context is None else tuple(context.shape)
      raise ValueError(f'LDMUNet: context must be (B, L, {cfg.context_dim}) with B = {x.shape[0]}, got {shape}')

  def __call__(self, x: jax.Array, t: jax.Array, context: Any, *,
               rngs: nnx.Rngs | None = None) -> jax.Array:
    """x (B,H,W,in_channels) NHWC, t (B,) int or float timesteps, context (B,L,context_dim) -> eps float32.

    `rngs` overrides the dropout stream stored at construction (only used when dropout > 0).
    """
    t = jnp.asarray(t)
    self._check(x, t, context)
    t = jnp.broadcast_to(t, x.shape[:1])
    t_sin = layers.timestep_embedding(t, self.cfg.model_channels, dtype=self.head_dtype)  # cos first
    emb = self.time_embed[1](nnx.silu(self.time_embed[0](t_sin)))  # (B, 4 * model_channels)
    context = jax.tree.map(lambda c: c.astype(self.cfg.compute_dtype), context)
    run = nnx.remat(_apply_block) if self.cfg.remat else _apply_block

    hs = []
    h = x.astype(self.cfg.compute_dtype)
    for block in self.input_blocks:
      h = run(block, h, emb, context, rngs)
      hs.append(h)
    h = run(self.middle_block, h, emb, context, rngs)
    for block in self.output_blocks:
      h = run(block, jnp.concatenate([h, hs.pop()], axis=-1), emb, context, rngs)
    return self.out_conv(nnx.silu(self.out_norm(h.astype(self.head_dtype))))


def count_params(module: nnx.Module) -> int:
  """Number of parameters (works on real and on nnx.eval_shape'd modules)."""
  return sum(int(x.size) for x in jax.tree.leaves(nnx.state(module, nnx.Param)))
