"""End-to-end evaluation on held-out clips (docs/EVALUATION.md): DAE reconstruction, speech2latent, and video.

  python -m daetalker_jax.evaluate --dae DAE_WORKDIR --s2l S2L_WORKDIR --data DATA_DIR --split test \
      [--method dae_talker --max-clips 8 --max-frames 250 --steps 20 --out results.json --syncnet syncnet_v2.model]

A thin CLI over the method's pipeline (daetalker_jax/inference/) and the metrics of daetalker_jax/evaluation/.

For every clip of the split (at most --max-clips, each cut to --max-frames):
  1. DAE reconstruction: the real frames are encoded (z_sem) and decoded by DDIM (a) from their own
     DDIM-inverted x_T (the DAE's upper bound: "how well can it reproduce a frame at all") and (b) from
     the one shared seeded x_T that generation uses (what the latent alone carries). PSNR / SSIM vs real.
  2. speech2latent on the clip's audio with (a) the ground-truth pose and (b) its own predicted pose:
     latent error vs the encoder's z_sem (normalised latents, the training loss' L1/MSE), the error of the
     mean latent as the bar to beat, and the pose adaptor's error in degrees.
  3. Video: both latent tracks decoded from the shared x_T (exactly `generate`'s decoder) and compared
     with the real frames: PSNR, SSIM, lip sync, mouth closed during silence, temporal jitter ratio.
     Lip sync depends on the data: synthface (a `<source>.json` sidecar beside the source video) → the
     strict mouth metrics of docs/EVALUATION.md as the headline (`evaluation.mouth.strict_mouth_scores`: only pixels
     within 30 RGB units of the mouth colours count as open mouth; strict r at lag 0 and best lag in ±2,
     open-mouth recall, amplitude ratio, teeth recall, closed in silence), and as secondary numbers the
     soft colour-window reading (`measure_frame`): Pearson r of the mouth opening of generated vs real
     frames (+ the best lag, + r against the sidecar's exact mouth_open); real video prepared with --crop
     auto → dlib 68 landmarks of the generated frames, mean mouth-landmark distance / inter-ocular distance.
     SyncNet LSE-C / LSE-D on the generated (and, for reference, the real) crops when --syncnet is given.
Results: a JSON file (per clip and frame-weighted means; NaN → null, ±inf → "inf"/"-inf"), a short table on
stdout, a contact sheet PNG beside the JSON (per clip three rows: real | generated with GT pose |
generated with predicted pose) and, on synthface, per clip `mouths_<clip_id>.png` beside the JSON: the 8
frames where the real mouth is most open (rows: GT pose | predicted pose | real).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time
import warnings
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np

from daetalker_jax import eval_metrics as em
from daetalker_jax import inference
from daetalker_jax import metrics as metrics_lib
from daetalker_jax.data import contract
from daetalker_jax.evaluation import report
from daetalker_jax.evaluation import video

UNAVAILABLE_SYNCNET = 'unavailable (no weights)'
MOUTH_STRIP_FRAMES = 8                        # columns of mouths_<clip_id>.png


class EvaluateError(ValueError):
  """Unusable input for evaluation; the message is one line naming the file/option and the problem."""


# --------------------------------------------------------------------------------------------------------
# Data.
# --------------------------------------------------------------------------------------------------------
def resize_frames(images: np.ndarray, size: int) -> np.ndarray:
  """uint8 (N, s, s, 3) → (N, size, size, 3) (area filter down, linear up); unchanged at the same size."""
  if images.shape[1] == size:
    return images
  import cv2  # pylint: disable=g-import-not-at-top
  interp = cv2.INTER_AREA if images.shape[1] > size else cv2.INTER_LINEAR
  return np.stack([cv2.resize(f, (size, size), interpolation=interp) for f in images])


def synthface_truth(source: str, start: int, n: int) -> np.ndarray | None:
  """(n,) exact mouth_open of a synthface clip from its sidecar `<source stem>.json`, or None."""
  side = pathlib.Path(source).with_suffix('.json')
  if not side.is_file():
    return None
  try:
    m = json.loads(side.read_text())['frames']['mouth_open']
  except (ValueError, KeyError, TypeError):
    return None
  m = np.asarray(m, np.float64)[start:start + n]
  return m if len(m) == n else None


def lip_sync_kind(data_dir: str, first_clip: dict[str, Any]) -> str:
  """'synthface' (sidecar beside the source), 'landmarks' (crop 'auto': dlib landmarks), else 'none'."""
  from daetalker_jax.data import dataset  # pylint: disable=g-import-not-at-top
  if synthface_truth(first_clip['source'], first_clip['start_frame'], 1) is not None:
    return 'synthface'
  crop = str(dataset.dataset_info(data_dir).get('crop') or '')
  return 'landmarks' if crop == 'auto' else 'none'


def iter_eval_clips(data_dir: str, split: str, max_clips: int | None, max_frames: int | None
                    ) -> Iterator[dict[str, Any]]:
  from daetalker_jax.data import dataset  # pylint: disable=g-import-not-at-top
  if dataset.num_clips(data_dir, split) == 0:
    raise EvaluateError(f'--data={data_dir}: split {split!r} has no clips')
  for i, clip in enumerate(dataset.iterate_clips(data_dir, split)):
    if max_clips is not None and i >= max_clips:
      return
    n = clip['num_frames'] if not max_frames else min(clip['num_frames'], max_frames)
    for key in ('images', 'pose', 'landmarks', 'landmarks_valid', 'box'):
      clip[key] = clip[key][:n]
    clip['audio'] = clip['audio'][:n * contract.SAMPLES_PER_FRAME]
    clip['num_frames'] = n
    yield clip


# --------------------------------------------------------------------------------------------------------
# The evaluation.
# --------------------------------------------------------------------------------------------------------
def _latent_error(kind: str, pred: np.ndarray, target: np.ndarray) -> float:
  d = np.asarray(pred, np.float64) - np.asarray(target, np.float64)
  return float(np.mean(np.abs(d)) if kind == 'l1' else np.mean(d ** 2))


def evaluate(dae_dir: str, s2l_dir: str, data_dir: str, split: str = 'test', *, max_clips: int | None = None,
             max_frames: int | None = None, steps: int = 20, batch: int = 16, seed: int = 0,
             smooth: float = 0.0, bf16: bool = False, syncnet_path: str | None = None, guidance: float | None = None,
             out: str = 'results.json', sheet: str | None = None, progress: bool = True,
             method: str = 'dae_talker') -> dict[str, Any]:
  """Runs the whole evaluation; writes `out` (JSON) and the contact sheet; returns the results dict."""
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  from daetalker_jax.data import dataset  # pylint: disable=g-import-not-at-top
  t_start = time.perf_counter()
  if not os.path.isfile(os.path.join(data_dir, 'dataset_info.json')):
    raise EvaluateError(f'--data={data_dir}: not a prepared dataset (no dataset_info.json)')
  if split not in dataset.SPLITS:
    raise EvaluateError(f'--split={split!r}: expected one of {dataset.SPLITS}')
  if max_clips is not None and max_clips < 1:
    raise EvaluateError(f'--max-clips={max_clips}: must be >= 1')
  if max_frames is not None and max_frames < 6:
    raise EvaluateError(f'--max-frames={max_frames}: must be >= 6 (jitter and SyncNet need several frames)')
  opts = inference.Options(steps=steps, batch=batch, smooth=smooth, bf16=bf16, noise=f'seed:{seed}',
                           data_dir=data_dir, guidance=guidance)
  inference.pipeline.validate_options(opts)
  syncnet, syncnet_note = em.load_syncnet(syncnet_path)
  if syncnet is None and syncnet_path:
    raise EvaluateError(f'--syncnet: {syncnet_note}')

  if not out.endswith('.json'):                       # a folder (`make eval`): results.json + sheet.png in it
    out, sheet = os.path.join(out, 'results.json'), sheet or os.path.join(out, 'sheet.png')
  pipeline = inference.load_pipeline(method, dae=dae_dir, s2l=s2l_dir, options=opts)
  codec = pipeline.codec
  size = codec.image_size
  num = dataset.num_clips(data_dir, split)
  total = num if max_clips is None else min(num, max_clips)
  say = (lambda msg: print(msg, flush=True)) if progress else (lambda msg: None)
  say(f'evaluate: {total} {split} clip(s) of {data_dir}, {method}, {size} px, {steps} DDIM steps, '
      f'{jax.device_count()} device(s)')

  clips, sheet_rows, kind = [], [], None
  t_models = time.perf_counter() - t_start
  for clip in tqdm(iter_eval_clips(data_dir, split, max_clips, max_frames), total=total, unit='clip',
                   desc='evaluate', disable=not progress, dynamic_ncols=True):
    t0 = time.perf_counter()
    kind = kind or lip_sync_kind(data_dir, clip)
    n = clip['num_frames']
    real = resize_frames(clip['images'], size)                              # (N,S,S,3) uint8
    audio = contract.int16_to_float(clip['audio'])                           # (N*640,)
    pose = clip['pose'].astype(np.float32)                                  # (N,3) degrees

    # 1. DAE reconstruction and the encoder's latents (speech2latent's targets).
    z, rec_inv, rec_shared = codec.reconstruct(real, pipeline.x_T)
    z_norm = (z - pipeline.mean) / pipeline.std
    dae_m = {'psnr_inverted': em.psnr(rec_inv, real), 'ssim_inverted': em.ssim(rec_inv, real),
             'psnr_shared_noise': em.psnr(rec_shared, real), 'ssim_shared_noise': em.ssim(rec_shared, real)}

    # 2. speech2latent with the GT pose and with its own predicted pose (normalised latents, degrees).
    lat = {'gt_pose': pipeline.latents(audio, pose), 'pred_pose': pipeline.latents(audio, None)}
    baseline = _latent_error(pipeline.latent_loss, np.zeros_like(z_norm), z_norm)

    # 3. Generated video for both latent tracks, from the shared x_T, and its metrics.
    truth = synthface_truth(clip['source'], clip['start_frame'], n) if kind == 'synthface' else None
    per_clip = {'clip_id': clip['clip_id'], 'num_frames': n, 'dae_recon': dae_m}
    gens = []
    for name, (latent, pose_pred) in lat.items():
      gen = np.concatenate(list(pipeline.decode(latent)))
      gens.append(gen)
      extra = {}
      if kind == 'landmarks':
        lm, ok, det = video.detect_landmarks(gen, clip['landmarks'], clip['landmarks_valid'])
        extra = dict(gen_landmarks=lm, real_landmarks=clip['landmarks'],
                     landmarks_valid=ok & clip['landmarks_valid'])
      m = video.video_metrics(real, gen, audio, kind=kind, truth_mouth=truth, syncnet=syncnet, **extra)
      if kind == 'landmarks':
        m['face_detected_rate'] = det / n
      m['latent_error'] = _latent_error(pipeline.latent_loss, latent, z_norm)
      m['latent_error_mean_baseline'] = baseline
      err = np.abs(pose_pred - pose)                                        # (N,3) degrees
      m['pose_mae_deg'] = float(err.mean())
      for i, axis in enumerate(('yaw', 'pitch', 'roll')):
        m[f'pose_mae_deg_{axis}'] = float(err[:, i].mean())
      per_clip[name] = m
    if syncnet is not None and n >= 6:
      s = em.sync_scores(real, audio, syncnet)
      per_clip['real'] = {'lse_c': s['lse_c'], 'lse_d': s['lse_d'], 'av_offset': s['offset']}
    if truth is not None:
      with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)
        per_clip.setdefault('real', {})['lip_sync_r_truth'] = em.pearson(em.mouth_open_series(real), truth)
        per_clip['real']['strict_r_truth'] = em.pearson(em.strict_mouth_series(real)['area'], truth)
    if kind == 'synthface':                                # the picture behind the strict numbers
      strip = os.path.join(os.path.dirname(os.path.abspath(out)), f"mouths_{clip['clip_id']}.png")
      em.save_mouth_strip(strip, gens, real, MOUTH_STRIP_FRAMES)
      per_clip['mouth_strip'] = strip
    per_clip['seconds'] = time.perf_counter() - t0
    clips.append(per_clip)
    if len(sheet_rows) < report.SHEET_CLIPS:
      sheet_rows.append([real, *gens])
    say(f"  {clip['clip_id']}: {n} frames, {report.clip_line(per_clip)} (GT / pred pose), "
        f"{per_clip['seconds']:.1f} s")

  groups = ('gt_pose', 'pred_pose', 'dae_recon') + (('real',) if any('real' in c for c in clips) else ())
  summary = {g: report.mean_over_clips([c for c in clips if g in c], g) for g in groups}
  frames_total = sum(c['num_frames'] for c in clips)
  sheet = sheet or os.path.splitext(out)[0] + '_sheet.png'
  results = {
      'method': method, 'dae': os.path.abspath(dae_dir), 's2l': os.path.abspath(s2l_dir),
      'data': os.path.abspath(data_dir), 'split': split, 'steps': steps, 'seed': seed, 'smooth': smooth,
      'bf16': bf16, 'guidance': pipeline.guidance, 'image_size': size, 'num_clips': len(clips),
      'num_frames': frames_total,
      'lip_sync_kind': kind, 'latent_loss': pipeline.latent_loss,
      'syncnet': 'used' if syncnet is not None else UNAVAILABLE_SYNCNET,
      'summary': summary, 'clips': clips, 'contact_sheet': os.path.abspath(sheet),
      'decoder_compiles': pipeline.num_compiles(),
      'timing': {'load_s': t_models, 'total_s': time.perf_counter() - t_start,
                 'frames_per_s': frames_total / max(sum(c['seconds'] for c in clips), 1e-9)},
  }
  metrics_lib.write_png(sheet, report.contact_sheet(sheet_rows))
  report.write_json(out, results)
  say(report.format_table(results))
  say(f'wrote {out} and {sheet}')
  return results


# --------------------------------------------------------------------------------------------------------
# Command line.
# --------------------------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog='python -m daetalker_jax.evaluate',
                              description='Evaluate a method on held-out clips (docs/EVALUATION.md).')
  p.add_argument('--method', default='dae_talker', choices=inference.METHODS,
                 help='which method generates (default dae_talker)')
  p.add_argument('--dae', default='', help='DAE training workdir (task dae; --method dae_talker)')
  p.add_argument('--s2l', default='', help='speech2latent training workdir (--method dae_talker)')
  p.add_argument('--model', default='', help='DiffTalk or landmark-diffusion training workdir (--method difftalk / landmark)')
  p.add_argument('--data', required=True, help='prepared dataset (data_prep.prepare --out)')
  p.add_argument('--split', default='test', help='train | val | test (default test)')
  p.add_argument('--max-clips', type=int, default=None, help='evaluate at most this many clips')
  p.add_argument('--max-frames', type=int, default=None, help='cut every clip to this many frames')
  p.add_argument('--steps', type=int, default=20, help='DDIM steps (default 20)')
  p.add_argument('--batch', type=int, default=16, help='frames per DDIM batch (default 16)')
  p.add_argument('--seed', type=int, default=0, help='seed of the shared x_T (default 0)')
  p.add_argument('--smooth', type=float, default=0.0, help='Gaussian sigma over time for the latents')
  p.add_argument('--bf16', action='store_true', help='DAE computes in bfloat16')
  p.add_argument('--guidance', type=float, default=None,
                 help="dae_talker: mean-latent guidance scale (default: the DAE config's diffusion.guidance); "
                      "landmark: mean-mouth guidance scale (default: the model config's diffusion.guidance)")
  p.add_argument('--motion-scale', type=float, default=None,
                 help="landmark: gain on Stage A's mouth motion around the clip's mean mouth (default: the model "
                      "config's track.motion_scale; 1 = as predicted)")
  p.add_argument('--syncnet', default='', help='syncnet_v2.model (joonson/syncnet_python) for LSE-C/LSE-D')
  p.add_argument('--out', default='results.json',
                 help='results .json file, or a folder for results.json + sheet.png (default results.json)')
  p.add_argument('--sheet', default='', help='contact sheet PNG (default: beside --out, *_sheet.png)')
  p.add_argument('--quiet', action='store_true', help='no progress output')
  return p


def main(argv: list[str] | None = None) -> int:
  args = _parser().parse_args(argv)
  if args.method in ('difftalk', 'landmark'):
    return _main_generic(args)
  if not args.dae or not args.s2l:
    print('error: --method dae_talker needs --dae DAE_WORKDIR and --s2l S2L_WORKDIR', file=sys.stderr)
    return 1
  if args.motion_scale is not None:
    print('error: --motion-scale is for --method landmark', file=sys.stderr)
    return 1
  try:
    evaluate(args.dae, args.s2l, args.data, args.split, max_clips=args.max_clips, max_frames=args.max_frames,
             steps=args.steps, batch=args.batch, seed=args.seed, smooth=args.smooth, bf16=args.bf16,
             syncnet_path=args.syncnet or None, guidance=args.guidance, out=args.out, sheet=args.sheet or None,
             progress=not args.quiet, method=args.method)
  except (EvaluateError, inference.GenerateError, OSError) as e:
    print(f'error: {" ".join(str(e).split())}', file=sys.stderr)
    return 1
  return 0


def _main_generic(args) -> int:
  """Every clip of the split (an identity split: people never trained on) dubbed with its own speech and
  scored (evaluation/generic.py)."""
  from daetalker_jax.evaluation import generic  # pylint: disable=g-import-not-at-top
  from daetalker_jax.inference import difftalk_pipeline as dtp  # pylint: disable=g-import-not-at-top
  out = args.out if args.out.endswith('.json') else os.path.join(args.out, 'results.json')   # a folder
  say = (lambda *a: None) if args.quiet else print
  try:
    if not args.model:
      task = {'difftalk': 'difftalk', 'landmark': 'talkformer'}[args.method]
      raise EvaluateError(f'--method {args.method} needs --model WORKDIR (a {task} training workdir)')
    clips = list(iter_eval_clips(args.data, args.split, args.max_clips, args.max_frames))
    common = dict(clip=clips[0]['clip_id'], data_dir=args.data, steps=args.steps, batch=args.batch, seed=args.seed)
    if args.method == 'landmark':
      pipe = inference.LandmarkPipeline(args.model, inference.LandmarkOptions(
          **common, guidance=args.guidance, motion_scale=args.motion_scale))
    elif args.guidance is not None:
      raise EvaluateError('--guidance is for --method dae_talker and landmark')
    elif args.motion_scale is not None:
      raise EvaluateError('--motion-scale is for --method landmark')
    else:
      pipe = dtp.DiffTalkPipeline(args.model, dtp.DiffTalkOptions(**common))
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    generic.evaluate_clips(pipe, clips, out, say=say, colours=generic.identity_colours_of(args.data))
  except (EvaluateError, inference.GenerateError, OSError) as e:
    print(f'error: {" ".join(str(e).split())}', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())
