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

Frames are encoded in fixed-size batches (the last one padded, so one compilation serves every clip),
sharded over all devices along the batch.
"""

from __future__ import annotations

import json
import os
import pathlib
import time
from typing import Any

from absl import logging
from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm

from daetalker_jax import checkpoint
from daetalker_jax import sharding
from daetalker_jax.data import dataset

P = jax.P


def _write_atomic(path: pathlib.Path, write_fn) -> None:
  tmp = path.with_name(f'.{path.name}.tmp-{os.getpid()}')
  try:
    write_fn(tmp)
    os.replace(tmp, path)
  finally:
    if tmp.exists():
      tmp.unlink()


def make_encode_fn(model: nnx.Module, mesh: jax.sharding.Mesh, image_size: int):
  """Jitted `encode(images uint8 (B,S,S,3)) -> z_sem (B,D)`, batch sharded over all mesh axes."""
  graphdef, state = nnx.split(model)
  rep = jax.sharding.NamedSharding(mesh, P())
  batch = jax.sharding.NamedSharding(mesh, P(mesh.axis_names))
  state = jax.device_put(state, rep)

  @jax.jit
  def encode(state, images):
    m = nnx.merge(graphdef, state)
    x = images.astype(jnp.float32) / 127.5 - 1.0                       # (B,S,S,3) in [-1, 1]
    if x.shape[1] != image_size:                                      # dataset at another resolution
      x = jax.image.resize(x, (x.shape[0], image_size, image_size, 3), 'linear', antialias=True)
    return m.encode(x).astype(jnp.float32)                            # (B, D)

  def run(images: np.ndarray) -> jax.Array:
    return encode(state, jax.device_put(images, batch))
  return run


def encode_frames(encode_fn, images: np.ndarray, batch_size: int) -> np.ndarray:
  """All frames of a clip, in padded fixed-size batches (one compilation for every clip)."""
  out = []
  for i in range(0, len(images), batch_size):
    chunk = images[i:i + batch_size]
    n = len(chunk)
    if n < batch_size:
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - n, axis=0)])
    out.append(np.asarray(encode_fn(chunk))[:n])
  return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def extract_latents(dae_workdir: str, data_dir: str, *, name: str = 'dae', batch_size: int = 64,
                    splits: tuple[str, ...] = dataset.SPLITS, overwrite: bool = False,
                    devices: list[jax.Device] | None = None) -> dict[str, Any]:
  """Encodes every frame of `splits` with the EMA encoder of `dae_workdir`; returns the stats dict."""
  model, dae_config = checkpoint.load_model(dae_workdir, which='ema')
  step = checkpoint.Checkpointer(dae_workdir, read_only=True, async_save=False).latest_step()
  if dae_config.task != 'dae':
    raise ValueError(f'{dae_workdir}: holds a {dae_config.task!r} checkpoint, not a DAE')
  devices = list(jax.devices() if devices is None else devices)
  mesh = jax.make_mesh((len(devices),), ('data',), axis_types=(jax.sharding.AxisType.Auto,),
                       devices=devices)
  batch_size = -(-batch_size // len(devices)) * len(devices)          # a multiple of the device count
  encode_fn = make_encode_fn(model, mesh, int(dae_config.model.image_size))

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
  _write_atomic(source_path, lambda p: p.write_text(json.dumps(source)))

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
          z = encode_frames(encode_fn, clip['images'], batch_size)
          if not np.isfinite(z).all():
            raise FloatingPointError(f"{dae_workdir}: non-finite latents for clip {clip['clip_id']}")
          if jax.process_index() == 0:
            _write_atomic(path, lambda p: np.save(p.open('wb'), z))
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
    _write_atomic(out_dir / 'stats.json', lambda p: p.write_text(json.dumps(stats)))
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
