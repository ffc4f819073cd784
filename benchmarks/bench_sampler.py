"""Benchmark DDIM sampling with the diffae UNet: frames/s, compile time, FLOPs per UNet forward, memory.

  python -m benchmarks.bench_sampler --variant 64 --steps 20 --batch 8 --repeats 3 [--bf16] [--shard] \
      [--out /tmp/bench.json]

What is timed is what generation runs: the DAE codec's decode (inference/dae_codec.py: one jit over a
lax.scan of the steps, one shared x_T, uint8 frames back on the host). The weights are random (timing does
not depend on them). FLOPs come from XLA's cost analysis of one jitted UNet forward
(`jitted.lower(...).compile().cost_analysis()`), memory from the compiled decode's memory_analysis().
`--shard` splits the frames over all local devices (mesh axis 'data'); without it the codec uses one device.
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
from daetalker_jax import sharding
from daetalker_jax.inference import dae_codec
from daetalker_jax.models import unet


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
  model = random_model(unet.config_from_dict(config.model, dtype='float32', dropout=0.0))
  devices = jax.devices() if args.shard else jax.devices()[:1]
  if args.batch % len(devices):
    raise SystemExit(f'bench_sampler: --batch {args.batch} is not divisible by {len(devices)} devices')
  codec = dae_codec.DAECodec(model, config, steps=args.steps, batch=args.batch, bf16=args.bf16,
                             mesh=sharding.create_mesh([('data', -1), ('fsdp', 1)], devices))
  s = cfg.image_size

  # FLOPs of one UNet forward and one encoder forward (per frame), in the compute dtype.
  graphdef, state = nnx.split(random_model(cfg) if args.bf16 else model)
  x = jnp.zeros((args.batch, s, s, cfg.in_channels), jnp.float32)
  t = jnp.zeros((args.batch,), jnp.int32)
  cond = jnp.zeros((args.batch, cfg.enc_out_channels), jnp.float32)
  fwd = jax.jit(lambda st, x, t, c: nnx.merge(graphdef, st).unet(x, t, c))
  enc = jax.jit(lambda st, x: nnx.merge(graphdef, st).encoder(x))
  unet_flops = cost(fwd.lower(state, x, t, cond).compile()).get('flops', float('nan')) / args.batch
  enc_flops = cost(enc.lower(state, x).compile()).get('flops', float('nan')) / args.batch
  del state

  latents = np.random.default_rng(2).standard_normal((args.batch, cfg.enc_out_channels)).astype(np.float32)
  x_T = codec.seed_noise(1)
  t0 = time.perf_counter()
  compiled = codec.lower_decode().compile()   # fills the compilation cache that codec.decode's jit reads
  compile_s = time.perf_counter() - t0
  mem = compiled.memory_analysis()
  codec.decode(latents, x_T)  # warm-up
  times = []
  for _ in range(args.repeats):
    t0 = time.perf_counter()
    codec.decode(latents, x_T)
    times.append(time.perf_counter() - t0)
  sec = float(np.median(times))
  result = dict(
      variant=args.variant, image_size=s, steps=args.steps, batch=args.batch, bf16=args.bf16, shard=args.shard,
      path='inference.dae_codec.DAECodec.decode', device=jax.devices()[0].device_kind, num_devices=len(devices),
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
