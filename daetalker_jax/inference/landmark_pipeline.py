"""Landmark-diffusion generation: speech (or a landmark track) + a face → the face speaking it (docs/LANDMARK.md).

  pipeline = LandmarkPipeline(model='runs/talkformer', options=LandmarkOptions(video='talk.mp4'))
  video = pipeline(speech)                    # Video(frames, num_frames, size, audio, info)

The face sources, the one shared x_T, the jaw-region inpainting, the feathered paste-back, faceless frames and
--length are DiffTalk's (inference/difftalk_pipeline.py). What differs:
  1. Stage A predicts the 29 lip and jaw landmarks of every output frame from the speech around it, the source
     frame's 39 context landmarks and K landmark sets of the source (`motion_track`); or `landmarks` (a file)
     gives them: control of the mouth by a landmark track instead of audio.
  2. The track is smoothed over time with a centred Gaussian (`smooth_track`: zero lag, the filter is
     symmetric), in each frame's pose-normalised frame; then its departure from the clip's mean mouth is
     multiplied by `motion_scale` (default the config's track.motion_scale; 1 = as predicted): a regression
     from audio draws its peak openings smaller than the real ones, and the gain undoes that
     (`scale_motion`; docs/RESULTS.md). A --landmarks file is used as given.
  3. The renderer draws frame i from the source frame's masked crop, the reference crop and the 68 landmarks
     (the source's context points, the track's motion points); the generated region is the convex hull of the
     source's jaw polygon and the track's motion points, so a mouth opening wider than the source's still fits.
  4. Mean-mouth guidance (`guidance` w, default the config's diffusion.guidance; 1 = off): every DDIM step also
     runs the renderer with the clip's mean mouth (`mean_mouth`: the track averaged over frames in the
     pose-normalised frame, put back in each frame's pose) in place of the frame's motion points, and takes
     eps = eps(mean) + w (eps(frame) - eps(mean)) -- classifier-free guidance whose unconditional branch is the
     average mouth, as DAE-Talker's mean-latent guidance (diffusion.paired_guided_eps_fn). It widens what the
     renderer draws where the track departs from the average (openings, closures); twice the UNet calls.
`info` adds the track (`motion`, (N, 29, 2) fractions of the crop), `guidance` and, against the source's own landmarks
(meaningful when the source is the clip that was spoken, as in evaluation): `lmd` (% of the side),
`opening_r` and `landmark_jitter_ratio` (mean frame-to-frame motion of the track / of the source's).

Landmark files (--landmarks): .npy of (N, 68, 2) or (N, 29, 2) points as fractions of the face crop's side
(x right, y down; the layout `data_prep.prepare` stores, divided by the crop size), or .npz with such an array
under 'landmarks'. A track shorter than the output holds its last frame; a longer one is cut.
"""

from __future__ import annotations

import dataclasses
import os

from flax import nnx
import jax
import numpy as np

from daetalker_jax.data import examples
from daetalker_jax.inference import difftalk_pipeline as dtp
from daetalker_jax.inference.errors import GenerateError
from daetalker_jax.inference.pipeline import check_guidance
from daetalker_jax.models import audio2landmarks as a2l


@dataclasses.dataclass(frozen=True)
class LandmarkOptions(dtp.DiffTalkOptions):
  """DiffTalkOptions, plus where the mouth's landmarks come from and how they are smoothed."""
  landmarks: str = ''          # a landmark track file that drives the mouth instead of the audio
  smooth: float = 0.5          # sigma (frames) of the zero-lag Gaussian over the landmark track; 0 = off
                               # (1.0 cut the demo track's peak openings by ~10%: docs/RESULTS.md)
  guidance: float | None = None  # mean-mouth guidance scale (module doc, 4.); None: the config's
                                 # diffusion.guidance (1 = off when the config has none)
  motion_scale: float | None = None  # gain on Stage A's departure from the mean mouth (module doc, 2.);
                                     # None: the config's track.motion_scale (1 when the config has none)


def smooth_track(points: np.ndarray, sigma: float) -> np.ndarray:
  """(N, P, 2) track smoothed over time by a centred Gaussian (edges reflected): no lag."""
  if sigma <= 0 or len(points) < 2:
    return points
  r = int(np.ceil(3 * sigma))
  k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
  k /= k.sum()
  padded = np.pad(points, ((r, r), (0, 0), (0, 0)), mode='reflect' if len(points) > r else 'edge')
  return np.stack([np.tensordot(k, padded[i:i + 2 * r + 1], axes=(0, 0)) for i in range(len(points))]
                  ).astype(np.float32)


def scale_motion(normed: np.ndarray, scale: float) -> np.ndarray:
  """(N, 29, 2) pose-normalised motion points with their departure from the mean over frames times `scale`."""
  if scale == 1.0:
    return normed
  mean = normed.mean(axis=0, keepdims=True)
  return (mean + scale * (normed - mean)).astype(np.float32)


def mean_mouth(track: np.ndarray, context: np.ndarray) -> np.ndarray:
  """The clip's average mouth in every frame's pose: `track` (N, 29, 2) motion points and `context` (N, 39, 2) the
  frames' context points (image fractions) -> (N, 29, 2), the mean over frames of the pose-normalised track put
  back in each frame's pose frame (the reference branch of mean-mouth guidance)."""
  frame = a2l.pose_frame(np.asarray(context, np.float32)[:, None])
  normed = np.asarray(a2l.normalise(np.asarray(track, np.float32)[:, None], frame))
  mean = np.broadcast_to(normed.mean(axis=0, keepdims=True), normed.shape)
  return np.asarray(a2l.to_image(mean, frame)[:, 0], np.float32)


def load_track(path: str, n: int) -> np.ndarray:
  """A landmark file (module doc) -> (n, 29, 2) motion points."""
  if not os.path.isfile(path):
    raise GenerateError(f'--landmarks={path}: no such file')
  try:
    data = np.load(path)
    if isinstance(data, np.lib.npyio.NpzFile):
      if 'landmarks' not in data:
        raise GenerateError(f'--landmarks={path}: an .npz needs an array named "landmarks" (has {list(data)})')
      data = data['landmarks']
  except (ValueError, OSError) as e:
    raise GenerateError(f'--landmarks={path}: not a .npy/.npz array ({e})') from None
  a = np.asarray(data, np.float32)
  if a.ndim != 3 or a.shape[1:] not in ((68, 2), (29, 2)) or not len(a):
    raise GenerateError(f'--landmarks={path}: expected (frames, 68, 2) or (frames, 29, 2), got {a.shape}')
  if not np.isfinite(a).all() or a.min() < -0.5 or a.max() > 1.5:
    raise GenerateError(f'--landmarks={path}: points must be finite fractions of the crop side (0..1), got '
                        f'values in [{np.nanmin(a):.2f}, {np.nanmax(a):.2f}]')
  if a.shape[1] == 68:
    a = a[:, a2l.MOTION_LANDMARKS]
  if len(a) < n:
    a = np.concatenate([a, np.repeat(a[-1:], n - len(a), 0)])
  return a[:n]


def track_scores(track: np.ndarray, truth: np.ndarray) -> dict[str, float]:
  """LMD (% of the side, mouth points), opening r, and landmark jitter ratio of `track` vs `truth` (N, 29, 2)."""
  from daetalker_jax.tasks import landmarks as landmarks_task  # pylint: disable=g-import-not-at-top
  m = landmarks_task.landmark_metrics(track, truth)
  motion = lambda a: np.linalg.norm(np.diff(a, axis=0), axis=-1).mean() if len(a) > 1 else np.nan
  real = motion(truth)
  return {'lmd': m['lmd'], 'opening_r': m['opening_r'],
          'landmark_jitter_ratio': float(motion(track) / real) if real > 0 else float('nan')}


class LandmarkPipeline(dtp.DiffTalkPipeline):
  """Landmark diffusion: speech + a face source → frames (module doc)."""
  method = 'landmark'
  tasks = ('talkformer',)

  def __init__(self, model: str, options: LandmarkOptions = LandmarkOptions()):
    if options.smooth < 0:
      raise GenerateError(f'--smooth={options.smooth}: must be >= 0')
    if options.landmarks and not os.path.isfile(options.landmarks):
      raise GenerateError(f'--landmarks={options.landmarks}: no such file')
    check_guidance(options.guidance)
    if options.motion_scale is not None and not 0.0 <= options.motion_scale <= 3.0:
      raise GenerateError(f'--motion-scale={options.motion_scale}: must be in [0, 3] (1 = as predicted)')
    super().__init__(model, options)
    track = self.config.get('track', {})
    self.motion_scale = float(track.get('motion_scale', 1.0) if options.motion_scale is None
                              else options.motion_scale)
    graphdef = nnx.graphdef(self.model.stage_a)
    self._stage_a_state = nnx.state(self.model.stage_a)
    self._stage_a = jax.jit(lambda state, a, c, r: nnx.merge(graphdef, state)(a, c, r))
    self.motion: np.ndarray | None = None
    self.neutral: np.ndarray | None = None     # the guidance branch's motion points (mean_mouth of the track)

  def _codec_options(self) -> dict:
    g = self.options.guidance
    self.guidance = float(self.config.diffusion.get('guidance', 1.0) if g is None else g)
    return dict(guidance=self.guidance, guide_keys=('landmarks',))

  @property
  def ref_landmarks(self) -> np.ndarray:
    return self.source.landmarks[self.reference_index]

  def motion_track(self, order: np.ndarray, feats: np.ndarray) -> np.ndarray:
    """Stage A's (N, 29, 2) motion points (fractions of the crop) for output frames from source frames `order`,
    smoothed over time and scaled by motion_scale (module doc)."""
    src, cfg = self.source, self.config.model.stage_a
    t, k = int(cfg.num_frames), int(cfg.num_refs)
    n = len(order)
    lm = np.where(src.valid[:, None, None], src.landmarks, self.ref_landmarks)      # faceless: the reference's
    faces = np.flatnonzero(src.valid)
    ref_sets = lm[faces[np.linspace(0, len(faces) - 1, k).round().astype(int)]]     # K sets spread over the source
    out = []
    for start in range(0, n, 64):
      ii = np.arange(start, min(start + 64, n))
      win = np.clip(ii[:, None] + np.arange(t) - t // 2, 0, n - 1)                 # (B, T) output frames
      audio = examples.audio_windows(feats, win.reshape(-1), num_frames=1, window=int(self.config.data.audio_window))
      audio = audio[:, 0].reshape(len(ii), t, *audio.shape[2:])
      context = lm[order[win]][:, :, examples.CONTEXT_LANDMARKS]
      pred = np.asarray(self._stage_a(self._stage_a_state, audio, context, np.repeat(ref_sets[None], len(ii), 0)))
      out.append(pred[:, t // 2])                                                   # the centre frame's
    normed = scale_motion(smooth_track(np.concatenate(out), self.options.smooth), self.motion_scale)
    centre_ctx = lm[order][:, examples.CONTEXT_LANDMARKS]
    return np.asarray(a2l.to_image(normed[:, None], a2l.pose_frame(centre_ctx[:, None]))[:, 0], np.float32)

  def _before_frames(self, order: np.ndarray, feats: np.ndarray, info: dict) -> None:
    """The motion track of the whole output (from the file, or Stage A), and its scores vs the source."""
    n = len(order)
    if self.options.landmarks:
      track = smooth_track(load_track(self.options.landmarks, n), self.options.smooth)
    else:
      track = self.motion_track(order, feats)
    self.motion = track
    ok = self.source.valid[order]
    lm = np.where(ok[:, None, None], self.source.landmarks[order], self.ref_landmarks)   # faceless: the reference's
    truth = lm[:, a2l.MOTION_LANDMARKS]
    if self.guidance != 1.0:
      self.neutral = mean_mouth(track, lm[:, examples.CONTEXT_LANDMARKS])
    info.update(motion=track, guidance=self.guidance,
                motion_scale=1.0 if self.options.landmarks else self.motion_scale,
                **(track_scores(track[ok], truth[ok]) if ok.sum() > 1 else {}))

  def _conditions(self, ii, jj, crops, feats):
    lm = self.source.landmarks[jj]
    motion = self.motion[ii]
    ex = {'masked': examples.mask_below(crops, lm[:, examples.NOSE_TIP, 1]),
          'reference': np.repeat(self.reference_float[None], len(jj), 0),
          'landmarks': np.asarray(a2l.join_68(lm[:, examples.CONTEXT_LANDMARKS], motion), np.float32),
          'ref_landmarks': np.repeat(self.ref_landmarks[None], len(jj), 0).astype(np.float32)}
    return ex, np.concatenate([lm[:, list(dtp.JAW_POLYGON)], motion], axis=1)

  def _guide(self, ii, jj):
    if self.neutral is None:
      return None
    context = self.source.landmarks[jj][:, examples.CONTEXT_LANDMARKS]
    return {'landmarks': np.asarray(a2l.join_68(context, self.neutral[ii]), np.float32)}
