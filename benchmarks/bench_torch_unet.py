"""JAX vs PyTorch on the same CPU: our DAE sampler beside diffusers' UNet2DModel of the same shape.

  python -m benchmarks.bench_torch_unet [--variant 128] [--steps 10] [--batch 4] [--threads 2] [--repeats 1]
      [--sections sampler,forward,conv] [--out runs/bench/torch_unet.json]

Everything runs in one process, the JAX and PyTorch runs interleaved (JAX, PyTorch, JAX, ...) so that a busy
machine slows both alike; the weights are random (timing does not depend on them). Sections:
  sampler  frames/s of DDIM over `--steps` from one shared x_T. JAX: the DAE codec's decode to uint8 frames on
           the host (inference/dae_codec.py: what generation runs, one jit over a lax.scan, compiled with
           `diffusion.compiler_options()`), and the same scan (`diffusion.make_sampler`) under XLA's default
           CPU options, which send the convolutions to YNNPACK.
           PyTorch: diffae's sampler, an eager loop of UNet calls with the same DDIM table and update to
           uint8 frames (float32, NCHW, torch.inference_mode).
  forward  one UNet forward of `--batch` frames: ours jitted with XLA's default CPU options and with
           `diffusion.compiler_options()`; PyTorch in NCHW (diffae's layout) and channels_last.
  conv     the largest convolutions alone (3x3 and 1x1 at 128 px, 4 x 128^2 x 256 in, 128 out): XLA via
           YNNPACK (its CPU default) and via Eigen (compiler_options), PyTorch's oneDNN (NCHW).
The PyTorch UNet is diffusers' UNet2DModel set to the DAE's shape: the same widths (model_channels x
channel_mult), res blocks per level, BigGAN res-block up/down sampling, scale-shift time conditioning
(resnet_time_scale_shift='scale_shift'), 1-head attention at the same resolutions (16^2) and in the middle
block, GroupNorm(32). The semantic latent z_sem cannot scale each block as diffae's does (h * (1 + Linear(z)),
`resnet_two_cond`): it is added to the time embedding instead (class_embed_type='identity'), so diffusers'
UNet lacks our per-block z projections (their parameters are reported; their FLOPs are < 0.01%).
FLOPs: XLA's cost analysis for ours, torch.utils.flop_counter for diffusers' (it counts convs, matmuls and
attention only, so it reads a little lower).

Threads: `--threads N` pins the process to N cores (os.sched_setaffinity, before JAX starts its CPU client,
whose intra-op pool has one thread per schedulable core, with --xla_cpu_multi_thread_eigen=true) and calls
torch.set_num_threads(N), torch.set_num_interop_threads(1). OMP_WAIT_POLICY defaults to PASSIVE (set it to
ACTIVE to see PyTorch's default): spinning OpenMP threads starve the JAX threads and other jobs on a busy CPU.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

SECTIONS = ('sampler', 'forward', 'conv')


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--variant', default='128', help='configs/dae.py variant (the UNet shape)')
  p.add_argument('--steps', type=int, default=10, help='DDIM steps (diffae spacing)')
  p.add_argument('--batch', type=int, default=4, help='frames decoded together')
  p.add_argument('--threads', type=int, default=2, help='CPU threads for both frameworks')
  p.add_argument('--repeats', type=int, default=1, help='timed runs of each sampler (forward and conv: one more)')
  p.add_argument('--sections', default=','.join(SECTIONS), help=f'comma-separated subset of {SECTIONS}')
  p.add_argument('--out', default='', help='write the results here as JSON')
  args = p.parse_args(argv)
  args.sections = tuple(s for s in args.sections.split(',') if s)
  if any(s not in SECTIONS for s in args.sections):
    p.error(f'--sections: choose from {SECTIONS}')
  if min(args.steps, args.batch, args.threads, args.repeats) < 1:
    p.error('--steps, --batch, --threads and --repeats must be positive')
  return args


def pin_threads(threads: int) -> list[int]:
  """Restricts this process to `threads` cores (before JAX's CPU client exists); returns the cores."""
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' --xla_cpu_multi_thread_eigen=true').strip()
  # OpenMP threads that spin while waiting take the CPU from the other framework's threads (and from other
  # jobs): on a busy 2-core machine PyTorch's forward ran 2-25x slower with GNU OpenMP's default spinning.
  os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
  if not hasattr(os, 'sched_setaffinity'):
    return []
  cores = sorted(os.sched_getaffinity(0))
  if len(cores) > threads:
    cores = cores[:threads]
    os.sched_setaffinity(0, cores)
  return cores


def cpu_name() -> str:
  try:
    with open('/proc/cpuinfo') as f:
      names = [l.split(':', 1)[1].strip() for l in f if l.startswith('model name')]
    return f'{names[0]} ({len(names)} cores)' if names else ''
  except OSError:
    return ''


def interleaved(fns: dict[str, Any], repeats: int) -> dict[str, list[float]]:
  """Wall seconds of each fn() per round, the fns taking turns within each of `repeats` rounds."""
  out: dict[str, list[float]] = {k: [] for k in fns}
  for _ in range(repeats):
    for k, fn in fns.items():
      t0 = time.perf_counter()
      fn()
      out[k].append(round(time.perf_counter() - t0, 4))
  return out



def speed_ratio(jax_s: list[float], torch_s: list[float]) -> float:
  """How many times faster JAX ran: the median over rounds of torch / jax time within one round (a round's
  runs follow each other, so they saw about the same load)."""
  r = sorted(t / j for j, t in zip(jax_s, torch_s))
  return round((r[(len(r) - 1) // 2] + r[len(r) // 2]) / 2, 3)


# --------------------------------------------------------------------------------------------------------
# The two models.
# --------------------------------------------------------------------------------------------------------
def torch_unet(cfg):
  """diffusers' UNet2DModel with the shape of our UNetConfig `cfg` (see the module doc)."""
  from diffusers import UNet2DModel  # pylint: disable=g-import-not-at-top
  if cfg.num_heads != 1 or cfg.num_head_channels != -1:
    raise SystemExit('bench_torch_unet: only 1-head attention (diffae\'s) is mapped to diffusers')
  widths = tuple(cfg.model_channels * m for m in cfg.channel_mult)
  attn = [cfg.image_size // 2 ** i in cfg.attention_resolutions for i in range(len(widths))]
  resample = 'resnet' if cfg.resblock_updown else 'conv'
  down, up = ('ResnetDownsampleBlock2D', 'ResnetUpsampleBlock2D') if cfg.resblock_updown else ('DownBlock2D', 'UpBlock2D')
  return UNet2DModel(
      sample_size=cfg.image_size, in_channels=cfg.in_channels, out_channels=cfg.out_channels,
      block_out_channels=widths, layers_per_block=cfg.num_res_blocks,
      down_block_types=tuple('AttnDownBlock2D' if a else down for a in attn),
      up_block_types=tuple('AttnUpBlock2D' if a else up for a in attn[::-1]),
      downsample_type=resample, upsample_type=resample, resnet_time_scale_shift='scale_shift',
      time_embedding_dim=cfg.embed_channels, attention_head_dim=None,   # None: one head of all channels
      norm_num_groups=32, attn_norm_num_groups=32, norm_eps=1e-5, dropout=0.0,
      class_embed_type='identity').eval()


def torch_ddim(model, x_T, cond, table):
  """diffae's DDIM sampler (eta 0, clipped x0) in PyTorch: uint8 (B, H, W, 3) frames on the host."""
  import torch  # pylint: disable=g-import-not-at-top
  with torch.inference_mode():
    x = x_T
    for i in reversed(range(len(table.timesteps))):
      t = torch.full((x.shape[0],), int(table.timesteps[i]), dtype=torch.long)
      eps = model(x, t, class_labels=cond).sample
      sr, srm1, ac_prev = float(table.sqrt_recip_ac[i]), float(table.sqrt_recipm1_ac[i]), float(table.ac_prev[i])
      x0 = (sr * x - srm1 * eps).clamp(-1, 1)                       # x0_hat, clipped
      eps = (sr * x - x0) / srm1                                   # eps re-derived from it
      x = x0 * math.sqrt(ac_prev) + math.sqrt(1 - ac_prev) * eps   # DDIM eq. 12, sigma = 0
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def torch_gflops(model, x, t, cond) -> float:
  import torch  # pylint: disable=g-import-not-at-top
  from torch.utils.flop_counter import FlopCounterMode  # pylint: disable=g-import-not-at-top
  with torch.inference_mode(), FlopCounterMode(display=False) as counter:
    model(x, t, class_labels=cond)
  return counter.get_total_flops() / 1e9


def xla_gflops(compiled) -> float:
  c = compiled.cost_analysis()
  c = c[0] if isinstance(c, (list, tuple)) else c
  return float((c or {}).get('flops', float('nan'))) / 1e9


# --------------------------------------------------------------------------------------------------------
# Sections.
# --------------------------------------------------------------------------------------------------------
def main(argv=None) -> dict[str, Any]:
  args = parse_args(argv)
  cores = pin_threads(args.threads)
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top

  from benchmarks import bench_sampler  # pylint: disable=g-import-not-at-top
  from configs import dae as dae_config  # pylint: disable=g-import-not-at-top
  from daetalker_jax import diffusion  # pylint: disable=g-import-not-at-top
  from daetalker_jax.inference import dae_codec  # pylint: disable=g-import-not-at-top
  from daetalker_jax.models import unet  # pylint: disable=g-import-not-at-top

  torch.set_num_threads(args.threads)
  torch.set_num_interop_threads(1)
  log = lambda msg: print(f'[bench_torch_unet {time.strftime("%H:%M:%S")}] {msg}', file=sys.stderr, flush=True)

  config = dae_config.get_config(f'variant={args.variant}')
  cfg = unet.config_from_dict(config.model, dtype='float32', dropout=0.0)
  b, s, d = args.batch, cfg.image_size, cfg.enc_out_channels
  model = bench_sampler.random_model(cfg)
  tmodel = torch_unet(cfg)
  rng = np.random.default_rng(0)
  latents = rng.standard_normal((b, d)).astype(np.float32)
  x_T = rng.standard_normal((1, s, s, 3)).astype(np.float32)                   # one x_T for every frame
  t_latents = torch.from_numpy(latents)
  t_x_T = torch.from_numpy(x_T).permute(0, 3, 1, 2).expand(b, 3, s, s).contiguous()
  t_mid = torch.full((b,), 500, dtype=torch.long)

  result: dict[str, Any] = dict(
      note='wall times on one CPU shared with other jobs: compare the JAX and PyTorch rows of one run '
           '(interleaved), not runs with each other; frames/s and ms are from the fastest run of each, '
           'speed ratios the median over rounds of the ratio within a round (> 1: JAX faster)',
      variant=args.variant, image_size=s, steps=args.steps, batch=b,
      threads=dict(cores=cores, torch_num_threads=torch.get_num_threads(), torch_interop_threads=1,
                   omp_wait_policy=os.environ.get('OMP_WAIT_POLICY'),
                   xla_flags=os.environ.get('XLA_FLAGS', ''), jax_devices=jax.device_count()),
      cpu=cpu_name(), load_avg_start=list(os.getloadavg()),
      versions=dict(jax=jax.__version__, torch=torch.__version__,
                    diffusers=__import__('diffusers').__version__),
      params=dict(jax_unet=unet.count_params(model.unet),
                  jax_unet_z_projections=sum(int(x.size) for p, x in jax.tree_util.tree_leaves_with_path(
                      nnx.state(model.unet, nnx.Param)) if 'cond_proj' in jax.tree_util.keystr(p)),
                  torch_unet=sum(p.numel() for p in tmodel.parameters())))

  graphdef, state = nnx.split(model)
  fwd = jax.jit(lambda st, x, t, c: nnx.merge(graphdef, st).unet(x, t, c))
  x = jnp.asarray(np.broadcast_to(x_T, (b, s, s, 3)))
  t = jnp.full((b,), 500, jnp.int32)
  cond = jnp.asarray(latents)
  xla = {'xla_default': {}, 'compiler_options': diffusion.compiler_options()}
  fwds = {k: fwd.lower(state, x, t, cond).compile(compiler_options=v) for k, v in xla.items()}
  result['gflops_per_forward_per_frame'] = dict(
      jax_xla=round(xla_gflops(fwds['xla_default']) / b, 2),
      torch_flop_counter=round(torch_gflops(tmodel, t_x_T, t_mid, t_latents) / b, 2))
  log(f'params {result["params"]}, GFLOPs per forward per frame {result["gflops_per_forward_per_frame"]}')

  if 'sampler' in args.sections:
    codec = dae_codec.DAECodec(model, config, steps=args.steps, batch=b)
    table = diffusion.table_for(codec.schedule, args.steps)
    t0 = time.perf_counter()
    compiled = codec.lower_decode().compile()          # fills the cache that codec.decode's jit reads
    compile_s = time.perf_counter() - t0
    schedule = diffusion.schedule_from_config(config.diffusion)
    bare = diffusion.make_sampler(model, schedule, steps=args.steps, xla_options={}).lower(state, x, cond).compile()
    with torch.inference_mode():
      tmodel(t_x_T, t_mid, class_labels=t_latents)                          # oneDNN primitives, once
    log(f'sampler: {args.steps} steps x {b} frames, {args.repeats} interleaved runs (compile {compile_s:.1f} s)')
    times = interleaved({'jax_codec': lambda: codec.decode(latents, x_T),
                         'jax_xla_default': lambda: jax.block_until_ready(bare(state, x, cond)),
                         'torch': lambda: torch_ddim(tmodel, t_x_T, t_latents, table)}, args.repeats)
    fps = {k: b / min(v) for k, v in times.items()}
    result['sampler'] = dict(
        jax_codec=dict(path='inference.dae_codec.DAECodec.decode (what generation runs)', seconds=times['jax_codec'],
                       frames_per_s=round(fps['jax_codec'], 4), compile_s=round(compile_s, 2),
                       ynn_convolutions=_ynn_convs(compiled.as_text())),
        jax_xla_default=dict(path="diffusion.make_sampler(xla_options={}): the same scan under XLA's default CPU "
                                  'options (YNNPACK)', seconds=times['jax_xla_default'],
                             frames_per_s=round(fps['jax_xla_default'], 4), ynn_convolutions=_ynn_convs(bare.as_text())),
        torch=dict(path='eager DDIM loop of diffusers UNet2DModel (diffae sampler)', seconds=times['torch'],
                   frames_per_s=round(fps['torch'], 4)),
        speed_ratio_jax_codec_over_torch=speed_ratio(times['jax_codec'], times['torch']),
        speed_ratio_jax_xla_default_over_torch=speed_ratio(times['jax_xla_default'], times['torch']))
    log(f'sampler: {result["sampler"]}')

  if 'forward' in args.sections:
    t_last = copy.deepcopy(tmodel).to(memory_format=torch.channels_last)
    x_last = t_x_T.contiguous(memory_format=torch.channels_last)

    def run_torch(m, xx):
      with torch.inference_mode():
        m(xx, t_mid, class_labels=t_latents)
    run_torch(t_last, x_last)
    fns = {f'jax_{k}': (lambda c=c: jax.block_until_ready(c(state, x, t, cond))) for k, c in fwds.items()}
    fns['torch_channels_last'] = lambda: run_torch(t_last, x_last)
    fns['torch_nchw'] = lambda: run_torch(tmodel, t_x_T)
    run_torch(tmodel, t_x_T)
    log(f'forward: {b} frames, {args.repeats + 1} interleaved rounds')
    times = interleaved(fns, args.repeats + 1)
    result['forward'] = dict(
        seconds=times, min_s={k: min(v) for k, v in times.items()}, jax_compiler_options=xla['compiler_options'],
        speed_ratios={f'{j}_over_{t}': speed_ratio(times[j], times[t])
                      for j in ('jax_xla_default', 'jax_compiler_options') for t in ('torch_nchw', 'torch_channels_last')})
    log(f'forward: {result["forward"]["min_s"]}')

  if 'conv' in args.sections:
    result['conv'] = conv_section(jax, jnp, np, torch, xla, b, cin=2 * cfg.model_channels, cout=cfg.model_channels,
                                  size=s, repeats=args.repeats + 1)
    log(f'conv: {result["conv"]}')

  result['load_avg_end'] = list(os.getloadavg())
  print(json.dumps(result, indent=1))
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, 'w') as f:
      json.dump(result, f, indent=1)
  return result


def _ynn_convs(hlo_text: str) -> int:
  """Convolutions inside YNNPACK fusions of a compiled program's text."""
  import re  # pylint: disable=g-import-not-at-top
  bodies = {m.group(1): m.group(2) for m in re.finditer(r'\n%?([\w.\-]+) [^\n]*\{\n(.*?)\n\}', hlo_text, re.S)}
  calls = re.findall(r'calls=%?([\w.\-]+)[^\n]*__ynn_fusion', hlo_text)
  return sum(' convolution(' in bodies.get(c, '') for c in calls)


def conv_section(jax, jnp, np, torch, xla, b, *, cin, cout, size, repeats) -> dict[str, Any]:
  """The UNet's largest convolutions alone: XLA with each option set vs PyTorch (ms, fastest run)."""
  out = {}
  conv = jax.jit(lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), 'SAME',
                                                           dimension_numbers=('NHWC', 'HWIO', 'NHWC')))
  for k in (3, 1):
    x = jax.random.normal(jax.random.key(0), (b, size, size, cin))
    w = jax.random.normal(jax.random.key(1), (k, k, cin, cout)) * 0.03
    fns = {f'jax_{name}': (lambda c=conv.lower(x, w).compile(compiler_options=o): jax.block_until_ready(c(x, w)))
           for name, o in xla.items()}
    tconv = torch.nn.Conv2d(cin, cout, k, padding=k // 2).eval()
    tx = torch.randn(b, cin, size, size)

    def run_torch(tconv=tconv, tx=tx):
      with torch.inference_mode():
        tconv(tx)
    run_torch()
    fns['torch_nchw'] = run_torch
    times = interleaved(fns, repeats)
    gflop = 2 * b * size * size * cin * cout * k * k / 1e9
    out[f'{k}x{k} {b}x{size}x{size}x{cin}->{cout}'] = {
        name: dict(ms=round(1e3 * min(v), 1), gflop_per_s=round(gflop / min(v), 1)) for name, v in times.items()}
  return out


if __name__ == '__main__':
  main(sys.argv[1:])
