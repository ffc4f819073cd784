"""DiffTalk's one jitted sampler: conditions -> latent DDIM (optionally inpainting) -> decoded frames.

  codec = DiffTalkCodec(model, config, steps=20, batch=8)
  frames = codec.sample(examples, x_T)           # uint8 (N, S, S, 3)
It samples any latent (or pixel) denoiser that declares CONDITIONS, sample_condition, encode, decode,
latent_channels and latent_factor: DiffTalk (models/difftalk.py) and landmark diffusion (models/talkformer.py).
  frames = codec.sample(examples, x_T, source=src, keep=keep)   # dubbing: only keep=0 pixels are generated

`examples` hold what the denoiser is conditioned on, the model's CONDITIONS (data/examples.py): for DiffTalk
masked (N,S,S,3) and reference (N,S,S,3) images in [-1, 1] or uint8, audio (N, F, W, D), landmarks (N, 39, 2). The masked target and the
reference are encoded by the frozen first stage (pre-quantisation latents), the context by the audio and
landmark nets; DDIM runs in latent space (no x0 clipping) from one x_T shared by every frame (the original
draws fresh noise per frame) and the result is decoded by the first stage (which quantises first).
With `source`/`keep` the sampler inpaints (diffusion.ddim_sample): latent pixels where `keep`, downsampled to
the latent grid, is 1 follow the source frame's latent, so only the jaw region is generated.
With `guidance` w != 1 and `guide_keys` the sampler is guided (diffusion.paired_guided_eps_fn): every step also
runs the denoiser with the conditions named in guide_keys replaced by `guide` (the landmark pipeline: the
clip's mean mouth), eps = eps(guide) + w (eps(own) - eps(guide)), in one batch of 2B:
  codec = DiffTalkCodec(model, config, steps=20, guidance=2.0, guide_keys=('landmarks',))
  frames = codec.sample(examples, x_T, guide={'landmarks': neutral})
Batches are fixed-size and split over the mesh's ('data', 'fsdp') axes like the DAE codec
(inference/dae_codec.py): one compile per (batch, steps, resolution).
"""

from __future__ import annotations

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from daetalker_jax import diffusion
from daetalker_jax import sharding
from daetalker_jax.inference.dae_codec import batches, global_array, host, round_up, to_float, to_uint8



class DiffTalkCodec:
  """Jitted DiffTalk sampling (see the module doc)."""

  def __init__(self, model: nnx.Module, config: ml_collections.ConfigDict, *, steps: int, batch: int = 8,
               mesh: jax.sharding.Mesh | None = None, guidance: float = 1.0, guide_keys: tuple[str, ...] = ()):
    if steps < 1:
      raise ValueError(f'DiffTalkCodec: steps={steps} must be >= 1')
    if not (np.isfinite(guidance) and guidance > 0):
      raise ValueError(f'DiffTalkCodec: guidance={guidance} must be a finite number > 0 (1 = off)')
    unknown = [k for k in guide_keys if k not in model.CONDITIONS]
    if unknown or (guidance != 1.0 and not guide_keys):
      raise ValueError(f'DiffTalkCodec: guidance {guidance} needs guide_keys among {model.CONDITIONS} '
                       f'(got {guide_keys})')
    self.mesh = mesh or sharding.create_mesh([('data', -1), ('fsdp', 1)])
    self.batch = round_up(max(1, batch), sharding.batch_size_divisor(self.mesh))
    self.steps = steps
    self.conditions = tuple(model.CONDITIONS)
    self.guidance = float(guidance)
    self.guide_keys = tuple(guide_keys) if guidance != 1.0 else ()
    self.image_size = int(config.model.first_stage.image_size)
    self.factor = model.latent_factor
    self.latent_size = self.image_size // self.factor
    self.latent_channels = model.latent_channels
    self.schedule = schedule = diffusion.schedule_from_config(config.diffusion)
    table = diffusion.table_for(schedule, steps)
    self._rep = rep = sharding.replicated(self.mesh)
    self._bs = bs = sharding.batch_sharding(self.mesh)
    self._graphdef, state = nnx.split(model)
    self._state = self._place(state)
    graphdef, size, latent = self._graphdef, self.image_size, self.latent_size

    def prepare(images):
      x = to_float(images)
      if x.shape[1] != size:
        x = jax.image.resize(x, (x.shape[0], size, size, 3), 'linear', antialias=True)
      return x

    images = {'masked', 'reference'}
    names, guide_keys = self.conditions, self.guide_keys
    eps_of = lambda m: diffusion.paired_guided_eps_fn(lambda x, t, c: m(x, t, c), guidance)

    def sample(state, x_T, *args):
      m = nnx.merge(graphdef, state)
      m.eval()
      conds = {k: prepare(a) if k in images else a for k, a in zip(names, args)}
      guide = {k: prepare(a) if k in images else a for k, a in zip(guide_keys, args[len(names):])}
      source, keep = (args[len(names) + len(guide_keys):] + (None, None))[:2]
      # Everything the model conditions on is computed once here, outside the DDIM loop (the reference's
      # features too), and reused at every step.
      cond = m.sample_condition(**conds)
      cond = (cond, m.sample_condition(**{**conds, **guide}) if guide else cond)
      n = args[0].shape[0]
      x = jax.lax.with_sharding_constraint(jnp.broadcast_to(x_T, (n, latent, latent, x_T.shape[-1])), bs)
      inpaint = None
      if source is not None:
        keep_z = jax.image.resize(keep.astype(jnp.float32), (keep.shape[0], latent, latent, 1), 'linear')
        inpaint = (m.encode(prepare(source)), (keep_z > 0.5).astype(jnp.float32))
      z = diffusion.ddim_sample(eps_of(m), schedule, x, cond, steps=steps, clip=False,
                                table=table, inpaint=inpaint)
      return to_uint8(m.decode(z))

    options = diffusion.compiler_options()
    self._sample = jax.jit(sample, out_shardings=rep, compiler_options=options)

  def _place(self, state):
    return jax.tree.map(lambda a: jax.device_put(a, self._rep) if a.is_fully_addressable else a, state)

  def set_weights(self, model_or_state) -> None:
    """New weights of the same model (the training eval's EMA); nothing recompiles."""
    state = model_or_state if isinstance(model_or_state, nnx.State) else nnx.state(model_or_state)
    self._state = self._place(state)

  def seed_noise(self, seed: int) -> np.ndarray:
    """x_T (1, h, w, z) ~ N(0, I) in latent space, from a seed."""
    shape = (1, self.latent_size, self.latent_size, self.latent_channels)
    return np.asarray(jax.random.normal(jax.random.key(seed), shape, jnp.float32))

  def sample(self, examples: dict[str, np.ndarray], x_T: np.ndarray, *, source: np.ndarray | None = None,
             keep: np.ndarray | None = None, guide: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """uint8 (N, S, S, 3) frames generated from `examples` (CONDITIONS), all from the one x_T (1, h, w, z).
    `source` (N, S, S, 3) and `keep` (N, S, S, 1) in [0, 1] (1 = keep the source) switch inpainting on.
    `guide` holds the guide_keys' conditions of the guidance branch (needed when guidance != 1, else unused)."""
    missing = [k for k in self.conditions if k not in examples]
    if missing:
      raise ValueError(f'DiffTalkCodec.sample: missing conditions {missing}')
    if (source is None) != (keep is None):
      raise ValueError('DiffTalkCodec.sample: pass both source= and keep= to inpaint, or neither')
    lacking = [k for k in self.guide_keys if k not in (guide or {})]
    if lacking:
      raise ValueError(f'DiffTalkCodec.sample: guidance {self.guidance:g} needs guide={{...}} with {lacking}')
    arrays = tuple(np.asarray(examples[k]) for k in self.conditions)
    arrays += tuple(np.asarray(guide[k]) for k in self.guide_keys)
    if source is not None:
      arrays += (np.asarray(source), np.asarray(keep, np.float32))
    noise = global_array(np.asarray(x_T, np.float32).reshape(1, self.latent_size, self.latent_size, -1), self._rep)
    outs = [(k, self._sample(self._state, noise, *xs)) for k, xs in batches(arrays, self.batch, self._bs)]
    return np.concatenate([host(o)[:k] for k, o in outs])
