"""Landmark diffusion, Stage B: the TalkFormer renderer, then the end-to-end fine-tune (docs/LANDMARK.md).

Run (after the autoencoder, configs/autoencoder.py, and Stage A, configs/landmarks.py):
  python -m daetalker_jax.main --config=configs/talkformer.py:variant=demo --workdir=/tmp/talkformer \
      --config.data.data_dir=/tmp/synth_ids --config.first_stage=/tmp/vq --config.stage_a_from=/tmp/landmarks
  python -m daetalker_jax.main --config=configs/talkformer.py:variant=demo,stage=e2e --workdir=/tmp/talkformer_e2e \
      --config.data.data_dir=/tmp/synth_ids --config.init_from=/tmp/talkformer
`stage=renderer` (default) trains the renderer on ground-truth landmarks with Stage A frozen; `stage=e2e` trains
both, the diffusion loss reaching Stage A through the predicted landmarks (config.loss.e2e_weight) beside
Stage A's own landmark loss (config.loss.landmark_weight).
Variants: `tiny` (CPU tests: 32 px, f2), `demo` (CPU demo: 64 px, f4 -> 16x16x3 latents), `full` (256 px, VQ-f4 ->
64x64x3 latents, TalkFormer blocks at 32², 16², 8² and the middle). `concat_reference=1` also feeds the reference
latent to the UNet input (the default of `demo` only; `concat_reference=0` turns it off).
Speech front end (data/speech.py; Stage A's, the same as in its landmarks workdir): `frontend=logmel` (default)
or `frontend=wav2vec2` with --config.data.wav2vec2_path=/models/hubert-base-ls960 (a local Hugging Face wav2vec2 or
HuBERT folder; audio_dim 768 for base models, set --config.model...audio_dim=1024 for large ones).
"""

import ml_collections

from configs import autoencoder
from configs import common
from configs import landmarks

_FIRST_STAGE = {'tiny': 'tiny', 'demo': 'demo', 'full': 'f4'}   # configs/autoencoder.py variant of each
_UNET = {
    'tiny': dict(model_channels=32, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(1, 2),
                 norm_groups=8),
    'demo': dict(model_channels=64, channel_mult=(1, 2, 2), num_res_blocks=1, attention_resolutions=(1, 2, 4),
                 norm_groups=16),
    'full': dict(model_channels=256, channel_mult=(1, 2, 3, 4), num_res_blocks=2, attention_resolutions=(2, 4, 8),
                 norm_groups=32),
}
_TALKFORMER = {
    'tiny': dict(token_dim=32, fourier_bands=4, ref_channels=16, head_channels=16),
    'demo': dict(token_dim=64, fourier_bands=6, ref_channels=32, head_channels=32),
    'full': dict(token_dim=128, fourier_bands=8, ref_channels=128, head_channels=32),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg)
  variant = common.choose(args.get('variant', 'full'), _UNET, what='variant', where='configs/talkformer.py')
  stage = common.choose(args.get('stage', 'renderer'), ('renderer', 'e2e'), what='stage',
                        where='configs/talkformer.py')
  small = variant in common.SMALL_VARIANTS
  stage_a = landmarks.get_config(f'variant={variant},frontend={args.get("frontend", "logmel")}')

  config = ml_collections.ConfigDict()
  config.task = 'talkformer'                # daetalker_jax/tasks/talkformer.py
  config.variant = variant
  config.stage = stage
  config.seed = 0

  config.data = ml_collections.ConfigDict()
  config.data.data_dir = ''                 # prepared dataset with landmarks (data_prep.prepare)
  config.data.min_reference_gap = 60        # the reference frame is at least this many frames away
  config.data.audio_window = stage_a.data.audio_window
  common.add_speech_frontend(config.data, args, where='configs/talkformer.py')   # Stage A's (must match its workdir)

  config.first_stage = ''                   # the frozen VQ autoencoder (as configs/difftalk.py); latent space only
  config.stage_a_from = ''                  # a `landmarks` workdir: Stage A's weights at a fresh start

  first = autoencoder.get_config(f'variant={_FIRST_STAGE[variant]}').model
  config.model = ml_collections.ConfigDict()
  config.model.first_stage = ml_collections.ConfigDict(first.to_dict())
  config.model.stage_a = ml_collections.ConfigDict(stage_a.model.stage_a.to_dict())
  # space: latent (a frozen VQ first stage; the default) | pixel (denoise the image itself, no autoencoder).
  # concat_reference: the reference latent also joins the UNet input (DiffTalk's way), beside the warping attention;
  # on for the CPU demo (docs/RESULTS.md, landmark renderer table: 700 renderer steps, r 0.39 -> 0.65, closed in
  # silence 0.01 -> 0.62, mouth-box PSNR +2.7 dB). `concat_reference=0|1` sets it for any variant.
  concat = common.choose(args.get('concat_reference', '1' if variant == 'demo' else '0'), ('0', '1'),
                         what='concat_reference', where='configs/talkformer.py') == '1'
  config.model.talkformer = ml_collections.ConfigDict(dict(space='latent', offset_scale=4.0, concat_reference=concat,
                                                           **_TALKFORMER[variant]))
  z, factor = first.embed_dim, 2 ** (len(first.ch_mult) - 1)
  inputs = 3 if config.model.talkformer.concat_reference else 2    # [z_t, masked(, reference)]
  config.model.unet = ml_collections.ConfigDict(dict(
      image_size=first.image_size // factor, in_channels=inputs * z, out_channels=z, num_head_channels=32,
      transformer_depth=1, context_dim=_TALKFORMER[variant]['token_dim'], dropout=0.0, **_UNET[variant]))

  # DiffTalk's process (configs/difftalk.py): T 1000, sqrt-linear betas, eps prediction.
  config.diffusion = ml_collections.ConfigDict()
  config.diffusion.T = 1000
  config.diffusion.beta_start = 0.0015
  config.diffusion.beta_end = 0.0195
  config.diffusion.beta_schedule = 'sqrt_linear'
  config.diffusion.prediction = 'eps'
  config.diffusion.sample_steps = 20 if small else 200
  # Mean-mouth guidance of generation (inference/landmark_pipeline.py; 1 = off): the renderer's eps for the
  # frame's landmarks pushed away from its eps for the clip's average mouth. Sampling only: changing it reuses a
  # trained model. The CPU demo: 2 (docs/RESULTS.md, mean-mouth guidance table: recall 0.40 -> 0.62, strict r
  # 0.65 -> 0.71, amplitude 0.29 -> 0.50 on the unseen person's 4 clips; 2.5 and 3 scored lower).
  config.diffusion.guidance = 2.0 if variant == 'demo' else 1.0
  # The landmark track of generation (inference/landmark_pipeline.py), sampling only like guidance: Stage A's
  # departure from the clip's mean mouth times motion_scale (1 = as predicted). The CPU demo: 1.3 (docs/RESULTS.md,
  # session 11 table: with the 1000-step renderer recall 0.58 -> 0.70, amplitude 0.47 -> 0.54, the same as the
  # true track's 0.69 / 0.52: Stage A's openings are ~1/1.3 of the real ones).
  config.track = ml_collections.ConfigDict()
  config.track.motion_scale = 1.3 if variant == 'demo' else 1.0

  config.loss = ml_collections.ConfigDict()
  # Weight of the mouth box's latent pixels (1: plain eps MSE); the CPU demo takes DiffTalk's demo weight, 5
  # (configs/difftalk.py).
  config.loss.mouth_weight = 5.0 if variant == 'demo' else 1.0
  config.loss.mouth_margin = 0.25
  config.loss.end_to_end = stage == 'e2e'   # the renderer sees Stage A's landmarks, and its loss reaches Stage A
  config.loss.e2e_weight = 1.0              # factor on the diffusion gradient that reaches Stage A
  config.loss.landmark_weight = 1.0         # Stage A's own L1 + velocity loss, kept in the end-to-end stage
  config.loss.velocity_weight = 1.0
  config.eval_landmarks = 'predicted'       # landmarks of the eval samples: predicted (Stage A) | truth

  config.batch_size = 8 if small else 64
  config.num_train_steps = 300 if small else 400_000
  config.grad_accum_steps = 1
  # Compute dtype: float32 | bfloat16 | auto (bfloat16 on TPU/GPU, float32 on CPU); params and Adam moments stay
  # float32. The CPU variants compute in float32; the full ones in bfloat16 on accelerators.
  config.dtype = 'float32' if small else 'auto'
  config.remat = False
  lr = {'tiny': 1e-3, 'demo': 5e-4}.get(variant, 6.4e-5)
  config.optim = common.optim(learning_rate=lr if stage == 'renderer' else lr / 2,
                              warmup_steps=20 if small else 1_000, b2=0.999, ema_decay=0.99 if small else 0.9999)
  config.optim.grad_clip = 1.0 if small else 0.1
  # Stage A is frozen while the renderer learns from ground-truth landmarks.
  config.optim.frozen = ('stage_a',) if stage == 'renderer' else ()

  common.add_mesh(config)
  common.add_cadence(config, small=small, eval_every_steps=100 if small else 10_000)
  config.num_eval_images = 8
  config.init_from = ''                     # stage=e2e: the renderer workdir to start from
  config.distributed = False
  return config
