"""The end-to-end demo on the synthetic talking face, small enough for a laptop CPU (target < 20 min, 2 cores).

  python -m daetalker_jax.demo --out runs/demo

Stages (each is skipped when its output already exists, so an interrupted demo resumes):
  1. synthface clips (mp4 + sidecar)            python -m data_prep.synthface           → OUT/videos
  2. prepared TFDS dataset, split by clip        python -m data_prep.prepare             → OUT/data
  3. DAE training (configs/dae.py:variant=...)   train.train_and_evaluate                → OUT/dae
  4. latent extraction                           extract.extract_latents                 → OUT/data/latents/dae
  5. speech2latent training (configs/s2l.py)     train.train_and_evaluate                → OUT/s2l
  6. generation from a held-out (test split) clip's audio, with the pose the model predicts (--pose)
                                                 generate.generate (inference/)          → OUT/generated.mp4
  7. side-by-side video (generated | real) with the audio, and how well the mouth follows the speech: the
     strict mouth metrics of docs/EVALUATION.md (`evaluation.mouth.strict_mouth_scores`: strict r at lag 0 and best
     lag, open-mouth recall, amplitude ratio, teeth recall, closed in silence), PSNR and SSIM, the soft
     colour-window r of `measure_frame` as a secondary number, and a picture of the mouths: generated over
     real at the 8 frames where the real mouth is most open.            → OUT/side_by_side.mp4, OUT/mouths.png
The DAE is the 64 px `demo` variant, which predicts v rather than eps, weighs the mouth box 10x in its loss and
trains a linear probe z_sem -> mouth landmarks beside it (configs/dae.py, docs/TRAINING.md): in a CPU budget
that is what makes one shared noise image decode to a face whose mouth opens. Measured (docs/RESULTS.md):
strict mouth r 0.83, recall 1.00 with mean-latent guidance 2 (16.8 min); `--preset quality` (96 min, unguided)
strict r 0.92, recall 1.00, amplitude 0.87. `--set dae.FIELD=VALUE` changes any config field
(benchmarks/demo_ablation.py runs the recipe's ablation).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np


def _data_prep(script: str, *args) -> None:
  """Runs `python -m data_prep.<script> ARGS` from the repository root, as a user would (the library does not
  import data_prep); its own progress output goes to the terminal."""
  root = pathlib.Path(__file__).resolve().parents[1]
  cmd = [sys.executable, '-m', f'data_prep.{script}', *map(str, args)]
  done = subprocess.run(cmd, cwd=root, check=False)
  if done.returncode:
    raise DemoError(f'{" ".join(cmd[1:])} failed (exit {done.returncode}); its error is printed above')


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


# Config fields that only change sampling, not the trained weights: a checkpoint is reused across them.
_SAMPLING_ONLY = {'diffusion': ('guidance',)}


def _trained(block: str, config) -> object:
  plain = _plain(config[block])
  return {k: v for k, v in plain.items() if k not in _SAMPLING_ONLY.get(block, ())}


def _has_checkpoint(workdir: pathlib.Path, steps: int, want=None, defaults=None) -> bool:
  """Whether `workdir` holds a checkpoint of at least `steps` steps; with `want` (the config the demo
  would train), also that its model/diffusion/loss settings are those, so a stale folder is not reused.
  `defaults` (the config of want's variant without the demo's overrides) gives the value of a field newer than
  the checkpoint: such a checkpoint was trained with the field's default; without `defaults` it is refused."""
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
      for block in ('model', 'diffusion', 'loss'):   # (a checkpoint older than a block has its defaults)
        if block not in want or block not in got:
          continue
        had = _trained(block, got)
        if defaults is not None and block in defaults:
          had = {**{k: v for k, v in _trained(block, defaults).items() if k not in had}, **had}
        if had != _trained(block, want):
          raise DemoError(f'{workdir} holds a model trained with other {block} settings than '
                          f'{want.variant!r} now uses; delete it (or pass another --out) to retrain')
    return True
  finally:
    ckpt.close()


def _has_dataset(data: pathlib.Path, crop: str) -> bool:
  """Whether `data` holds a prepared dataset, made with `crop` (a folder made with another crop is refused)."""
  if not (data / 'dataset_info.json').is_file():
    return False
  made = json.loads((data / 'report.json').read_text()).get('crop', 'none')
  if made != crop:
    raise DemoError(f'{data} was prepared with --crop {made}, not {crop}; delete it (or pass another --out)')
  return True


def _apply_overrides(config, overrides: dict[str, str]):
  """`KEY=VALUE` settings (dotted keys of the config, values parsed as Python literals where they can be)."""
  import ast  # pylint: disable=g-import-not-at-top
  for key, text in overrides.items():
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = text
    *parents, leaf = key.split('.')
    block = config
    for name in parents:
      block = block[name]
    if leaf not in block:
      raise DemoError(f'--set {key}: the config has no such field')
    try:
      block[leaf] = value                     # ConfigDict checks the type (an int may become a float)
    except TypeError as e:
      raise DemoError(f'--set {key}={text}: {e}') from None
  return config


def _config(config_module, variant: str, overrides: dict[str, str]):
  return _apply_overrides(config_module.get_config(f'variant={variant}'), overrides)


def _train(config, data_dir: pathlib.Path, workdir: pathlib.Path, steps: int, batch_size: int | None, *,
           evaluate: bool = True) -> None:
  """Trains `steps` steps in `workdir`: one checkpoint and (`evaluate`) one evaluation, at the end. The
  generic demos skip the end-of-training evaluation of their diffusion stages (20-40 s of sampling each): they
  score every held-out clip right after."""
  from daetalker_jax import train  # pylint: disable=g-import-not-at-top
  config.data.data_dir = str(data_dir)
  config.num_train_steps = steps
  config.checkpoint_every_steps = steps
  config.eval_every_steps = steps if evaluate else 0
  config.log_every_steps = max(1, steps // 10)
  config.optim.warmup_steps = min(config.optim.warmup_steps, max(1, steps // 10))
  if batch_size:
    config.batch_size = batch_size
  if hasattr(config.data, 'window'):
    config.data.window = min(config.data.window, 50)
  state = train.train_and_evaluate(config, str(workdir))
  done = int(state.step)
  if done < steps:   # a stop signal: the loop saved and returned; the demo must not go on with a half model
    raise DemoError(f'{workdir}: training stopped at step {done} of {steps} (interrupted); run the demo again to '
                    'resume')


def neutral_frame(data_dir: pathlib.Path) -> tuple[str, int]:
  """(clip id, frame) of the training frame with the most closed mouth and the most frontal pose: the frame
  whose DDIM inversion `--noise invert` uses as the one shared x_T."""
  from daetalker_jax.data import dataset  # pylint: disable=g-import-not-at-top
  from daetalker_jax.mouth_measure import strict_mouth  # pylint: disable=g-import-not-at-top
  best = None
  for clip in dataset.iterate_clips(data_dir, 'train'):
    area = np.array([strict_mouth(f)['area'] for f in clip['images']])
    score = area * 1e4 + np.abs(np.asarray(clip['pose'], np.float64)).sum(-1)  # closed first, then frontal
    k = int(np.argmin(score))
    if best is None or score[k] < best[0]:
      best = (float(score[k]), clip['clip_id'], k)
  if best is None:
    raise DemoError(f'{data_dir}: no training clip to invert')
  return best[1], best[2]


def run_demo(out: str, *, clips: int = 16, seconds: float = 5.0, video_size: int = 128, dae_variant: str = 'demo',
             dae_steps: int = 400, s2l_variant: str = 'demo', s2l_steps: int = 300, sample_steps: int = 10,
             batch_size: int | None = None, seed: int = 0, noise: str = 'seed:0', pose: str = 'predicted',
             dae_overrides: dict[str, str] | None = None, s2l_overrides: dict[str, str] | None = None,
             crop: str = 'none', guidance: float | None = None) -> dict:
  """Runs every stage into `out`; returns paths, timings and the lip-sync metrics (strict first, soft r).

  The held-out clip's video is generated from its audio alone: pose 'predicted' (the pose adaptor's own
  prediction, as a user would run it) or 'reference' (the clip's ground-truth pose track).
  """
  from configs import dae as dae_config  # pylint: disable=g-import-not-at-top
  from configs import s2l as s2l_config  # pylint: disable=g-import-not-at-top
  from daetalker_jax import extract  # pylint: disable=g-import-not-at-top
  from daetalker_jax import generate  # pylint: disable=g-import-not-at-top
  from daetalker_jax.data import dataset  # pylint: disable=g-import-not-at-top
  from daetalker_jax.data import contract  # pylint: disable=g-import-not-at-top
  from daetalker_jax.data import video_io  # pylint: disable=g-import-not-at-top

  root = pathlib.Path(out)
  root.mkdir(parents=True, exist_ok=True)
  videos, data, dae_dir, s2l_dir = root / 'videos', root / 'data', root / 'dae', root / 's2l'
  dae_want = _config(dae_config, dae_variant, dae_overrides or {})
  s2l_want = _config(s2l_config, s2l_variant, s2l_overrides or {})
  image_size = int(dae_want.model.image_size)
  timings: dict[str, float] = {}
  t_start = time.perf_counter()

  _stage('1 synthface', (videos / f'synth_{clips - 1:04d}.mp4').is_file(),
         lambda: _data_prep('synthface', '--out', videos, '--clips', clips, '--seconds', seconds,
                            '--size', video_size, '--seed', seed, '--overwrite'), timings)
  # At least one clip in each of val and test.
  frac = max(0.1, 1.0 / clips + 1e-6)
  _stage('2 prepare', _has_dataset(data, crop),
         lambda: _data_prep('prepare', '--src', videos, '--out', data, '--size', image_size, '--crop', crop,
                            '--val-fraction', frac, '--test-fraction', frac, '--seed', seed, '--overwrite'),
         timings)
  _stage('3 train DAE', _has_checkpoint(dae_dir, dae_steps, dae_want),
         lambda: _train(dae_want, data, dae_dir, dae_steps, batch_size), timings)
  _stage('4 extract latents', (dataset.latents_dir(data, 'dae') / 'stats.json').is_file(),
         lambda: extract.extract_latents(str(dae_dir), str(data), name='dae', batch_size=32), timings)
  _stage('5 train speech2latent', _has_checkpoint(s2l_dir, s2l_steps, s2l_want),
         lambda: _train(s2l_want, data, s2l_dir, s2l_steps, batch_size), timings)

  # 6. Generation from a held-out clip's audio (the test split was never trained on).
  clip = next(iter(dataset.iterate_clips(data, 'test')))
  clip_id = clip['clip_id']
  wav = root / f'heldout_{clip_id}.wav'
  import soundfile as sf  # pylint: disable=g-import-not-at-top
  sf.write(str(wav), clip['audio'], contract.SAMPLE_RATE, subtype='PCM_16')
  generated_path = root / 'generated.mp4'
  frames: list[np.ndarray] = []
  if noise == 'invert':   # DDIM-invert a closed-mouth, frontal training frame: one shared x_T
    noise = 'invert:{}:{}'.format(*neutral_frame(data))
  if guidance is None:    # the sampling field of the config the demo trains, also for a reused checkpoint
    guidance = float(dae_want.diffusion.get('guidance', 1.0))
  opts = generate.Options(steps=sample_steps, guidance=guidance, noise=noise, data_dir=str(data), batch=16,
                          pose=f'reference:{clip_id}' if pose == 'reference' else pose)
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
                            audio=clip['audio'][:n * contract.SAMPLES_PER_FRAME]) as writer:
    for k in range(n):
      writer.write(np.concatenate([generated[k], real[k]], axis=1))
  from daetalker_jax import eval_metrics as em  # pylint: disable=g-import-not-at-top
  from daetalker_jax.evaluation import video as video_metrics  # pylint: disable=g-import-not-at-top
  m = video_metrics.video_metrics(real[:n], generated[:n], clip['audio'][:n * contract.SAMPLES_PER_FRAME],
                                  kind='synthface')
  mouths_path = root / 'mouths.png'
  em.save_mouth_strip(mouths_path, generated[:n], real[:n])
  strict_keys = ('strict_r', 'strict_r_best', 'strict_best_lag', 'open_recall', 'amplitude_ratio', 'teeth_recall',
                 'strict_closed_in_silence', 'strict_closed_in_silence_real', 'num_open_frames', 'num_teeth_frames')
  result = dict(generated=str(generated_path), side_by_side=str(side_path), mouths=str(mouths_path),
                clip_id=clip_id, frames=n, **{k: m[k] for k in strict_keys},
                mouth_open_pearson_r=m['lip_sync_r'], lip_sync_lag=m['lip_sync_lag'],
                lip_sync_r_best_lag=m['lip_sync_r_best_lag'],
                mouth_closed_in_silence=m['mouth_closed_in_silence'],
                mouth_closed_in_silence_real=m['mouth_closed_in_silence_real'], psnr_db=m['psnr'],
                guidance=summary['guidance'],
                ssim=m['ssim'], generate_fps=summary['fps'], total_s=time.perf_counter() - t_start,
                timings=timings)
  return result


def _summary(res: dict) -> str:
  """The demo's lip-sync report: strict mouth metrics first (docs/EVALUATION.md), the soft r labelled secondary."""
  return '\n'.join([
      f'[demo] strict mouth r:  {res["strict_r"]:.3f} at lag 0, {res["strict_r_best"]:.3f} at the best lag '
      f'{res["strict_best_lag"]:+d} frames (within +-2) over {res["frames"]} frames (only pixels within 30 RGB '
      f'of the mouth colours count as open)',
      f'[demo] open-mouth recall: {res["open_recall"]:.2f} of the {res["num_open_frames"]} frames where the real '
      f'mouth is open (generated area >= 40% of real); amplitude ratio {res["amplitude_ratio"]:.2f} '
      f'(median generated / real area)',
      f'[demo] teeth recall: {res["teeth_recall"]:.2f} of {res["num_teeth_frames"]} frames with real teeth; '
      f'closed in silence (strict): {res["strict_closed_in_silence"]:.2f} of the silent frames '
      f'(real video: {res["strict_closed_in_silence_real"]:.2f})',
      f'[demo] PSNR {res["psnr_db"]:.2f} dB, SSIM {res["ssim"]:.3f} (generated vs real frames; mean-latent '
      f'guidance {res["guidance"]:g})',
      f'[demo] soft r (secondary): {res["mouth_open_pearson_r"]:.3f} (colour windows, a smear counts as '
      f'half open; best lag {res["lip_sync_lag"]:+d}: r {res["lip_sync_r_best_lag"]:.3f}); soft closed in '
      f'silence (secondary) {res["mouth_closed_in_silence"]:.2f} (real {res["mouth_closed_in_silence_real"]:.2f})',
      f'[demo] mouths:          {res["mouths"]}  (generated over real, where the real mouth is most open)',
  ])


# Presets: defaults of the flags below. `default` fits the 20-minute CPU budget of `make demo`; `quality` is the
# documented longer CPU run (96 min on 2 cores, measured beside another job). docs/RESULTS.md has the measured rows
# behind each number. guidance None: the DAE config's (2, which the 400-step DAE needs to open its mouths); the
# 4000-step DAE opens them unguided, and guidance 2 overshoots its mouth colour past the strict reader's window
# (recall 1.00 at guidance 1, 0.00 at 2: RESULTS.md, the quality preset).
PRESETS = {
    'default': dict(clips=16, seconds=5.0, dae_steps=400, s2l_steps=300, sample_steps=10, crop='none',
                    guidance=None),
    'quality': dict(clips=24, seconds=6.0, dae_steps=4000, s2l_steps=1000, sample_steps=20, crop='none',
                    guidance=1.0),
}


def _pairs(items: list[str], flag: str, parser, stages: tuple[str, ...] = ('dae', 's2l')) -> dict[str, dict[str, str]]:
  out: dict[str, dict[str, str]] = {s: {} for s in stages}
  for item in items:
    key, sep, value = item.partition('=')
    stage, _, field = key.partition('.')
    if not sep or stage not in out or not field:
      parser.error(f'{flag} {item!r}: expected STAGE.FIELD=VALUE with STAGE one of {", ".join(stages)} '
                   f'(e.g. {stages[0]}.optim.learning_rate=1e-3)')
    out[stage][field] = value
  return out


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog='python -m daetalker_jax.demo', description=__doc__.split('\n\n')[0])
  p.add_argument('--method', choices=('dae_talker', 'difftalk', 'landmark'), default='dae_talker',
                 help='dae_talker (person-specific, default), difftalk or landmark (many identities, an unseen '
                      'face)')
  p.add_argument('--out', default=None, help='folder for every stage (default runs/demo, runs/demo_difftalk)')
  p.add_argument('--preset', choices=sorted(PRESETS), default='default',
                 help='default: the 20-minute CPU demo; quality: a longer CPU run (~1.5-2 h) with better faces')
  p.add_argument('--clips', type=int, help='synthface clips (preset: 16)')
  p.add_argument('--seconds', type=float, help='seconds per clip (preset: 5)')
  p.add_argument('--video-size', type=int, default=128, help='synthface frame size (default 128)')
  p.add_argument('--dae-variant', default='demo', help='configs/dae.py variant (default demo, 64 px)')
  p.add_argument('--dae-steps', type=int, help='DAE training steps (preset: 400)')
  p.add_argument('--s2l-variant', default='demo', help='configs/s2l.py variant (default demo)')
  p.add_argument('--s2l-steps', type=int, help='speech2latent training steps (preset: 300)')
  p.add_argument('--sample-steps', type=int, help='DDIM steps for generation (preset: 10)')
  p.add_argument('--guidance', type=float, default=None,
                 help="guidance scale of generation: dae_talker mean-latent, landmark mean-mouth (default: the "
                      "model config's diffusion.guidance; --preset quality: 1 = off)")
  p.add_argument('--motion-scale', type=float, default=None,
                 help="--method landmark: gain on Stage A's mouth motion around the clip's mean mouth (default: the "
                      "model config's track.motion_scale)")
  p.add_argument('--noise', default='seed:0',
                 help="shared x_T: 'seed:N', or 'invert' (DDIM inversion of a closed-mouth, frontal training frame)")
  p.add_argument('--crop', default=None, help="face crops: 'none' (the whole frame) or 'face' (a box around the "
                                                "landmarks: the mouth covers more pixels) (preset: none)")
  p.add_argument('--pose', choices=('predicted', 'reference'), default='predicted',
                 help="head pose of the held-out clip: the model's prediction from the audio (default) or the "
                      "clip's ground truth")
  p.add_argument('--set', action='append', default=[], metavar='STAGE.FIELD=VALUE',
                 help='override a config field, e.g. --set dae.loss.mouth_weight=8 --set s2l.optim.learning_rate=1e-3')
  p.add_argument('--batch-size', type=int, default=0, help='training batch override (0: config default)')
  p.add_argument('--ablation', action='store_true',
                 help='--method landmark: also dub the first held-out clip with the two stages trained apart')
  p.add_argument('--verbose', action='store_true', help='library INFO logs on stderr too (always in OUT/log.txt)')
  args = p.parse_args(argv)
  if args.ablation and args.method != 'landmark':
    p.error('--ablation is for --method landmark')
  if args.motion_scale is not None and args.method != 'landmark':
    p.error('--motion-scale is for --method landmark')
  if args.method in ('difftalk', 'landmark'):
    return _main_generic(args, p)
  args.out = args.out or 'runs/demo'
  for k, v in PRESETS[args.preset].items():
    if getattr(args, k) is None:
      setattr(args, k, v)
  if args.clips < 3:
    p.error('--clips must be >= 3 (train, val and test each need a clip)')
  overrides = _pairs(args.set, '--set', p)
  from daetalker_jax import console  # pylint: disable=g-import-not-at-top
  log = console.setup(args.out, verbose=args.verbose)
  console.stage(f'[demo] preset {args.preset} in {args.out} (library logs: {log})')
  try:
    res = run_demo(args.out, clips=args.clips, seconds=args.seconds, video_size=args.video_size,
                   dae_variant=args.dae_variant, dae_steps=args.dae_steps, s2l_variant=args.s2l_variant,
                   s2l_steps=args.s2l_steps, sample_steps=args.sample_steps, batch_size=args.batch_size or None,
                   noise=args.noise, pose=args.pose, dae_overrides=overrides['dae'], s2l_overrides=overrides['s2l'],
                   crop=args.crop, guidance=args.guidance)
  except DemoError as e:
    print(f'[demo] error: {e}', file=sys.stderr)
    return 2
  print('[demo] timings: ' + ', '.join(f'{k} {v:.0f} s' for k, v in res['timings'].items()))
  print(f'[demo] generated video:   {res["generated"]}')
  print(f'[demo] side by side:      {res["side_by_side"]}  (generated | real, held-out clip {res["clip_id"]}, '
        f'{args.pose} pose)')
  print(_summary(res))
  print(f'[demo] total {res["total_s"] / 60:.1f} min')
  settings = dict(preset=args.preset, clips=args.clips, seconds=args.seconds, dae_steps=args.dae_steps,
                  s2l_steps=args.s2l_steps, sample_steps=args.sample_steps, crop=args.crop, noise=args.noise,
                  pose=args.pose, set=args.set)   # res carries the guidance actually used
  (pathlib.Path(args.out) / 'summary.json').write_text(json.dumps({**settings, **res}, indent=1, default=float) + '\n')
  return 0


def _main_generic(args, parser) -> int:
  """`--method difftalk` (demo_difftalk.run; --set ae.FIELD=V / difftalk.FIELD=V) and `--method landmark`
  (demo_landmark.run; --set ae. / landmarks. / talkformer.)."""
  from daetalker_jax import console  # pylint: disable=g-import-not-at-top
  if args.method == 'difftalk':
    from daetalker_jax import demo_difftalk as module  # pylint: disable=g-import-not-at-top
    stages, keys, title = ('ae', 'difftalk'), ('ae_overrides', 'dt_overrides'), 'DiffTalk'
  else:
    from daetalker_jax import demo_landmark as module  # pylint: disable=g-import-not-at-top
    stages, keys = ('ae', 'landmarks', 'talkformer'), ('ae_overrides', 'a_overrides', 'b_overrides')
    title = 'landmark diffusion (TalkFormer)'
  if args.guidance is not None and args.method == 'difftalk':
    parser.error('--guidance is for --method dae_talker and landmark')
  args.out = args.out or f'runs/demo_{args.method}'
  overrides = _pairs(args.set, '--set', parser, stages)
  log = console.setup(args.out, verbose=args.verbose)
  console.stage(f'[demo] {title} in {args.out} (library logs: {log})')
  settings = dict(module.PRESET)
  for k in ('clips', 'seconds', 'sample_steps'):
    if getattr(args, k) is not None:
      settings[k] = getattr(args, k)
  if args.ablation:
    settings['ablation'] = True
  if args.guidance is not None:
    settings['guidance'] = args.guidance
  if args.motion_scale is not None:
    settings['motion_scale'] = args.motion_scale
  try:
    res = module.run(args.out, **settings, **{k: overrides[s] for k, s in zip(keys, stages)})
  except DemoError as e:
    print(f'[demo] error: {e}', file=sys.stderr)
    return 2
  print('[demo] timings: ' + ', '.join(f'{k} {v:.0f} s' for k, v in res['timings'].items()))
  print(module.summary(res))
  print(f'[demo] total {res["total_s"] / 60:.1f} min')
  (pathlib.Path(args.out) / 'summary.json').write_text(
      json.dumps({'method': args.method, **settings, 'set': args.set, **res}, indent=1, default=float) + '\n')
  return 0


if __name__ == '__main__':
  sys.exit(main())
