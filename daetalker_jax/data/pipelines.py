"""tf.data input pipelines: shuffled frames for the DAE, aligned audio windows for speech2latent.

Both start from the clip dataset (`dataset.load_clips`, JPEGs left encoded) and return numpy
iterators (`tfds.as_numpy`) of fixed-shape batches.

* Multi-process: process p of n owns a contiguous, disjoint 1/n of the split in record order —
  frames: the global frame indices [p*T//n, (p+1)*T//n) (balanced to one frame, so even a split
  with fewer clips than processes splits evenly; a clip on a boundary is read by both neighbours,
  each keeping its own frames), windows: the clips [p*C//n, (p+1)*C//n). It reads only the records
  that hold its share (TFDS split slicing, `train[a:b]`, opens only their files), and decodes only
  its own frames. The share is computed from manifest.json (clip ids and lengths, the order
  data_prep writes records in), so no shard is read to plan it. `batch_size` is the per-process batch.
* Training loads the process's share once into host memory, JPEGs still encoded (frames: about
  dataset bytes / process_count; windows: audio, pose, latents). The stream is a concatenation of
  epochs; epoch e is a full permutation of the share's frames (windows: of the share's windows, with
  fresh random starts), drawn statelessly from (seed, process, e). The stream therefore depends on
  (seed, process, position) alone, and `start_batch=k` starts it at batch k by slicing indices: the
  k skipped batches are never gathered or decoded, so resuming at step 500k costs what step 0 does.
  Batches are `drop_remainder=True` (every step sees the same shapes, no recompiles) and run across
  epoch boundaries.
* Eval pipelines read each frame / window of the share exactly once in record order, keep the
  remainder and pad the last batch; `mask` says which rows (frames: (B,), windows: (B, W)) are real.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
import dataclasses
import pathlib
from typing import Any

from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from daetalker_jax.data import contract
from daetalker_jax.data import dataset

# TensorFlow only feeds data here; keep it off the accelerators JAX owns.
tf.config.set_visible_devices([], 'GPU')

SAMPLES_PER_FRAME = contract.SAMPLES_PER_FRAME
AUTOTUNE = tf.data.AUTOTUNE
MOUTH_LANDMARKS = slice(48, 68)   # 68-point (iBUG/dlib) outer + inner lip

# Salts of the stateless random streams (one key per (seed, process, salt, epoch or position)).
_FRAME_ORDER, _FRAME_FLIP, _WINDOW_START, _WINDOW_ORDER = range(4)


def _options(ds: tf.data.Dataset) -> tf.data.Dataset:
  opts = tf.data.Options()
  opts.deterministic = True
  opts.experimental_optimization.map_parallelization = True
  return ds.with_options(opts)


def _check_process(process_index: int, process_count: int) -> None:
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index {process_index} not in [0, {process_count})')


def _pad_batch(batch: dict[str, tf.Tensor], batch_size: int) -> dict[str, tf.Tensor]:
  """Pads the leading dim of every entry to batch_size with zeros (mask rows become False)."""
  def pad(x):
    n = tf.shape(x)[0]
    paddings = [[0, batch_size - n]] + [[0, 0]] * (len(x.shape) - 1)
    if x.dtype == tf.string:
      return tf.pad(x, paddings, constant_values='')
    return tf.pad(x, paddings)
  return {k: pad(v) for k, v in batch.items()}


def _key(seed: int, process_index: int, salt: int, data: tf.Tensor) -> tf.Tensor:
  """Stateless RNG key (2,) int64 of (seed, process, salt, data)."""
  key = tf.constant([seed, process_index * 16 + salt], tf.int64)
  return tf.random.experimental.stateless_fold_in(key, tf.cast(data, tf.int64))


# ---------------------------------------------------------------------------------------------
# Per-process shares and the epoch stream.
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Share:
  """The clips [clip_start, clip_start + len(clip_ids)) of a split (record order) that hold a
  process's share, and of each the frames [first, last) that belong to it."""
  clip_start: int
  clip_ids: tuple[str, ...]
  first: np.ndarray   # (C,) int64
  last: np.ndarray    # (C,) int64

  @property
  def num_frames(self) -> int:
    return int((self.last - self.first).sum())


def frame_share(data_dir: str | pathlib.Path, split: str, process_index: int = 0,
                process_count: int = 1) -> Share:
  """Process p's frames: global frame indices [p*T//n, (p+1)*T//n) of the split in record order."""
  _check_process(process_index, process_count)
  table = dataset.clip_table(data_dir, split)
  counts = np.array([n for _, n in table], np.int64)
  ends = np.cumsum(counts)
  starts = ends - counts
  total = int(ends[-1]) if len(ends) else 0
  lo, hi = total * process_index // process_count, total * (process_index + 1) // process_count
  c0 = int(np.searchsorted(ends, lo, side='right'))          # first clip ending after lo
  c1 = max(c0, int(np.searchsorted(starts, hi, side='left')))  # clips starting before hi
  return Share(c0, tuple(cid for cid, _ in table[c0:c1]),
               np.maximum(lo - starts[c0:c1], 0), np.minimum(hi - starts[c0:c1], counts[c0:c1]))


def clip_share(data_dir: str | pathlib.Path, split: str, process_index: int = 0,
               process_count: int = 1) -> Share:
  """Process p's clips: [p*C//n, (p+1)*C//n) of the split in record order, all their frames."""
  _check_process(process_index, process_count)
  table = dataset.clip_table(data_dir, split)
  c0, c1 = len(table) * process_index // process_count, len(table) * (process_index + 1) // process_count
  return Share(c0, tuple(cid for cid, _ in table[c0:c1]), np.zeros(c1 - c0, np.int64),
               np.array([n for _, n in table[c0:c1]], np.int64))


def _read_share(data_dir: str | pathlib.Path, split: str, share: Share) -> tf.data.Dataset:
  """The share's clip records (JPEGs encoded), each checked against the manifest's clip id."""
  n = len(share.clip_ids)
  if not n:
    return dataset.load_clips(data_dir, split, decode_images=False).take(0)
  clips = dataset.load_clips(data_dir, f'{split}[{share.clip_start}:{share.clip_start + n}]',
                             decode_images=False)

  def check(c, expected):
    tf.debugging.assert_equal(c['clip_id'], expected, message=(
        f'{data_dir}: the records of split {split!r} are not in the order of manifest.json'))
    return c
  return tf.data.Dataset.zip(clips, tf.data.Dataset.from_tensor_slices(list(share.clip_ids))).map(check)


def _epoch_stream(epoch_size: int, start: int,
                  make_epoch: Callable[[tf.Tensor], dict[str, tf.Tensor]]) -> tf.data.Dataset:
  """Elements of the endless concatenation of epochs, from element `start` on.

  `make_epoch(e)` gives epoch e's elements (tensors with leading dim epoch_size), drawn from indices
  only; the part of the first epoch before `start` is sliced off before anything is read. Each
  element gets 'position' (int64), its index in the whole stream.
  """
  first_epoch, offset = divmod(start, epoch_size)

  def epoch(e):
    elems = make_epoch(e)
    skip = tf.where(e == first_epoch, tf.constant(offset, tf.int64), tf.constant(0, tf.int64))
    elems = {k: v[skip:] for k, v in elems.items()}
    elems['position'] = e * epoch_size + tf.range(skip, epoch_size, dtype=tf.int64)
    return tf.data.Dataset.from_tensor_slices(elems)
  return tf.data.Dataset.range(first_epoch, 2**62).flat_map(epoch)


# ---------------------------------------------------------------------------------------------
# Frames (DAE).
# ---------------------------------------------------------------------------------------------
def _decode_jpeg(jpeg: tf.Tensor) -> tf.Tensor:
  """(S, S, 3) uint8 from JPEG bytes: the one expensive step (tests count its calls)."""
  return tf.io.decode_jpeg(jpeg, channels=3)


def _frame_fields(c: dict[str, Any]) -> dict[str, Any]:
  """Per-frame fields of a clip record, leading dim N (JPEGs still encoded)."""
  f = c['frames']
  return {'jpeg': f['image'], 'pose': f['pose'], 'mouth': f['landmarks'][:, MOUTH_LANDMARKS],
          'mouth_valid': f['landmarks_valid']}


def _load_frames(data_dir: str | pathlib.Path, split: str, share: Share) -> dict[str, np.ndarray]:
  """The share's frames in record order as numpy (F, ...): fields of `_frame_fields` + clip_id, frame."""
  parts: dict[str, list[np.ndarray]] = {}
  clips = _read_share(data_dir, split, share).map(lambda c: {'clip_id': c['clip_id'], **_frame_fields(c)})
  for k, c in enumerate(tfds.as_numpy(clips)):
    a, b = int(share.first[k]), int(share.last[k])
    fields = {name: v[a:b] for name, v in c.items() if name != 'clip_id'}
    fields['clip_id'] = np.full(b - a, c['clip_id'], object)
    fields['frame'] = np.arange(a, b, dtype=np.int32)
    for name, v in fields.items():
      parts.setdefault(name, []).append(v)
  return {name: np.concatenate(v) for name, v in parts.items()}


def frames_dataset(data_dir: str | pathlib.Path, split: str, *, image_size: int, batch_size: int,
                   seed: int, train: bool = True, process_index: int = 0, process_count: int = 1,
                   start_batch: int = 0, hflip: bool = False, with_ids: bool = False) -> tf.data.Dataset:
  """The tf.data.Dataset behind `frames_pipeline` (see there)."""
  _check_process(process_index, process_count)
  share = frame_share(data_dir, split, process_index, process_count)
  stored = dataset.dataset_info(data_dir)['image_size']

  def decode(position, f):
    img = tf.image.convert_image_dtype(_decode_jpeg(f['jpeg']), tf.float32)  # [0, 1]
    if stored != image_size:
      img = tf.image.resize(img, (image_size, image_size), method='area', antialias=True)
    img = tf.ensure_shape(img, (image_size, image_size, 3))
    mouth = f['mouth'] / stored                                  # crop pixels → fractions of the side
    box = tf.concat([tf.reduce_min(mouth, 0), tf.reduce_max(mouth, 0)], 0)   # (x0, y0, x1, y1)
    if train and hflip:  # keyed by the stream position: a resumed run flips the same frames
      flip = tf.random.stateless_uniform([], seed=_key(seed, process_index, _FRAME_FLIP, position)) < 0.5
      img = tf.cond(flip, lambda: img[:, ::-1], lambda: img)
      box = tf.cond(flip, lambda: tf.stack([1 - box[2], box[1], 1 - box[0], box[3]]), lambda: box)
      mouth = tf.cond(flip, lambda: tf.stack([1 - mouth[:, 0], mouth[:, 1]], 1), lambda: mouth)
    out = {'image': img * 2.0 - 1.0, 'pose': f['pose'], 'mouth_box': box, 'mouth_points': mouth,
           'mouth_valid': f['mouth_valid']}
    if with_ids:
      out['clip_id'], out['frame'] = f['clip_id'], f['frame']
    if not train:
      out['mask'] = tf.constant(True)
    return out

  if train:
    host = _load_frames(data_dir, split, share)
    size = share.num_frames
    if not size:
      raise ValueError(f'{data_dir}: split {split!r} has no frames for process '
                       f'{process_index}/{process_count}')
    logging.info('frames %s: process %d/%d holds %d frames of %d clips (%.1f MiB of JPEG)', split,
                 process_index, process_count, size, len(share.clip_ids),
                 sum(map(len, host['jpeg'])) / 2**20)
    if not with_ids:
      del host['clip_id'], host['frame']
    store = {k: tf.constant(v) for k, v in host.items()}
    del host

    def epoch(e):  # a full permutation of the share per epoch
      return {'index': tf.random.experimental.stateless_shuffle(
          tf.range(size, dtype=tf.int64), seed=_key(seed, process_index, _FRAME_ORDER, e))}

    def fetch(el):
      return decode(el['position'], {k: tf.gather(v, el['index']) for k, v in store.items()})
    frames = _epoch_stream(size, start_batch * batch_size, epoch).map(fetch, num_parallel_calls=AUTOTUNE)
    frames = frames.batch(batch_size, drop_remainder=True)
  else:
    def to_frames(c, first, last):
      f = {k: v[first:last] for k, v in _frame_fields(c).items()}
      f['frame'] = tf.range(first, last, dtype=tf.int32)
      f['clip_id'] = tf.fill(tf.shape(f['frame']), c['clip_id'])
      return tf.data.Dataset.from_tensor_slices(f)
    bounds = tf.data.Dataset.from_tensor_slices((share.first.astype(np.int32), share.last.astype(np.int32)))
    frames = tf.data.Dataset.zip(_read_share(data_dir, split, share), bounds).flat_map(
        lambda c, ab: to_frames(c, *ab))
    frames = frames.map(lambda f: decode(tf.constant(0, tf.int64), f), num_parallel_calls=AUTOTUNE)
    frames = frames.batch(batch_size, drop_remainder=False).map(lambda b: _pad_batch(b, batch_size))
  return _options(frames.prefetch(AUTOTUNE))


def frame_example_spec(image_size: int) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
  """(shape, dtype) of one training example of `frames_pipeline` (its docstring), without reading data: the
  batch structure of the frame tasks for the pod plan (daetalker_jax/plan.py); tests check it against the
  pipeline's real batches."""
  return {'image': ((image_size, image_size, 3), np.dtype(np.float32)), 'pose': ((3,), np.dtype(np.float32)),
          'mouth_box': ((4,), np.dtype(np.float32)),
          'mouth_points': ((MOUTH_LANDMARKS.stop - MOUTH_LANDMARKS.start, 2), np.dtype(np.float32)),
          'mouth_valid': ((), np.dtype(bool))}


def frames_pipeline(data_dir: str | pathlib.Path, split: str, *, image_size: int, batch_size: int,
                    seed: int, train: bool = True, process_index: int = 0, process_count: int = 1,
                    start_batch: int = 0, hflip: bool = False,
                    with_ids: bool = False) -> Iterator[dict[str, np.ndarray]]:
  """Batches of single frames: {'image': (B, S, S, 3) float32 in [-1, 1], 'pose': (B, 3),
  'mouth_box': (B, 4) float32 (x0, y0, x1, y1) of landmarks 48-67 as fractions of the image side,
  'mouth_points': (B, 20, 2) float32 landmarks 48-67 (x, y) as fractions of the image side,
  'mouth_valid': (B,) bool (False where the frame has no landmarks: its box is meaningless)}.

  Training: each epoch is a seeded permutation of this process's frames; `start_batch` = k gives
  the stream from its k-th batch on (what an uninterrupted stream gives after k batches) without
  decoding the skipped ones. Eval (`train=False`) adds 'mask': (B,) bool and pads the last batch.
  `with_ids` adds 'clip_id' (B,) bytes and 'frame' (B,) int32 (index inside the clip). Stored
  crops of another size are resized (area) to `image_size`.
  """
  return iter(tfds.as_numpy(frames_dataset(
      data_dir, split, image_size=image_size, batch_size=batch_size, seed=seed, train=train,
      process_index=process_index, process_count=process_count, start_batch=start_batch,
      hflip=hflip, with_ids=with_ids)))


# ---------------------------------------------------------------------------------------------
# Windows (speech2latent).
# ---------------------------------------------------------------------------------------------
def _latent_loader(data_dir: str | pathlib.Path, name: str, normalize: bool):
  """clip_id, num_frames → float32 (N, D) latents, optionally z-normalised with stats.json."""
  folder = dataset.latents_dir(data_dir, name)
  stats = dataset.load_latent_stats(data_dir, name)
  mean, std = stats['mean'], np.maximum(stats['std'], 1e-6)

  def load(clip_id: str, num_frames: int) -> np.ndarray:
    path = folder / f'{clip_id}.npy'
    if not path.is_file():
      raise FileNotFoundError(f'{path}: missing latents for clip {clip_id}')
    z = np.load(path).astype(np.float32)
    if z.ndim != 2 or z.shape != (num_frames, stats['dim']):
      raise ValueError(f'{path}: latents of shape {z.shape}, expected ({num_frames}, {stats["dim"]})')
    return (z - mean) / std if normalize else z

  return load, stats['dim']


def _load_windows_store(data_dir: str | pathlib.Path, split: str, share: Share, latents: str | None,
                        normalize_latents: bool) -> dict[str, np.ndarray]:
  """The share's clips as flat numpy arrays: audio int16 (sum A_c,), pose (sum N_c, 3), latent
  (sum N_c, D), and per clip audio_off, audio_len, frame_off, num_frames (int64) and clip_id."""
  load = _latent_loader(data_dir, latents, normalize_latents)[0] if latents else None
  audio, pose, latent, ids, audio_len, num_frames = [], [], [], [], [], []
  clips = _read_share(data_dir, split, share).map(  # the JPEGs are never touched
      lambda c: {'clip_id': c['clip_id'], 'audio': c['audio'], 'pose': c['frames']['pose']})
  for c in tfds.as_numpy(clips):
    cid, n = c['clip_id'].decode(), len(c['pose'])
    audio.append(c['audio'])
    pose.append(c['pose'])
    if load:
      latent.append(load(cid, n))
    ids.append(cid)
    audio_len.append(len(c['audio']))
    num_frames.append(n)
  audio_len, num_frames = np.array(audio_len, np.int64), np.array(num_frames, np.int64)
  out = {'audio': np.concatenate(audio) if audio else np.zeros(0, np.int16),
         'pose': np.concatenate(pose) if pose else np.zeros((0, 3), np.float32),
         'clip_id': np.array(ids, object), 'audio_len': audio_len, 'num_frames': num_frames,
         'audio_off': np.cumsum(audio_len) - audio_len, 'frame_off': np.cumsum(num_frames) - num_frames}
  if load and latent:
    out['latent'] = np.concatenate(latent)
  return out


def windows_dataset(data_dir: str | pathlib.Path, split: str, *, window: int, batch_size: int,
                    seed: int, train: bool = True, latents: str | None = None,
                    normalize_latents: bool = True, process_index: int = 0, process_count: int = 1,
                    windows_per_clip: int | None = None, start_batch: int = 0,
                    with_ids: bool = False) -> tf.data.Dataset:
  """The tf.data.Dataset behind `windows_pipeline` (see there)."""
  _check_process(process_index, process_count)
  W, A = window, window * SAMPLES_PER_FRAME
  n_clips = dataset.num_clips(data_dir, split)
  if train and n_clips < process_count:
    raise ValueError(f'{data_dir}: split {split!r} has {n_clips} clips, fewer than the '
                     f'{process_count} processes that shard it by clip')
  if latents:
    # Fail before the pipeline starts, naming a missing file, rather than deep inside tf.data.
    missing = [cid for cid in dataset.clip_ids(data_dir, split)
               if not (dataset.latents_dir(data_dir, latents) / f'{cid}.npy').is_file()]
    if missing:
      raise FileNotFoundError(f'{dataset.latents_dir(data_dir, latents)}: no latents for '
                              f'{len(missing)} clip(s) of split {split!r}, e.g. {missing[0]}.npy')
  share = clip_share(data_dir, split, process_index, process_count)
  host = _load_windows_store(data_dir, split, share, latents, normalize_latents)
  num_frames = host['num_frames']
  if not with_ids:
    del host['clip_id']
  store = {k: tf.constant(v) for k, v in host.items()}
  del host

  def cut(el):
    """The window of clip el['clip'] starting at frame el['start'], zero past the clip end."""
    c, s = el['clip'], tf.cast(el['start'], tf.int64)
    n, a_len = store['num_frames'][c], store['audio_len'][c]
    t = s + tf.range(W, dtype=tf.int64)                                            # (W,)
    mask = t < n
    frames = store['frame_off'][c] + tf.minimum(t, n - 1)
    j = s * SAMPLES_PER_FRAME + tf.range(A, dtype=tf.int64)                         # (W*640,)
    samples = tf.gather(store['audio'], store['audio_off'][c] + tf.minimum(j, a_len - 1))
    out = {'audio': tf.where(j < a_len, tf.cast(samples, tf.float32) / contract.INT16_SCALE, 0.0),
           'pose': tf.where(mask[:, None], tf.gather(store['pose'], frames), 0.0),
           'mask': mask}
    if 'latent' in store:
      out['latent'] = tf.where(mask[:, None], tf.gather(store['latent'], frames), 0.0)
    if with_ids:
      out['clip_id'], out['start'] = store['clip_id'][c], tf.cast(s, tf.int32)
    return out

  if train:
    # Every epoch: `windows_per_clip` (default num_frames // W, at least 1) windows per clip at fresh
    # random starts, all of the share's windows in a fresh random order.
    per_clip = (np.full(len(num_frames), windows_per_clip) if windows_per_clip
                else np.maximum(1, num_frames // W))
    window_clip = tf.constant(np.repeat(np.arange(len(num_frames)), per_clip), tf.int64)   # (K,)
    max_start = tf.gather(tf.constant(np.maximum(num_frames - W, 0), tf.int64), window_clip)
    size = int(per_clip.sum())

    def epoch(e):
      u = tf.random.stateless_uniform([size], seed=_key(seed, process_index, _WINDOW_START, e),
                                      dtype=tf.float64)
      start = tf.minimum(tf.cast(tf.floor(u * tf.cast(max_start + 1, tf.float64)), tf.int64), max_start)
      order = tf.random.experimental.stateless_shuffle(
          tf.range(size, dtype=tf.int64), seed=_key(seed, process_index, _WINDOW_ORDER, e))
      return {'clip': tf.gather(window_clip, order), 'start': tf.gather(start, order)}
    windows = _epoch_stream(size, start_batch * batch_size, epoch).map(cut, num_parallel_calls=AUTOTUNE)
    windows = windows.batch(batch_size, drop_remainder=True)
  else:  # consecutive windows covering each clip once; the last one masked
    tiles = [(c, s) for c, n in enumerate(num_frames) for s in range(0, int(n), W)]
    elems = {'clip': np.array([c for c, _ in tiles], np.int64).reshape(-1),
             'start': np.array([s for _, s in tiles], np.int64).reshape(-1)}
    windows = tf.data.Dataset.from_tensor_slices(elems).map(cut, num_parallel_calls=AUTOTUNE)
    windows = windows.batch(batch_size, drop_remainder=False).map(lambda b: _pad_batch(b, batch_size))

  def shapes(b):
    b['audio'] = tf.ensure_shape(b['audio'], (batch_size, A))
    b['pose'] = tf.ensure_shape(b['pose'], (batch_size, W, 3))
    b['mask'] = tf.ensure_shape(b['mask'], (batch_size, W))
    return b
  return _options(windows.map(shapes).prefetch(AUTOTUNE))


def window_example_spec(window: int, latent_dim: int | None) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
  """(shape, dtype) of one training window of `windows_pipeline` (its docstring), without reading data; with
  `latent_dim` None no 'latent' (no `latents` folder named)."""
  spec = {'audio': ((window * SAMPLES_PER_FRAME,), np.dtype(np.float32)), 'pose': ((window, 3), np.dtype(np.float32)),
          'mask': ((window,), np.dtype(bool))}
  if latent_dim is not None:
    spec['latent'] = ((window, latent_dim), np.dtype(np.float32))
  return spec


def windows_pipeline(data_dir: str | pathlib.Path, split: str, *, window: int, batch_size: int,
                     seed: int, train: bool = True, latents: str | None = None,
                     normalize_latents: bool = True, process_index: int = 0, process_count: int = 1,
                     windows_per_clip: int | None = None, start_batch: int = 0,
                     with_ids: bool = False) -> Iterator[dict[str, Any]]:
  """Batches of W-frame windows with their aligned audio.

  Returns {'audio': (B, W*640) float32 in [-1, 1], 'pose': (B, W, 3) float32,
  'mask': (B, W) bool, 'latent': (B, W, D) float32 (when `latents` names a folder under
  DATA_DIR/latents/, z-normalised with its stats.json unless normalize_latents=False)}.
  Training draws, every epoch, `windows_per_clip` random windows (default: num_frames // W, at
  least 1) per clip of this process's share and visits them in a seeded random order; clips
  shorter than W give one zero-padded, masked window. `start_batch` = k starts the stream at its
  k-th batch without cutting the skipped ones. Eval tiles each clip with consecutive windows.
  `with_ids` adds 'clip_id' (B,) bytes and 'start' (B,) int32.
  """
  return iter(tfds.as_numpy(windows_dataset(
      data_dir, split, window=window, batch_size=batch_size, seed=seed, train=train,
      latents=latents, normalize_latents=normalize_latents, process_index=process_index,
      process_count=process_count, windows_per_clip=windows_per_clip, start_batch=start_batch,
      with_ids=with_ids)))
