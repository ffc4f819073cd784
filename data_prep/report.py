"""The validation report of a real-video dataset build: is this footage good enough to train on?

`data_prep.prepare` feeds one `SourceStats` per source file while it streams (every frame's
`FrameAnnotation` and the audio), then `build_report` turns the summaries into a report with
warnings, printed and saved next to the dataset:

    stats = SourceStats(path, fps_found=info.fps, duration=info.duration)
    for ann in annotations: stats.add_annotation(ann); ...
    stats.add_audio(audio)                      # float [-1, 1] or int16, whole or in chunks
    report = build_report([stats.summary()], target_size=128)
    report.print_report(); report.save_report(out / 'report.json')

Warnings (thresholds are the module constants below):
  short footage      less than 3 minutes kept in total (DAE-Talker trains on ~10+ minutes of one
                     speaker; a few minutes already overfit);
  small face         the median crop box is smaller than the target resolution, so crops are
                     upsampled and blurry;
  heavy pose         more than 5% of kept frames have |yaw| > 30 deg (the 68-point model and the
                     crop degrade there, and the generator rarely needs such poses);
  low coverage       fewer than half of the frames kept a face;
  mostly silence     more than half of the audio frames are below -40 dBFS;
  clipping           more than 0.1% of the samples at full scale;
  low fps            the source has fewer than 23 fps, so resampling to 25 fps repeats frames.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import os
import sys
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

import numpy as np

from daetalker_jax import atomic
from daetalker_jax.data import contract
from daetalker_jax.data.contract import FPS, SAMPLE_RATE

MIN_TOTAL_SECONDS = 180.0
HEAVY_YAW_DEG = 30.0
HEAVY_POSE_FRACTION = 0.05
MIN_COVERAGE = 0.5
SILENCE_DBFS = -40.0
MAX_SILENCE_FRACTION = 0.5
CLIP_LEVEL = 0.999            # |sample| at or above this (of full scale) counts as clipped
MAX_CLIPPING_FRACTION = 1e-3
MIN_SOURCE_FPS = 23.0


def dbfs(rms: float) -> float:
  """Level of an RMS value relative to full scale (1.0); -120 for silence."""
  return 20.0 * math.log10(rms) if rms > 1e-6 else -120.0


class SourceStats:
  """Streaming statistics of one source file: frames (annotations) and audio."""

  def __init__(self, source: str, *, fps_found: float | None = None,
               duration: float | None = None, sample_rate: int = SAMPLE_RATE):
    """Args:
      source: the file name, as the report shows it.
      fps_found: the container's native frame rate (before resampling to 25 fps).
      duration: the container's duration in seconds.
      sample_rate: rate of the audio given to `add_audio`.
    """
    self.source = str(source)
    self.fps_found = fps_found
    self.duration = duration
    self.sample_rate = int(sample_rate)
    self.frames = 0
    self.kept = 0
    self.dropped: collections.Counter = collections.Counter()
    self._box_px: list[float] = []
    self._poses: list[tuple[float, float, float]] = []
    # Audio accumulators.
    self._window = max(1, self.sample_rate // FPS)  # samples per video frame: silence is judged per frame
    self._rest = np.zeros(0, np.float64)
    self._samples = 0
    self._sum_sq = 0.0
    self._peak = 0.0
    self._clipped = 0
    self._audio_frames = 0
    self._silent_frames = 0
    self.warnings: list[str] = []   # found by the caller (e.g. audio ending before the video)

  def add_annotation(self, ann: Any) -> None:
    """One frame's result (a face.FrameAnnotation, or anything with drop_reason/box/pose)."""
    self.frames += 1
    if ann.drop_reason is not None:
      self.dropped[ann.drop_reason] += 1
      return
    self.kept += 1
    if ann.box is not None:
      self._box_px.append(float(ann.box[2] - ann.box[0]))
    if ann.pose is not None:
      self._poses.append(tuple(float(v) for v in ann.pose))

  def add_audio(self, samples: np.ndarray) -> None:
    """Audio samples (mono; float in [-1, 1] or int16), in one piece or successive chunks."""
    x = np.asarray(samples)
    if x.dtype == np.int16:
      x = contract.int16_to_float(x, np.float64)
    x = np.asarray(x, np.float64).reshape(-1)
    if not np.all(np.isfinite(x)):
      raise ValueError(f'{self.source}: audio contains NaN/Inf samples')
    self._samples += x.size
    self._sum_sq += float(np.sum(x * x))
    if x.size:
      self._peak = max(self._peak, float(np.max(np.abs(x))))
    self._clipped += int(np.count_nonzero(np.abs(x) >= CLIP_LEVEL))
    x = np.concatenate([self._rest, x])
    n = x.size // self._window
    if n:
      frames = x[:n * self._window].reshape(n, self._window)
      rms = np.sqrt(np.mean(frames * frames, axis=1))
      self._audio_frames += n
      self._silent_frames += int(np.count_nonzero(rms < 10 ** (SILENCE_DBFS / 20)))
    self._rest = x[n * self._window:]

  def summary(self) -> dict:
    """JSON-ready per-source numbers."""
    poses = np.asarray(self._poses, np.float64).reshape(-1, 3)
    pose = None
    if len(poses):
      pose = {name: dict(min=round(float(poses[:, i].min()), 2),
                         max=round(float(poses[:, i].max()), 2),
                         median=round(float(np.median(poses[:, i])), 2))
              for i, name in enumerate(('yaw', 'pitch', 'roll'))}
    audio = None
    if self._samples:
      audio = dict(
          seconds=round(self._samples / self.sample_rate, 3),
          rms_dbfs=round(dbfs(math.sqrt(self._sum_sq / self._samples)), 2),
          peak_dbfs=round(dbfs(self._peak), 2),
          clipping_fraction=round(self._clipped / self._samples, 6),
          silence_fraction=round(self._silent_frames / max(self._audio_frames, 1), 4))
    return dict(
        source=self.source,
        duration_s=None if self.duration is None else round(float(self.duration), 3),
        fps_found=None if self.fps_found is None else round(float(self.fps_found), 3),
        frames=self.frames, frames_kept=self.kept, frames_dropped=dict(self.dropped),
        kept_seconds=round(self.kept / FPS, 2),
        face_px_median=round(float(np.median(self._box_px)), 1) if self._box_px else None,
        heavy_yaw_fraction=round(float(np.mean(np.abs(poses[:, 0]) > HEAVY_YAW_DEG)), 4)
        if len(poses) else None,
        pose=pose, audio=audio, warnings=list(self.warnings))


def _source_warnings(s: dict, target_size: int) -> list[str]:
  out = []
  if s['frames'] and s['frames_kept'] / s['frames'] < MIN_COVERAGE:
    out.append(f'low coverage: a face was kept in {s["frames_kept"]}/{s["frames"]} frames '
               f'(dropped: {s["frames_dropped"]})')
  if s['face_px_median'] is not None and s['face_px_median'] < target_size:
    out.append(f'small face: median crop box {s["face_px_median"]:.0f} px < target '
               f'{target_size} px (crops are upsampled)')
  if s['heavy_yaw_fraction'] is not None and s['heavy_yaw_fraction'] > HEAVY_POSE_FRACTION:
    yaw = s['pose']['yaw']
    out.append(f'heavy pose: {100 * s["heavy_yaw_fraction"]:.0f}% of frames with |yaw| > '
               f'{HEAVY_YAW_DEG:.0f} deg (yaw {yaw["min"]:.0f}..{yaw["max"]:.0f})')
  a = s['audio']
  if a is not None:
    if a['silence_fraction'] > MAX_SILENCE_FRACTION:
      out.append(f'mostly silence: {100 * a["silence_fraction"]:.0f}% of the audio below '
                 f'{SILENCE_DBFS:.0f} dBFS')
    if a['clipping_fraction'] > MAX_CLIPPING_FRACTION:
      out.append(f'clipping: {100 * a["clipping_fraction"]:.2f}% of samples at full scale')
  if s['fps_found'] is not None and 0 < s['fps_found'] < MIN_SOURCE_FPS:
    out.append(f'low fps: source has {s["fps_found"]:g} fps, resampling to {FPS} repeats frames')
  return out + list(s.get('warnings', []))


@dataclasses.dataclass
class ValidationReport:
  """Per-source summaries, totals and warnings (strings 'source: problem')."""
  sources: list[dict]
  totals: dict
  warnings: list[str]

  def to_dict(self) -> dict:
    return dict(totals=self.totals, warnings=self.warnings, sources=self.sources)

  def print_report(self, file: TextIO | None = None) -> None:
    """A human-readable summary: one line per source, then the warnings."""
    file = file or sys.stdout
    t = self.totals
    print(f'validation report: {t["sources"]} source(s), {t["kept_seconds"] / 60:.1f} min kept of '
          f'{t["seconds"] / 60:.1f} min ({100 * t["coverage"]:.0f}% coverage)', file=file)
    for s in self.sources:
      pose = s['pose']
      pose_txt = ' '.join(f'{k} {v["min"]:+.0f}..{v["max"]:+.0f}' for k, v in pose.items()) \
          if pose else 'no pose'
      a = s['audio']
      audio_txt = (f'audio {a["rms_dbfs"]:.1f} dBFS, silence {100 * a["silence_fraction"]:.0f}%, '
                   f'clip {100 * a["clipping_fraction"]:.2f}%') if a else 'no audio'
      face_txt = f'face {s["face_px_median"]:.0f}px' if s['face_px_median'] else 'no face'
      dur = f'{s["duration_s"]:.1f}s' if s['duration_s'] is not None else '?s'
      fps = f'{s["fps_found"]:g}fps' if s['fps_found'] is not None else '?fps'
      dropped = ', '.join(f'{k} {v}' for k, v in sorted(s['frames_dropped'].items())) or 'none'
      print(f'  {s["source"]}: {dur} {fps}, kept {s["frames_kept"]}/{s["frames"]} '
            f'(dropped: {dropped}), {face_txt}, {pose_txt}, {audio_txt}', file=file)
    for w in self.warnings:
      print(f'  WARNING {w}', file=file)
    if not self.warnings:
      print('  no warnings', file=file)

  def save_report(self, path: str | os.PathLike[str]) -> None:
    """Writes the report as JSON atomically (temp file + rename)."""
    atomic.write_json(path, self.to_dict())


def build_report(sources: Sequence[dict] | Iterable[SourceStats], *,
                 target_size: int) -> ValidationReport:
  """Summaries (dicts from `SourceStats.summary`, or SourceStats) → report with warnings."""
  summaries = [s.summary() if isinstance(s, SourceStats) else dict(s) for s in sources]
  warnings = []
  for s in summaries:
    warnings += [f'{s["source"]}: {w}' for w in _source_warnings(s, target_size)]
  frames = sum(s['frames'] for s in summaries)
  kept = sum(s['frames_kept'] for s in summaries)
  dropped = collections.Counter()
  for s in summaries:
    dropped.update(s['frames_dropped'])
  totals = dict(sources=len(summaries), frames=frames, frames_kept=kept,
                frames_dropped=dict(dropped), seconds=round(frames / FPS, 2),
                kept_seconds=round(kept / FPS, 2), coverage=round(kept / max(frames, 1), 4),
                target_size=int(target_size))
  if kept / FPS < MIN_TOTAL_SECONDS:
    warnings.insert(0, f'all sources: short footage: {kept / FPS / 60:.1f} min kept, less than '
                       f'{MIN_TOTAL_SECONDS / 60:.0f} min')
  return ValidationReport(sources=summaries, totals=totals, warnings=warnings)


def print_report(report: ValidationReport, file: TextIO | None = None) -> None:
  report.print_report(file)


def save_report(report: ValidationReport, path: str | os.PathLike[str]) -> None:
  report.save_report(path)
