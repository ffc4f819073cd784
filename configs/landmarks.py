"""Landmark diffusion, Stage A: train the audio → lip/jaw landmark transformer (docs/LANDMARK.md).

Run:
  python -m daetalker_jax.main --config=configs/landmarks.py:variant=demo --workdir=/tmp/landmarks \
      --config.data.data_dir=/tmp/synth_ids
Variants: `tiny` (CPU tests), `demo` (the CPU demo), `full` (IP_LAP's shape: K=15 reference sets, T=5 frames,
4 layers, width 512, 4 heads). Then Stage B: configs/talkformer.py with --config.stage_a_from=/tmp/landmarks.
Speech front end (data/speech.py): `frontend=logmel` (default) or `frontend=wav2vec2` with
--config.data.wav2vec2_path=/models/hubert-base-ls960 (a local Hugging Face wav2vec2 or HuBERT folder; audio_dim
768 for base models, set --config.model...audio_dim=1024 for large ones).
"""

import ml_collections

from configs import common

_MODELS = {
    'tiny': dict(width=32, depth=1, heads=2, num_frames=5, num_refs=4),
    'demo': dict(width=128, depth=2, heads=4, num_frames=5, num_refs=8),
    'full': dict(width=512, depth=4, heads=4, num_frames=5, num_refs=15),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg)
  variant = common.choose(args.get('variant', 'full'), _MODELS, what='variant', where='configs/landmarks.py')
  small = variant in common.SMALL_VARIANTS

  config = ml_collections.ConfigDict()
  config.task = 'landmarks'                 # Stage A (daetalker_jax/tasks/landmarks.py)
  config.variant = variant
  config.seed = 0

  config.data = ml_collections.ConfigDict()
  config.data.data_dir = ''                 # prepared dataset with landmarks (data_prep.prepare)
  config.data.audio_window = 16             # feature steps (10 ms) per video frame
  audio_dim = common.add_speech_frontend(config.data, args, where='configs/landmarks.py')
  config.data.image_size = 32               # frames are loaded (and shrunk to this) with the clips; unused here

  config.model = ml_collections.ConfigDict()
  config.model.stage_a = ml_collections.ConfigDict(dict(audio_dim=audio_dim, audio_window=config.data.audio_window,
                                                        dropout=0.0, **_MODELS[variant]))
  config.model.lock()

  config.loss = ml_collections.ConfigDict()
  config.loss.velocity_weight = 1.0         # L1 of frame-to-frame motion, beside the L1 of the points

  config.batch_size = 16 if variant == 'tiny' else 64
  config.num_train_steps = 200 if small else 600_000
  config.grad_accum_steps = 1
  # Compute dtype: float32 | bfloat16 | auto (bfloat16 on TPU/GPU, float32 on CPU); params and Adam moments stay
  # float32. The CPU variants compute in float32; the full ones in bfloat16 on accelerators.
  config.dtype = 'float32' if small else 'auto'
  config.remat = False
  config.optim = common.optim(learning_rate=1e-3 if small else 1e-4, warmup_steps=20 if small else 2_000,
                              b2=0.999, ema_decay=0.99 if small else 0.999)

  common.add_mesh(config)
  common.add_cadence(config, small=small, eval_every_steps=100 if small else 10_000)
  config.num_eval_images = 64               # fixed validation windows scored at every eval
  config.init_from = ''
  config.distributed = False
  return config
