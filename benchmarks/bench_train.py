"""Throughput of the real sharded DAE train step on in-memory random batches (no input pipeline).

  python benchmarks/bench_train.py --config=tiny --batch=8 --steps=10 [--dtype=bfloat16] [--remat]
      [--fsdp=2] [--grad_accum=2] [--out=bench.json]

Reports compile time, step time, images/s, the step's FLOPs from XLA's cost analysis of the compiled
program and the achieved FLOP/s (divide by the accelerator's peak for MFU), and XLA's memory analysis.
On multi-device hosts the batch is split over all devices as in training.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

import jax  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from configs import dae as dae_config  # pylint: disable=g-import-not-at-top
from daetalker_jax import sharding  # pylint: disable=g-import-not-at-top
from daetalker_jax import tasks  # pylint: disable=g-import-not-at-top
from daetalker_jax import train  # pylint: disable=g-import-not-at-top


def _first(x):
  return x[0] if isinstance(x, (list, tuple)) else x


def memory_dict(mem) -> dict[str, int]:
  """XLA's memory analysis of a compiled program as a dict of byte counts ({} when unavailable)."""
  keys = ('argument_size_in_bytes', 'output_size_in_bytes', 'temp_size_in_bytes',
          'generated_code_size_in_bytes', 'alias_size_in_bytes')
  return {k: int(getattr(mem, k)) for k in keys if mem is not None and hasattr(mem, k)}


def time_train_step(config, make_batch, steps: int) -> dict:
  """Compiles the real sharded train step of `config` and times `steps` calls after one warm-up call.

  make_batch(mesh) -> a global batch; two are made and alternated. Returns params, compile_s, step_s,
  flops_per_step (XLA cost analysis, all devices), achieved_flops_per_s, memory_per_device, final_loss,
  mesh and devices.
  """
  mesh = sharding.create_mesh(config.mesh)
  task = tasks.get_task(config.task)
  with jax.set_mesh(mesh):
    tx, schedule = train.create_optimizer(config)
    init, abstract, shardings, parts = train.create_train_state(config, mesh, task, tx)
    state = init()
    step = train.make_train_step(config, mesh, task, tx, schedule, parts, shardings)
    batches = [make_batch(mesh) for _ in range(2)]
    t0 = time.perf_counter()
    compiled = step.lower(state, batches[0]).compile()
    compile_s = time.perf_counter() - t0
    cost = _first(compiled.cost_analysis()) or {}
    flops = float(cost.get('flops', float('nan')))
    memory = memory_dict(compiled.memory_analysis())
    state, m = compiled(state, batches[0])  # warm-up
    jax.block_until_ready(m)
    t0 = time.perf_counter()
    for i in range(steps):
      state, m = compiled(state, batches[i % 2])
    jax.block_until_ready((state, m))
    step_s = (time.perf_counter() - t0) / steps
  # cost_analysis is per device program on SPMD: scale by the devices to get the whole step.
  total_flops = flops * mesh.size
  return {'mesh': dict(mesh.shape), 'devices': jax.device_count(),
          'platform': jax.devices()[0].platform, 'device_kind': jax.devices()[0].device_kind,
          'params': int(sum(x.size for x in jax.tree.leaves(abstract.params))),
          'compile_s': round(compile_s, 3), 'step_s': round(step_s, 5), 'flops_per_step': total_flops,
          'achieved_flops_per_s': total_flops / step_s, 'memory_per_device': memory,
          'final_loss': float(m['loss'])}


def benchmark(variant: str, batch: int, steps: int, dtype: str, remat: bool, fsdp: int,
              grad_accum: int) -> dict:
  """The DAE train step of configs/dae.py:variant on random images."""
  config = dae_config.get_config(f'variant={variant}')
  config.batch_size, config.dtype, config.remat = batch, dtype, remat
  config.grad_accum_steps = grad_accum
  config.mesh = [('data', -1), ('fsdp', fsdp)]
  size = config.model.image_size
  rng = np.random.default_rng(0)
  local = batch // jax.process_count()
  def make_batch(mesh):
    batch = {'image': rng.uniform(-1, 1, (local, size, size, 3)).astype(np.float32)}
    if config.loss.mouth_weight != 1.0:   # the mouth-weighted loss reads a box per frame (as the pipeline gives)
      batch['mouth_box'] = np.tile(np.float32([[0.35, 0.6, 0.65, 0.8]]), (local, 1))
      batch['mouth_valid'] = np.ones((local,), np.float32)
    return sharding.make_global_batch(mesh, batch)
  r = time_train_step(config, make_batch, steps)
  return {'variant': variant, 'batch': batch, 'image_size': size, 'dtype': dtype, 'remat': remat,
          'grad_accum': grad_accum, **r, 'images_per_s': round(batch / r['step_s'], 2)}


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--config', default='tiny', help='configs/dae.py variant (tiny, demo, 64, 128, 256)')
  parser.add_argument('--batch', type=int, default=8, help='global batch size')
  parser.add_argument('--steps', type=int, default=10, help='timed steps (after one warm-up step)')
  parser.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16'), help='compute dtype')
  parser.add_argument('--remat', action='store_true', help='rematerialise each UNet block')
  parser.add_argument('--fsdp', type=int, default=1, help="size of the mesh's fsdp axis")
  parser.add_argument('--grad_accum', type=int, default=1, help='micro-batches per step')
  parser.add_argument('--out', default='', help='also write the JSON result here')
  args = parser.parse_args()
  if args.batch < 1 or args.steps < 1:
    parser.error('--batch and --steps must be >= 1')
  result = benchmark(args.config, args.batch, args.steps, args.dtype, args.remat, args.fsdp, args.grad_accum)
  text = json.dumps(result, indent=2)
  print(text)
  if args.out:
    with open(args.out, 'w') as f:
      f.write(text + '\n')


if __name__ == '__main__':
  main()
