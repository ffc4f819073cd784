"""Writes the prepared clips as a TFDS dataset folder (TFRecord shards + dataset_info.json).

Clips arrive one at a time while videos are decoded, but the train/val/test split is chosen only
when every clip is known (by clip or by identity, with minimum counts per split). So each clip is serialised
once, with the dataset's own `FeaturesDict`, into a per-source *staging* TFRecord; a source that
fails half way is discarded by deleting its staging file. `finalize` then copies the serialised
records into the split shards (no re-encoding) and writes the TFDS metadata, after which
`tfds.builder_from_directory(folder)` reads the dataset. Everything happens inside the caller's
temporary folder; `prepare.py` renames it into place.

Feature spec (docs/ARCHITECTURE.md), one example per clip. `identity` was added later: datasets written
before it lack the feature, and `daetalker_jax.data.dataset` reads them with identity ''.
"""

from __future__ import annotations

import dataclasses
import pathlib
import shutil
from collections.abc import Mapping

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

DATASET_NAME = 'daetalker_faces'
VERSION = '1.0.0'
SPLITS = ('train', 'val', 'test')
NUM_LANDMARKS = 68
_SHARD_BYTES = 128 * 2**20  # start a new shard past this size


def make_features(image_size: int) -> tfds.features.FeaturesDict:
  """The per-clip feature spec; `image_size` S fixes the JPEG crop shape (S, S, 3)."""
  f = tfds.features
  return f.FeaturesDict({
      'clip_id': f.Text(),
      'source': f.Text(),
      'identity': f.Text(),                # the person (data_prep.prepare: sidecar, folder or file name)
      'start_frame': f.Scalar(np.int32),   # index of the clip's first frame in the 25 fps source
      'fps': f.Scalar(np.int32),
      'sample_rate': f.Scalar(np.int32),
      'num_frames': f.Scalar(np.int32),
      'num_audio_samples': f.Scalar(np.int32),
      # Raw bytes: 2 bytes a sample, parsed without per-value proto overhead.
      'audio': f.Tensor(shape=(None,), dtype=np.int16, encoding=f.Encoding.BYTES),
      'frames': f.Sequence({
          'image': f.Image(shape=(image_size, image_size, 3), encoding_format='jpeg'),
          'pose': f.Tensor(shape=(3,), dtype=np.float32),           # yaw, pitch, roll (deg)
          'landmarks': f.Tensor(shape=(NUM_LANDMARKS, 2), dtype=np.float32),  # crop pixels
          'landmarks_valid': f.Scalar(np.bool_),
          'box': f.Tensor(shape=(4,), dtype=np.float32),            # x0, y0, x1, y1 source px
      }),
  })


@dataclasses.dataclass
class StagedClip:
  clip_id: str
  source: str
  num_frames: int
  staging_file: pathlib.Path
  index: int  # record index inside staging_file


class SourceStage:
  """Collects the serialised clips of one source; `commit()` keeps them, `discard()` drops them."""

  def __init__(self, writer: DatasetWriter, path: pathlib.Path):
    self._writer = writer
    self.path = path
    self._tf_writer = tf.io.TFRecordWriter(str(path))
    self.clips: list[StagedClip] = []

  def add_clip(self, example: Mapping[str, object]) -> None:
    data = self._writer.features.serialize_example(example)
    self._tf_writer.write(data)
    self.clips.append(StagedClip(clip_id=str(example['clip_id']), source=str(example['source']),
                                 num_frames=int(example['num_frames']), staging_file=self.path,
                                 index=len(self.clips)))

  def commit(self) -> list[StagedClip]:
    self._tf_writer.close()
    self._writer.clips.extend(self.clips)
    return self.clips

  def discard(self) -> None:
    self._tf_writer.close()
    self.path.unlink(missing_ok=True)
    self.clips = []


class DatasetWriter:
  """Stages clips under `data_dir/_staging`, then writes the TFDS splits into `data_dir`."""

  def __init__(self, data_dir: str | pathlib.Path, image_size: int):
    self.data_dir = pathlib.Path(data_dir)
    self.image_size = image_size
    self.features = make_features(image_size)
    self.staging_dir = self.data_dir / '_staging'
    self.staging_dir.mkdir(parents=True, exist_ok=True)
    self.clips: list[StagedClip] = []
    self._num_stages = 0

  def stage(self) -> SourceStage:
    self._num_stages += 1
    return SourceStage(self, self.staging_dir / f'source-{self._num_stages:05d}.tfrecord')

  def finalize(self, assignment: Mapping[str, str], metadata: Mapping[str, object]) -> dict[str, int]:
    """Writes every staged clip into the split `assignment[clip_id]`; returns clips per split."""
    records: dict[str, list[tuple[str, StagedClip]]] = {s: [] for s in SPLITS}
    for clip in self.clips:
      records[assignment[clip.clip_id]].append((clip.clip_id, clip))
    # Read the staged bytes back once per staging file, in order.
    payload: dict[str, bytes] = {}
    by_file: dict[pathlib.Path, list[StagedClip]] = {}
    for clip in self.clips:
      by_file.setdefault(clip.staging_file, []).append(clip)
    for path, clips in by_file.items():
      for clip, raw in zip(clips, tf.data.TFRecordDataset(str(path)).as_numpy_iterator(), strict=True):
        payload[clip.clip_id] = raw

    split_infos = []
    counts = {}
    for split in SPLITS:
      items = sorted(records[split])
      # Group records into shards of about _SHARD_BYTES.
      shards: list[list[bytes]] = [[]]
      size = 0
      for clip_id, _ in items:
        raw = payload[clip_id]
        if shards[-1] and size + len(raw) > _SHARD_BYTES:
          shards.append([])
          size = 0
        shards[-1].append(raw)
        size += len(raw)
      template = tfds.core.ShardedFileTemplate(
          data_dir=self.data_dir, dataset_name=DATASET_NAME, split=split, filetype_suffix='tfrecord')
      num_bytes = 0
      for i, shard in enumerate(shards):
        # An empty split still gets one (empty) shard so that reading it yields nothing, not an error.
        with tf.io.TFRecordWriter(str(template.sharded_filepath(shard_index=i, num_shards=len(shards)))) as w:
          for raw in shard:
            w.write(raw)
            num_bytes += len(raw)
      split_infos.append(tfds.core.SplitInfo(
          name=split, shard_lengths=[len(s) for s in shards], num_bytes=num_bytes,
          filename_template=template))
      counts[split] = len(items)

    info = tfds.core.DatasetInfo(
        builder=tfds.core.DatasetIdentity(
            name=DATASET_NAME, version=tfds.core.Version(VERSION), data_dir=str(self.data_dir),
            module_name=__name__),
        description='Talking-face clips: 25 fps JPEG face crops, 16 kHz int16 audio (640 samples '
                    'per frame), head pose, landmarks, crop boxes. Written by data_prep.prepare.',
        features=self.features,
        metadata=tfds.core.MetadataDict(dict(metadata)),
    )
    info.set_file_format('tfrecord')
    info.set_splits(tfds.core.SplitDict(split_infos))
    info.write_to_directory(self.data_dir)
    shutil.rmtree(self.staging_dir)
    return counts
