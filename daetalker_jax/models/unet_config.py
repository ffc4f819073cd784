"""`UNetConfig`: the shapes of the diffae UNet and its semantic encoder (models/unet.py, models/encoder.py).

Its own module so that the encoder and the UNet both import it without importing each other.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from daetalker_jax.models import config_util


@dataclasses.dataclass(frozen=True)
class UNetConfig(config_util.Dtypes):
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
  enc_probe_outputs: int = 0               # a linear head z_sem -> this many numbers (0: none; the mouth probe)
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


def config_from_dict(d: Mapping[str, Any], **overrides: Any) -> UNetConfig:
  """UNetConfig from `config.model` (a ConfigDict or dict), e.g. `config_from_dict(config.model, dtype=...)`."""
  return config_util.from_dict(UNetConfig, d, overrides, 'config.model (UNet)')
