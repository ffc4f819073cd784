"""Checkpointer: sharded save/restore, retention, JSON meta, partial restore and init_from."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import dae as dae_config
from daetalker_jax import checkpoint
from daetalker_jax import sharding

P = jax.P


def _state(mesh, seed=0):
  """A train-state-like tree: one fsdp-sharded weight, one replicated, a scalar step."""
  rng = np.random.default_rng(seed)
  big = jax.device_put(rng.normal(size=(16, 8)).astype(np.float32), jax.NamedSharding(mesh, P('fsdp', None)))
  small = jax.device_put(rng.normal(size=(3,)).astype(np.float32), jax.NamedSharding(mesh, P()))
  params = {'w': big, 'b': small}
  return {'step': jnp.array(seed, jnp.int32), 'params': params,
          'ema': jax.tree.map(lambda x: x * 0.5, params)}


def _abstract(mesh, spec_w):
  def sds(shape, spec, dtype=jnp.float32):
    return jax.ShapeDtypeStruct(shape, dtype, sharding=jax.NamedSharding(mesh, spec))
  params = {'w': sds((16, 8), spec_w), 'b': sds((3,), P())}
  return {'step': sds((), P(), jnp.int32), 'params': params, 'ema': params}


def test_save_restore_resharded_and_retention(tmp_path):
  mesh = sharding.create_mesh([('data', 4), ('fsdp', 2)])
  config = dae_config.get_config('variant=tiny')
  ckpt = checkpoint.Checkpointer(str(tmp_path), keep=2)
  states = {}
  for step in (1, 2, 3):
    states[step] = _state(mesh, seed=step)
    ckpt.save(step, states[step], checkpoint.make_meta(config, step, {'mean': [0.5]}))
  ckpt.wait_until_finished()
  assert ckpt.all_steps() == [2, 3] and ckpt.latest_step() == 3
  ckpt.close()

  # A new manager (as after a restart) restores the latest step into a *different* layout.
  ckpt = checkpoint.Checkpointer(str(tmp_path), keep=2)
  restored, meta = ckpt.restore(None, _abstract(mesh, P(None, 'fsdp')))
  ckpt.close()
  assert int(restored['step']) == 3
  w = restored['params']['w']
  assert w.sharding.spec == P(None, 'fsdp')
  assert {s.data.shape for s in w.addressable_shards} == {(16, 4)}
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(states[3])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # The meta JSON gives back the config and data statistics.
  assert meta['step'] == 3 and meta['data_stats'] == {'mean': [0.5]}
  config2 = checkpoint.config_from_meta(meta)
  assert isinstance(config2, ml_collections.ConfigDict)
  assert config2.optim.learning_rate == config.optim.learning_rate
  assert list(config2.model.channel_mult) == list(config.model.channel_mult)


def test_restore_subtree_and_init_from_workdir(tmp_path):
  mesh = sharding.create_mesh([('data', 4), ('fsdp', 2)])
  state = _state(mesh, seed=7)
  ckpt = checkpoint.Checkpointer(str(tmp_path / 'run'), keep=1)
  ckpt.save(5, state, {'config': {}})
  ckpt.close()  # waits for the async save

  abstract = _abstract(mesh, P('fsdp', None))
  ema = checkpoint.load_init_weights(str(tmp_path / 'run'), abstract['ema'], create_model_fn=None)
  np.testing.assert_array_equal(np.asarray(ema['w']), np.asarray(state['ema']['w']))
  assert ema['w'].sharding.spec == P('fsdp', None)
  # Params only: the EMA is not read.
  ckpt = checkpoint.Checkpointer(str(tmp_path / 'run'), read_only=True)
  params = ckpt.restore_subtree(None, {'params': abstract['params']})['params']
  ckpt.close()
  np.testing.assert_array_equal(np.asarray(params['b']), np.asarray(state['params']['b']))


def test_bad_init_from_and_empty_workdir(tmp_path):
  with pytest.raises(FileNotFoundError, match='init_from'):
    checkpoint.load_init_weights(str(tmp_path / 'nothing'), {}, create_model_fn=None)
  with pytest.raises(FileNotFoundError, match='no checkpoint'):
    checkpoint.load_model(str(tmp_path))
