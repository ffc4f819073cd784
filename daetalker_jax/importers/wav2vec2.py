"""Loads a local Hugging Face wav2vec2 or HuBERT folder into `models.wav2vec2.Wav2Vec2Model`.

The folder is what `save_pretrained` / `huggingface-cli download` leaves: `config.json` plus
`model.safetensors` (preferred) or `pytorch_model.bin` (read with `torch.load(weights_only=True)`).
`config.json`'s `model_type` picks the family: 'wav2vec2' (also when missing) or 'hubert'; any other type
is refused naming the accepted ones. Checkpoints of `Wav2Vec2Model`, `Wav2Vec2ForCTC`,
`Wav2Vec2ForPreTraining` (keys prefixed `wav2vec2.`), `HubertModel`, `HubertForCTC` and
`HubertForSequenceClassification` (keys prefixed `hubert.`) all work; heads (CTC, classifier, quantizer,
projections) and the SpecAugment embedding are skipped.

Every model parameter must be found in the checkpoint with the right shape, otherwise the import fails
naming the folder and the key. The positional conv's weight norm (`weight_g`/`weight_v`, or
`parametrizations.weight.original0/1` in newer PyTorch) is folded into one kernel; HuBERT's optional
positional-conv BatchNorm (`conv_pos_batch_norm`, eval mode) is folded into a per-channel scale and bias.

Usage:
  model = load_wav2vec2(path, rngs=nnx.Rngs(0))            # build from config.json and load
  cfg = s2l_config(config.model)                            # speech2latent config, architecture from the folder
  load_wav2vec2_into(model.wav2vec2, path)                  # or load into an existing module
"""

import json
import os
import re
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from daetalker_jax.models import speech2latent
from daetalker_jax.models import wav2vec2

# Checkpoint keys that are not part of the base encoder.
_SKIP = re.compile(r'^(masked_spec_embed|lm_head\.|quantizer\.|project_q\.|project_hid\.|dropout_features|'
                   r'projector\.|classifier\.|layer_weights|adapter\.)')


_BN_EPS = 1e-5   # torch.nn.BatchNorm1d's default, which HF HuBERT's positional BatchNorm uses


def _read_config_dict(path: str) -> tuple[dict[str, Any], str]:
  """Returns (the parsed `path/config.json`, its path)."""
  cfg_path = os.path.join(path, 'config.json')
  if not os.path.isfile(cfg_path):
    raise FileNotFoundError(f'{cfg_path}: not found (expected a Hugging Face wav2vec2 or HuBERT folder)')
  with open(cfg_path) as f:
    try:
      d = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f'{cfg_path}: not valid JSON ({e})') from None
  if not isinstance(d, dict):
    raise ValueError(f'{cfg_path}: expected a JSON object, got {type(d).__name__}')
  return d, cfg_path


def read_config(path: str) -> wav2vec2.Wav2Vec2Config:
  """Reads `path/config.json` (model_type 'wav2vec2' or 'hubert') into a `Wav2Vec2Config`."""
  d, cfg_path = _read_config_dict(path)
  return wav2vec2.Wav2Vec2Config.from_hf_dict(d, where=cfg_path)


def s2l_config(model_config: Any, *, dtype: str | None = None, remat: bool | None = None
               ) -> speech2latent.S2LConfig:
  """`speech2latent.config_from_dict`, with the wav2vec2 architecture read from `wav2vec2_path/config.json`
  when the front end is wav2vec2 (the model module reads no files). The folder may hold a wav2vec2 or a
  HuBERT model: `config.json`'s `model_type` says which."""
  d = dict(model_config)
  if d.get('frontend') == 'wav2vec2' and d.get('wav2vec2') is None:
    if not d.get('wav2vec2_path'):
      raise ValueError('speech2latent: frontend=wav2vec2 needs model.wav2vec2_path (a local HF wav2vec2 or '
                       'HuBERT folder)')
    d['wav2vec2'] = read_config(d['wav2vec2_path'])
  return speech2latent.config_from_dict(d, dtype=dtype, remat=remat)


def read_state_dict(path: str, base_prefix: str = 'wav2vec2.') -> dict[str, np.ndarray]:
  """Reads the checkpoint tensors as float32 numpy, with any `base_prefix` (the HF base model's attribute:
  'wav2vec2.' or 'hubert.', i.e. `model_type + '.'`) removed."""
  st = os.path.join(path, 'model.safetensors')
  pt = os.path.join(path, 'pytorch_model.bin')
  if os.path.isfile(st):
    try:
      from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
      raw = load_file(st)
    except (TypeError, ValueError):
      # bfloat16 checkpoints cannot be read as numpy; go through torch.
      from safetensors.torch import load_file  # pylint: disable=g-import-not-at-top
      raw = {k: v.float().numpy() for k, v in load_file(st).items()}
  elif os.path.isfile(pt):
    import torch  # pylint: disable=g-import-not-at-top
    sd = torch.load(pt, map_location='cpu', weights_only=True)
    raw = {k: v.float().numpy() for k, v in sd.items() if hasattr(v, 'numpy')}
  else:
    raise FileNotFoundError(f'{path}: neither model.safetensors nor pytorch_model.bin found '
                            '(sharded checkpoints are not supported)')
  out = {}
  for k, v in raw.items():
    k = k[len(base_prefix):] if k.startswith(base_prefix) else k
    out[k] = np.asarray(v, np.float32)
  return out


def _fold_weight_norm(sd: dict[str, np.ndarray], prefix: str, where: str) -> np.ndarray:
  """Returns the effective weight of a `weight_norm(conv, dim=2)` module: g * v / ||v|| per kernel tap."""
  for gk, vk in (('parametrizations.weight.original0', 'parametrizations.weight.original1'),
                 ('weight_g', 'weight_v')):
    if prefix + gk in sd and prefix + vk in sd:
      g, v = sd.pop(prefix + gk), sd.pop(prefix + vk)            # g (1, 1, K), v (O, I/groups, K)
      norm = np.sqrt((v.astype(np.float64) ** 2).sum(axis=(0, 1), keepdims=True))
      return (g * v / norm).astype(np.float32)
  if prefix + 'weight' in sd:                                      # already folded
    return sd.pop(prefix + 'weight')
  raise KeyError(f'{where}: positional conv weight not found (looked for {prefix}weight_g/weight_v, '
                 f'{prefix}parametrizations.weight.original0/1 and {prefix}weight)')


def _fold_batch_norm(sd: dict[str, np.ndarray], prefix: str, where: str) -> None:
  """Replaces an eval-mode `BatchNorm1d` (weight, bias, running stats) at `prefix` by the equivalent per-channel
  `weight` (scale) and `bias`, in place."""
  names = ('weight', 'bias', 'running_mean', 'running_var')
  missing = [prefix + n for n in names if prefix + n not in sd]
  if missing:
    raise ValueError(f'{where}: conv_pos_batch_norm=true but the checkpoint lacks {missing}')
  w, b, mean, var = (sd.pop(prefix + n).astype(np.float64) for n in names)
  sd.pop(prefix + 'num_batches_tracked', None)
  scale = w / np.sqrt(var + _BN_EPS)
  sd[prefix + 'weight'] = scale.astype(np.float32)
  sd[prefix + 'bias'] = (b - mean * scale).astype(np.float32)


def _hf_to_ours(key: str, value: np.ndarray) -> tuple[tuple[Any, ...], np.ndarray]:
  """Maps one HF key to our parameter path and converts the layout (torch OI(K) -> flax (K)IO)."""
  parts = [int(p) if p.isdigit() else p for p in key.split('.')]
  *mod, leaf = parts
  is_conv = mod[-1] == 'conv'
  is_norm = 'norm' in str(mod[-1])
  if leaf == 'weight':
    if is_conv:
      value = np.transpose(value, (2, 1, 0))                       # (O, I, K) -> (K, I, O)
      leaf = 'kernel'
    elif is_norm:
      leaf = 'scale'
    else:
      value = value.T                                              # Linear (O, I) -> (I, O)
      leaf = 'kernel'
  elif leaf != 'bias':
    raise KeyError(key)
  return tuple(mod) + (leaf,), value


def _get_variable(module: nnx.Module, path: tuple[Any, ...]):
  obj = module
  for p in path:
    obj = obj[p] if isinstance(p, int) else getattr(obj, p)
  return obj


def load_wav2vec2_into(model: wav2vec2.Wav2Vec2Model, path: str) -> list[str]:
  """Copies the checkpoint in folder `path` into `model` (in place); returns the skipped checkpoint keys."""
  d, cfg_path = _read_config_dict(path)
  cfg = wav2vec2.Wav2Vec2Config.from_hf_dict(d, where=cfg_path)
  if cfg != model.cfg:
    diff = {f: (getattr(model.cfg, f), getattr(cfg, f)) for f in cfg.__dataclass_fields__
            if getattr(model.cfg, f) != getattr(cfg, f)}
    raise ValueError(f'{path}/config.json: architecture differs from the model being loaded: {diff}')
  sd = read_state_dict(path, base_prefix=d.get('model_type', 'wav2vec2') + '.')
  where = path
  sd['encoder.pos_conv_embed.conv.weight'] = _fold_weight_norm(sd, 'encoder.pos_conv_embed.conv.', where)
  if cfg.conv_pos_batch_norm:
    _fold_batch_norm(sd, 'encoder.pos_conv_embed.batch_norm.', where)

  expected = {'/'.join(map(str, p)): v for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
  skipped, loaded = [], set()
  for key in sorted(sd):
    if _SKIP.match(key):
      skipped.append(key)
      continue
    try:
      our_path, value = _hf_to_ours(key, sd[key])
    except KeyError:
      raise ValueError(f'{where}: unexpected checkpoint key {key!r}') from None
    name = '/'.join(map(str, our_path))
    if name not in expected:
      raise ValueError(f'{where}: checkpoint key {key!r} (-> {name}) has no parameter in the model')
    var = _get_variable(model, our_path)
    if tuple(var.shape) != tuple(value.shape):
      raise ValueError(f'{where}: {key!r} has shape {tuple(value.shape)} (after layout conversion), '
                       f'model parameter {name} has shape {tuple(var.shape)}')
    var[...] = jnp.asarray(value, var.dtype)
    loaded.add(name)
  missing = sorted(set(expected) - loaded)
  if missing:
    raise ValueError(f'{where}: {len(missing)} model parameters missing from the checkpoint, e.g. {missing[:5]}')
  return skipped


def load_wav2vec2(path: str, *, rngs: nnx.Rngs | None = None, dtype=jnp.float32) -> wav2vec2.Wav2Vec2Model:
  """Builds a `Wav2Vec2Model` from `path/config.json` (a wav2vec2 or HuBERT folder) and loads its weights."""
  model = wav2vec2.Wav2Vec2Model(read_config(path), dtype=dtype, rngs=rngs or nnx.Rngs(0))
  load_wav2vec2_into(model, path)
  return model
