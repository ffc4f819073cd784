"""DiffTalk: train the latent-diffusion denoiser of a generic-identity talking face (docs/DIFFTALK.md).

Needs a trained first stage (the VQ autoencoder): an `autoencoder` workdir (configs/autoencoder.py), a
diffusers VQModel folder or an LDM / DiffTalk .ckpt, given as config.first_stage; its shapes must be
config.model.first_stage's. It stays frozen.

Run:
  python -m daetalker_jax.main --config=configs/autoencoder.py:variant=demo --workdir=/tmp/vq \
      --config.data.data_dir=/tmp/synth_ids
  python -m daetalker_jax.main --config=configs/difftalk.py:variant=demo --workdir=/tmp/difftalk \
      --config.data.data_dir=/tmp/synth_ids --config.first_stage=/tmp/vq
Variants: `tiny` (CPU tests: 32 px, f2 first stage), `demo` (CPU demo: 64 px, f4 first stage -> 16x16x3 latents),
`full` (the published model: 256 px, VQ-f4 -> 64x64x3 latents, LDM UNet 256 channels (1,2,3,4), ~530M params).
Speech front end (data/speech.py): `frontend=logmel` (default) or `frontend=wav2vec2` with
--config.data.wav2vec2_path=/models/hubert-base-ls960 (a local Hugging Face wav2vec2 or HuBERT folder; audio_dim
768 for base models, set --config.model...audio_dim=1024 for large ones).
"""

import ml_collections

from configs import autoencoder
from configs import common

# Shapes per variant: the first stage is the configs/autoencoder.py variant of the same name (`full`: f4), and the
# LDM UNet (models.ldm_unet.LDMUNetConfig; in = 3 latents of embed_dim, context = audio 64 + landmark 64).
_FIRST_STAGE = {'tiny': 'tiny', 'demo': 'demo', 'full': 'f4'}
_UNET = {
    'tiny': dict(model_channels=32, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(1, 2),
                 num_head_channels=16, norm_groups=8),
    'demo': dict(model_channels=64, channel_mult=(1, 2, 2), num_res_blocks=1, attention_resolutions=(1, 2, 4),
                 num_head_channels=32, norm_groups=16),
    'full': dict(model_channels=256, channel_mult=(1, 2, 3, 4), num_res_blocks=2, attention_resolutions=(2, 4, 8),
                 num_head_channels=32, norm_groups=32),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg)
  variant = common.choose(args.get('variant', 'full'), _UNET, what='variant', where='configs/difftalk.py')
  small = variant in common.SMALL_VARIANTS

  config = ml_collections.ConfigDict()
  config.task = 'difftalk'                  # train the DiffTalk denoiser (daetalker_jax/tasks/difftalk.py)
  config.variant = variant
  config.seed = 0

  config.data = ml_collections.ConfigDict()
  config.data.data_dir = ''                 # prepared dataset with landmarks (data_prep.prepare)
  config.data.min_reference_gap = 60        # the reference frame is at least this many frames away (DiffTalk)
  config.data.audio_window = 16             # log-mel steps (10 ms) per video frame window
  config.data.audio_frames = 8              # neighbouring frames the audio smoother weighs (DiffTalk: 8)
  audio_dim = common.add_speech_frontend(config.data, args, where='configs/difftalk.py')

  # The frozen first stage: an `autoencoder` workdir, a diffusers VQModel folder, or an LDM/DiffTalk .ckpt.
  config.first_stage = ''

  config.model = ml_collections.ConfigDict()
  first = autoencoder.get_config(f'variant={_FIRST_STAGE[variant]}').model
  config.model.first_stage = ml_collections.ConfigDict(first.to_dict())
  z = first.embed_dim
  config.model.unet = ml_collections.ConfigDict(dict(
      image_size=first.image_size // 2 ** (len(first.ch_mult) - 1),
      in_channels=3 * z, out_channels=z, transformer_depth=1, context_dim=128, dropout=0.0, **_UNET[variant]))
  # Audio / landmark encoders (models.difftalk.CondConfig): per-frame window conv net + 8-frame smoother, and
  # the landmark MLP on the 39 context points.
  config.model.cond = ml_collections.ConfigDict(dict(
      audio_dim=audio_dim, audio_window=config.data.audio_window, audio_frames=config.data.audio_frames,
      audio_code=64, smoother_dim=32, landmark_code=64))
  config.model.lock()

  # DiffTalk's process: T 1000, betas linspace(sqrt(0.0015), sqrt(0.0195))², eps prediction.
  config.diffusion = ml_collections.ConfigDict()
  config.diffusion.T = 1000
  config.diffusion.beta_start = 0.0015
  config.diffusion.beta_end = 0.0195
  config.diffusion.beta_schedule = 'sqrt_linear'
  config.diffusion.prediction = 'eps'
  config.diffusion.sample_steps = 20 if small else 200   # DDIM steps of the eval grid (DiffTalk: 200)

  config.loss = ml_collections.ConfigDict()
  # Weight of the latent pixels of the mouth box (landmarks 48-67, grown by mouth_margin), 1 = DiffTalk's plain
  # eps MSE. The CPU demo weighs the mouth 5x (docs/RESULTS.md, DiffTalk ablation: 4 held-out clips, r 0.76 ->
  # 0.78, recall 0.68 -> 0.73 with the same first stage).
  config.loss.mouth_weight = 5.0 if variant == 'demo' else 1.0
  config.loss.mouth_margin = 0.25

  config.batch_size = 8 if small else 64
  config.num_train_steps = 300 if small else 400_000
  config.grad_accum_steps = 1
  # Compute dtype: float32 | bfloat16 | auto (bfloat16 on TPU/GPU, float32 on CPU); params and Adam moments stay
  # float32. The CPU variants compute in float32; the full ones in bfloat16 on accelerators.
  config.dtype = 'float32' if small else 'auto'
  config.remat = False

  # DiffTalk: AdamW, lr 1e-6 x 64 (base lr x global batch) = 6.4e-5, grad clip 0.1, EMA 0.9999.
  config.optim = common.optim(
      learning_rate={'tiny': 1e-3, 'demo': 5e-4}.get(variant, 6.4e-5),
      warmup_steps=20 if small else 1_000, b2=0.999, ema_decay=0.99 if small else 0.9999)
  config.optim.grad_clip = 1.0 if small else 0.1

  common.add_mesh(config)
  common.add_cadence(config, small=small, eval_every_steps=100 if small else 10_000)
  config.num_eval_images = 8                # fixed validation examples in the grid
  config.init_from = ''
  config.distributed = False
  return config
