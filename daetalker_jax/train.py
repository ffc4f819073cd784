"""The one training loop: mesh, sharded state, jitted step, EMA, metrics, checkpoints, eval hooks.

A task (`daetalker_jax/tasks/<config.task>.py`) supplies the model, the data, the loss and the periodic
evaluation; everything else — sharding, optimizer, EMA, gradient accumulation, logging, NaN checks,
checkpoints, preemption — lives here once. Read top to bottom: state, optimizer, update step, loop.
"""

import collections
from collections.abc import Callable, Iterator
import functools
import os
import signal
import time
from typing import Any

from absl import logging
from clu import metric_writers
import flax
from flax import nnx
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from daetalker_jax import checkpoint
from daetalker_jax import console
from daetalker_jax import diffusion
from daetalker_jax import metrics as metrics_lib
from daetalker_jax import sharding
from daetalker_jax import tasks

P = jax.P


# --------------------------------------------------------------------------------------------------------
# Train state.
# --------------------------------------------------------------------------------------------------------
@flax.struct.dataclass
class TrainState:
  """Everything a checkpoint holds. The model structure (graphdef) and RNG streams are not in it: the
  graphdef is static and the streams are reseeded every step from `fold_in(seed, step)`."""
  step: jax.Array        # () int32, optimizer steps taken
  params: Any            # nnx.State of nnx.Param, float32 master weights
  other: Any             # nnx.State of non-parameter, non-RNG variables (constants here; usually empty)
  opt_state: Any         # optax state (moments shaped and sharded like params)
  ema: Any               # nnx.State, exponential moving average of params (used for sampling)


@flax.struct.dataclass
class ModelParts:
  """The non-checkpointed pieces needed to rebuild the model from a TrainState."""
  graphdef: Any = flax.struct.field(pytree_node=False)
  rng_tags: tuple[str, ...] = flax.struct.field(pytree_node=False)
  rngs: Any = None       # nnx.State of RNG keys/counts (replicated; reseeded each step)

  def merge(self, params: Any, other: Any) -> nnx.Module:
    # Fresh Variable objects for the RNG streams: merging the stored ones would reuse Variables created
    # outside the current trace, and reseeding them inside jit/grad is then a TraceContextError.
    rngs = jax.tree.map(jnp.asarray, self.rngs)
    return nnx.merge(self.graphdef, params, rngs, other)


def _rng_tags(model: nnx.Module) -> tuple[str, ...]:
  return tuple(sorted({s.key.tag for _, s in nnx.iter_graph(model) if isinstance(s, nnx.RngStream)}))


def _path_names(path) -> tuple[str, ...]:
  return tuple(str(getattr(k, 'key', getattr(k, 'name', getattr(k, 'idx', k)))) for k in path)


def create_optimizer(config: ml_collections.ConfigDict, task: tasks.Task | None = None
                     ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Adam(W) with linear warmup to a constant learning rate and global-norm clipping (diffae's recipe).

  `config.optim.lr_scale` (optional, {top-level module name: factor}) gives a module its own learning rate,
  factor x the schedule (e.g. {'encoder': 3.0} for the DAE's semantic encoder); the clip stays global.
  A task whose `frozen(path: tuple[str, ...]) -> bool` hook is set (path: the parameter's names from the model
  root) and the top-level modules named in `config.optim.frozen` (optional) get no update (not even weight
  decay) and no optimizer state.
  """
  o = config.optim
  schedule = optax.join_schedules(
      [optax.linear_schedule(0.0, o.learning_rate, max(1, o.warmup_steps)),
       optax.constant_schedule(o.learning_rate)], [max(1, o.warmup_steps)])
  adam = lambda lr: optax.adamw(lr, b1=o.b1, b2=o.b2, weight_decay=o.weight_decay)
  lr_scale = {str(k): float(v) for k, v in dict(o.get('lr_scale', None) or {}).items() if float(v) != 1.0}
  update = adam(schedule)
  if lr_scale:
    groups = {'default': update, **{f'lr_{k}': adam(lambda n, f=f: f * schedule(n)) for k, f in lr_scale.items()}}
    group_of = lambda names: f'lr_{names[0]}' if names and names[0] in lr_scale else 'default'
    update = optax.multi_transform(groups, lambda params: jax.tree_util.tree_map_with_path(
        lambda path, _: group_of(_path_names(path)), params))
  tx = optax.chain(optax.clip_by_global_norm(o.grad_clip) if o.grad_clip > 0 else optax.identity(), update)
  task_frozen = task.frozen if task is not None else None
  frozen_modules = {str(m) for m in (o.get('frozen', None) or ())}
  if task_frozen is not None or frozen_modules:
    def frozen(names):
      return bool(names and names[0] in frozen_modules) or bool(task_frozen and task_frozen(names))
    labels = lambda params: jax.tree_util.tree_map_with_path(
        lambda path, _: 'frozen' if frozen(_path_names(path)) else 'train', params)
    tx = optax.multi_transform({'train': tx, 'frozen': optax.set_to_zero()}, labels)
  return tx, schedule


def create_train_state(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, task: tasks.Task,
                       tx: optax.GradientTransformation
                       ) -> tuple[Callable[[], TrainState], TrainState, TrainState, ModelParts]:
  """Shape-first state creation: returns (init, abstract_state, state_shardings, parts).

  `jax.eval_shape` gives the state's shapes without allocating, the sharding rule turns them into
  NamedShardings, and `init` is the initializer jitted with those out_shardings, so every parameter is
  created directly on the devices (and slices) where it lives — never materialised whole on one device.
  """
  def init_fn(key: jax.Array):
    model = task.create_model(config, nnx.Rngs(key))
    graphdef, params, rngs, other = nnx.split(model, nnx.Param, nnx.RngState, ...)
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, other=other,
                       opt_state=tx.init(params), ema=jax.tree.map(jnp.copy, params))
    return state, rngs

  key = jax.random.key(config.seed)
  abstract_state, abstract_rngs = jax.eval_shape(init_fn, key)
  abstract_model = nnx.eval_shape(lambda: task.create_model(config, nnx.Rngs(config.seed)))
  graphdef = nnx.split(abstract_model, nnx.Param, nnx.RngState, ...)[0]
  state_shardings = sharding.tree_shardings(mesh, abstract_state, config.fsdp_min_bytes)
  init = jax.jit(lambda k: init_fn(k)[0], out_shardings=state_shardings)
  # The RNG-stream template alone (XLA drops the unused parameter initialisers from this program). On a mesh of a
  # topology that this host does not run (the pod plan) it is made here on the host; a trace reads it as a constant.
  rng_shardings = (jax.tree.map(lambda _: sharding.replicated(mesh), abstract_rngs)
                   if sharding.runs_here(mesh) else None)
  rngs = jax.jit(lambda k: init_fn(k)[1], out_shardings=rng_shardings)(key)
  parts = ModelParts(graphdef=graphdef, rng_tags=_rng_tags(abstract_model), rngs=rngs)
  abstract_state = sharding.with_abstract_sharding(abstract_state, state_shardings)
  if not sharding.runs_here(mesh):
    return None, abstract_state, state_shardings, parts
  if jax.default_backend() == 'cpu':
    # The initialiser runs once: XLA:CPU's backend optimisations (half of its compile: 45 -> 23 s for the demo
    # TalkFormer) buy nothing there. Other backends keep their defaults.
    return (lambda: init.lower(key).compile({'xla_backend_optimization_level': 0})(key)), abstract_state, \
        state_shardings, parts
  return functools.partial(init, key), abstract_state, state_shardings, parts


# --------------------------------------------------------------------------------------------------------
# Update step.
# --------------------------------------------------------------------------------------------------------
def train_step(state: TrainState, batch: Any, *, parts: ModelParts, task: tasks.Task,
               tx: optax.GradientTransformation, schedule: optax.Schedule, config: ml_collections.ConfigDict,
               mesh: jax.sharding.Mesh) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer step (pure): grads (accumulated over micro-batches) → clip → Adam → EMA."""
  rng = jax.random.fold_in(jax.random.key(config.seed), state.step)
  accum = config.grad_accum_steps

  def loss_of(params, micro_batch, micro_rng):
    model = parts.merge(params, state.other)
    if parts.rng_tags:  # Dropout etc.: fresh, step-dependent streams.
      nnx.reseed(model, **{t: jax.random.fold_in(micro_rng, i + 1) for i, t in enumerate(parts.rng_tags)})
    model.train()
    return task.loss_fn(config, model, micro_batch, micro_rng, train=True)

  grad_fn = jax.value_and_grad(loss_of, has_aux=True)
  if accum == 1:
    (loss, aux), grads = grad_fn(state.params, batch, rng)
  else:
    # (B, ...) → (A, B/A, ...) such that every device keeps its own rows (no data movement): row b goes
    # to micro-batch b % A, so each micro-batch has the same per-device slice layout as the full batch.
    def split(x):
      x = x.reshape(x.shape[0] // accum, accum, *x.shape[1:]).swapaxes(0, 1)
      return jax.lax.with_sharding_constraint(x, jax.sharding.NamedSharding(mesh, P(None, sharding.BATCH_AXES)))
    micro = jax.tree.map(split, batch)

    def body(carry, xs):
      i, micro_batch = xs
      (l, a), g = grad_fn(state.params, micro_batch, jax.random.fold_in(rng, i))
      return jax.tree.map(jnp.add, carry, (l, a, g)), None

    first = jax.tree.map(lambda x: x[0], micro)
    (loss, aux), grads = jax.tree.map(jnp.zeros_like, jax.eval_shape(grad_fn, state.params, first, rng))
    (loss, aux, grads), _ = jax.lax.scan(body, (loss, aux, grads), (jnp.arange(accum), micro))
    loss, aux, grads = jax.tree.map(lambda x: x / accum, (loss, aux, grads))

  grad_norm = optax.tree.norm(grads)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  decay = config.optim.ema_decay
  if config.optim.get('ema_warmup', True):
    # d_t = min(d, (1+t)/(10+t)): early EMA weights follow the model instead of staying ~the (zero-output)
    # initialisation for ~1/(1-d) steps; long runs converge to diffae's constant-d EMA.
    t = state.step.astype(jnp.float32)
    decay = jnp.minimum(decay, (1.0 + t) / (10.0 + t))
  # EMA without bias correction (diffae's update): ema ← d·ema + (1-d)·θ.
  ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state.ema, params)
  metrics = {'loss': loss, 'grad_norm': grad_norm, 'learning_rate': schedule(state.step), **aux}
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state, ema=ema), metrics


def make_train_step(config, mesh, task, tx, schedule, parts, state_shardings):
  """`train_step` jitted with explicit shardings; the state is donated (updated in place)."""
  step = functools.partial(train_step, parts=parts, task=task, tx=tx, schedule=schedule, config=config,
                           mesh=mesh)
  return jax.jit(step, in_shardings=(state_shardings, sharding.batch_sharding(mesh)),
                 out_shardings=(state_shardings, sharding.replicated(mesh)), donate_argnums=(0,),
                 compiler_options=diffusion.compiler_options(sharding.platform(mesh)))   # CPU: XLA's own convs


def _reinit_from(tx, params_shardings, state_shardings):
  """Jitted: a fresh state whose params and EMA are the given weights (config.init_from)."""
  def reinit(state, params):
    return state.replace(params=params, ema=jax.tree.map(jnp.copy, params), opt_state=tx.init(params))
  return jax.jit(reinit, in_shardings=(state_shardings, params_shardings), out_shardings=state_shardings,
                 donate_argnums=(0,))


# --------------------------------------------------------------------------------------------------------
# Input.
# --------------------------------------------------------------------------------------------------------
def prefetch_to_mesh(local_iter: Iterator[Any], mesh: jax.sharding.Mesh, size: int = 2) -> Iterator[Any]:
  """Turns process-local numpy batches into global sharded arrays, `size` batches ahead of the step."""
  queue = collections.deque()

  def enqueue(n):
    for _ in range(n):
      try:
        queue.append(sharding.make_global_batch(mesh, next(local_iter)))
      except StopIteration:
        return

  enqueue(size)
  while queue:
    yield queue.popleft()
    enqueue(1)


# --------------------------------------------------------------------------------------------------------
# Preemption: SIGTERM / SIGINT → checkpoint at the current step and return.
# --------------------------------------------------------------------------------------------------------
class _StopRequest:
  def __init__(self):
    self.signum = None
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # Not the main thread (e.g. some test runners): no handler.
        pass
    return self

  def _handle(self, signum, frame):
    del frame
    logging.warning('Received signal %d: will checkpoint and stop after the current step.', signum)
    self.signum = signum

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)

  def requested(self, sync_point: bool) -> bool:
    """Whether to stop now. With several processes, they decide together, and only at sync points
    (log steps): any process signalled → all stop at the same step (else one would wait forever for
    the others inside the checkpoint save)."""
    if jax.process_count() == 1:
      return self.signum is not None
    if not sync_point:
      return False
    return bool(np.any(multihost_utils.process_allgather(np.array([self.signum is not None]))))


# --------------------------------------------------------------------------------------------------------
# The loop.
# --------------------------------------------------------------------------------------------------------
def _check_batch(config, mesh):
  divisor = sharding.batch_size_divisor(mesh)
  b, a, pc = config.batch_size, config.grad_accum_steps, jax.process_count()
  if b % pc:
    raise ValueError(f'config.batch_size={b} is not divisible by the {pc} processes')
  if b % (a * divisor):
    raise ValueError(f'config.batch_size={b} must be divisible by grad_accum_steps ({a}) x the batch shards '
                     f'of the mesh ({divisor}: {dict(mesh.shape)})')


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
  """Trains `config.task` in `workdir`, resuming from its latest checkpoint; returns the final state."""
  workdir = os.path.abspath(workdir)
  task = tasks.get_task(config.task)
  is_main = jax.process_index() == 0

  # ---- Logging.
  writer = metric_writers.create_default_writer(workdir, just_logging=not is_main)
  logging.info('config:\n%s', config)

  # ---- Mesh.
  mesh = sharding.create_mesh(config.mesh)
  _check_batch(config, mesh)
  if config.get('dtype', None) == 'auto':   # resolved here, so the checkpoint's meta records what was trained
    config.dtype = tasks.compute_dtype(config, sharding.platform(mesh))
  logging.info('mesh %s over %d devices, %d processes', dict(mesh.shape), mesh.size, jax.process_count())

  with jax.set_mesh(mesh):
    # ---- Model, optimizer and sharded state.
    tx, schedule = create_optimizer(config, task)
    init, abstract_state, state_shardings, parts = create_train_state(config, mesh, task, tx)
    logging.info('model: %s parameters', f'{metrics_lib.count_params(abstract_state.params):,}')
    step_fn = make_train_step(config, mesh, task, tx, schedule, parts, state_shardings)

    # ---- Checkpoint load: resume from this workdir, else config.init_from, else scratch.
    ckpt = checkpoint.Checkpointer(workdir, keep=config.keep_checkpoints)
    start_step = ckpt.latest_step()
    if start_step is not None:
      state, _ = ckpt.restore(start_step, abstract_state)
      logging.info('Resumed from %s at step %d', ckpt.directory, start_step)
    else:
      start_step = 0
      state = init()
      if config.init_from:
        params = checkpoint.load_init_weights(
            config.init_from, abstract_state.params,
            lambda: task.create_model(config, nnx.Rngs(config.seed)))
        state = _reinit_from(tx, state_shardings.params, state_shardings)(state, params)
        logging.info('Initialised weights from %s', config.init_from)
      elif task.load_pretrained is not None:
        # Frozen pretrained parts (e.g. wav2vec2) come from files, which the jitted init cannot read.
        model = parts.merge(state.params, state.other)
        if task.load_pretrained(config, model):
          params = jax.device_put(nnx.state(model, nnx.Param), state_shardings.params)
          state = _reinit_from(tx, state_shardings.params, state_shardings)(state, params)
          logging.info('Loaded the pretrained parts of the %s model', config.task)
    data_stats = task.data_stats(config)

    # ---- Input (data order is a function of (seed, step): resumes continue the same stream).
    local_iter, eval_inputs = task.make_datasets(config, jax.process_index(), jax.process_count(),
                                                 start_step=start_step)
    batches = prefetch_to_mesh(local_iter, mesh)
    evaluator = task.make_evaluator(config, workdir)   # once: it keeps its compiled functions across evals

    # ---- Loop.
    # A progress bar with ETA on the terminal (training time only); steps/s and images/s are written to
    # TensorBoard below from host-synced timings.
    progress = console.Progress(config.num_train_steps, start_step, desc=config.task, enabled=is_main)
    buffer = metrics_lib.MetricsBuffer()
    pending: list[dict[str, float]] = []  # checked, fetched metrics not yet written
    last_time, last_step = time.perf_counter(), start_step
    total = config.num_train_steps

    def save(step: int):
      ckpt.save(step, state, checkpoint.make_meta(config, step, data_stats))
      logging.info('Saving checkpoint at step %d', step)

    try:
      with _StopRequest() as stop:
        for step in range(start_step, total):
          with jax.profiler.StepTraceAnnotation('train', step_num=step):
            state, step_metrics = step_fn(state, next(batches))
          buffer.add(step, step_metrics)
          done = step + 1
          progress.update(done)
          log_due = done % config.log_every_steps == 0 or done == total
          stopping = stop.requested(sync_point=log_due)
          ckpt_due = done % config.checkpoint_every_steps == 0 or done == total or stopping
          eval_due = (config.eval_every_steps > 0 and (done % config.eval_every_steps == 0 or done == total)
                      and not stopping)
          if not (log_due or ckpt_due or eval_due):
            continue
          # Host sync: fetch metrics and raise on NaN/Inf *before* any checkpoint of this state.
          pending.append(buffer.flush())
          if log_due:
            now = time.perf_counter()
            summary = {k: float(np.mean([p[k] for p in pending])) for k in pending[0]}
            steps_per_sec = (done - last_step) / max(now - last_time, 1e-9)
            summary.update(steps_per_sec=steps_per_sec, images_per_sec=steps_per_sec * config.batch_size)
            writer.write_scalars(done, summary)
            progress.update(done, loss=summary.get('loss', float('nan')))
            pending, last_time, last_step = [], now, done
          progress.pause()                     # eval and checkpoint time stay out of the rate and ETA
          if ckpt_due:                         # before the eval: an eval that fails loses no training
            save(done)
          if eval_due:
            ema_model = parts.merge(state.ema, state.other)
            model = parts.merge(state.params, state.other)
            eval_metrics = evaluator(model, ema_model, eval_inputs, done, writer)
            if eval_metrics:
              writer.write_scalars(done, eval_metrics)
          progress.resume()
          if stopping:
            logging.warning('Stopped by signal at step %d (checkpoint saved).', done)
            break
    finally:
      progress.close()
      ckpt.wait_until_finished()
      ckpt.close()
      writer.flush()
  return state
