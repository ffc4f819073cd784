"""Stage A of landmark diffusion (docs/LANDMARK.md): speech → the lip and jaw landmarks, in Flax NNX.

  points = Audio2Landmarks(cfg, rngs=rngs)(audio, context, ref_sets)   # (B, T, 29, 2), pose-normalised

Inputs, per example: T consecutive video frames.
  audio    (B, T, W, D)   speech features around each frame (data/examples.audio_windows, one window per frame)
  context  (B, T, 39, 2)  the context landmarks of those frames (dlib 0-3, 13-47) as fractions of the side
  ref_sets (B, K, 68, 2)  K landmark sets of other frames of the same person (their mouth shapes)
One transformer runs over the tokens [K reference sets | T audio frames | T context frames], each a linear
projection of its (pose-normalised, flattened) input plus a modality embedding, and a temporal embedding on the
audio and context tokens. A head on the audio tokens predicts the 29 motion points (dlib 4-12 and 48-67) of each
frame as an offset from the mean of the reference sets' motion points, in the pose-normalised frame
(`pose_frame`): centred on the eyes, eye-to-eye distance 1, eye line horizontal. `to_image` maps them back to
the image with the frame's own pose, differentiably (the end-to-end fine-tune runs through it).

IP_LAP (the same author's open code) uses K=15, T=5, 4 layers, width 512, 4 heads; configs/landmarks.py has it as
the `full` variant.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from daetalker_jax.models import config_util

CONTEXT_LANDMARKS = tuple(range(0, 4)) + tuple(range(13, 48))   # 39 points (as models/difftalk.py)
MOTION_LANDMARKS = tuple(range(4, 13)) + tuple(range(48, 68))   # 29 points the audio drives
# Positions inside the 39 context points of the left (dlib 36-41) and right (42-47) eye.
_LEFT_EYE = [CONTEXT_LANDMARKS.index(i) for i in range(36, 42)]
_RIGHT_EYE = [CONTEXT_LANDMARKS.index(i) for i in range(42, 48)]
# Positions inside the 29 motion points of the inner lip's top and bottom middle (dlib 62, 66).
LIP_TOP, LIP_BOTTOM = MOTION_LANDMARKS.index(62), MOTION_LANDMARKS.index(66)


@dataclasses.dataclass(frozen=True)
class Audio2LandmarksConfig(config_util.Dtypes):
  """Shapes of Stage A."""
  audio_dim: int = 80            # features per audio step
  audio_window: int = 16         # feature steps per video frame
  num_frames: int = 5            # T: frames per example
  num_refs: int = 15             # K: reference landmark sets
  width: int = 512
  depth: int = 4
  heads: int = 4
  dropout: float = 0.0
  dtype: str = 'float32'
  param_dtype: str = 'float32'

  def __post_init__(self):
    if self.width % self.heads:
      raise ValueError(f'Audio2LandmarksConfig: width {self.width} is not divisible by heads {self.heads}')
    if min(self.num_frames, self.num_refs, self.depth, self.audio_window, self.audio_dim) < 1:
      raise ValueError(f'Audio2LandmarksConfig: sizes must be >= 1, got {self}')


def config_from_dict(d: Mapping[str, Any], **overrides: Any) -> Audio2LandmarksConfig:
  return config_util.from_dict(Audio2LandmarksConfig, d, overrides, 'config.model.stage_a')


# ------------------------------------------------------------------------------------------ pose frames
def pose_frame(context: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(..., 39, 2) context points -> (centre (..., 2), scale (...), angle (...)) of the eyes."""
  left, right = context[..., _LEFT_EYE, :].mean(-2), context[..., _RIGHT_EYE, :].mean(-2)
  d = right - left
  scale = jnp.sqrt(jnp.sum(d * d, -1) + 1e-12)
  return (left + right) / 2, scale, jnp.arctan2(d[..., 1], d[..., 0])


def _rotate(p: jax.Array, angle: jax.Array) -> jax.Array:
  c, s = jnp.cos(angle)[..., None], jnp.sin(angle)[..., None]
  x, y = p[..., 0], p[..., 1]
  return jnp.stack([c * x - s * y, s * x + c * y], -1)


def normalise(points: jax.Array, frame: tuple[jax.Array, jax.Array, jax.Array]) -> jax.Array:
  """Image fractions (..., P, 2) -> the pose-normalised frame of `frame` (batch dims of points[..., 0, 0])."""
  centre, scale, angle = frame
  return _rotate(points - centre[..., None, :], -angle) / scale[..., None, None]


def to_image(points: jax.Array, frame: tuple[jax.Array, jax.Array, jax.Array]) -> jax.Array:
  """Inverse of `normalise`."""
  centre, scale, angle = frame
  return _rotate(points * scale[..., None, None], angle) + centre[..., None, :]


def split_68(points: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(..., 68, 2) -> (context (..., 39, 2), motion (..., 29, 2))."""
  return points[..., np.array(CONTEXT_LANDMARKS), :], points[..., np.array(MOTION_LANDMARKS), :]


def join_68(context: jax.Array, motion: jax.Array) -> jax.Array:
  """Inverse of `split_68` (works on numpy and jax arrays)."""
  order = np.argsort(np.array(CONTEXT_LANDMARKS + MOTION_LANDMARKS))
  xp = jnp if isinstance(context, jax.Array) or isinstance(motion, jax.Array) else np
  return xp.concatenate([context, motion], axis=-2)[..., order, :]


def mouth_opening(motion: jax.Array) -> jax.Array:
  """(..., 29, 2) motion points -> (...) inner-lip opening (dlib 62 to 66)."""
  d = motion[..., LIP_BOTTOM, :] - motion[..., LIP_TOP, :]
  return jnp.sqrt(jnp.sum(d * d, -1))


# ---------------------------------------------------------------------------------------------- the model
class _Layer(nnx.Module):
  """Pre-LN transformer layer: x += MHA(LN(x)); x += MLP(LN(x))."""

  def __init__(self, cfg: Audio2LandmarksConfig, *, rngs: nnx.Rngs):
    kw = dict(dtype=cfg.compute_dtype, param_dtype=cfg.params_dtype, rngs=rngs)
    self.norm1 = nnx.LayerNorm(cfg.width, **kw)
    self.attn = nnx.MultiHeadAttention(cfg.heads, cfg.width, decode=False, **kw)
    self.norm2 = nnx.LayerNorm(cfg.width, **kw)
    self.fc1 = nnx.Linear(cfg.width, 4 * cfg.width, **kw)
    self.fc2 = nnx.Linear(4 * cfg.width, cfg.width, **kw)
    self.dropout = nnx.Dropout(cfg.dropout, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = x + self.dropout(self.attn(self.norm1(x)))
    return x + self.dropout(self.fc2(jax.nn.gelu(self.fc1(self.norm2(x)))))


class Audio2Landmarks(nnx.Module):
  """Stage A (module doc)."""

  def __init__(self, cfg: Audio2LandmarksConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    kw = dict(dtype=cfg.compute_dtype, param_dtype=cfg.params_dtype, rngs=rngs)
    d = cfg.width
    self.audio_in = nnx.Linear(cfg.audio_window * cfg.audio_dim, d, **kw)
    self.context_in = nnx.Linear(2 * len(CONTEXT_LANDMARKS), d, **kw)
    self.ref_in = nnx.Linear(2 * 68, d, **kw)
    init = nnx.initializers.normal(0.02)
    self.modality = nnx.Param(init(rngs.params(), (3, d), cfg.params_dtype))
    self.temporal = nnx.Param(init(rngs.params(), (cfg.num_frames, d), cfg.params_dtype))
    self.layers = nnx.List([_Layer(cfg, rngs=rngs) for _ in range(cfg.depth)])
    self.norm = nnx.LayerNorm(d, **kw)
    self.head = nnx.Linear(d, 2 * len(MOTION_LANDMARKS), kernel_init=nnx.initializers.zeros_init(),
                           dtype=jnp.float32, param_dtype=cfg.params_dtype, rngs=rngs)

  def _check(self, audio, context, ref_sets):
    c = self.cfg
    want = {'audio': (c.num_frames, c.audio_window, c.audio_dim), 'context': (c.num_frames, 39, 2),
            'ref_sets': (c.num_refs, 68, 2)}
    for name, a in (('audio', audio), ('context', context), ('ref_sets', ref_sets)):
      if a.ndim != 4 or a.shape[1:] != want[name]:
        raise ValueError(f'Audio2Landmarks: {name} must be (batch, {", ".join(map(str, want[name]))}), '
                         f'got {tuple(a.shape)}')

  def __call__(self, audio: jax.Array, context: jax.Array, ref_sets: jax.Array) -> jax.Array:
    """-> (B, T, 29, 2) motion points in each frame's pose-normalised frame (see `to_image`)."""
    self._check(audio, context, ref_sets)
    c = self.cfg
    b, t = audio.shape[:2]
    ref_ctx, ref_motion = split_68(ref_sets.astype(jnp.float32))
    ref_n = jnp.concatenate([normalise(ref_ctx, pose_frame(ref_ctx)), normalise(ref_motion, pose_frame(ref_ctx))],
                            axis=-2)                                                  # (B, K, 68, 2)
    ctx_n = normalise(context.astype(jnp.float32), pose_frame(context.astype(jnp.float32)))   # (B, T, 39, 2)
    dt = c.compute_dtype
    tokens = jnp.concatenate([
        self.ref_in(ref_n.reshape(b, c.num_refs, -1).astype(dt)) + self.modality[0],
        self.audio_in(audio.reshape(b, t, -1).astype(dt)) + self.modality[1] + self.temporal[...],
        self.context_in(ctx_n.reshape(b, t, -1).astype(dt)) + self.modality[2] + self.temporal[...],
    ], axis=1)
    for layer in self.layers:
      tokens = layer(tokens)
    h = self.norm(tokens[:, c.num_refs:c.num_refs + t]).astype(jnp.float32)
    mean_ref = ref_n[:, :, len(CONTEXT_LANDMARKS):].mean(1)                              # (B, 29, 2)
    return mean_ref[:, None] + self.head(h).reshape(b, t, len(MOTION_LANDMARKS), 2)

  def predict_image(self, audio: jax.Array, context: jax.Array, ref_sets: jax.Array) -> jax.Array:
    """The motion points as image fractions, in each frame's own pose: (B, T, 29, 2)."""
    return to_image(self(audio, context, ref_sets), pose_frame(context.astype(jnp.float32)))


def build(config: Any, *, rngs: nnx.Rngs, dtype: str = 'float32') -> Audio2Landmarks:
  """Stage A of a config's `model.stage_a` block."""
  return Audio2Landmarks(config_from_dict(config.model.stage_a, dtype=dtype), rngs=rngs)
