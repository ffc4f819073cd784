"""`make bench`: sampler and train-step throughput, compiled memory and FLOPs, scaling curves.

  python -m benchmarks.run_all --out runs/bench                       # CPU: tiny/demo models, a few minutes
  python -m benchmarks.run_all --preset accelerator --out runs/bench  # GPU/TPU: the 128/256 px models

Weights are random (timing does not depend on them). Writes OUT/bench.json and OUT/bench.png and prints a
summary. Sections:
  sampler       frames/s of the DAE codec's jitted DDIM decode (inference/dae_codec.py, what generation runs)
                vs batch, steps and resolution (compile time
                reported separately; `benchmarks.bench_sampler` for FLOPs per UNet forward, achieved FLOP/s
                and memory_analysis at each resolution).
  train         train-step throughput of both tasks through the real sharded step (`train.make_train_step`):
                dae via `benchmarks.bench_train.benchmark`, speech2latent the same way on random windows.
  scaling       wall time vs number of frames (the DAE codec's decode: fixed batches, one compiled program)
                and vs DDIM steps, each with a least-squares line (slope, intercept, R^2).
  memory        compiled memory (memory_analysis) of the sampler at 10 and 100 steps: equal, because the
                steps are a `lax.scan` (memory independent of the number of steps).
  recompiles    compilations across repeated calls and clips of different lengths (must stay 1).
  pipeline      the user's path: `generate` end to end, the warm pipeline with its mp4 writer, and the bare
                decode of as many frames, side by side (each labelled in the JSON).
  torch_unet    the JAX sampler against diffusers' UNet2DModel of the same shape, same threads
                (`benchmarks.bench_torch_unet`; its default is the 128 px, 10 steps, batch 4 comparison).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

import jax  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from benchmarks import bench_sampler  # pylint: disable=g-import-not-at-top
from benchmarks import bench_train  # pylint: disable=g-import-not-at-top
from configs import dae as dae_config  # pylint: disable=g-import-not-at-top
from configs import s2l as s2l_config  # pylint: disable=g-import-not-at-top
from daetalker_jax import atomic  # pylint: disable=g-import-not-at-top
from daetalker_jax.inference import dae_codec  # pylint: disable=g-import-not-at-top
from daetalker_jax import sharding  # pylint: disable=g-import-not-at-top
from daetalker_jax.data import contract  # pylint: disable=g-import-not-at-top
from daetalker_jax.models import unet  # pylint: disable=g-import-not-at-top

# Sweep sizes per preset. cpu: finishes in a few minutes on 2 cores; accelerator: the real model sizes.
PRESETS = {
    'cpu': dict(variant='tiny', resolutions=('tiny', 'demo'), batches=(1, 2, 4, 8), steps=(5, 10, 20, 40),
                base_steps=10, base_batch=4, frames=(8, 16, 24, 32), decoder_batch=8, memory_steps=(10, 100),
                pipeline_seconds=4.0,
                train_variants=dict(dae='tiny', s2l='tiny'), train_batch=8, train_steps=3, repeats=2,
                frame_repeats=1),
    'accelerator': dict(variant='128', resolutions=('64', '128', '256'), batches=(1, 4, 16, 32, 64),
                        steps=(10, 20, 50, 100), base_steps=20, base_batch=16, frames=(64, 128, 256, 512),
                        decoder_batch=32, memory_steps=(10, 100), train_variants=dict(dae='128', s2l='base'),
                        pipeline_seconds=20.0,
                        train_batch=32, train_steps=10, repeats=3, frame_repeats=2),
}


def log(msg: str) -> None:
  print(f'[bench {time.strftime("%H:%M:%S")}] {msg}', flush=True)


# --------------------------------------------------------------------------------------------------------
# Helpers.
# --------------------------------------------------------------------------------------------------------
def linear_fit(x: Any, y: Any) -> dict[str, float]:
  """Least-squares y = slope x + intercept and its R^2 (1 = perfectly linear)."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  slope, intercept = np.polyfit(x, y, 1)
  resid = y - (slope * x + intercept)
  ss_tot = float(np.sum((y - y.mean()) ** 2))
  r2 = 1.0 - float(np.sum(resid ** 2)) / ss_tot if ss_tot > 0 else float('nan')
  return {'slope': float(slope), 'intercept': float(intercept), 'r2': r2}


def timed(fn, *args, repeats: int) -> float:
  """Median wall seconds of `fn(*args)` after one warm-up call (results waited for)."""
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return float(np.median(times))


class SamplerBench:
  """One random DAE of a variant, decoded by the DAE codec (the path generation runs), per (batch, steps)."""

  def __init__(self, variant: str, bf16: bool = False):
    self.config = dae_config.get_config(f'variant={variant}')
    self.model = bench_sampler.random_model(unet.config_from_dict(self.config.model, dtype='float32', dropout=0.0))
    self.bf16 = bf16
    self.size = int(self.config.model.image_size)
    self.dim = int(self.config.model.enc_out_channels)

  def codec(self, batch: int, steps: int) -> dae_codec.DAECodec:
    return dae_codec.DAECodec(self.model, self.config, steps=steps, batch=batch, bf16=self.bf16)

  def compile(self, batch: int, steps: int):
    codec = self.codec(batch, steps)
    t0 = time.perf_counter()
    compiled = codec.lower_decode().compile()
    return compiled, time.perf_counter() - t0

  def run(self, batch: int, steps: int, repeats: int) -> dict[str, Any]:
    codec = self.codec(batch, steps)
    latents = np.random.default_rng(2).standard_normal((codec.batch, self.dim)).astype(np.float32)
    x_T = codec.seed_noise(1)
    t0 = time.perf_counter()
    compiled = codec.lower_decode().compile()
    compile_s = time.perf_counter() - t0
    sec = timed(codec.decode, latents, x_T, repeats=repeats)           # frames back on the host, as uint8
    return dict(batch=codec.batch, steps=steps, image_size=self.size, compile_s=compile_s, sample_s=sec,
                frames_per_s=codec.batch / sec, memory=bench_train.memory_dict(compiled.memory_analysis()))


# --------------------------------------------------------------------------------------------------------
# Sections.
# --------------------------------------------------------------------------------------------------------
def bench_sampler_section(p: dict[str, Any], bf16: bool) -> dict[str, Any]:
  out: dict[str, Any] = {'flops': [], 'vs_batch': [], 'vs_steps': [], 'vs_resolution': []}
  for variant in p['resolutions']:   # FLOPs per forward, achieved FLOP/s, memory: bench_sampler itself
    log(f'sampler FLOPs / memory, variant {variant} (benchmarks.bench_sampler)')
    argv = ['--variant', variant, '--steps', str(p['base_steps']), '--batch', str(p['base_batch']),
            '--repeats', str(p['repeats'])] + (['--bf16'] if bf16 else [])
    out['flops'].append(bench_sampler.main(argv))
    r = out['flops'][-1]
    out['vs_resolution'].append(dict(variant=variant, batch=r['batch'], steps=r['steps'],
                                     image_size=r['image_size'], compile_s=r['compile_s'],
                                     sample_s=r['sample_s_median'], frames_per_s=r['frames_per_s']))
  bench = SamplerBench(p['variant'], bf16)
  done: dict[tuple[int, int], dict[str, Any]] = {}     # (batch, steps) → row: each point compiled once
  for b, s in [(b, p['base_steps']) for b in p['batches']] + [(p['base_batch'], s) for s in p['steps']]:
    if (b, s) not in done:
      log(f'sampler {p["variant"]}: batch {b}, {s} steps')
      done[(b, s)] = bench.run(b, s, p['repeats'])
  out['vs_batch'] = [done[(b, p['base_steps'])] for b in p['batches']]
  out['vs_steps'] = [done[(p['base_batch'], s)] for s in p['steps']]
  out['fit_time_vs_steps'] = linear_fit([r['steps'] for r in out['vs_steps']],
                                        [r['sample_s'] for r in out['vs_steps']])
  out['fit_time_vs_batch'] = linear_fit([r['batch'] for r in out['vs_batch']],
                                        [r['sample_s'] for r in out['vs_batch']])

  # Memory at 10 vs 100 steps: compile only (the scan keeps one step's activations whatever the count).
  mem = {}
  for s in p['memory_steps']:
    if (p['base_batch'], s) in done:
      mem[str(s)] = done[(p['base_batch'], s)]['memory']
      continue
    log(f'sampler {p["variant"]}: compiled memory at {s} steps (compile only)')
    compiled, _ = bench.compile(p['base_batch'], s)
    mem[str(s)] = bench_train.memory_dict(compiled.memory_analysis())
  a, b = (mem[str(s)] for s in p['memory_steps'])
  out['memory_vs_steps'] = dict(per_steps=mem, temp_equal=a is not None and b is not None and
                                a['temp_size_in_bytes'] == b['temp_size_in_bytes'],
                                equal=a == b)
  return out


def bench_frames_section(p: dict[str, Any], bf16: bool) -> dict[str, Any]:
  """Time vs number of frames through the DAE codec's decode (fixed batch, padded last batch)."""
  config = dae_config.get_config(f'variant={p["variant"]}')
  model = bench_sampler.random_model(unet.config_from_dict(config.model, dtype='float32', dropout=0.0))
  decoder = dae_codec.DAECodec(model, config, steps=p['base_steps'], batch=p['decoder_batch'], bf16=bf16)
  x_T = decoder.seed_noise(0)
  d = int(config.model.enc_out_channels)
  rng = np.random.default_rng(0)
  t0 = time.perf_counter()
  first = sum(len(f) for f in decoder.iter_decode(rng.standard_normal((decoder.batch, d), np.float32), x_T))
  compile_and_first_s = time.perf_counter() - t0
  rows = []
  for n in p['frames']:
    latents = rng.standard_normal((n, d), np.float32)
    times = []
    for _ in range(p['frame_repeats']):
      t0 = time.perf_counter()
      got = sum(len(f) for f in decoder.iter_decode(latents, x_T))
      times.append(time.perf_counter() - t0)
    assert got == n, (got, n)
    rows.append(dict(frames=n, seconds=float(np.median(times)), frames_per_s=n / float(np.median(times))))
    log(f'decoder: {n} frames in {rows[-1]["seconds"]:.3f} s')
  fit = linear_fit([r['frames'] for r in rows], [r['seconds'] for r in rows])
  return dict(batch=decoder.batch, steps=p['base_steps'], image_size=decoder.image_size, rows=rows,
              fit_time_vs_frames=fit, first_call_s=compile_and_first_s, first_call_frames=first,
              compiles=decoder.num_compiles(), calls=1 + len(p['frames']) * p['frame_repeats'])


def bench_recompiles(p: dict[str, Any]) -> dict[str, Any]:
  """Compiles of the codec's decode over repeated calls with new values of the same shapes."""
  bench = SamplerBench(p['variant'])
  codec = bench.codec(p['base_batch'], p['base_steps'])
  for seed in range(3):
    latents = np.random.default_rng(seed).standard_normal((codec.batch, bench.dim)).astype(np.float32)
    codec.decode(latents, codec.seed_noise(seed))
  return dict(calls=3, compiles=codec.num_compiles())


def bench_pipeline_section(p: dict[str, Any], bf16: bool) -> dict[str, Any]:
  """The user's path: `generate` (speech2latent + codec decode + mp4 writer) vs the bare decode, same frames.

  Random DAE / speech2latent checkpoints saved as real ones, `pipeline_seconds` of audio. Reports frames/s of
  (a) `generate.generate` end to end (checkpoint loading and compilation included), (b) the same pipeline
  warm, frames written to the mp4 (what a user waits for on a long input), (c) the codec's bare decode of as
  many frames, no speech2latent or writer.
  """
  import tempfile  # pylint: disable=g-import-not-at-top
  import soundfile as sf  # pylint: disable=g-import-not-at-top
  from daetalker_jax import generate  # pylint: disable=g-import-not-at-top
  from daetalker_jax import inference  # pylint: disable=g-import-not-at-top
  from daetalker_jax.inference import loading  # pylint: disable=g-import-not-at-top
  from tests import _checkpoints  # pylint: disable=g-import-not-at-top
  root = tempfile.mkdtemp(prefix='bench_pipeline_')
  dc = dae_config.get_config(f'variant={p["variant"]}')
  sc = s2l_config.get_config(f'variant={p["train_variants"]["s2l"]}')
  sc.model.latent_dim = int(dc.model.enc_out_channels)
  dim = sc.model.latent_dim
  stats = {'latent_mean': [0.0] * dim, 'latent_std': [1.0] * dim, 'normalize_latents': True, 'pose_scale': 1.0}
  dae = str(_checkpoints.save_random_checkpoint(dc, pathlib.Path(root) / 'dae', {}, seed=0))
  s2l = str(_checkpoints.save_random_checkpoint(sc, pathlib.Path(root) / 's2l', stats, seed=1))
  wav = os.path.join(root, 'speech.wav')
  n_samples = int(p['pipeline_seconds'] * contract.SAMPLE_RATE)
  sf.write(wav, 0.1 * np.random.default_rng(0).standard_normal(n_samples), contract.SAMPLE_RATE, subtype='PCM_16')
  opts = inference.Options(steps=p['base_steps'], batch=p['decoder_batch'], bf16=bf16)
  log(f'pipeline: generate {p["pipeline_seconds"]} s of audio end to end ({p["variant"]}, {p["base_steps"]} steps)')
  end_to_end = generate.generate(wav, dae, s2l, os.path.join(root, 'cold.mp4'), opts, progress=False)
  pipeline = inference.load_pipeline('dae_talker', dae=dae, s2l=s2l, options=opts)
  speech = loading.load_speech(wav)
  generate.write_video(pipeline(speech), os.path.join(root, 'warmup.mp4'), progress=False)   # compiles
  t0 = time.perf_counter()
  frames = generate.write_video(pipeline(speech), os.path.join(root, 'warm.mp4'), progress=False)
  warm_s = time.perf_counter() - t0
  latents = np.random.default_rng(1).standard_normal((frames, dim)).astype(np.float32)
  t0 = time.perf_counter()
  pipeline.codec.decode(latents, pipeline.x_T)
  bare_s = time.perf_counter() - t0
  import shutil  # pylint: disable=g-import-not-at-top
  shutil.rmtree(root, ignore_errors=True)
  return {
      'frames': frames, 'image_size': pipeline.codec.image_size, 'steps': p['base_steps'],
      'batch': pipeline.codec.batch,
      'generate_end_to_end': {'what': 'generate.generate: load checkpoints, compile, speech2latent, decode, '
                                      'write mp4', 'seconds': end_to_end['wall_s'], 'frames_per_s': end_to_end['fps']},
      'pipeline_warm_with_writer': {'what': 'the pipeline, compiled: speech2latent + decode + mp4 writer',
                                    'seconds': warm_s, 'frames_per_s': frames / warm_s},
      'bare_decode': {'what': 'DAECodec.decode only (no speech2latent, no writer)', 'seconds': bare_s,
                      'frames_per_s': frames / bare_s},
      'compiles': pipeline.num_compiles(),
  }


def bench_torch_section(p: dict[str, Any]) -> dict[str, Any]:
  """JAX's sampler (the DAE codec) against diffusers' UNet2DModel of the same shape on the same CPU threads.

  A subprocess: `benchmarks.bench_torch_unet` pins its threads before JAX starts. The issue's configuration
  (128 px) takes minutes on 2 cores: `python -m benchmarks.bench_torch_unet` runs it on its own.
  """
  import json  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import tempfile  # pylint: disable=g-import-not-at-top
  log(f'JAX codec vs PyTorch UNet2DModel, variant {p["variant"]} (benchmarks.bench_torch_unet)')
  with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, 'torch.json')
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')
    subprocess.run([sys.executable, '-m', 'benchmarks.bench_torch_unet', '--variant', p['variant'],
                    '--steps', str(p['base_steps']), '--batch', str(p['base_batch']), '--sections', 'sampler,forward',
                    '--out', out], cwd=root, check=True)
    with open(out) as f:
      return json.load(f)


def bench_s2l_train(variant: str, batch: int, steps: int) -> dict[str, Any]:
  """speech2latent train-step throughput, timed by bench_train's time_train_step like the DAE's."""
  config = s2l_config.get_config(f'variant={variant}')
  config.batch_size = batch
  config.mesh = [('data', -1), ('fsdp', 1)]
  w, d = int(config.data.window), int(config.model.latent_dim)
  rng = np.random.default_rng(0)
  local = batch // jax.process_count()

  def make_batch(mesh):
    return sharding.make_global_batch(mesh, {
        'audio': (0.1 * rng.standard_normal((local, w * contract.SAMPLES_PER_FRAME))).astype(np.float32),
        'pose': rng.uniform(-10, 10, (local, w, 3)).astype(np.float32),
        'latent': rng.standard_normal((local, w, d)).astype(np.float32),
        'mask': np.ones((local, w), bool)})

  r = bench_train.time_train_step(config, make_batch, steps)
  return {'variant': variant, 'batch': batch, 'window_frames': w, **r, 'windows_per_s': batch / r['step_s'],
          'frames_per_s': batch * w / r['step_s']}


def bench_train_section(p: dict[str, Any]) -> dict[str, Any]:
  out = {}
  v = p['train_variants']
  log(f'train step dae ({v["dae"]}) via benchmarks.bench_train')
  out['dae'] = bench_train.benchmark(v['dae'], p['train_batch'], p['train_steps'], 'float32', False, 1, 1)
  log(f'train step speech2latent ({v["s2l"]})')
  out['speech2latent'] = bench_s2l_train(v['s2l'], p['train_batch'], p['train_steps'])
  return out


# --------------------------------------------------------------------------------------------------------
# Report.
# --------------------------------------------------------------------------------------------------------
def summary_lines(r: dict[str, Any]) -> list[str]:
  s, f, t = r['sampler'], r['frames'], r['train']
  lines = [f"device: {r['device']} x{r['num_devices']}, preset {r['preset']}, total {r['total_s']:.0f} s"]
  for row in s['vs_batch']:
    lines.append(f"sampler {row['image_size']}px {row['steps']} steps batch {row['batch']:>3}: "
                 f"{row['frames_per_s']:.2f} frames/s (compile {row['compile_s']:.1f} s)")
  for row in s['vs_resolution']:
    lines.append(f"sampler {row['variant']} ({row['image_size']} px) batch {row['batch']}: "
                 f"{row['frames_per_s']:.2f} frames/s (compile {row['compile_s']:.1f} s)")
  for row in s['flops']:
    lines.append(f"  {row['variant']}: {row['unet_gflops_per_forward']} GFLOP/UNet forward, "
                 f"{row['achieved_gflops_per_s']} GFLOP/s achieved, temp {row['memory']['temp_mb']} MB")
  for name, fit in (('steps', s['fit_time_vs_steps']), ('frames', f['fit_time_vs_frames'])):
    lines.append(f"time vs {name}: slope {fit['slope']:.4g} s/{name[:-1]}, intercept {fit['intercept']:.4g} s, "
                 f"R^2 {fit['r2']:.4f}")
  mem = s['memory_vs_steps']
  temps = {k: v['temp_size_in_bytes'] for k, v in mem['per_steps'].items()}
  lines.append(f"compiled temp memory by steps {temps}: {'EQUAL' if mem['temp_equal'] else 'DIFFERENT'}")
  lines.append(f"recompiles: sampler {r['recompiles']['compiles']} compile(s) / {r['recompiles']['calls']} calls; "
               f"decoder {f['compiles']} / {f['calls']} calls of {len(f['rows'])} lengths")
  if r.get('pipeline'):
    pl = r['pipeline']
    lines.append(f"user path ({pl['frames']} frames, {pl['image_size']} px, {pl['steps']} steps): generate end to end "
                 f"{pl['generate_end_to_end']['frames_per_s']:.2f} frames/s, warm pipeline + writer "
                 f"{pl['pipeline_warm_with_writer']['frames_per_s']:.2f} frames/s, bare decode "
                 f"{pl['bare_decode']['frames_per_s']:.2f} frames/s")
  if r.get('torch_unet'):
    tu = r['torch_unet']['sampler']
    lines.append(f"JAX codec vs PyTorch UNet2DModel ({r['torch_unet'].get('variant', '')}): "
                 f"{tu['speed_ratio_jax_codec_over_torch']:.2f}x its speed (XLA default options: "
                 f"{tu['speed_ratio_jax_xla_default_over_torch']:.2f}x)")
  lines.append(f"train dae: {t['dae']['images_per_s']} images/s, step {t['dae']['step_s']} s, "
               f"{t['dae']['achieved_flops_per_s'] / 1e9:.2f} GFLOP/s")
  lines.append(f"train speech2latent: {t['speech2latent']['windows_per_s']:.2f} windows/s "
               f"({t['speech2latent']['frames_per_s']:.0f} frames/s), step {t['speech2latent']['step_s']:.4f} s, "
               f"{t['speech2latent']['achieved_flops_per_s'] / 1e9:.2f} GFLOP/s")
  return lines


def main(argv: list[str] | None = None) -> dict[str, Any]:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument('--out', default='runs/bench', help='output folder (bench.json, bench.png)')
  ap.add_argument('--preset', default='cpu', choices=sorted(PRESETS), help='sweep sizes (default cpu)')
  ap.add_argument('--variant', default='', help='DAE variant of the batch/steps/frames sweeps (preset default)')
  ap.add_argument('--bf16', action='store_true', help='bfloat16 compute in the sampler benchmarks')
  ap.add_argument('--skip', default='', help='comma-separated sections to skip: sampler,frames,pipeline,torch,train')
  args = ap.parse_args(argv)
  p = dict(PRESETS[args.preset])
  if args.variant:
    p['variant'] = args.variant
  skip = set(filter(None, args.skip.split(',')))
  sections = {'sampler', 'frames', 'pipeline', 'torch', 'train'}
  if skip - sections:
    ap.error(f'--skip: unknown sections {sorted(skip - sections)}')
  os.makedirs(args.out, exist_ok=True)
  t0 = time.perf_counter()
  r: dict[str, Any] = dict(preset=args.preset, params=p, bf16=args.bf16, device=jax.devices()[0].device_kind,
                           platform=jax.devices()[0].platform, num_devices=jax.device_count(),
                           jax_version=jax.__version__)
  r['sampler'] = bench_sampler_section(p, args.bf16) if 'sampler' not in skip else None
  r['frames'] = bench_frames_section(p, args.bf16) if 'frames' not in skip else None
  r['recompiles'] = bench_recompiles(p) if 'sampler' not in skip else None
  r['pipeline'] = bench_pipeline_section(p, args.bf16) if 'pipeline' not in skip else None
  r['torch_unet'] = bench_torch_section(p) if 'torch' not in skip else None
  r['train'] = bench_train_section(p) if 'train' not in skip else None
  r['total_s'] = time.perf_counter() - t0
  path = os.path.join(args.out, 'bench.json')
  atomic.write_json(path, r, default=float)
  if not skip:
    from benchmarks import plot  # pylint: disable=g-import-not-at-top
    plot.plot(r, os.path.join(args.out, 'bench.png'))
    print('\n'.join(summary_lines(r)))
  log(f'wrote {path}' + ('' if skip else f' and {os.path.join(args.out, "bench.png")}'))
  return r


if __name__ == '__main__':
  main()
