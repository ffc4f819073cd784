"""The landmark-diffusion demo: many synthetic people, then a face the models never saw (`demo --method landmark`).

  python -m daetalker_jax.demo --method landmark --out runs/demo_landmark

Stages (each skipped when its output exists, so an interrupted demo resumes):
  1-3. synthface identities, the dataset split by identity, the VQ autoencoder (as the DiffTalk demo,
       demo_difftalk.prepare_people; with the mouth box weighted 10x: AE_SETTINGS) → OUT/videos, OUT/data,
       OUT/autoencoder
  4. Stage A: audio → lip/jaw landmarks (configs/landmarks.py:variant=demo)                  → OUT/landmarks
  5. Stage B: the TalkFormer renderer on ground-truth landmarks, Stage A frozen
     (configs/talkformer.py:variant=demo)                                                   → OUT/renderer
  6. both stages end to end from stage 5 (configs/talkformer.py:variant=demo,stage=e2e)     → OUT/talkformer
  7. the test-split clips (an unseen identity; the first `heldout_clips`, 4) dubbed with their own speech by the
     end-to-end model (with the config's mean-mouth guidance, 2, and track motion scale, 1.3: `demo --guidance W
     --motion-scale S` override them), scored
     against the real frames (strict mouth metrics, PSNR/SSIM, LMD of the predicted
     landmarks, jitter): mouths.png, side_by_side.mp4 (first clip), heldout.json (every clip and their
     frame-weighted mean: the headline). With `ablation` (`demo --ablation`), the first clip also by the stage-5
     model (the two stages trained apart): mouths_apart.png, side_by_side_apart.mp4. That comparison is not a fair
     ablation (the apart model has had fewer renderer steps); docs/RESULTS.md has the fair one.
"""

from __future__ import annotations

import pathlib
import time

import numpy as np

# The first stage's settings this demo trains with (on top of configs/autoencoder.py:demo; --set ae.K=V wins): the
# mouth box weighted 10x in the reconstruction means. The plain autoencoder drew every open mouth of the unseen
# person at half its area, and every renderer decoded by it with it (docs/RESULTS.md, session 12: recall 0.70 ->
# 0.91). DiffTalk's demo keeps the plain first stage (its recall fell to 0.40 on this one).
AE_SETTINGS = {'loss.mouth_weight': '10.0'}

PRESET = dict(identities=8, clips=32, seconds=4.0, video_size=128, image_size=64, ae_steps=450, a_steps=1500,
              b_steps=1000, e2e_steps=100, sample_steps=20, heldout_clips=4, ablation=False)


def run(out: str, *, identities: int = 8, clips: int = 32, seconds: float = 4.0, video_size: int = 128,
        image_size: int = 64, ae_steps: int = 450, a_steps: int = 1500, b_steps: int = 1000, e2e_steps: int = 100,
        sample_steps: int = 20, heldout_clips: int = 4, ablation: bool = False, seed: int = 0,
        guidance: float | None = None, motion_scale: float | None = None,
        ae_overrides: dict[str, str] | None = None, a_overrides: dict[str, str] | None = None,
        b_overrides: dict[str, str] | None = None) -> dict:
  """Runs every stage into `out`; returns paths, timings and the metrics of both models on the unseen clips."""
  from configs import landmarks as lm_config  # pylint: disable=g-import-not-at-top
  from configs import talkformer as tf_config  # pylint: disable=g-import-not-at-top
  from daetalker_jax import demo  # pylint: disable=g-import-not-at-top
  from daetalker_jax import demo_difftalk  # pylint: disable=g-import-not-at-top

  root = pathlib.Path(out)
  root.mkdir(parents=True, exist_ok=True)
  timings: dict[str, float] = {}
  t_start = time.perf_counter()
  data, ae_dir = demo_difftalk.prepare_people(
      root, identities=identities, clips=clips, seconds=seconds, video_size=video_size, image_size=image_size,
      ae_steps=ae_steps, seed=seed, ae_overrides={**AE_SETTINGS, **(ae_overrides or {})}, timings=timings)
  a_dir, b_dir, e2e_dir = root / 'landmarks', root / 'renderer', root / 'talkformer'
  stage, train, has = demo._stage, demo._train, demo._has_checkpoint  # pylint: disable=protected-access
  a_want = demo._config(lm_config, 'demo', a_overrides or {})  # pylint: disable=protected-access
  a_want.data.image_size = 16                   # Stage A reads no pixels: keep the decoded clips small
  stage('4 train Stage A (landmarks)', has(a_dir, a_steps, a_want), lambda: train(a_want, data, a_dir, a_steps, None),
        timings)
  b_want = demo._config(tf_config, 'demo', b_overrides or {})  # pylint: disable=protected-access
  b_want.first_stage, b_want.stage_a_from = str(ae_dir), str(a_dir)
  stage('5 train Stage B (renderer)', has(b_dir, b_steps, b_want),
        lambda: train(b_want, data, b_dir, b_steps, None, evaluate=False), timings)
  e_want = demo._config(tf_config, 'demo,stage=e2e', b_overrides or {})  # pylint: disable=protected-access
  e_want.init_from = str(b_dir)
  stage('6 train end to end', has(e2e_dir, e2e_steps, e_want),
        lambda: train(e_want, data, e2e_dir, e2e_steps, None, evaluate=False), timings)

  if guidance is None:    # the sampling fields of the config the demo trains, also for a reused checkpoint
    guidance = float(e_want.diffusion.guidance)
  if motion_scale is None:
    motion_scale = float(e_want.track.motion_scale)
  # 7. An unseen identity's clips, dubbed with their own speech (the first by both models).
  from daetalker_jax.inference import landmark_pipeline as lmp  # pylint: disable=g-import-not-at-top
  from daetalker_jax.evaluation import generic  # pylint: disable=g-import-not-at-top
  test = demo_difftalk.heldout(data, heldout_clips)
  clip, colours = test[0], generic.identity_colours_of(str(data))
  results = {}
  models = [('', e2e_dir)]
  if ablation:                    # the first clip also by the stages trained apart
    models.append(('_apart', b_dir))
  for tag, workdir in models:
    pipe = lmp.LandmarkPipeline(str(workdir), lmp.LandmarkOptions(clip=clip['clip_id'], data_dir=str(data),
                                                                  steps=sample_steps, batch=50,
                                                                  guidance=guidance, motion_scale=motion_scale))
    r = demo_difftalk.score_clip(pipe, clip, root, tag, colours)
    info = r.pop('info')
    r.update(lmd=info['lmd'], opening_r=info['opening_r'], landmark_jitter_ratio=info['landmark_jitter_ratio'])
    timings[f'7 generate{tag or " (end to end)"}'] = r.pop('generate_s')
    if not tag:
      t0 = time.perf_counter()
      r['heldout'] = demo_difftalk.score_heldout(pipe, r, test, root, colours)
      timings['7 score the other held-out clips'] = time.perf_counter() - t0
    results[tag] = r
  apart = {k: v for k, v in results.get('_apart', {}).items() if isinstance(v, (int, float))}
  return dict(results[''], apart=apart, guidance=guidance, motion_scale=motion_scale,
              total_s=time.perf_counter() - t_start, timings=timings)


def summary(res: dict) -> str:
  from daetalker_jax import demo_difftalk  # pylint: disable=g-import-not-at-top
  a = res['apart']
  lines = [
      demo_difftalk.summary(res),
      f'[demo] landmarks, all held-out clips: LMD {res["heldout"]["lmd"]:.2f} % of the side, opening r '
      f'{res["heldout"]["opening_r"]:.2f}; the first clip: LMD {res["lmd"]:.2f} %, opening r {res["opening_r"]:.2f}, '
      f'landmark jitter ratio {res["landmark_jitter_ratio"]:.2f}; mean-mouth guidance {res["guidance"]:g}, '
      f'motion scale {res.get("motion_scale", 1.0):g}']
  if a:
    lines.append(
      f'[demo] ablation on the first clip, the two stages trained apart: strict r {a["strict_r"]:.3f}, recall '
      f'{a["open_recall"]:.2f}, amplitude {a["amplitude_ratio"]:.2f}, PSNR {a["psnr"]:.2f} dB, LMD {a["lmd"]:.2f} '
      f'(end to end: {res["strict_r"]:.3f}, {res["open_recall"]:.2f}, {res["amplitude_ratio"]:.2f}, '
      f'{res["psnr"]:.2f} dB, '
      f'{res["lmd"]:.2f})')
  return '\n'.join(lines)
