"""Sharding rules and the sharded train step on 8 fake CPU devices (conftest sets the device count)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import dae as dae_config
from daetalker_jax import sharding
from daetalker_jax import tasks
from daetalker_jax import train

# A model smaller than variant=tiny (one down level) so the step compiles quickly on CPU.


# Its module fixtures are built once: pytest-xdist runs the whole module on one worker.
pytestmark = pytest.mark.xdist_group('sharding')


MICRO_MODEL = dict(model_channels=32, channel_mult=(1, 2), enc_channel_mult=(1, 2), embed_channels=32,
                   enc_out_channels=32, enc_num_res_block=1)


def micro_config(**overrides):
  config = dae_config.get_config('variant=tiny')
  config.model.update(MICRO_MODEL)
  config.update(overrides)
  return config


def test_fsdp_rule():
  P = jax.P
  # Large enough: the largest dimension divisible by the fsdp size is sharded.
  assert sharding.fsdp_spec((3, 3, 64, 128), 4 * 3 * 3 * 64 * 128, 2, 1000) == P(None, None, None, 'fsdp')
  assert sharding.fsdp_spec((96, 3), 4 * 96 * 3, 2, 100) == P('fsdp', None)
  # Largest dimension not divisible: the next one is used; none divisible: replicated.
  assert sharding.fsdp_spec((7, 6), 4 * 42, 2, 10) == P(None, 'fsdp')
  assert sharding.fsdp_spec((7, 5), 4 * 35, 2, 10) == P()
  # Small tensors, scalars and fsdp=1 stay replicated.
  assert sharding.fsdp_spec((1024,), 4096, 2, 4096) == P()
  assert sharding.fsdp_spec((), 4, 2, 0) == P()
  assert sharding.fsdp_spec((1024, 1024), 4 << 20, 1, 0) == P()


def test_create_mesh():
  mesh = sharding.create_mesh([('data', -1), ('fsdp', 2)])
  assert dict(mesh.shape) == {'data': 4, 'fsdp': 2}
  assert sharding.batch_size_divisor(mesh) == 8
  mesh1 = sharding.create_mesh([('data', -1), ('fsdp', 1)], devices=jax.devices()[:1])
  assert mesh1.size == 1
  with pytest.raises(ValueError, match='needs 6 devices'):
    sharding.create_mesh([('data', 3), ('fsdp', 2)])
  with pytest.raises(ValueError, match='must name the axes'):
    sharding.create_mesh([('batch', -1)])


def test_make_global_batch():
  mesh = sharding.create_mesh([('data', 4), ('fsdp', 2)])
  local = {'image': np.arange(8 * 2 * 3, dtype=np.float32).reshape(8, 2, 3)}
  batch = sharding.make_global_batch(mesh, local)
  assert batch['image'].shape == (8, 2, 3)
  assert {s.data.shape for s in batch['image'].addressable_shards} == {(1, 2, 3)}
  np.testing.assert_array_equal(np.asarray(batch['image']), local['image'])


def _run_steps(config, devices, batches):
  mesh = sharding.create_mesh(config.mesh, devices=devices)
  task = tasks.get_task(config.task)
  with jax.set_mesh(mesh):
    tx, schedule = train.create_optimizer(config)
    init, _, shardings, parts = train.create_train_state(config, mesh, task, tx)
    step = train.make_train_step(config, mesh, task, tx, schedule, parts, shardings)
    state = init()
    losses = []
    for b in batches:
      state, m = step(state, sharding.make_global_batch(mesh, b))
      losses.append(float(m['loss']))
  return state, losses


@pytest.fixture(scope='module')
def batches():
  rng = np.random.default_rng(0)
  return [{'image': rng.uniform(-1, 1, (16, 32, 32, 3)).astype(np.float32)} for _ in range(2)]


def test_sharded_step_with_grad_accumulation_matches_single_device(batches):
  """FSDP over a 4 x 2 mesh with two micro-batches per step (each keeps 1 row per device) against one device
  with the same accumulation: the same losses, parameters and EMA. One sharded compile checks both the FSDP
  step and the accumulation (each 8-device train-step compile costs minutes on 2 cores)."""
  # Warmup of 1 step so the very first update is not a zero-learning-rate no-op.
  config = micro_config(fsdp_min_bytes=16 * 1024, grad_accum_steps=2, batch_size=16)
  config.optim.warmup_steps = 1
  config.optim.learning_rate = 1e-3
  ref_state, ref_losses = _run_steps(config, jax.devices()[:1], batches)

  config.mesh = [('data', 4), ('fsdp', 2)]
  state, losses = _run_steps(config, jax.devices(), batches)

  # The large weights really are split over fsdp (half of the tensor on each device)...
  big = [(p, x) for p, x in jax.tree_util.tree_leaves_with_path(state.params) if x.size * 4 > 16 * 1024]
  assert big
  for path, x in big:
    assert 'fsdp' in x.sharding.spec, (jax.tree_util.keystr(path), x.sharding.spec)
    dim = list(x.sharding.spec).index('fsdp')
    assert {s.data.shape[dim] for s in x.addressable_shards} == {x.shape[dim] // 2}
  # ...and so are their Adam moments and EMA copies.
  mu = state.opt_state[1][0].mu
  for path, x in jax.tree_util.tree_leaves_with_path(mu):
    if x.size * 4 > 16 * 1024:
      assert 'fsdp' in x.sharding.spec, jax.tree_util.keystr(path)
  small = [x for x in jax.tree.leaves(state.params) if x.size * 4 <= 16 * 1024]
  assert all(x.sharding.is_fully_replicated for x in small)

  # Same numbers as on one device.
  np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
  assert int(state.step) == int(ref_state.step) == 2
  moved = 0.0
  for a, b, a0 in zip(jax.tree.leaves(state.params), jax.tree.leaves(ref_state.params),
                      jax.tree.leaves(ref_state.ema)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
    moved = max(moved, float(jnp.max(jnp.abs(np.asarray(b) - np.asarray(a0)))))
  assert moved > 1e-4  # the parameters did change (EMA lags behind them)
  for a, b in zip(jax.tree.leaves(state.ema), jax.tree.leaves(ref_state.ema)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


def test_grad_accum_steps_must_divide_the_batch():
  with pytest.raises(ValueError, match='divisible by grad_accum_steps'):
    train._check_batch(micro_config(grad_accum_steps=3), sharding.create_mesh([('data', -1), ('fsdp', 1)]))
