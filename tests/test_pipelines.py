"""tf.data pipelines over a dataset prepared from tiny ffmpeg-made videos."""

import json

import numpy as np
import pytest
import tensorflow as tf

from daetalker_jax.data import dataset
from daetalker_jax.data import pipelines
from data_prep import prepare
from tests import _videos


# Its module fixtures are built once: pytest-xdist runs the whole module on one worker.
pytestmark = pytest.mark.xdist_group('pipelines')


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
                                           hflip=True))
  plain = next(pipelines.frames_pipeline(tiny_dataset, 'train', image_size=32, batch_size=64, seed=0))
  was_flipped = np.abs(flipped['image'] - plain['image'][:, :, ::-1]).max(axis=(1, 2, 3)) < 1e-6
  assert 0 < was_flipped.sum() < 64
  np.testing.assert_allclose(flipped['mouth_box'][was_flipped][:, [2, 1, 0, 3]] * [-1, 1, -1, 1] + [1, 0, 1, 0],
                             plain['mouth_box'][was_flipped], atol=1e-6)
  b = next(pipelines.frames_pipeline(data_dir, 'train', image_size=SIZE, batch_size=4, seed=0))
  assert not b['mouth_valid'].any()


def test_frames_deterministic(data_dir):
  def first(seed):
    it = pipelines.frames_pipeline(data_dir, 'train', image_size=SIZE, batch_size=4, seed=seed)
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


def _all_frames(clips):
  return {(cid, f) for cid, c in clips.items() for f in range(c['num_frames'])}


def _rows(batches, *keys):
  return [tuple(k.decode() if isinstance(k, bytes) else int(k) for k in row)
          for b in batches for row in zip(*(b[k] for k in keys))]


@pytest.mark.parametrize('count', [2, 3])
def test_frames_train_shards_read_only_their_records(data_dir, clips, count):
  """Each process's first epoch is its own contiguous share, every frame once; shares are disjoint, cover the
  split and are balanced; a process reads only the records (clips) holding its share."""
  total = sum(c['num_frames'] for c in clips['train'].values())
  seen = []
  for p in range(count):
    share = pipelines.frame_share(data_dir, 'train', p, count)
    size = total * (p + 1) // count - total * p // count
    assert share.num_frames == size
    assert len(share.clip_ids) < len(clips['train'])  # not every record: only those that hold its frames
    it = pipelines.frames_pipeline(data_dir, 'train', image_size=SIZE, batch_size=3, seed=0,
                                   process_index=p, process_count=count, with_ids=True)
    got = _rows(_take(it, -(-size // 3)), 'clip_id', 'frame')[:size]
    assert len(set(got)) == size  # one epoch: each of its frames exactly once
    assert {cid for cid, _ in got} == set(share.clip_ids)
    seen.append(set(got))
  assert sum(map(len, seen)) == total and set().union(*seen) == _all_frames(clips['train'])


def test_frames_train_epochs_are_fresh_permutations(data_dir, clips):
  total = sum(c['num_frames'] for c in clips['train'].values())
  it = pipelines.frames_pipeline(data_dir, 'train', image_size=SIZE, batch_size=total, seed=0, with_ids=True)
  e0, e1 = (_rows([next(it)], 'clip_id', 'frame') for _ in range(2))
  assert set(e0) == set(e1) == _all_frames(clips['train']) and e0 != e1
  assert e0 != sorted(e0)  # shuffled, not record order


def _count_decodes(monkeypatch) -> tf.Variable:
  """Counts the JPEG decodes of pipelines built after the call."""
  calls = tf.Variable(0, dtype=tf.int64, trainable=False)
  decode = pipelines._decode_jpeg  # pylint: disable=protected-access

  def counting(jpeg):
    with tf.control_dependencies([calls.assign_add(1)]):
      return tf.identity(decode(jpeg))
  monkeypatch.setattr(pipelines, '_decode_jpeg', counting)
  return calls


@pytest.mark.parametrize('process_index', [0, 1])
def test_frames_resume_matches_uninterrupted_without_decoding_skipped(data_dir, monkeypatch, process_index):
  calls = _count_decodes(monkeypatch)
  B, N, M = 4, 150, 3  # 600 skipped frames: several epochs of a process's share, and a batch across epochs
  kw = dict(image_size=SIZE, batch_size=B, seed=0, hflip=True, with_ids=True, process_index=process_index,
            process_count=2)
  full = _take(pipelines.frames_pipeline(data_dir, 'train', **kw), N + M)
  assert int(calls.numpy()) >= (N + M) * B
  calls.assign(0)
  resumed = _take(pipelines.frames_pipeline(data_dir, 'train', start_batch=N, **kw), M)
  decoded = int(calls.numpy())
  for a, b in zip(full[N:], resumed, strict=True):
    assert a.keys() == b.keys()
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
  assert decoded < N * B // 4, decoded  # only what is read ahead of the M batches, none of the N skipped
  # Resuming deep into a run costs no more than resuming at step N.
  calls.assign(0)
  next(pipelines.frames_pipeline(data_dir, 'train', start_batch=10**9, **kw))
  assert int(calls.numpy()) < N * B // 4


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


def test_windows_train_shards_by_clip(data_dir, clips):
  """Training windows of two processes come from disjoint halves of the clips, together all of them."""
  per_proc = []
  for p in range(2):
    share = pipelines.clip_share(data_dir, 'train', p, 2)
    it = pipelines.windows_pipeline(data_dir, 'train', window=W, batch_size=2, seed=0, process_index=p,
                                    process_count=2, with_ids=True)
    ids = {cid for cid, _ in _rows(_take(it, 10), 'clip_id', 'start')}
    assert ids == set(share.clip_ids)
    per_proc.append(ids)
  assert not per_proc[0] & per_proc[1] and per_proc[0] | per_proc[1] == set(clips['train'])


def test_windows_resume_matches_uninterrupted(data_dir, monkeypatch):
  N, M = 40, 3  # 120 skipped windows: many epochs (a few windows per epoch)
  kw = dict(window=W, batch_size=3, seed=0, with_ids=True, process_index=1, process_count=2)
  full = _take(pipelines.windows_pipeline(data_dir, 'train', **kw), N + M)
  resumed = _take(pipelines.windows_pipeline(data_dir, 'train', start_batch=N, **kw), M)
  for a, b in zip(full[N:], resumed, strict=True):
    assert a.keys() == b.keys()
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
  # Fresh random starts every epoch (this share's clips, of 20 and 25 frames, allow 13 + 18 starts).
  assert len(set(_rows(full, 'clip_id', 'start'))) > 20
  # Positioned, not replayed: a start 10**12 batches in reads its first element from the epoch that holds it
  # (counted where the stream materialises each epoch; a replay would walk every epoch before it and fail here).
  epochs, epoch_stream = [], pipelines._epoch_stream  # pylint: disable=protected-access

  def counting_epoch_stream(size, start, make_epoch):
    sizes.append(size)

    def note(e):
      epochs.append(int(e))
      if len(epochs) > 1000:
        raise RuntimeError(f'replaying: {len(epochs)} epochs read')
      return e

    def counted(e):
      e = tf.ensure_shape(tf.py_function(note, [e], tf.int64), [])
      return make_epoch(e)
    return epoch_stream(size, start, counted)

  sizes = []
  monkeypatch.setattr(pipelines, '_epoch_stream', counting_epoch_stream)
  batch = next(pipelines.windows_pipeline(data_dir, 'train', start_batch=10**12, **kw))
  assert batch['audio'].shape[0] == 3
  assert epochs[0] == 10**12 * 3 // sizes[0] and len(epochs) < 100, (epochs[:5], len(epochs), sizes)


def _write_latents(data_dir, clips, name, dim=4):
  """Latents z[k] = k (every dim) for every clip of every split, stats mean 1 / std 2."""
  folder = data_dir / 'latents' / name
  folder.mkdir(parents=True, exist_ok=True)
  for split in ('train', 'val', 'test'):
    for cid, c in clips[split].items():
      z = np.arange(c['num_frames'], dtype=np.float32)[:, None] * np.ones(dim, np.float32)
      np.save(folder / f'{cid}.npy', z)
  (folder / 'stats.json').write_text(json.dumps(dict(mean=[1.0] * dim, std=[2.0] * dim, dim=dim)))


@pytest.mark.parametrize('task', ['dae', 's2l'])
def test_task_stream_resumes_at_start_step(data_dir, clips, task):
  """The tasks' `make_datasets(..., start_step=N)` gives what an uninterrupted stream gives after N batches."""
  import importlib  # pylint: disable=g-import-not-at-top
  config = importlib.import_module(f'configs.{task}').get_config('variant=tiny')
  config.data.data_dir = str(data_dir)
  config.batch_size = 4
  if task == 'dae':
    from daetalker_jax.tasks import dae as module  # pylint: disable=g-import-not-at-top
    config.num_eval_images = 2
  else:
    from daetalker_jax.tasks import speech2latent as module  # pylint: disable=g-import-not-at-top
    _write_latents(data_dir, clips, 'resume_z')
    config.data.latents, config.data.window, config.num_eval_windows = 'resume_z', W, 4
  N, M = 30, 2
  full, _ = module.make_datasets(config, 1, 2)
  full = _take(full, N + M)[N:]
  resumed, _ = module.make_datasets(config, 1, 2, start_step=N)
  for a, b in zip(full, _take(resumed, M), strict=True):
    assert a.keys() == b.keys() and a['image' if task == 'dae' else 'audio'].shape[0] == 2
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])


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
