"""The DiffTalk demo: many synthetic people, then a face the models never saw (`demo --method difftalk`).

  python -m daetalker_jax.demo --method difftalk --out runs/demo_difftalk

Stages (each skipped when its output exists, so an interrupted demo resumes):
  1. synthface clips of N seeded identities     python -m data_prep.synthface --identities N   → OUT/videos
  2. prepared dataset, face crops, split by identity (val/test people are never trained on)
                                                python -m data_prep.prepare --split-by identity → OUT/data
  3. the VQ autoencoder (configs/autoencoder.py:variant=demo)                                    → OUT/autoencoder
  4. DiffTalk (configs/difftalk.py:variant=demo) on the frozen autoencoder                      → OUT/difftalk
  5. the test-split clips (an unseen identity; the first `heldout_clips`, 4: all of the preset's) dubbed with
     their own speech by the DiffTalk pipeline (inpainting the jaw region, one shared x_T), scored against the
     real frames: the strict mouth metrics (docs/EVALUATION.md), PSNR/SSIM over the frame and the mouth box, the
     jitter ratio, identity colours. The first clip in detail (mouths.png, side_by_side.mp4), every clip in
     heldout.json (+ mouths_<clip>.png), and their frame-weighted mean: the numbers the targets are read on.
"""

from __future__ import annotations

import itertools
import pathlib
import time

import numpy as np

PRESET = dict(identities=8, clips=32, seconds=4.0, video_size=128, image_size=64, ae_steps=450, dt_steps=1200,
              sample_steps=20, heldout_clips=4)


def prepare_people(root: pathlib.Path, *, identities: int, clips: int, seconds: float, video_size: int,
                   image_size: int, ae_steps: int, seed: int, ae_overrides: dict[str, str] | None,
                   timings: dict[str, float]) -> tuple[pathlib.Path, pathlib.Path]:
  """Stages 1-3, shared by the generic-identity demos: synthface identities, the dataset split by identity,
  the VQ autoencoder. Returns (data dir, autoencoder workdir)."""
  from configs import autoencoder as ae_config  # pylint: disable=g-import-not-at-top
  from daetalker_jax import demo  # pylint: disable=g-import-not-at-top
  videos, data, ae_dir = root / 'videos', root / 'data', root / 'autoencoder'
  ae_want = demo._config(ae_config, 'demo', ae_overrides or {})  # pylint: disable=protected-access
  ae_defaults = demo._config(ae_config, 'demo', {})  # pylint: disable=protected-access
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
  has_ae = demo._has_checkpoint(ae_dir, ae_steps, ae_want, ae_defaults)  # pylint: disable=protected-access
  stage('3 train autoencoder', has_ae,
        lambda: train(ae_want, data, ae_dir, ae_steps, None), timings)
  return data, ae_dir


def score_clip(pipe, clip: dict, out: pathlib.Path, tag: str = '', colours: dict | None = None) -> dict:
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
  m = generic.clip_metrics(generated, real, pipe.source.landmarks[video.info['source_order']], audio,
                           (colours or {}).get(clip.get('identity', '')))
  return dict(side_by_side=str(side_path), mouths=str(mouths_path), clip_id=clip['clip_id'],
              identity=clip.get('identity', ''), frames=n, **m, generate_s=seconds, generate_fps=n / seconds,
              info={k: v for k, v in video.info.items() if k != 'source_order'})


def score_heldout(pipe, first: dict, clips: list[dict], out: pathlib.Path, colours: dict | None = None) -> dict:
  """Scores `clips` after the first (already scored by `score_clip`: `first`) through `pipe` and returns the
  frame-weighted mean over all of them with the per-clip metrics; writes out/heldout.json."""
  from daetalker_jax.evaluation import generic  # pylint: disable=g-import-not-at-top
  from daetalker_jax.evaluation import report  # pylint: disable=g-import-not-at-top
  path = out / 'heldout.json'
  head = {k: v for k, v in first.items() if isinstance(v, (int, float, str))}
  head['num_frames'] = head.pop('frames')
  per_clip = [head]
  if len(clips) > 1:
    per_clip_lines = lambda line: print(line) if line.startswith('  ') else None   # the mean is the summary's
    rest = generic.evaluate_clips(pipe, clips[1:], str(path), say=per_clip_lines, colours=colours)
    per_clip += rest['clips']
  res = dict(generic.summarise(per_clip), num_clips=len(per_clip), num_frames=sum(c['num_frames'] for c in per_clip),
             clips=[c['clip_id'] for c in per_clip])
  report.write_json(str(path), {'summary': res, 'clips': per_clip})
  return res


def run(out: str, *, identities: int = 8, clips: int = 32, seconds: float = 4.0, video_size: int = 128,
        image_size: int = 64, ae_steps: int = 450, dt_steps: int = 1200, sample_steps: int = 20,
        heldout_clips: int = 4, seed: int = 0, ae_overrides: dict[str, str] | None = None,
        dt_overrides: dict[str, str] | None = None) -> dict:
  """Runs every stage into `out`; returns paths, timings and the metrics of the unseen identity's clips."""
  from configs import difftalk as dt_config  # pylint: disable=g-import-not-at-top
  from daetalker_jax import demo  # pylint: disable=g-import-not-at-top
  from daetalker_jax.evaluation import generic  # pylint: disable=g-import-not-at-top
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
              lambda: demo._train(dt_want, data, dt_dir, dt_steps, None, evaluate=False), timings)  # pylint: disable=protected-access

  # 5. An unseen identity's clips, dubbed with their own speech.
  t0 = time.perf_counter()
  test = heldout(data, heldout_clips)
  pipe = dtp.DiffTalkPipeline(str(dt_dir), dtp.DiffTalkOptions(clip=test[0]['clip_id'], data_dir=str(data),
                                                               steps=sample_steps, batch=50))
  colours = generic.identity_colours_of(str(data))
  result = score_clip(pipe, test[0], root, colours=colours)
  result.pop('info')
  result.pop('generate_s')
  result['heldout'] = score_heldout(pipe, result, test, root, colours)
  timings['5 generate and score'] = time.perf_counter() - t0
  return dict(result, total_s=time.perf_counter() - t_start, timings=timings)


def heldout(data: pathlib.Path, count: int) -> list[dict]:
  """The first `count` clips of the test split (identities never trained on)."""
  from daetalker_jax.data import dataset  # pylint: disable=g-import-not-at-top
  if count < 1:
    raise ValueError(f'heldout_clips={count}: must be >= 1')
  return list(itertools.islice(dataset.iterate_clips(data, 'test'), count))


def heldout_line(h: dict) -> str:
  """The headline: the frame-weighted mean over the unseen identity's clips."""
  return (f'[demo] all {h["num_clips"]} clips of the unseen identity ({h["num_frames"]} frames): strict r '
          f'{h["strict_r"]:.3f}, open-mouth recall {h["open_recall"]:.2f}, amplitude ratio {h["amplitude_ratio"]:.2f}, '
          f'closed in silence {h["closed_in_silence"]:.2f}, PSNR {h["psnr"]:.2f} dB (mouth box {h["psnr_mouth"]:.2f}), '
          f'SSIM {h["ssim"]:.3f}, jitter ratio {h["jitter_ratio"]:.2f}')


def summary(res: dict) -> str:
  from daetalker_jax.evaluation import generic  # pylint: disable=g-import-not-at-top
  lines = [heldout_line(res['heldout'])] if 'heldout' in res else []
  if 'identity_skin' in res.get('heldout', {}):
    lines.append('[demo] ' + generic.truth_line(res['heldout']))
  return '\n'.join(lines + [
      f'[demo] in detail: unseen identity {res["identity"]!r}, clip {res["clip_id"]}, {res["frames"]} frames',
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
