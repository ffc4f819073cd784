"""Stage 2: train speech2latent (speech -> z_sem per frame, with the pose adaptor).

Needs the latents of a trained DAE, extracted next to the dataset (`task='extract'`, written to
DATA_DIR/latents/<name>/).

Run:
  python -m daetalker_jax.main --config=configs/s2l.py:variant=tiny --workdir=/tmp/s2l \
      --config.data.data_dir=/tmp/synth_data
With wav2vec2 features (a local Hugging Face wav2vec2 or HuBERT folder, e.g. facebook/wav2vec2-base or
facebook/hubert-base-ls960 downloaded beforehand; config.json's model_type says which):
  python -m daetalker_jax.main --config=configs/s2l.py:variant=base,frontend=wav2vec2 --workdir=/tmp/s2l \
      --config.data.data_dir=DATA --config.model.wav2vec2_path=/models/wav2vec2-base
Variants: `tiny` (CPU tests), `demo` (CPU demo), `base` (the DAE-Talker paper's settings: d_model 512, 4 heads,
4 + 4 blocks, kernel 13, dropout 0.1). Extra args: `frontend=logmel|wav2vec2`.
"""

import ml_collections

from configs import common

# Model shapes per variant (fields of models.speech2latent.S2LConfig).
_MODELS = {
    'tiny': dict(d_model=64, num_heads=2, num_encoder_blocks=2, num_decoder_blocks=2, conv_kernel=13,
                 pose_hidden=64, dropout=0.0),
    'demo': dict(d_model=128, num_heads=4, num_encoder_blocks=3, num_decoder_blocks=3, conv_kernel=13,
                 pose_hidden=128, dropout=0.1),
    'base': dict(d_model=512, num_heads=4, num_encoder_blocks=4, num_decoder_blocks=4, conv_kernel=13,
                 pose_hidden=256, dropout=0.1),
}
# The DAE config variant whose latents each s2l variant consumes (their enc_out_channels).
_LATENT_DIM = {'tiny': 64, 'demo': 128, 'base': 512}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg)
  variant = common.choose(args.get('variant', 'base'), _MODELS, what='variant', where='configs/s2l.py')
  frontend = common.choose(args.get('frontend', 'logmel'), ('logmel', 'wav2vec2'), what='frontend',
                           where='configs/s2l.py')
  small = variant in common.SMALL_VARIANTS

  config = ml_collections.ConfigDict()
  config.task = 'speech2latent'           # train speech2latent (see daetalker_jax/tasks/)
  config.variant = variant                  # which shape preset this config came from
  config.seed = 0                           # base PRNG seed (params, dropout, window sampling)

  config.data = ml_collections.ConfigDict()
  config.data.data_dir = ''                 # prepared TFDS dataset folder (data_prep.prepare --out)
  config.data.latents = 'dae'               # DATA_DIR/latents/<name>/ written by latent extraction
  config.data.window = 50 if variant == 'tiny' else 100   # frames per training window (25 fps: 2 s / 4 s)
  config.data.normalize_latents = True      # train on z-normalised latents (stats.json mean/std)

  config.model = ml_collections.ConfigDict(dict(
      frontend=frontend,                    # 'logmel' (in-model, 100 Hz) | 'wav2vec2' (frozen, 50 Hz)
      n_mels=80,                            # log-mel bins
      wav2vec2_path='',                     # local HF wav2vec2 or HuBERT folder (config.json + weights)
      wav2vec2_layer=-1,                    # wav2vec2 hidden state (0 = embeddings); -1 = learned mix of all
      wav2vec2_normalize=True,              # per-window zero-mean/unit-var waveform (HF do_normalize)
      latent_dim=_LATENT_DIM[variant],      # z_sem size = DAE enc_out_channels
      pose_dim=3,                           # yaw, pitch, roll
      ff_mult=4,                            # Conformer FFN expansion
      **_MODELS[variant]))
  config.model.lock()

  config.loss = ml_collections.ConfigDict()
  config.loss.latent_loss = 'l1'            # 'l1' | 'mse' on (normalised) latents, real frames only
  config.loss.pose_weight = 0.1             # weight of the pose prediction loss (MSE on normalised pose)
  config.loss.pose_scale = 20.0             # degrees per normalised pose unit (yaw/pitch/roll / scale)

  config.batch_size = 8 if small else 32    # global batch of windows (split over the mesh's data axes)
  config.num_train_steps = 200 if small else 100_000   # optimizer steps
  config.grad_accum_steps = 1               # micro-batches per optimizer step
  # Compute dtype: float32 | bfloat16 | auto (bfloat16 on TPU/GPU, float32 on CPU); params and Adam moments stay
  # float32. The CPU variants compute in float32; the full ones in bfloat16 on accelerators.
  config.dtype = 'float32' if small else 'auto'
  config.remat = False                      # rematerialise each Conformer block (saves memory)

  # AdamW + EMA (b1 0.9, no weight decay, clip 1.0: configs/common.py).
  config.optim = common.optim(
      learning_rate=5e-4 if small else 1e-4,  # peak learning rate
      warmup_steps=20 if small else 4_000,
      b2=0.98,                                # the transformer setting
      ema_decay=0.99 if small else 0.999)

  common.add_mesh(config)                   # mesh [('data', -1), ('fsdp', 1)], fsdp_min_bytes 4 MiB
  # Logs every 10 / 100 steps, checkpoints every 100 / 5_000 (keeps 3); evaluation: held-out latent / pose
  # error.
  common.add_cadence(config, small=small, eval_every_steps=100 if small else 5_000)
  config.num_eval_windows = 16              # validation windows per evaluation
  config.init_from = ''                     # workdir to start from
  config.distributed = False                # call jax.distributed.initialize() (multi-host GPU)
  return config
