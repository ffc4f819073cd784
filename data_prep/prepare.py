"""Turns a folder of talking-face videos into the TFDS dataset the trainers read.

Run:
  python -m data_prep.prepare --src runs/synth_videos --out runs/data --size 128 --crop none
  python -m data_prep.prepare --src VIDEOS --out DATA --size 128 [--split-by identity] [--identity-from file]

For every video (mp4/mov/mkv/webm/avi, searched recursively) the frames are decoded as a stream at
25 fps with the audio at 16 kHz (`daetalker_jax.data.video_io`), each frame goes through a
*frame annotator* that chooses the crop box and may supply landmarks and head pose or drop the
frame, the crop is resized (cv2.INTER_AREA) and JPEG-encoded, and the stream is cut into clips of
at most `--max-clip-seconds` (a dropped frame also ends a clip). Every clip carries its source's
*identity* (the person): a synthface sidecar's `identity_name` when it has one (`--identities`), else,
with `--identity-from folder` (default), the first folder under --src on the source's path
(`SRC/SPEAKER/.../x.mp4` -> SPEAKER; a video directly in --src takes the --src folder's own name, so a flat
folder is one person), or with `--identity-from file` the source's path under --src without suffix
(`a/b.mp4` -> `a__b`, the clip-id prefix). Clips are split train/val/test deterministically from `--seed`:
`--split-by clip` (default) draws clips, `--split-by identity` draws whole identities (the fractions are
then of identities, and val and test get at least one each when their fraction is above 0), so no
val or test person appears in train. The output folder holds the TFDS dataset plus
`manifest.json` (per source: frames kept/dropped and why, clips, identity, crop; for synthface identities their
true skin, hair and lip colours, `identity_colours`) and `report.json` (fps,
duration, face coverage, pose range, audio level, identities per split). Audio that ends before the video is padded
with silence to frames x 640 samples (a longer one is cut), with a warning on stderr and an
`audio_warning` in the manifest.

Annotators (`--crop`; without it each source gets `none` when it has a synthface sidecar `<stem>.json`,
else `auto`; the choice is recorded per source in the manifest):
  none            the whole frame (its centred square when not square); pose and 68 landmarks from
                  the sidecar `<stem>.json` (synthface format) when present, else zero pose and no
                  landmarks.
  face[:MARGIN]   synthface only: one square box per clip around the sidecar landmarks of all its frames,
                  grown by MARGIN (default 0.05) of its side on each side; pose and landmarks as `none`.
  box:x0,y0,x1,y1 a fixed box in source pixels (made square around its centre).
  auto            face detection + landmarks + pose, registered by `data_prep.face`.
Other modules add annotators with the `data_prep.annotators.register(name)` decorator.

The build happens in `.OUT.tmp-XXXX` (`daetalker_jax.atomic.temp_dir`), renamed to OUT only when
complete; on any failure the temporary folder is removed, so a crash never leaves a dataset that looks
complete. A bad video is skipped with a one-line message naming it (or is fatal with `--strict`); no usable video at all
is fatal. A video without a face anywhere is such a bad video (`<file>: no usable face in any of N frames (...)`;
when `auto` was the default, the line says so and how to keep whole frames instead). The CLI prints one line
and exits non-zero on fatal problems.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import math
import os
import pathlib
import sys
import time
import types
from collections.abc import Sequence

import cv2
import numpy as np
import tqdm

from daetalker_jax import atomic
from daetalker_jax.data import contract
from daetalker_jax.data import video_io
from daetalker_jax.data.contract import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from data_prep import annotators
from data_prep import report as report_lib
from data_prep.annotators import Annotation, FrameAnnotator

VIDEO_EXTENSIONS = ('.mp4', '.mov', '.mkv', '.webm', '.avi')
NUM_LANDMARKS = 68
SPLIT_BY = ('clip', 'identity')
IDENTITY_FROM = ('folder', 'file')


class PrepareError(RuntimeError):
  """A fatal problem; the message is one line meant for the user."""


# ---------------------------------------------------------------------------------------------
# Frame annotators: the pluggable crop / landmarks / pose step (registry: data_prep.annotators).
# ---------------------------------------------------------------------------------------------


def make_annotator(crop: str, size: int) -> FrameAnnotator:
  """The annotator `--crop NAME[:ARG]` names, built for crops of `size` pixels."""
  name, _, arg = crop.partition(':')
  try:
    return annotators.get(name)(arg, size)
  except annotators.AnnotatorError as e:
    raise PrepareError(f'--crop {crop}: {e}') from None


def has_sidecar(path: pathlib.Path) -> bool:
  """Whether a video has a synthface sidecar `<stem>.json` beside it."""
  return pathlib.Path(path).with_suffix('.json').is_file()


def resolve_crop(crop: str | None, path: pathlib.Path) -> str:
  """The `--crop` a source gets: `crop` when given, else 'none' with a synthface sidecar and 'auto' without."""
  if crop is not None:
    return crop
  return 'none' if has_sidecar(path) else 'auto'


def _sidecar_identity(path: pathlib.Path) -> str | None:
  """The identity named by a synthface sidecar (`synthface --identities`), or None (no sidecar, or no identity)."""
  side = pathlib.Path(path).with_suffix('.json')
  if not side.is_file():
    return None
  try:
    data = json.loads(side.read_text())
    if not isinstance(data, dict) or data.get('identity') is None:
      return None
    return str(data.get('identity_name') or f'synth_s{int(data.get("seed", 0))}_id{int(data["identity"]):03d}')
  except (OSError, ValueError, TypeError):
    return None  # a broken sidecar is reported by the annotator that reads it


GROUND_TRUTH_COLOURS = ('skin', 'hair', 'lips')   # synthface palette entries kept for identity evaluation


def sidecar_colours(path: pathlib.Path) -> dict[str, list[int]] | None:
  """A synthface identity's true skin, hair and lip colours (RGB) from its sidecar's `identity_params`, or None
  (no sidecar, or the default look): the ground truth of evaluation/generic.py's identity metrics."""
  side = pathlib.Path(path).with_suffix('.json')
  try:
    palette = json.loads(side.read_text())['identity_params']['palette']
    return {k: [int(v) for v in palette[k]] for k in GROUND_TRUTH_COLOURS}
  except (OSError, ValueError, TypeError, KeyError):
    return None


def source_identity(src: pathlib.Path, path: pathlib.Path, identity_from: str = 'folder') -> str:
  """The identity (person) of a source video; see the module docstring."""
  if identity_from not in IDENTITY_FROM:
    raise PrepareError(f'--identity-from {identity_from}: choose from {", ".join(IDENTITY_FROM)}')
  named = _sidecar_identity(path)
  if named is not None:
    return named
  if identity_from == 'file':
    return clip_stem(src, path)
  parts = path.relative_to(src).parts
  return parts[0] if len(parts) > 1 else pathlib.Path(src).resolve().name


def square_box(x0: float, y0: float, x1: float, y1: float) -> tuple[float, float, float, float]:
  """The square with the same centre whose side is the larger side of the box."""
  cx, cy, side = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0)
  return (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)


def _read_sidecar(path: pathlib.Path) -> tuple[np.ndarray, np.ndarray | None, int | None]:
  """A synthface sidecar's (pose (N, 3), landmarks (N, 68, 2) in its own pixels or None, its frame size)."""
  try:
    side = json.loads(path.read_text())
    frames = side['frames']
    pose = np.stack([np.asarray(frames[k], np.float32) for k in ('yaw', 'pitch', 'roll')], -1)
    landmarks = np.asarray(frames['landmarks'], np.float32) if 'landmarks' in frames else None
    size = int(side['size']) if 'size' in side else None
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise video_io.VideoError(f'{path}: bad sidecar ({type(e).__name__}: {e})') from None
  if pose.ndim != 2 or not np.all(np.isfinite(pose)):
    raise video_io.VideoError(f'{path}: bad sidecar (yaw/pitch/roll must be equal-length finite lists)')
  if landmarks is not None and (landmarks.shape != (len(pose), NUM_LANDMARKS, 2) or size is None or
                                not np.all(np.isfinite(landmarks))):
    raise video_io.VideoError(f'{path}: bad sidecar (landmarks must be finite ({len(pose)}, 68, 2) '
                              f'with the clip size, got {landmarks.shape})')
  return pose, landmarks, size


@annotators.register('none')
class WholeFrameAnnotator(FrameAnnotator):
  """crop=none: whole (square) frame; pose and landmarks from the synthface sidecar when there is one."""

  def __init__(self, arg: str, size: int):
    del size
    if arg:
      raise PrepareError(f'--crop none takes no argument, got {arg!r}')
    self._pose = self._landmarks = None
    self._box = None
    self._beyond = 0

  def begin(self, source: pathlib.Path, info: video_io.VideoInfo) -> None:
    side = source.with_suffix('.json')
    self._pose, self._landmarks = None, None
    if side.is_file():
      self._pose, landmarks, side_size = _read_sidecar(side)
      if landmarks is not None:  # sidecar pixels → this video's pixels (a re-encode may have resized it)
        self._landmarks = landmarks * np.array([info.width, info.height], np.float32) / side_size
    self._beyond = 0
    self._expected = info.expected_frames
    w, h = info.width, info.height
    s = min(w, h)  # centred square: a face must not be squashed when the video is not square
    x0, y0 = (w - s) / 2, (h - s) / 2
    self._box = (x0, y0, x0 + s, y0 + s)

  def annotate_frame(self, frame: np.ndarray, index: int) -> Annotation:
    pose = landmarks = None
    if self._pose is not None:
      if index >= len(self._pose):
        self._beyond += 1
      pose = self._pose[min(index, len(self._pose) - 1)]
      if self._landmarks is not None and index < len(self._landmarks):
        landmarks = self._landmarks[index]
    return Annotation(box=self._box, pose=pose, landmarks=landmarks)

  def end(self) -> dict:
    notes = {'pose_source': 'sidecar' if self._pose is not None else 'none (zeros)',
             'landmarks_source': 'sidecar' if self._landmarks is not None else 'none'}
    if self._pose is not None:
      notes['sidecar_frames'] = int(len(self._pose))
      if self._beyond:
        notes['warning'] = f'{self._beyond} frames past the sidecar end reuse its last pose'
    return notes


@annotators.register('box')
class FixedBoxAnnotator(FrameAnnotator):
  """crop=box:x0,y0,x1,y1: the same box (source pixels) for every frame, no pose/landmarks."""

  def __init__(self, arg: str, size: int):
    del size
    try:
      x0, y0, x1, y1 = (float(v) for v in arg.split(','))
    except ValueError:
      raise PrepareError(f'--crop box:{arg}: expected box:x0,y0,x1,y1 (4 numbers)') from None
    if not (x1 > x0 and y1 > y0):
      raise PrepareError(f'--crop box:{arg}: need x1 > x0 and y1 > y0')
    self._box = square_box(x0, y0, x1, y1)

  def begin(self, source: pathlib.Path, info: video_io.VideoInfo) -> None:
    x0, y0, x1, y1 = self._box
    if x1 <= 0 or y1 <= 0 or x0 >= info.width or y0 >= info.height:
      raise video_io.VideoError(f'{source}: crop box {self._box} lies outside the '
                                f'{info.width}x{info.height} frame')

  def annotate_frame(self, frame: np.ndarray, index: int) -> Annotation:
    return Annotation(box=self._box)


@annotators.register('face')
class SidecarFaceAnnotator(WholeFrameAnnotator):
  """crop=face[:MARGIN]: one square box per clip around every frame's sidecar landmarks, grown by MARGIN
  (default 0.05) of its side on each side; pose and landmarks from the sidecar. The face fills more of the
  crop than with `none` (the mouth covers more pixels), and the head still moves inside it."""

  def __init__(self, arg: str, size: int):
    super().__init__('', size)
    try:
      self._margin = float(arg) if arg else 0.05
    except ValueError:
      raise PrepareError(f'--crop face:{arg}: expected face or face:MARGIN (a number, e.g. 0.05)') from None
    if not 0 <= self._margin <= 2:
      raise PrepareError(f'--crop face:{arg}: the margin must be in [0, 2]')

  def begin(self, source: pathlib.Path, info: video_io.VideoInfo) -> None:
    super().begin(source, info)
    if self._landmarks is None:
      raise video_io.VideoError(f'{source}: --crop face needs a sidecar {source.with_suffix(".json").name} '
                                'with landmarks (synthface); use --crop auto for other videos')
    lo, hi = self._landmarks.reshape(-1, 2).min(0), self._landmarks.reshape(-1, 2).max(0)
    side = min(float((hi - lo).max()) * (1 + 2 * self._margin), float(min(info.width, info.height)))
    x0, y0 = (lo + hi) / 2 - side / 2
    x0 = min(max(x0, 0.0), info.width - side)        # slid inside the frame: no black border
    y0 = min(max(y0, 0.0), info.height - side)
    self._box = (x0, y0, x0 + side, y0 + side)


def crop_and_resize(frame: np.ndarray, box: Sequence[float], size: int) -> np.ndarray:
  """uint8 (H, W, 3) → uint8 (size, size, 3); parts of the box outside the frame are black."""
  h, w = frame.shape[:2]
  x0, y0, x1, y1 = (int(round(v)) for v in box)
  pad = max(0, -x0, -y0, x1 - w, y1 - h)
  if pad:
    frame = cv2.copyMakeBorder(frame, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(0, 0, 0))
  crop = frame[y0 + pad:y1 + pad, x0 + pad:x1 + pad]
  if crop.shape[:2] == (size, size):
    return np.ascontiguousarray(crop)
  interp = cv2.INTER_AREA if crop.shape[0] >= size else cv2.INTER_LINEAR
  return cv2.resize(crop, (size, size), interpolation=interp)


# ---------------------------------------------------------------------------------------------
# Splits.
# ---------------------------------------------------------------------------------------------


def assign_splits(clip_ids: Sequence[str], val_fraction: float, test_fraction: float,
                  seed: int) -> dict[str, str]:
  """Deterministic split by clip: a seeded permutation of the sorted ids.

  With 3 or more clips, val and test get at least one clip each (when their fraction is > 0) and
  train keeps at least one; 2 clips give one train and one val clip, 1 clip is train.
  """
  ids = sorted(set(clip_ids))
  n = len(ids)
  order = [ids[i] for i in np.random.default_rng(seed).permutation(n)]
  n_val = int(round(val_fraction * n))
  n_test = int(round(test_fraction * n))
  if n >= 2:  # evaluation hooks need a val clip as soon as one can be spared
    n_val = max(n_val, 1 if val_fraction > 0 else 0)
  if n >= 3:
    n_test = max(n_test, 1 if test_fraction > 0 else 0)
  while n_val + n_test > n - 1 and n > 0:  # train keeps at least one clip
    if n_test >= n_val and n_test > 0:
      n_test -= 1
    else:
      n_val -= 1
  out = {}
  for i, cid in enumerate(order):
    out[cid] = 'val' if i < n_val else 'test' if i < n_val + n_test else 'train'
  return out


def _split_counts(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
  """(val, test) identity counts: rounded fractions of n, at least one each when the fraction is > 0, and
  at most n - 1 together (needs n >= 1 + the minimums: `check_identity_split`)."""
  min_val, min_test = int(val_fraction > 0), int(test_fraction > 0)
  n_val = max(int(round(val_fraction * n)), min_val)
  n_test = max(int(round(test_fraction * n)), min_test)
  while n_val + n_test > n - 1:  # train keeps at least one identity
    if n_test > min_test and (n_test >= n_val or n_val <= min_val):
      n_test -= 1
    else:
      n_val -= 1
  return n_val, n_test


def check_identity_split(identities: Sequence[str], val_fraction: float, test_fraction: float) -> None:
  """Raises PrepareError when `--split-by identity` cannot give train, val and test their own identities."""
  ids = sorted(set(identities))
  need = 1 + (val_fraction > 0) + (test_fraction > 0)
  if len(ids) < need:
    splits = 'train' + (', val' if val_fraction > 0 else '') + (' and test' if test_fraction > 0 else '')
    shown = ', '.join(ids[:5]) + (', ...' if len(ids) > 5 else '')
    raise PrepareError(f'--split-by identity: {len(ids)} identit{"y" if len(ids) == 1 else "ies"} ({shown}) cannot '
                       f'fill {splits}; need at least {need} (add people, set --val-fraction/--test-fraction '
                       'to 0, or use --split-by clip)')


def assign_identity_splits(clip_identity: dict[str, str], val_fraction: float, test_fraction: float,
                           seed: int) -> dict[str, str]:
  """Deterministic split by identity: a seeded permutation of the sorted identities, then every clip follows
  its identity. Val and test get at least one identity each when their fraction is > 0, train keeps at least
  one; too few identities for that is a PrepareError."""
  check_identity_split(list(clip_identity.values()), val_fraction, test_fraction)
  ids = sorted(set(clip_identity.values()))
  n_val, n_test = _split_counts(len(ids), val_fraction, test_fraction)
  order = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
  split_of = {ident: 'val' if i < n_val else 'test' if i < n_val + n_test else 'train'
              for i, ident in enumerate(order)}
  return {cid: split_of[ident] for cid, ident in clip_identity.items()}


# ---------------------------------------------------------------------------------------------
# Per-source processing.
# ---------------------------------------------------------------------------------------------


def find_videos(src: pathlib.Path) -> list[pathlib.Path]:
  if not src.is_dir():
    raise PrepareError(f'--src {src}: not a directory')
  return sorted(p for p in src.rglob('*') if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)


def clip_stem(src: pathlib.Path, path: pathlib.Path) -> str:
  """Unique readable id prefix: the relative path without suffix, '/' → '__'."""
  return '__'.join(path.relative_to(src).with_suffix('').parts)


@dataclasses.dataclass
class _ClipBuffer:
  start: int
  images: list = dataclasses.field(default_factory=list)
  poses: list = dataclasses.field(default_factory=list)
  landmarks: list = dataclasses.field(default_factory=list)
  valid: list = dataclasses.field(default_factory=list)
  boxes: list = dataclasses.field(default_factory=list)


class _SourceStats:
  def __init__(self):
    self.decoded = 0
    self.kept = 0
    self.dropped: collections.Counter = collections.Counter()
    self.clips: list[dict] = []
    self.poses: list[np.ndarray] = []
    self.landmark_frames = 0


def process_source(path: pathlib.Path, stem: str, annotator: FrameAnnotator, stage, *,
                   size: int, max_clip_frames: int, min_clip_frames: int,
                   jpeg_quality: int, identity: str = '') -> dict:
  """Decodes, annotates, crops and stages one video (its clips carry `identity`); returns its manifest entry.

  Raises video_io.VideoError for an unusable file (the caller discards what was staged).
  """
  video = video_io.read_video(path, require_audio=True)
  info = video.info
  annotator.begin(path, info)
  stats = _SourceStats()
  validation = report_lib.SourceStats(str(path), fps_found=info.fps, duration=info.duration)
  validation.add_audio(video.audio_for(info.expected_frames))
  encode = [int(cv2.IMWRITE_JPEG_QUALITY), int(jpeg_quality)]

  def flush(buf: _ClipBuffer | None) -> None:
    if buf is None or not buf.images:
      return
    n = len(buf.images)
    if n < min_clip_frames:
      stats.dropped['short_clip'] += n
      stats.kept -= n
      return
    audio = video.audio_for(buf.start + n)[buf.start * SAMPLES_PER_FRAME:]
    clip_id = f'{stem}_{len(stats.clips):03d}'
    stage.add_clip(dict(
        clip_id=clip_id, source=str(path), identity=identity, start_frame=buf.start, fps=FPS,
        sample_rate=SAMPLE_RATE,
        num_frames=n, num_audio_samples=n * SAMPLES_PER_FRAME, audio=contract.float_to_int16(audio),
        frames=dict(image=buf.images, pose=np.stack(buf.poses), landmarks=np.stack(buf.landmarks),
                    landmarks_valid=np.asarray(buf.valid, np.bool_), box=np.stack(buf.boxes))))
    stats.clips.append(dict(clip_id=clip_id, start_frame=buf.start, num_frames=n, identity=identity))

  buf: _ClipBuffer | None = None
  bar = tqdm.tqdm(total=info.expected_frames, desc=stem[-30:], unit='frame', leave=False,
                  disable=None, file=sys.stderr)
  try:
    for index, (frame, ann) in enumerate(annotator.annotate(video.frames)):
      stats.decoded += 1
      bar.update(1)
      validation.add_annotation(types.SimpleNamespace(drop_reason=ann.drop, box=ann.box, pose=ann.pose))
      if ann.drop is not None:
        stats.dropped[ann.drop] += 1
        flush(buf)
        buf = None
        continue
      if buf is None or len(buf.images) >= max_clip_frames:
        flush(buf)
        buf = _ClipBuffer(start=index)
      box = ann.box or (0.0, 0.0, float(frame.shape[1]), float(frame.shape[0]))
      box = square_box(*box)
      crop = crop_and_resize(frame, box, size)
      ok, jpeg = cv2.imencode('.jpg', cv2.cvtColor(crop, cv2.COLOR_RGB2BGR), encode)
      if not ok:
        raise video_io.VideoError(f'{path}: JPEG encoding failed at frame {index}')
      scale = size / (box[2] - box[0])
      if ann.landmarks is not None:
        lm = (np.asarray(ann.landmarks, np.float32).reshape(NUM_LANDMARKS, 2)
              - np.array(box[:2], np.float32)) * scale
        stats.landmark_frames += 1
      else:
        lm = np.zeros((NUM_LANDMARKS, 2), np.float32)
      pose = np.zeros(3, np.float32) if ann.pose is None else np.asarray(ann.pose, np.float32).reshape(3)
      buf.images.append(jpeg.tobytes())
      buf.poses.append(pose)
      buf.landmarks.append(lm)
      buf.valid.append(ann.landmarks is not None)
      buf.boxes.append(np.asarray(box, np.float32))
      stats.poses.append(pose)
      stats.kept += 1
    flush(buf)
  finally:
    bar.close()
  notes = annotator.end()
  # Audio that stops before the last frame is padded with silence (audio_for): say so, since those
  # frames then teach the models a silent mouth.
  audio_end = video.raw_audio.size / SAMPLE_RATE - (info.video_start - info.audio_start)
  missing = stats.decoded / FPS - audio_end
  if missing > 1.0 / FPS:
    notes['audio_warning'] = f'audio ends {missing:.2f}s before the video; padded with silence'
    validation.warnings.append(notes['audio_warning'])
    _log(f'prepare: {path}: {notes["audio_warning"]}')
  audio_rms = float(np.sqrt(np.mean(np.square(video.raw_audio)))) if video.raw_audio.size else 0.0
  return dict(
      source=str(path), status='ok', identity=identity, native_fps=round(info.fps, 3), width=info.width,
      height=info.height, duration=round(info.duration, 3),
      audio_seconds=round(video.raw_audio.size / SAMPLE_RATE, 3),
      audio_rms_dbfs=round(20 * math.log10(max(audio_rms, 1e-9)), 1),
      frames_decoded=stats.decoded, frames_kept=stats.kept,
      frames_dropped=dict(stats.dropped), landmark_frames=stats.landmark_frames,
      pose_min=np.min(stats.poses, 0).round(2).tolist() if stats.poses else None,
      pose_max=np.max(stats.poses, 0).round(2).tolist() if stats.poses else None,
      clips=stats.clips, validation=validation.summary(), **notes)


# ---------------------------------------------------------------------------------------------
# The whole build.
# ---------------------------------------------------------------------------------------------


def _log(msg: str) -> None:
  print(msg, file=sys.stderr, flush=True)


def _no_face(e: BaseException) -> bool:
  """Whether a VideoError came from `--crop auto` finding no face anywhere in the source."""
  face = sys.modules.get('data_prep.face')  # imported when the 'auto' annotator was built
  return face is not None and isinstance(e.__context__, face.NoFaceError)


def prepare(src: str | os.PathLike[str], out: str | os.PathLike[str], *, size: int = 128,
            crop: str | None = None, val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0,
            max_clip_seconds: float = 20.0, min_clip_frames: int = 5, jpeg_quality: int = 95,
            overwrite: bool = False, strict: bool = False, split_by: str = 'clip',
            identity_from: str = 'folder') -> dict:
  """Builds the dataset folder `out` from the videos under `src`; returns the report dict.

  crop None resolves per source (`resolve_crop`): 'none' for synthface videos (sidecar), 'auto' for others.
  """
  src, out = pathlib.Path(src), pathlib.Path(out)
  if not 8 <= size <= 1024:
    raise PrepareError(f'--size {size}: expected 8..1024 pixels')
  if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
    raise PrepareError(f'--val-fraction {val_fraction} / --test-fraction {test_fraction}: '
                       'need each in [0, 1) and a sum below 1')
  if max_clip_seconds * FPS < 1:
    raise PrepareError(f'--max-clip-seconds {max_clip_seconds}: shorter than one frame')
  if not 1 <= jpeg_quality <= 100:
    raise PrepareError(f'--jpeg-quality {jpeg_quality}: expected 1..100')
  if split_by not in SPLIT_BY:
    raise PrepareError(f'--split-by {split_by}: choose from {", ".join(SPLIT_BY)}')
  if identity_from not in IDENTITY_FROM:
    raise PrepareError(f'--identity-from {identity_from}: choose from {", ".join(IDENTITY_FROM)}')
  if out.exists() and not overwrite:
    raise PrepareError(f'--out {out} already exists (pass --overwrite to replace it)')
  videos = find_videos(src)
  if not videos:
    raise PrepareError(f'--src {src}: no video files ({"/".join(VIDEO_EXTENSIONS)})')
  identities = {path: source_identity(src, path, identity_from) for path in videos}
  if split_by == 'identity':  # before any decoding; checked again on the videos that turn out usable
    check_identity_split(list(identities.values()), val_fraction, test_fraction)
  # One annotator per --crop name, built up front when given (a bad --crop fails at once), else on first use.
  annotators_by_crop = {} if crop is None else {crop: make_annotator(crop, size)}
  max_clip_frames = max(1, int(round(max_clip_seconds * FPS)))

  def annotator_for(path: pathlib.Path) -> tuple[str, FrameAnnotator]:
    name = resolve_crop(crop, path)
    if name not in annotators_by_crop:
      try:
        annotators_by_crop[name] = make_annotator(name, size)
      except PrepareError as e:
        raise PrepareError(f'{e} (the default --crop for {path.name}, which has no synthface sidecar; '
                           'pass --crop explicitly)') from None
    return name, annotators_by_crop[name]

  # Deferred import: TensorFlow is slow to load and the argument checks above should be instant.
  from data_prep import tfds_writer  # pylint: disable=g-import-not-at-top

  t0 = time.time()
  # Built in a temporary sibling that replaces `out` (and an old dataset, with --overwrite) only when complete.
  with atomic.temp_dir(out) as tmp:
    writer = tfds_writer.DatasetWriter(tmp, size)
    sources, skipped = [], []
    for path in tqdm.tqdm(videos, desc='videos', unit='video', disable=None, file=sys.stderr):
      crop_name, annotator = annotator_for(path)
      stage = writer.stage()
      try:
        entry = process_source(path, clip_stem(src, path), annotator, stage, size=size,
                               max_clip_frames=max_clip_frames, min_clip_frames=min_clip_frames,
                               jpeg_quality=jpeg_quality, identity=identities[path])
      except video_io.VideoError as e:
        stage.discard()
        reason = str(e)
        if crop is None and crop_name == 'auto' and _no_face(e):
          reason += (' [--crop auto is the default for videos without a synthface sidecar; '
                     '--crop none keeps whole frames]')
        if strict:
          raise PrepareError(reason) from None
        _log(f'prepare: skipping {reason}')
        skipped.append(dict(source=str(path), status='skipped', crop=crop_name, identity=identities[path],
                            reason=reason))
        continue
      stage.commit()
      entry['crop'] = crop_name
      if not entry['clips']:
        _log(f'prepare: skipping {path}: no clip of at least {min_clip_frames} frames '
             f'(dropped: {entry["frames_dropped"]})')
      sources.append(entry)
    clip_frames = {c.clip_id: c.num_frames for c in writer.clips}
    if not clip_frames:
      first = skipped[0]['reason'] if skipped else 'no frames kept'
      raise PrepareError(f'no usable video in {src} ({len(videos)} file(s); first problem: {first})')
    clip_identity = {c['clip_id']: e['identity'] for e in sources for c in e['clips']}
    if split_by == 'identity':
      assignment = assign_identity_splits(clip_identity, val_fraction, test_fraction, seed)
    else:
      assignment = assign_splits(list(clip_frames), val_fraction, test_fraction, seed)
    split_summary = {s: dict(clips=0, frames=0) for s in tfds_writer.SPLITS}
    split_identities = {s: set() for s in tfds_writer.SPLITS}
    for cid, split in assignment.items():
      split_summary[split]['clips'] += 1
      split_summary[split]['frames'] += clip_frames[cid]
      split_identities[split].add(clip_identity[cid])
    split_identities = {s: sorted(v) for s, v in split_identities.items()}
    for entry in sources:
      for c in entry['clips']:
        c['split'] = assignment[c['clip_id']]
    used_crops = sorted({e['crop'] for e in sources if e['clips']})
    crop_used = used_crops[0] if len(used_crops) == 1 else 'mixed'  # what evaluation reads (dataset_info)
    metadata = dict(image_size=size, fps=FPS, sample_rate=SAMPLE_RATE, crop=crop_used,
                    splits=split_summary, seed=seed, max_clip_seconds=max_clip_seconds,
                    split_by=split_by, identities=split_identities)
    writer.finalize(assignment, metadata)

    kept = sum(e['frames_kept'] for e in sources)
    decoded = sum(e['frames_decoded'] for e in sources)
    dropped = collections.Counter()
    for e in sources:
      dropped.update(e['frames_dropped'])
    poses = [(e['pose_min'], e['pose_max']) for e in sources if e['pose_min'] is not None]
    report = dict(
        src=str(src), out=str(out), image_size=size, crop=crop_used, fps=FPS, sample_rate=SAMPLE_RATE,
        videos_found=len(videos), videos_used=len(sources), videos_skipped=len(skipped),
        clips=len(clip_frames), frames_decoded=decoded, frames_kept=kept,
        frames_dropped=dict(dropped), face_coverage=round(kept / max(decoded, 1), 4),
        landmark_coverage=round(sum(e['landmark_frames'] for e in sources) / max(kept, 1), 4),
        hours=round(kept / FPS / 3600, 4),
        source_fps=sorted({e['native_fps'] for e in sources}),
        source_duration_s=dict(min=min(e['duration'] for e in sources),
                               max=max(e['duration'] for e in sources)) if sources else None,
        pose_min=np.min([p[0] for p in poses], 0).tolist() if poses else None,
        pose_max=np.max([p[1] for p in poses], 0).tolist() if poses else None,
        audio_rms_dbfs=dict(min=min(e['audio_rms_dbfs'] for e in sources),
                            max=max(e['audio_rms_dbfs'] for e in sources)) if sources else None,
        splits=split_summary, split_by=split_by, identities=split_identities,
        seconds=round(time.time() - t0, 1))
    # The footage checks (coverage, face size, pose, silence, clipping, fps) with their warnings.
    validation = report_lib.build_report([e.pop('validation') for e in sources], target_size=size)
    report['validation'] = validation.to_dict()
    manifest = dict(settings=dict(src=str(src), size=size, crop='default' if crop is None else crop,
                                  val_fraction=val_fraction, test_fraction=test_fraction, seed=seed,
                                  split_by=split_by, identity_from=identity_from,
                                  max_clip_seconds=max_clip_seconds, min_clip_frames=min_clip_frames,
                                  jpeg_quality=jpeg_quality),
                    identities=split_identities, sources=sources + skipped)
    colours = {e['identity']: sidecar_colours(pathlib.Path(e['source'])) for e in sources}
    if any(colours.values()):   # synthface identities: their true colours (evaluation/generic.py)
      manifest['identity_colours'] = {k: v for k, v in sorted(colours.items()) if v}
    (tmp / 'manifest.json').write_text(json.dumps(manifest, indent=1))
    (tmp / 'report.json').write_text(json.dumps(report, indent=1))
  return report


def print_summary(report: dict) -> None:
  s = report['splits']
  lines = [
      f'prepared {report["out"]}: {report["clips"]} clips from {report["videos_used"]} of '
      f'{report["videos_found"]} videos ({report["videos_skipped"]} skipped), '
      f'{report["frames_kept"]} frames kept of {report["frames_decoded"]} '
      f'({100 * report["face_coverage"]:.1f}%), {report["hours"] * 60:.1f} min at {FPS} fps, '
      f'{report["image_size"]}px crops ({report["crop"]})',
      '  splits: ' + ', '.join(f'{k} {v["clips"]} clips / {v["frames"]} frames' for k, v in s.items()),
  ]
  ids = report.get('identities')
  if ids:
    show = lambda v: ', '.join(v[:6]) + (f', ... ({len(v)})' if len(v) > 6 else '')
    lines.append(f'  identities (split by {report.get("split_by", "clip")}): '
                 + '; '.join(f'{k} {show(v)}' for k, v in ids.items() if v))
  if report['frames_dropped']:
    lines.append(f'  dropped frames: {report["frames_dropped"]}')
  if report['pose_min'] is not None:
    lines.append('  pose range (yaw, pitch, roll deg): '
                 f'{[round(v, 1) for v in report["pose_min"]]} .. {[round(v, 1) for v in report["pose_max"]]}')
  if report['audio_rms_dbfs']:
    a = report['audio_rms_dbfs']
    lines.append(f'  audio RMS: {a["min"]} .. {a["max"]} dBFS; took {report["seconds"]} s')
  print('\n'.join(lines))
  v = report.get('validation')
  if v:
    report_lib.ValidationReport(sources=v['sources'], totals=v['totals'],
                                warnings=v['warnings']).print_report()


def main(argv: Sequence[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog='python -m data_prep.prepare', description=__doc__.split('\n')[0])
  p.add_argument('--src', required=True, help='folder of videos (searched recursively)')
  p.add_argument('--out', required=True, help='dataset folder to create')
  p.add_argument('--size', type=int, default=128, help='square crop size in pixels')
  p.add_argument('--crop', default=None,
                 help='none | face[:MARGIN] (synthface) | box:x0,y0,x1,y1 | auto[:dlib|haar] '
                      '(default: none for videos with a synthface sidecar, auto for the others)')
  p.add_argument('--val-fraction', type=float, default=0.1, help='fraction of clips (identities) for val')
  p.add_argument('--test-fraction', type=float, default=0.1, help='fraction of clips (identities) for test')
  p.add_argument('--seed', type=int, default=0, help='seed of the split')
  p.add_argument('--split-by', choices=SPLIT_BY, default='clip',
                 help='clip: clips drawn at random; identity: whole identities, so no val/test person is in train')
  p.add_argument('--identity-from', choices=IDENTITY_FROM, default='folder',
                 help="a source's identity without a synthface identity: folder (the first folder under --src; "
                      "--src's own name for videos directly in it) or file (the path under --src)")
  p.add_argument('--max-clip-seconds', type=float, default=20.0, help='longer videos are cut')
  p.add_argument('--min-clip-frames', type=int, default=5, help='shorter clips are dropped')
  p.add_argument('--jpeg-quality', type=int, default=95, help='JPEG quality of stored crops')
  p.add_argument('--overwrite', action='store_true', help='replace an existing --out')
  p.add_argument('--strict', action='store_true', help='a bad video is fatal instead of skipped')
  args = p.parse_args(argv)
  try:
    report = prepare(args.src, args.out, size=args.size, crop=args.crop,
                     val_fraction=args.val_fraction, test_fraction=args.test_fraction, seed=args.seed,
                     max_clip_seconds=args.max_clip_seconds, min_clip_frames=args.min_clip_frames,
                     jpeg_quality=args.jpeg_quality, overwrite=args.overwrite, strict=args.strict,
                     split_by=args.split_by, identity_from=args.identity_from)
  except (PrepareError, video_io.VideoError, OSError) as e:
    print(f'prepare: error: {" ".join(str(e).split())}', file=sys.stderr)
    return 1
  except KeyboardInterrupt:
    print('prepare: interrupted; nothing was written', file=sys.stderr)
    return 130
  print_summary(report)
  return 0


if __name__ == '__main__':
  sys.exit(main())
