"""Latent extraction and the speech2latent task on the shared training loop (tiny models, CPU)."""
import json

from flax import nnx
import jax
import numpy as np

from configs import s2l as s2l_config
from daetalker_jax import checkpoint
from daetalker_jax import extract
from daetalker_jax import train
from daetalker_jax.data import dataset


def test_extraction_writes_every_clip_and_stats(tiny_dataset, tiny_dae_workdir, tiny_latents):
  """Every frame's latent is the DAE's EMA encoder of that frame (model.encode on the prepared crop, in
  [-1, 1]); the stats are the train split's per-dimension mean and std."""
  folder = dataset.latents_dir(tiny_dataset, tiny_latents)
  stats = json.loads((folder / 'stats.json').read_text())
  info = dataset.dataset_info(tiny_dataset)['splits']
  model, _ = checkpoint.load_model(str(tiny_dae_workdir), which='ema')
  encode = nnx.jit(lambda m, x: m.encode(x))
  train_latents = []
  for split in ('train', 'val', 'test'):
    for clip in dataset.iterate_clips(tiny_dataset, split):
      z = np.load(folder / f"{clip['clip_id']}.npy")
      assert z.shape == (clip['num_frames'], stats['dim'])
      expected = np.asarray(encode(model, clip['images'].astype(np.float32) / 127.5 - 1))
      np.testing.assert_allclose(z, expected, atol=1e-4, rtol=1e-4)
      if split == 'train':
        train_latents.append(z)
  train_latents = np.concatenate(train_latents)
  assert stats['frames'] == info['train']['frames'] == len(train_latents)
  assert len(stats['mean']) == len(stats['std']) == stats['dim'] == 64
  np.testing.assert_allclose(stats['mean'], train_latents.mean(0), atol=1e-4)
  np.testing.assert_allclose(stats['std'], train_latents.std(0), rtol=1e-3)
  assert min(stats['std']) > 0
  assert not (tiny_dae_workdir / 'recon').exists()   # eval_every_steps=0: no evaluation, not even at the end


def test_extraction_on_8_devices_equals_1_and_rerun_skips(tiny_dataset, tiny_dae_workdir, capsys):
  assert jax.device_count() == 8
  one = extract.extract_latents(str(tiny_dae_workdir), str(tiny_dataset), name='one', batch_size=8,
                                splits=('train',), devices=jax.devices()[:1])
  eight = extract.extract_latents(str(tiny_dae_workdir), str(tiny_dataset), name='eight', batch_size=8,
                                  splits=('train',))
  np.testing.assert_allclose(one['mean'], eight['mean'], atol=1e-5)
  for path in dataset.latents_dir(tiny_dataset, 'one').glob('*.npy'):
    np.testing.assert_allclose(np.load(path), np.load(dataset.latents_dir(tiny_dataset, 'eight') / path.name),
                               atol=1e-5)
  capsys.readouterr()
  extract.extract_latents(str(tiny_dae_workdir), str(tiny_dataset), name='one', batch_size=8,
                          splits=('train',))
  assert 'extracted 0 frames (300 reused)' in capsys.readouterr().out


def _s2l_config(data_dir, steps):
  config = s2l_config.get_config('variant=tiny')
  config.data.data_dir = str(data_dir)
  config.data.window = 20
  config.batch_size = 8
  config.num_train_steps = steps
  config.checkpoint_every_steps = steps
  config.eval_every_steps = steps
  config.log_every_steps = 1
  config.num_eval_windows = 4
  return config


def test_s2l_trains_through_the_shared_loop(tiny_dataset, tiny_latents, tmp_path):
  del tiny_latents
  config = _s2l_config(tiny_dataset, steps=3)
  state = train.train_and_evaluate(config, str(tmp_path))
  assert int(state.step) == 3
  ckpt = checkpoint.Checkpointer(str(tmp_path), read_only=True, async_save=False)
  meta = ckpt.restore_meta(3)
  ckpt.close()
  assert len(meta['data_stats']['latent_mean']) == 64
  model, config2 = checkpoint.load_model(str(tmp_path))
  audio = np.zeros((1, 20 * 640), np.float32)
  out = model(audio, pose_mode='predicted')
  assert out['latent'].shape == (1, 20, 64) and out['pose_pred'].shape == (1, 20, 3)
  assert config2.task == config.task


def test_s2l_wav2vec2_frontend_starts_from_the_pretrained_weights(tiny_dataset, tiny_latents, tmp_path):
  """A fresh wav2vec2 run loads wav2vec2_path after the jitted init, and training keeps those weights frozen."""
  del tiny_latents
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from daetalker_jax.models import wav2vec2 as w2v  # pylint: disable=g-import-not-at-top
  from daetalker_jax.importers import wav2vec2 as w2v_import  # pylint: disable=g-import-not-at-top
  from tests import test_wav2vec2  # pylint: disable=g-import-not-at-top
  hf_path, _ = test_wav2vec2._tiny_hf(tmp_path, 'base')  # pylint: disable=protected-access
  config = _s2l_config(tiny_dataset, steps=2)
  config.model.frontend = 'wav2vec2'
  config.model.wav2vec2_path = hf_path
  config.model.wav2vec2_layer = 1
  config.optim.warmup_steps = 1                                 # nonzero learning rate from step 2
  config.optim.weight_decay = 0.1                               # would shrink weights that were not frozen
  workdir = tmp_path / 'run'
  train.train_and_evaluate(config, str(workdir))
  model, _ = checkpoint.load_model(str(workdir), which='params')
  reference = w2v.Wav2Vec2Model(w2v_import.read_config(hf_path), rngs=nnx.Rngs(0))
  w2v_import.load_wav2vec2_into(reference, hf_path)
  trained = nnx.state(model.wav2vec2, nnx.Param)
  expected = nnx.state(reference, nnx.Param)
  diffs = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), trained, expected)
  assert max(jax.tree.leaves(diffs)) == 0.0
  # The optimizer keeps Adam moments for the trainable parameters only.
  from daetalker_jax import tasks  # pylint: disable=g-import-not-at-top
  from daetalker_jax.models import speech2latent as s2l  # pylint: disable=g-import-not-at-top
  tx, _ = train.create_optimizer(config, tasks.get_task(config.task))
  opt_elems = sum(x.size for x in jax.tree.leaves(tx.init(nnx.state(model, nnx.Param))))
  trainable = sum(x.size for x in jax.tree.leaves(nnx.state(model, s2l.TRAINABLE)))
  frozen = sum(x.size for x in jax.tree.leaves(nnx.state(model.wav2vec2, nnx.Param)))
  assert frozen > 0 and 2 * trainable <= opt_elems < 2 * trainable + 16, (opt_elems, trainable, frozen)
