"""Latent extraction: z_sem of every frame of every clip from a trained DAE's frozen EMA encoder.

Run (the DAE's workdir and its dataset; `config.task=extract` reuses the DAE config):
  python -m daetalker_jax.main --config=configs/dae.py:variant=tiny --config.task=extract \
      --workdir=runs/dae --config.data.data_dir=runs/data

Writes, beside the dataset (docs/ARCHITECTURE.md):
  DATA_DIR/latents/<name>/<clip_id>.npy   float32 (num_frames, D), one file per clip, written atomically
  DATA_DIR/latents/<name>/stats.json      {"mean": [D], "std": [D], "dim": D, "encoder": ..., "step": ...}
`stats.json` comes from the train split only (speech2latent normalises its targets with it), and is
written last: its presence marks a complete extraction. Re-running skips clips whose file exists when
the encoder (workdir + checkpoint step) is the one that wrote them; a different encoder is an error
unless `overwrite` (stale latents silently mixed with new ones would poison stage 2).

Frames are encoded by the DAE codec (inference/dae_codec.py): fixed-size batches (the last one padded, so
one compilation serves every clip), sharded over all devices along the batch.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from absl import logging
import jax
import ml_collections
import numpy as np
import tqdm

from daetalker_jax import atomic
from daetalker_jax import checkpoint
from daetalker_jax import sharding
from daetalker_jax.data import dataset
from daetalker_jax.inference import dae_codec


def extract_latents(dae_workdir: str, data_dir: str, *, name: str = 'dae', batch_size: int = 64,
                    splits: tuple[str, ...] = dataset.SPLITS, overwrite: bool = False,
                    devices: list[jax.Device] | None = None) -> dict[str, Any]:
  """Encodes every frame of `splits` with the EMA encoder of `dae_workdir`; returns the stats dict."""
  model, dae_config = checkpoint.load_model(dae_workdir, which='ema')
  step = checkpoint.Checkpointer(dae_workdir, read_only=True, async_save=False).latest_step()
  if dae_config.task != 'dae':
    raise ValueError(f'{dae_workdir}: holds a {dae_config.task!r} checkpoint, not a DAE')
  devices = list(jax.devices() if devices is None else devices)
  mesh = sharding.create_mesh([('data', -1), ('fsdp', 1)], devices=devices)
  codec = dae_codec.DAECodec(model, dae_config, steps=None, batch=batch_size, mesh=mesh)   # encoder only

  out_dir = dataset.latents_dir(data_dir, name)
  out_dir.mkdir(parents=True, exist_ok=True)
  source = {'encoder': os.path.abspath(dae_workdir), 'step': int(step)}
  source_path = out_dir / 'source.json'
  if source_path.is_file() and json.loads(source_path.read_text()) != source:
    if not overwrite:
      raise ValueError(f'{out_dir}: latents of another encoder ({source_path.read_text().strip()}); '
                       f'pass overwrite=True (--config.extract_overwrite) or choose another name')
    for f in out_dir.glob('*.npy'):
      f.unlink()
  (out_dir / 'stats.json').unlink(missing_ok=True)                    # incomplete until rewritten
  atomic.write_json(source_path, source, indent=None)

  info = dataset.dataset_info(data_dir)['splits']
  total = sum(info.get(s, {}).get('frames', 0) for s in splits)
  logging.info('Extracting latents of %d frames (%s) with %s step %d on %d devices', total, splits,
               dae_workdir, step, len(devices))
  t0, encoded, skipped = time.perf_counter(), 0, 0
  train_sum = train_sq = None
  train_count = 0
  with tqdm.tqdm(total=total, unit='frame', desc='extract', disable=jax.process_index() > 0) as bar:
    for split in splits:
      if info.get(split, {}).get('clips', 0) == 0:
        continue
      for clip in dataset.iterate_clips(data_dir, split):
        path = out_dir / f"{clip['clip_id']}.npy"
        if path.is_file() and not overwrite:
          z = np.load(path)
          skipped += len(z)
        else:
          z = codec.encode(clip['images'])
          if not np.isfinite(z).all():
            raise FloatingPointError(f"{dae_workdir}: non-finite latents for clip {clip['clip_id']}")
          if jax.process_index() == 0:
            atomic.write_with(path, lambda p: np.save(p, z), suffix='.npy')
          encoded += len(z)
        if split == 'train':
          z64 = z.astype(np.float64)
          train_sum = z64.sum(0) if train_sum is None else train_sum + z64.sum(0)
          train_sq = (z64 ** 2).sum(0) if train_sq is None else train_sq + (z64 ** 2).sum(0)
          train_count += len(z)
        bar.update(len(z))
  if not train_count:
    raise ValueError(f'{data_dir}: no train frames to compute latent statistics from')
  mean = train_sum / train_count
  std = np.sqrt(np.maximum(train_sq / train_count - mean ** 2, 0.0))
  stats = {'mean': mean.tolist(), 'std': np.maximum(std, 1e-6).tolist(), 'dim': int(len(mean)),
           'frames': int(train_count), **source}
  if jax.process_index() == 0:
    atomic.write_json(out_dir / 'stats.json', stats, indent=None)
  dt = time.perf_counter() - t0
  logging.info('Latents: %d frames encoded, %d reused, %.1f s (%.1f frames/s) → %s', encoded, skipped, dt,
               encoded / max(dt, 1e-9), out_dir)
  print(f'extracted {encoded} frames ({skipped} reused) in {dt:.1f} s → {out_dir}')
  return stats


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """`main.py` job for `config.task == 'extract'`: `workdir` is the DAE's workdir."""
  if not config.data.data_dir:
    raise ValueError('config.data.data_dir is empty: pass --config.data.data_dir=DATA_DIR')
  return extract_latents(workdir, config.data.data_dir, name=config.get('latents_name', 'dae'),
                         batch_size=config.get('extract_batch_size', 64),
                         overwrite=config.get('extract_overwrite', False))
