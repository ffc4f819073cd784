"""Import pretrained VQ autoencoders (LDM's VQ-f4 and its kin) into `models.vq.VQModel`.

Accepted sources:
- a diffusers `VQModel` folder (`save_pretrained`): `config.json` (class VQModel, DownEncoderBlock2D /
  UpDecoderBlock2D blocks, group norm, SiLU, mid-block attention; anything else is refused naming the
  setting) plus `diffusion_pytorch_model.safetensors` (or `.bin`). The config comes from config.json.
- an LDM / DiffTalk Lightning `.ckpt` (`{'state_dict': {...}}` or a bare state_dict): the keys
  `first_stage_model.*` when present (a latent diffusion checkpoint), else a plain LDM VQModel checkpoint;
  training-only `loss.*` keys (discriminator, LPIPS) are dropped. The config is read off the
  weight shapes (LDM always uses GroupNorm(32); `image_size`, which no weight records, defaults to 256).
  A `.safetensors` file with LDM names works too.
PyTorch files are read with `torch.load(..., weights_only=True)`: no code from the file is ever executed.

Our tree mirrors LDM's names, so an LDM key maps by name; diffusers keys are first renamed to LDM's
(`down_blocks.i.resnets.j` -> `down.i.block.j`, `conv_shortcut` -> `nin_shortcut`, `mid_block.resnets.0/1`
-> `mid.block_1/2`, `mid_block.attentions.0.{group_norm,to_q,to_k,to_v,to_out.0}` ->
`mid.attn_1.{norm,q,k,v,proj_out}`, `conv_norm_out` -> `norm_out`, and the decoder's `up_blocks.i` ->
`up.(n-1-i)`: LDM stores the decoder levels by resolution, diffusers in running order). Layouts:
Conv2d (O,I,kh,kw) -> (kh,kw,I,O); LDM's 1x1-conv attention projections (O,I,1,1) and diffusers' Linear
(O,I) -> Linear (I,O); the codebook (n_embed, D) as is. Every shape is checked; missing and unexpected keys
and shape mismatches are reported together in one ValueError.

  model = vq.load_pretrained('path/to/diffusers_vq_folder')       # or an LDM / DiffTalk .ckpt
"""

from __future__ import annotations

import json
import pathlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from daetalker_jax.models import vq as vq_lib

_LEAF_NAMES = {'kernel': 'weight', 'scale': 'weight', 'bias': 'bias'}
_DIFFUSERS_WEIGHTS = ('diffusion_pytorch_model.safetensors', 'diffusion_pytorch_model.bin')
# diffusers VQModel config keys -> the values we build (None: any value, no effect on the network; the
# scaling_factor too: latents are used unscaled).
_DIFFUSERS_FIXED = {'act_fn': ('silu', 'swish'), 'norm_type': ('group',), 'mid_block_add_attention': (True,),
                    'scaling_factor': None, 'lookup_from_codebook': None, 'force_upcast': None}
_DIFFUSERS_SHAPES = ('in_channels', 'out_channels', 'down_block_types', 'up_block_types', 'block_out_channels',
                     'layers_per_block', 'latent_channels', 'sample_size', 'num_vq_embeddings',
                     'norm_num_groups', 'vq_embed_dim')


# --------------------------------------------------------------------------------------------------------
# Names and layouts.
# --------------------------------------------------------------------------------------------------------
def ldm_name(path: Sequence[Any]) -> str:
  """Our parameter path, e.g. ('encoder', 'down', 0, 'block', 1, 'conv1', 'kernel'), -> LDM key."""
  names = [str(p) for p in path]
  if names == ['quantize', 'embedding']:
    return 'quantize.embedding.weight'
  return '.'.join(names[:-1] + [_LEAF_NAMES[names[-1]]])


def diffusers_to_ldm(key: str, num_levels: int) -> str:
  """A diffusers VQModel key -> the LDM key of the same parameter (keys without a rule pass unchanged)."""
  k = re.sub(r'^(encoder|decoder)\.conv_norm_out\.', r'\1.norm_out.', key)
  k = re.sub(r'^encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.', r'encoder.down.\1.block.\2.', k)
  k = re.sub(r'^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.', r'encoder.down.\1.downsample.', k)
  m = re.match(r'^decoder\.up_blocks\.(\d+)\.(resnets|upsamplers)\.(\d+)\.(.*)$', k)
  if m:
    level = num_levels - 1 - int(m.group(1))
    part = f'block.{m.group(3)}' if m.group(2) == 'resnets' else 'upsample'
    k = f'decoder.up.{level}.{part}.{m.group(4)}'
  k = re.sub(r'^(encoder|decoder)\.mid_block\.resnets\.([01])\.',
             lambda m_: f'{m_.group(1)}.mid.block_{int(m_.group(2)) + 1}.', k)
  attn = {'group_norm': 'norm', 'to_q': 'q', 'to_k': 'k', 'to_v': 'v', 'to_out.0': 'proj_out',
          'query': 'q', 'key': 'k', 'value': 'v', 'proj_attn': 'proj_out'}   # (old diffusers names too)
  m = re.match(r'^(encoder|decoder)\.mid_block\.attentions\.0\.(group_norm|to_q|to_k|to_v|to_out\.0|query|key|'
               r'value|proj_attn)\.(weight|bias)$', k)
  if m:
    k = f'{m.group(1)}.mid.attn_1.{attn[m.group(2)]}.{m.group(3)}'
  return re.sub(r'\.conv_shortcut\.', '.nin_shortcut.', k)


def _convert(key: str, arr: np.ndarray, ours_shape: tuple[int, ...]) -> np.ndarray:
  """PyTorch layout -> ours (decided by the key and the two ranks)."""
  if key == 'quantize.embedding.weight':               # nn.Embedding (n, D): same layout
    return arr
  if arr.ndim == 4 and len(ours_shape) == 4:           # Conv2d (O,I,kh,kw) -> (kh,kw,I,O)
    return arr.transpose(2, 3, 1, 0)
  if arr.ndim == 4 and len(ours_shape) == 2 and arr.shape[2:] == (1, 1):   # 1x1 Conv2d -> Linear
    return arr[:, :, 0, 0].T
  if arr.ndim == 2 and len(ours_shape) == 2:           # Linear (O,I) -> (I,O)
    return arr.T
  return arr


def _params(model: nnx.Module) -> list[tuple[tuple[Any, ...], nnx.Variable]]:
  return [(path, v) for path, v in nnx.iter_graph(model) if isinstance(v, nnx.Param)]


def import_state_dict(model: vq_lib.VQModel, state_dict: Mapping[str, np.ndarray], *,
                      source: str = 'checkpoint') -> vq_lib.VQModel:
  """Copies an LDM-named state_dict (PyTorch layouts, numpy arrays) into `model` in place.

  Works on an abstract model (`nnx.eval_shape`) too: its parameters are replaced by the loaded arrays.
  Raises one ValueError listing missing keys, unexpected keys and shape mismatches.
  """
  plan, missing, mismatched = {}, [], []
  for path, var in _params(model):
    key = ldm_name(path)
    if key not in state_dict:
      missing.append(key)
      continue
    ours = tuple(var.get_value().shape)
    got = tuple(np.shape(state_dict[key]))
    converted = _convert(key, np.empty(got, np.uint8), ours).shape
    if tuple(converted) != ours:
      mismatched.append(f'{key}: {got} -> {tuple(converted)} != ours {ours}')
    plan[key] = var
  unexpected = sorted(set(state_dict) - set(plan))
  if missing or unexpected or mismatched:
    raise ValueError(
        f'{source}: does not match the VQ model config: {len(missing)} missing keys {sorted(missing)[:8]}, '
        f'{len(unexpected)} unexpected keys {unexpected[:8]}, {len(mismatched)} shape mismatches '
        f'{mismatched[:8]}')
  for key, var in plan.items():
    arr = _convert(key, np.asarray(state_dict[key], np.float32), tuple(var.get_value().shape))
    var.set_value(jnp.asarray(arr, dtype=var.get_value().dtype))
  return model


def _build(cfg: vq_lib.VQConfig, sd: Mapping[str, np.ndarray], source: str, seed: int) -> vq_lib.VQModel:
  """VQModel(cfg) built abstractly (no random init of weights overwritten anyway) and filled from `sd`."""
  model = nnx.eval_shape(lambda: vq_lib.VQModel(cfg, rngs=nnx.Rngs(seed)))
  return import_state_dict(model, sd, source=source)


# --------------------------------------------------------------------------------------------------------
# Files.
# --------------------------------------------------------------------------------------------------------
def _read_tensors(path: pathlib.Path) -> dict[str, np.ndarray]:
  """{key: float32 array} of a .safetensors file or a PyTorch file read without executing code."""
  if path.suffix == '.safetensors':
    from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
    return {k: np.asarray(v, np.float32) for k, v in load_file(str(path)).items()}
  if path.suffix not in ('.ckpt', '.pt', '.pth', '.bin'):
    raise ValueError(f'{path}: unknown checkpoint type {path.suffix!r} (.ckpt, .pt, .pth, .bin, .safetensors)')
  import torch  # pylint: disable=g-import-not-at-top
  try:
    obj = torch.load(str(path), map_location='cpu', weights_only=True)
  except Exception as e:  # pickle.UnpicklingError and friends; the message names the offending object
    raise ValueError(f'{path}: cannot be read safely with torch.load(weights_only=True) (it pickles objects '
                     f'other than tensors): {str(e).splitlines()[0]}. Save its state_dict (or a .safetensors '
                     f'file) from a trusted environment and import that.') from None
  if isinstance(obj, Mapping) and 'state_dict' in obj:
    obj = obj['state_dict']
  if not isinstance(obj, Mapping):
    raise ValueError(f'{path}: expected a state_dict (mapping of tensors), got {type(obj).__name__}')
  return {k: v.detach().float().numpy() for k, v in obj.items() if isinstance(v, torch.Tensor)}


def read_diffusers_config(folder: str | pathlib.Path, **overrides: Any) -> vq_lib.VQConfig:
  """VQConfig of a diffusers VQModel folder's config.json; unsupported settings raise a ValueError."""
  cfg_path = pathlib.Path(folder) / 'config.json'
  if not cfg_path.is_file():
    raise FileNotFoundError(f'{cfg_path}: not found (expected a diffusers VQModel folder)')
  try:
    d = json.loads(cfg_path.read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f'{cfg_path}: not valid JSON ({e})') from None
  if not isinstance(d, dict) or d.get('_class_name') != 'VQModel':
    name = d.get('_class_name') if isinstance(d, dict) else type(d).__name__
    raise ValueError(f'{cfg_path}: _class_name is {name!r}, expected a diffusers "VQModel" config')
  return config_from_diffusers(d, where=str(cfg_path), **overrides)


def config_from_diffusers(d: Mapping[str, Any], *, where: str = 'config.json', **overrides: Any
                          ) -> vq_lib.VQConfig:
  """VQConfig of a diffusers VQModel config dict (see `read_diffusers_config`)."""
  bad = [f'{k}={d[k]!r} (supported: {" or ".join(map(repr, v))})' for k, v in _DIFFUSERS_FIXED.items()
         if v is not None and k in d and d[k] not in v]
  bad += [f'{k}={d[k]!r} (unknown setting)' for k in d
          if not k.startswith('_') and k not in _DIFFUSERS_FIXED and k not in _DIFFUSERS_SHAPES]
  boc = [int(c) for c in d.get('block_out_channels', (64,))]
  n = len(boc)
  down = list(d.get('down_block_types', ('DownEncoderBlock2D',)))
  up = list(d.get('up_block_types', ('UpDecoderBlock2D',)))
  if down != ['DownEncoderBlock2D'] * n:
    bad.append(f'down_block_types={down!r} (supported: {n} x "DownEncoderBlock2D")')
  if up != ['UpDecoderBlock2D'] * n:
    bad.append(f'up_block_types={up!r} (supported: {n} x "UpDecoderBlock2D")')
  if any(c % boc[0] for c in boc):
    bad.append(f'block_out_channels={boc} (supported: multiples of the first)')
  if bad:
    raise ValueError(f'{where}: unsupported VQModel settings: {", ".join(bad)}')
  latent = int(d.get('latent_channels', 3))
  sample = d.get('sample_size', 256)
  factor = 2 ** (n - 1)
  image_size = int(sample) if isinstance(sample, int) and sample % factor == 0 else 256
  kwargs = dict(image_size=image_size, in_channels=int(d.get('in_channels', 3)),
                out_channels=int(d.get('out_channels', 3)), ch=boc[0], ch_mult=tuple(c // boc[0] for c in boc),
                num_res_blocks=int(d.get('layers_per_block', 1)), z_channels=latent,
                embed_dim=int(d.get('vq_embed_dim') or latent), n_embed=int(d.get('num_vq_embeddings', 256)),
                norm_groups=int(d.get('norm_num_groups', 32)))
  kwargs.update(overrides)
  return vq_lib.VQConfig(**kwargs)


def load_diffusers(folder: str | pathlib.Path, *, seed: int = 0, **overrides: Any) -> vq_lib.VQModel:
  """VQModel from a diffusers VQModel folder (config.json + diffusion_pytorch_model.safetensors / .bin).

  `overrides` replace VQConfig fields (e.g. dtype='bfloat16', image_size=256).
  """
  if not pathlib.Path(folder).is_dir():
    raise FileNotFoundError(f'{folder}: not a folder (expected a diffusers VQModel folder)')
  cfg, sd = read_pretrained(folder, **overrides)
  return _build(cfg, sd, str(folder), seed)


def read_ldm_state_dict(path: str | pathlib.Path) -> dict[str, np.ndarray]:
  """{LDM key: float32 array} of the first stage in an LDM / DiffTalk checkpoint (see the module doc)."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f'{path}: checkpoint file not found')
  sd = _read_tensors(path)
  prefix = 'first_stage_model.'
  sub = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)} or sd
  # Drop the training loss modules of an LDM VQModel (discriminator, LPIPS): no part of the autoencoder.
  sub = {k: v for k, v in sub.items() if not k.startswith('loss.')}
  if 'encoder.conv_in.weight' not in sub:
    raise ValueError(f'{path}: no LDM VQ autoencoder weights (no first_stage_model.encoder.conv_in.weight or '
                     f'encoder.conv_in.weight among {len(sd)} tensors, e.g. {sorted(sd)[:4]})')
  return sub


def config_from_ldm_state_dict(sd: Mapping[str, np.ndarray], *, where: str = 'checkpoint',
                               **overrides: Any) -> vq_lib.VQConfig:
  """VQConfig read off LDM-named weight shapes (norm_groups 32 and image_size 256 unless overridden).

  Attention inside the levels (a non-empty `attn_resolutions`) is not built, and is refused here.
  """
  def shape(key):
    if key not in sd:
      raise ValueError(f'{where}: missing {key}, cannot infer the VQ model config')
    return np.shape(sd[key])

  levels = sorted({int(m.group(1)) for k in sd for m in [re.match(r'encoder\.down\.(\d+)\.', k)] if m})
  if not levels or levels != list(range(len(levels))):
    raise ValueError(f'{where}: encoder.down.* levels {levels} are not 0..n-1')
  if any(re.match(r'(encoder\.down|decoder\.up)\.\d+\.attn\.', k) for k in sd):
    raise ValueError(f'{where}: attention inside the resolution levels (attn_resolutions) is not supported')
  ch = shape('encoder.conv_in.weight')[0]
  widths = [shape(f'encoder.down.{i}.block.0.conv1.weight')[0] for i in levels]
  if any(w % ch for w in widths):
    raise ValueError(f'{where}: level widths {widths} are not multiples of ch={ch}')
  blocks = {int(m.group(1)) for k in sd for m in [re.match(r'encoder\.down\.0\.block\.(\d+)\.', k)] if m}
  kwargs = dict(in_channels=shape('encoder.conv_in.weight')[1], out_channels=shape('decoder.conv_out.weight')[0],
                ch=ch, ch_mult=tuple(w // ch for w in widths), num_res_blocks=len(blocks),
                z_channels=shape('encoder.conv_out.weight')[0], embed_dim=shape('quant_conv.weight')[0],
                n_embed=shape('quantize.embedding.weight')[0])
  kwargs.update(overrides)
  return vq_lib.VQConfig(**{k: (int(v) if isinstance(v, (int, np.integer)) else v) for k, v in kwargs.items()})


def load_ldm_checkpoint(path: str | pathlib.Path, cfg: vq_lib.VQConfig | None = None, *, seed: int = 0,
                        **overrides: Any) -> vq_lib.VQModel:
  """VQModel from an LDM / DiffTalk checkpoint; `cfg` None: read off the weights (+ `overrides`)."""
  sd = read_ldm_state_dict(path)
  if cfg is None:
    cfg = config_from_ldm_state_dict(sd, where=str(path), **overrides)
  elif overrides:
    raise ValueError('load_ldm_checkpoint: pass either cfg or config overrides, not both')
  return _build(cfg, sd, str(path), seed)


def read_pretrained(path: str | pathlib.Path, **overrides: Any) -> tuple[vq_lib.VQConfig, dict[str, np.ndarray]]:
  """(config, LDM-named state_dict) of a diffusers VQModel folder or an LDM / DiffTalk checkpoint file."""
  path = pathlib.Path(path)
  if path.is_dir():
    cfg = read_diffusers_config(path, **overrides)
    weights = next((path / w for w in _DIFFUSERS_WEIGHTS if (path / w).is_file()), None)
    if weights is None:
      raise FileNotFoundError(f'{path}: no weights file (one of {list(_DIFFUSERS_WEIGHTS)})')
    n = len(cfg.ch_mult)
    return cfg, {diffusers_to_ldm(k, n): v for k, v in _read_tensors(weights).items()}
  sd = read_ldm_state_dict(path)
  return config_from_ldm_state_dict(sd, where=str(path), **overrides), sd


def load_pretrained(path: str | pathlib.Path, **kwargs: Any) -> vq_lib.VQModel:
  """A diffusers VQModel folder (`load_diffusers`) or an LDM / DiffTalk checkpoint file (`load_ldm_checkpoint`)."""
  path = pathlib.Path(path)
  if path.is_dir():
    return load_diffusers(path, **kwargs)
  return load_ldm_checkpoint(path, **kwargs)
