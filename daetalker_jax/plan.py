"""The pod plan: compile a config's real train step (and its decoder) for a TPU topology on this host.

  python -m daetalker_jax.plan --config=configs/dae.py:variant=256 --topology=v5e:4x4 --batch 64 --json plan.json
  python -m daetalker_jax.plan --config=configs/difftalk.py --topology=v5e:4x4 --find-batch

libtpu (`make install`, requirements.txt) describes real TPU slices (`jax.experimental.topologies`) without a TPU:
a mesh over a topology's devices and `jit(...).lower(abstract args).compile()` run the real TPU compiler. What
it compiles is what `main` runs: `train.create_train_state` / `train.make_train_step` with the task's own batch
structure (`Task.batch_spec`), and for `--decoder` the generation decoder (`DAECodec.lower_decode`: the DDIM loop
with its guidance). Nothing executes on the topology: the inputs are ShapeDtypeStructs with shardings.

What it reports (docs/SCALING.md):
- per-chip memory from `compiled.memory_analysis()` (exact for that compile): arguments, temporaries, outputs,
  total = arguments + temporaries + outputs - aliased (donated state) + code;
- FLOPs per chip from `compiled.cost_analysis()`, and a step-time *estimate*: FLOPs / (chip peak x an assumed
  MFU, printed), next to XLA's own `optimal_seconds` where the cost model gives one;
- the collectives of the compiled HLO: count and result bytes per kind (a static count: an op inside a loop
  counts once).
`--find-batch` doubles, then bisects, the per-chip batch up to the largest that leaves >= 10% of HBM free.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import sys
import time
from typing import Any

# Before JAX loads: this host runs on its CPU; the TPU topology is only compiled for.
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402
from flax import nnx  # noqa: E402
import jax  # noqa: E402
import ml_collections  # noqa: E402

from daetalker_jax import console  # noqa: E402
from daetalker_jax import metrics as metrics_lib  # noqa: E402
from daetalker_jax import sharding  # noqa: E402
from daetalker_jax import tasks  # noqa: E402

HEADROOM = 0.10          # --find-batch keeps at least this share of HBM free
DEFAULT_MFU = 0.40       # the assumed model-FLOPs utilisation of the step-time estimate


@dataclasses.dataclass(frozen=True)
class Chip:
  """Public per-chip figures (Cloud TPU system architecture pages): HBM, dense bf16 peak, HBM bandwidth."""
  name: str
  hbm_bytes: int
  peak_flops: float
  hbm_bytes_per_s: float


# By `device_kind` of a topology's devices. A v4 topology lists each TensorCore as a device (2 per chip, no
# megacore), so its figures are half a chip's; v5e, v5p and v6e list one device per chip.
CHIPS = {
    'TPU v4': Chip('v4-core', 16 * 2**30, 137.5e12, 614e9),
    'TPU v5 lite': Chip('v5e', 16 * 2**30, 197e12, 819e9),
    'TPU v5': Chip('v5p', 95 * 2**30, 459e12, 2765e9),
    'TPU v5p': Chip('v5p', 95 * 2**30, 459e12, 2765e9),
    'TPU v6 lite': Chip('v6e', 32 * 2**30, 918e12, 1640e9),
}


class PlanError(ValueError):
  """A plan that cannot be made as asked (one line for the terminal)."""


# --------------------------------------------------------------------------------------------------------
# Topology and mesh.
# --------------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _stderr_to(path: str | None):
  """File descriptor 2 into `path` (libtpu's C++ start-up lines about the missing TPU go to the log)."""
  if path is None:
    yield
    return
  sys.stderr.flush()
  saved = os.dup(2)
  with open(path, 'a', encoding='utf-8') as f:
    os.dup2(f.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)


def topology_devices(name: str, *, log_path: str | None = None) -> list[Any]:
  """The devices of TPU topology `name` (e.g. 'v5e:4x4', 'v5p:2x2x2', 'v4:2x2x2'), compile-only on this host."""
  # Several processes may compile at once (a plan beside the test suite): libtpu's one-process lockfile is for
  # processes that drive a real TPU.
  os.environ.setdefault('ALLOW_MULTIPLE_LIBTPU_LOAD', '1')
  import importlib.util  # pylint: disable=g-import-not-at-top
  if importlib.util.find_spec('libtpu') is None:
    raise PlanError(f'--topology={name}: no TPU compiler here: libtpu is not installed (make install)')
  try:
    from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
    with _stderr_to(log_path):
      desc = topologies.get_topology_desc(name, 'tpu')
  except Exception as e:  # pylint: disable=broad-except
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise PlanError(f'--topology={name}: {msg}') from e
  return list(desc.devices)


def chip_of(devices: list[Any]) -> Chip:
  kind = devices[0].device_kind
  if kind not in CHIPS:
    raise PlanError(f'no HBM / peak figures for device kind {kind!r} (known: {sorted(CHIPS)})')
  return CHIPS[kind]


def parse_mesh(text: str | None, config_mesh: Any) -> list[tuple[str, int]]:
  """'data=4,fsdp=4' -> [('data', 4), ('fsdp', 4)]; empty: the config's own `mesh`."""
  if not text:
    return [(str(n), int(s)) for n, s in config_mesh]
  try:
    return [(k.strip(), int(v)) for k, v in (part.split('=') for part in text.split(','))]
  except ValueError:
    raise PlanError(f'--mesh={text!r}: expected NAME=SIZE pairs, e.g. data=4,fsdp=4 (-1: the rest)') from None


# --------------------------------------------------------------------------------------------------------
# Compile and read the compiler's reports.
# --------------------------------------------------------------------------------------------------------
_COLLECTIVE = re.compile(r'=\s*(?P<type>\(.*?\)|\S+)\s+(?P<op>all-reduce|all-gather|reduce-scatter|all-to-all|'
                         r'collective-permute)(?P<start>-start)?\(')
_ARRAY = re.compile(r'\b(?P<dtype>pred|s4|u4|s8|u8|s16|u16|s32|u32|s64|u64|f16|bf16|f32|f64|f8e4m3fn|f8e5m2)'
                    r'\[(?P<dims>[0-9,]*)\]')
_BYTES = {'pred': 1, 's4': 0.5, 'u4': 0.5, 's8': 1, 'u8': 1, 's16': 2, 'u16': 2, 's32': 4, 'u32': 4, 's64': 8,
          'u64': 8, 'f16': 2, 'bf16': 2, 'f32': 4, 'f64': 8, 'f8e4m3fn': 1, 'f8e5m2': 1}


def _array_bytes(type_text: str) -> list[float]:
  out = []
  for m in _ARRAY.finditer(type_text):
    dims = [int(d) for d in m['dims'].split(',') if d]
    out.append(math.prod(dims) * _BYTES[m['dtype']])
  return out


def collectives(hlo_text: str) -> dict[str, dict[str, float]]:
  """{kind: {count, bytes}} of the collectives in compiled HLO text (async pairs counted once, at their start).

  Bytes are the result's: for an all-reduce the sum of its (possibly combined) operands, for the others the
  largest array of the result (an async start's result tuple also holds its input)."""
  out: dict[str, dict[str, float]] = {}
  for m in _COLLECTIVE.finditer(hlo_text):
    sizes = _array_bytes(m['type'])
    nbytes = sum(sizes) if m['op'] == 'all-reduce' else max(sizes, default=0)
    if m['op'] == 'all-reduce' and m['start'] and m['type'].startswith('('):
      nbytes = sum(sizes)   # a combined all-reduce-start returns one buffer per operand
    entry = out.setdefault(m['op'], {'count': 0, 'bytes': 0})
    entry['count'] += 1
    entry['bytes'] += int(nbytes)
  return out


def _cost(compiled) -> dict[str, float]:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  return dict(cost or {})


def report(compiled, *, chip: Chip, compile_s: float, items_per_chip: float, mfu: float) -> dict[str, Any]:
  """The memory, FLOPs, collectives and time estimate of one compiled program on one chip."""
  mem = compiled.memory_analysis()
  arguments = int(mem.argument_size_in_bytes)
  temporaries = int(mem.temp_size_in_bytes)
  outputs = int(mem.output_size_in_bytes)
  aliased = int(mem.alias_size_in_bytes)
  code = int(getattr(mem, 'generated_code_size_in_bytes', 0))
  total = arguments + temporaries + outputs - aliased + code
  cost = _cost(compiled)
  flops = float(cost.get('flops', float('nan')))
  optimal = float(cost.get('optimal_seconds', -1.0))
  bytes_accessed = float(cost.get('bytes accessed', float('nan')))
  compute_s = flops / (chip.peak_flops * mfu)
  memory_s = bytes_accessed / chip.hbm_bytes_per_s
  step_s = max(compute_s, memory_s) if math.isfinite(memory_s) else compute_s
  return {
      'per_chip_bytes': {'arguments': arguments, 'temporaries': temporaries, 'outputs': outputs,
                         'aliased': aliased, 'code': code, 'total': total},
      'headroom': 1.0 - total / chip.hbm_bytes,
      'fits': total <= chip.hbm_bytes,
      'flops_per_chip': flops,
      'bytes_accessed_per_chip': bytes_accessed,
      'collectives': collectives(compiled.as_text()),
      'compile_s': round(compile_s, 2),
      'estimate': {
          'mfu_assumed': mfu,
          'peak_flops_per_chip': chip.peak_flops,
          'compute_s': compute_s,             # FLOPs at peak x MFU
          'hbm_s': memory_s,                  # bytes accessed at the HBM bandwidth
          'step_s': step_s,                   # the larger of the two
          'items_per_s_per_chip': items_per_chip / step_s if step_s > 0 else float('nan'),
          'xla_optimal_seconds': optimal if optimal > 0 else None,   # None: the cost model gave none
      },
  }


def _compile(lowered) -> tuple[Any, float]:
  t0 = time.perf_counter()
  compiled = lowered.compile()
  return compiled, time.perf_counter() - t0


def plan_train_step(config: ml_collections.ConfigDict, devices: list[Any], *, mfu: float = DEFAULT_MFU
                    ) -> dict[str, Any]:
  """Compiles `config`'s train step (train.make_train_step, as `main` runs it) for `devices`; the report."""
  from daetalker_jax import train  # pylint: disable=g-import-not-at-top
  task = tasks.get_task(config.task)
  if task.batch_spec is None:
    raise PlanError(f'task {config.task!r} declares no batch_spec: the plan cannot build its batch')
  chip = chip_of(devices)
  config.dtype = tasks.compute_dtype(config, 'tpu')
  try:
    mesh = sharding.create_mesh(config.mesh, devices=devices)
    train._check_batch(config, mesh)  # pylint: disable=protected-access
  except ValueError as e:
    raise PlanError(str(e)) from None
  tx, schedule = train.create_optimizer(config, task)
  # Outside the topology's mesh context: the few concrete values (the seed's key, the RNG-stream template) are
  # made on this host's CPU.
  _, abstract_state, state_shardings, parts = train.create_train_state(config, mesh, task, tx)
  with jax.set_mesh(mesh):
    step = train.make_train_step(config, mesh, task, tx, schedule, parts, state_shardings)
    batch = tasks.global_batch(task.batch_spec(config), config.batch_size, sharding.batch_sharding(mesh))
    lowered = step.lower(abstract_state, batch)
    compiled, seconds = _compile(lowered)
  per_chip = config.batch_size / len(devices)
  out = report(compiled, chip=chip, compile_s=seconds, items_per_chip=per_chip, mfu=mfu)
  out.update(program='train_step', params=metrics_lib.count_params(abstract_state.params),
             batch=int(config.batch_size), per_chip_batch=per_chip, mesh=dict(mesh.shape),
             dtype=str(config.get('dtype', 'float32')), remat=bool(config.get('remat', False)))
  return out


def plan_decoder(config: ml_collections.ConfigDict, devices: list[Any], *, batch: int, steps: int,
                 mfu: float = DEFAULT_MFU) -> dict[str, Any]:
  """Compiles the generation decoder of `config`'s method (its DDIM loop, guidance included) for `devices`."""
  if config.task != 'dae':
    raise PlanError(f'--decoder: the plan compiles the DAE decoder; task {config.task!r} has none here yet')
  from daetalker_jax.inference import dae_codec  # pylint: disable=g-import-not-at-top
  task = tasks.get_task(config.task)
  chip = chip_of(devices)
  config.dtype = tasks.compute_dtype(config, 'tpu')
  mesh = sharding.create_mesh([('data', -1), ('fsdp', 1)], devices=devices)
  model = nnx.eval_shape(lambda: task.create_model(config, nnx.Rngs(0)))
  guidance = float(config.diffusion.get('guidance', 1.0))
  reference = None if guidance == 1.0 else [0.0] * int(config.model.enc_out_channels)
  codec = dae_codec.DAECodec(model, config, steps=steps, batch=batch, mesh=mesh, guidance=guidance,
                             reference=reference)
  with jax.set_mesh(mesh):
    compiled, seconds = _compile(codec.lower_decode())
  out = report(compiled, chip=chip, compile_s=seconds, items_per_chip=codec.batch / len(devices), mfu=mfu)
  unet_calls = steps * (2 if guidance != 1.0 else 1)
  out.update(program='decoder', batch=codec.batch, steps=steps, guidance=guidance, unet_calls_per_frame=unet_calls,
             dtype=str(config.get('dtype', 'float32')))
  return out


def find_batch(config: ml_collections.ConfigDict, devices: list[Any], *, mfu: float = DEFAULT_MFU,
               start: int = 1, limit: int = 1024, progress=None) -> tuple[int, dict[str, Any] | None, list[dict]]:
  """The largest per-chip batch whose train step leaves >= HEADROOM of HBM free: doubling, then bisection.
  Returns (per-chip batch, its plan, every tried point)."""
  chips = len(devices)
  tried: list[dict[str, Any]] = []

  def fits(per_chip: int) -> dict[str, Any] | None:
    cfg = ml_collections.ConfigDict(config.to_dict())
    cfg.batch_size = per_chip * chips
    result = plan_train_step(cfg, devices, mfu=mfu)
    ok = result['headroom'] >= HEADROOM
    tried.append({'per_chip_batch': per_chip, 'total_bytes': result['per_chip_bytes']['total'],
                  'headroom': result['headroom'], 'ok': ok, 'compile_s': result['compile_s']})
    if progress:
      progress(tried[-1])
    return result if ok else None

  best, best_plan = 0, None
  lo, hi = 0, None
  b = start
  while b <= limit:
    p = fits(b)
    if p is None:
      hi = b
      break
    best, best_plan, lo = b, p, b
    b *= 2
  if hi is not None:
    while hi - lo > 1:
      mid = (lo + hi) // 2
      p = fits(mid)
      if p is None:
        hi = mid
      else:
        best, best_plan, lo = mid, p, mid
  return best, best_plan, tried


# --------------------------------------------------------------------------------------------------------
# Terminal.
# --------------------------------------------------------------------------------------------------------
def _gb(n: float) -> str:
  return f'{n / 1e9:.2f} GB'


def format_table(plan: dict[str, Any]) -> str:
  m = plan['per_chip_bytes']
  e = plan['estimate']
  rows = [
      ('program', plan['program']),
      ('topology', f"{plan['topology']} ({plan['chips']} x {plan['chip_kind']}, "
                   f"{plan['hbm_bytes_per_chip'] / 2**30:.0f} GiB HBM each)"),
  ]
  if plan['program'] == 'train_step':
    rows += [('config', f"{plan['config']}  ({plan['params']:,} parameters, {plan['dtype']}, "
                        f"remat {'on' if plan['remat'] else 'off'})"),
             ('batch', f"{plan['batch']} global, {plan['per_chip_batch']:g} per chip, mesh {plan['mesh']}")]
  else:
    rows += [('config', f"{plan['config']}  ({plan['dtype']})"),
             ('batch', f"{plan['batch']} frames, {plan['steps']} DDIM steps, guidance {plan['guidance']:g} "
                       f"({plan['unet_calls_per_frame']} UNet calls per frame)")]
  coll = ', '.join(f"{k} {v['count']} ({_gb(v['bytes'])})" for k, v in sorted(plan['collectives'].items()))
  rows += [
      ('memory per chip', f"arguments {_gb(m['arguments'])}, temporaries {_gb(m['temporaries'])}, "
                          f"outputs {_gb(m['outputs'])} (aliased {_gb(m['aliased'])}) -> total {_gb(m['total'])}"),
      ('fits', f"{'yes' if plan['fits'] else 'NO'}, headroom {plan['headroom'] * 100:.1f}% of HBM"),
      ('FLOPs per chip', f"{plan['flops_per_chip'] / 1e12:.3f} TFLOP"),
      ('collectives', coll or 'none'),
      ('step time (estimate)', f"{e['step_s'] * 1e3:.1f} ms at {e['mfu_assumed'] * 100:.0f}% MFU of "
                               f"{e['peak_flops_per_chip'] / 1e12:.0f} TFLOP/s (HBM-bound floor "
                               f"{e['hbm_s'] * 1e3:.1f} ms) -> {e['items_per_s_per_chip']:.1f} /s per chip"),
      ('XLA cost model', f"{e['xla_optimal_seconds'] * 1e3:.1f} ms" if e['xla_optimal_seconds'] else
                         'no estimate (optimal_seconds not available)'),
      ('compile', f"{plan['compile_s']:.1f} s on this host"),
  ]
  width = max(len(k) for k, _ in rows)
  return '\n'.join(f'  {k:<{width}}  {v}' for k, v in rows)


def make_plan(config: ml_collections.ConfigDict, config_name: str, topology: str, *, batch: int | None = None,
              mesh: str | None = None, decoder: bool = False, decoder_batch: int = 8, steps: int = 20,
              mfu: float = DEFAULT_MFU, log_path: str | None = None) -> dict[str, Any]:
  """One plan: the train step (or `decoder`) of `config` on `topology`, as a JSON-ready dict."""
  devices = topology_devices(topology, log_path=log_path)
  config = ml_collections.ConfigDict(config.to_dict())
  config.mesh = parse_mesh(mesh, config.mesh)
  if batch is not None:
    config.batch_size = int(batch)
  chip = chip_of(devices)
  head = {'config': config_name, 'topology': topology, 'chips': len(devices), 'chip_kind': chip.name,
          'device_kind': devices[0].device_kind, 'hbm_bytes_per_chip': chip.hbm_bytes,
          'jax': jax.__version__}
  if decoder:
    body = plan_decoder(config, devices, batch=decoder_batch, steps=steps, mfu=mfu)
  else:
    body = plan_train_step(config, devices, mfu=mfu)
  return {**head, **body}


FLAGS = flags.FLAGS


def _define_flags():
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config_flags.DEFINE_config_file('config', None, 'Training configuration file (as for main).', lock_config=False)
  flags.DEFINE_string('topology', 'v5e:4x4', 'TPU topology: v5e:4x4 (v5e-16), v5e:16x16, v5p:2x2x2, v4:2x2x2, ...')
  flags.DEFINE_integer('batch', None, 'Global batch (default: the config\'s batch_size).')
  flags.DEFINE_string('mesh', None, 'Mesh axes, e.g. data=4,fsdp=4 (default: the config\'s mesh; -1: the rest).')
  flags.DEFINE_bool('find_batch', False, 'Find the largest per-chip batch that leaves >= 10% of HBM free.')
  flags.DEFINE_bool('decoder', False, 'Plan the generation decoder (DDIM loop with guidance) instead of training.')
  flags.DEFINE_integer('decoder_batch', 8, 'Frames per decoder batch (--decoder).')
  flags.DEFINE_integer('steps', 20, 'DDIM steps of the decoder (--decoder).')
  flags.DEFINE_float('mfu', DEFAULT_MFU, 'Assumed model-FLOPs utilisation for the step-time estimate.')
  flags.DEFINE_string('json', None, 'Write the plan as JSON to this file.')
  flags.DEFINE_string('log', '/tmp/daetalker_plan_log.txt', 'Library and libtpu chatter goes here.')
  flags.mark_flags_as_required(['config'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Too many command-line arguments: {argv[1:]}')
  log_dir = os.path.dirname(os.path.abspath(FLAGS.log))
  console.setup(log_dir)
  config_name = flags.FLAGS['config'].config_filename if hasattr(flags.FLAGS['config'], 'config_filename') else ''
  config_name = config_name or getattr(FLAGS.config, 'variant', '')
  config = FLAGS.config
  what = 'decoder' if FLAGS.decoder else 'train step'
  console.stage(f'[plan] {config.task} {what} of {config_name} on {FLAGS.topology} (compiling with libtpu on this '
                'host; large models take minutes)')
  try:
    if FLAGS.find_batch:
      if FLAGS.decoder:
        raise PlanError('--find-batch plans the train step; drop --decoder')
      devices = topology_devices(FLAGS.topology, log_path=FLAGS.log)
      cfg = ml_collections.ConfigDict(config.to_dict())
      cfg.mesh = parse_mesh(FLAGS.mesh, cfg.mesh)
      show = lambda t: console.stage(f"[plan]   per-chip batch {t['per_chip_batch']}: "
                                     f"{_gb(t['total_bytes'])}, headroom {t['headroom'] * 100:.1f}% "
                                     f"{'ok' if t['ok'] else 'too full'} ({t['compile_s']:.0f} s)")
      best, best_plan, tried = find_batch(cfg, devices, mfu=FLAGS.mfu, progress=show)
      if best_plan is None:
        raise PlanError(f'even a per-chip batch of 1 leaves less than {HEADROOM:.0%} of HBM free')
      chip = chip_of(devices)
      plan = {'config': config_name, 'topology': FLAGS.topology, 'chips': len(devices), 'chip_kind': chip.name,
              'device_kind': devices[0].device_kind, 'hbm_bytes_per_chip': chip.hbm_bytes, 'jax': jax.__version__,
              **best_plan, 'find_batch': {'per_chip_batch': best, 'headroom_required': HEADROOM, 'tried': tried}}
    else:
      plan = make_plan(config, config_name, FLAGS.topology, batch=FLAGS.batch, mesh=FLAGS.mesh,
                       decoder=FLAGS.decoder, decoder_batch=FLAGS.decoder_batch, steps=FLAGS.steps, mfu=FLAGS.mfu,
                       log_path=FLAGS.log)
  except PlanError as e:
    raise SystemExit(f'[plan] error: {e}') from None
  print(format_table(plan), flush=True)
  if FLAGS.find_batch:
    print(f"  largest per-chip batch with >= {HEADROOM:.0%} HBM free: {plan['find_batch']['per_chip_batch']}")
  if FLAGS.json:
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.json)), exist_ok=True)
    with open(FLAGS.json, 'w', encoding='utf-8') as f:
      json.dump(plan, f, indent=1)
    console.stage(f'[plan] wrote {FLAGS.json}')
  logging.info('plan: %s', json.dumps(plan))


if __name__ == '__main__':
  _define_flags()
  app.run(main)
