"""Imports LDM UNets into `models.ldm_unet.LDMUNet`: diffusers `UNet2DConditionModel` folders and LDM checkpoints.

Two sources, both matched by name (our tree mirrors LDM's `openaimodel.UNetModel`):
- a diffusers folder (what `UNet2DConditionModel.save_pretrained` writes, or a pipeline folder with `unet/`):
  `config.json` + `diffusion_pytorch_model[.variant].safetensors` (single or sharded with an index) or `.bin`.
  The LDMUNetConfig is built from config.json (`config_from_diffusers`); settings with no LDM equivalent are a
  ValueError naming them.
- an LDM / DiffTalk Lightning checkpoint (`.ckpt`, `.pt`, `.pth`, `.safetensors`): the `model.diffusion_model.*`
  keys (or, with `ema=True`, LDM's LitEma copies `model_ema.diffusion_model<key without dots>`). The config
  comes from the caller (the checkpoint does not hold it). PyTorch files are read with
  `torch.load(..., weights_only=True)`: no code from the file is executed.

Layouts: Conv2d (O,I,kh,kw) -> (kh,kw,I,O); the transformers' 1x1 proj_in/proj_out Conv2d (O,I,1,1) and Linear
(O,I) -> (I,O). Every shape is checked, and unmapped / missing keys and shape mismatches are reported together.

  unet = load_diffusers('path/to/unet')                          # config from config.json
  unet = load_ldm_checkpoint('difftalk.ckpt', LDMUNetConfig())    # DiffTalk's config is the default
  import_state_dict(model.unet, read_ldm_state_dict(path), naming='ldm')   # into an existing module
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from daetalker_jax.models import ldm_unet

# Our attribute -> LDM module name (inside res blocks and transformer blocks); others keep their name.
_LDM_NAMES = {'in_norm': 'in_layers.0', 'in_conv': 'in_layers.2', 'emb_proj': 'emb_layers.1',
              'out_norm': 'out_layers.0', 'out_conv': 'out_layers.3', 'skip': 'skip_connection',
              'to_out': 'to_out.0', 'ff_proj': 'ff.net.0.proj', 'ff_out': 'ff.net.2'}
_LDM_TOP = {'out_norm': 'out.0', 'out_conv': 'out.2'}
_LEAF_NAMES = {'kernel': 'weight', 'scale': 'weight', 'bias': 'bias'}
# LDM res-block names -> diffusers ResnetBlock2D names.
_RES_TO_DIFFUSERS = {'in_layers.0': 'norm1', 'in_layers.2': 'conv1', 'emb_layers.1': 'time_emb_proj',
                     'out_layers.0': 'norm2', 'out_layers.3': 'conv2', 'skip_connection': 'conv_shortcut'}

_WEIGHTS = 'diffusion_pytorch_model'


# ----------------------------------------------------------------------------------------------- naming

def ldm_name(path: tuple[Any, ...]) -> str:
  """Our parameter path in LDMUNet, e.g. ('input_blocks', 1, 0, 'in_norm', 'scale'), -> LDM key (no prefix)."""
  parts = [str(p) for p in path]
  leaf = _LEAF_NAMES[parts[-1]]
  if parts[0] == 'time_embed':  # Sequential(linear, SiLU, linear)
    return f'time_embed.{2 * int(parts[1])}.{leaf}'
  if len(parts) == 2:
    return f'{_LDM_TOP[parts[0]]}.{leaf}'
  return '.'.join([_LDM_NAMES.get(p, p) for p in parts[:-1]] + [leaf])


def _diffusers_prefixes(cfg: ldm_unet.LDMUNetConfig) -> tuple[dict[str, str], set[str]]:
  """LDM module prefix -> diffusers module prefix, and the set of LDM prefixes that are res blocks."""
  table = {'time_embed.0': 'time_embedding.linear_1', 'time_embed.2': 'time_embedding.linear_2',
           'out.0': 'conv_norm_out', 'out.2': 'conv_out', 'input_blocks.0.0': 'conv_in',
           'middle_block.0': 'mid_block.resnets.0', 'middle_block.1': 'mid_block.attentions.0',
           'middle_block.2': 'mid_block.resnets.1'}
  res = {'middle_block.0', 'middle_block.2'}
  n, levels = cfg.num_res_blocks, len(cfg.channel_mult)
  attn = [2 ** lvl in cfg.attention_resolutions for lvl in range(levels)]
  k = 1
  for lvl in range(levels):
    for j in range(n):
      table[f'input_blocks.{k}.0'] = f'down_blocks.{lvl}.resnets.{j}'
      res.add(f'input_blocks.{k}.0')
      if attn[lvl]:
        table[f'input_blocks.{k}.1'] = f'down_blocks.{lvl}.attentions.{j}'
      k += 1
    if lvl != levels - 1:
      table[f'input_blocks.{k}.0.op'] = f'down_blocks.{lvl}.downsamplers.0.conv'
      k += 1
  k = 0
  for i, lvl in enumerate(range(levels - 1, -1, -1)):
    for j in range(n + 1):
      table[f'output_blocks.{k}.0'] = f'up_blocks.{i}.resnets.{j}'
      res.add(f'output_blocks.{k}.0')
      if attn[lvl]:
        table[f'output_blocks.{k}.1'] = f'up_blocks.{i}.attentions.{j}'
      if lvl and j == n:
        table[f'output_blocks.{k}.{2 if attn[lvl] else 1}.conv'] = f'up_blocks.{i}.upsamplers.0.conv'
      k += 1
  return table, res


def diffusers_namer(cfg: ldm_unet.LDMUNetConfig) -> Callable[[str], str]:
  """Returns a function LDM key -> diffusers UNet2DConditionModel key, for the UNet shaped by `cfg`."""
  table, res = _diffusers_prefixes(cfg)

  def name(key: str) -> str:
    parts = key.split('.')
    for n in (4, 3, 2):  # the longest matching module prefix
      prefix = '.'.join(parts[:n])
      if len(parts) > n and prefix in table:
        rest = '.'.join(parts[n:])
        if prefix in res:
          for old, new in _RES_TO_DIFFUSERS.items():
            if rest.startswith(old + '.'):
              rest = new + rest[len(old):]
              break
        return f'{table[prefix]}.{rest}'
    raise KeyError(f'{key}: no diffusers name for this LDM key')

  return name


# ---------------------------------------------------------------------------------------------- configs

# UNet2DConditionModel settings that must keep the value that equals LDM's UNetModel (the diffusers default).
_FIXED = {'center_input_sample': False, 'flip_sin_to_cos': True, 'freq_shift': 0,
          'mid_block_type': 'UNetMidBlock2DCrossAttn', 'downsample_padding': 1, 'mid_block_scale_factor': 1,
          'act_fn': 'silu', 'norm_eps': 1e-5, 'reverse_transformer_layers_per_block': None, 'encoder_hid_dim': None,
          'encoder_hid_dim_type': None, 'num_attention_heads': None, 'dual_cross_attention': False,
          'use_linear_projection': False, 'class_embed_type': None, 'addition_embed_type': None,
          'addition_time_embed_dim': None, 'num_class_embeds': None, 'resnet_time_scale_shift': 'default',
          'resnet_skip_time_act': False, 'resnet_out_scale_factor': 1.0, 'time_embedding_type': 'positional',
          'time_embedding_act_fn': None, 'timestep_post_act': None, 'time_cond_proj_dim': None,
          'conv_in_kernel': 3, 'conv_out_kernel': 3, 'projection_class_embeddings_input_dim': None,
          'attention_type': 'default', 'class_embeddings_concat': False, 'cross_attention_norm': None}
# Settings without effect here: upcast_attention (our softmax is always >= float32), addition_embed_type_num_heads
# (only read with an addition embedding).
_NO_EFFECT = {'upcast_attention', 'addition_embed_type_num_heads'}
_USED = {'sample_size', 'in_channels', 'out_channels', 'down_block_types', 'up_block_types', 'block_out_channels',
         'layers_per_block', 'norm_num_groups', 'cross_attention_dim', 'transformer_layers_per_block',
         'attention_head_dim', 'dropout', 'only_cross_attention', 'mid_block_only_cross_attention',
         'time_embedding_dim'}


def _one(d: Mapping[str, Any], key: str, n: int, bad: list[str]) -> Any:
  """A per-level setting that LDM keeps the same on every level (an int, or a list of equal values)."""
  v = d.get(key)
  if isinstance(v, (list, tuple)):
    if len(v) != n or len(set(map(str, v))) != 1:
      bad.append(f'{key}={v!r} (must be the same on every level)')
      return None
    return v[0]
  return v


def config_from_diffusers(d: Mapping[str, Any], **overrides: Any) -> ldm_unet.LDMUNetConfig:
  """Maps a diffusers UNet2DConditionModel config (config.json as a dict) to the equivalent LDMUNetConfig.

  `overrides` (e.g. dtype='bfloat16', remat=True) replace fields afterwards. Raises ValueError naming every
  setting that LDM's UNetModel cannot express.
  """
  bad = []
  if d.get('_class_name', 'UNet2DConditionModel') != 'UNet2DConditionModel':
    bad.append(f'_class_name={d["_class_name"]!r} (expected UNet2DConditionModel)')
  for key, value in d.items():
    if key.startswith('_') or key in _USED or key in _NO_EFFECT:
      continue
    if key not in _FIXED:
      bad.append(f'{key}={value!r} (unknown setting)')
    elif value != _FIXED[key]:
      bad.append(f'{key}={value!r} (supported: {_FIXED[key]!r})')
  boc = [int(c) for c in d.get('block_out_channels', ())]
  down, up = list(d.get('down_block_types', ())), list(d.get('up_block_types', ()))
  n = len(boc)
  if not n or len(down) != n or len(up) != n:
    bad.append(f'block_out_channels={boc}, down_block_types={down}, up_block_types={up} (need equal lengths >= 1)')
    raise ValueError(f'config_from_diffusers: unsupported UNet2DConditionModel settings: {"; ".join(bad)}')
  attn = []
  for i, t in enumerate(down):
    if t not in ('DownBlock2D', 'CrossAttnDownBlock2D'):
      bad.append(f'down_block_types[{i}]={t!r} (supported: DownBlock2D, CrossAttnDownBlock2D)')
    attn.append(t == 'CrossAttnDownBlock2D')
  want_up = ['CrossAttnUpBlock2D' if a else 'UpBlock2D' for a in attn[::-1]]
  if up != want_up:
    bad.append(f'up_block_types={up} (LDM mirrors the down path: {want_up})')
  for key in ('only_cross_attention', 'mid_block_only_cross_attention'):
    v = d.get(key)
    if v not in (None, False) and not (isinstance(v, (list, tuple)) and not any(v)):
      bad.append(f'{key}={v!r} (supported: False)')
  mc = boc[0]
  if any(c % mc for c in boc):
    bad.append(f'block_out_channels={boc} (must be multiples of the first)')
  if d.get('time_embedding_dim') not in (None, 4 * mc):
    bad.append(f'time_embedding_dim={d["time_embedding_dim"]!r} (supported: None or {4 * mc})')
  layers_per_block = _one(d, 'layers_per_block', n, bad)
  depth = _one(d, 'transformer_layers_per_block', n, bad)
  context_dim = _one(d, 'cross_attention_dim', n, bad)
  if d.get('norm_num_groups') is None:
    bad.append('norm_num_groups=None (supported: an int)')
  heads = d.get('attention_head_dim', 8)  # diffusers: the number of heads per level (its naming)
  heads = list(heads) if isinstance(heads, (list, tuple)) else [heads] * n
  # (width, heads) of every transformer: the attention levels and the middle block (heads[-1]).
  pairs = [(boc[i], heads[i]) for i in range(n) if attn[i]] + [(boc[-1], heads[-1])]
  head_channels, num_heads = -1, -1
  if any(h is None or w % h for w, h in pairs):
    bad.append(f'attention_head_dim={d.get("attention_head_dim")!r} (heads must divide the widths {boc})')
  elif len({w // h for w, h in pairs}) == 1:
    head_channels = pairs[0][0] // pairs[0][1]
  elif len({h for _, h in pairs}) == 1:
    num_heads = pairs[0][1]
  else:
    bad.append(f'attention_head_dim={d.get("attention_head_dim")!r} (LDM needs equal channels per head or equal '
               f'heads on every transformer level)')
  if bad:
    raise ValueError(f'config_from_diffusers: unsupported UNet2DConditionModel settings: {"; ".join(bad)}')
  size = d.get('sample_size')
  if isinstance(size, (list, tuple)):
    if len(set(size)) != 1:
      raise ValueError(f'config_from_diffusers: sample_size={size} is not square')
    size = size[0]
  kwargs = dict(in_channels=d.get('in_channels', 4), out_channels=d.get('out_channels', 4), model_channels=mc,
                channel_mult=tuple(c // mc for c in boc), num_res_blocks=int(layers_per_block or 2),
                attention_resolutions=tuple(2 ** i for i in range(n) if attn[i]),
                num_head_channels=head_channels, num_heads=num_heads, transformer_depth=int(depth or 1),
                context_dim=int(context_dim or 1280), norm_groups=int(d['norm_num_groups']),
                dropout=float(d.get('dropout', 0.0)))
  if size is not None:
    kwargs['image_size'] = int(size)
  kwargs.update(overrides)
  return ldm_unet.LDMUNetConfig(**kwargs)


def _folder(path: str | pathlib.Path) -> pathlib.Path:
  """The UNet folder: `path` itself, or `path/unet` for a pipeline folder."""
  path = pathlib.Path(path)
  if not (path / 'config.json').is_file() and (path / 'unet' / 'config.json').is_file():
    path = path / 'unet'
  if not (path / 'config.json').is_file():
    raise FileNotFoundError(f'{path}/config.json: not found (expected a diffusers UNet2DConditionModel folder)')
  return path


def read_diffusers_config(path: str | pathlib.Path, **overrides: Any) -> ldm_unet.LDMUNetConfig:
  """LDMUNetConfig from `path/config.json` (or `path/unet/config.json`)."""
  cfg_path = _folder(path) / 'config.json'
  try:
    d = json.loads(cfg_path.read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f'{cfg_path}: not valid JSON ({e})') from None
  try:
    return config_from_diffusers(d, **overrides)
  except ValueError as e:
    raise ValueError(f'{cfg_path}: {e}') from None


# ------------------------------------------------------------------------------------------ state dicts

def _load_safetensors(path: pathlib.Path) -> dict[str, np.ndarray]:
  try:
    from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
    return load_file(str(path))
  except (TypeError, ValueError):  # bfloat16 cannot be read as numpy; go through torch
    from safetensors.torch import load_file  # pylint: disable=g-import-not-at-top
    return {k: v.float().numpy() for k, v in load_file(str(path)).items()}


def _torch_load(path: pathlib.Path) -> Mapping[str, Any]:
  import torch  # pylint: disable=g-import-not-at-top
  try:
    obj = torch.load(str(path), map_location='cpu', weights_only=True)
  except Exception as e:  # pickle.UnpicklingError and friends; the message names the offending object
    raise ValueError(f'{path}: cannot be read safely with torch.load(weights_only=True) (it pickles objects '
                     f'other than tensors): {str(e).splitlines()[0]}. Save its state_dict (or a .safetensors '
                     f'file) from a trusted environment and import that.') from None
  if isinstance(obj, Mapping) and isinstance(obj.get('state_dict'), Mapping):
    obj = obj['state_dict']
  if not isinstance(obj, Mapping):
    raise ValueError(f'{path}: expected a state_dict (mapping of tensors), got {type(obj).__name__}')
  return {k: v.detach().float().numpy() for k, v in obj.items() if isinstance(v, torch.Tensor)}


def read_diffusers_state_dict(path: str | pathlib.Path, *, variant: str | None = None) -> dict[str, np.ndarray]:
  """The UNet's tensors {diffusers key: float32 numpy} from a diffusers folder (single or sharded files)."""
  folder = _folder(path)
  stem = f'{_WEIGHTS}.{variant}' if variant else _WEIGHTS
  single, index, pt = (folder / f'{stem}.safetensors', folder / f'{stem}.safetensors.index.json',
                       folder / f'{stem}.bin')
  if single.is_file():
    sd = _load_safetensors(single)
  elif index.is_file():
    files = sorted(set(json.loads(index.read_text())['weight_map'].values()))
    sd = {k: v for f in files for k, v in _load_safetensors(folder / f).items()}
  elif pt.is_file():
    sd = _torch_load(pt)
  else:
    raise FileNotFoundError(f'{folder}: none of {single.name}, {index.name}, {pt.name} found')
  return {k: np.asarray(v, np.float32) for k, v in sd.items()}


def read_ldm_state_dict(path: str | pathlib.Path, *, ema: bool = False) -> dict[str, np.ndarray]:
  """The UNet's tensors {LDM key without prefix: float32 numpy} from an LDM / DiffTalk checkpoint file.

  Takes `model.diffusion_model.*` (or `diffusion_model.*`, or bare UNetModel keys); with `ema`, LDM's LitEma
  copies (`model_ema.diffusion_model<key with the dots removed>`), renamed to the LDM keys.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f'{path}: checkpoint file not found')
  if path.suffix == '.safetensors':
    sd = _load_safetensors(path)
  elif path.suffix in ('.ckpt', '.pt', '.pth', '.bin'):
    sd = _torch_load(path)
  else:
    raise ValueError(f'{path}: unknown checkpoint type {path.suffix!r} (.ckpt, .pt, .pth, .bin, .safetensors)')
  for prefix in ('model.diffusion_model.', 'diffusion_model.', ''):
    unet = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    if prefix == '' or unet:
      break
  if prefix == '':  # a bare UNetModel state_dict: keep only its keys
    unet = {k: v for k, v in sd.items() if k.split('.')[0] in (
        'time_embed', 'input_blocks', 'middle_block', 'output_blocks', 'out')}
  if not unet:
    raise ValueError(f'{path}: no LDM UNet parameters found (looked for model.diffusion_model.* keys)')
  if ema:
    flat = {'model_ema.' + ('diffusion_model.' + k).replace('.', ''): k for k in unet}
    missing = [f for f in flat if f not in sd]
    if missing:
      raise ValueError(f'{path}: ema=True but {len(missing)} of {len(flat)} LitEma keys are missing, e.g. '
                       f'{missing[:3]} (does the checkpoint hold model_ema.* weights?)')
    unet = {k: sd[f] for f, k in flat.items()}
  return {k: np.asarray(v, np.float32) for k, v in unet.items()}


# ------------------------------------------------------------------------------------------ conversion

def _convert(arr: np.ndarray, ours_shape: tuple[int, ...]) -> np.ndarray:
  """PyTorch layout -> ours, decided by the two ranks."""
  if arr.ndim == 4 and len(ours_shape) == 4:  # Conv2d (O,I,kh,kw) -> (kh,kw,I,O)
    return arr.transpose(2, 3, 1, 0)
  if arr.ndim == 4 and len(ours_shape) == 2 and arr.shape[2:] == (1, 1):  # 1x1 Conv2d -> Linear
    return arr[:, :, 0, 0].T
  if arr.ndim == 2 and len(ours_shape) == 2:  # Linear (O,I) -> (I,O)
    return arr.T
  return arr


def _params(model: nnx.Module) -> list[tuple[tuple[Any, ...], nnx.Variable]]:
  return [(path, v) for path, v in nnx.iter_graph(model) if isinstance(v, nnx.Param)]


def _namer(model: ldm_unet.LDMUNet, naming: str) -> Callable[[tuple[Any, ...]], str]:
  if naming == 'ldm':
    return ldm_name
  if naming == 'diffusers':
    to_diffusers = diffusers_namer(model.cfg)
    return lambda path: to_diffusers(ldm_name(path))
  raise ValueError(f'naming must be "ldm" or "diffusers", got {naming!r}')


def plan_import(model: ldm_unet.LDMUNet, shapes: Mapping[str, tuple[int, ...]], *, naming: str,
                source: str = 'checkpoint') -> dict[str, nnx.Variable]:
  """checkpoint key -> our Variable, after checking names and converted shapes (works on nnx.eval_shape'd models).

  Raises ValueError listing every unmapped checkpoint key, missing key and shape mismatch at once.
  """
  name = _namer(model, naming)
  plan, missing, mismatched = {}, [], []
  for path, var in _params(model):
    key = name(path)
    if key not in shapes:
      missing.append(key)
      continue
    ours = tuple(var.get_value().shape)
    converted = _convert(np.empty(shapes[key], np.uint8), ours).shape
    if tuple(converted) != ours:
      mismatched.append(f'{key}: {tuple(shapes[key])} -> {tuple(converted)} != ours {ours}')
    plan[key] = var
  unmapped = sorted(set(shapes) - set(plan) - set(missing))
  if unmapped or missing or mismatched:
    raise ValueError(
        f'{source}: does not match the model config: {len(unmapped)} unmapped checkpoint keys {unmapped[:20]}, '
        f'{len(missing)} model params missing from the checkpoint {sorted(missing)[:20]}, '
        f'{len(mismatched)} shape mismatches {mismatched[:20]}')
  return plan


def import_state_dict(model: ldm_unet.LDMUNet, state_dict: Mapping[str, np.ndarray], *, naming: str,
                      source: str = 'checkpoint') -> ldm_unet.LDMUNet:
  """Copies a state_dict (PyTorch layouts; `naming` 'ldm' or 'diffusers' key names) into `model` in place."""
  plan = plan_import(model, {k: tuple(v.shape) for k, v in state_dict.items()}, naming=naming, source=source)
  for key, var in plan.items():
    arr = _convert(np.asarray(state_dict[key], np.float32), tuple(var.get_value().shape))
    var.set_value(jnp.asarray(arr, dtype=var.get_value().dtype))
  return model


def export_state_dict(model: ldm_unet.LDMUNet, *, naming: str = 'ldm') -> dict[str, np.ndarray]:
  """The inverse of `import_state_dict`: {LDM or diffusers key: float32 numpy in PyTorch layout}."""
  name = _namer(model, naming)
  out = {}
  for path, var in _params(model):
    arr = np.asarray(var.get_value(), np.float32)
    if arr.ndim == 4:  # (kh,kw,I,O) -> (O,I,kh,kw)
      arr = arr.transpose(3, 2, 0, 1)
    elif arr.ndim == 2:
      arr = arr.T
      if path[-2] in ('proj_in', 'proj_out'):  # 1x1 Conv2d in LDM and diffusers (use_linear_projection=False)
        arr = arr[:, :, None, None]
    out[name(path)] = np.ascontiguousarray(arr)
  return out


def _build(cfg: ldm_unet.LDMUNetConfig, state_dict: Mapping[str, np.ndarray], naming: str, source: str,
           seed: int) -> ldm_unet.LDMUNet:
  """LDMUNet(cfg) built abstractly and filled from `state_dict`; non-parameter state is materialised."""
  make = lambda: ldm_unet.LDMUNet(cfg, rngs=nnx.Rngs(seed))
  model = nnx.eval_shape(make)
  import_state_dict(model, state_dict, naming=naming, source=source)
  if jax.tree.leaves(nnx.state(model, nnx.Not(nnx.Param))):  # dropout RNG streams (dropout > 0)
    nnx.update(model, jax.jit(lambda: nnx.state(make(), nnx.Not(nnx.Param)))())
  return model


def load_diffusers(path: str | pathlib.Path, *, variant: str | None = None, seed: int = 0,
                   **overrides: Any) -> ldm_unet.LDMUNet:
  """LDMUNet from a diffusers UNet2DConditionModel folder; `overrides` (dtype=, remat=, ...) adjust the config."""
  cfg = read_diffusers_config(path, **overrides)
  return _build(cfg, read_diffusers_state_dict(path, variant=variant), 'diffusers', str(path), seed)


def load_ldm_checkpoint(path: str | pathlib.Path, cfg: ldm_unet.LDMUNetConfig, *, ema: bool = False,
                        seed: int = 0) -> ldm_unet.LDMUNet:
  """LDMUNet(cfg) from an LDM / DiffTalk checkpoint (`model.diffusion_model.*`, or the EMA copy with `ema`)."""
  return _build(cfg, read_ldm_state_dict(path, ema=ema), 'ldm', str(path), seed)
