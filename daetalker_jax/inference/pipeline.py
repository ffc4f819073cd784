"""One interface for every method: inputs → an iterator of frames + the audio to mux with them.

  pipeline = inference.load_pipeline('dae_talker', dae='runs/dae', s2l='runs/s2l', options=Options(...))
  video = pipeline(speech)                    # speech: float32 16 kHz mono
  for batch in video.frames: ...              # uint8 (b, H, W, 3) batches, video.num_frames in all

A pipeline validates everything and loads its models when it is built, so a bad input fails with one line
before any heavy work. Calling it runs the cheap stages (speech → latents) and returns a `Video` whose
frames are decoded lazily, batch by batch, as the caller consumes them (memory does not grow with length).

DAETalkerPipeline (DAE-Talker, person-specific):
  1. N = round(samples / 640) video frames; the audio padded / trimmed to N*640 samples (the data contract).
  2. speech2latent on the raw audio in crossfaded windows (inference/speech2latent.py); the pose fed to the
     pose adaptor: the model's own prediction, still, a dataset clip's track or a .npy (inference/pose.py).
  3. latents de-normalised with the s2l checkpoint's mean/std, optionally smoothed over time.
  4. DDIM decoding of every frame from ONE shared x_T (a seed, or the DDIM inversion of a real frame) by the
     DAE codec (inference/dae_codec.py).
  5. optionally the face pasted back into its source video (inference/paste_back.py).
"""

from __future__ import annotations

from collections.abc import Iterator
import dataclasses
import math
import os
import re
from typing import Any, Protocol

import numpy as np

from daetalker_jax.data import audio as audio_lib
from daetalker_jax.data import contract
from daetalker_jax.inference import clips
from daetalker_jax.inference import dae_codec
from daetalker_jax.inference import loading
from daetalker_jax.inference import paste_back
from daetalker_jax.inference import pose as pose_lib
from daetalker_jax.inference import speech2latent
from daetalker_jax.inference.errors import GenerateError


@dataclasses.dataclass
class Video:
  """What a pipeline returns: frames to consume once, and the audio that goes with them."""
  frames: Iterator[np.ndarray]   # uint8 (b, H, W, 3) batches, num_frames in all
  num_frames: int
  size: tuple[int, int]          # (width, height)
  audio: np.ndarray              # float32 16 kHz mono, to mux (the input's own length)
  info: dict[str, Any]           # method-specific extras (e.g. the predicted pose)


class Pipeline(Protocol):
  """inputs → frames + audio. Built with its checkpoints and options; called once per input."""
  method: str

  def __call__(self, speech: np.ndarray) -> Video:
    ...

  def num_compiles(self) -> int:
    """Programs its decoder has compiled (1 for a whole run at one shape)."""
    ...


# --------------------------------------------------------------------------------------------------------
# DAE-Talker.
# --------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Options:
  """Everything that changes a DAE-Talker video besides the input audio and the two checkpoints."""
  steps: int = 20                     # DDIM steps
  guidance: float | None = None       # mean-latent guidance scale (diffusion.guided_eps_fn); None: the DAE
                                      # config's diffusion.guidance (1 = off when the config has none)
  noise: str = 'seed:0'               # 'seed:N' | 'invert:CLIP_ID:FRAME' (needs data_dir)
  pose: str = 'predicted'             # see pose.POSE_CHOICES
  pose_scale: float = 1.0             # multiplies the pose fed to the pose adaptor (0 = still)
  smooth: float = 0.0                 # Gaussian sigma (frames) over time applied to the latents; 0 = off
  batch: int = 16                     # frames per DDIM batch (rounded up to a multiple of the devices)
  bf16: bool = False                  # DAE computes in bfloat16 (parameters stay float32)
  data_dir: str = ''                  # prepared dataset (for invert:, reference:, paste-back)
  paste_back: str = ''                # source video to paste the generated face into
  chunk_frames: int = 750             # speech2latent window (30 s)
  overlap_frames: int = 50            # overlap (2 s) crossfaded between windows


def parse_noise(spec: str) -> tuple[str, Any]:
  """'seed:N' → ('seed', N); 'invert:CLIP_ID:FRAME' → ('invert', (clip_id, frame))."""
  m = re.fullmatch(r'seed:(\d+)', spec or '')
  if m:
    return 'seed', int(m.group(1))
  m = re.fullmatch(r'invert:(.+):(\d+)', spec or '')
  if m:
    return 'invert', (m.group(1), int(m.group(2)))
  raise GenerateError(f'--noise={spec!r}: expected seed:N or invert:CLIP_ID:FRAME')


def check_guidance(guidance: float | None) -> None:
  """--guidance of any guided method: None (the model config's) or a scale in (0, 10] (1 = off)."""
  if guidance is not None and not (math.isfinite(guidance) and 0 < guidance <= 10):
    raise GenerateError(f'--guidance={guidance}: must be in (0, 10] (1 = off)')


def validate_options(opts: Options) -> None:
  """Raises GenerateError for any option that cannot work (cheap checks, no model loaded)."""
  if opts.steps < 1 or opts.steps > 1000:
    raise GenerateError(f'--steps={opts.steps}: must be in 1..1000')
  if opts.batch < 1:
    raise GenerateError(f'--batch={opts.batch}: must be >= 1')
  check_guidance(opts.guidance)
  if opts.smooth < 0 or not math.isfinite(opts.smooth):
    raise GenerateError(f'--smooth={opts.smooth}: must be a finite sigma >= 0 (frames)')
  if not math.isfinite(opts.pose_scale):
    raise GenerateError(f'--pose-scale={opts.pose_scale}: must be finite')
  if opts.overlap_frames < 0 or opts.chunk_frames <= opts.overlap_frames:
    raise GenerateError(f'chunk_frames={opts.chunk_frames} must exceed overlap_frames={opts.overlap_frames} >= 0')
  noise_kind, _ = parse_noise(opts.noise)
  pose_kind, _ = pose_lib.parse_pose(opts.pose)
  needs_data = [n for n, need in (('--noise invert:', noise_kind == 'invert'),
                                  ('--pose reference:', pose_kind == 'reference'),
                                  ('--paste-back', bool(opts.paste_back))) if need]
  if needs_data and not opts.data_dir:
    raise GenerateError(f'{needs_data[0]} needs --data DATA_DIR (the prepared dataset)')
  if opts.data_dir and not os.path.isfile(os.path.join(opts.data_dir, 'dataset_info.json')):
    raise GenerateError(f'--data={opts.data_dir}: not a prepared dataset (no dataset_info.json)')
  if opts.paste_back and not os.path.isfile(opts.paste_back):
    raise GenerateError(f'--paste-back={opts.paste_back}: no such file')


class DAETalkerPipeline:
  """DAE-Talker: speech → speech2latent → one shared x_T decoded by the DAE (see the module doc)."""
  method = 'dae_talker'

  def __init__(self, dae: str, s2l: str, options: Options = Options()):
    validate_options(options)
    self.options = opts = options
    dae_model, self.dae_config, _ = loading.load_checkpoint(dae, '--dae', loading.DAE_TASKS)
    s2l_model, self.s2l_config, stats = loading.load_checkpoint(s2l, '--s2l', loading.S2L_TASKS)
    dim = int(self.dae_config.model.enc_out_channels)
    if int(self.s2l_config.model.latent_dim) != dim:
      raise GenerateError(f'--s2l={s2l}: predicts {self.s2l_config.model.latent_dim}-d latents, the DAE in '
                          f'{dae} uses {dim}-d')
    self.mean, self.std = loading.latent_stats(self.s2l_config, stats, opts.data_dir, dim)
    self.deg_per_unit = float(stats.get('pose_scale', self.s2l_config.get('loss', {}).get('pose_scale', 1.0)))
    self.latent_loss = str(self.s2l_config.get('loss', {}).get('latent_loss', 'l1'))
    self.predictor = speech2latent.LatentPredictor(s2l_model)
    self.guidance = float(self.dae_config.diffusion.get('guidance', 1.0) if opts.guidance is None
                          else opts.guidance)
    reference = None
    if self.guidance != 1.0:   # guide away from the mean z_sem of the training frames
      if 'latent_mean' not in stats:
        raise GenerateError(f'--s2l={s2l}: the checkpoint stores no mean latent, which guidance needs; pass '
                            f'--guidance 1')
      reference = np.asarray(stats['latent_mean'], np.float32)
      if reference.shape != (dim,):
        raise GenerateError(f'--s2l={s2l}: mean latent of shape {reference.shape}, the DAE uses {dim}-d')
    try:
      self.codec = dae_codec.DAECodec(dae_model, self.dae_config, steps=opts.steps, batch=opts.batch,
                                      bf16=opts.bf16, guidance=self.guidance, reference=reference)
    except ValueError as e:
      raise GenerateError(f'--steps={opts.steps}: {e}') from None
    kind, arg = parse_noise(opts.noise)
    if kind == 'seed':
      self.x_T = self.codec.seed_noise(arg)
    else:
      frame = clips.reference_frame(opts.data_dir, *arg)
      if frame.shape[:2] != (self.codec.image_size,) * 2:
        raise GenerateError(f'--noise invert: reference frame is {frame.shape[:2]}, the DAE works at '
                            f'{self.codec.image_size} px')
      self.x_T = self.codec.invert(frame[None])
    self.size = (paste_back.output_size(opts.paste_back) if opts.paste_back
                 else (self.codec.image_size, self.codec.image_size))

  def latents(self, audio: np.ndarray, pose_deg: np.ndarray | None, gain: float = 1.0
              ) -> tuple[np.ndarray, np.ndarray]:
    """(de-normalised, smoothed latents (N, D), predicted pose (N, 3) degrees) for N*640 samples of audio;
    `pose_deg` (N, 3) is fed to the pose adaptor, None feeds back its own prediction."""
    o = self.options
    z, pose_pred = self.predictor(audio, pose=None if pose_deg is None else pose_deg / self.deg_per_unit,
                                  pose_gain=gain, chunk_frames=o.chunk_frames, overlap_frames=o.overlap_frames)
    return z, pose_pred * self.deg_per_unit

  def decode(self, normalised: np.ndarray) -> Iterator[np.ndarray]:
    """Frames of normalised latents (the model's output): de-normalised, smoothed, decoded from x_T."""
    z = speech2latent.smooth_latents(normalised * self.std + self.mean, self.options.smooth)
    return self.codec.iter_decode(z, self.x_T)

  def __call__(self, speech: np.ndarray) -> Video:
    o = self.options
    n = contract.frames_for_samples(len(speech))
    audio = audio_lib.fit_to_frames(speech, n)                                 # (N*640,)
    kind, arg = pose_lib.parse_pose(o.pose)
    track = pose_lib.pose_track(kind, arg, n, o.data_dir)
    z, pose_pred = self.latents(audio, track, o.pose_scale)
    frames = self.decode(z)
    if o.paste_back:
      frames = paste_back.iter_pasted(frames, o.paste_back, o.data_dir)
    return Video(frames=frames, num_frames=n, size=self.size, audio=speech,
                 info={'latents': z, 'pose_pred': pose_pred, 'guidance': self.guidance})

  def num_compiles(self) -> int:
    return self.codec.num_compiles()
