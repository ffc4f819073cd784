"""speech2latent: speech -> per-frame semantic latent z_sem (DAE-Talker stage 2), with a pose adaptor.

  audio (B, W*640) 16 kHz
    -> front end: log-mel (100 Hz, computed in-model) | frozen wav2vec2 (50 Hz, chosen layer or learned mix)
    -> strided conv downsampling to the video rate (25 fps: stride 4 for log-mel, 2 for wav2vec2)
    -> Linear(d_model) -> N Conformer "speech encoder" blocks                       h (B, W, d_model)
    -> pose adaptor: pose_pred = MLP(h) (yaw, pitch, roll, normalised);
                     h = h + Linear(pose), pose = ground truth | supplied | stop_gradient(pose_pred)
    -> N Conformer "latent decoder" blocks -> Linear(latent_dim)                    latent (B, W, D)

Alignment: output frame k belongs to video frame k, i.e. to audio samples [640k, 640(k+1)). Every
downsampling conv has kernel 4, stride 2 and padding 1 on each side, so output i is centred between inputs
2i and 2i+1: two stages map log-mel frames 4k..4k+3 (see data/features.py) onto frame k, one stage maps
wav2vec2 frames 2k, 2k+1 onto frame k. The audio is padded by 40 samples on each side before wav2vec2 so
that W*640 samples give exactly 2W frames, frame j centred on sample 320j + 160.

Padding: `mask` (B, W) is True for real frames, real frames first. Padded audio is zeroed, features of
padded frames are zeroed before every conv, and the Conformers mask attention and their depthwise convs,
so padded frames never change the outputs of real ones.

Pose values are normalised (degrees / `config.loss.pose_scale`); the task normalises the dataset's
degrees before calling the model and scales `pose_pred` back for reporting.

Frozen wav2vec2: its parameters live under the `wav2vec2` attribute; its outputs are stop-gradient'ed
and it never runs dropout. Give the optimizer `TRAINABLE` (`nnx.Optimizer(model, tx, wrt=TRAINABLE)`) so
that it holds no state for them. Models do no file I/O: `importers.wav2vec2.s2l_config` reads the
wav2vec2 architecture from `wav2vec2_path`, and `importers.wav2vec2.load_wav2vec2_into(model.wav2vec2,
wav2vec2_path)` loads the pretrained weights after construction (the task's `load_pretrained` does both;
a checkpoint contains them too).
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from daetalker_jax.data import contract
from daetalker_jax.data import features
from daetalker_jax.models import conformer
from daetalker_jax.models import wav2vec2 as w2v

# The frozen wav2vec2 extractor, and the parameters the optimizer trains: everything else.
FROZEN = nnx.PathContains('wav2vec2')
TRAINABLE = nnx.All(nnx.Param, nnx.Not(FROZEN))

# Log-mel values are log(power + 1e-5), about -11.5 (silence) .. +3 (loud); this fixed affine brings
# them near zero mean / unit scale so the first conv starts in a sensible range. Fixed (not data
# statistics) so that the model does not depend on a dataset file.
_LOGMEL_SHIFT, _LOGMEL_SCALE = 5.0, 4.0
W2V_PAD = 40          # samples of zero padding on each side of the audio before wav2vec2 (see docstring)
POSE_MODES = ('gt', 'predicted', 'supplied')


@dataclasses.dataclass(frozen=True)
class S2LConfig:
  """speech2latent architecture (the fields of `config.model` in configs/s2l.py)."""
  frontend: str = 'logmel'          # 'logmel' | 'wav2vec2'
  n_mels: int = features.N_MELS     # log-mel bins
  wav2vec2_path: str = ''           # local HF wav2vec2 or HuBERT folder (config.json + weights)
  wav2vec2_layer: int = -1          # hidden state to use (0 = input of layer 1); -1 = learned weighted sum
  wav2vec2_normalize: bool = True   # zero-mean/unit-variance waveform per window (HF do_normalize)
  wav2vec2: w2v.Wav2Vec2Config | None = None   # wav2vec2 architecture (importers.wav2vec2.s2l_config reads it)
  d_model: int = 512                # Conformer width
  num_heads: int = 4                # attention heads
  num_encoder_blocks: int = 4       # speech encoder Conformer blocks
  num_decoder_blocks: int = 4       # latent decoder Conformer blocks
  ff_mult: int = 4                  # Conformer FFN expansion
  conv_kernel: int = 13             # Conformer depthwise conv kernel
  dropout: float = 0.1              # dropout in the Conformers and after the input projection
  latent_dim: int = 512             # z_sem size (DAE enc_out_channels)
  pose_dim: int = 3                 # yaw, pitch, roll
  pose_hidden: int = 256            # pose predictor MLP width
  remat: bool = False               # rematerialise each Conformer block
  dtype: str = 'float32'            # compute dtype (params stay float32)

  def __post_init__(self):
    if self.frontend not in ('logmel', 'wav2vec2'):
      raise ValueError(f"speech2latent: model.frontend must be 'logmel' or 'wav2vec2', got {self.frontend!r}")
    if self.frontend == 'wav2vec2' and self.wav2vec2 is None:
      raise ValueError('speech2latent: frontend=wav2vec2 needs the wav2vec2 architecture; build the config '
                       'with importers.wav2vec2.s2l_config, which reads it from model.wav2vec2_path')


def config_from_dict(d: Any, *, dtype: str | None = None, remat: bool | None = None) -> S2LConfig:
  """Builds `S2LConfig` from `config.model` (a ConfigDict / dict).

  `dtype` and `remat` come from the top level of the training config (`config.dtype`, `config.remat`),
  as for the DAE. Unknown keys are an error. A wav2vec2 front end needs `d['wav2vec2']` (the architecture);
  `importers.wav2vec2.s2l_config` fills it in from `wav2vec2_path/config.json`.
  """
  d = dict(d)
  if dtype is not None:
    d['dtype'] = dtype
  if remat is not None:
    d['remat'] = remat
  names = {f.name for f in dataclasses.fields(S2LConfig)}
  unknown = sorted(set(d) - names)
  if unknown:
    raise ValueError(f'speech2latent: unknown model config fields {unknown}')
  return S2LConfig(**d)


class _Downsample(nnx.Module):
  """`stages` x [zero padding -> Conv(k=4, s=2, pad 1) -> SiLU]: halves the rate per stage, centred."""

  def __init__(self, cin: int, cout: int, stages: int, *, dtype, param_dtype, rngs: nnx.Rngs):
    self.convs = nnx.List([
        nnx.Conv(cin if i == 0 else cout, cout, 4, 2, padding=((1, 1),), dtype=dtype, param_dtype=param_dtype,
                 rngs=rngs)
        for i in range(stages)])

  def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
    # x (B, W * 2**stages, C), mask (B, W) at the output rate.
    for i, conv in enumerate(self.convs):
      rate = 2 ** (len(self.convs) - i)
      m = jnp.repeat(mask, rate, axis=1)                    # (B, T_in) mask at this stage's input rate
      x = jax.nn.silu(conv(jnp.where(m[:, :, None], x, 0)))
    return x                                                # (B, W, cout)


class PoseAdaptor(nnx.Module):
  """Predicts the pose from the hidden states and adds a projection of the chosen pose back into them."""

  def __init__(self, dim: int, hidden: int, pose_dim: int, *, dtype, param_dtype, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.norm = nnx.LayerNorm(dim, epsilon=1e-5, **kw)
    self.fc1 = nnx.Linear(dim, hidden, **kw)
    self.fc2 = nnx.Linear(hidden, pose_dim, **kw)
    self.proj = nnx.Linear(pose_dim, dim, **kw)

  def predict(self, h: jax.Array) -> jax.Array:
    return self.fc2(jax.nn.silu(self.fc1(self.norm(h))))    # (B, W, pose_dim)

  def __call__(self, h: jax.Array, pose: jax.Array) -> jax.Array:
    return h + self.proj(pose.astype(h.dtype))


class Speech2Latent(nnx.Module):
  """See the module docstring."""

  def __init__(self, cfg: S2LConfig, *, rngs: nnx.Rngs, param_dtype: Any = jnp.float32):
    self.cfg = cfg
    dtype = jnp.dtype(cfg.dtype)
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    if cfg.frontend == 'logmel':
      feat_dim, stages = cfg.n_mels, 2                      # 100 Hz -> 25 fps
    else:
      wcfg = cfg.wav2vec2
      if wcfg.total_stride != 320 or wcfg.receptive_field != 400:
        raise ValueError(f'speech2latent: wav2vec2 with stride {wcfg.total_stride} / receptive field '
                         f'{wcfg.receptive_field} samples; expected 320 / 400 (50 Hz features)')
      feat_dim, stages = wcfg.hidden_size, 1                # 50 Hz -> 25 fps
      self.wav2vec2 = w2v.Wav2Vec2Model(wcfg, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
      num_states = (cfg.wav2vec2_layer + 1 if cfg.wav2vec2_layer >= 0 else wcfg.num_hidden_layers + 1)
      self.layer_mix = w2v.LayerMix(wcfg.num_hidden_layers + 1, cfg.wav2vec2_layer, rngs=rngs)
      self._num_layers = num_states - 1                     # transformer layers that must run
    self.feat_dim = feat_dim
    self.downsample = _Downsample(feat_dim, cfg.d_model, stages, **kw)
    self.in_proj = nnx.Linear(cfg.d_model, cfg.d_model, **kw)
    self.in_dropout = nnx.Dropout(cfg.dropout, rngs=rngs)
    blocks = dict(ff_mult=cfg.ff_mult, kernel_size=cfg.conv_kernel, dropout=cfg.dropout, remat=cfg.remat, **kw)
    self.encoder = conformer.Conformer(cfg.d_model, cfg.num_heads, cfg.num_encoder_blocks, **blocks)
    self.pose_adaptor = PoseAdaptor(cfg.d_model, cfg.pose_hidden, cfg.pose_dim, **kw)
    self.decoder = conformer.Conformer(cfg.d_model, cfg.num_heads, cfg.num_decoder_blocks, **blocks)
    self.out_proj = nnx.Linear(cfg.d_model, cfg.latent_dim, **kw)

  @property
  def features_per_frame(self) -> int:
    """Front-end feature frames per video frame (4 for log-mel, 2 for wav2vec2)."""
    return 4 if self.cfg.frontend == 'logmel' else 2

  def frontend_features(self, audio: jax.Array, mask: jax.Array) -> jax.Array:
    """Audio (B, W*640) -> front-end features (B, W*features_per_frame, feat_dim), padding zeroed.

    Exposed so that frozen wav2vec2 features can be precomputed once and fed to `__call__` (valid for a
    fixed `wav2vec2_layer`; with the learned mix (-1) the mixing weights train, so features must be
    computed in the step).
    """
    b, n = audio.shape
    w = mask.shape[1]
    if n != w * contract.SAMPLES_PER_FRAME:
      raise ValueError(f'speech2latent: audio has {n} samples, expected {w} frames x '
                       f'{contract.SAMPLES_PER_FRAME} = {w * contract.SAMPLES_PER_FRAME}')
    sample_mask = jnp.repeat(mask, contract.SAMPLES_PER_FRAME, axis=1)            # (B, N)
    audio = jnp.where(sample_mask, audio.astype(jnp.float32), 0.0)
    if self.cfg.frontend == 'logmel':
      x = (features.log_mel(audio, n_mels=self.cfg.n_mels) + _LOGMEL_SHIFT) / _LOGMEL_SCALE   # (B, 4W, M)
    else:
      if self.cfg.wav2vec2_normalize:
        audio = features.normalize_waveform(audio, sample_mask)
      audio = jnp.pad(audio, ((0, 0), (W2V_PAD, W2V_PAD)))                          # (B, N + 80)
      lengths = mask.sum(-1).astype(jnp.int32) * contract.SAMPLES_PER_FRAME + 2 * W2V_PAD
      out = self.wav2vec2(audio, lengths=lengths, num_layers=self._num_layers)
      states = [jax.lax.stop_gradient(h) for h in out['hidden_states']]           # frozen
      states += [None] * (self.cfg.wav2vec2.num_hidden_layers + 1 - len(states))   # layers not run
      x = self.layer_mix(states)                                                   # (B, 2W, D_w2v)
    m = jnp.repeat(mask, self.features_per_frame, axis=1)
    return jnp.where(m[:, :, None], x, 0.0)

  def __call__(self, audio_or_features: jax.Array, *, mask: jax.Array | None = None,
               pose: jax.Array | None = None, pose_mode: str = 'gt',
               deterministic: bool = True) -> dict[str, jax.Array]:
    """Predicts latents for W video frames.

    Args:
      audio_or_features: (B, W*640) 16 kHz audio in [-1, 1], or precomputed front-end features
        (B, W*features_per_frame, feat_dim) from `frontend_features`.
      mask: (B, W) bool, True for real frames (real frames first); None = all real.
      pose: normalised yaw/pitch/roll, (B, W, 3) or (B, 3) (held for the whole window); needed for
        pose_mode 'gt' (training) and 'supplied' (pose control), ignored for 'predicted'.
      pose_mode: which pose the adaptor adds: 'gt' | 'supplied' (the given pose) or 'predicted'
        (stop_gradient of the model's own prediction).
      deterministic: disable dropout.
    Returns:
      dict(latent (B, W, latent_dim), pose_pred (B, W, pose_dim)); values at padded frames are meaningless.
    """
    if pose_mode not in POSE_MODES:
      raise ValueError(f'speech2latent: pose_mode must be one of {POSE_MODES}, got {pose_mode!r}')
    x = audio_or_features
    fpf = self.features_per_frame
    if x.ndim == 2:
      if x.shape[1] % contract.SAMPLES_PER_FRAME:
        raise ValueError(f'speech2latent: audio length {x.shape[1]} is not a multiple of '
                         f'{contract.SAMPLES_PER_FRAME} samples (one 25 fps frame)')
      w = x.shape[1] // contract.SAMPLES_PER_FRAME
    elif x.ndim == 3:
      if x.shape[1] % fpf or x.shape[2] != self.feat_dim:
        raise ValueError(f'speech2latent: features shaped {x.shape}; expected (B, W*{fpf}, {self.feat_dim})')
      w = x.shape[1] // fpf
    else:
      raise ValueError(f'speech2latent: expected audio (B, N) or features (B, T, F), got shape {x.shape}')
    b = x.shape[0]
    mask = jnp.ones((b, w), bool) if mask is None else mask.astype(bool)
    if mask.shape != (b, w):
      raise ValueError(f'speech2latent: mask shaped {mask.shape}, expected {(b, w)}')
    if x.ndim == 2:
      x = self.frontend_features(x, mask)

    h = self.in_proj(self.downsample(x.astype(jnp.dtype(self.cfg.dtype)), mask))   # (B, W, d_model)
    h = self.in_dropout(h, deterministic=deterministic)
    h = self.encoder(h, mask, deterministic=deterministic)
    pose_pred = self.pose_adaptor.predict(h)                                      # (B, W, 3)
    if pose_mode == 'predicted':
      pose = jax.lax.stop_gradient(pose_pred)
    else:
      if pose is None:
        raise ValueError(f"speech2latent: pose_mode={pose_mode!r} needs a pose (use 'predicted' without one)")
      if pose.ndim == 2:
        pose = jnp.broadcast_to(pose[:, None, :], (b, w, pose.shape[-1]))
      if pose.shape != (b, w, self.cfg.pose_dim):
        raise ValueError(f'speech2latent: pose shaped {pose.shape}, expected {(b, w, self.cfg.pose_dim)}')
    h = self.pose_adaptor(h, pose)
    h = self.decoder(h, mask, deterministic=deterministic)
    latent = self.out_proj(h)                                                     # (B, W, latent_dim)
    return dict(latent=latent.astype(jnp.float32), pose_pred=pose_pred.astype(jnp.float32))
