"""Generation: speech audio → talking-face mp4, for any method of `daetalker_jax.inference`.

  python -m daetalker_jax.generate --audio speech.wav --dae DAE_WORKDIR --s2l S2L_WORKDIR --out video.mp4
  (--method dae_talker is the default and today's only method; docs/GENERATE.md has every option)

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
  """Writes the talking-face mp4 for `audio_path`; returns a summary dict (frames, wall time, frames/s).

  `frames_out`, if given, receives every batch of final uint8 frames (b, H, W, 3) before encoding.
  Nothing is written at `out_path` unless the whole video was encoded.
  """
  t0 = time.perf_counter()
  if not str(out_path).endswith('.mp4'):
    raise GenerateError(f'--out={out_path}: the output must be an .mp4 file')
  speech = loading.load_speech(audio_path)
  pipeline = inference.load_pipeline(method, dae=dae_dir, s2l=s2l_dir, options=opts)
  written = write_video(pipeline(speech), out_path, frames_out=frames_out, progress=progress)
  wall = time.perf_counter() - t0
  return dict(out=str(out_path), frames=written, seconds=written / contract.FPS, wall_s=wall,
              fps=written / wall if wall > 0 else float('inf'), compiles=pipeline.num_compiles())


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
  p.add_argument('--dae', required=True, help='DAE training workdir (task dae)')
  p.add_argument('--s2l', required=True, help='speech2latent training workdir (task s2l)')
  p.add_argument('--out', required=True, help='output .mp4')
  p.add_argument('--steps', type=int, default=20, help='DDIM steps (default 20)')
  p.add_argument('--noise', default='seed:0', help='shared x_T: seed:N or invert:CLIP_ID:FRAME (needs --data)')
  p.add_argument('--pose', default='predicted', help=pose_lib.POSE_CHOICES + ' (degrees)')
  p.add_argument('--pose-scale', type=float, default=1.0, help='multiplies the head pose (default 1)')
  p.add_argument('--smooth', type=float, default=0.0, help='Gaussian sigma over time for the latents, frames')
  p.add_argument('--batch', type=int, default=16, help='frames per DDIM batch (default 16)')
  p.add_argument('--bf16', action='store_true', help='DAE computes in bfloat16')
  p.add_argument('--data', default='', help='prepared dataset (for invert:, reference:, --paste-back)')
  p.add_argument('--paste-back', default='', help='source video to paste the face back into (needs --data)')
  p.add_argument('--chunk-seconds', type=float, default=30.0, help='speech2latent window (default 30 s)')
  p.add_argument('--overlap-seconds', type=float, default=2.0, help='crossfaded window overlap (default 2 s)')
  p.add_argument('--quiet', action='store_true', help='no progress bar')
  return p


def main(argv: list[str] | None = None) -> int:
  args = _parser().parse_args(argv)
  opts = Options(steps=args.steps, noise=args.noise, pose=args.pose, pose_scale=args.pose_scale,
                 smooth=args.smooth, batch=args.batch, bf16=args.bf16, data_dir=args.data,
                 paste_back=args.paste_back, chunk_frames=int(round(args.chunk_seconds * contract.FPS)),
                 overlap_frames=int(round(args.overlap_seconds * contract.FPS)))
  try:
    s = generate(args.audio, args.dae, args.s2l, args.out, opts, progress=not args.quiet, method=args.method)
  except (GenerateError, video_io.VideoError, OSError) as e:
    print(f'error: {" ".join(str(e).split())}', file=sys.stderr)
    return 1
  print(f'{s["out"]}: {s["frames"]} frames, {s["seconds"]:.2f} s of video, wall {s["wall_s"]:.1f} s, '
        f'{s["fps"]:.2f} frames/s')
  return 0


if __name__ == '__main__':
  sys.exit(main())
