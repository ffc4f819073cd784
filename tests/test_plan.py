"""The pod plan (daetalker_jax/plan.py): the tasks' batch structure, the collectives parser, --find-batch, and the
real TPU compiler (libtpu) on a small topology, so that a change that breaks TPU compilation fails `make test`."""

import importlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from daetalker_jax import plan
from daetalker_jax import tasks

TOPOLOGY = 'v5e:2x2'   # the smallest v5e slice libtpu describes: 4 chips


def _config(name: str, arg: str = 'variant=tiny'):
  return importlib.import_module(f'configs.{name}').get_config(arg)


def _as_np(spec):
  return {k: (tuple(s), np.dtype(d)) for k, (s, d) in spec.items()}


@pytest.mark.parametrize('name,arg', [('dae', 'variant=tiny'), ('dae', 'variant=demo'),
                                      ('autoencoder', 'variant=tiny'), ('difftalk', 'variant=tiny'),
                                      ('landmarks', 'variant=tiny'), ('talkformer', 'variant=tiny'),
                                      ('talkformer', 'variant=tiny,stage=e2e'), ('s2l', 'variant=tiny')])
def test_batch_spec_is_the_real_stream(name, arg, tiny_dataset, tiny_latents):
  """What the plan compiles on: every task's batch_spec equals the first batch its make_datasets yields."""
  config = _config(name, arg)
  config.data.data_dir = str(tiny_dataset)
  if name == 's2l':
    config.data.latents = tiny_latents
  task = tasks.get_task(config.task)
  stream, _ = task.make_datasets(config, 0, 1)
  batch = next(stream)
  assert _as_np(task.batch_spec(config)) == _as_np(tasks.example_spec(batch))
  assert all(len(v) == config.batch_size for v in batch.values())


_HLO = """
ENTRY %main {
  %p0 = f32[128,256]{1,0} parameter(0)
  %all-reduce.1 = f32[128,256]{1,0} all-reduce(f32[128,256]{1,0} %p0), channel_id=1, to_apply=%add
  %all-reduce-start.2 = (f32[10]{0}, bf16[4,4]{1,0}) all-reduce-start(f32[10]{0} %a, bf16[4,4]{1,0} %b), to_apply=%add
  %all-reduce-done.2 = (f32[10]{0}, bf16[4,4]{1,0}) all-reduce-done(%all-reduce-start.2)
  %all-gather-start = (f32[8,16]{1,0}, f32[32,16]{1,0}) all-gather-start(f32[8,16]{1,0} %c), dimensions={0}
  %all-gather-done = f32[32,16]{1,0} all-gather-done(%all-gather-start)
  %reduce-scatter.3 = f32[2,16]{1,0} reduce-scatter(f32[8,16]{1,0} %d), dimensions={0}
}
"""


def test_collectives_are_counted_once_with_their_result_bytes():
  got = plan.collectives(_HLO)
  assert got == {'all-reduce': {'count': 2, 'bytes': 128 * 256 * 4 + 10 * 4 + 16 * 2},
                 'all-gather': {'count': 1, 'bytes': 32 * 16 * 4},
                 'reduce-scatter': {'count': 1, 'bytes': 2 * 16 * 4}}


def test_find_batch_doubles_then_bisects(monkeypatch):
  """The largest per-chip batch with >= 10% HBM free, found with O(log) compiles (memory linear in the batch)."""
  chip = plan.CHIPS['TPU v5 lite']
  compiled = []

  def fake(config, devices, mfu):
    del mfu
    per_chip = config.batch_size // len(devices)
    compiled.append(per_chip)
    total = int(1e9 + per_chip * 0.5e9)            # 1 GB of state + 0.5 GB per example
    return {'headroom': 1 - total / chip.hbm_bytes, 'per_chip_bytes': {'total': total}, 'compile_s': 0.0}

  monkeypatch.setattr(plan, 'plan_train_step', fake)
  config = _config('dae')
  best, _, tried = plan.find_batch(config, [object()] * 4)
  expected = max(b for b in range(1, 200) if 1 - (1e9 + b * 0.5e9) / chip.hbm_bytes >= plan.HEADROOM)
  assert best == expected == 28
  assert compiled[:6] == [1, 2, 4, 8, 16, 32] and len(compiled) <= 11
  assert [t['ok'] for t in tried if t['per_chip_batch'] == best] == [True]


def test_bad_topology_and_mesh_are_one_line_errors():
  with pytest.raises(plan.PlanError, match='--topology=v9z:1x1'):
    plan.topology_devices('v9z:1x1')
  with pytest.raises(plan.PlanError, match='--mesh'):
    plan.parse_mesh('data:4', [])
  config = _config('dae')
  config.batch_size = 6                              # not divisible by the 4 chips
  with pytest.raises(plan.PlanError, match='batch_size=6'):
    plan.make_plan(config, 'dae tiny', TOPOLOGY)


def _check_report(p, *, chips=4):
  m = p['per_chip_bytes']
  assert p['chips'] == chips and p['chip_kind'] == 'v5e' and p['hbm_bytes_per_chip'] == 16 * 2**30
  assert m['total'] == m['arguments'] + m['temporaries'] + m['outputs'] - m['aliased'] + m['code']
  assert m['arguments'] > 0 and m['temporaries'] > 0 and m['total'] < p['hbm_bytes_per_chip']
  assert p['fits'] and p['headroom'] == pytest.approx(1 - m['total'] / p['hbm_bytes_per_chip'])
  assert p['flops_per_chip'] > 0 and p['estimate']['step_s'] > 0


@pytest.mark.parametrize('name', ['dae', 'difftalk', 'talkformer'])
def test_tiny_train_steps_compile_for_a_tpu_slice(name):
  """The train step `main` runs, compiled by libtpu for a v5e-4: the state is donated (outputs aliased), the
  parameters fit, and the data-parallel gradient is reduced over the chips."""
  config = _config(name)
  config.batch_size = 8
  p = plan.make_plan(config, f'{name} tiny', TOPOLOGY)
  _check_report(p)
  state_bytes = p['per_chip_bytes']['arguments']
  assert p['per_chip_bytes']['aliased'] > 0.9 * p['per_chip_bytes']['outputs']   # donation reached the TPU program
  assert p['params'] * 4 * 2 < state_bytes                                         # params + EMA (+ moments), f32
  assert p['collectives']['all-reduce']['count'] >= 1
  assert p['per_chip_batch'] == 2 and p['mesh'] == {'data': 4, 'fsdp': 1}


def test_tiny_dae_decoder_compiles_for_a_tpu_slice():
  """Generation's DDIM decode (with mean-latent guidance: twice the UNet calls) compiled for a v5e-4."""
  config = _config('dae')
  config.diffusion.guidance = 2.0
  p = plan.make_plan(config, 'dae tiny', TOPOLOGY, decoder=True, decoder_batch=8, steps=4)
  _check_report(p)
  assert p['program'] == 'decoder' and p['unet_calls_per_frame'] == 8 and p['batch'] == 8


def test_cli_prints_a_table_and_writes_json(tmp_path):
  out = tmp_path / 'plan.json'
  run = subprocess.run([sys.executable, '-m', 'daetalker_jax.plan', '--config=configs/landmarks.py:variant=tiny',
                        f'--topology={TOPOLOGY}', '--batch=8', f'--json={out}', f'--log={tmp_path / "log.txt"}'],
                       capture_output=True, text=True, check=False, timeout=900)
  assert run.returncode == 0, run.stderr[-2000:]
  assert 'memory per chip' in run.stdout and 'TPU accelerator type' not in run.stdout + run.stderr
  import json  # pylint: disable=g-import-not-at-top
  p = json.loads(out.read_text())
  for key in ('topology', 'chips', 'chip_kind', 'hbm_bytes_per_chip', 'per_chip_bytes', 'headroom', 'fits',
              'flops_per_chip', 'collectives', 'compile_s', 'estimate'):
    assert key in p
  assert p['estimate']['mfu_assumed'] == plan.DEFAULT_MFU


def test_the_package_keeps_jax_on_the_cpu_with_libtpu_installed():
  """On this CPU host libtpu is installed: the package chooses the CPU itself, with no TPU probe on the terminal."""
  env = {k: v for k, v in __import__('os').environ.items() if k not in ('JAX_PLATFORMS', 'XLA_FLAGS')}
  run = subprocess.run([sys.executable, '-c', 'import daetalker_jax, jax; print(jax.default_backend())'],
                       capture_output=True, text=True, check=False, env=env, timeout=300)
  assert run.returncode == 0 and run.stdout.strip() == 'cpu', run.stderr[-2000:]
  assert 'TPU' not in run.stderr
  assert jax.default_backend() == 'cpu'


def _train_losses(config, steps):
  """Losses of `steps` train steps (the real jitted step on one device) and the final EMA model."""
  from daetalker_jax import sharding  # pylint: disable=g-import-not-at-top
  from daetalker_jax import train  # pylint: disable=g-import-not-at-top
  task = tasks.get_task(config.task)
  mesh = sharding.create_mesh([('data', 1), ('fsdp', 1)], devices=jax.devices()[:1])
  with jax.set_mesh(mesh):
    tx, schedule = train.create_optimizer(config, task)
    init, _, shardings, parts = train.create_train_state(config, mesh, task, tx)
    step = train.make_train_step(config, mesh, task, tx, schedule, parts, shardings)
    state, stream = init(), task.make_datasets(config, 0, 1)[0]
    losses = []
    for _ in range(steps):
      state, metrics = step(state, sharding.make_global_batch(mesh, next(stream)))
      losses.append(float(metrics['loss']))
  return np.array(losses), parts.merge(state.ema, state.other)


# The tiny DAE with one down level and one encoder block (as tests/test_train.py runs it): the same layers, a
# third of the compile (XLA:CPU compiles bf16 programs slowly, and this test compiles four).
MICRO_DAE = dict(model_channels=32, channel_mult=(1, 2), enc_channel_mult=(1, 2), embed_channels=32,
                 enc_out_channels=32, enc_num_res_block=1)


def test_bf16_training_tracks_float32_and_decodes_close_to_it(tiny_dataset):
  """Mixed precision (bf16 compute, f32 master weights and moments) on the tiny DAE (MICRO_DAE): over 20 steps
  on the same batches every loss is within 0.5% of the float32 run's; the bf16 decode of the f32-trained EMA is
  >= 35 dB PSNR of the f32 decode."""
  from configs import dae as dae_config  # pylint: disable=g-import-not-at-top
  from daetalker_jax.inference import dae_codec  # pylint: disable=g-import-not-at-top
  runs = {}
  for dtype in ('float32', 'bfloat16'):
    config = dae_config.get_config('variant=tiny')
    config.model.update(MICRO_DAE)
    config.data.data_dir, config.dtype, config.eval_every_steps = str(tiny_dataset), dtype, 0
    runs[dtype] = (config, *_train_losses(config, 20))
  (config, f32, model), (_, bf16, bf16_model) = runs['float32'], runs['bfloat16']
  assert not np.array_equal(f32, bf16)                                   # bf16 really computed
  assert np.all(np.abs(bf16 - f32) <= 5e-3 * f32), np.abs(bf16 - f32) / f32
  assert f32[-5:].mean() < f32[:5].mean() and bf16[-5:].mean() < bf16[:5].mean()   # both learn
  assert all(p.dtype == np.float32 for p in jax.tree.leaves(nnx_params(bf16_model)))  # master weights f32
  z = np.random.default_rng(0).normal(size=(8, int(config.model.enc_out_channels))).astype(np.float32)
  f32_codec = dae_codec.DAECodec(model, config, steps=5, batch=8)
  bf16_codec = dae_codec.DAECodec(model, config, steps=5, batch=8, bf16=True)
  a = f32_codec.decode(z, f32_codec.seed_noise(0)).astype(np.float64)
  b = bf16_codec.decode(z, bf16_codec.seed_noise(0)).astype(np.float64)
  psnr = 10 * np.log10(255.0 ** 2 / max(np.mean((a - b) ** 2), 1e-12))
  print(f'bf16 vs f32: max loss diff {np.max(np.abs(bf16 - f32) / f32):.2e}; decode PSNR {psnr:.1f} dB')
  assert psnr >= 35.0


def nnx_params(model):
  from flax import nnx  # pylint: disable=g-import-not-at-top
  return nnx.state(model, nnx.Param)
