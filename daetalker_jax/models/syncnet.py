"""SyncNet (Chung & Zisserman, ACCV-W 2016) as released in joonson/syncnet_python (`SyncNetModel.S`).

This is the network behind the LSE-C / LSE-D lip-sync metrics (Prajwal et al., Wav2Lip 2020), so it is
reproduced layer by layer: the four `nn.Sequential` stacks of the PyTorch model become `nnx.List`s with
the *same indices*, so the PyTorch state_dict key `netcnnlip.4.weight` is `model.netcnnlip[4].kernel`
here (see `daetalker_jax/importers/syncnet.py`). ReLU and max-pool entries carry no parameters but keep
their slots so the indices line up.

Inputs (channels last, unlike PyTorch):
- audio stream: MFCC windows (B, 13, 20, 1) — 13 cepstral coefficients x 20 frames at 100 Hz (0.2 s),
  as produced by `python_speech_features.mfcc(int16_audio, 16000)` (see `daetalker_jax.eval_metrics.sync_scores`).
- lip stream: (B, 5, 224, 224, 3) — 5 consecutive 25 fps face crops, **BGR** channel order (the script
  reads frames with cv2.imread) and raw pixel values 0..255 as float (no normalisation).
Both streams return (B, 1024) embeddings; sync is measured by their Euclidean distance.

BatchNorm always runs in inference mode (running statistics): the metric uses a frozen network.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

# Layer lists in PyTorch order: ('conv', in, out, kernel, stride, padding) | ('bn', C) | ('relu',) |
# ('pool', window, stride, padding) | ('linear', in, out). Spatial tuples are (H, W) for the 2D audio
# stack and (D, H, W) for the 3D lip stack, exactly as written in SyncNetModel.py.
NETCNNAUD = (
    ('conv', 1, 64, (3, 3), (1, 1), (1, 1)), ('bn', 64), ('relu',),
    ('pool', (1, 1), (1, 1), (0, 0)),
    ('conv', 64, 192, (3, 3), (1, 1), (1, 1)), ('bn', 192), ('relu',),
    ('pool', (3, 3), (1, 2), (0, 0)),
    ('conv', 192, 384, (3, 3), (1, 1), (1, 1)), ('bn', 384), ('relu',),
    ('conv', 384, 256, (3, 3), (1, 1), (1, 1)), ('bn', 256), ('relu',),
    ('conv', 256, 256, (3, 3), (1, 1), (1, 1)), ('bn', 256), ('relu',),
    ('pool', (3, 3), (2, 2), (0, 0)),
    ('conv', 256, 512, (5, 4), (1, 1), (0, 0)), ('bn', 512), ('relu',),
)
NETCNNLIP = (
    ('conv', 3, 96, (5, 7, 7), (1, 2, 2), (0, 0, 0)), ('bn', 96), ('relu',),
    ('pool', (1, 3, 3), (1, 2, 2), (0, 0, 0)),
    ('conv', 96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1)), ('bn', 256), ('relu',),
    ('pool', (1, 3, 3), (1, 2, 2), (0, 1, 1)),
    ('conv', 256, 256, (1, 3, 3), (1, 1, 1), (0, 1, 1)), ('bn', 256), ('relu',),
    ('conv', 256, 256, (1, 3, 3), (1, 1, 1), (0, 1, 1)), ('bn', 256), ('relu',),
    ('conv', 256, 256, (1, 3, 3), (1, 1, 1), (0, 1, 1)), ('bn', 256), ('relu',),
    ('pool', (1, 3, 3), (1, 2, 2), (0, 0, 0)),
    ('conv', 256, 512, (1, 6, 6), (1, 1, 1), (0, 0, 0)), ('bn', 512), ('relu',),
)


def fc_spec(num_out: int = 1024) -> tuple:
  """netfcaud / netfclip: Linear(512,512) → BatchNorm1d → ReLU → Linear(512, num_out)."""
  return (('linear', 512, 512), ('bn', 512), ('relu',), ('linear', 512, num_out))


MFCC_SHAPE = (13, 20, 1)        # (coefficients, MFCC frames, channel) of one audio window
LIP_SHAPE = (5, 224, 224, 3)    # (frames, H, W, BGR) of one video window


class ReLU(nnx.Module):
  """Parameter-free slot for `nn.ReLU` (keeps the PyTorch Sequential indices)."""

  def __call__(self, x: jax.Array) -> jax.Array:
    return jax.nn.relu(x)


class MaxPool(nnx.Module):
  """`nn.MaxPool2d/3d` with explicit padding; padded cells are -inf, as in PyTorch."""

  def __init__(self, window: Sequence[int], strides: Sequence[int], padding: Sequence[int]):
    self.window = tuple(window)
    self.strides = tuple(strides)
    self.padding = tuple((p, p) for p in padding)

  def __call__(self, x: jax.Array) -> jax.Array:
    return nnx.max_pool(x, self.window, strides=self.strides, padding=self.padding)


def build_layers(spec: Sequence[tuple], *, dtype, param_dtype, rngs: nnx.Rngs) -> nnx.List:
  """Builds an `nnx.List` whose i-th entry is the i-th layer of the PyTorch Sequential."""
  layers = []
  for kind, *args in spec:
    if kind == 'conv':
      cin, cout, kernel, stride, pad = args
      layers.append(nnx.Conv(cin, cout, kernel, stride, padding=tuple((p, p) for p in pad),
                             dtype=dtype, param_dtype=param_dtype,
                             precision=jax.lax.Precision.HIGHEST, rngs=rngs))
    elif kind == 'bn':
      # PyTorch BatchNorm default eps; momentum is irrelevant (never trained here).
      layers.append(nnx.BatchNorm(args[0], use_running_average=True, epsilon=1e-5,
                                  dtype=dtype, param_dtype=param_dtype, rngs=rngs))
    elif kind == 'relu':
      layers.append(ReLU())
    elif kind == 'pool':
      layers.append(MaxPool(*args))
    elif kind == 'linear':
      layers.append(nnx.Linear(args[0], args[1], dtype=dtype, param_dtype=param_dtype,
                               precision=jax.lax.Precision.HIGHEST, rngs=rngs))
    else:
      raise ValueError(f'models/syncnet.py: unknown layer kind {kind!r}')
  return nnx.List(layers)


def _run(layers: nnx.List, x: jax.Array) -> jax.Array:
  for layer in layers:
    x = layer(x)
  return x


class SyncNet(nnx.Module):
  """SyncNetModel.S: an audio and a lip embedding network trained so synced pairs are close."""

  def __init__(self, num_layers_in_fc_layers: int = 1024, *, dtype=jnp.float32,
               param_dtype=jnp.float32, rngs: nnx.Rngs):
    self.netcnnaud = build_layers(NETCNNAUD, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.netfcaud = build_layers(fc_spec(num_layers_in_fc_layers), dtype=dtype,
                                 param_dtype=param_dtype, rngs=rngs)
    self.netfclip = build_layers(fc_spec(num_layers_in_fc_layers), dtype=dtype,
                                 param_dtype=param_dtype, rngs=rngs)
    self.netcnnlip = build_layers(NETCNNLIP, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

  def forward_aud(self, mfcc: jax.Array) -> jax.Array:
    """(B, 13, 20, 1) MFCC windows → (B, 1024) audio embeddings."""
    mid = _run(self.netcnnaud, mfcc)                     # (B, 1, 1, 512)
    return _run(self.netfcaud, mid.reshape(mid.shape[0], -1))

  def forward_lip(self, frames: jax.Array) -> jax.Array:
    """(B, 5, 224, 224, 3) BGR 0..255 windows → (B, 1024) lip embeddings."""
    mid = _run(self.netcnnlip, frames)                   # (B, 1, 1, 1, 512)
    return _run(self.netfclip, mid.reshape(mid.shape[0], -1))

  def forward_lipfeat(self, frames: jax.Array) -> jax.Array:
    """(B, 5, 224, 224, 3) → (B, 512) lip features before the FC head (syncnet_python's extract_feature)."""
    mid = _run(self.netcnnlip, frames)
    return mid.reshape(mid.shape[0], -1)
