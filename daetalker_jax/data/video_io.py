"""Streaming video decode / encode with the ffmpeg binary that imageio-ffmpeg ships.

Our data contract is 25 fps video with 16 kHz mono audio, so that audio samples
[640*k, 640*(k+1)) belong to frame k. `read_video` gives exactly that, whatever the source rate:
frames are resampled by ffmpeg's `fps` filter and streamed one at a time (a long video never sits
in memory as pixels), the audio is resampled to 16 kHz and shifted by the difference of the two
streams' start times, then padded / trimmed to `num_frames * 640` samples.

`VideoWriter` is the inverse: feed RGB frames, `close()` muxes h264 + AAC into an mp4 that is
written under a temporary name and renamed on success, so a crash never leaves a half-written file
that looks complete.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import subprocess
import tempfile
from collections.abc import Iterator

import av
import imageio_ffmpeg
import numpy as np
import soundfile as sf

from daetalker_jax.data import contract
from daetalker_jax.data.contract import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME  # also video_io.FPS etc. for callers

# A decode that yields fewer frames than the container's duration promises by more than this is
# reported as a truncated file (a few frames of slack for rounding and encoder delay).
_TRUNCATION_SLACK_FRAMES = 3
_TRUNCATION_SLACK_FRACTION = 0.02


class VideoError(ValueError):
  """A video file cannot be used; the message names the file and the problem (one line)."""


def ffmpeg_exe() -> str:
  return imageio_ffmpeg.get_ffmpeg_exe()


@dataclasses.dataclass(frozen=True)
class VideoInfo:
  """What `probe` learns from the container without decoding it."""
  path: str
  duration: float          # seconds (container duration)
  fps: float               # native average frame rate of the first video stream
  width: int               # native size in pixels
  height: int
  has_audio: bool
  audio_sample_rate: int   # native rate of the first audio stream (0 without audio)
  video_start: float       # start time of the video stream (s)
  audio_start: float       # start time of the audio stream (s; 0 without audio)

  @property
  def expected_frames(self) -> int:
    """Frames the fps=25 resampling should give for the container duration."""
    return int(round(self.duration * FPS))


def _one_line(msg: str) -> str:
  return ' '.join(str(msg).split())


def probe(path: str | os.PathLike[str]) -> VideoInfo:
  """Reads stream metadata (PyAV); raises VideoError naming the file for anything unusable."""
  path = str(path)
  if not os.path.isfile(path):
    raise VideoError(f'{path}: no such file')
  try:
    with av.open(path) as container:
      videos = [s for s in container.streams if s.type == 'video']
      audios = [s for s in container.streams if s.type == 'audio']
      if not videos:
        raise VideoError(f'{path}: no video stream')
      v = videos[0]

      def start(s) -> float:
        if s.start_time is None or s.time_base is None:
          return 0.0
        return float(s.start_time * s.time_base)

      def stream_duration(s) -> float:
        if s.duration is None or s.time_base is None:
          return 0.0
        return float(s.duration * s.time_base)

      duration = float(container.duration) / av.time_base if container.duration else 0.0
      # Prefer the video stream's own duration: the container's includes audio that may run longer.
      if stream_duration(v) > 0:
        duration = stream_duration(v)
      rate = v.average_rate or v.guessed_rate or v.base_rate
      fps = float(rate) if rate else 0.0
      width = v.codec_context.width
      height = v.codec_context.height
      a = audios[0] if audios else None
      info = VideoInfo(
          path=path, duration=duration, fps=fps, width=int(width), height=int(height),
          has_audio=a is not None,
          audio_sample_rate=int(a.codec_context.sample_rate or 0) if a is not None else 0,
          video_start=start(v), audio_start=start(a) if a is not None else 0.0)
  except VideoError:
    raise
  except (av.error.FFmpegError, OSError, ValueError) as e:
    reason = getattr(e, 'strerror', None) or _one_line(e)
    raise VideoError(f'{path}: not a readable video, or truncated ({reason})') from None
  if info.width <= 0 or info.height <= 0:
    raise VideoError(f'{path}: video stream has no frame size')
  if info.duration <= 0:
    raise VideoError(f'{path}: video has zero duration')
  return info


def read_audio_track(path: str | os.PathLike[str], sample_rate: int = SAMPLE_RATE) -> np.ndarray:
  """Decodes the first audio stream to mono float32 at `sample_rate` (no alignment; see read_video)."""
  path = str(path)
  cmd = [ffmpeg_exe(), '-nostdin', '-v', 'error', '-i', path, '-map', '0:a:0', '-vn',
         '-ac', '1', '-ar', str(sample_rate), '-f', 'f32le', '-']
  proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
  if proc.returncode != 0:
    err = _one_line(proc.stderr.decode(errors='replace'))[-300:]
    if 'matches no streams' in err or 'does not contain any stream' in err:
      raise VideoError(f'{path}: no audio track')
    raise VideoError(f'{path}: audio decode failed ({err or "ffmpeg exit " + str(proc.returncode)})')
  return np.frombuffer(proc.stdout, np.float32).copy()


def align_audio(audio: np.ndarray, num_frames: int, offset_seconds: float,
                sample_rate: int = SAMPLE_RATE, fps: int = FPS) -> np.ndarray:
  """Shifts and pads/trims `audio` so that sample (sr/fps)*k starts with frame k.

  offset_seconds = video_start - audio_start: positive means the audio started earlier than the
  first frame, so its first samples belong before frame 0 and are dropped; negative means the audio
  starts late and is preceded by silence.
  """
  per_frame = sample_rate // fps
  shift = int(round(offset_seconds * sample_rate))
  if shift > 0:
    audio = audio[shift:]
  elif shift < 0:
    audio = np.concatenate([np.zeros(-shift, audio.dtype), audio])
  n = num_frames * per_frame
  if len(audio) >= n:
    return audio[:n]
  return np.concatenate([audio, np.zeros(n - len(audio), audio.dtype)])


def iter_frames(path: str | os.PathLike[str], info: VideoInfo | None = None,
                fps: int = FPS) -> Iterator[np.ndarray]:
  """Streams frames as uint8 (H, W, 3) RGB arrays, resampled to `fps` by ffmpeg's fps filter.

  Raises VideoError when ffmpeg fails or the file is shorter than its container says (truncated).
  """
  path = str(path)
  info = info or probe(path)
  w, h = info.width, info.height
  frame_bytes = w * h * 3
  cmd = [ffmpeg_exe(), '-nostdin', '-v', 'error', '-i', path, '-map', '0:v:0', '-an', '-sn',
         '-vf', f'fps={fps}', '-f', 'rawvideo', '-pix_fmt', 'rgb24', '-']
  with tempfile.TemporaryFile() as errf:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errf)
    count = 0
    try:
      while True:
        buf = proc.stdout.read(frame_bytes)
        if not buf:
          break
        if len(buf) != frame_bytes:
          raise VideoError(f'{path}: truncated frame {count} ({len(buf)} of {frame_bytes} bytes)')
        count += 1
        yield np.frombuffer(buf, np.uint8).reshape(h, w, 3)
      rc = proc.wait()
    finally:
      if proc.poll() is None:  # consumer stopped early or an error: do not leave ffmpeg running
        proc.kill()
        proc.wait()
      proc.stdout.close()
    errf.seek(0)
    err = _one_line(errf.read().decode(errors='replace'))
  if rc != 0:
    raise VideoError(f'{path}: video decode failed ({err[-300:] or "ffmpeg exit " + str(rc)})')
  expected = info.expected_frames
  if count == 0:
    raise VideoError(f'{path}: no frames could be decoded')
  if count < expected - max(_TRUNCATION_SLACK_FRAMES, _TRUNCATION_SLACK_FRACTION * expected):
    raise VideoError(f'{path}: truncated video: decoded {count} of {expected} frames '
                     f'({info.duration:.2f}s in the container)')


@dataclasses.dataclass
class DecodedVideo:
  """A video opened for streaming: `frames` is a one-shot generator; `audio_for(n)` aligns audio."""
  info: VideoInfo
  frames: Iterator[np.ndarray]   # uint8 (H, W, 3) RGB at 25 fps
  raw_audio: np.ndarray          # float32 mono 16 kHz, starting at the audio stream's start

  def audio_for(self, num_frames: int) -> np.ndarray:
    """float32 (num_frames*640,) in [-1, 1]; sample 640*k belongs to frame k."""
    return align_audio(self.raw_audio, num_frames, self.info.video_start - self.info.audio_start)


def read_video(path: str | os.PathLike[str], *, require_audio: bool = True) -> DecodedVideo:
  """Probes `path`, decodes its audio (small) and returns a streaming frame generator."""
  info = probe(path)
  if info.has_audio:
    audio = read_audio_track(path)
  elif require_audio:
    raise VideoError(f'{path}: no audio track')
  else:
    audio = np.zeros(0, np.float32)
  return DecodedVideo(info=info, frames=iter_frames(path, info), raw_audio=audio)


to_int16 = contract.float_to_int16   # float [-1, 1] → int16; the inverse of every reader's int16 / 32768


class VideoWriter:
  """Streams RGB frames into an h264 mp4, optionally muxing 16 kHz audio as AAC.

  Usage:
    with VideoWriter('out.mp4', fps=25, size=128, audio=wave) as w:
      for frame in frames: w.write(frame)      # uint8 (H, W, 3) RGB
  `size` is an int (square) or (width, height). The file appears under its final name only after
  `close()` succeeded; on an exception inside the `with` block the partial file is removed.
  """

  def __init__(self, path: str | os.PathLike[str], fps: float = FPS,
               size: int | tuple[int, int] = 128, audio: np.ndarray | None = None,
               sample_rate: int = SAMPLE_RATE, crf: int = 18):
    self.path = pathlib.Path(path)
    self.width, self.height = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if self.width % 2 or self.height % 2:
      raise ValueError(f'{self.path}: yuv420p h264 needs even frame sizes, got {self.width}x{self.height}')
    self.fps = fps
    self.num_frames = 0
    self.path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{self.path.stem}.tmp-', suffix='.mp4', dir=self.path.parent)
    os.close(fd)
    self._tmp = pathlib.Path(tmp)
    self._wav = None
    cmd = [ffmpeg_exe(), '-nostdin', '-v', 'error', '-y',
           '-f', 'rawvideo', '-pix_fmt', 'rgb24', '-s', f'{self.width}x{self.height}',
           '-r', str(fps), '-i', '-']
    if audio is not None:
      audio = np.asarray(audio)
      if audio.ndim != 1:
        raise ValueError(f'{self.path}: audio must be mono (T,), got shape {audio.shape}')
      fd, wav = tempfile.mkstemp(prefix=f'.{self.path.stem}.audio-', suffix='.wav', dir=self.path.parent)
      os.close(fd)
      self._wav = pathlib.Path(wav)
      data = audio if audio.dtype == np.int16 else to_int16(audio)
      sf.write(self._wav, data, sample_rate, subtype='PCM_16')
      cmd += ['-i', str(self._wav), '-map', '0:v:0', '-map', '1:a:0',
              '-c:a', 'aac', '-b:a', '96k', '-ar', str(sample_rate), '-ac', '1']
    cmd += ['-c:v', 'libx264', '-pix_fmt', 'yuv420p', '-crf', str(crf), '-preset', 'veryfast',
            '-movflags', '+faststart', '-f', 'mp4', str(self._tmp)]
    self._errf = tempfile.TemporaryFile()
    self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=self._errf)
    self._closed = False

  def write(self, frame: np.ndarray) -> None:
    frame = np.asarray(frame)
    if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
      raise ValueError(f'{self.path}: expected uint8 frames of shape {(self.height, self.width, 3)}, '
                       f'got {frame.dtype} {frame.shape}')
    try:
      self._proc.stdin.write(np.ascontiguousarray(frame).tobytes())
    except BrokenPipeError:
      self.abort()
      raise OSError(f'{self.path}: ffmpeg stopped: {self._error()}') from None
    self.num_frames += 1

  def _error(self) -> str:
    self._errf.seek(0)
    return _one_line(self._errf.read().decode(errors='replace'))[-300:]

  def close(self) -> pathlib.Path:
    """Finishes encoding and renames the temp file to `path`."""
    if self._closed:
      return self.path
    self._closed = True
    try:
      self._proc.stdin.close()
    except BrokenPipeError:
      pass
    rc = self._proc.wait()
    err = self._error()
    self._errf.close()
    if self._wav is not None:
      self._wav.unlink(missing_ok=True)
    if rc != 0 or self.num_frames == 0:
      self._tmp.unlink(missing_ok=True)
      raise OSError(f'{self.path}: encoding failed ({err or "no frames written"})')
    os.replace(self._tmp, self.path)
    return self.path

  def abort(self) -> None:
    """Stops ffmpeg and removes every temporary file; `path` is left untouched."""
    if self._closed:
      return
    self._closed = True
    if self._proc.poll() is None:
      self._proc.kill()
    self._proc.wait()
    try:
      self._proc.stdin.close()
    except (BrokenPipeError, OSError):
      pass
    self._tmp.unlink(missing_ok=True)
    if self._wav is not None:
      self._wav.unlink(missing_ok=True)

  def __enter__(self) -> VideoWriter:
    return self

  def __exit__(self, exc_type, exc, tb) -> None:
    if exc_type is None:
      self.close()
    else:
      self.abort()
