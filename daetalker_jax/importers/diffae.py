"""Import official diffae checkpoints (github.com/phizaz/diffae) into `DiffusionAutoencoder`.

Accepted files:
- a Lightning `.ckpt` (`state['state_dict']` with keys prefixed `ema_model.` and `model.`; the EMA weights,
  which the released samplers use, are taken when present),
- a plain PyTorch state_dict `.pt` / `.pth` (optionally with the same prefixes),
- a `.safetensors` file.
PyTorch files are read with `torch.load(..., weights_only=True)`: no code from the file is ever executed.

Parameters are matched by name (our tree mirrors diffae's module tree) and converted from PyTorch layouts:
Conv2d (O,I,kh,kw) -> (kh,kw,I,O); Linear (O,I) -> (I,O); the attention's Conv1d (O,I,1) -> Linear (I,O);
the encoder head's 1x1 Conv2d (O,I,1,1) -> Linear (I,O). Every shape is checked, and keys left over on
either side are reported together in one error.

  model = diffae.load_pretrained('last.ckpt', diffae.config_from_official(official_config_dict))
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from daetalker_jax.models import unet as unet_lib

# Our attribute -> diffae module name, inside res blocks / attention blocks.
_BLOCK_NAMES = {'in_norm': 'in_layers.0', 'in_conv': 'in_layers.2', 'out_norm': 'out_layers.0',
                'out_conv': 'out_layers.3', 'emb_proj': 'emb_layers.1', 'cond_proj': 'cond_emb_layers.1',
                'skip': 'skip_connection', 'norm': 'norm', 'qkv': 'qkv', 'proj_out': 'proj_out',
                'op': 'op', 'conv': 'conv'}
# Top-level heads: `out` is Sequential(GN, SiLU, conv) in the UNet and (GN, SiLU, pool, conv, flatten) in
# the encoder.
_HEAD_NAMES = {('unet', 'out_norm'): 'out.0', ('unet', 'out_conv'): 'out.2',
               ('encoder', 'out_norm'): 'out.0', ('encoder', 'out_conv'): 'out.3'}
_LEAF_NAMES = {'kernel': 'weight', 'scale': 'weight', 'bias': 'bias'}

# BeatGANsAutoencConfig fields without a UNetConfig twin: execution-only ones (any value) and ones describing
# networks we do not build (only the listed value is accepted).
_ANY = object()
_IGNORED_OFFICIAL = {'use_checkpoint': _ANY, 'attn_checkpoint': _ANY, 'enc_grad_checkpoint': _ANY,
                     'use_fp16': _ANY, 'conv_resample': True, 'dims': 2, 'num_classes': None,
                     'use_new_attention_order': False, 'latent_net_conf': None, 'use_external_encoder': False,
                     'is_stochastic': False, 'enc_tanh': False, 'enc_pool_tail_layer': None}


def config_from_official(official: Mapping[str, Any], **overrides: Any) -> unet_lib.UNetConfig:
  """Maps a diffae `BeatGANsAutoencConfig` dict (e.g. from `conf.__dict__` or a params json) to UNetConfig.

  Fields that only affect PyTorch execution (checkpointing, fp16, dims=2) are dropped; fields describing a
  network we do not build (class labels, a latent DDIM, new attention order, ...) must have diffae's
  default value, else a ValueError names them.
  """
  known = {f.name for f in dataclasses.fields(unet_lib.UNetConfig)}
  kwargs, bad = {}, []
  for key, value in official.items():
    if key in known:
      kwargs[key] = value
    elif key in _IGNORED_OFFICIAL:
      want = _IGNORED_OFFICIAL[key]
      if want is not _ANY and value != want:
        bad.append(f'{key}={value!r} (supported: {want!r})')
    else:
      bad.append(f'{key}={value!r} (unknown field)')
  if bad:
    raise ValueError(f'config_from_official: unsupported diffae settings: {", ".join(bad)}')
  kwargs.update(overrides)
  return unet_lib.UNetConfig(**kwargs)


def torch_name(path: Sequence[Any]) -> str:
  """Our parameter path in DiffusionAutoencoder, e.g. ('unet','input_blocks',3,1,'qkv','kernel'), -> diffae key."""
  top, *rest = [str(p) for p in path]
  prefix = 'encoder.' if top == 'encoder' else ''
  leaf = _LEAF_NAMES[rest[-1]]
  if rest[0] == 'time_embed':  # TimeStyleSeperateEmbed.time_embed = Sequential(linear, SiLU, linear)
    return f'time_embed.time_embed.{2 * int(rest[1])}.{leaf}'
  if len(rest) == 2:
    return f'{prefix}{_HEAD_NAMES[(top, rest[0])]}.{leaf}'
  # (input_blocks|middle_block|output_blocks, [block], layer, attr..., leaf)
  names = [_BLOCK_NAMES.get(p, p) for p in rest[:-1]]
  return prefix + '.'.join(names + [leaf])


def _convert(arr: np.ndarray, ours_shape: tuple[int, ...]) -> np.ndarray:
  """PyTorch layout -> ours, decided by the two ranks."""
  if arr.ndim == 4 and len(ours_shape) == 4:  # Conv2d (O,I,kh,kw) -> (kh,kw,I,O)
    return arr.transpose(2, 3, 1, 0)
  if arr.ndim == 4 and len(ours_shape) == 2 and arr.shape[2:] == (1, 1):  # 1x1 Conv2d -> Linear
    return arr[:, :, 0, 0].T
  if arr.ndim == 3 and len(ours_shape) == 2 and arr.shape[2] == 1:  # Conv1d (O,I,1) -> Linear
    return arr[:, :, 0].T
  if arr.ndim == 2 and len(ours_shape) == 2:  # Linear (O,I) -> (I,O)
    return arr.T
  return arr


def _params(model: nnx.Module) -> list[tuple[tuple[Any, ...], nnx.Variable]]:
  return [(path, v) for path, v in nnx.iter_graph(model) if isinstance(v, nnx.Param)]


def plan_import(model: nnx.Module, shapes: Mapping[str, tuple[int, ...]], *, source: str = 'checkpoint'
                ) -> dict[str, tuple[tuple[Any, ...], nnx.Variable]]:
  """diffae key -> (our path, our Variable), after checking names and converted shapes.

  Works on an abstract model (`nnx.eval_shape`), so full-size configs can be checked without memory.
  Raises ValueError listing every unmapped checkpoint key, missing key and shape mismatch at once.
  """
  plan, missing, mismatched = {}, [], []
  for path, var in _params(model):
    key = torch_name(path)
    if key not in shapes:
      missing.append(key)
      continue
    ours = tuple(var.get_value().shape)
    converted = _convert(np.empty(shapes[key], np.uint8), ours).shape
    if tuple(converted) != ours:
      mismatched.append(f'{key}: {tuple(shapes[key])} -> {tuple(converted)} != ours {ours}')
    plan[key] = (path, var)
  unmapped = sorted(set(shapes) - set(plan) - set(missing))
  if unmapped or missing or mismatched:
    raise ValueError(
        f'{source}: does not match the model config: {len(unmapped)} unmapped checkpoint keys '
        f'{unmapped[:20]}, {len(missing)} model params missing from the checkpoint {sorted(missing)[:20]}, '
        f'{len(mismatched)} shape mismatches {mismatched[:20]}')
  return plan


def import_state_dict(model: nnx.Module, state_dict: Mapping[str, np.ndarray], *,
                      source: str = 'checkpoint') -> nnx.Module:
  """Copies a diffae state_dict (PyTorch names and layouts, numpy arrays) into `model` in place."""
  plan = plan_import(model, {k: tuple(v.shape) for k, v in state_dict.items()}, source=source)
  for key, (_, var) in plan.items():
    arr = _convert(np.asarray(state_dict[key], np.float32), tuple(var.get_value().shape))
    var.set_value(jnp.asarray(arr, dtype=var.get_value().dtype))
  return model


def _strip_prefix(sd: Mapping[str, Any], path: pathlib.Path) -> dict[str, Any]:
  """Prefers `ema_model.` keys, then `model.`; a plain state_dict passes through. Drops the x_T buffer."""
  for prefix in ('ema_model.', 'model.'):
    sub = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    if sub:
      return sub
  sd = {k: v for k, v in sd.items() if k != 'x_T'}
  if not sd:
    raise ValueError(f'{path}: no parameters found')
  return sd


def load_state_dict(path: str | pathlib.Path) -> dict[str, np.ndarray]:
  """Reads a diffae checkpoint file into {diffae key: float32 numpy array}."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f'{path}: checkpoint file not found')
  if path.suffix == '.safetensors':
    from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
    sd = load_file(str(path))
  elif path.suffix in ('.ckpt', '.pt', '.pth', '.bin'):
    import torch  # pylint: disable=g-import-not-at-top
    try:
      obj = torch.load(str(path), map_location='cpu', weights_only=True)
    except Exception as e:  # pickle.UnpicklingError and friends; the message names the offending object
      raise ValueError(f'{path}: cannot be read safely with torch.load(weights_only=True) (it pickles '
                       f'objects other than tensors): {str(e).splitlines()[0]}. Save its state_dict (or a '
                       f'.safetensors file) from a trusted environment and import that.') from None
    if isinstance(obj, Mapping) and 'state_dict' in obj:
      obj = obj['state_dict']
    if not isinstance(obj, Mapping):
      raise ValueError(f'{path}: expected a state_dict (mapping of tensors), got {type(obj).__name__}')
    sd = {k: v.detach().float().numpy() for k, v in obj.items() if isinstance(v, torch.Tensor)}
  else:
    raise ValueError(f'{path}: unknown checkpoint type {path.suffix!r} (.ckpt, .pt, .pth, .safetensors)')
  return {k: np.asarray(v, np.float32) for k, v in _strip_prefix(sd, path).items()}


def load_pretrained(path: str | pathlib.Path, cfg: unet_lib.UNetConfig, *, seed: int = 0
                    ) -> unet_lib.DiffusionAutoencoder:
  """Builds DiffusionAutoencoder(cfg) and fills it from an official diffae checkpoint file.

  The model is built abstractly (no random init of weights that are overwritten anyway); only the
  non-parameter state (dropout RNG streams, when dropout > 0) is materialised.
  """
  sd = load_state_dict(path)
  make = lambda: unet_lib.DiffusionAutoencoder(cfg, rngs=nnx.Rngs(seed))
  model = nnx.eval_shape(make)
  import_state_dict(model, sd, source=str(path))
  if jax.tree.leaves(nnx.state(model, nnx.Not(nnx.Param))):
    nnx.update(model, jax.jit(lambda: nnx.state(make(), nnx.Not(nnx.Param)))())
  return model
