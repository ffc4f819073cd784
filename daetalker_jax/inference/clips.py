"""Look-ups in a prepared dataset that inference options refer to: a clip by id, one of its frames."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from daetalker_jax.inference.errors import GenerateError


def clip_examples(data_dir: str) -> Iterator[dict[str, Any]]:
  """Every clip of every split as numpy, images left as JPEG bytes (only the used ones get decoded)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from daetalker_jax.data import dataset  # pylint: disable=g-import-not-at-top
  try:
    splits = [s for s in dataset.get_builder(data_dir).info.splits if dataset.num_clips(data_dir, s)]
  except dataset.DatasetError as e:
    raise GenerateError(str(e)) from None
  for split in splits:
    yield from tfds.as_numpy(dataset.load_clips(data_dir, split, decode_images=False))


def find_clip(data_dir: str, clip_id: str, flag: str) -> dict[str, Any]:
  for ex in clip_examples(data_dir):
    if ex['clip_id'].decode() == clip_id:
      return ex
  raise GenerateError(f'{flag}: no clip {clip_id!r} in {data_dir}')


def reference_frame(data_dir: str, clip_id: str, frame: int) -> np.ndarray:
  """Frame `frame` of a dataset clip as float32 (S, S, 3) in [-1, 1]."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  ex = find_clip(data_dir, clip_id, '--noise')
  images = ex['frames']['image']
  if not 0 <= frame < len(images):
    raise GenerateError(f'--noise: clip {clip_id!r} has {len(images)} frames; frame {frame} does not exist')
  img = tf.io.decode_jpeg(images[frame], channels=3).numpy()
  return img.astype(np.float32) / 127.5 - 1.0
