"""Reading the prepared dataset (the TFDS folder written by `data_prep.prepare`).

One example is one clip (see docs/ARCHITECTURE.md). `load_clips` gives the tf.data view the
pipelines build on; `iterate_clips` gives whole clips as numpy for latent extraction and
evaluation; `dataset_info` answers "how big is it" without reading any shard.
Datasets prepared before clips carried an `identity` read as identity '' (unknown) in `iterate_clips`;
`load_clips` gives the records as stored (check `'identity' in ds.element_spec`).
"""

from __future__ import annotations

import functools
import json
import pathlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

SPLITS = ('train', 'val', 'test')


class DatasetError(ValueError):
  """The dataset folder is missing or unusable; the message names it."""


@functools.lru_cache(maxsize=16)
def _builder(data_dir: str, stamp: tuple[int, int]) -> tfds.core.DatasetBuilder:
  del stamp  # part of the cache key only: a re-prepared folder is read afresh
  return tfds.builder_from_directory(data_dir)


def get_builder(data_dir: str | pathlib.Path) -> tfds.core.DatasetBuilder:
  info = pathlib.Path(data_dir).resolve() / 'dataset_info.json'
  if not info.is_file():
    raise DatasetError(f'{data_dir}: not a prepared dataset (no dataset_info.json); '
                       'create it with python -m data_prep.prepare')
  st = info.stat()
  return _builder(str(info.parent), (st.st_mtime_ns, st.st_ino))


def num_clips(data_dir: str | pathlib.Path, split: str) -> int:
  splits = get_builder(data_dir).info.splits
  if split not in splits:
    raise DatasetError(f'{data_dir}: no split {split!r} (have {sorted(splits)})')
  return int(splits[split].num_examples or 0)


def load_clips(data_dir: str | pathlib.Path, split: str, *, decode_images: bool = True,
               read_config: tfds.ReadConfig | None = None) -> tf.data.Dataset:
  """tf.data.Dataset of clips, in file order (deterministic).

  decode_images=False keeps `frames/image` as JPEG strings, so callers can decode only the frames
  they use, in parallel (the pipelines do).
  An empty split gives an empty dataset with the same element spec (TFDS itself refuses to read
  a split without examples).
  """
  builder = get_builder(data_dir)
  decoders = None if decode_images else {'frames': {'image': tfds.decode.SkipDecoding()}}
  read_config = read_config or tfds.ReadConfig(shuffle_seed=0, interleave_cycle_length=1)
  if split in builder.info.splits and num_clips(data_dir, split) == 0:
    nonempty = next(s for s, info in builder.info.splits.items() if info.num_examples)
    return builder.as_dataset(split=nonempty, decoders=decoders, read_config=read_config,
                              shuffle_files=False).take(0)
  if split not in builder.info.splits and split.split('[')[0] not in builder.info.splits:
    raise DatasetError(f'{data_dir}: no split {split!r} (have {sorted(builder.info.splits)})')
  return builder.as_dataset(split=split, decoders=decoders, read_config=read_config,
                            shuffle_files=False)


def dataset_info(data_dir: str | pathlib.Path) -> dict[str, Any]:
  """{'image_size', 'fps', 'sample_rate', 'crop', 'splits': {split: {'clips', 'frames'}}, 'split_by',
  'identities': {split: [identity, ...]} or None}; older datasets give split_by 'clip' and identities None."""
  meta = dict(get_builder(data_dir).info.metadata or {})
  splits = {s: dict(v) for s, v in meta.get('splits', {}).items()}
  for s in get_builder(data_dir).info.splits:
    splits.setdefault(s, dict(clips=num_clips(data_dir, s), frames=None))
  identities = meta.get('identities')
  return dict(image_size=meta.get('image_size'), fps=meta.get('fps', 25),
              sample_rate=meta.get('sample_rate', 16000), crop=meta.get('crop'), splits=splits,
              split_by=meta.get('split_by', 'clip'),
              identities={s: list(v) for s, v in identities.items()} if identities else None)


def read_manifest(data_dir: str | pathlib.Path) -> dict[str, Any]:
  path = pathlib.Path(data_dir) / 'manifest.json'
  if not path.is_file():
    raise DatasetError(f'{data_dir}: no manifest.json')
  return json.loads(path.read_text())


def clip_ids(data_dir: str | pathlib.Path, split: str) -> list[str]:
  """Clip ids of a split, from the manifest (no shard is read)."""
  out = []
  for src in read_manifest(data_dir)['sources']:
    out += [c['clip_id'] for c in src.get('clips', []) if c.get('split') == split]
  return sorted(out)


def clip_table(data_dir: str | pathlib.Path, split: str) -> list[tuple[str, int]]:
  """(clip_id, num_frames) of a split's clips in record order, from the manifest (no shard is read).

  data_prep writes a split's records sorted by clip id, so this is also the order of `load_clips`;
  the pipelines plan per-process shares with it and check it against the records they read.
  """
  splits = get_builder(data_dir).info.splits  # first: names a folder that is no dataset at all
  table = {}
  for src in read_manifest(data_dir)['sources']:
    for c in src.get('clips', []):
      if c.get('split') == split:
        if 'num_frames' not in c:
          raise DatasetError(f'{data_dir}: manifest.json gives no num_frames for clip {c["clip_id"]} '
                             '(prepare the dataset again)')
        table[c['clip_id']] = int(c['num_frames'])
  if split in splits and len(table) != num_clips(data_dir, split):
    raise DatasetError(f'{data_dir}: manifest.json lists {len(table)} clips of split {split!r}, '
                       f'the records hold {num_clips(data_dir, split)}')
  return sorted(table.items())


def iterate_clips(data_dir: str | pathlib.Path, split: str) -> Iterator[dict[str, Any]]:
  """Yields whole clips as numpy: clip_id (str), source (str), identity (str; '' in datasets prepared
  before identities), start_frame, num_frames, fps, images uint8 (N, S, S, 3), pose float32 (N, 3),
  landmarks float32 (N, 68, 2), landmarks_valid bool (N,), box float32 (N, 4), audio int16 (N*640,)."""
  for ex in tfds.as_numpy(load_clips(data_dir, split)):
    frames = ex['frames']
    yield dict(
        clip_id=ex['clip_id'].decode(), source=ex['source'].decode(),
        identity=ex['identity'].decode() if 'identity' in ex else '',
        start_frame=int(ex['start_frame']), num_frames=int(ex['num_frames']), fps=int(ex['fps']),
        sample_rate=int(ex['sample_rate']), images=frames['image'], pose=frames['pose'],
        landmarks=frames['landmarks'], landmarks_valid=frames['landmarks_valid'],
        box=frames['box'], audio=ex['audio'])


def latents_dir(data_dir: str | pathlib.Path, name: str) -> pathlib.Path:
  return pathlib.Path(data_dir) / 'latents' / name


def load_latent_stats(data_dir: str | pathlib.Path, name: str) -> dict[str, np.ndarray]:
  path = latents_dir(data_dir, name) / 'stats.json'
  if not path.is_file():
    raise DatasetError(f'{path}: missing latent statistics (run latent extraction first)')
  stats = json.loads(path.read_text())
  return dict(mean=np.asarray(stats['mean'], np.float32), std=np.asarray(stats['std'], np.float32),
              dim=int(stats.get('dim', len(stats['mean']))))
