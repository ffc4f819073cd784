"""Gaussian diffusion for the DAE: linear schedule, q_sample, the training loss, DDIM sampling and inversion.

Numerics follow diffae (diffusion/base.py, diffusion/diffusion.py): every table is computed in float64 numpy
and cast to float32 where it is used (diffae's `_extract_into_tensor(...).float()`), the model is called with
the ORIGINAL timestep of each DDIM step, and DDIM on N steps uses diffae's spacing
`space_timesteps(T, 'ddimN')` = {0, s, 2s, ...} with the stride s giving exactly N steps.

Symbols (Song et al. 2021, DDIM, eq. 12): a_t = alpha_bar_t,
  x0_hat = sqrt(1/a_t) x_t - sqrt(1/a_t - 1) eps            (clipped to [-1, 1] when `clip`)
  eps'   = (sqrt(1/a_t) x_t - x0_hat) / sqrt(1/a_t - 1)     (eps re-derived from the clipped x0_hat)
  sigma  = eta sqrt((1 - a_prev)/(1 - a_t)) sqrt(1 - a_t/a_prev)
  x_prev = sqrt(a_prev) x0_hat + sqrt(1 - a_prev - sigma^2) eps' + sigma z
Inversion (diffae's ddim_reverse_sample, eta = 0) walks the other way with a_next.

What the network predicts is the schedule's `prediction` (diffae's model_mean_type): 'eps' (diffae, the
default) or 'v' = sqrt(a_t) eps - sqrt(1 - a_t) x0 (Salimans & Ho 2022), an option for short runs: at high t
an eps model must predict eps to ~1e-3 for x0_hat = (x_t - sqrt(1-a_t) eps)/sqrt(a_t) to be right, a v model
predicts x0 almost directly there, so sampling from pure noise works much earlier in training. Samplers
always see eps: `model_eps_fn(model, schedule)` converts (eps = sqrt(a_t) v + sqrt(1 - a_t) x_t).

`ddim_sample` is one function: a `lax.scan` over a precomputed per-step table, so it jits once per
(batch, steps, resolution) and its memory does not depend on the number of steps. Jit it with
`compiler_options()` (XLA's kernel choice for the UNet on CPU; `make_sampler` does).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

EpsFn = Callable[[jax.Array, jax.Array, Any], jax.Array]  # eps_fn(x_t (B,H,W,C), t (B,) int32, cond)
PREDICTIONS = ('eps', 'v')


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Schedule:
  """Per-timestep float32 tables of the full T-step process (computed in float64, then cast)."""
  betas: jax.Array                        # (T,)
  alphas_cumprod: jax.Array               # (T,) alpha_bar_t
  sqrt_alphas_cumprod: jax.Array          # (T,)
  sqrt_one_minus_alphas_cumprod: jax.Array  # (T,)
  # The float64 source of the tables (static), so that DDIM tables are rebuilt in float64 like diffae's.
  beta_start: float = dataclasses.field(default=1e-4, metadata=dict(static=True))
  beta_end: float = dataclasses.field(default=0.02, metadata=dict(static=True))
  prediction: str = dataclasses.field(default='eps', metadata=dict(static=True))  # network output: eps | v
  beta_schedule: str = dataclasses.field(default='linear', metadata=dict(static=True))  # BETA_SCHEDULES

  @property
  def num_timesteps(self) -> int:
    return int(self.betas.shape[0])


BETA_SCHEDULES = ('linear', 'sqrt_linear')


def _betas64(T: int, beta_start: float, beta_end: float, beta_schedule: str = 'linear') -> np.ndarray:
  """linear: linspace(start, end) (DDPM, diffae); sqrt_linear: linspace(sqrt(start), sqrt(end))² (what LDM and
  DiffTalk call "linear", with start 0.0015 / end 0.0195)."""
  if beta_schedule == 'linear':
    return np.linspace(beta_start, beta_end, T, dtype=np.float64)
  if beta_schedule == 'sqrt_linear':
    return np.linspace(beta_start ** 0.5, beta_end ** 0.5, T, dtype=np.float64) ** 2
  raise ValueError(f'beta_schedule must be one of {BETA_SCHEDULES}, got {beta_schedule!r}')


def linear_schedule(T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02, prediction: str = 'eps',
                    beta_schedule: str = 'linear') -> Schedule:
  """diffae's 'linear' schedule (at T=1000: betas = linspace(1e-4, 0.02, 1000)); `prediction`: eps | v;
  `beta_schedule='sqrt_linear'` gives LDM's (see _betas64)."""
  if T < 1 or not 0 < beta_start <= beta_end < 1:
    raise ValueError(f'linear_schedule: bad T={T} / betas [{beta_start}, {beta_end}]')
  if prediction not in PREDICTIONS:
    raise ValueError(f'linear_schedule: prediction must be one of {PREDICTIONS}, got {prediction!r}')
  betas = _betas64(T, beta_start, beta_end, beta_schedule)
  ac = np.cumprod(1.0 - betas)
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  return Schedule(betas=f32(betas), alphas_cumprod=f32(ac), sqrt_alphas_cumprod=f32(np.sqrt(ac)),
                  sqrt_one_minus_alphas_cumprod=f32(np.sqrt(1.0 - ac)), beta_start=beta_start,
                  beta_end=beta_end, prediction=prediction, beta_schedule=beta_schedule)


def schedule_from_config(d: Any) -> Schedule:
  """The schedule of a config's `diffusion` block (T, beta_start, beta_end, prediction (eps when absent),
  beta_schedule (linear when absent))."""
  return linear_schedule(int(d.T), float(d.beta_start), float(d.beta_end), str(d.get('prediction', 'eps')),
                         str(d.get('beta_schedule', 'linear')))


def _at(table: jax.Array, t: jax.Array, ndim: int) -> jax.Array:
  """table[t] shaped (B, 1, ..., 1) to broadcast against (B, ...) arrays of `ndim` dims."""
  return table[t].reshape((-1,) + (1,) * (ndim - 1))


def q_sample(schedule: Schedule, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
  """x_t = sqrt(a_t) x0 + sqrt(1 - a_t) noise (DDPM eq. 4). x0, noise (B,...); t (B,) int."""
  return (_at(schedule.sqrt_alphas_cumprod, t, x0.ndim) * x0 +
          _at(schedule.sqrt_one_minus_alphas_cumprod, t, x0.ndim) * noise)


def v_target(schedule: Schedule, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
  """v = sqrt(a_t) eps - sqrt(1 - a_t) x0."""
  return (_at(schedule.sqrt_alphas_cumprod, t, x0.ndim) * noise -
          _at(schedule.sqrt_one_minus_alphas_cumprod, t, x0.ndim) * x0)


def snr(schedule: Schedule, t: jax.Array) -> jax.Array:
  """Signal-to-noise ratio a_t / (1 - a_t) at integer timesteps t."""
  ac = schedule.alphas_cumprod[t]
  return ac / (1.0 - ac)


def min_snr_weight(schedule: Schedule, t: jax.Array, gamma: float) -> jax.Array:
  """Min-SNR-γ loss weight per example (Hang et al. 2023): min(SNR, γ) / SNR for an eps target, and
  min(SNR, γ) / (SNR + 1) for a v target, i.e. the x0-space loss clamped at γ, so the many low-noise
  timesteps (sharp detail that costs little to get wrong) stop dominating the gradient."""
  s = snr(schedule, t)
  return jnp.minimum(s, gamma) / (s if schedule.prediction == 'eps' else s + 1.0)


def box_weight(boxes: jax.Array, valid: jax.Array, size: tuple[int, int], weight: float,
               margin: float = 0.0) -> jax.Array:
  """(B, H, W, 1) pixel weights: `weight` inside each example's box, 1 elsewhere (and everywhere when the
  box is not valid). boxes (B, 4) = (x0, y0, x1, y1) as fractions of the width / height; valid (B,) bool;
  `margin` grows each box by that fraction of its size on every side."""
  if margin:
    grow = margin * (boxes[:, 2:] - boxes[:, :2])
    boxes = jnp.concatenate([boxes[:, :2] - grow, boxes[:, 2:] + grow], axis=1)
  h, w = size
  ys = (jnp.arange(h, dtype=jnp.float32) + 0.5) / h
  xs = (jnp.arange(w, dtype=jnp.float32) + 0.5) / w
  b = boxes.astype(jnp.float32)[:, :, None]
  inside = ((xs[None, None, :] >= b[:, 0:1]) & (xs[None, None, :] <= b[:, 2:3]) &
            (ys[None, :, None] >= b[:, 1:2]) & (ys[None, :, None] <= b[:, 3:4]))      # (B, H, W)
  inside &= jnp.asarray(valid, bool)[:, None, None]
  return jnp.where(inside, jnp.float32(weight), 1.0)[..., None]


def weighted_mean(x: jax.Array, weight: jax.Array | None = None, axis=None) -> jax.Array:
  """The mean of x over `axis` with weights broadcast to x's shape (e.g. `box_weight`); the plain mean when
  `weight` is None. A weighted mean keeps the loss's scale whatever the weights."""
  if weight is None:
    return jnp.mean(x, axis=axis)
  w = jnp.broadcast_to(weight.astype(jnp.float32), x.shape)
  return jnp.sum(w * x, axis=axis) / jnp.sum(w, axis=axis)


def diffusion_loss(model_fn: EpsFn, schedule: Schedule, x0: jax.Array, rng: jax.Array, cond: Any = None, *,
                   pixel_weight: jax.Array | None = None, snr_gamma: float | None = None
                   ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """diffae's training loss: t ~ U{0..T-1}, noise ~ N(0, I), mean squared error of model_fn(x_t, t, cond)
  against the schedule's prediction target (eps: the noise, diffae's L2 eps loss; v: v_target).

  model_fn is the raw network (its output is eps or v). For the DAE, pass `cond = model.encode(x0)` computed
  inside the differentiated function, so that the encoder learns end to end through this loss.
  pixel_weight: optional (B, H, W, 1) weights (e.g. `box_weight` on the mouth); each example's squared error
    is averaged with them (a weighted mean, so the loss keeps its scale).
  snr_gamma: optional min-SNR-γ timestep weighting (`min_snr_weight`); None is diffae's plain mean.
  Returns (scalar loss, {'loss_per_example': (B,), 't': (B,)}).
  """
  t_rng, n_rng = jax.random.split(rng)
  t = jax.random.randint(t_rng, x0.shape[:1], 0, schedule.num_timesteps)
  noise = jax.random.normal(n_rng, x0.shape, jnp.float32)
  x0 = x0.astype(jnp.float32)
  x_t = q_sample(schedule, x0, t, noise)
  target = noise if schedule.prediction == 'eps' else v_target(schedule, x0, t, noise)
  out = model_fn(x_t, t, cond).astype(jnp.float32)
  axes = tuple(range(1, x0.ndim))
  per_example = weighted_mean(jnp.square(out - target), pixel_weight, axis=axes)
  weighted = per_example if snr_gamma is None else per_example * min_snr_weight(schedule, t, snr_gamma)
  return weighted.mean(), {'loss_per_example': per_example, 't': t}


# ----------------------------------------------------------------------------------------------- DDIM tables
def ddim_timesteps(T: int, steps: int) -> np.ndarray:
  """diffae's space_timesteps(T, f'ddim{steps}'): range(0, T, s) for the stride s giving exactly `steps`."""
  for stride in range(1, T + 1):
    if len(range(0, T, stride)) == steps:
      return np.arange(0, T, stride, dtype=np.int32)
  raise ValueError(f'ddim_timesteps: cannot create exactly {steps} steps with an integer stride from T={T}')


@dataclasses.dataclass(frozen=True)
class DDIMTable:
  """Per-step float32 coefficients of the spaced process, ascending in time (index i <-> timesteps[i])."""
  timesteps: np.ndarray          # (N,) int32, the original timesteps the model sees
  sqrt_recip_ac: np.ndarray      # (N,) sqrt(1/a_t)
  sqrt_recipm1_ac: np.ndarray    # (N,) sqrt(1/a_t - 1)
  ac: np.ndarray                 # (N,) a_t
  ac_prev: np.ndarray            # (N,) a_{t-1} of the spaced process (1 before the first step)
  ac_next: np.ndarray            # (N,) a_{t+1} of the spaced process (0 after the last step)


def ddim_table(T: int, steps: int, beta_start: float = 1e-4, beta_end: float = 0.02, dtype: Any = np.float32,
               beta_schedule: str = 'linear') -> DDIMTable:
  """The spaced process exactly as diffae's SpacedDiffusion builds it (betas re-derived in float64).

  The coefficients are cast to `dtype` (float32 as diffae; float64 for exact checks under jax_enable_x64).
  """
  ts = ddim_timesteps(T, steps)
  ac_full = np.cumprod(1.0 - _betas64(T, beta_start, beta_end, beta_schedule))
  new_betas, last = [], 1.0
  for t in ts:  # SpacedDiffusion.__init__
    new_betas.append(1 - ac_full[t] / last)
    last = ac_full[t]
  ac = np.cumprod(1.0 - np.asarray(new_betas, np.float64))
  ac_prev = np.append(1.0, ac[:-1])
  ac_next = np.append(ac[1:], 0.0)
  f32 = lambda a: np.asarray(a, dtype)
  return DDIMTable(timesteps=ts, sqrt_recip_ac=f32(np.sqrt(1.0 / ac)), sqrt_recipm1_ac=f32(np.sqrt(1.0 / ac - 1)),
                   ac=f32(ac), ac_prev=f32(ac_prev), ac_next=f32(ac_next))


def table_for(schedule: Schedule, steps: int) -> DDIMTable:
  return ddim_table(schedule.num_timesteps, steps, schedule.beta_start, schedule.beta_end,
                    beta_schedule=schedule.beta_schedule)


# ------------------------------------------------------------------------------------------ pure step functions
def _pred_x0(x: jax.Array, eps: jax.Array, sr: jax.Array, srm1: jax.Array, clip: bool
             ) -> tuple[jax.Array, jax.Array]:
  """(x0_hat, eps') from the model's eps (diffae's p_mean_variance + _predict_eps_from_xstart)."""
  x0 = sr * x - srm1 * eps
  if clip:
    x0 = jnp.clip(x0, -1, 1)
  return x0, (sr * x - x0) / srm1


def ddim_step(x: jax.Array, eps: jax.Array, coef: dict[str, jax.Array], *, eta: float = 0.,
              clip: bool = True, noise: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """One DDIM update x_t -> x_{t_prev} (eq. 12). coef: scalars sqrt_recip_ac, sqrt_recipm1_ac, ac, ac_prev.

  Returns (x_prev, x0_hat). `noise` is used only when eta > 0 (pass zeros at the last step).
  """
  x0, eps = _pred_x0(x, eps, coef['sqrt_recip_ac'], coef['sqrt_recipm1_ac'], clip)
  ac, ac_prev = coef['ac'], coef['ac_prev']
  sigma = eta * jnp.sqrt((1 - ac_prev) / (1 - ac)) * jnp.sqrt(1 - ac / ac_prev)
  x_prev = x0 * jnp.sqrt(ac_prev) + jnp.sqrt(1 - ac_prev - sigma ** 2) * eps
  if eta > 0 and noise is not None:
    x_prev = x_prev + sigma * noise
  return x_prev, x0


def ddim_reverse_step(x: jax.Array, eps: jax.Array, coef: dict[str, jax.Array], *, clip: bool = True
                      ) -> tuple[jax.Array, jax.Array]:
  """One DDIM inversion update x_t -> x_{t_next} (diffae's ddim_reverse_sample, eta = 0)."""
  x0, eps = _pred_x0(x, eps, coef['sqrt_recip_ac'], coef['sqrt_recipm1_ac'], clip)
  ac_next = coef['ac_next']
  return x0 * jnp.sqrt(ac_next) + jnp.sqrt(1 - ac_next) * eps, x0


def _coefs(table: DDIMTable) -> dict[str, jax.Array]:
  return {f.name: jnp.asarray(getattr(table, f.name)) for f in dataclasses.fields(table)}


# ------------------------------------------------------------------------------------------------- samplers
def ddim_sample(eps_fn: EpsFn, schedule: Schedule, x_T: jax.Array, cond: Any, *, steps: int, eta: float = 0.,
                clip: bool = True, rng: jax.Array | None = None, table: DDIMTable | None = None,
                inpaint: tuple[jax.Array, jax.Array] | None = None) -> jax.Array:
  """DDIM from x_T (B,H,W,C) to x0 with a `lax.scan` over the steps (jit this, or call it inside jit).

  eps_fn(x_t, t (B,) int32, cond) -> eps. Frames are the batch; to share one noise image across frames,
  broadcast it into x_T. `rng` is needed only when eta > 0. `table` overrides the linear-schedule table
  (tests, other spacings); by default it is diffae's spaced table for `steps`.
  inpaint = (x_known (B,H,W,C), keep (B,H,W,1) in [0, 1]): LDM's inpainting. Before every step at t, the
  region keep=1 is replaced by x_known noised to t (with x_T as the noise, so a shared x_T stays shared), and
  after the last step by x_known itself: only the region keep=0 is generated.
  """
  table = table or table_for(schedule, steps)
  if eta > 0 and rng is None:
    raise ValueError('ddim_sample: eta > 0 needs rng')
  coefs = jax.tree.map(lambda a: a[::-1], _coefs(table))  # descending in time
  idx = jnp.arange(len(table.timesteps))[::-1]
  x_T = x_T.astype(coefs['ac'].dtype)
  if inpaint is not None:
    known, keep = (a.astype(x_T.dtype) for a in inpaint)
    noise_T = jnp.broadcast_to(x_T, known.shape)

  def body(x, inp):
    i, coef = inp
    t = jnp.full(x.shape[:1], coef['timesteps'], jnp.int32)
    if inpaint is not None:
      x = keep * q_sample(schedule, known, t, noise_T) + (1 - keep) * x
    eps = eps_fn(x, t, cond).astype(x.dtype)
    noise = None
    if eta > 0:
      noise = jax.random.normal(jax.random.fold_in(rng, i), x.shape, x.dtype) * (i > 0)
    x, _ = ddim_step(x, eps, coef, eta=eta, clip=clip, noise=noise)
    return x, None

  x, _ = jax.lax.scan(body, jnp.broadcast_to(x_T, inpaint[0].shape) if inpaint is not None else x_T, (idx, coefs))
  if inpaint is not None:
    x = keep * known + (1 - keep) * x
  return x


def ddim_invert(eps_fn: EpsFn, schedule: Schedule, x0: jax.Array, cond: Any, *, steps: int, clip: bool = True,
                table: DDIMTable | None = None) -> jax.Array:
  """DDIM inversion x0 -> x_T (the "stochastic code" of a real frame), a `lax.scan` like ddim_sample."""
  table = table or table_for(schedule, steps)

  def body(x, coef):
    t = jnp.full(x.shape[:1], coef['timesteps'], jnp.int32)
    x, _ = ddim_reverse_step(x, eps_fn(x, t, cond).astype(x.dtype), coef, clip=clip)
    return x, None

  x, _ = jax.lax.scan(body, x0.astype(table.ac.dtype), _coefs(table))
  return x


def ddim_sample_loop(eps_fn: EpsFn, schedule: Schedule, x_T: jax.Array, cond: Any, *, steps: int,
                     eta: float = 0., clip: bool = True, rng: jax.Array | None = None, reverse: bool = False,
                     table: DDIMTable | None = None) -> tuple[jax.Array, list[jax.Array], list[jax.Array]]:
  """Debug twin of ddim_sample (or of ddim_invert with reverse=True): an eager Python loop over the same
  step functions. Returns (final x, every step's x, every step's x0_hat), in the order the steps run."""
  table = table or table_for(schedule, steps)
  coefs = _coefs(table)
  n = len(table.timesteps)
  xs, x0s = [], []
  x = jnp.asarray(x_T, table.ac.dtype)
  for i in (range(n) if reverse else reversed(range(n))):
    coef = {k: v[i] for k, v in coefs.items()}
    eps = eps_fn(x, jnp.full(x.shape[:1], coef['timesteps'], jnp.int32), cond).astype(x.dtype)
    if reverse:
      x, x0 = ddim_reverse_step(x, eps, coef, clip=clip)
    else:
      noise = None
      if eta > 0:
        noise = jax.random.normal(jax.random.fold_in(rng, i), x.shape, x.dtype) * (i > 0)
      x, x0 = ddim_step(x, eps, coef, eta=eta, clip=clip, noise=noise)
    xs.append(x)
    x0s.append(x0)
  return x, xs, x0s


# ------------------------------------------------------------------------------------- jitted model samplers
def model_eps_fn(model: nnx.Module, schedule: Schedule) -> EpsFn:
  """eps_fn for a DiffusionAutoencoder: model(x_t, t, cond=cond), converted to eps when it predicts v."""
  if schedule.prediction == 'eps':
    return lambda x, t, c: model(x, t, cond=c)

  def eps_from_v(x, t, c):
    v = model(x, t, cond=c).astype(x.dtype)
    sa, s1ma = schedule.sqrt_alphas_cumprod, schedule.sqrt_one_minus_alphas_cumprod
    return _at(sa, t, x.ndim) * v + _at(s1ma, t, x.ndim) * x
  return eps_from_v


def guided_eps_fn(eps_fn: EpsFn, scale: float, reference: jax.Array) -> EpsFn:
  """Guidance by a reference condition: eps = eps(ref) + scale * (eps(cond) - eps(ref)).

  Classifier-free guidance (Ho & Salimans 2022) with the unconditional model replaced by the same model given
  `reference` (D,) for every frame: for the DAE, the dataset's mean z_sem, so `scale` > 1 pushes each frame
  further from the average face along its own latent (the mouth opens as wide as z_sem says, not the
  blurred average of what the shared noise allows). scale 1 returns `eps_fn` itself (no extra compute);
  otherwise both calls run as one batch of 2B. Linear in eps, so it holds for v models as well.
  """
  if scale == 1.0:
    return eps_fn
  paired = paired_guided_eps_fn(eps_fn, scale)
  return lambda x, t, cond: paired(x, t, (cond, jnp.broadcast_to(reference.astype(cond.dtype), cond.shape)))


def paired_guided_eps_fn(eps_fn: EpsFn, scale: float) -> EpsFn:
  """guided_eps_fn with a reference condition per frame: the returned fn takes cond = (cond, ref_cond), two
  pytrees of the same structure with the batch first (e.g. landmark diffusion's cond for the frame's own
  landmarks and for the clip's mean mouth), and runs both as one batch of 2B:
  eps = eps(ref_cond) + scale * (eps(cond) - eps(ref_cond)). scale 1 calls eps_fn on cond alone."""

  def guided(x, t, cond):
    own, ref = cond
    if scale == 1.0:
      return eps_fn(x, t, own)
    both = jax.tree.map(lambda a, b: jnp.concatenate([a, b.astype(a.dtype)]), own, ref)
    eps_cond, eps_ref = jnp.split(eps_fn(jnp.concatenate([x, x]), jnp.concatenate([t, t]), both), 2)
    return eps_ref + scale * (eps_cond - eps_ref)
  return guided


# XLA:CPU (jaxlib 0.10) hands convolutions, dots and reductions to YNNPACK by default. On an AVX2 CPU (2 cores)
# XLA's own kernels (Eigen convolutions and dots, fused reductions) run the DAE UNet faster: the 128-px
# forward 1.22x (median of 8 interleaved rounds), its 2-step DDIM sampler 1.55x, the 32-64 px forwards
# 1.1-1.3x and their gradients 1.1-1.2x; YNNPACK's 128-px convolutions (4 x 128^2 x 256 inputs, more than the
# L3 cache) take 1.4-2.3x as long as Eigen's (benchmarks/bench_torch_unet.py, sections forward and conv).
_CPU_OPTIONS = {'xla_cpu_experimental_ynn_fusion_type': ''}


def compiler_options(backend: str | None = None) -> dict[str, str]:
  """XLA compiler options for jitting a sampler on `backend` (default: JAX's): `jax.jit(..., compiler_options=)`.

  On CPU: XLA's own kernels rather than YNNPACK's (see _CPU_OPTIONS); on other backends none.
  """
  return dict(_CPU_OPTIONS) if (backend or jax.default_backend()) == 'cpu' else {}


def make_sampler(model: nnx.Module, schedule: Schedule, *, steps: int, eta: float = 0., clip: bool = True,
                 invert: bool = False, donate: bool = False, xla_options: dict[str, Any] | None = None
                 ) -> Callable[..., jax.Array]:
  """A jitted `fn(params_state, x, cond[, rng]) -> x0` (or x_T with invert=True) for this model's graph.

  The model's graph and the table are static, so it compiles once per input shape; call it with
  `nnx.state(model)` (which may be sharded) and frames batched (and sharded) over the leading axis.
  Dropout is switched off inside; `donate=True` donates the x buffer. `xla_options` are the compiler
  options (default `compiler_options()`; `{}` for XLA's own defaults).
  """
  graphdef = nnx.graphdef(model)
  table = table_for(schedule, steps)

  def run(state, x, cond, rng=None):
    m = nnx.merge(graphdef, state)
    m.eval()  # sampling never uses dropout (this changes only the traced copy)
    fn = model_eps_fn(m, schedule)
    if invert:
      return ddim_invert(fn, schedule, x, cond, steps=steps, clip=clip, table=table)
    return ddim_sample(fn, schedule, x, cond, steps=steps, eta=eta, clip=clip, rng=rng, table=table)

  options = compiler_options() if xla_options is None else xla_options
  return jax.jit(run, donate_argnums=(1,) if donate else (), compiler_options=options)

