"""Config blocks shared by configs/dae.py and configs/s2l.py.

Each config file still reads top to bottom on its own: a shared block is one call here, and every field it
sets is listed below with its comment. What differs between the stages (learning rate, warmup, Adam b2, EMA
decay, evaluation period) is an argument, set in the config file.
"""

from collections.abc import Collection, Mapping

import ml_collections

SMALL_VARIANTS = ('tiny', 'demo')   # CPU variants: small batches, frequent logs and checkpoints


def parse_arg(arg: str | None) -> dict[str, str]:
  """The argument after `file.py:`, e.g. 'variant=tiny,frontend=wav2vec2' → {'variant': 'tiny', ...}."""
  return dict(a.split('=', 1) for a in arg.split(',')) if arg else {}


def choose(value: str, choices: Collection[str], *, what: str, where: str) -> str:
  """`value` if it is one of `choices`, else a one-line ValueError naming the config file and the choices."""
  if value not in choices:
    raise ValueError(f'{where}: unknown {what} {value!r}; choose from {sorted(choices)}')
  return value


def optim(*, learning_rate: float, warmup_steps: int, b2: float, ema_decay: float,
          lr_scale: Mapping[str, float] | None = None) -> ml_collections.ConfigDict:
  """`config.optim`: AdamW with linear warmup, global-norm clipping and an EMA (train.create_optimizer)."""
  o = ml_collections.ConfigDict()
  o.learning_rate = learning_rate   # Adam peak learning rate
  o.warmup_steps = warmup_steps     # linear warmup
  o.b1 = 0.9                        # Adam beta1
  o.b2 = b2                         # Adam beta2
  o.weight_decay = 0.0              # AdamW decoupled weight decay
  o.grad_clip = 1.0                 # global-norm clip
  if lr_scale is not None:          # learning-rate factor per top-level module name
    o.lr_scale = ml_collections.ConfigDict(dict(lr_scale))
  o.ema_decay = ema_decay           # EMA of parameters
  o.ema_warmup = True               # EMA decay min(d, (1+t)/(10+t)): short runs get a usable EMA
  return o


def add_mesh(config: ml_collections.ConfigDict) -> None:
  """Sets `config.mesh` and `config.fsdp_min_bytes` (daetalker_jax/sharding.py)."""
  config.mesh = [('data', -1), ('fsdp', 1)]  # mesh axes and sizes; -1 takes the remaining devices
  config.fsdp_min_bytes = 4 * 2**20         # shard a parameter over fsdp when larger than this


def add_cadence(config: ml_collections.ConfigDict, *, small: bool, eval_every_steps: int) -> None:
  """Sets how often the loop logs, saves and evaluates: `log_every_steps`, `checkpoint_every_steps`,
  `keep_checkpoints` and `eval_every_steps` (given: what an evaluation computes differs per task)."""
  config.log_every_steps = 10 if small else 100          # metrics to TensorBoard / log
  config.checkpoint_every_steps = 100 if small else 5_000  # orbax save period
  config.keep_checkpoints = 3               # checkpoints kept
  config.eval_every_steps = eval_every_steps  # task.evaluate period (and at the last step); 0: never


def add_speech_frontend(data: ml_collections.ConfigDict, args: Mapping[str, str], *, where: str) -> int:
  """Sets the generic methods' speech front end in `data` (daetalker_jax/data/speech.py) from the config
  argument `frontend=logmel|wav2vec2`; returns the model's `audio_dim` for it (80, or 768: a base model)."""
  frontend = choose(args.get('frontend', 'logmel'), ('logmel', 'wav2vec2'), what='frontend', where=where)
  data.frontend = frontend            # 'logmel' | 'wav2vec2' (a frozen wav2vec2/HuBERT hidden state, precomputed)
  data.wav2vec2_path = ''             # wav2vec2: local HF wav2vec2 or HuBERT folder (config.json + weights)
  data.wav2vec2_layer = 9             # wav2vec2: hidden state (0 = input of layer 1; 9 of 12 for base models)
  data.wav2vec2_normalize = True      # wav2vec2: zero-mean/unit-variance waveform (HF do_normalize)
  return 80 if frontend == 'logmel' else 768   # a large model (1024) wants --config.model...audio_dim=1024
