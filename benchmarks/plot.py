"""Plots of `benchmarks/run_all.py` results: one PNG with the throughput and scaling panels.

  python -m benchmarks.plot runs/bench/bench.json runs/bench/bench.png
"""

from __future__ import annotations

import json
import sys
from typing import Any

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from daetalker_jax import atomic  # pylint: disable=g-import-not-at-top,wrong-import-position


def _fit_line(ax, x, fit, label_unit):
  xs = np.linspace(0, max(x) * 1.05, 50)
  ax.plot(xs, fit['slope'] * xs + fit['intercept'], '--', color='gray',
          label=f"fit: {fit['slope']:.3g} s/{label_unit} + {fit['intercept']:.3g} s, R²={fit['r2']:.3f}")


def plot(r: dict[str, Any], path: str) -> None:
  """Writes a 2x3 panel figure (atomically: temp file + rename)."""
  s, f, t = r['sampler'], r['frames'], r['train']
  fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
  title = f"{r['device']} x{r['num_devices']} — preset {r['preset']}"
  fig.suptitle(title)

  ax = axes[0, 0]
  rows = s['vs_batch']
  ax.plot([x['batch'] for x in rows], [x['frames_per_s'] for x in rows], 'o-')
  ax.set(xlabel='batch (frames)', ylabel='frames / s', title=f"DDIM sampler throughput ({rows[0]['image_size']} px, "
         f"{rows[0]['steps']} steps)")
  ax.set_xscale('log', base=2)

  ax = axes[0, 1]
  rows = s['vs_steps']
  x = [v['steps'] for v in rows]
  ax.plot(x, [v['sample_s'] for v in rows], 'o', label='measured')
  _fit_line(ax, x, s['fit_time_vs_steps'], 'step')
  ax.set(xlabel='DDIM steps', ylabel='seconds per batch', title=f"time vs steps (batch {rows[0]['batch']})")
  ax.legend(fontsize=8)

  ax = axes[0, 2]
  rows = f['rows']
  x = [v['frames'] for v in rows]
  ax.plot(x, [v['seconds'] for v in rows], 'o', label='measured')
  _fit_line(ax, x, f['fit_time_vs_frames'], 'frame')
  ax.set(xlabel='frames generated', ylabel='seconds',
         title=f"time vs frames (FrameDecoder batch {f['batch']}, {f['compiles']} compile)")
  ax.legend(fontsize=8)

  ax = axes[1, 0]
  rows = s['vs_resolution']
  names = [f"{v['variant']}\n{v['image_size']} px" for v in rows]
  ax.bar(names, [v['frames_per_s'] for v in rows], color='tab:blue', label='frames/s')
  ax.set(ylabel='frames / s', title=f"resolution (batch {rows[0]['batch']}, {rows[0]['steps']} steps)")
  ax2 = ax.twinx()
  ax2.plot(names, [v['compile_s'] for v in rows], 'o-', color='tab:red')
  ax2.set_ylabel('compile s', color='tab:red')

  ax = axes[1, 1]
  mem = s['memory_vs_steps']['per_steps']
  keys = list(mem)
  kinds = ('argument_size_in_bytes', 'output_size_in_bytes', 'temp_size_in_bytes')
  width = 0.8 / len(keys)
  for i, k in enumerate(keys):
    ax.bar(np.arange(len(kinds)) + i * width, [mem[k][q] / 2**20 for q in kinds], width, label=f'{k} steps')
  ax.set_xticks(np.arange(len(kinds)) + width * (len(keys) - 1) / 2, [q.split('_')[0] for q in kinds])
  ax.set(ylabel='MiB', title='compiled sampler memory vs steps (scan: equal)')
  ax.legend(fontsize=8)

  ax = axes[1, 2]
  tasks = [('dae', t['dae']['images_per_s'], 'images/s'),
           ('speech2latent', t['speech2latent']['frames_per_s'], 'frames/s')]
  ax.bar([f'{n}\n({u})' for n, _, u in tasks], [v for _, v, _ in tasks], color=['tab:green', 'tab:purple'])
  for i, (n, v, _) in enumerate(tasks):
    key = 'dae' if n == 'dae' else 'speech2latent'
    ax.text(i, v, f"{v:.1f}\n{t[key]['achieved_flops_per_s'] / 1e9:.1f} GFLOP/s", ha='center', va='bottom',
            fontsize=8)
  ax.set_yscale('log')
  ax.set(title='train-step throughput', ylabel='items / s (log)')

  fig.tight_layout()
  try:
    atomic.write_with(path, lambda tmp: fig.savefig(tmp, dpi=90, format='png'), suffix='.png')
  finally:
    plt.close(fig)


if __name__ == '__main__':
  if len(sys.argv) != 3:
    raise SystemExit('usage: python -m benchmarks.plot BENCH_JSON OUT_PNG')
  with open(sys.argv[1]) as fh:
    plot(json.load(fh), sys.argv[2])
