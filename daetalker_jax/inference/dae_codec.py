"""The DAE's one jitted codec: encode, invert, decode and reconstruct frames, batched and sharded.

Every user of a trained diffusion autoencoder goes through this class: the DAE task's training eval,
latent extraction, generation, evaluation and the sampler benchmark. So what the benchmark times is what a
user runs, and the encode → DDIM-invert → DDIM-decode path is written once.

  codec = DAECodec(model, config, steps=20, batch=16)
  z = codec.encode(frames)                          # uint8 (N,S,S,3) or float [-1,1] → (N, D) float32
  x_T = codec.invert(frames[:1])                    # (1, S, S, 3): a real frame's stochastic code
  for batch in codec.iter_decode(z, x_T): ...       # uint8 (b, S, S, 3), one batch ahead on the devices
  z, rec_inv, rec_shared = codec.reconstruct(frames, x_T)

Frames go in fixed-size batches (`batch`, rounded up to a multiple of the mesh's batch shards; the last one
padded), split over the mesh's ('data', 'fsdp') axes; the weights and a shared x_T are replicated. So each
operation compiles once per (batch, steps, resolution) and any number of frames reuses it. Outputs come
back replicated, so every process of a multi-host run reads the same numpy arrays. `set_weights` swaps in
new weights of the same model (the training eval's EMA) without recompiling.
"""

from __future__ import annotations

from collections.abc import Iterator

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from daetalker_jax import diffusion
from daetalker_jax import sharding


def round_up(x: int, m: int) -> int:
  return -(-x // m) * m


def to_uint8(x: jax.Array) -> jax.Array:
  """[-1, 1] float → uint8 [0, 255] (clipped, rounded)."""
  return jnp.round((jnp.clip(x, -1, 1) + 1) * 127.5).astype(jnp.uint8)


def to_float(images: jax.Array) -> jax.Array:
  """uint8 [0, 255] → float32 [-1, 1]; float input is taken to be in [-1, 1] already."""
  if images.dtype == jnp.uint8:
    return images.astype(jnp.float32) / 127.5 - 1.0
  return images.astype(jnp.float32)


def host(x: jax.Array) -> np.ndarray:
  """A replicated output as numpy (its first local copy: every process of a multi-host run reads it)."""
  return np.asarray(x.addressable_data(0))


def global_array(array, sharding_: jax.sharding.NamedSharding) -> jax.Array:
  """A global jax.Array from a numpy array that every process holds whole (single- or multi-host)."""
  if isinstance(array, jax.Array) and not array.is_fully_addressable:
    return array
  array = np.asarray(array)
  return jax.make_array_from_callback(array.shape, sharding_, lambda index: array[index])


def batches(arrays: tuple[np.ndarray, ...], batch: int, sharding_: jax.sharding.NamedSharding
            ) -> Iterator[tuple[int, tuple[jax.Array, ...]]]:
  """(valid rows, device batches) of `arrays` (same length N) in fixed-size batches, the last one padded
  with its last row (so one compilation serves any N)."""
  n = len(arrays[0])
  for start in range(0, n, batch):
    k = min(batch, n - start)
    out = []
    for a in arrays:
      chunk = np.asarray(a[start:start + k])
      if k < batch:
        chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - k, axis=0)])
      out.append(global_array(chunk, sharding_))
    yield k, tuple(out)


def with_dtype(model: nnx.Module, config: ml_collections.ConfigDict, dtype: str) -> nnx.Module:
  """The same weights in a model that computes in `dtype` (parameters stay float32)."""
  from daetalker_jax.tasks import dae  # pylint: disable=g-import-not-at-top
  cfg = ml_collections.ConfigDict(config.to_dict())
  cfg.dtype = dtype
  fresh = dae.create_model(cfg, nnx.Rngs(0))
  nnx.update(fresh, nnx.state(model, nnx.Param))
  fresh.eval()
  return fresh


class DAECodec:
  """Jitted encode / invert / decode / reconstruct of one DAE (see the module doc)."""

  def __init__(self, model: nnx.Module, config: ml_collections.ConfigDict, *, steps: int | None, batch: int = 16,
               mesh: jax.sharding.Mesh | None = None, bf16: bool = False, guidance: float = 1.0,
               reference: np.ndarray | None = None):
    """`steps`: DDIM steps of invert / decode / reconstruct; None for an encoder-only codec (extraction).

    `guidance` > 1 with `reference` (D,) (the mean z_sem) guides `decode` (diffusion.guided_eps_fn): twice the
    UNet calls per step. Inversion and reconstruction stay unguided.
    """
    if steps is not None and steps < 1:
      raise ValueError(f'DAECodec: steps={steps} must be >= 1')
    if not guidance > 0 or not np.isfinite(guidance):
      raise ValueError(f'DAECodec: guidance={guidance} must be a finite number > 0 (1 = off)')
    if guidance != 1.0 and reference is None:
      raise ValueError('DAECodec: guidance != 1 needs the reference latent (the mean z_sem)')
    if bf16:
      model = with_dtype(model, config, 'bfloat16')
    self.mesh = mesh or sharding.create_mesh([('data', -1), ('fsdp', 1)])
    self.batch = round_up(max(1, batch), sharding.batch_size_divisor(self.mesh))
    self.steps = steps
    self.image_size = int(config.model.image_size)
    self.latent_dim = int(config.model.enc_out_channels)
    self.guidance = float(guidance)
    if reference is not None and np.shape(reference) != (self.latent_dim,):
      raise ValueError(f'DAECodec: reference latent of shape {np.shape(reference)}, expected ({self.latent_dim},)')
    reference = jnp.asarray(np.zeros(self.latent_dim) if reference is None else reference, jnp.float32)
    self.schedule = schedule = diffusion.schedule_from_config(config.diffusion)
    # ValueError for steps the schedule cannot space.
    table = diffusion.table_for(schedule, steps) if steps is not None else None
    self._rep = rep = sharding.replicated(self.mesh)
    self._bs = bs = sharding.batch_sharding(self.mesh)
    self._graphdef, state = nnx.split(model)
    self._state = self._place(state)
    graphdef, size = self._graphdef, self.image_size

    def merged(state):
      m = nnx.merge(graphdef, state)
      m.eval()
      return m, diffusion.model_eps_fn(m, schedule)

    def prepare(images):                                        # (B,s,s,3) → float (B,S,S,3) in [-1, 1]
      x = to_float(images)
      if x.shape[1] != size:                                    # frames stored at another resolution
        x = jax.image.resize(x, (x.shape[0], size, size, 3), 'linear', antialias=True)
      return x

    def shared(x_T, like):                                      # one x_T for every frame of the batch
      return jax.lax.with_sharding_constraint(jnp.broadcast_to(x_T, like.shape), bs)

    def encode(state, images):
      m, _ = merged(state)
      return m.encode(prepare(images)).astype(jnp.float32)

    def invert(state, images):
      m, eps_fn = merged(state)
      x0 = prepare(images)
      return diffusion.ddim_invert(eps_fn, schedule, x0, m.encode(x0), steps=steps, table=table)

    def decode(state, cond, x_T):
      _, eps_fn = merged(state)
      eps_fn = diffusion.guided_eps_fn(eps_fn, self.guidance, reference)
      x = shared(x_T, jnp.zeros((cond.shape[0], size, size, 3)))
      return to_uint8(diffusion.ddim_sample(eps_fn, schedule, x, cond, steps=steps, table=table))

    def reconstruct(state, images, x_T):
      m, eps_fn = merged(state)
      x0 = prepare(images)
      cond = m.encode(x0)
      inverted = diffusion.ddim_invert(eps_fn, schedule, x0, cond, steps=steps, table=table)
      rec_inv = diffusion.ddim_sample(eps_fn, schedule, inverted, cond, steps=steps, table=table)
      rec_shared = diffusion.ddim_sample(eps_fn, schedule, shared(x_T, x0), cond, steps=steps, table=table)
      return cond.astype(jnp.float32), to_uint8(rec_inv), to_uint8(rec_shared)

    options = diffusion.compiler_options(sharding.platform(self.mesh))
    jit = lambda fn, out: jax.jit(fn, out_shardings=out, compiler_options=options)
    self._encode = jit(encode, rep)
    self._invert = jit(invert, rep)
    self._decode = jit(decode, rep)
    self._reconstruct = jit(reconstruct, (rep, rep, rep))

  # ---- Weights and placement.
  def _place(self, state):
    """Weights replicated over the mesh. A multi-host global state (the training eval's EMA) is used as it
    is sharded: jit takes committed inputs in their own sharding. An abstract model's weights (the pod plan's
    `nnx.eval_shape`) stay abstract, replicated."""
    def place(a):
      if isinstance(a, jax.ShapeDtypeStruct):
        return jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=self._rep)
      return jax.device_put(a, self._rep) if a.is_fully_addressable else a
    return jax.tree.map(place, state)

  def set_weights(self, model_or_state) -> None:
    """New weights for the same model (e.g. the EMA at the next eval); nothing is recompiled."""
    state = model_or_state if isinstance(model_or_state, nnx.State) else nnx.state(model_or_state)
    self._state = self._place(state)

  def _shared_noise(self, x_T: np.ndarray) -> jax.Array:
    """One x_T (1, S, S, 3), replicated: every frame of every batch starts from it."""
    return global_array(np.asarray(x_T, np.float32).reshape(1, self.image_size, self.image_size, 3), self._rep)

  def _check_images(self, images: np.ndarray, what: str) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.shape[1] != images.shape[2] or not len(images):
      raise ValueError(f'DAECodec.{what}: expected square RGB frames (N, S, S, 3), got {images.shape}')
    return images

  # ---- Operations.
  def encode(self, images: np.ndarray) -> np.ndarray:
    """z_sem (N, D) float32 of frames (N, s, s, 3): uint8, or float in [-1, 1]; resized to the DAE's size."""
    images = self._check_images(images, 'encode')
    chunks = batches((images,), self.batch, self._bs)
    return np.concatenate([host(self._encode(self._state, x))[:k] for k, (x,) in chunks])

  def _need_steps(self, what: str) -> None:
    if self.steps is None:
      raise ValueError(f'DAECodec.{what}: this codec was made with steps=None (encode only)')

  def invert(self, images: np.ndarray) -> np.ndarray:
    """x_T (N, S, S, 3) float32 of real frames by DDIM inversion with their own z_sem."""
    self._need_steps('invert')
    images = self._check_images(images, 'invert')
    chunks = batches((images,), self.batch, self._bs)
    return np.concatenate([host(self._invert(self._state, x))[:k] for k, (x,) in chunks])

  def seed_noise(self, seed: int) -> np.ndarray:
    """x_T (1, S, S, 3) ~ N(0, I) from a seed."""
    shape = (1, self.image_size, self.image_size, 3)
    return np.asarray(jax.random.normal(jax.random.key(seed), shape, jnp.float32))

  def iter_decode(self, latents: np.ndarray, x_T: np.ndarray) -> Iterator[np.ndarray]:
    """uint8 (b, S, S, 3) batches decoded from latents (N, D), every frame from the one shared x_T (1,S,S,3).

    The next batch is launched before the current one is copied to the host (JAX dispatch is asynchronous),
    so the devices stay busy while the caller writes frames; at most two batches are alive.
    """
    self._need_steps('decode')
    latents = np.asarray(latents, np.float32)
    if latents.ndim != 2 or latents.shape[1] != self.latent_dim:
      raise ValueError(f'DAECodec.decode: latents of shape {latents.shape}, the DAE expects (N, {self.latent_dim})')
    noise = self._shared_noise(x_T)
    items = batches((latents,), self.batch, self._bs)
    launch = lambda item: None if item is None else (item[0], self._decode(self._state, item[1][0], noise))
    pending = launch(next(items, None))
    while pending is not None:
      following = launch(next(items, None))
      k, frames = pending
      yield host(frames)[:k]
      pending = following

  def decode(self, latents: np.ndarray, x_T: np.ndarray) -> np.ndarray:
    """All frames (N, S, S, 3) uint8 of latents (N, D) (short inputs; `iter_decode` streams long ones)."""
    return np.concatenate(list(self.iter_decode(latents, x_T)))

  def reconstruct(self, images: np.ndarray, x_T: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(z (N, D), decoded from the inverted x_T uint8, decoded from the shared x_T uint8) of real frames."""
    self._need_steps('reconstruct')
    images = self._check_images(images, 'reconstruct')
    noise = self._shared_noise(x_T)
    chunks = batches((images,), self.batch, self._bs)
    outs = [(k, self._reconstruct(self._state, x, noise)) for k, (x,) in chunks]
    return tuple(np.concatenate([host(o[i])[:k] for k, o in outs]) for i in range(3))

  def lower_decode(self) -> jax.stages.Lowered:
    """The decode program for one batch, lowered on abstract inputs (benchmarks and the pod plan: `.compile()`,
    cost and memory analysis)."""
    cond = jax.ShapeDtypeStruct((self.batch, self.latent_dim), jnp.float32, sharding=self._bs)
    noise = jax.ShapeDtypeStruct((1, self.image_size, self.image_size, 3), jnp.float32, sharding=self._rep)
    return self._decode.lower(self._state, cond, noise)

  def num_compiles(self) -> int:
    """Programs compiled so far by decode (1 for any number of batches of one shape)."""
    return self._decode._cache_size()  # pylint: disable=protected-access
