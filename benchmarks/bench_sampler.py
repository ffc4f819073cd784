"""Benchmark DDIM sampling with the diffae UNet: frames/s, compile time, FLOPs per UNet forward, memory.

  python -m benchmarks.bench_sampler --variant 64 --steps 20 --batch 8 --repeats 3 [--bf16] [--shard] \
      [--out /tmp/bench.json]

The weights are random (timing does not depend on them). FLOPs come from XLA's cost analysis of one jitted
UNet forward (`jitted.lower(...).compile().cost_analysis()`), memory from the compiled sampler's
memory_analysis(). `--shard` splits the frames over all local devices (mesh axis 'data').
"""

import argparse
import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from configs import dae as dae_config
from daetalker_jax import diffusion
from daetalker_jax.models import unet

P = jax.P


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--variant', default='tiny', choices=['tiny', 'demo', '64', '128', '256'])
  p.add_argument('--steps', type=int, default=20, help='DDIM steps (diffae spacing)')
  p.add_argument('--batch', type=int, default=4, help='frames decoded together')
  p.add_argument('--repeats', type=int, default=3, help='timed runs after the compile')
  p.add_argument('--bf16', action='store_true', help='bfloat16 compute (float32 params)')
  p.add_argument('--shard', action='store_true', help='shard frames over all devices')
  p.add_argument('--out', default='', help='write the results here as JSON')
  args = p.parse_args(argv)
  if args.steps < 1 or args.batch < 1 or args.repeats < 1:
    p.error('--steps, --batch and --repeats must be positive')
  return args


def random_model(cfg: unet.UNetConfig, seed: int = 0) -> unet.DiffusionAutoencoder:
  """A model with random weights, built abstractly and filled from numpy (no slow random-init program)."""
  model = nnx.eval_shape(lambda: unet.DiffusionAutoencoder(cfg, rngs=nnx.Rngs(seed)))
  rng = np.random.default_rng(seed)
  state = nnx.state(model, nnx.Param)
  nnx.update(model, jax.tree.map(
      lambda a: jnp.asarray(rng.standard_normal(a.shape, np.float32) * 0.02, a.dtype), state))
  model.eval()
  return model


def cost(compiled) -> dict:
  c = compiled.cost_analysis()
  c = c[0] if isinstance(c, (list, tuple)) else c
  return c or {}


def main(argv=None) -> dict:
  args = parse_args(argv)
  config = dae_config.get_config(f'variant={args.variant}')
  cfg = unet.config_from_dict(config.model, dtype='bfloat16' if args.bf16 else 'float32', dropout=0.0)
  model = random_model(cfg)
  state = nnx.state(model)
  graphdef = nnx.graphdef(model)
  schedule = diffusion.schedule_from_config(config.diffusion)
  s = cfg.image_size
  x_T = jax.random.normal(jax.random.key(1), (args.batch, s, s, cfg.in_channels), jnp.float32)
  cond = jax.random.normal(jax.random.key(2), (args.batch, cfg.enc_out_channels), jnp.float32)
  if args.shard:
    mesh = jax.make_mesh((jax.device_count(),), ('data',), axis_types=(jax.sharding.AxisType.Auto,))
    if args.batch % jax.device_count():
      raise SystemExit(f'bench_sampler: --batch {args.batch} is not divisible by {jax.device_count()} devices')
    data = jax.sharding.NamedSharding(mesh, P('data'))
    x_T, cond = jax.device_put(x_T, data), jax.device_put(cond, data)
    state = jax.device_put(state, jax.sharding.NamedSharding(mesh, P()))

  # FLOPs of one UNet forward and one encoder forward (per frame).
  t = jnp.zeros((args.batch,), jnp.int32)
  fwd = jax.jit(lambda st, x, t, c: nnx.merge(graphdef, st).unet(x, t, c))
  enc = jax.jit(lambda st, x: nnx.merge(graphdef, st).encoder(x))
  unet_flops = cost(fwd.lower(state, x_T, t, cond).compile()).get('flops', float('nan')) / args.batch
  enc_flops = cost(enc.lower(state, x_T).compile()).get('flops', float('nan')) / args.batch

  sampler = diffusion.make_sampler(model, schedule, steps=args.steps)
  t0 = time.perf_counter()
  compiled = sampler.lower(state, x_T, cond).compile()
  compile_s = time.perf_counter() - t0
  mem = compiled.memory_analysis()
  jax.block_until_ready(compiled(state, x_T, cond))  # warm-up
  times = []
  for _ in range(args.repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(state, x_T, cond))
    times.append(time.perf_counter() - t0)
  sec = float(np.median(times))
  result = dict(
      variant=args.variant, image_size=s, steps=args.steps, batch=args.batch, bf16=args.bf16, shard=args.shard,
      device=jax.devices()[0].device_kind, num_devices=jax.device_count() if args.shard else 1,
      params=unet.count_params(model), compile_s=round(compile_s, 3), sample_s_median=round(sec, 4),
      sample_s_all=[round(x, 4) for x in times], frames_per_s=round(args.batch / sec, 3),
      unet_gflops_per_forward=round(unet_flops / 1e9, 4), encoder_gflops_per_frame=round(enc_flops / 1e9, 4),
      sampler_gflops_per_frame=round(unet_flops * args.steps / 1e9, 3),
      achieved_gflops_per_s=round(unet_flops * args.steps * args.batch / sec / 1e9, 2),
      memory=dict(argument_mb=round(mem.argument_size_in_bytes / 2**20, 2),
                  output_mb=round(mem.output_size_in_bytes / 2**20, 2),
                  temp_mb=round(mem.temp_size_in_bytes / 2**20, 2),
                  code_mb=round(mem.generated_code_size_in_bytes / 2**20, 2)) if mem else None)
  print(json.dumps(result, indent=1))
  if args.out:
    with open(args.out, 'w') as f:
      json.dump(result, f, indent=1)
  return result


if __name__ == '__main__':
  main(sys.argv[1:])
