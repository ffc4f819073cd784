"""A short test video with a real face: `skimage.data.astronaut()` moved, turned and scaled.

Each frame is the astronaut photo warped by a known similarity transform about her face centre
(shift, in-plane rotation, scale), so the tests know where the face is and how much it is rolled.
A few frames are blank (no face). `write_mp4` muxes the frames with an audio track (a buzzy tone
with a syllable-rate envelope and pauses) into an h264/AAC mp4 with the ffmpeg binary that
imageio-ffmpeg ships, for end-to-end tests of the real-video path.

    python -m tests._astronaut OUT.mp4   # writes the default 4 s clip
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tempfile

import cv2
import imageio_ffmpeg
import numpy as np
import skimage.data
import soundfile as sf

from daetalker_jax.data.contract import FPS, SAMPLE_RATE
# Centre of the astronaut's face (between the eyes and the nose tip) in the 512x512 photo.
FACE_CENTRE = (222.0, 126.0)


@dataclasses.dataclass
class AstronautVideo:
  frames: np.ndarray      # (N, H, W, 3) uint8 RGB
  anchor: np.ndarray      # (N, 2) float: where FACE_CENTRE lands in each frame (x, y) px
  cv_angle: np.ndarray    # (N,) rotation passed to cv2.getRotationMatrix2D (deg, counter-clockwise)
  scale: np.ndarray       # (N,) zoom
  blank: np.ndarray       # (N,) bool: frame without a face


def schedule(num_frames: int = 100) -> dict[str, np.ndarray]:
  """Per-frame motion: smooth shifts throughout; 12-frame holds of roll -5/+5/-10/+10 deg
  (cv2 angles +5/-5/+10/-10); 4 blank frames; a smooth zoom 1.0 → 1.3 → 0.85 at the end."""
  t = np.arange(num_frames)
  dx = 18.0 * np.sin(2 * np.pi * t / 60.0)
  dy = 8.0 * np.sin(2 * np.pi * t / 45.0 + 1.0)
  angle = np.zeros(num_frames)
  scale = np.ones(num_frames)
  blank = np.zeros(num_frames, bool)
  for k, a in enumerate((5.0, -5.0, 10.0, -10.0)):
    lo = 20 + 12 * k
    angle[lo:lo + 12] = a
  blank[68:72] = True
  zoom = t >= 72
  u = (t[zoom] - 72) / max(1, num_frames - 73)
  ease = lambda v: (1 - np.cos(np.pi * np.clip(v, 0, 1))) / 2  # noqa: E731
  scale[zoom] = np.where(u < 0.5, 1.0 + 0.3 * ease(2 * u), 1.3 - 0.45 * ease(2 * u - 1))
  return dict(dx=dx, dy=dy, angle=angle, scale=scale, blank=blank)


def make_video(num_frames: int = 100, width: int = 384, height: int = 288) -> AstronautVideo:
  """Renders the schedule; the face sits at (width/2, 0.45*height) + shift."""
  photo = skimage.data.astronaut()  # (512, 512, 3) uint8
  s = schedule(num_frames)
  frames = np.empty((num_frames, height, width, 3), np.uint8)
  anchor = np.empty((num_frames, 2))
  for i in range(num_frames):
    ax, ay = width / 2 + s['dx'][i], 0.45 * height + s['dy'][i]
    anchor[i] = ax, ay
    if s['blank'][i]:
      frames[i] = 128  # flat grey: nothing to find
      continue
    m = cv2.getRotationMatrix2D(FACE_CENTRE, float(s['angle'][i]), float(s['scale'][i]))
    m[:, 2] += (ax - FACE_CENTRE[0], ay - FACE_CENTRE[1])
    frames[i] = cv2.warpAffine(photo, m, (width, height), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REFLECT_101)
  return AstronautVideo(frames, anchor, s['angle'], s['scale'], s['blank'])


def make_audio(num_frames: int, sample_rate: int = SAMPLE_RATE, *, level: float = 0.3,
               silent_from: float | None = None) -> np.ndarray:
  """float32 (num_frames * sample_rate / FPS,): a 150 Hz buzz gated at ~4 syllables/s.

  `silent_from` (fraction of the duration) makes the rest silent (for the report's warnings).
  """
  n = num_frames * sample_rate // FPS
  t = np.arange(n) / sample_rate
  buzz = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 6))
  env = np.clip(np.sin(2 * np.pi * 4.0 * t), 0, None) ** 0.5
  audio = (level * buzz * env / np.max(np.abs(buzz))).astype(np.float32)
  if silent_from is not None:
    audio[int(silent_from * n):] = 0
  return audio


def write_mp4(path: str, frames: np.ndarray, audio: np.ndarray | None = None, *, fps: int = FPS,
              sample_rate: int = SAMPLE_RATE) -> None:
  """h264 (yuv420p, near-lossless crf 12) + AAC mp4 from RGB frames and float audio."""
  n, h, w, _ = frames.shape
  with tempfile.TemporaryDirectory() as tmp:
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), '-y', '-v', 'error', '-f', 'rawvideo',
           '-pix_fmt', 'rgb24', '-s', f'{w}x{h}', '-r', str(fps), '-i', '-']
    if audio is not None:
      wav = os.path.join(tmp, 'a.wav')
      sf.write(wav, audio, sample_rate, subtype='PCM_16')
      cmd += ['-i', wav, '-c:a', 'aac', '-b:a', '64k', '-ar', str(sample_rate), '-ac', '1']
    cmd += ['-c:v', 'libx264', '-preset', 'veryfast', '-crf', '12', '-pix_fmt', 'yuv420p',
            '-shortest', path]
    proc = subprocess.run(cmd, input=np.ascontiguousarray(frames).tobytes(),
                          stderr=subprocess.PIPE, check=False)
    if proc.returncode != 0:
      raise RuntimeError(f'{path}: ffmpeg failed: {proc.stderr.decode(errors="replace")[-300:]}')


def read_mp4(path: str) -> np.ndarray:
  """All frames of a small mp4 as (N, H, W, 3) uint8 RGB (tests only; prepare streams)."""
  reader = imageio_ffmpeg.read_frames(path, pix_fmt='rgb24')
  meta = next(reader)
  w, h = meta['size']
  return np.stack([np.frombuffer(f, np.uint8).reshape(h, w, 3) for f in reader])


if __name__ == '__main__':
  out = sys.argv[1] if len(sys.argv) > 1 else 'astronaut.mp4'
  video = make_video()
  write_mp4(out, video.frames, make_audio(len(video.frames)))
  print(f'wrote {out}: {len(video.frames)} frames at {FPS} fps')
