"""Device mesh and sharding rules: the one place that decides where arrays live.

The mesh has a 'data' axis (pure data parallelism) and an 'fsdp' axis (data parallelism whose members also
each hold a slice of every large parameter, optimizer moment and EMA copy). Batches are split over both
axes, so with `[('data', 4), ('fsdp', 2)]` the global batch is split 8 ways and a large weight 2 ways.
XLA's SPMD partitioner inserts the all-gathers/reduce-scatters the fsdp layout needs.
"""

from collections.abc import Sequence
import math
from typing import Any

import jax
import numpy as np

P = jax.P
NamedSharding = jax.sharding.NamedSharding
BATCH_AXES = ('data', 'fsdp')


def create_mesh(mesh_config: Sequence[tuple[str, int]],
                devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
  """Builds the mesh from `config.mesh`, e.g. `[('data', -1), ('fsdp', 2)]` (-1: the remaining devices)."""
  devices = list(jax.devices() if devices is None else devices)
  names = tuple(str(name) for name, _ in mesh_config)
  sizes = [int(size) for _, size in mesh_config]
  if set(BATCH_AXES) - set(names):
    raise ValueError(f'config.mesh must name the axes {BATCH_AXES}, got {names}')
  if sizes.count(-1) > 1:
    raise ValueError(f'config.mesh: at most one axis may have size -1, got {list(mesh_config)}')
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if len(devices) % known:
      raise ValueError(f'config.mesh {list(mesh_config)}: {len(devices)} devices are not divisible by {known}')
    sizes[sizes.index(-1)] = len(devices) // known
  if math.prod(sizes) != len(devices):
    raise ValueError(f'config.mesh {list(mesh_config)} needs {math.prod(sizes)} devices, '
                     f'{len(devices)} are available')
  return jax.make_mesh(tuple(sizes), names, axis_types=(jax.sharding.AxisType.Auto,) * len(names),
                       devices=devices)


def platform(mesh: jax.sharding.Mesh) -> str:
  """The platform ('cpu', 'gpu', 'tpu') of the mesh's devices."""
  return mesh.devices.flat[0].platform


def runs_here(mesh: jax.sharding.Mesh) -> bool:
  """Whether this host can run programs on the mesh: False for a mesh over the devices of a TPU topology that
  is only compiled for (jax.experimental.topologies; daetalker_jax/plan.py)."""
  return platform(mesh) == jax.default_backend()


def batch_size_divisor(mesh: jax.sharding.Mesh) -> int:
  """Number of shards a global batch is split into."""
  return math.prod(mesh.shape[a] for a in BATCH_AXES)


def fsdp_spec(shape: Sequence[int], nbytes: int, fsdp_size: int, min_bytes: int) -> jax.sharding.PartitionSpec:
  """The rule: shard the largest dimension divisible by the fsdp size when the array is > min_bytes."""
  if fsdp_size <= 1 or nbytes <= min_bytes or not shape:
    return P()
  # Largest dimension first; ties go to the last (typically the output-feature) dimension.
  order = sorted(range(len(shape)), key=lambda i: (shape[i], i), reverse=True)
  for i in order:
    if shape[i] % fsdp_size == 0:
      spec = [None] * len(shape)
      spec[i] = 'fsdp'
      return P(*spec)
  return P()


def tree_shardings(mesh: jax.sharding.Mesh, abstract_tree: Any, min_bytes: int) -> Any:
  """NamedShardings for every array leaf of `abstract_tree` (ShapeDtypeStructs or arrays) by `fsdp_spec`.

  Applied uniformly to params, EMA and optimizer moments so each moment lives where its parameter lives.
  """
  fsdp_size = mesh.shape['fsdp']

  def leaf_sharding(x):
    shape = tuple(getattr(x, 'shape', ()))
    dtype = np.dtype(getattr(x, 'dtype', np.float32)) if not jax.dtypes.issubdtype(
        getattr(x, 'dtype', np.float32), jax.dtypes.prng_key) else np.dtype(np.uint32)
    nbytes = math.prod(shape) * dtype.itemsize
    return NamedSharding(mesh, fsdp_spec(shape, nbytes, fsdp_size, min_bytes))

  return jax.tree.map(leaf_sharding, abstract_tree)


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Leading (batch) dimension split over ('data', 'fsdp'); all other dimensions whole."""
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def make_global_batch(mesh: jax.sharding.Mesh, local_batch: Any) -> Any:
  """Process-local numpy batch (per-process rows) → global jax.Arrays sharded over the batch axes.

  Each process passes only the rows it loaded (its `process_index` shard of the input); the global batch
  is `process_count` times larger. Works unchanged on one host.
  """
  return jax.make_array_from_process_local_data(batch_sharding(mesh), local_batch)


def with_abstract_sharding(abstract_tree: Any, shardings: Any) -> Any:
  """Attaches shardings to a tree of ShapeDtypeStructs (the target of a sharded restore)."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract_tree, shardings)
