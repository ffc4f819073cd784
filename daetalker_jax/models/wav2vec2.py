"""wav2vec 2.0 (Baevski et al., 2020) in Flax NNX, numerically equal to Hugging Face `Wav2Vec2Model`
and `HubertModel`.

Used as a frozen speech feature extractor for speech2latent (50 Hz features, 20 ms hop). HuBERT (Hsu et
al., 2021) has the same feature encoder, feature projection and transformer encoder, with two HF config
flags of its own, both covered here:
* `feat_proj_layer_norm` (default True): False drops the LayerNorm before the feature projection.
* `conv_pos_batch_norm` (default False): the positional conv has no weight norm and is preceded by an
  eval-mode BatchNorm over channels (folded on import into a per-channel `scale`/`bias`).
`Wav2Vec2Config.from_hf_dict` reads them only for `model_type='hubert'` (wav2vec2 models always have the
LayerNorm and the weight-normed positional conv). Both architecture families are covered, chosen by the HF
config fields of the same names:
* `feat_extract_norm='group'`, `do_stable_layer_norm=False` (wav2vec2-base): GroupNorm only after the
  first conv, post-LN transformer layers, LayerNorm before the first layer.
* `feat_extract_norm='layer'`, `do_stable_layer_norm=True` (wav2vec2-large-lv60, XLSR): LayerNorm after
  every conv, pre-LN transformer layers, LayerNorm after the last layer.

Parameter names mirror HF's module names (`feature_extractor.conv_layers.0.conv`, `encoder.layers.3.
attention.q_proj`, ...) so that `importers/wav2vec2.py` maps checkpoints by name. The positional conv's
weight norm is folded into a plain kernel on import (the model is frozen, so g and v need not be separate);
HuBERT's optional positional BatchNorm likewise becomes `encoder.pos_conv_embed.batch_norm.{scale,bias}`.

This port is inference-only: HF's dropout, LayerDrop, SpecAugment masking and adapters are training-time
or fine-tuning features that a frozen extractor never uses, so they are left out.

Padding: `lengths` gives the number of real samples per example (real samples first). Frames whose conv
receptive field lies inside the real samples are valid. As in HF, padded frames are zeroed before the
positional conv and masked out of attention; in addition the first conv's GroupNorm (base models) takes its
statistics over valid frames only, so that real outputs do not depend on how much padding follows (HF
includes the padding there, which is why HF tells base-model users not to pad; with no padding the two are
identical).
"""

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

# HF config fields this port reads, with wav2vec2-base defaults.
_HF_FIELDS = dict(
    hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
    conv_dim=(512, 512, 512, 512, 512, 512, 512), conv_stride=(5, 2, 2, 2, 2, 2, 2),
    conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_bias=False, feat_extract_norm='group',
    do_stable_layer_norm=False, num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16,
    layer_norm_eps=1e-5, hidden_act='gelu', feat_extract_activation='gelu')
# Fields only HF's `HubertConfig` has, with its defaults (a wav2vec2 model always has these values).
_HUBERT_FIELDS = dict(feat_proj_layer_norm=True, conv_pos_batch_norm=False)
# HF `model_type`s whose base model this port reproduces.
HF_MODEL_TYPES = ('wav2vec2', 'hubert')


@dataclasses.dataclass(frozen=True)
class Wav2Vec2Config:
  """Architecture of a wav2vec2 / HuBERT model (field names and meaning as HF's `Wav2Vec2Config` and
  `HubertConfig`)."""
  hidden_size: int = 768
  num_hidden_layers: int = 12
  num_attention_heads: int = 12
  intermediate_size: int = 3072
  conv_dim: tuple[int, ...] = _HF_FIELDS['conv_dim']
  conv_stride: tuple[int, ...] = _HF_FIELDS['conv_stride']
  conv_kernel: tuple[int, ...] = _HF_FIELDS['conv_kernel']
  conv_bias: bool = False
  feat_extract_norm: str = 'group'          # 'group' (base) | 'layer' (large / XLSR)
  do_stable_layer_norm: bool = False        # False: post-LN layers (base); True: pre-LN (large / XLSR)
  num_conv_pos_embeddings: int = 128        # positional conv kernel size
  num_conv_pos_embedding_groups: int = 16   # positional conv groups
  layer_norm_eps: float = 1e-5
  hidden_act: str = 'gelu'
  feat_extract_activation: str = 'gelu'
  feat_proj_layer_norm: bool = True         # LayerNorm before the feature projection (HuBERT may drop it)
  conv_pos_batch_norm: bool = False         # HuBERT: BatchNorm instead of weight norm in the positional conv

  def __post_init__(self):
    if self.feat_extract_norm not in ('group', 'layer'):
      raise ValueError(f'Wav2Vec2Config: feat_extract_norm must be group|layer, got {self.feat_extract_norm!r}')
    if not len(self.conv_dim) == len(self.conv_stride) == len(self.conv_kernel):
      raise ValueError('Wav2Vec2Config: conv_dim, conv_stride and conv_kernel must have the same length')
    if self.hidden_size % self.num_attention_heads:
      raise ValueError('Wav2Vec2Config: hidden_size must be divisible by num_attention_heads')
    if self.hidden_size % self.num_conv_pos_embedding_groups:
      raise ValueError('Wav2Vec2Config: hidden_size must be divisible by num_conv_pos_embedding_groups')
    for name in ('hidden_act', 'feat_extract_activation'):
      if getattr(self, name) not in _ACTIVATIONS:
        raise ValueError(f'Wav2Vec2Config: {name}={getattr(self, name)!r} is not supported '
                         f'(supported: {sorted(_ACTIVATIONS)})')

  @classmethod
  def from_hf_dict(cls, d: dict[str, Any], *, where: str = 'config.json') -> 'Wav2Vec2Config':
    """Builds the config from a HF `config.json` dict of a `model_type` in `HF_MODEL_TYPES` (missing
    means wav2vec2); unknown fields are ignored."""
    model_type = d.get('model_type', 'wav2vec2')
    if model_type not in HF_MODEL_TYPES:
      raise ValueError(f'{where}: model_type is {model_type!r}, expected one of {", ".join(HF_MODEL_TYPES)}')
    if d.get('add_adapter'):
      raise ValueError(f'{where}: add_adapter=True (adapter layers) is not supported')
    if d.get('adapter_attn_dim') is not None:
      raise ValueError(f'{where}: adapter_attn_dim (attention adapters) is not supported')
    kw = {k: d.get(k, v) for k, v in _HF_FIELDS.items()}
    if model_type == 'hubert':
      kw.update({k: bool(d.get(k, v)) for k, v in _HUBERT_FIELDS.items()})
    for k in ('conv_dim', 'conv_stride', 'conv_kernel'):
      kw[k] = tuple(int(v) for v in kw[k])
    try:
      return cls(**kw)
    except ValueError as e:
      raise ValueError(f'{where}: {e}') from None

  @property
  def total_stride(self) -> int:
    """Samples per output frame (320 for all released models: 50 Hz at 16 kHz)."""
    return int(np.prod(self.conv_stride))

  @property
  def receptive_field(self) -> int:
    """Samples seen by one output frame (400 for all released models)."""
    rf = 1
    for k, s in zip(reversed(self.conv_kernel), reversed(self.conv_stride)):
      rf = (rf - 1) * s + k
    return rf


_ACTIVATIONS = {
    'gelu': lambda x: jax.nn.gelu(x, approximate=False),   # HF 'gelu' is the exact erf form
    'gelu_new': lambda x: jax.nn.gelu(x, approximate=True),
    'relu': jax.nn.relu,
    'silu': jax.nn.silu,
    'swish': jax.nn.silu,
}


def conv_output_lengths(cfg: Wav2Vec2Config, lengths: jax.Array) -> list[jax.Array]:
  """Valid frames after each conv layer for `lengths` real samples (HF `_get_feat_extract_output_lengths`)."""
  out = []
  for k, s in zip(cfg.conv_kernel, cfg.conv_stride):
    lengths = jnp.maximum((lengths - k) // s + 1, 0)
    out.append(lengths)
  return out


class _ConvLayer(nnx.Module):
  """Conv1d (VALID) -> optional norm -> activation (HF Wav2Vec2{NoLayerNorm,LayerNorm,GroupNorm}ConvLayer)."""

  def __init__(self, cfg: Wav2Vec2Config, layer_id: int, *, dtype, param_dtype, rngs: nnx.Rngs):
    cin = cfg.conv_dim[layer_id - 1] if layer_id > 0 else 1
    cout = cfg.conv_dim[layer_id]
    self.conv = nnx.Conv(cin, cout, cfg.conv_kernel[layer_id], cfg.conv_stride[layer_id], padding='VALID',
                         use_bias=cfg.conv_bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.norm_kind = ('group' if layer_id == 0 else None) if cfg.feat_extract_norm == 'group' else 'layer'
    if self.norm_kind == 'group':
      # GroupNorm(num_groups=C): each channel normalised over time.
      self.layer_norm = nnx.GroupNorm(cout, num_groups=cout, epsilon=1e-5, use_fast_variance=False,
                                      dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    elif self.norm_kind == 'layer':
      self.layer_norm = nnx.LayerNorm(cout, epsilon=1e-5, use_fast_variance=False, dtype=dtype,
                                      param_dtype=param_dtype, rngs=rngs)
    self.act = _ACTIVATIONS[cfg.feat_extract_activation]

  def __call__(self, x: jax.Array, valid: jax.Array) -> jax.Array:
    x = self.conv(x)                                  # (B, T, C)
    if self.norm_kind == 'group':
      x = self.layer_norm(x, mask=jnp.broadcast_to(valid[:, :, None], x.shape))
    elif self.norm_kind == 'layer':
      x = self.layer_norm(x)
    return self.act(x)


class _FeatureEncoder(nnx.Module):

  def __init__(self, cfg: Wav2Vec2Config, *, dtype, param_dtype, rngs: nnx.Rngs):
    self.cfg = cfg
    self.conv_layers = nnx.List([_ConvLayer(cfg, i, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
                                 for i in range(len(cfg.conv_dim))])

  def __call__(self, audio: jax.Array, lengths: jax.Array) -> jax.Array:
    x = audio[:, :, None]                             # (B, N, 1)
    for layer, k, s, n_valid in zip(self.conv_layers, self.cfg.conv_kernel, self.cfg.conv_stride,
                                    conv_output_lengths(self.cfg, lengths)):
      n_out = (x.shape[1] - k) // s + 1
      valid = jnp.arange(n_out)[None, :] < n_valid[:, None]   # (B, T_out) frames inside real audio
      x = layer(x, valid)
    return x                                          # (B, T, C_last)


class _FeatureProjection(nnx.Module):
  """[LayerNorm ->] Linear; returns the projection and its input (HF `extract_features`)."""

  def __init__(self, cfg: Wav2Vec2Config, *, dtype, param_dtype, rngs: nnx.Rngs):
    if cfg.feat_proj_layer_norm:
      self.layer_norm = nnx.LayerNorm(cfg.conv_dim[-1], epsilon=cfg.layer_norm_eps, use_fast_variance=False,
                                      dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    else:
      self.layer_norm = None
    self.projection = nnx.Linear(cfg.conv_dim[-1], cfg.hidden_size, dtype=dtype, param_dtype=param_dtype,
                                 rngs=rngs)

  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    normed = x if self.layer_norm is None else self.layer_norm(x)
    return self.projection(normed), normed


class _ChannelAffine(nnx.Module):
  """`x * scale + bias` per channel: an eval-mode BatchNorm with its running statistics folded in."""

  def __init__(self, channels: int, *, dtype, param_dtype):
    self.dtype = dtype
    self.scale = nnx.Param(jnp.ones((channels,), param_dtype))
    self.bias = nnx.Param(jnp.zeros((channels,), param_dtype))

  def __call__(self, x: jax.Array) -> jax.Array:
    y = x * self.scale[...] + self.bias[...]
    return y if self.dtype is None else y.astype(self.dtype)


class _PositionalConv(nnx.Module):
  """[BatchNorm (HuBERT option) ->] grouped conv over time (weight norm folded into `conv.kernel`), 'same'
  length, activation."""

  def __init__(self, cfg: Wav2Vec2Config, *, dtype, param_dtype, rngs: nnx.Rngs):
    k = cfg.num_conv_pos_embeddings
    self.batch_norm = (_ChannelAffine(cfg.hidden_size, dtype=dtype, param_dtype=param_dtype)
                       if cfg.conv_pos_batch_norm else None)
    self.conv = nnx.Conv(cfg.hidden_size, cfg.hidden_size, k, padding=((k // 2, k // 2),),
                         feature_group_count=cfg.num_conv_pos_embedding_groups, dtype=dtype,
                         param_dtype=param_dtype, rngs=rngs)
    self.remove = 1 if k % 2 == 0 else 0              # HF Wav2Vec2SamePadLayer
    self.act = _ACTIVATIONS[cfg.feat_extract_activation]

  def __call__(self, x: jax.Array) -> jax.Array:
    if self.batch_norm is not None:
      x = self.batch_norm(x)
    y = self.conv(x)                                  # (B, T + remove, D)
    if self.remove:
      y = y[:, :-self.remove]
    return self.act(y)


class _Attention(nnx.Module):

  def __init__(self, cfg: Wav2Vec2Config, *, dtype, param_dtype, rngs: nnx.Rngs):
    d = cfg.hidden_size
    self.num_heads = cfg.num_attention_heads
    mk = lambda: nnx.Linear(d, d, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.q_proj, self.k_proj, self.v_proj, self.out_proj = mk(), mk(), mk(), mk()

  def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
    b, t, d = x.shape
    split = lambda y: y.reshape(b, t, self.num_heads, d // self.num_heads)   # (B, T, N, H)
    q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
    o = jax.nn.dot_product_attention(q, k, v, mask=mask[:, None, None, :])   # (B, T, N, H)
    return self.out_proj(o.reshape(b, t, d))


class _FeedForward(nnx.Module):

  def __init__(self, cfg: Wav2Vec2Config, *, dtype, param_dtype, rngs: nnx.Rngs):
    self.intermediate_dense = nnx.Linear(cfg.hidden_size, cfg.intermediate_size, dtype=dtype,
                                         param_dtype=param_dtype, rngs=rngs)
    self.output_dense = nnx.Linear(cfg.intermediate_size, cfg.hidden_size, dtype=dtype,
                                   param_dtype=param_dtype, rngs=rngs)
    self.act = _ACTIVATIONS[cfg.hidden_act]

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.output_dense(self.act(self.intermediate_dense(x)))


class _EncoderLayer(nnx.Module):
  """Post-LN (base) or pre-LN ('stable', large / XLSR) transformer layer."""

  def __init__(self, cfg: Wav2Vec2Config, *, dtype, param_dtype, rngs: nnx.Rngs):
    self.stable = cfg.do_stable_layer_norm
    self.attention = _Attention(cfg, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    ln = lambda: nnx.LayerNorm(cfg.hidden_size, epsilon=cfg.layer_norm_eps, use_fast_variance=False,
                               dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.layer_norm = ln()
    self.feed_forward = _FeedForward(cfg, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.final_layer_norm = ln()

  def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
    if self.stable:
      x = x + self.attention(self.layer_norm(x), mask)
      return x + self.feed_forward(self.final_layer_norm(x))
    x = self.layer_norm(x + self.attention(x, mask))
    return self.final_layer_norm(x + self.feed_forward(x))


class _Encoder(nnx.Module):

  def __init__(self, cfg: Wav2Vec2Config, *, dtype, param_dtype, rngs: nnx.Rngs):
    self.stable = cfg.do_stable_layer_norm
    self.pos_conv_embed = _PositionalConv(cfg, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.layer_norm = nnx.LayerNorm(cfg.hidden_size, epsilon=cfg.layer_norm_eps, use_fast_variance=False,
                                    dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.layers = nnx.List([_EncoderLayer(cfg, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
                            for _ in range(cfg.num_hidden_layers)])


class Wav2Vec2Model(nnx.Module):
  """wav2vec 2.0 encoder; `__call__` returns every hidden state like HF `output_hidden_states=True`."""

  def __init__(self, cfg: Wav2Vec2Config, *, dtype: Any = jnp.float32, param_dtype: Any = jnp.float32,
               rngs: nnx.Rngs):
    self.cfg = cfg
    self.feature_extractor = _FeatureEncoder(cfg, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.feature_projection = _FeatureProjection(cfg, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.encoder = _Encoder(cfg, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

  def num_frames(self, num_samples: int) -> int:
    """Output frames for `num_samples` input samples."""
    n = num_samples
    for k, s in zip(self.cfg.conv_kernel, self.cfg.conv_stride):
      n = (n - k) // s + 1
    return max(n, 0)

  def __call__(self, audio: jax.Array, *, lengths: jax.Array | None = None,
               num_layers: int | None = None) -> dict[str, Any]:
    """Runs the model.

    Args:
      audio: (B, N) float waveform (HF `input_values`, already normalised if the checkpoint expects it).
      lengths: (B,) int real samples per example (real samples first); None = all N are real.
      num_layers: run only the first `num_layers` transformer layers (None = all); saves compute when a
        lower layer's features are wanted.
    Returns:
      dict with
        hidden_states: list of L+1 arrays (B, T, D): [0] is the input of the first layer, [i] the output of
          layer i, as HF transformers>=5 records them (for stable-LN models without the final LayerNorm);
        last_hidden_state: (B, T, D) HF's `last_hidden_state` (after the final LayerNorm for stable-LN
          models; only when all layers ran, else the last hidden state computed);
        extract_features: (B, T, C) conv features as fed to the projection: LayerNorm'd unless
          `feat_proj_layer_norm=False` (HF wav2vec2's `extract_features`; HF HuBERT does not return them);
        mask: (B, T) bool, valid frames.
    """
    if audio.ndim != 2:
      raise ValueError(f'wav2vec2: audio must be (B, N), got shape {audio.shape}')
    b, n = audio.shape
    if self.num_frames(n) < 1:
      raise ValueError(f'wav2vec2: {n} samples is shorter than one frame ({self.cfg.receptive_field})')
    if lengths is None:
      lengths = jnp.full((b,), n, jnp.int32)
    x = self.feature_extractor(audio, lengths)                       # (B, T, C)
    mask = jnp.arange(x.shape[1])[None, :] < conv_output_lengths(self.cfg, lengths)[-1][:, None]
    h, extract_features = self.feature_projection(x)                 # (B, T, D), (B, T, C)

    enc = self.encoder
    h = jnp.where(mask[:, :, None], h, 0.0)                          # padded frames are 0 (HF)
    h = h + enc.pos_conv_embed(h)
    if not enc.stable:
      h = enc.layer_norm(h)
    layers = enc.layers if num_layers is None else list(enc.layers)[:num_layers]
    hidden_states = [h]
    for layer in layers:
      h = layer(h, mask)
      hidden_states.append(h)
    last = enc.layer_norm(h) if enc.stable and len(layers) == len(enc.layers) else h
    return dict(hidden_states=hidden_states, last_hidden_state=last, extract_features=extract_features,
                mask=mask)


class LayerMix(nnx.Module):
  """Picks one hidden state, or a learned softmax-weighted sum of all of them (SUPERB-style).

  Kept outside `Wav2Vec2Model` so the frozen extractor and this trainable mixing live under different
  parameter paths.
  """

  def __init__(self, num_states: int, layer: int, *, rngs: nnx.Rngs):
    del rngs  # deterministic init: equal weights
    if layer >= num_states or layer < -1:
      raise ValueError(f'wav2vec2 LayerMix: layer {layer} out of range [-1, {num_states - 1}] '
                       '(-1 = learned weighted sum of all hidden states)')
    self.layer = layer
    if layer == -1:
      self.logits = nnx.Param(jnp.zeros((num_states,), jnp.float32))

  def __call__(self, hidden_states: Sequence[jax.Array]) -> jax.Array:
    if self.layer >= 0:
      return hidden_states[self.layer]
    w = jax.nn.softmax(self.logits[...])
    return sum(w[i] * h for i, h in enumerate(hidden_states))
