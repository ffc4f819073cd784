"""The end-to-end demo on the synthetic talking face, small enough for a laptop CPU (target < 20 min, 2 cores).

  python -m daetalker_jax.demo --out runs/demo

Stages (each is skipped when its output already exists, so an interrupted demo resumes):
  1. synthface clips (mp4 + sidecar)            data_prep.synthface.generate_dataset   → OUT/videos
  2. prepared TFDS dataset, split by clip        data_prep.prepare.prepare               → OUT/data
  3. DAE training (configs/dae.py:variant=...)   train.train_and_evaluate                → OUT/dae
  4. latent extraction                           extract.extract_latents                 → OUT/data/latents/dae
  5. speech2latent training (configs/s2l.py)     train.train_and_evaluate                → OUT/s2l
  6. generation from a held-out (test split) clip's audio, with that clip's ground-truth pose
                                                 generate.generate                       → OUT/generated.mp4
  7. side-by-side video (generated | real) with the audio, and how well the mouth follows the speech:
     Pearson r between the mouth opening `measure_frame` reads from the generated and from the real frames
     (and at the best lag), the fraction of silent frames with a closed mouth, PSNR and SSIM.
                                                                                         → OUT/side_by_side.mp4
The DAE is the 64 px `demo` variant, which predicts v rather than eps (configs/dae.py, docs/TRAINING.md): in
a CPU budget that is what makes one shared noise image decode to a clean face. On a 2-core CPU the defaults
take ~17 min and give lip-sync r ~0.8 (docs/RESULTS.md). Raise --dae-steps / --s2l-steps / --clips for
better faces.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

import numpy as np


def _stage(name: str, done: bool, fn, timings: dict[str, float]) -> None:
  if done:
    print(f'[demo] {name}: already done, skipped')
    return
  print(f'[demo] {name} ...', flush=True)
  t0 = time.perf_counter()
  fn()
  timings[name] = time.perf_counter() - t0
  print(f'[demo] {name}: {timings[name]:.1f} s', flush=True)


class DemoError(ValueError):
  """A demo folder that cannot be resumed (its models were trained with other settings)."""


def _plain(block) -> object:
  return json.loads(json.dumps(block.to_dict() if hasattr(block, 'to_dict') else block))  # tuples -> lists


def _has_checkpoint(workdir: pathlib.Path, steps: int, want=None) -> bool:
  """Whether `workdir` holds a checkpoint of at least `steps` steps; with `want` (the config the demo
  would train), also that its model/diffusion settings are those, so a stale folder is not reused."""
  from daetalker_jax import checkpoint  # pylint: disable=g-import-not-at-top
  if not os.path.isdir(checkpoint.checkpoint_dir(str(workdir))):
    return False
  ckpt = checkpoint.Checkpointer(str(workdir), read_only=True, async_save=False)
  try:
    latest = ckpt.latest_step()
    if latest is None or latest < steps:
      return False
    if want is not None:
      got = checkpoint.config_from_meta(ckpt.restore_meta(latest))
      for block in ('model', 'diffusion'):
        if block in want and _plain(got.get(block, {})) != _plain(want[block]):
          raise DemoError(f'{workdir} holds a model trained with other {block} settings than '
                          f'{want.variant!r} now uses; delete it (or pass another --out) to retrain')
    return True
  finally:
    ckpt.close()


def _train(config_module, variant: str, data_dir: pathlib.Path, workdir: pathlib.Path, steps: int,
           batch_size: int | None) -> None:
  from daetalker_jax import train  # pylint: disable=g-import-not-at-top
  config = config_module.get_config(f'variant={variant}')
  config.data.data_dir = str(data_dir)
  config.num_train_steps = steps
  config.checkpoint_every_steps = steps
  config.eval_every_steps = steps
  config.log_every_steps = max(1, steps // 10)
  config.optim.warmup_steps = min(config.optim.warmup_steps, max(1, steps // 10))
  if batch_size:
    config.batch_size = batch_size
  if hasattr(config.data, 'window'):
    config.data.window = min(config.data.window, 50)
  train.train_and_evaluate(config, str(workdir))


def run_demo(out: str, *, clips: int = 16, seconds: float = 5.0, video_size: int = 128, dae_variant: str = 'demo',
             dae_steps: int = 500, s2l_variant: str = 'demo', s2l_steps: int = 300, sample_steps: int = 10,
             batch_size: int | None = None, seed: int = 0, noise: str = 'seed:0') -> dict:
  """Runs every stage into `out`; returns paths, timings and the mouth-opening correlation."""
  from configs import dae as dae_config  # pylint: disable=g-import-not-at-top
  from configs import s2l as s2l_config  # pylint: disable=g-import-not-at-top
  from data_prep import prepare  # pylint: disable=g-import-not-at-top
  from data_prep import synthface  # pylint: disable=g-import-not-at-top
  from daetalker_jax import extract  # pylint: disable=g-import-not-at-top
  from daetalker_jax import generate  # pylint: disable=g-import-not-at-top
  from daetalker_jax.data import dataset  # pylint: disable=g-import-not-at-top
  from daetalker_jax.data import video_io  # pylint: disable=g-import-not-at-top

  root = pathlib.Path(out)
  root.mkdir(parents=True, exist_ok=True)
  videos, data, dae_dir, s2l_dir = root / 'videos', root / 'data', root / 'dae', root / 's2l'
  image_size = int(dae_config.get_config(f'variant={dae_variant}').model.image_size)
  timings: dict[str, float] = {}
  t_start = time.perf_counter()

  _stage('1 synthface', (videos / f'synth_{clips - 1:04d}.mp4').is_file(),
         lambda: synthface.generate_dataset(videos, clips=clips, seconds=seconds, size=video_size, seed=seed,
                                            overwrite=True), timings)
  # At least one clip in each of val and test.
  frac = max(0.1, 1.0 / clips + 1e-6)
  _stage('2 prepare', (data / 'dataset_info.json').is_file(),
         lambda: prepare.prepare(videos, data, size=image_size, crop='none', val_fraction=frac,
                                 test_fraction=frac, seed=seed, overwrite=True), timings)
  dae_want = dae_config.get_config(f'variant={dae_variant}')
  s2l_want = s2l_config.get_config(f'variant={s2l_variant}')
  _stage('3 train DAE', _has_checkpoint(dae_dir, dae_steps, dae_want),
         lambda: _train(dae_config, dae_variant, data, dae_dir, dae_steps, batch_size), timings)
  _stage('4 extract latents', (dataset.latents_dir(data, 'dae') / 'stats.json').is_file(),
         lambda: extract.extract_latents(str(dae_dir), str(data), name='dae', batch_size=32), timings)
  _stage('5 train speech2latent', _has_checkpoint(s2l_dir, s2l_steps, s2l_want),
         lambda: _train(s2l_config, s2l_variant, data, s2l_dir, s2l_steps, batch_size), timings)

  # 6. Generation from a held-out clip's audio (the test split was never trained on).
  clip = next(iter(dataset.iterate_clips(data, 'test')))
  clip_id = clip['clip_id']
  wav = root / f'heldout_{clip_id}.wav'
  import soundfile as sf  # pylint: disable=g-import-not-at-top
  sf.write(str(wav), clip['audio'], 16000, subtype='PCM_16')
  generated_path = root / 'generated.mp4'
  frames: list[np.ndarray] = []
  if noise.startswith('invert'):   # DDIM-invert the first frame of the first train clip: one shared x_T
    noise = f"invert:{dataset.clip_ids(data, 'train')[0]}:0"
  opts = generate.Options(steps=sample_steps, noise=noise, pose=f'reference:{clip_id}', data_dir=str(data),
                          batch=16)
  t0 = time.perf_counter()
  summary = generate.generate(str(wav), str(dae_dir), str(s2l_dir), str(generated_path), opts,
                              frames_out=frames.append)
  timings['6 generate'] = time.perf_counter() - t0
  generated = np.concatenate(frames)                                       # (N, S, S, 3), a short clip
  real = clip['images']                                                    # (N', S, S, 3)
  n = min(len(generated), len(real))

  # 7. Side by side (generated | real) with the clip's audio, and the lip-sync number.
  side_path = root / 'side_by_side.mp4'
  with video_io.VideoWriter(side_path, size=(2 * image_size, image_size),
                            audio=clip['audio'][:n * video_io.SAMPLES_PER_FRAME]) as writer:
    for k in range(n):
      writer.write(np.concatenate([generated[k], real[k]], axis=1))
  from daetalker_jax import evaluate  # pylint: disable=g-import-not-at-top
  m = evaluate.video_metrics(real[:n], generated[:n], clip['audio'][:n * video_io.SAMPLES_PER_FRAME],
                             kind='synthface')
  result = dict(generated=str(generated_path), side_by_side=str(side_path), clip_id=clip_id, frames=n,
                mouth_open_pearson_r=m['lip_sync_r'], lip_sync_lag=m['lip_sync_lag'],
                lip_sync_r_best_lag=m['lip_sync_r_best_lag'],
                mouth_closed_in_silence=m['mouth_closed_in_silence'],
                mouth_closed_in_silence_real=m['mouth_closed_in_silence_real'], psnr_db=m['psnr'],
                ssim=m['ssim'], generate_fps=summary['fps'], total_s=time.perf_counter() - t_start,
                timings=timings)
  return result


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog='python -m daetalker_jax.demo', description=__doc__.split('\n\n')[0])
  p.add_argument('--out', default='runs/demo', help='folder for every stage (default runs/demo)')
  p.add_argument('--clips', type=int, default=16, help='synthface clips (default 16)')
  p.add_argument('--seconds', type=float, default=5.0, help='seconds per clip (default 5)')
  p.add_argument('--video-size', type=int, default=128, help='synthface frame size (default 128)')
  p.add_argument('--dae-variant', default='demo', help='configs/dae.py variant (default demo, 64 px)')
  p.add_argument('--dae-steps', type=int, default=500, help='DAE training steps (default 500)')
  p.add_argument('--s2l-variant', default='demo', help='configs/s2l.py variant (default demo)')
  p.add_argument('--s2l-steps', type=int, default=300, help='speech2latent training steps (default 300)')
  p.add_argument('--sample-steps', type=int, default=10, help='DDIM steps for generation (default 10)')
  p.add_argument('--noise', default='seed:0',
                 help="shared x_T: 'seed:N', or 'invert' (DDIM inversion of a training frame; keeps its detail)")
  p.add_argument('--batch-size', type=int, default=0, help='training batch override (0: config default)')
  args = p.parse_args(argv)
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  absl_logging.set_verbosity(absl_logging.INFO)   # training progress (loss, steps/s, ETA) on stderr
  if args.clips < 3:
    p.error('--clips must be >= 3 (train, val and test each need a clip)')
  try:
    res = run_demo(args.out, clips=args.clips, seconds=args.seconds, video_size=args.video_size,
                   dae_variant=args.dae_variant, dae_steps=args.dae_steps, s2l_variant=args.s2l_variant,
                   s2l_steps=args.s2l_steps, sample_steps=args.sample_steps, batch_size=args.batch_size or None,
                   noise=args.noise)
  except DemoError as e:
    print(f'[demo] error: {e}', file=sys.stderr)
    return 2
  print('[demo] timings: ' + ', '.join(f'{k} {v:.0f} s' for k, v in res['timings'].items()))
  print(f'[demo] generated video:   {res["generated"]}')
  print(f'[demo] side by side:      {res["side_by_side"]}  (generated | real, held-out clip {res["clip_id"]})')
  print(f'[demo] mouth opening r:   {res["mouth_open_pearson_r"]:.3f} over {res["frames"]} frames '
        f'(measure_frame on generated vs real; best lag {res["lip_sync_lag"]:+d} frames: '
        f'r {res["lip_sync_r_best_lag"]:.3f})')
  print(f'[demo] mouth closed in silence: {res["mouth_closed_in_silence"]:.2f} of the silent frames '
        f'(real video: {res["mouth_closed_in_silence_real"]:.2f})')
  print(f'[demo] PSNR {res["psnr_db"]:.2f} dB, SSIM {res["ssim"]:.3f} (generated vs real frames)')
  print(f'[demo] total {res["total_s"] / 60:.1f} min')
  return 0


if __name__ == '__main__':
  sys.exit(main())
