"""DiffTalk's first stage: train the VQ-f4 autoencoder (LDM's VQModel) on face frames.

Run:
  python -m daetalker_jax.main --config=configs/autoencoder.py:variant=tiny --workdir=/tmp/vq \
      --config.data.data_dir=/tmp/synth_data
Variants: `tiny` (CPU tests: 32 px, ch 32, two levels, 64 codes), `demo` (the DiffTalk CPU demo: 64 px, the f4
layout at ch 32 with 256 codes), `f4` (the published LDM VQ-f4: 256 px,
ch 128, ch_mult (1,2,4), 8192 codes of 3 channels, 55.3M parameters; 256 px -> 64x64x3 latents).
The loss is the VQ-VAE's (L1 + L2 reconstruction, codebook, commitment); LDM's patch GAN and LPIPS terms
are not part of it (daetalker_jax/tasks/autoencoder.py).
"""

import ml_collections

from configs import common

# Model shapes per variant (daetalker_jax.models.vq.VQConfig; names as LDM's ddconfig).
_MODELS = {
    'tiny': dict(image_size=32, ch=32, ch_mult=(1, 2), num_res_blocks=1, z_channels=3, embed_dim=3, n_embed=64,
                 norm_groups=8),
    # The DiffTalk CPU demo's first stage: 64 px -> 16x16x3 latents (configs/difftalk.py:variant=demo).
    'demo': dict(image_size=64, ch=32, ch_mult=(1, 2, 4), num_res_blocks=1, z_channels=3, embed_dim=3, n_embed=256,
                 norm_groups=8),
    'f4': dict(image_size=256, ch=128, ch_mult=(1, 2, 4), num_res_blocks=2, z_channels=3, embed_dim=3,
               n_embed=8192, norm_groups=32),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg)
  variant = common.choose(args.get('variant', 'f4'), _MODELS, what='variant', where='configs/autoencoder.py')
  small = variant in common.SMALL_VARIANTS

  config = ml_collections.ConfigDict()
  config.task = 'autoencoder'               # train the VQ autoencoder (see daetalker_jax/tasks/)
  config.variant = variant                  # which shape preset this config came from
  config.seed = 0                           # base PRNG seed (params, data order)

  config.data = ml_collections.ConfigDict()
  config.data.data_dir = ''                 # prepared TFDS dataset folder (data_prep.prepare --out)
  config.data.hflip = False                 # random horizontal flips (off: lips are asymmetric in speech)

  # VQ autoencoder (daetalker_jax.models.vq.VQConfig). Build with
  # `vq.config_from_dict(config.model, dtype=config.dtype)`.
  config.model = ml_collections.ConfigDict(dict(
      in_channels=3,                        # RGB
      out_channels=3,                       # RGB reconstruction
      **_MODELS[variant]))
  config.model.lock()

  # Loss (tasks/autoencoder.loss_fn): l1*|x-x'| + l2*(x-x')^2 (pixel means) + codebook_weight *
  # (codebook + beta * commitment).
  config.loss = ml_collections.ConfigDict()
  config.loss.l1_weight = 1.0               # L1 reconstruction (LDM's pixel loss)
  config.loss.l2_weight = 1.0               # L2 reconstruction (VQ-VAE's)
  config.loss.codebook_weight = 1.0         # weight of the VQ terms (LDM's codebook_weight)
  config.loss.beta = 0.25                   # commitment weight (VQ-VAE / LDM: 0.25)
  # Weight of the mouth box's pixels in the two reconstruction means (1: plain means, LDM's loss); the box is
  # landmarks 48-67's, grown by mouth_margin of its size on each side. The landmark demo sets 10
  # (demo_landmark.AE_SETTINGS; docs/RESULTS.md, session 12: the 450-step autoencoder's own reconstruction of the
  # unseen person's clips, recall 0.86 -> 1.00, amplitude 0.54 -> 0.86, and the landmark demo's recall 0.70 ->
  # 0.91). DiffTalk's demo keeps 1: its denoiser on the weighted first stage measured recall 0.40 (0.70 plain).
  config.loss.mouth_weight = 1.0
  config.loss.mouth_margin = 0.25

  config.batch_size = 8 if small else 64    # global batch (split over the mesh's data axes)
  config.num_train_steps = 300 if small else 200_000   # optimizer steps
  config.grad_accum_steps = 1               # micro-batches per optimizer step
  # Compute dtype: float32 | bfloat16 | auto (bfloat16 on TPU/GPU, float32 on CPU); params and Adam moments stay
  # float32. The CPU variants compute in float32; the full ones in bfloat16 on accelerators.
  config.dtype = 'float32' if small else 'auto'

  # AdamW + EMA (b1 0.9, no weight decay, clip 1.0: configs/common.py). LDM trains the VQ-f4 with Adam at
  # 4.5e-6 x batch (base_learning_rate x batch size, b2 0.9); the CPU variant takes a larger step (3e-4:
  # L1 0.36 -> 0.16 in 12 steps on the synthface test set, with the VQ terms still settling).
  config.optim = common.optim(
      learning_rate=3e-4 if small else 4.5e-6 * 64,
      warmup_steps=20 if small else 1_000,
      b2=0.9,
      ema_decay=0.99 if small else 0.999)

  common.add_mesh(config)                   # mesh [('data', -1), ('fsdp', 1)], fsdp_min_bytes 4 MiB
  # Logs every 10 / 100 steps, checkpoints every 100 / 5_000 (keeps 3); evaluation: EMA reconstruction
  # grid + PSNR + codebook usage.
  common.add_cadence(config, small=small, eval_every_steps=100 if small else 5_000)
  config.num_eval_images = 8                # fixed validation frames in the grid
  config.init_from = ''                     # a workdir to start from (its EMA weights)
  # Or pretrained weights: a diffusers VQModel folder or an LDM / DiffTalk .ckpt (daetalker_jax/importers/vq.py),
  # whose shapes must be config.model's.
  config.pretrained = ''
  config.distributed = False                # call jax.distributed.initialize() (multi-host GPU)
  return config
