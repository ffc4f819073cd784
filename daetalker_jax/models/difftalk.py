"""DiffTalk (Shen et al., CVPR 2023) in Flax NNX: the conditioning networks around the LDM UNet.

The denoiser works in the latent space of a frozen VQ autoencoder (models/vq.py) and predicts eps from
[z_t, latent of the masked target, latent of the reference frame] (concatenated channels), with one context
token of cond.audio_code + cond.landmark_code numbers through cross-attention (models/ldm_unet.py):

  audio (B, F, W, D): for each of F = 8 neighbouring video frames, a window of W speech-feature steps (log-mel,
      or wav2vec2/HuBERT features) -> AudioWindowNet (4 stride-2 1-D convs + MLP) -> (B, F, 64)
      -> AudioSmoother (a conv net scores the F codes, softmax, weighted sum) -> (B, 64)
  landmarks (B, 39, 2): the context points 0-3 and 13-47 as fractions of the image side (the lower jaw and mouth
      are left out so the lip shape cannot leak) -> LandmarkNet (MLP 78 -> 128 -> 64 -> 64) -> (B, 64)
  context = [audio code | landmark code] as one token (B, 1, 128).

docs/DIFFTALK.md describes the method and the original code (sstzal/DiffTalk: AudioNet, AudioAttNet, LdmNet); what
differs here: landmarks are fractions of the side mapped to [-1, 1] (the original feeds 256-px pixel
coordinates), and the audio front end is log-mel or wav2vec2/HuBERT instead of DeepSpeech.
The first-stage autoencoder lives in this module's `first_stage` attribute so that one checkpoint holds the
whole model; the `difftalk` task freezes it (tasks/difftalk.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from daetalker_jax.models import config_util
from daetalker_jax.models import ldm_unet
from daetalker_jax.models import vq

CONTEXT_LANDMARKS = tuple(range(0, 4)) + tuple(range(13, 48))   # 39 dlib points: no lower jaw, no mouth
MOTION_LANDMARKS = tuple(range(4, 13)) + tuple(range(48, 68))   # 29 points the audio drives
NOSE_TIP = 30                                                   # rows below it are masked in the target


@dataclasses.dataclass(frozen=True)
class CondConfig:
  """Shapes of DiffTalk's audio and landmark encoders."""
  audio_dim: int = 80            # features per audio step (log-mel bins, or the wav2vec2/HuBERT width)
  audio_window: int = 16         # feature steps per video frame (4 stride-2 convs reduce 16 to 1)
  audio_frames: int = 8          # neighbouring video frames the smoother weighs
  audio_code: int = 64           # audio code width
  smoother_dim: int = 32         # channels of the audio code the smoother's scores read (original: 32)
  landmark_code: int = 64        # landmark code width
  num_landmarks: int = len(CONTEXT_LANDMARKS)
  dtype: str = 'float32'
  param_dtype: str = 'float32'

  @property
  def context_dim(self) -> int:
    return self.audio_code + self.landmark_code


def cond_config_from_dict(d: Mapping[str, Any], **overrides: Any) -> CondConfig:
  return config_util.from_dict(CondConfig, d, overrides, 'config.model.cond')


def _leaky(x: jax.Array) -> jax.Array:
  return jax.nn.leaky_relu(x, 0.02)


class AudioWindowNet(nnx.Module):
  """(N, W, D) feature windows -> (N, audio_code): 1-D convs (32, 32, 64, 64; kernel 3, stride 2) + MLP."""

  def __init__(self, cfg: CondConfig, *, rngs: nnx.Rngs):
    kw = dict(dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype), rngs=rngs)
    widths = (cfg.audio_dim, 32, 32, 64, 64)
    self.convs = nnx.List([nnx.Conv(a, b, kernel_size=(3,), strides=(2,), padding=((1, 1),), **kw)
                           for a, b in zip(widths[:-1], widths[1:])])
    self.fc1 = nnx.Linear(64, 64, **kw)
    self.fc2 = nnx.Linear(64, cfg.audio_code, **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    for conv in self.convs:
      x = _leaky(conv(x))
    x = x.mean(axis=1)            # the window is 1 step long here when W = 16
    return self.fc2(_leaky(self.fc1(x)))


class AudioSmoother(nnx.Module):
  """(B, F, C) per-frame audio codes -> (B, C): a softmax-weighted sum over the F frames (AudioAttNet)."""

  def __init__(self, cfg: CondConfig, *, rngs: nnx.Rngs):
    kw = dict(dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype), rngs=rngs)
    self.read = cfg.smoother_dim
    widths = (cfg.smoother_dim, 16, 8, 4, 2, 1)
    self.convs = nnx.List([nnx.Conv(a, b, kernel_size=(3,), padding=((1, 1),), **kw)
                           for a, b in zip(widths[:-1], widths[1:])])
    self.score = nnx.Linear(cfg.audio_frames, cfg.audio_frames, **kw)

  def __call__(self, codes: jax.Array) -> jax.Array:
    y = codes[..., :self.read]
    for conv in self.convs:
      y = _leaky(conv(y))                                        # (B, F, 1) at the end
    w = jax.nn.softmax(self.score(y[..., 0]).astype(jnp.float32), axis=-1)   # (B, F)
    return jnp.einsum('bf,bfc->bc', w.astype(codes.dtype), codes)


class LandmarkNet(nnx.Module):
  """(B, 39, 2) context landmarks (fractions of the side) -> (B, landmark_code)."""

  def __init__(self, cfg: CondConfig, *, rngs: nnx.Rngs):
    kw = dict(dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype), rngs=rngs)
    self.fc1 = nnx.Linear(2 * cfg.num_landmarks, 128, **kw)
    self.fc2 = nnx.Linear(128, cfg.landmark_code, **kw)
    self.fc3 = nnx.Linear(cfg.landmark_code, cfg.landmark_code, **kw)

  def __call__(self, points: jax.Array) -> jax.Array:
    x = (points * 2.0 - 1.0).reshape(points.shape[0], -1)
    return self.fc3(_leaky(self.fc2(_leaky(self.fc1(x)))))


class DiffTalk(nnx.Module):
  """The frozen first stage (`first_stage`), the conditioning nets and the LDM UNet (`unet`)."""
  CONDITIONS = ('masked', 'reference', 'audio', 'landmarks')   # what the sampler conditions on

  def __init__(self, cond: CondConfig, unet: ldm_unet.LDMUNetConfig, first_stage: vq.VQConfig, *,
               rngs: nnx.Rngs):
    if unet.context_dim != cond.context_dim:
      raise ValueError(f'DiffTalk: the UNet context_dim {unet.context_dim} must equal audio_code + landmark_code '
                       f'= {cond.context_dim}')
    z = first_stage.embed_dim
    if unet.in_channels != 3 * z or unet.out_channels != z:
      raise ValueError(f'DiffTalk: the UNet takes [z_t, masked, reference] latents ({3 * z} channels) and predicts '
                       f'eps ({z}); got in_channels={unet.in_channels}, out_channels={unet.out_channels}')
    self.cond_cfg = cond
    self.first_stage = vq.VQModel(first_stage, rngs=rngs)
    self.audio_net = AudioWindowNet(cond, rngs=rngs)
    self.audio_smoother = AudioSmoother(cond, rngs=rngs)
    self.landmark_net = LandmarkNet(cond, rngs=rngs)
    self.unet = ldm_unet.LDMUNet(unet, rngs=rngs)

  def context(self, audio: jax.Array, landmarks: jax.Array) -> jax.Array:
    """audio (B, F, W, D), landmarks (B, 39, 2) -> the context token (B, 1, context_dim)."""
    c = self.cond_cfg
    if audio.ndim != 4 or audio.shape[1:] != (c.audio_frames, c.audio_window, c.audio_dim):
      raise ValueError(f'DiffTalk: audio must be (batch, {c.audio_frames} frames, {c.audio_window} steps, '
                       f'{c.audio_dim} features), got {audio.shape}')
    if landmarks.shape[1:] != (c.num_landmarks, 2):
      raise ValueError(f'DiffTalk: landmarks must be (batch, {c.num_landmarks}, 2), got {landmarks.shape}')
    b, f = audio.shape[:2]
    codes = self.audio_net(audio.reshape((b * f,) + audio.shape[2:])).reshape(b, f, -1)
    token = jnp.concatenate([self.audio_smoother(codes), self.landmark_net(landmarks)], axis=-1)
    return token[:, None]

  def encode(self, images: jax.Array) -> jax.Array:
    return self.first_stage.encode(images).astype(jnp.float32)

  def decode(self, z: jax.Array) -> jax.Array:
    return self.first_stage.decode(z)

  @property
  def latent_channels(self) -> int:
    return self.first_stage.cfg.embed_dim

  @property
  def latent_factor(self) -> int:
    return 2 ** (len(self.first_stage.cfg.ch_mult) - 1)

  def sample_condition(self, masked: jax.Array, reference: jax.Array, audio: jax.Array, landmarks: jax.Array
                       ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The sampler's cond from CONDITIONS (images in [-1, 1] at the model's size)."""
    return self.encode(masked), self.encode(reference), self.context(audio, landmarks)

  def __call__(self, z_t: jax.Array, t: jax.Array, cond: tuple[jax.Array, jax.Array, jax.Array]) -> jax.Array:
    """eps(z_t, t | masked latent, reference latent, context): cond = (masked (B,h,w,z), ref (B,h,w,z),
    context (B, 1, context_dim))."""
    masked, reference, context = cond
    x = jnp.concatenate([z_t, masked.astype(z_t.dtype), reference.astype(z_t.dtype)], axis=-1)
    return self.unet(x, t, context)


def build(config: Any, *, rngs: nnx.Rngs, dtype: str = 'float32') -> DiffTalk:
  """The DiffTalk of a config's `model` block (model.cond, model.unet, model.first_stage); `config.remat`
  rematerialises each UNet block."""
  m = config.model
  return DiffTalk(cond_config_from_dict(m.cond, dtype=dtype),
                  ldm_unet.config_from_dict(m.unet, dtype=dtype, remat=bool(config.get('remat', False))),
                  vq.config_from_dict(m.first_stage, dtype=dtype), rngs=rngs)
