"""Stage 1: train the diffusion autoencoder (DAE) on face frames.

Run:
  python -m daetalker_jax.main --config=configs/dae.py:variant=tiny --workdir=/tmp/dae \
      --config.data.data_dir=/tmp/synth_data
Variants: `tiny` (CPU tests, = the reference tiny diffae model), `demo` (CPU demo, 64 px, v-prediction),
`64`, `128` (= official diffae ffhq128_autoenc_130M), `256` (= official ffhq256_autoenc).
"""

import ml_collections

from configs import common

# Model shapes per variant, named as diffae's BeatGANsAutoencConfig.
_MODELS = {
    'tiny': dict(image_size=32, model_channels=32, channel_mult=(1, 2, 2), num_res_blocks=1,
                 attention_resolutions=(16,), embed_channels=64, enc_out_channels=64,
                 enc_channel_mult=(1, 2, 2, 2), dropout=0.0),
    'demo': dict(image_size=64, model_channels=32, channel_mult=(1, 2, 2, 2), num_res_blocks=1,
                 attention_resolutions=(16,), embed_channels=128, enc_out_channels=128,
                 enc_channel_mult=(1, 2, 2, 2, 2), dropout=0.0),
    '64': dict(image_size=64, model_channels=64, channel_mult=(1, 2, 2, 2), num_res_blocks=2,
               attention_resolutions=(16,), embed_channels=512, enc_out_channels=512,
               enc_channel_mult=(1, 2, 2, 2, 2), dropout=0.1),
    '128': dict(image_size=128, model_channels=128, channel_mult=(1, 1, 2, 3, 4), num_res_blocks=2,
                attention_resolutions=(16,), embed_channels=512, enc_out_channels=512,
                enc_channel_mult=(1, 1, 2, 3, 4, 4), dropout=0.1),
    '256': dict(image_size=256, model_channels=128, channel_mult=(1, 1, 2, 2, 4, 4), num_res_blocks=2,
                attention_resolutions=(16,), embed_channels=512, enc_out_channels=512,
                enc_channel_mult=(1, 1, 2, 2, 4, 4, 4), dropout=0.1),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg)
  variant = common.choose(args.get('variant', '128'), _MODELS, what='variant', where='configs/dae.py')
  small = variant in common.SMALL_VARIANTS

  config = ml_collections.ConfigDict()
  config.task = 'dae'                       # train DAE (see daetalker_jax/tasks/)
  config.variant = variant                  # which shape preset this config came from
  config.seed = 0                           # base PRNG seed (params, noise, data order)

  config.data = ml_collections.ConfigDict()
  config.data.data_dir = ''                 # prepared TFDS dataset folder (data_prep.prepare --out)
  config.data.hflip = False                 # random horizontal flips (off: lips are asymmetric in speech)

  # UNet + semantic encoder (daetalker_jax.models.unet_config.UNetConfig; names as diffae's BeatGANsAutoencConfig).
  # Build with `unet.config_from_dict(config.model, dtype=config.dtype, remat=config.remat)`.
  config.model = ml_collections.ConfigDict(dict(
      in_channels=3,                        # RGB
      out_channels=3,                       # eps prediction
      num_heads=1,                          # attention heads (diffae: 1)
      enc_num_res_block=2,                  # res blocks per encoder level (diffae's name)
      enc_attn_resolutions=None,            # None: same as attention_resolutions
      enc_pool='adaptivenonzero',           # encoder head: GN -> SiLU -> global avg pool -> 1x1 conv
      resblock_updown=True,                 # down/up-sample inside res blocks (BigGAN style)
      resnet_two_cond=True,                 # res blocks scale by z_sem too (the autoencoder)
      resnet_use_zero_module=True,          # zero-init output convs of res/attention blocks and the head
      enc_probe_outputs=42 if variant == 'demo' else 0,   # linear head z_sem -> mouth landmarks (tasks/dae.py)
      **_MODELS[variant]))
  config.model.lock()

  config.diffusion = ml_collections.ConfigDict()
  config.diffusion.T = 1000                 # training timesteps
  config.diffusion.beta_start = 1e-4        # linear beta schedule start
  config.diffusion.beta_end = 0.02          # linear beta schedule end
  # Network output: eps (diffae) | v. The CPU demo predicts v: after ~600 steps an eps model still decodes
  # pure noise to a dark, noisy face (PSNR ~12 dB), a v model to a clean one (~21 dB); see diffusion.py.
  config.diffusion.prediction = 'v' if variant == 'demo' else 'eps'
  config.diffusion.sample_steps = 20 if not small else 10   # DDIM steps for eval / sample grids
  # Generation's mean-latent guidance (diffusion.guided_eps_fn; generate --guidance overrides; the training
  # eval decodes unguided). The demo's 2: docs/RESULTS.md, "What guidance is" (the demo's models, predicted
  # latents: recall 0.08 -> 1.00, amplitude 0.32 -> 0.64; w 1.5 too weak, 2.5+ breaks the face) and the ablation
  # rows "mean-latent guidance 2".
  config.diffusion.guidance = 2.0 if variant == 'demo' else 1.0

  # Loss weighting (tasks/dae.loss_fn). Defaults are diffae's plain mean over pixels and timesteps.
  config.loss = ml_collections.ConfigDict()
  # Weight of the mouth box's pixels (landmarks 48-67), 1 = off. The demo's 10: docs/RESULTS.md, ablation rows
  # "mouth-box loss weight 10" (one run: DAE eval decoded open mouths, strict r 0.76; a rerun: none) -- within
  # run-to-run spread at 500 steps, kept because the plain loss never decoded an open mouth.
  config.loss.mouth_weight = 10.0 if variant == 'demo' else 1.0
  config.loss.mouth_margin = 0.25           # the box grows by this share of its size on every side
  config.loss.snr_gamma = 0.0               # min-SNR-γ timestep weighting, 0 = off
  # Auxiliary loss: a linear probe must read the mouth landmarks (48-67) from z_sem (needs
  # model.enc_probe_outputs=42; 0 = off). The demo's 1.0: docs/RESULTS.md, ablation row "mouth probe": the DAE
  # eval's shared-noise decodes went from no open mouth (strict r 0, recall 0) to strict r 0.93, recall 0.5, and
  # the demo video from strict r 0.00 to 0.83 (recall 0.08, amplitude 0.32).
  config.loss.mouth_probe_weight = 1.0 if variant == 'demo' else 0.0

  config.batch_size = 8 if small else 64    # global batch (split over the mesh's data axes)
  config.num_train_steps = 300 if small else 500_000   # optimizer steps
  config.grad_accum_steps = 1               # micro-batches per optimizer step
  # Compute dtype: float32 | bfloat16 | auto (bfloat16 on TPU/GPU, float32 on CPU); params and Adam moments stay
  # float32. The CPU variants compute in float32; the full ones in bfloat16 on accelerators.
  config.dtype = 'float32' if small else 'auto'
  config.remat = False                      # rematerialise each res block (saves memory)

  # AdamW + EMA (b1 0.9, no weight decay, clip 1.0: configs/common.py).
  config.optim = common.optim(
      # Peak learning rate (diffae: 1e-4); the demo's few hundred CPU steps need a larger one.
      learning_rate={'tiny': 2e-4, 'demo': 1e-3}.get(variant, 1e-4),
      warmup_steps={'tiny': 20, 'demo': 30}.get(variant, 5_000),
      b2=0.999,
      ema_decay=0.995 if small else 0.9999,  # diffae: 0.9999
      # Per top-level module (train.create_optimizer), e.g. --config.optim.lr_scale.encoder=3.
      lr_scale={'encoder': 1.0})

  common.add_mesh(config)                   # mesh [('data', -1), ('fsdp', 1)], fsdp_min_bytes 4 MiB
  # Logs every 10 / 100 steps, checkpoints every 100 / 5_000 (keeps 3); evaluation: EMA reconstruction
  # grid + PSNR.
  common.add_cadence(config, small=small, eval_every_steps=100 if small else 10_000)
  config.num_eval_images = 8                # fixed validation frames in the grid
  config.init_from = ''                     # workdir or official diffae checkpoint to start from
  config.distributed = False                # call jax.distributed.initialize() (multi-host GPU)
  return config
