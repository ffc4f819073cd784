"""`make plan`: the pod plans of docs/SCALING.md, one row at a time (daetalker_jax/plan.py does the work).

  python -m benchmarks.plan_all --out runs/plan                     # every row (hours on 2 cores)
  python -m benchmarks.plan_all --out runs/plan --only dae256_v5e16_f32,dae256_v5e16_bf16
  python -m benchmarks.plan_all --list

Each row is one `python -m daetalker_jax.plan` command (printed before it runs, so any row can be rerun by
hand); its JSON goes to OUT/<row>.json and a markdown table of every row present to OUT/plans.md. Rows whose JSON
exists are skipped unless --force. Compiler memory is exact for that compile; the step time is an estimate
(FLOPs at the chip's peak x the stated MFU).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shlex
import subprocess
import sys
import time

# (row, config, topology, extra flags). Full-size configs only; batches are global.
ROWS: list[tuple[str, str, str, list[str]]] = [
    # DAE-256 (official ffhq256_autoenc): float32 as shipped, then the pod recipe (bf16 compute, remat, fsdp).
    ('dae256_v5e16_f32', 'configs/dae.py:variant=256', 'v5e:4x4',
     ['--batch=64', '--mesh=data=16,fsdp=1', '--config.dtype=float32']),
    ('dae256_v5e16_bf16', 'configs/dae.py:variant=256', 'v5e:4x4',
     ['--batch=128', '--mesh=data=16,fsdp=1', '--config.dtype=bfloat16', '--config.remat=True']),
    ('dae256_v5e16_bf16_fsdp', 'configs/dae.py:variant=256', 'v5e:4x4',
     ['--batch=128', '--mesh=data=4,fsdp=4', '--config.dtype=bfloat16', '--config.remat=True']),
    ('dae128_v5e16_bf16', 'configs/dae.py:variant=128', 'v5e:4x4',
     ['--batch=256', '--mesh=data=16,fsdp=1', '--config.dtype=bfloat16', '--config.remat=True']),
    ('dae256_v5e256_bf16', 'configs/dae.py:variant=256', 'v5e:16x16',
     ['--batch=2048', '--mesh=data=256,fsdp=1', '--config.dtype=bfloat16', '--config.remat=True']),
    ('dae256_v5p8_bf16', 'configs/dae.py:variant=256', 'v5p:2x2x1',
     ['--batch=128', '--mesh=data=4,fsdp=1', '--config.dtype=bfloat16', '--config.remat=True']),
    ('dae256_v4_8_bf16', 'configs/dae.py:variant=256', 'v4:2x2x1',
     ['--batch=64', '--mesh=data=4,fsdp=1', '--config.dtype=bfloat16', '--config.remat=True']),
    ('vq_f4_v5e16', 'configs/autoencoder.py:variant=f4', 'v5e:4x4', ['--mesh=data=16,fsdp=1']),
    ('difftalk_full_v5e16_bf16', 'configs/difftalk.py:variant=full', 'v5e:4x4',
     ['--batch=64', '--mesh=data=16,fsdp=1', '--config.dtype=bfloat16', '--config.remat=True']),
    ('landmarks_full_v5e16', 'configs/landmarks.py:variant=full', 'v5e:4x4', ['--mesh=data=16,fsdp=1']),
    ('talkformer_full_v5e16_bf16', 'configs/talkformer.py:variant=full', 'v5e:4x4',
     ['--batch=64', '--mesh=data=16,fsdp=1', '--config.dtype=bfloat16', '--config.remat=True']),
    # The decoders that generation runs (DDIM loop with guidance), 256 px, on the 4 chips of a v5e-4 host.
    ('dae256_decoder_v5e4', 'configs/dae.py:variant=256', 'v5e:2x2',
     ['--decoder', '--decoder_batch=16', '--steps=20']),
]


def command(row: tuple[str, str, str, list[str]], out: pathlib.Path) -> list[str]:
  name, config, topology, extra = row
  return [sys.executable, '-m', 'daetalker_jax.plan', f'--config={config}', f'--topology={topology}', *extra,
          f'--json={out / (name + ".json")}', f'--log={out / "log.txt"}']


def table(out: pathlib.Path) -> str:
  lines = ['| row | config | topology | batch/chip | params | dtype, remat | per-chip total (GB) | headroom | '
           'TFLOP/chip | all-reduce ops | est. step (ms) | /s per chip | compile (s) |',
           '|---|---|---|---|---|---|---|---|---|---|---|---|---|']
  for name, *_ in ROWS:
    path = out / f'{name}.json'
    if not path.exists():
      continue
    p = json.loads(path.read_text())
    per_chip = p.get('per_chip_batch', p['batch'] / p['chips'])
    ar = p['collectives'].get('all-reduce', {}).get('count', 0)
    lines.append(
        f"| {name} | {p['config']} | {p['topology']} | {per_chip:g} | {p.get('params', 0):,} | {p['dtype']}, "
        f"{'on' if p.get('remat') else 'off'} | {p['per_chip_bytes']['total'] / 1e9:.2f} | "
        f"{p['headroom'] * 100:.0f}% | {p['flops_per_chip'] / 1e12:.2f} | {ar} | "
        f"{p['estimate']['step_s'] * 1e3:.0f} | {p['estimate']['items_per_s_per_chip']:.1f} | {p['compile_s']:.0f} |")
  return '\n'.join(lines) + '\n'


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--out', default='runs/plan')
  parser.add_argument('--only', default='', help='comma-separated row names')
  parser.add_argument('--force', action='store_true', help='replan rows whose JSON exists')
  parser.add_argument('--list', action='store_true', help='print the rows and their commands')
  args = parser.parse_args()
  out = pathlib.Path(args.out)
  wanted = [r for r in ROWS if not args.only or r[0] in args.only.split(',')]
  unknown = set(filter(None, args.only.split(','))) - {r[0] for r in ROWS}
  if unknown:
    raise SystemExit(f'[plan] unknown rows {sorted(unknown)}; --list shows them')
  if args.list:
    for r in wanted:
      print(f'{r[0]}:\n  ' + shlex.join(command(r, out)[1:]).replace(sys.executable, 'python'))
    return
  out.mkdir(parents=True, exist_ok=True)
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  failed = []
  for i, row in enumerate(wanted):
    if (out / f'{row[0]}.json').exists() and not args.force:
      print(f'[plan] {i + 1}/{len(wanted)} {row[0]}: done before (--force replans)', flush=True)
      continue
    cmd = command(row, out)
    print(f'[plan] {i + 1}/{len(wanted)} {row[0]}: python ' + shlex.join(cmd[1:]), flush=True)
    t0 = time.perf_counter()
    if subprocess.run(cmd, env=env, check=False).returncode:
      failed.append(row[0])
    print(f'[plan]   {time.perf_counter() - t0:.0f} s', flush=True)
  (out / 'plans.md').write_text(table(out))
  print(f'[plan] table of every row planned so far: {out / "plans.md"}')
  if failed:
    raise SystemExit(f'[plan] {len(failed)} row(s) failed: {", ".join(failed)} (details: {out / "log.txt"})')


if __name__ == '__main__':
  main()
