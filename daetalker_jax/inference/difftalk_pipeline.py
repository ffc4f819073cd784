"""DiffTalk generation: speech + a face (video, photo or dataset clip) → the face speaking it.

  pipeline = DiffTalkPipeline(model='runs/difftalk', options=DiffTalkOptions(video='talk.mp4'))
  video = pipeline(speech)                    # Video(frames, num_frames, size, audio, info)

Per output frame i (N = round(samples / 640)), with source frame j(i):
  1. the source crop masked below the nose tip (landmark 30), its 39 context landmarks, the speech windows
     around frame i (data/examples.py), and one reference crop for the whole video (`reference`);
  2. the DiffTalk codec (inference/difftalk_codec.py) samples the latent from ONE x_T shared by every frame
     (the original draws fresh noise per frame, which flickers), inpainting by default: outside the jaw polygon
     (landmarks 2-14 and 33) the latent follows the source frame, so pose, upper face and background are the
     source's and only the jaw region is generated;
  3. a video or photo source gets the generated crop pasted back into its full frame with a feathered edge
     (inference/paste_back.py); a dataset clip's output is the crop itself (what evaluation scores).
Source frames without a face are passed through untouched and counted (`info['frames_without_face']`).
Audio longer than a video source: `length='loop'` plays the video forwards and backwards (no jump),
`length='trim'` cuts the audio to the video; shorter audio uses the first frames. A photo is every frame
(reference and target at once), so the head stays still.
"""

from __future__ import annotations

from collections.abc import Iterator
import dataclasses
import os

import cv2
import numpy as np

from daetalker_jax.data import audio as audio_lib
from daetalker_jax.data import contract
from daetalker_jax.data import examples
from daetalker_jax.data import speech
from daetalker_jax.inference import difftalk_codec
from daetalker_jax.inference import face_source
from daetalker_jax.inference import loading
from daetalker_jax.inference import paste_back
from daetalker_jax.inference.errors import GenerateError
from daetalker_jax.inference.pipeline import Video

JAW_POLYGON = tuple(range(2, 15)) + (33,)     # DiffTalk's inpainting region: the jaw line and the nose bottom
LENGTHS = ('loop', 'trim')


@dataclasses.dataclass(frozen=True)
class DiffTalkOptions:
  """Everything that changes a DiffTalk video besides the speech and the checkpoint."""
  video: str = ''              # source video to dub
  image: str = ''              # or one photo to animate
  clip: str = ''               # or a prepared dataset clip (needs data_dir): outputs are crops, for evaluation
  data_dir: str = ''
  steps: int = 50              # DDIM steps (DiffTalk: 200)
  seed: int = 0                # the shared x_T
  batch: int = 8               # frames per DDIM batch
  inpaint: bool = True         # generate only the jaw region (False: the whole latent, from the masked target)
  reference: int = -1          # source frame used as the reference (-1: the first frame with a face)
  length: str = 'loop'         # audio longer than the video: loop | trim
  detector: str = 'auto'       # face detector for video/photo sources (face_detect.make_detector)


def validate_options(o: DiffTalkOptions) -> None:
  given = [n for n, v in (('--video', o.video), ('--image', o.image), ('--clip', o.clip)) if v]
  if len(given) != 1:
    raise GenerateError('generation needs exactly one face source: --video, --image or --clip'
                        + (f' (got {", ".join(given)})' if given else ''))
  for flag, path in (('--video', o.video), ('--image', o.image)):
    if path and not os.path.isfile(path):
      raise GenerateError(f'{flag}={path}: no such file')
  if o.clip and not o.data_dir:
    raise GenerateError('--clip needs --data DATA_DIR (the prepared dataset)')
  if o.steps < 1 or o.steps > 1000:
    raise GenerateError(f'--steps={o.steps}: must be in 1..1000')
  if o.batch < 1:
    raise GenerateError(f'--batch={o.batch}: must be >= 1')
  if o.length not in LENGTHS:
    raise GenerateError(f'--length={o.length!r}: expected one of {", ".join(LENGTHS)}')


def jaw_keep_mask(points: np.ndarray, size: int) -> np.ndarray:
  """(S, S, 1) float32: 0 inside the convex hull of `points` (P, 2) as fractions of the side (DiffTalk: the
  landmarks of JAW_POLYGON), 1 elsewhere."""
  region = np.zeros((size, size), np.uint8)
  pts = np.round(np.asarray(points) * size).astype(np.int32)
  cv2.fillPoly(region, [cv2.convexHull(pts)], 1)
  return (1.0 - region.astype(np.float32))[..., None]


def feathered(keep: np.ndarray, width: float = 0.04) -> np.ndarray:
  """`keep` (S, S, 1) with its edge softened over ~`width` of the side (alpha for blending)."""
  size = keep.shape[0]
  sigma = max(0.5, width * size)
  return np.clip(cv2.GaussianBlur(keep[..., 0].astype(np.float32), (0, 0), sigma), 0, 1)[..., None]


def source_order(num_out: int, num_src: int) -> np.ndarray:
  """Source frame of each output frame: 0, 1, ..., M-1, M-2, ..., 1, 0, 1, ... (ping-pong)."""
  if num_src == 1:
    return np.zeros(num_out, int)
  period = 2 * num_src - 2
  k = np.arange(num_out) % period
  return np.where(k < num_src, k, period - k)


class DiffTalkPipeline:
  """DiffTalk: speech + a face source → frames (see the module doc)."""
  method = 'difftalk'
  tasks = ('difftalk',)          # the training tasks whose workdirs --model accepts

  def __init__(self, model: str, options: DiffTalkOptions = DiffTalkOptions()):
    validate_options(options)
    self.options = o = options
    net, self.config, _ = loading.load_checkpoint(model, '--model', self.tasks)
    self.model = net
    try:   # the speech front end the model was trained on (a wav2vec2/HuBERT folder must still be there)
      self.frontend = speech.for_config(self.config)
    except speech.FrontendError as e:
      raise GenerateError(f'--model {model}: {e}') from None
    self.codec = difftalk_codec.DiffTalkCodec(net, self.config, steps=o.steps, batch=o.batch,
                                              **self._codec_options())
    self.x_T = self.codec.seed_noise(o.seed)
    size = self.codec.image_size
    if o.video:
      source = face_source.from_video(o.video, size, detector=o.detector)
    elif o.image:
      source = face_source.from_image(o.image, size, detector=o.detector)
    else:
      source = face_source.from_dataset_clip(o.data_dir, o.clip, size)
    self.set_source(source)

  def set_source(self, source: face_source.FaceSource) -> None:
    """Animate another face with the same model and program (evaluation: one clip after another)."""
    o = self.options
    valid = np.flatnonzero(source.valid)
    ref = int(valid[0]) if o.reference < 0 else o.reference
    if not 0 <= ref < len(source) or not source.valid[ref]:
      raise GenerateError(f'--reference={o.reference}: not a source frame with a face '
                          f'(the source has {len(source)} frames)')
    h, w = source.frames.shape[1:3]
    if source.paste and (w % 2 or h % 2):
      raise GenerateError(f'{source.name}: frame size {w}x{h} is odd; h264/yuv420p needs even sizes')
    self.source, self.reference, self.reference_index, self.size = source, source.crops[ref], ref, (w, h)

  def num_compiles(self) -> int:
    return self.codec._sample._cache_size()  # pylint: disable=protected-access

  def __call__(self, speech: np.ndarray) -> Video:
    o, src = self.options, self.source
    n = contract.frames_for_samples(len(speech))
    if o.length == 'trim' and len(src) > 1 and n > len(src):
      n = len(src)
      speech = speech[:n * contract.SAMPLES_PER_FRAME]
    audio = audio_lib.fit_to_frames(speech, n)
    order = source_order(n, len(src))
    feats = examples.clip_features(audio, self.frontend)
    skipped = int((~src.valid[order]).sum())
    info = {'frames_without_face': skipped, 'source_frames': len(src), 'source_order': order}
    self._before_frames(order, feats, info)
    return Video(frames=self._frames(order, feats), num_frames=n, size=self.size, audio=speech, info=info)

  def _codec_options(self) -> dict:
    """A hook for method-specific DiffTalkCodec arguments (the landmark pipeline's guidance)."""
    return {}

  def _guide(self, ii: np.ndarray, jj: np.ndarray) -> dict[str, np.ndarray] | None:
    """A hook: the guidance branch's conditions for output frames `ii` from source frames `jj` (None: unguided)."""
    return None

  def _before_frames(self, order: np.ndarray, feats: np.ndarray, info: dict) -> None:
    """A hook for what a method computes over the whole output before drawing frames (landmark tracks)."""

  def _conditions(self, ii: np.ndarray, jj: np.ndarray, crops: np.ndarray, feats: np.ndarray
                  ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The codec's conditions for output frames `ii` from source frames `jj` (crops in [-1, 1]), and the points
    whose convex hull is generated when inpainting (B, P, 2)."""
    cfg, lm = self.config, self.source.landmarks[jj]
    ex = {'masked': examples.mask_below(crops, lm[:, examples.NOSE_TIP, 1]),
          'reference': np.repeat(self.reference_float[None], len(jj), 0),
          'audio': examples.audio_windows(feats, ii, num_frames=int(cfg.data.audio_frames),
                                          window=int(cfg.data.audio_window)),
          'landmarks': lm[:, examples.CONTEXT_LANDMARKS]}
    return ex, lm[:, list(JAW_POLYGON)]

  @property
  def reference_float(self) -> np.ndarray:
    return self.reference.astype(np.float32) / 127.5 - 1.0

  def _frames(self, order: np.ndarray, feats: np.ndarray) -> Iterator[np.ndarray]:
    o, src = self.options, self.source
    size = self.codec.image_size
    for start in range(0, len(order), self.codec.batch):
      idx = np.arange(start, min(start + self.codec.batch, len(order)))
      js = order[idx]
      out = [src.frames[j].copy() for j in js]
      use = [k for k, j in enumerate(js) if src.valid[j]]
      if use:
        jj, ii = js[use], idx[use]
        crops = src.crops[jj].astype(np.float32) / 127.5 - 1.0
        ex, region = self._conditions(ii, jj, crops, feats)
        if o.inpaint:
          keep = np.stack([jaw_keep_mask(p, size) for p in region])
          faces = self.codec.sample(ex, self.x_T, source=crops, keep=keep, guide=self._guide(ii, jj))
          # Outside the jaw the decode is the first stage's copy of the source: take the source's own pixels
          # there, with a feathered edge, so only the jaw region changes.
          alpha = np.stack([feathered(k) for k in keep])
          faces = np.round(src.crops[jj] * alpha + faces * (1 - alpha)).astype(np.uint8)
        else:
          faces = self.codec.sample(ex, self.x_T, guide=self._guide(ii, jj))
        for k, face, j in zip(use, faces, jj):
          out[k] = paste_back.paste_face(src.frames[j], face, src.boxes[j]) if src.paste else face
      yield np.stack(out)
