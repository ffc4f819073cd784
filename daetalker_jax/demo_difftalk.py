"""The DiffTalk demo: many synthetic people, then a face the models never saw (`demo --method difftalk`).

  python -m daetalker_jax.demo --method difftalk --out runs/demo_difftalk

Stages (each skipped when its output exists, so an interrupted demo resumes):
  1. synthface clips of N seeded identities     python -m data_prep.synthface --identities N   → OUT/videos
  2. prepared dataset, face crops, split by identity (val/test people are never trained on)
                                                python -m data_prep.prepare --split-by identity → OUT/data
  3. the VQ autoencoder (configs/autoencoder.py:variant=demo)                                    → OUT/autoencoder
  4. DiffTalk (configs/difftalk.py:variant=demo) on the frozen autoencoder                      → OUT/difftalk
  5. a test-split clip (an unseen identity) dubbed with its own speech by the DiffTalk pipeline (inpainting the
     jaw region, one shared x_T), scored against the real frames: the strict mouth metrics (DESIGN.md §7),
     PSNR/SSIM over the frame and the mouth box, the jitter ratio; mouths.png and side_by_side.mp4.
"""

from __future__ import annotations

import pathlib
import time

import numpy as np

PRESET = dict(identities=8, clips=32, seconds=4.0, video_size=128, image_size=64, ae_steps=600, dt_steps=1200,
              sample_steps=20)


def prepare_people(root: pathlib.Path, *, identities: int, clips: int, seconds: float, video_size: int,
                   image_size: int, ae_steps: int, seed: int, ae_overrides: dict[str, str] | None,
                   timings: dict[str, float]) -> tuple[pathlib.Path, pathlib.Path]:
  """Stages 1-3, shared by the generic-identity demos: synthface identities, the dataset split by identity,
  the VQ autoencoder. Returns (data dir, autoencoder workdir)."""
  from configs import autoencoder as ae_config  # pylint: disable=g-import-not-at-top
  from daetalker_jax import demo  # pylint: disable=g-import-not-at-top
  videos, data, ae_dir = root / 'videos', root / 'data', root / 'autoencoder'
  ae_want = demo._config(ae_config, 'demo', ae_overrides or {})  # pylint: disable=protected-access
  stage, train, data_prep = demo._stage, demo._train, demo._data_prep  # pylint: disable=protected-access
  stage('1 synthface', (videos / f'synth_{clips - 1:04d}.mp4').is_file(),
        lambda: data_prep('synthface', '--out', videos, '--clips', clips, '--seconds', seconds,
                          '--size', video_size, '--seed', seed, '--identities', identities, '--overwrite'),
        timings)
  frac = max(0.125, 1.0 / identities + 1e-6)    # one identity each for val and test at least
  stage('2 prepare', (data / 'dataset_info.json').is_file(),
        lambda: data_prep('prepare', '--src', videos, '--out', data, '--size', image_size, '--crop', 'face',
                          '--split-by', 'identity', '--val-fraction', frac, '--test-fraction', frac,
                          '--seed', seed, '--overwrite'), timings)
  stage('3 train autoencoder', demo._has_checkpoint(ae_dir, ae_steps, ae_want),  # pylint: disable=protected-access
        lambda: train(ae_want, data, ae_dir, ae_steps, None), timings)
  return data, ae_dir


def score_clip(pipe, clip: dict, out: pathlib.Path, tag: str = '') -> dict:
  """Dubs a prepared clip with its own speech through `pipe` (set to that clip) and scores it against the real
  crops; writes side_by_side{tag}.mp4 and mouths{tag}.png into `out`."""
  from daetalker_jax.data import contract  # pylint: disable=g-import-not-at-top
  from daetalker_jax.data import video_io  # pylint: disable=g-import-not-at-top
  from daetalker_jax.evaluation import generic  # pylint: disable=g-import-not-at-top
  from daetalker_jax.evaluation import mouth as mouth_metrics  # pylint: disable=g-import-not-at-top
  t0 = time.perf_counter()
  video = pipe(contract.int16_to_float(clip['audio']))
  generated = np.concatenate(list(video.frames))
  seconds = time.perf_counter() - t0
  real = np.asarray(pipe.source.crops)[video.info['source_order']]
  n = len(generated)
  audio = clip['audio'][:n * contract.SAMPLES_PER_FRAME]
  side_path, mouths_path = out / f'side_by_side{tag}.mp4', out / f'mouths{tag}.png'
  with video_io.VideoWriter(side_path, size=(2 * generated.shape[2], generated.shape[1]), audio=audio) as writer:
    for k in range(n):
      writer.write(np.concatenate([generated[k], real[k]], axis=1))
  mouth_metrics.save_mouth_strip(mouths_path, generated, real)
  m = generic.clip_metrics(generated, real, pipe.source.landmarks[video.info['source_order']], audio)
  return dict(side_by_side=str(side_path), mouths=str(mouths_path), clip_id=clip['clip_id'],
              identity=clip.get('identity', ''), frames=n, **m, generate_s=seconds, generate_fps=n / seconds,
              info={k: v for k, v in video.info.items() if k != 'source_order'})


def run(out: str, *, identities: int = 8, clips: int = 32, seconds: float = 4.0, video_size: int = 128,
        image_size: int = 64, ae_steps: int = 600, dt_steps: int = 1200, sample_steps: int = 20, seed: int = 0,
        ae_overrides: dict[str, str] | None = None, dt_overrides: dict[str, str] | None = None) -> dict:
  """Runs every stage into `out`; returns paths, timings and the metrics of the unseen identity's clip."""
  from configs import difftalk as dt_config  # pylint: disable=g-import-not-at-top
  from daetalker_jax import demo  # pylint: disable=g-import-not-at-top
  from daetalker_jax.data import dataset  # pylint: disable=g-import-not-at-top
  from daetalker_jax.inference import difftalk_pipeline as dtp  # pylint: disable=g-import-not-at-top

  root = pathlib.Path(out)
  root.mkdir(parents=True, exist_ok=True)
  timings: dict[str, float] = {}
  t_start = time.perf_counter()
  data, ae_dir = prepare_people(root, identities=identities, clips=clips, seconds=seconds, video_size=video_size,
                                image_size=image_size, ae_steps=ae_steps, seed=seed, ae_overrides=ae_overrides,
                                timings=timings)
  dt_dir = root / 'difftalk'
  dt_want = demo._config(dt_config, 'demo', dt_overrides or {})  # pylint: disable=protected-access
  dt_want.first_stage = str(ae_dir)
  demo._stage('4 train DiffTalk', demo._has_checkpoint(dt_dir, dt_steps, dt_want),  # pylint: disable=protected-access
              lambda: demo._train(dt_want, data, dt_dir, dt_steps, None), timings)  # pylint: disable=protected-access

  # 5. An unseen identity's clip, dubbed with its own speech.
  clip = next(iter(dataset.iterate_clips(data, 'test')))
  pipe = dtp.DiffTalkPipeline(str(dt_dir), dtp.DiffTalkOptions(clip=clip['clip_id'], data_dir=str(data),
                                                               steps=sample_steps, batch=16))
  result = score_clip(pipe, clip, root)
  result.pop('info')
  timings['5 generate'] = result.pop('generate_s')
  return dict(result, total_s=time.perf_counter() - t_start, timings=timings)


def summary(res: dict) -> str:
  return '\n'.join([
      f'[demo] unseen identity {res["identity"]!r}, clip {res["clip_id"]}, {res["frames"]} frames',
      f'[demo] strict mouth r: {res["strict_r"]:.3f} at lag 0, {res["strict_r_best"]:.3f} at the best lag '
      f'{res["strict_best_lag"]:+d}; open-mouth recall {res["open_recall"]:.2f} of {res["num_open_frames"]} open '
      f'frames; amplitude ratio {res["amplitude_ratio"]:.2f}',
      f'[demo] teeth recall {res["teeth_recall"]:.2f}; closed in silence {res["closed_in_silence"]:.2f}; '
      f'soft r (secondary) {res["soft_r"]:.2f}',
      f'[demo] PSNR {res["psnr"]:.2f} dB (mouth box {res["psnr_mouth"]:.2f} dB), SSIM {res["ssim"]:.3f}, '
      f'jitter ratio {res["jitter_ratio"]:.2f} (generated / real frame-to-frame change); lip colour error '
      f'{res["colour_upper_lip"]:.0f} / {res["colour_lower_lip"]:.0f} RGB (upper / lower)',
      f'[demo] mouths: {res["mouths"]} (generated over real); side by side: {res["side_by_side"]}',
  ])
