"""The demo recipe's ablation table (docs/RESULTS.md): one `daetalker_jax.demo` run per row, then one table.

  python -m benchmarks.demo_ablation --out runs/ablation                 # every row below, one after another
  python -m benchmarks.demo_ablation --out runs/ablation --only mw10     # one row
  python -m benchmarks.demo_ablation --out runs/ablation --collect       # just the table of finished rows

Each row is a demo folder OUT/<name> (an interrupted row resumes; a finished one is only collected). The
synthface clips and prepared data are made once per crop and copied into each row, so rows share their
data exactly. The table columns are those of the issue: change, DAE steps, wall time of the row's demo,
strict r (lag 0), open-mouth recall, amplitude ratio, PSNR, plus closed in silence and the soft r. Rows
measured in parallel (`--note`) say so: their wall times are not those of an idle machine.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import subprocess
import sys
import time

# name → (what changed, demo flags). Every row is the default preset plus its flags; the default itself is
# row `mw10` (configs/dae.py: the demo variant's loss.mouth_weight = 10).
ROWS = {
    'base': ('baseline: full frame, plain v loss', ['--set', 'dae.loss.mouth_weight=1']),
    'mw10': ('mouth-box loss weight 10 (the default)', []),
    'face': ('face crop, plain v loss', ['--crop', 'face', '--set', 'dae.loss.mouth_weight=1']),
    'face_mw10': ('face crop + mouth-box loss weight 10', ['--crop', 'face']),
    'mw10_invert': ('mouth weight 10, x_T = DDIM inversion of a closed-mouth frame', ['--noise', 'invert']),
    'mw10_s2l600': ('mouth weight 10, speech2latent 600 steps', ['--s2l-steps', '600']),
}


def _data(out: pathlib.Path, crop: str) -> pathlib.Path:
  """Clips + prepared data for one crop (the demo's defaults), made once."""
  shared = out / f'_data_{crop}'
  if not (shared / 'data' / 'dataset_info.json').is_file():
    from data_prep import prepare, synthface  # pylint: disable=g-import-not-at-top
    synthface.generate_dataset(shared / 'videos', clips=16, seconds=5.0, size=128, seed=0, overwrite=True)
    frac = max(0.1, 1.0 / 16 + 1e-6)
    prepare.prepare(shared / 'videos', shared / 'data', size=64, crop=crop, val_fraction=frac,
                    test_fraction=frac, seed=0, overwrite=True)
  return shared


def run_row(out: pathlib.Path, name: str) -> None:
  _, flags = ROWS[name]
  row = out / name
  if (row / 'summary.json').is_file():
    return
  crop = flags[flags.index('--crop') + 1] if '--crop' in flags else 'none'
  if not (row / 'data').exists():
    shared = _data(out, crop)
    row.mkdir(parents=True, exist_ok=True)
    for part in ('videos', 'data'):
      shutil.copytree(shared / part, row / part)   # a copy: extraction writes latents into the data folder
  t0 = time.perf_counter()
  subprocess.run([sys.executable, '-m', 'daetalker_jax.demo', '--out', str(row), *flags], check=True)
  (row / 'wall_s.json').write_text(json.dumps({'wall_s': time.perf_counter() - t0}))


def collect(out: pathlib.Path) -> list[dict]:
  rows = []
  for name, (change, _) in ROWS.items():
    path = out / name / 'summary.json'
    if not path.is_file():
      continue
    s = json.loads(path.read_text())
    wall = out / name / 'wall_s.json'
    rows.append(dict(name=name, change=change, dae_steps=s.get('dae_steps'), strict_r=s['strict_r'],
                     open_recall=s['open_recall'], amplitude_ratio=s['amplitude_ratio'], psnr_db=s['psnr_db'],
                     closed_in_silence=s['strict_closed_in_silence'], soft_r=s['mouth_open_pearson_r'],
                     wall_min=(json.loads(wall.read_text())['wall_s'] if wall.is_file() else s['total_s']) / 60))
  return rows


def markdown(rows: list[dict]) -> str:
  f = lambda v, fmt='{:.2f}': 'n/a' if v is None or v != v else fmt.format(v)
  lines = ['| change | DAE steps | wall time | strict r | recall | amplitude ratio | PSNR | closed in silence | '
           'soft r (secondary) |', '|---|---|---|---|---|---|---|---|---|']
  for r in rows:
    lines.append(f"| {r['change']} | {r['dae_steps']} | {f(r['wall_min'], '{:.1f}')} min | {f(r['strict_r'])} | "
                 f"{f(r['open_recall'])} | {f(r['amplitude_ratio'])} | {f(r['psnr_db'], '{:.1f}')} dB | "
                 f"{f(r['closed_in_silence'])} | {f(r['soft_r'])} |")
  return '\n'.join(lines)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--out', default='runs/ablation')
  p.add_argument('--only', action='append', choices=sorted(ROWS), help='run only these rows')
  p.add_argument('--collect', action='store_true', help='only print the table of finished rows')
  args = p.parse_args(argv)
  out = pathlib.Path(args.out)
  if not args.collect:
    for name in args.only or ROWS:
      print(f'[ablation] {name}: {ROWS[name][0]}', flush=True)
      run_row(out, name)
  rows = collect(out)
  (out / 'ablation.json').parent.mkdir(parents=True, exist_ok=True)
  (out / 'ablation.json').write_text(json.dumps(rows, indent=1) + '\n')
  print(markdown(rows))
  return 0


if __name__ == '__main__':
  sys.exit(main())
