"""Generation: speech audio → talking-face mp4, for any method of `daetalker_jax.inference`.

  python -m daetalker_jax.generate --audio speech.wav --dae DAE_WORKDIR --s2l S2L_WORKDIR --out video.mp4
  python -m daetalker_jax.generate --method difftalk --model DIFFTALK_WORKDIR --audio speech.wav \
      --video source.mp4 --out dubbed.mp4          # or --image photo.jpg
  python -m daetalker_jax.generate --method landmark --model TALKFORMER_WORKDIR --audio speech.wav \
      --video source.mp4 --out dubbed.mp4          # --landmarks track.npy: the mouth follows a landmark track
  (docs/GENERATE.md has every option)

The method's pipeline (inference/pipeline.py) validates every input and loads its models first, so bad
input gives a one-line error and no file. Frames are then decoded batch by batch and streamed to ffmpeg
(h264 yuv420p, the input audio as AAC) while the next batch computes; at most two batches of frames are
alive, so a 10-minute input never holds its 15,000 frames in memory. The output file appears only when it
is complete (VideoWriter writes a temp file and renames it).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
import sys
import time
from typing import Any

import numpy as np

from daetalker_jax import inference
from daetalker_jax.data import contract
from daetalker_jax.data import video_io
from daetalker_jax.inference import loading
from daetalker_jax.inference import pose as pose_lib

GenerateError = inference.GenerateError
Options = inference.Options


def write_video(video: inference.Video, out_path: str, *, frames_out: Callable[[np.ndarray], None] | None = None,
                progress: bool = True) -> int:
  """Streams a pipeline's `video` into `out_path` (mp4 with its audio); returns the frames written."""
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  written = 0
  with video_io.VideoWriter(out_path, fps=contract.FPS, size=video.size, audio=video.audio) as writer, \
       tqdm(total=video.num_frames, unit='frame', desc='DDIM', disable=not progress, dynamic_ncols=True) as bar:
    for batch in video.frames:
      if frames_out is not None:
        frames_out(batch)
      for frame in batch:
        writer.write(frame)
      written += len(batch)
      bar.update(len(batch))
  return written


def generate(audio_path: str, dae_dir: str, s2l_dir: str, out_path: str, opts: Options = Options(), *,
             frames_out: Callable[[np.ndarray], None] | None = None, progress: bool = True,
             method: str = 'dae_talker') -> dict[str, Any]:
  """Writes the DAE-Talker mp4 for `audio_path`; returns a summary dict (frames, wall time, frames/s).

  `frames_out`, if given, receives every batch of final uint8 frames (b, H, W, 3) before encoding.
  Nothing is written at `out_path` unless the whole video was encoded.
  """
  return generate_with(method, audio_path, out_path, dict(dae=dae_dir, s2l=s2l_dir, options=opts),
                       frames_out=frames_out, progress=progress)


def generate_with(method: str, audio_path: str, out_path: str, pipeline_kwargs: dict[str, Any], *,
                  frames_out: Callable[[np.ndarray], None] | None = None, progress: bool = True) -> dict[str, Any]:
  """`generate` for any method: its pipeline is `inference.load_pipeline(method, **pipeline_kwargs)`."""
  t0 = time.perf_counter()
  if not str(out_path).endswith('.mp4'):
    raise GenerateError(f'--out={out_path}: the output must be an .mp4 file')
  speech = loading.load_speech(audio_path)
  pipeline = inference.load_pipeline(method, **pipeline_kwargs)
  video = pipeline(speech)
  written = write_video(video, out_path, frames_out=frames_out, progress=progress)
  wall = time.perf_counter() - t0
  return dict(out=str(out_path), frames=written, seconds=written / contract.FPS, wall_s=wall,
              fps=written / wall if wall > 0 else float('inf'), compiles=pipeline.num_compiles(),
              frames_without_face=int(video.info.get('frames_without_face', 0)), guidance=video.info.get('guidance'))


def generate_frames(audio_path: str, dae_dir: str, s2l_dir: str, opts: Options = Options(),
                    method: str = 'dae_talker') -> np.ndarray:
  """All frames (N, H, W, 3) uint8 of a SHORT input, without encoding (tests, notebooks)."""
  speech = loading.load_speech(audio_path)
  pipeline = inference.load_pipeline(method, dae=dae_dir, s2l=s2l_dir, options=opts)
  return np.concatenate(list(pipeline(speech).frames))


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog='python -m daetalker_jax.generate',
                              description='Speech audio → talking-face mp4.')
  p.add_argument('--method', default='dae_talker', choices=inference.METHODS,
                 help='which method generates (default dae_talker)')
  p.add_argument('--audio', required=True, help='speech file (any ffmpeg-readable audio or video)')
  p.add_argument('--out', required=True, help='output .mp4')
  p.add_argument('--steps', type=int, default=None, help='DDIM steps (default 20; difftalk 50)')
  g = p.add_argument_group('dae_talker (person-specific)')
  g.add_argument('--dae', default='', help='DAE training workdir (task dae)')
  g.add_argument('--s2l', default='', help='speech2latent training workdir (task s2l)')
  p.add_argument('--guidance', type=float, default=None,
                 help="dae_talker: mean-latent guidance scale, 1 = off, 2 = each frame's latent counts twice its "
                      "distance from the average face (default: the DAE config's diffusion.guidance); landmark: "
                      "mean-mouth guidance, the same with the clip's average mouth (default: the model config's); "
                      "doubles the UNet calls")
  p.add_argument('--noise', default='seed:0', help='shared x_T: seed:N or invert:CLIP_ID:FRAME (needs --data)')
  p.add_argument('--pose', default='predicted', help=pose_lib.POSE_CHOICES + ' (degrees)')
  p.add_argument('--pose-scale', type=float, default=1.0, help='multiplies the head pose (default 1)')
  p.add_argument('--smooth', type=float, default=None,
                 help='Gaussian sigma over time, frames: of the latents (dae_talker, default 0) or of the landmark '
                      'track (landmark, default 0.5; centred, no lag)')
  p.add_argument('--batch', type=int, default=16, help='frames per DDIM batch (default 16)')
  p.add_argument('--bf16', action='store_true', help='DAE computes in bfloat16')
  p.add_argument('--data', default='', help='prepared dataset (for invert:, reference:, --paste-back)')
  p.add_argument('--paste-back', default='', help='source video to paste the face back into (needs --data)')
  p.add_argument('--chunk-seconds', type=float, default=30.0, help='speech2latent window (default 30 s)')
  p.add_argument('--overlap-seconds', type=float, default=2.0, help='crossfaded window overlap (default 2 s)')
  p.add_argument('--quiet', action='store_true', help='no progress bar')
  g = p.add_argument_group('difftalk and landmark (any face)')
  g.add_argument('--model', default='', help='DiffTalk (task difftalk) or landmark-diffusion (task talkformer) '
                                             'training workdir')
  g.add_argument('--video', default='', help='source video to dub (pose, upper face, background kept)')
  g.add_argument('--image', default='', help='or one photo to animate (reference and target)')
  g.add_argument('--clip', default='', help='or a prepared dataset clip id (needs --data; writes the crops)')
  g.add_argument('--length', default='loop', choices=('loop', 'trim'),
                 help='audio longer than the video: loop the video back and forth, or trim the audio')
  g.add_argument('--no-inpaint', action='store_true', help='generate the whole face, not only the jaw region')
  g.add_argument('--seed', type=int, default=0, help='the shared x_T (default 0)')
  g = p.add_argument_group('landmark')
  g.add_argument('--landmarks', default='',
                 help='drive the mouth from a landmark track (.npy/.npz, (frames, 68|29, 2) fractions of the face '
                      'crop) instead of the audio')
  g.add_argument('--motion-scale', type=float, default=None,
                 help="gain on Stage A's mouth motion around the clip's mean mouth (default: the model config's "
                      "track.motion_scale; 1 = as predicted)")
  return p


def pipeline_kwargs(args: argparse.Namespace) -> dict[str, Any]:
  """The `inference.load_pipeline` arguments of the parsed flags for args.method."""
  if args.landmarks and args.method != 'landmark':
    raise GenerateError('--landmarks drives --method landmark only')
  if args.guidance is not None and args.method == 'difftalk':
    raise GenerateError('--guidance is for --method dae_talker and landmark')
  if args.motion_scale is not None and args.method != 'landmark':
    raise GenerateError('--motion-scale is for --method landmark')
  if args.method in ('difftalk', 'landmark'):
    if not args.model:
      task = {'difftalk': 'difftalk', 'landmark': 'talkformer'}[args.method]
      raise GenerateError(f'--method {args.method} needs --model WORKDIR (a {task} training workdir)')
    common = dict(video=args.video, image=args.image, clip=args.clip, data_dir=args.data,
                  steps=50 if args.steps is None else args.steps,
                  seed=args.seed, batch=args.batch, inpaint=not args.no_inpaint, length=args.length)
    if args.method == 'landmark':
      opts = inference.LandmarkOptions(**common, landmarks=args.landmarks, guidance=args.guidance,
                                       motion_scale=args.motion_scale,
                                       smooth=0.5 if args.smooth is None else args.smooth)
    else:
      opts = inference.DiffTalkOptions(**common)
    return dict(model=args.model, options=opts)
  if not args.dae or not args.s2l:
    raise GenerateError('--method dae_talker needs --dae DAE_WORKDIR and --s2l S2L_WORKDIR')
  opts = Options(steps=20 if args.steps is None else args.steps, guidance=args.guidance, noise=args.noise,
                 pose=args.pose, pose_scale=args.pose_scale,
                 smooth=args.smooth or 0.0, batch=args.batch, bf16=args.bf16, data_dir=args.data,
                 paste_back=args.paste_back, chunk_frames=int(round(args.chunk_seconds * contract.FPS)),
                 overlap_frames=int(round(args.overlap_seconds * contract.FPS)))
  return dict(dae=args.dae, s2l=args.s2l, options=opts)


def main(argv: list[str] | None = None) -> int:
  args = _parser().parse_args(argv)
  try:
    s = generate_with(args.method, args.audio, args.out, pipeline_kwargs(args), progress=not args.quiet)
  except (GenerateError, video_io.VideoError, OSError) as e:
    print(f'error: {" ".join(str(e).split())}', file=sys.stderr)
    return 1
  print(f'{s["out"]}: {s["frames"]} frames, {s["seconds"]:.2f} s of video, wall {s["wall_s"]:.1f} s, '
        f'{s["fps"]:.2f} frames/s')
  if s['frames_without_face']:
    print(f'{s["frames_without_face"]} source frames had no face and were passed through untouched')
  return 0


if __name__ == '__main__':
  sys.exit(main())
