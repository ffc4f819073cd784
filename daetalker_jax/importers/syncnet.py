"""Imports the public SyncNet weights (`syncnet_v2.model` from joonson/syncnet_python) into Flax.

The file is a PyTorch state_dict (`SyncNetInstance.loadParameters` iterates `torch.load(path).items()`).
It is read with `torch.load(weights_only=True)`, which unpickles tensors and containers only and never
runs code from the file. Every key is matched to the layer of the same Sequential index in
`daetalker_jax.models.syncnet.SyncNet`, shapes are checked, and conv kernels are transposed from
PyTorch's (out, in, *spatial) to Flax's (*spatial, in, out).

Get the weights with syncnet_python's `download_model.sh` (it fetches
`http://www.robots.ox.ac.uk/~vgg/software/lipsync/data/syncnet_v2.model`); nothing is downloaded here.
"""

import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from daetalker_jax.models import syncnet as syncnet_lib

_STREAMS = ('netcnnaud', 'netfcaud', 'netcnnlip', 'netfclip')


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads a SyncNet state_dict as {name: float32 numpy array}; clear one-line errors otherwise."""
  import torch  # Lazy: torch is only needed to read the pickle container.

  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f'{path}: SyncNet weights file not found')
  try:
    obj = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError, ... by cause.
    raise ValueError(f'{path}: not a PyTorch state_dict readable with weights_only=True '
                     f'({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""})') from e
  if isinstance(obj, dict) and 'state_dict' in obj and isinstance(obj['state_dict'], dict):
    obj = obj['state_dict']
  if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
    raise ValueError(f'{path}: expected a dict of tensors (a SyncNet state_dict), got {type(obj).__name__}')
  # Some re-saved copies prefix keys with the wrapper's attribute name (`__S__.netcnnaud.0.weight`).
  out = {}
  for k, v in obj.items():
    k = k.removeprefix('module.').removeprefix('__S__.')
    out[k] = v.detach().cpu().numpy()
  if not any(k.startswith(s + '.') for k in out for s in _STREAMS):
    raise ValueError(f'{path}: no netcnnaud/netcnnlip/netfcaud/netfclip keys: '
                     'not a SyncNet (SyncNetModel.S) state_dict')
  return out


def _assign(var: nnx.Variable, value: np.ndarray, name: str, path) -> None:
  current = var.get_value()          # an array, or a ShapeDtypeStruct in an abstract model
  if tuple(current.shape) != tuple(value.shape):
    raise ValueError(f'{path}: {name} has shape {tuple(value.shape)} after conversion, '
                     f'the model expects {tuple(current.shape)}')
  var.set_value(jnp.asarray(value, dtype=current.dtype))


def load_state_dict(model: syncnet_lib.SyncNet, state: dict[str, np.ndarray], path='<state_dict>') -> None:
  """Copies a SyncNet state_dict into `model` in place; every parameter must be matched exactly once.

  `model` may be abstract (`nnx.eval_shape`): every variable is replaced, so no random init is needed.
  """
  used = set()

  def take(key):
    if key not in state:
      raise ValueError(f'{path}: missing key {key!r} (not a SyncNetModel.S state_dict?)')
    used.add(key)
    return state[key]

  for stream in _STREAMS:
    for i, layer in enumerate(getattr(model, stream)):
      pre = f'{stream}.{i}'
      if isinstance(layer, nnx.Conv):
        w = take(pre + '.weight')                      # (out, in, *spatial)
        perm = tuple(range(2, w.ndim)) + (1, 0)
        _assign(layer.kernel, np.transpose(w, perm), pre + '.weight', path)
        _assign(layer.bias, take(pre + '.bias'), pre + '.bias', path)
      elif isinstance(layer, nnx.Linear):
        _assign(layer.kernel, take(pre + '.weight').T, pre + '.weight', path)   # (out, in) → (in, out)
        _assign(layer.bias, take(pre + '.bias'), pre + '.bias', path)
      elif isinstance(layer, nnx.BatchNorm):
        _assign(layer.scale, take(pre + '.weight'), pre + '.weight', path)
        _assign(layer.bias, take(pre + '.bias'), pre + '.bias', path)
        _assign(layer.mean, take(pre + '.running_mean'), pre + '.running_mean', path)
        _assign(layer.var, take(pre + '.running_var'), pre + '.running_var', path)
        used.add(pre + '.num_batches_tracked')         # absent in pre-0.4 PyTorch files; unused.
  left = sorted(set(state) - used)
  if left:
    raise ValueError(f'{path}: {len(left)} unexpected keys, e.g. {left[:3]} (wrong SyncNet variant?)')
  unset = [jax.tree_util.keystr(k) for k, v in jax.tree_util.tree_leaves_with_path(nnx.state(model))
           if isinstance(v, jax.ShapeDtypeStruct)]
  if unset:
    raise ValueError(f'{path}: model variables not filled from the file: {unset[:3]}')


def load_syncnet_weights(path: str | os.PathLike, *, num_layers_in_fc_layers: int | None = None
                         ) -> syncnet_lib.SyncNet:
  """Builds a SyncNet and fills it from the `syncnet_v2.model` state_dict at `path`."""
  state = read_state_dict(path)
  if num_layers_in_fc_layers is None:
    w = state.get('netfcaud.3.weight')
    num_layers_in_fc_layers = 1024 if w is None else int(w.shape[0])
  # Abstract construction: a random init of ~13M parameters costs tens of seconds on CPU for nothing.
  model = nnx.eval_shape(lambda: syncnet_lib.SyncNet(num_layers_in_fc_layers, rngs=nnx.Rngs(0)))
  load_state_dict(model, state, path)
  return model
