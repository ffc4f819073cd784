"""Training examples of the generic-identity methods (DiffTalk, docs/DIFFTALK.md; landmark diffusion, docs/LANDMARK.md): a frame
with its masked copy, a reference frame of the same clip, the speech around it and its landmarks.

One example (all arrays numpy, batched on the leading axis):
  image      (S, S, 3) float32 in [-1, 1]   the target frame
  masked     (S, S, 3) float32              the target with every row from the nose tip (landmark 30) down
                                             set to -1 (black), as DiffTalk's `image_mask`
  reference  (S, S, 3) float32              a frame of the same clip at least `min_gap` (60) frames away,
                                             drawn anew for every example (the original fixed one per frame)
  audio      (F, W, D) float32              speech features around the frame (`audio_windows`)
  landmarks  (39, 2) float32                the context landmarks (models/difftalk.CONTEXT_LANDMARKS) as
                                             fractions of the side
  mouth_box  (4,) float32                   landmarks 48-67's box (x0, y0, x1, y1) as fractions of the side
Landmark diffusion (docs/LANDMARK.md; `make_landmark_batch`) adds, for the T frames centred on the target:
  audio (T, W, D), context (T, 39, 2), motion (T, 29, 2) landmarks, valid (T,), and ref_sets (K, 68, 2), the
  landmarks of K random frames of the clip; with images, the target's `landmarks` (68, 2) and the reference's
  `ref_landmarks` (68, 2) (its audio is then Stage A's windows, not the 8-frame DiffTalk windows above).
Frames without landmarks are never drawn. Speech features come from the config's front end (data/speech.py:
log-mel by default, or a frozen wav2vec2/HuBERT hidden state), 4 steps per video frame, normalised per clip to
zero mean and unit variance per dimension, so the level of a recording does not matter.

The stream is stateless: batch k of process p is drawn from a generator seeded by (seed, p, k), so a resumed
run starts at `start_batch` without reading anything before it. Each process holds its own clips (clip j
goes to process j % process_count) decoded in host memory: fine for synthface and a few hours of video at
64-128 px; larger data would want ArrayRecord-style random access.
"""

from __future__ import annotations

from collections.abc import Iterator
import dataclasses
import pathlib

import cv2
import numpy as np

from daetalker_jax.data import dataset
from daetalker_jax.data import features
from daetalker_jax.data import speech

CONTEXT_LANDMARKS = np.array(tuple(range(0, 4)) + tuple(range(13, 48)))   # models/difftalk.CONTEXT_LANDMARKS
NOSE_TIP = 30
MOUTH = slice(48, 68)
MOTION_LANDMARKS = np.array(tuple(range(4, 13)) + tuple(range(48, 68)))  # models/audio2landmarks.MOTION_LANDMARKS
MEL_PER_FRAME = features.MEL_PER_VIDEO_FRAME   # 4 log-mel steps (10 ms) per video frame (40 ms)


# ------------------------------------------------------------------------------------------- speech features
def clip_features(audio: np.ndarray, frontend: speech.Frontend | None = None) -> np.ndarray:
  """(N*640,) int16 or float audio -> (N*4, D) float32 features of `frontend` (log-mel, D = 80, when None),
  normalised per dimension over the clip (data/speech.py)."""
  return (frontend or speech.Frontend())(audio)


def audio_windows(feats: np.ndarray, frames: np.ndarray, *, num_frames: int = 8, window: int = 16
                  ) -> np.ndarray:
  """(len(frames), num_frames, window, D): for every video frame i in `frames`, the windows of the
  `num_frames` video frames i - num_frames//2 ... i + num_frames//2 - 1, each `window` feature steps centred on
  that frame's centre (step 4j + 2); indices past either end repeat the edge step."""
  frames = np.asarray(frames)
  offsets = np.arange(num_frames) - num_frames // 2
  steps = np.arange(window) - window // 2
  centre = (frames[:, None] + offsets[None]) * MEL_PER_FRAME + MEL_PER_FRAME // 2       # (B, F)
  idx = np.clip(centre[..., None] + steps, 0, len(feats) - 1)                          # (B, F, W)
  return feats[idx]


# ------------------------------------------------------------------------------------------------- images
def mask_below(images: np.ndarray, rows: np.ndarray) -> np.ndarray:
  """images (B, S, S, 3) in [-1, 1]; rows (B,) as fractions of the side: every row at or below is -1."""
  size = images.shape[1]
  start = np.clip(np.floor(np.asarray(rows) * size).astype(int), 0, size)
  keep = np.arange(size)[None, :] < start[:, None]                                    # (B, S)
  return np.where(keep[:, :, None, None], images, -1.0).astype(np.float32)


def mouth_boxes(landmarks: np.ndarray) -> np.ndarray:
  """(B, 68, 2) fractions -> (B, 4) box of the mouth points (x0, y0, x1, y1)."""
  m = landmarks[:, MOUTH]
  return np.concatenate([m.min(1), m.max(1)], axis=1).astype(np.float32)


def _resize(images: np.ndarray, size: int) -> np.ndarray:
  if images.shape[1] == size:
    return images
  return np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA) for im in images])


# -------------------------------------------------------------------------------------------------- store
@dataclasses.dataclass
class Store:
  """The clips of one process, decoded: frame k of the store is clip `clip[k]`, frame `frame[k]`."""
  images: list[np.ndarray]        # per clip (N, S, S, 3) uint8
  landmarks: list[np.ndarray]     # per clip (N, 68, 2) float32 fractions of the side
  feats: list[np.ndarray]         # per clip (4N, 80) float32
  clip_ids: list[str]
  identities: list[str]
  clip: np.ndarray                # (K,) clip index of every usable frame (one with landmarks)
  frame: np.ndarray               # (K,) frame index within its clip
  valid: list[np.ndarray] = dataclasses.field(default_factory=list)   # per clip (N,) landmarks found

  @property
  def num_frames(self) -> int:
    return len(self.clip)


def blank_store(*, image_size: int, feat_dim: int, num_frames: int) -> Store:
  """One clip of `num_frames` black frames, all with landmarks, and zero speech features: a loaded Store's shapes
  without data, so that `make_batch` / `make_landmark_batch` give the batch structure of a task (the pod plan,
  daetalker_jax/plan.py) by the same code that builds its real batches."""
  n = int(num_frames)
  return Store(images=[np.zeros((n, image_size, image_size, 3), np.uint8)],
               landmarks=[np.full((n, 68, 2), 0.5, np.float32)], feats=[np.zeros((MEL_PER_FRAME * n, feat_dim), np.float32)],
               clip_ids=['blank'], identities=[''], clip=np.zeros(n, int), frame=np.arange(n),
               valid=[np.ones(n, bool)])


def load_store(data_dir: str | pathlib.Path, split: str, *, image_size: int, process_index: int = 0,
               process_count: int = 1, frontend: speech.Frontend | None = None) -> Store:
  """Clips j of `split` with j % process_count == process_index, decoded and resized to `image_size`, with
  their speech features (`frontend`, log-mel when None)."""
  images, lms, feats, ids, idents, clip, frame, valids = [], [], [], [], [], [], [], []
  for j, c in enumerate(dataset.iterate_clips(data_dir, split)):
    if j % process_count != process_index:
      continue
    side = c['images'].shape[1]
    valid = np.asarray(c['landmarks_valid'], bool)
    k = len(images)
    images.append(_resize(c['images'], image_size))
    lms.append(np.asarray(c['landmarks'], np.float32) / side)
    feats.append(clip_features(c['audio'], frontend))
    ids.append(c['clip_id'])
    idents.append(c.get('identity', ''))
    valids.append(valid)
    clip.append(np.full(int(valid.sum()), k))
    frame.append(np.flatnonzero(valid))
  join = lambda parts: np.concatenate(parts) if parts else np.zeros(0, int)
  store = Store(images, lms, feats, ids, idents, join(clip), join(frame), valids)
  if not store.num_frames:
    raise dataset.DatasetError(
        f'{data_dir}: split {split!r} has no frames with landmarks for process {process_index} of {process_count} '
        '(DiffTalk needs face landmarks: prepare real video with --crop auto)')
  return store


def reference_frames(rng: np.random.Generator, frames: np.ndarray, lengths: np.ndarray, min_gap: int
                     ) -> np.ndarray:
  """A random frame of each clip at least `min_gap` frames from `frames` (or as far as the clip allows)."""
  out = np.empty_like(frames)
  for b, (i, n) in enumerate(zip(frames, lengths)):
    gap = min(min_gap, max(i, n - 1 - i))
    candidates = np.concatenate([np.arange(0, i - gap + 1), np.arange(i + gap, n)]) if gap else np.arange(n)
    out[b] = rng.choice(candidates)
  return out


def make_batch(store: Store, rng: np.random.Generator, batch_size: int, *, audio_frames: int = 8,
               audio_window: int = 16, min_gap: int = 60, picks: np.ndarray | None = None) -> dict[str, np.ndarray]:
  """One batch of examples (module doc); `picks` (B,) store-frame indices, random when None."""
  if picks is None:
    picks = rng.integers(0, store.num_frames, batch_size)
  cl, fr = store.clip[picks], store.frame[picks]
  lengths = np.array([len(store.images[c]) for c in cl])
  ref = reference_frames(rng, fr, lengths, min_gap)
  to_float = lambda a: a.astype(np.float32) / 127.5 - 1.0
  image = to_float(np.stack([store.images[c][f] for c, f in zip(cl, fr)]))
  lm = np.stack([store.landmarks[c][f] for c, f in zip(cl, fr)])
  return {
      'image': image,
      'masked': mask_below(image, lm[:, NOSE_TIP, 1]),
      'reference': to_float(np.stack([store.images[c][f] for c, f in zip(cl, ref)])),
      'audio': np.stack([audio_windows(store.feats[c], np.array([f]), num_frames=audio_frames,
                                       window=audio_window)[0] for c, f in zip(cl, fr)]),
      'landmarks': lm[:, CONTEXT_LANDMARKS].astype(np.float32),
      'mouth_box': mouth_boxes(lm),
  }


def landmark_window(store: Store, rng: np.random.Generator, clip: int, frame: int, *, num_frames: int,
                    num_refs: int, audio_window: int) -> dict[str, np.ndarray]:
  """Stage A's inputs for the `num_frames` frames centred on `frame` (landmark diffusion, docs/LANDMARK.md):
  audio (T, W, D) one window per frame; context (T, 39, 2) and motion (T, 29, 2) landmarks; valid (T,) (frames
  past the clip's ends repeat its edge frames; frames without landmarks take the centre frame's and are
  invalid); ref_sets (K, 68, 2): landmarks of K random frames of the clip with a face."""
  n = len(store.images[clip])
  frames = np.clip(frame + np.arange(num_frames) - num_frames // 2, 0, n - 1)
  valid = store.valid[clip][frames]
  lm = store.landmarks[clip]
  pts = np.where(valid[:, None, None], lm[frames], lm[frame])
  faces = np.flatnonzero(store.valid[clip])
  refs = rng.choice(faces, num_refs, replace=len(faces) < num_refs)
  return {'audio': audio_windows(store.feats[clip], frames, num_frames=1, window=audio_window)[:, 0],
          'context': pts[:, CONTEXT_LANDMARKS].astype(np.float32), 'motion': pts[:, MOTION_LANDMARKS].astype(np.float32),
          'valid': valid.astype(np.float32), 'ref_sets': lm[refs].astype(np.float32)}


def make_landmark_batch(store: Store, rng: np.random.Generator, batch_size: int, *, num_frames: int = 5,
                        num_refs: int = 15, audio_window: int = 16, min_gap: int = 60, images: bool = True,
                        picks: np.ndarray | None = None) -> dict[str, np.ndarray]:
  """Landmark-diffusion examples: `landmark_window` of each picked frame, and with `images` the renderer's
  image (S,S,3), masked, reference, landmarks (68, 2) of the target, ref_landmarks (68, 2), mouth_box."""
  if picks is None:
    picks = rng.integers(0, store.num_frames, batch_size)
  cl, fr = store.clip[picks], store.frame[picks]
  windows = [landmark_window(store, rng, c, f, num_frames=num_frames, num_refs=num_refs, audio_window=audio_window)
             for c, f in zip(cl, fr)]
  out = {k: np.stack([w[k] for w in windows]) for k in windows[0]}
  if images:
    lengths = np.array([len(store.images[c]) for c in cl])
    ref = reference_frames(rng, fr, lengths, min_gap)
    ref = np.array([r if store.valid[c][r] else f for c, f, r in zip(cl, fr, ref)])
    to_float = lambda a: a.astype(np.float32) / 127.5 - 1.0
    image = to_float(np.stack([store.images[c][f] for c, f in zip(cl, fr)]))
    lm = np.stack([store.landmarks[c][f] for c, f in zip(cl, fr)])
    out.update(image=image, masked=mask_below(image, lm[:, NOSE_TIP, 1]),
               reference=to_float(np.stack([store.images[c][f] for c, f in zip(cl, ref)])),
               landmarks=lm.astype(np.float32),
               ref_landmarks=np.stack([store.landmarks[c][f] for c, f in zip(cl, ref)]).astype(np.float32),
               mouth_box=mouth_boxes(lm))
  return out


def landmark_examples(data_dir: str | pathlib.Path, split: str, *, image_size: int, batch_size: int, seed: int,
                      process_index: int = 0, process_count: int = 1, start_batch: int = 0,
                      frontend: speech.Frontend | None = None, **kwargs) -> Iterator[dict[str, np.ndarray]]:
  """Endless per-process `make_landmark_batch` batches, batch k drawn from (seed, process_index, k)."""
  store = load_store(data_dir, split, image_size=image_size, process_index=process_index,
                     process_count=process_count, frontend=frontend)
  k = start_batch
  while True:
    yield make_landmark_batch(store, np.random.default_rng([seed, process_index, k]), batch_size, **kwargs)
    k += 1


def fixed_landmark_examples(data_dir: str | pathlib.Path, split: str, count: int, *, image_size: int, seed: int = 0,
                            frontend: speech.Frontend | None = None, **kwargs) -> dict[str, np.ndarray]:
  """`count` landmark examples spread evenly over the split's usable frames (evaluation)."""
  store = load_store(data_dir, split, image_size=image_size, frontend=frontend)
  picks = np.linspace(0, store.num_frames - 1, min(count, store.num_frames)).round().astype(int)
  return make_landmark_batch(store, np.random.default_rng(seed), len(picks), picks=picks, **kwargs)


def talking_examples(data_dir: str | pathlib.Path, split: str, *, image_size: int, batch_size: int, seed: int,
                     process_index: int = 0, process_count: int = 1, start_batch: int = 0, audio_frames: int = 8,
                     audio_window: int = 16, min_gap: int = 60, frontend: speech.Frontend | None = None
                     ) -> Iterator[dict[str, np.ndarray]]:
  """Endless per-process batches (module doc), batch k drawn from (seed, process_index, k)."""
  store = load_store(data_dir, split, image_size=image_size, process_index=process_index,
                     process_count=process_count, frontend=frontend)
  k = start_batch
  while True:
    rng = np.random.default_rng([seed, process_index, k])
    yield make_batch(store, rng, batch_size, audio_frames=audio_frames, audio_window=audio_window, min_gap=min_gap)
    k += 1


def fixed_examples(data_dir: str | pathlib.Path, split: str, count: int, *, image_size: int,
                   audio_frames: int = 8, audio_window: int = 16, min_gap: int = 60, seed: int = 0,
                   frontend: speech.Frontend | None = None) -> dict[str, np.ndarray]:
  """`count` examples spread evenly over the split's usable frames (evaluation; the same on every process)."""
  store = load_store(data_dir, split, image_size=image_size, frontend=frontend)
  picks = np.linspace(0, store.num_frames - 1, min(count, store.num_frames)).round().astype(int)
  return make_batch(store, np.random.default_rng(seed), len(picks), audio_frames=audio_frames,
                    audio_window=audio_window, min_gap=min_gap, picks=picks)
