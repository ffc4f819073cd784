"""Tiny test videos made directly with the ffmpeg binary (independent of our VideoWriter).

Frame k shows a flat grey level `frame_level(k)` with a coloured square whose position moves, so
a test can tell which source frame it got; the audio is silence except for a 440 Hz tone during the
frames listed in `loud_frames`, so audio/video alignment can be checked to the frame.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import tempfile

import numpy as np
import soundfile as sf

from daetalker_jax.data import video_io


def frame_level(k: int) -> int:
  """Grey level of source frame k (distinct for the first 40 frames, survives h264 at crf 0-18)."""
  return 20 + (k * 5) % 200


def make_frames(num_frames: int, width: int, height: int) -> np.ndarray:
  frames = np.zeros((num_frames, height, width, 3), np.uint8)
  for k in range(num_frames):
    frames[k] = frame_level(k)
    s = max(2, min(width, height) // 4)
    x = (k * 2) % max(1, width - s)
    frames[k, :s, x:x + s] = (200, 40, 40)
  return frames


def make_audio(num_frames: int, fps: float, loud_frames=(), sr: int = 16_000) -> np.ndarray:
  n = int(round(num_frames / fps * sr))
  audio = np.zeros(n, np.float32)
  t = np.arange(n) / sr
  for k in loud_frames:
    a, b = int(round(k / fps * sr)), int(round((k + 1) / fps * sr))
    audio[a:b] = 0.5 * np.sin(2 * np.pi * 440 * t[a:b])
  return audio


def make_video(path: str | pathlib.Path, *, num_frames: int = 25, fps: float = 25, width: int = 48,
               height: int = 40, audio: bool = True, loud_frames=(), sr: int = 16_000,
               codec: str = 'libx264', sidecar: bool = False, crf: int = 4,
               faststart: bool = False) -> pathlib.Path:
  """Writes a small video (container from the suffix) and, optionally, a synthface-like sidecar."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  frames = make_frames(num_frames, width, height)
  cmd = [video_io.ffmpeg_exe(), '-nostdin', '-v', 'error', '-y', '-f', 'rawvideo', '-pix_fmt', 'rgb24',
         '-s', f'{width}x{height}', '-r', str(fps), '-i', '-']
  with tempfile.TemporaryDirectory() as tmp:
    if audio:
      wav = pathlib.Path(tmp) / 'a.wav'
      sf.write(wav, make_audio(num_frames, fps, loud_frames, sr), sr, subtype='PCM_16')
      acodec = 'libopus' if path.suffix == '.webm' else 'aac'
      cmd += ['-i', str(wav), '-map', '0:v', '-map', '1:a', '-c:a', acodec]
    vcodec = ['-c:v', 'libvpx-vp9', '-b:v', '0', '-crf', '10'] if path.suffix == '.webm' else [
        '-c:v', codec, '-pix_fmt', 'yuv420p', '-crf', str(crf)]
    cmd += vcodec + (['-movflags', '+faststart'] if faststart else []) + [str(path)]
    subprocess.run(cmd, input=frames.tobytes(), check=True)
  if sidecar:
    k = np.arange(num_frames)
    side = {'clip_id': path.stem, 'fps': 25, 'sample_rate': sr, 'size': width, 'num_frames': num_frames,
            'text': 'test', 'voice': {}, 'seed': 0,
            'frames': {'yaw': (10 * np.sin(k / 5)).tolist(), 'pitch': (5 * np.cos(k / 7)).tolist(),
                       'roll': (0.1 * k).tolist(), 'mouth_open': [0.0] * num_frames,
                       'mouth_width': [0.0] * num_frames, 'blink': [0.0] * num_frames,
                       'phoneme': ['_'] * num_frames}}
    path.with_suffix('.json').write_text(json.dumps(side))
  return path


def sidecar_pose(path: str | pathlib.Path) -> np.ndarray:
  """(N, 3) yaw/pitch/roll from the sidecar next to `path`."""
  side = json.loads(pathlib.Path(path).with_suffix('.json').read_text())['frames']
  return np.stack([side['yaw'], side['pitch'], side['roll']], -1).astype(np.float32)


LOUD = (5, 12, 31)  # source frames with a tone in every standard test video


def make_source_folder(folder: str | pathlib.Path) -> pathlib.Path:
  """Five small videos: three synthface-like clips with sidecars, a 60-frame mkv that a 1 s clip
  limit cuts into 25+25+10 frames, and a 30 fps mp4 (36 frames = 1.2 s → 30 frames at 25 fps)."""
  folder = pathlib.Path(folder)
  for i in range(3):
    make_video(folder / f'synth_{i:04d}.mp4', num_frames=20 + 4 * i, width=40, height=40,
               sidecar=True, loud_frames=LOUD)
  make_video(folder / 'sub' / 'long.mkv', num_frames=60, width=48, height=40, loud_frames=LOUD)
  make_video(folder / 'fast.mp4', num_frames=36, fps=30, width=40, height=40)
  return folder


def truncate(path: str | pathlib.Path, fraction: float = 0.5) -> pathlib.Path:
  path = pathlib.Path(path)
  data = path.read_bytes()
  path.write_bytes(data[:int(len(data) * fraction)])
  return path
