"""tf.data pipelines over a dataset prepared from tiny ffmpeg-made videos."""

import json

import numpy as np
import pytest

from daetalker_jax.data import dataset
from daetalker_jax.data import pipelines
from data_prep import prepare
from tests import _videos

SIZE = 32
W = 8


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp('pipe')
  src = _videos.make_source_folder(root / 'src')
  out = root / 'data'
  prepare.prepare(src, out, size=SIZE, crop='none', max_clip_seconds=1.0, seed=0,
                  val_fraction=0.25, test_fraction=0.25)
  return out


@pytest.fixture(scope='module')
def clips(data_dir):
  return {s: {c['clip_id']: c for c in dataset.iterate_clips(data_dir, s)} for s in ('train', 'val', 'test')}


def _take(it, n):
  return [next(it) for _ in range(n)]


def test_frames_train(data_dir, clips):
  it = pipelines.frames_pipeline(data_dir, 'train', image_size=SIZE, batch_size=5, seed=0, with_ids=True)
  for b in _take(it, 6):
    assert b['image'].shape == (5, SIZE, SIZE, 3) and b['image'].dtype == np.float32
    assert b['pose'].shape == (5, 3)
    assert -1.0 <= b['image'].min() and b['image'].max() <= 1.0 and b['image'].std() > 0.05
    for i in range(5):  # each row is the stored frame with its own pose
      c = clips['train'][b['clip_id'][i].decode()]
      f = b['frame'][i]
      np.testing.assert_allclose(b['pose'][i], c['pose'][f])
      np.testing.assert_allclose((b['image'][i] + 1) * 127.5, c['images'][f], atol=1.0)
  # Resizing to another model resolution.
  b = next(pipelines.frames_pipeline(data_dir, 'train', image_size=16, batch_size=2, seed=0))
  assert b['image'].shape == (2, 16, 16, 3)


def test_frames_mouth_box_from_landmarks(tiny_dataset, data_dir):
  """synthface's sidecar landmarks reach the batches as the mouth box; sources without landmarks are invalid."""
  b = next(pipelines.frames_pipeline(tiny_dataset, 'train', image_size=32, batch_size=8, seed=0, with_ids=True))
  assert b['mouth_valid'].all() and b['mouth_box'].shape == (8, 4)
  box = b['mouth_box']
  assert ((box >= 0) & (box <= 1)).all() and (box[:, 2] > box[:, 0]).all() and (box[:, 3] > box[:, 1]).all()
  centre = (box[:, :2] + box[:, 2:]) / 2
  assert (np.abs(centre[:, 0] - 0.5) < 0.15).all() and ((centre[:, 1] > 0.6) & (centre[:, 1] < 0.85)).all()
  clip = next(c for c in dataset.iterate_clips(tiny_dataset, 'train') if c['clip_id'] == b['clip_id'][0].decode())
  mouth = clip['landmarks'][b['frame'][0], 48:68] / 32
  np.testing.assert_allclose(box[0], np.concatenate([mouth.min(0), mouth.max(0)]), atol=1e-6)
  flipped = next(pipelines.frames_pipeline(tiny_dataset, 'train', image_size=32, batch_size=64, seed=0,
                                           hflip=True, shuffle_buffer=1))
  plain = next(pipelines.frames_pipeline(tiny_dataset, 'train', image_size=32, batch_size=64, seed=0,
                                         shuffle_buffer=1))
  was_flipped = np.abs(flipped['image'] - plain['image'][:, :, ::-1]).max(axis=(1, 2, 3)) < 1e-6
  assert 0 < was_flipped.sum() < 64
  np.testing.assert_allclose(flipped['mouth_box'][was_flipped][:, [2, 1, 0, 3]] * [-1, 1, -1, 1] + [1, 0, 1, 0],
                             plain['mouth_box'][was_flipped], atol=1e-6)
  b = next(pipelines.frames_pipeline(data_dir, 'train', image_size=SIZE, batch_size=4, seed=0))
  assert not b['mouth_valid'].any()


def test_frames_deterministic(data_dir):
  def first(seed):
    it = pipelines.frames_pipeline(data_dir, 'train', image_size=SIZE, batch_size=4, seed=seed,
                                   shuffle_buffer=64)
    return np.concatenate([b['image'] for b in _take(it, 3)])
  a, b, c = first(0), first(0), first(1)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def test_frames_eval_covers_each_frame_once_and_shards(data_dir, clips):
  for split in ('train', 'val'):
    total = sum(c['num_frames'] for c in clips[split].values())
    seen = []
    for p in range(2):
      got = []
      for b in pipelines.frames_pipeline(data_dir, split, image_size=SIZE, batch_size=4, seed=0,
                                         train=False, with_ids=True, process_index=p, process_count=2):
        assert b['image'].shape == (4, SIZE, SIZE, 3) and b['mask'].shape == (4,)
        got += [(cid.decode(), int(f)) for cid, f, m in zip(b['clip_id'], b['frame'], b['mask']) if m]
        assert np.all(b['image'][~b['mask']] == 0)  # padding rows
      assert abs(len(got) - total / 2) <= 1  # frame-index sharding is balanced
      seen.append(set(got))
      assert len(got) == len(seen[-1])
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == {(cid, f) for cid, c in clips[split].items() for f in range(c['num_frames'])}


def test_frames_train_shards_disjoint(data_dir, clips):
  # Training shuffles across epoch boundaries; with a 1-frame buffer the first batch is exactly
  # each process's share of the first epoch (the clip order, seeded alike, is common to both).
  half = sum(c['num_frames'] for c in clips['train'].values()) // 2
  ids = []
  for p in range(2):
    it = pipelines.frames_pipeline(data_dir, 'train', image_size=SIZE, batch_size=half, seed=0,
                                   process_index=p, process_count=2, with_ids=True, shuffle_buffer=1)
    b = next(it)
    ids.append({(c.decode(), int(f)) for c, f in zip(b['clip_id'], b['frame'])})
  assert len(ids[0]) == len(ids[1]) == half and not ids[0] & ids[1]


def test_windows_train(data_dir, clips):
  it = pipelines.windows_pipeline(data_dir, 'train', window=W, batch_size=3, seed=0, with_ids=True)
  for b in _take(it, 5):
    assert b['audio'].shape == (3, W * 640) and b['audio'].dtype == np.float32
    assert b['pose'].shape == (3, W, 3) and b['mask'].shape == (3, W) and b['mask'].dtype == bool
    assert np.abs(b['audio']).max() <= 1.0
    for i in range(3):
      c = clips['train'][b['clip_id'][i].decode()]
      s, n = int(b['start'][i]), c['num_frames']
      valid = min(W, n - s)
      assert b['mask'][i].sum() == valid and b['mask'][i, :valid].all()
      assert n < W or s + W <= n  # full windows whenever the clip is long enough
      np.testing.assert_array_equal(b['audio'][i, :valid * 640], c['audio'][s * 640:(s + valid) * 640] / 32768)
      np.testing.assert_allclose(b['pose'][i, :valid], c['pose'][s:s + valid])
      assert np.all(b['audio'][i, valid * 640:] == 0)


def test_windows_deterministic_and_seeded(data_dir):
  def first(seed):
    it = pipelines.windows_pipeline(data_dir, 'train', window=W, batch_size=2, seed=seed, with_ids=True)
    return [(b['clip_id'].tolist(), b['start'].tolist()) for b in _take(it, 4)]
  assert first(3) == first(3)
  assert first(3) != first(4)


def test_windows_short_clip_is_padded_and_masked(data_dir, clips):
  window = 40  # longer than every clip (25 frames at most)
  it = pipelines.windows_pipeline(data_dir, 'train', window=window, batch_size=2, seed=0, with_ids=True)
  b = next(it)
  for i in range(2):
    n = clips['train'][b['clip_id'][i].decode()]['num_frames']
    assert b['start'][i] == 0 and b['mask'][i].sum() == n and not b['mask'][i, n:].any()
    assert np.all(b['pose'][i, n:] == 0)


def test_windows_eval_and_process_shards(data_dir, clips):
  per_proc = []
  for p in range(2):
    frames, ids = 0, set()
    for b in pipelines.windows_pipeline(data_dir, 'train', window=W, batch_size=4, seed=0, train=False,
                                        process_index=p, process_count=2, with_ids=True):
      assert b['audio'].shape == (4, W * 640)
      frames += int(b['mask'].sum())
      ids |= {c.decode() for c, m in zip(b['clip_id'], b['mask'].any(1)) if m}
    assert frames == sum(clips['train'][c]['num_frames'] for c in ids)  # every frame exactly once
    per_proc.append(ids)
  assert not per_proc[0] & per_proc[1]
  assert per_proc[0] | per_proc[1] == set(clips['train'])


def test_windows_latents(data_dir, clips):
  folder = data_dir / 'latents' / 'test_dae'
  folder.mkdir(parents=True, exist_ok=True)
  D = 4
  for split in ('train', 'val', 'test'):
    for cid, c in clips[split].items():
      z = np.arange(c['num_frames'], dtype=np.float32)[:, None] * np.ones(D, np.float32)  # z[k] = k
      np.save(folder / f'{cid}.npy', z)
  (folder / 'stats.json').write_text(json.dumps(dict(mean=[1.0] * D, std=[2.0] * D, dim=D)))
  it = pipelines.windows_pipeline(data_dir, 'train', window=W, batch_size=3, seed=0, latents='test_dae',
                                  with_ids=True)
  b = next(it)
  assert b['latent'].shape == (3, W, D)
  expected = ((b['start'][:, None] + np.arange(W)[None]) - 1.0) / 2.0
  np.testing.assert_allclose(b['latent'][..., 0], np.where(b['mask'], expected, 0))
  b = next(pipelines.windows_pipeline(data_dir, 'train', window=W, batch_size=3, seed=0, latents='test_dae',
                                      normalize_latents=False, with_ids=True))
  np.testing.assert_allclose(b['latent'][..., 0], np.where(b['mask'], b['start'][:, None] + np.arange(W), 0))
  # A missing latent file is named before the pipeline starts.
  victim = sorted(clips['val'])[0]
  (folder / f'{victim}.npy').unlink()
  with pytest.raises(FileNotFoundError, match=victim):
    pipelines.windows_pipeline(data_dir, 'val', window=W, batch_size=2, seed=0, latents='test_dae')


def test_bad_dataset_dir(tmp_path):
  with pytest.raises(dataset.DatasetError, match='not a prepared dataset'):
    pipelines.frames_pipeline(tmp_path, 'train', image_size=SIZE, batch_size=2, seed=0)
