"""tf.data input pipelines: shuffled frames for the DAE, aligned audio windows for speech2latent.

Both start from the clip dataset (`dataset.load_clips`, JPEGs left encoded) and return numpy
iterators (`tfds.as_numpy`) of fixed-shape batches.

* Training pipelines repeat forever, shuffle with `seed`, and use `drop_remainder=True`, so every
  step sees the same shapes (no recompiles).
* Eval pipelines read each frame / window exactly once in file order, keep the remainder and pad
  the last batch; `mask` says which rows (frames: (B,), windows: (B, W)) are real.
* Multi-process: each process reads `1/process_count` of the data, disjoint from the others —
  windows by clip, frames by frame index (so even a dataset with fewer clips than processes
  splits evenly). `batch_size` is the per-process batch.
* Everything is deterministic for a given seed (tf.data `deterministic=True`, stateless window
  sampling keyed by element index), so a restarted run sees the same data order.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from daetalker_jax.data import dataset

# TensorFlow only feeds data here; keep it off the accelerators JAX owns.
tf.config.set_visible_devices([], 'GPU')

SAMPLES_PER_FRAME = 640
AUTOTUNE = tf.data.AUTOTUNE
_CLIP_SHUFFLE_BUFFER = 64   # clips (JPEG bytes of whole clips: keep modest)
_WINDOW_SHUFFLE_BUFFER = 512


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


# ---------------------------------------------------------------------------------------------
# Frames (DAE).
# ---------------------------------------------------------------------------------------------
MOUTH_LANDMARKS = slice(48, 68)   # 68-point (iBUG/dlib) outer + inner lip



def frames_dataset(data_dir: str | pathlib.Path, split: str, *, image_size: int, batch_size: int,
                   seed: int, train: bool = True, process_index: int = 0, process_count: int = 1,
                   shuffle_buffer: int = 10_000, hflip: bool = False,
                   with_ids: bool = False) -> tf.data.Dataset:
  """The tf.data.Dataset behind `frames_pipeline` (see there)."""
  _check_process(process_index, process_count)
  clips = dataset.load_clips(data_dir, split, decode_images=False)
  if train:
    clips = clips.shuffle(_CLIP_SHUFFLE_BUFFER, seed=seed, reshuffle_each_iteration=True).repeat()

  def to_frames(c):
    n = tf.shape(c['frames']['pose'])[0]
    d = {'jpeg': c['frames']['image'], 'pose': c['frames']['pose'],
         'mouth': c['frames']['landmarks'][:, MOUTH_LANDMARKS], 'mouth_valid': c['frames']['landmarks_valid']}
    if with_ids:
      d['clip_id'] = tf.fill([n], c['clip_id'])
      d['frame'] = tf.range(n, dtype=tf.int32)
    return tf.data.Dataset.from_tensor_slices(d)

  # Every process walks the same deterministic frame stream and keeps every count-th frame.
  frames = clips.flat_map(to_frames).shard(process_count, process_index)
  if train:
    frames = frames.shuffle(shuffle_buffer, seed=seed + process_index, reshuffle_each_iteration=True)
    frames = frames.enumerate()  # element index: the key of the per-frame random flip
  else:
    frames = frames.map(lambda f: (tf.constant(0, tf.int64), f))

  stored = dataset.dataset_info(data_dir)['image_size']

  def decode(i, f):
    img = tf.io.decode_jpeg(f['jpeg'], channels=3)
    img = tf.image.convert_image_dtype(img, tf.float32)  # [0, 1]
    if stored != image_size:
      img = tf.image.resize(img, (image_size, image_size), method='area', antialias=True)
    img = tf.ensure_shape(img, (image_size, image_size, 3))
    mouth = f['mouth'] / stored                                  # crop pixels → fractions of the side
    box = tf.concat([tf.reduce_min(mouth, 0), tf.reduce_max(mouth, 0)], 0)   # (x0, y0, x1, y1)
    if train and hflip:
      flip = tf.random.stateless_uniform([], seed=tf.stack([tf.cast(seed, tf.int64), i])) < 0.5
      img = tf.cond(flip, lambda: img[:, ::-1], lambda: img)
      box = tf.cond(flip, lambda: tf.stack([1 - box[2], box[1], 1 - box[0], box[3]]), lambda: box)
    out = {'image': img * 2.0 - 1.0, 'pose': f['pose'], 'mouth_box': box, 'mouth_valid': f['mouth_valid']}
    if with_ids:
      out['clip_id'], out['frame'] = f['clip_id'], f['frame']
    if not train:
      out['mask'] = tf.constant(True)
    return out

  frames = frames.map(decode, num_parallel_calls=AUTOTUNE)
  if train:
    frames = frames.batch(batch_size, drop_remainder=True)
  else:
    frames = frames.batch(batch_size, drop_remainder=False).map(lambda b: _pad_batch(b, batch_size))
  return _options(frames.prefetch(AUTOTUNE))


def frames_pipeline(data_dir: str | pathlib.Path, split: str, *, image_size: int, batch_size: int,
                    seed: int, train: bool = True, process_index: int = 0, process_count: int = 1,
                    shuffle_buffer: int = 10_000, hflip: bool = False,
                    with_ids: bool = False) -> Iterator[dict[str, np.ndarray]]:
  """Batches of single frames: {'image': (B, S, S, 3) float32 in [-1, 1], 'pose': (B, 3),
  'mouth_box': (B, 4) float32 (x0, y0, x1, y1) of landmarks 48-67 as fractions of the image side,
  'mouth_valid': (B,) bool (False where the frame has no landmarks: its box is meaningless)}.

  Eval (`train=False`) adds 'mask': (B,) bool and pads the last batch. `with_ids` adds
  'clip_id' (B,) bytes and 'frame' (B,) int32 (index inside the clip). Stored crops of another
  size are resized (area) to `image_size`.
  """
  return iter(tfds.as_numpy(frames_dataset(
      data_dir, split, image_size=image_size, batch_size=batch_size, seed=seed, train=train,
      process_index=process_index, process_count=process_count, shuffle_buffer=shuffle_buffer,
      hflip=hflip, with_ids=with_ids)))


# ---------------------------------------------------------------------------------------------
# Windows (speech2latent).
# ---------------------------------------------------------------------------------------------


def _latent_loader(data_dir: str | pathlib.Path, name: str, normalize: bool):
  """numpy function clip_id → float32 (N, D) latents, optionally z-normalised with stats.json."""
  folder = dataset.latents_dir(data_dir, name)
  stats = dataset.load_latent_stats(data_dir, name)
  mean, std = stats['mean'], np.maximum(stats['std'], 1e-6)

  def load(clip_id: bytes, num_frames: np.int32) -> np.ndarray:
    path = folder / f'{clip_id.decode()}.npy'
    if not path.is_file():
      raise FileNotFoundError(f'{path}: missing latents for clip {clip_id.decode()}')
    z = np.load(path).astype(np.float32)
    if z.ndim != 2 or z.shape != (int(num_frames), stats['dim']):
      raise ValueError(f'{path}: latents of shape {z.shape}, expected ({int(num_frames)}, {stats["dim"]})')
    return (z - mean) / std if normalize else z

  return load, stats['dim']


def windows_dataset(data_dir: str | pathlib.Path, split: str, *, window: int, batch_size: int,
                    seed: int, train: bool = True, latents: str | None = None,
                    normalize_latents: bool = True, process_index: int = 0, process_count: int = 1,
                    windows_per_clip: int | None = None, cache: bool = True,
                    with_ids: bool = False) -> tf.data.Dataset:
  """The tf.data.Dataset behind `windows_pipeline` (see there)."""
  _check_process(process_index, process_count)
  W, A = window, window * SAMPLES_PER_FRAME
  clips = dataset.load_clips(data_dir, split, decode_images=False)
  n_clips = dataset.num_clips(data_dir, split)
  if train and n_clips < process_count:
    raise ValueError(f'{data_dir}: split {split!r} has {n_clips} clips, fewer than the '
                     f'{process_count} processes that shard it by clip')
  clips = clips.shard(process_count, process_index)

  def select(c):  # drop the JPEGs early: windows need audio, pose and latents only
    return {'clip_id': c['clip_id'], 'num_frames': c['num_frames'], 'audio': c['audio'],
            'pose': c['frames']['pose']}
  clips = clips.map(select)

  if latents:
    # Fail before the pipeline starts, naming a missing file, rather than deep inside tf.data.
    missing = [cid for cid in dataset.clip_ids(data_dir, split)
               if not (dataset.latents_dir(data_dir, latents) / f'{cid}.npy').is_file()]
    if missing:
      raise FileNotFoundError(f'{dataset.latents_dir(data_dir, latents)}: no latents for '
                              f'{len(missing)} clip(s) of split {split!r}, e.g. {missing[0]}.npy')
    load, dim = _latent_loader(data_dir, latents, normalize_latents)

    def add_latent(c):
      z = tf.numpy_function(load, [c['clip_id'], c['num_frames']], tf.float32, stateful=False)
      return {**c, 'latent': tf.ensure_shape(z, (None, dim))}
    clips = clips.map(add_latent)
  if train and cache:
    clips = clips.cache()  # audio + pose (+ latents) of a clip are small next to its JPEGs

  def cut(c, starts):
    """Windows (K, W, ...) starting at frames `starts` (K,), zero-padded past the clip end."""
    n = c['num_frames']
    pose = tf.pad(c['pose'], [[0, W], [0, 0]])
    audio = tf.pad(c['audio'], [[0, A]])
    frame_idx = starts[:, None] + tf.range(W)[None]                                # (K, W)
    sample_idx = starts[:, None] * SAMPLES_PER_FRAME + tf.range(A)[None]           # (K, W*640)
    out = {'audio': tf.cast(tf.gather(audio, sample_idx), tf.float32) / 32768.0,
           'pose': tf.gather(pose, frame_idx),
           'mask': frame_idx < n}
    if latents:
      out['latent'] = tf.gather(tf.pad(c['latent'], [[0, W], [0, 0]]), frame_idx)
    if with_ids:
      out['clip_id'] = tf.fill(tf.shape(starts), c['clip_id'])
      out['start'] = starts
    return tf.data.Dataset.from_tensor_slices(out)

  if train:
    clips = clips.shuffle(_CLIP_SHUFFLE_BUFFER, seed=seed, reshuffle_each_iteration=True).repeat()

    def random_windows(i, c):
      n = c['num_frames']
      k = windows_per_clip or tf.maximum(1, n // W)
      # Stateless and keyed by the element index: the same seed gives the same windows.
      starts = tf.random.stateless_uniform(
          [k], seed=tf.stack([tf.cast(seed, tf.int64), tf.cast(process_index, tf.int64) * 2**32 + i]),
          minval=0, maxval=tf.maximum(n - W, 0) + 1, dtype=tf.int32)
      return cut(c, starts)
    windows = clips.enumerate().flat_map(random_windows)
    windows = windows.shuffle(_WINDOW_SHUFFLE_BUFFER, seed=seed, reshuffle_each_iteration=True)
    windows = windows.batch(batch_size, drop_remainder=True)
  else:
    def tiled_windows(c):  # consecutive windows covering the clip once; the last one masked
      return cut(c, tf.range(0, c['num_frames'], W, dtype=tf.int32))
    windows = clips.flat_map(tiled_windows)
    windows = windows.batch(batch_size, drop_remainder=False).map(lambda b: _pad_batch(b, batch_size))

  def shapes(b):
    b['audio'] = tf.ensure_shape(b['audio'], (batch_size, A))
    b['pose'] = tf.ensure_shape(b['pose'], (batch_size, W, 3))
    b['mask'] = tf.ensure_shape(b['mask'], (batch_size, W))
    return b
  return _options(windows.map(shapes).prefetch(AUTOTUNE))


def windows_pipeline(data_dir: str | pathlib.Path, split: str, *, window: int, batch_size: int,
                     seed: int, train: bool = True, latents: str | None = None,
                     normalize_latents: bool = True, process_index: int = 0, process_count: int = 1,
                     windows_per_clip: int | None = None, cache: bool = True,
                     with_ids: bool = False) -> Iterator[dict[str, Any]]:
  """Batches of W-frame windows with their aligned audio.

  Returns {'audio': (B, W*640) float32 in [-1, 1], 'pose': (B, W, 3) float32,
  'mask': (B, W) bool, 'latent': (B, W, D) float32 (when `latents` names a folder under
  DATA_DIR/latents/, z-normalised with its stats.json unless normalize_latents=False)}.
  Training draws `windows_per_clip` random windows (default: num_frames // W, at least 1) per
  clip visit; clips shorter than W give one zero-padded, masked window. Eval tiles each clip
  with consecutive windows. `with_ids` adds 'clip_id' (B,) bytes and 'start' (B,) int32.
  """
  return iter(tfds.as_numpy(windows_dataset(
      data_dir, split, window=window, batch_size=batch_size, seed=seed, train=train,
      latents=latents, normalize_latents=normalize_latents, process_index=process_index,
      process_count=process_count, windows_per_clip=windows_per_clip, cache=cache,
      with_ids=with_ids)))
