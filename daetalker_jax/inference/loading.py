"""Validated loading of what inference needs: checkpoints, their statistics, and the input speech.

Every function raises `GenerateError` with one line naming the flag and the problem, before heavy work.
"""

from __future__ import annotations

import os
from typing import Any

from flax import nnx
import ml_collections
import numpy as np

from daetalker_jax import checkpoint
from daetalker_jax.data import audio as audio_lib
from daetalker_jax.data import contract
from daetalker_jax.inference.errors import GenerateError

MIN_SECONDS = 0.5                          # shorter audio is refused (below ~12 frames)
DAE_TASKS = ('dae',)
S2L_TASKS = ('s2l', 'speech2latent')


def load_speech(path: str | os.PathLike[str]) -> np.ndarray:
  """The input speech as float32 16 kHz mono, refusing files that are not audio or are too short."""
  try:
    audio = audio_lib.load_audio(path, sr=contract.SAMPLE_RATE)
  except audio_lib.AudioError as e:
    raise GenerateError(str(e)) from None
  seconds = len(audio) / contract.SAMPLE_RATE
  if seconds < MIN_SECONDS:
    raise GenerateError(f'{path}: audio is {seconds:.2f} s long; generation needs at least {MIN_SECONDS} s')
  return audio


def read_meta(workdir: str, flag: str, tasks: tuple[str, ...]) -> dict[str, Any]:
  """The JSON meta of the latest checkpoint in `workdir`, checked to come from one of `tasks`."""
  if not os.path.isdir(workdir):
    raise GenerateError(f'{flag}={workdir}: no such directory')
  if not os.path.isdir(checkpoint.checkpoint_dir(workdir)):
    raise GenerateError(f'{flag}={workdir}: not a training workdir (no checkpoints/ folder)')
  ckpt = checkpoint.Checkpointer(workdir, read_only=True, async_save=False)
  try:
    if ckpt.latest_step() is None:
      raise GenerateError(f'{flag}={workdir}: no complete checkpoint in {ckpt.directory}')
    meta = ckpt.restore_meta()
  except GenerateError:
    raise
  except Exception as e:  # pylint: disable=broad-except  (orbax raises many types for a damaged dir)
    raise GenerateError(f'{flag}={workdir}: unreadable checkpoint ({" ".join(str(e).split())[:200]})') from None
  finally:
    ckpt.close()
  task = meta.get('config', {}).get('task')
  if task not in tasks:
    raise GenerateError(f'{flag}={workdir}: checkpoint of task {task!r}, expected {" or ".join(tasks)}')
  return meta


def load_checkpoint(workdir: str, flag: str, tasks: tuple[str, ...]
                    ) -> tuple[nnx.Module, ml_collections.ConfigDict, dict[str, Any]]:
  """(EMA model in eval mode, its training config, the meta's data statistics)."""
  meta = read_meta(workdir, flag, tasks)
  try:
    model, config = checkpoint.load_model(workdir, which='ema')
  except (ValueError, FileNotFoundError) as e:
    raise GenerateError(f'{flag}={workdir}: {" ".join(str(e).split())}') from None
  return model, config, dict(meta.get('data_stats') or {})


def latent_stats(config: ml_collections.ConfigDict, stats: dict[str, Any], data_dir: str, dim: int
                 ) -> tuple[np.ndarray, np.ndarray]:
  """(mean, std) (D,) that undo the s2l training normalisation (identity when it trained unnormalised).

  Read from the checkpoint's meta (`latent_mean`/`latent_std`), else from DATA_DIR/latents/<name>/stats.json.
  """
  if not stats.get('normalize_latents', config.data.get('normalize_latents', True)):
    return np.zeros(dim, np.float32), np.ones(dim, np.float32)
  if 'latent_mean' in stats and 'latent_std' in stats:
    mean, std = np.asarray(stats['latent_mean'], np.float32), np.asarray(stats['latent_std'], np.float32)
  else:
    from daetalker_jax.data import dataset  # pylint: disable=g-import-not-at-top
    root = data_dir or config.data.get('data_dir', '')
    try:
      s = dataset.load_latent_stats(root, config.data.latents)
    except (ValueError, OSError) as e:
      raise GenerateError(f'--s2l: the checkpoint stores no latent mean/std and {e}') from None
    mean, std = s['mean'], s['std']
  if mean.shape != (dim,) or std.shape != (dim,):
    raise GenerateError(f'--s2l: latent statistics have shape {mean.shape}/{std.shape}, the model outputs {dim}')
  return mean, std
