"""End-to-end acceptance of real-video preparation: `python -m data_prep.prepare --crop auto`.

The footage is the astronaut photo (a real face) moved, rolled and zoomed by known amounts
(tests/_astronaut.py), muxed into mp4 files with the ffmpeg binary of imageio-ffmpeg; the checks
read back what a user gets: the TFDS dataset, manifest.json, report.json and the printed lines.
Covered here (tests/test_prepare.py has the --crop none / box cases and malformed inputs):
face tracking through the CLI, no face anywhere, audio shorter than the video, 30 / 60 fps and
variable-frame-rate sources with audio/video alignment, a corrupt file among good ones.
"""

import json
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np
import pytest
import soundfile as sf

from daetalker_jax.data import contract
from daetalker_jax.data import dataset
from daetalker_jax.data import video_io
from data_prep import prepare
from tests import _astronaut


# Its module fixtures are built once: pytest-xdist runs the whole module on one worker.
pytestmark = pytest.mark.xdist_group('prepare_real')


SIZE = 64
REPO = pathlib.Path(__file__).resolve().parents[1]
SR = 16_000


def mux(path: pathlib.Path, frames: np.ndarray, audio: np.ndarray | None, *, fps: float = 25,
        vf: str | None = None, vfr: bool = False, faststart: bool = False) -> pathlib.Path:
  """h264/AAC mp4 from RGB frames at `fps` and 16 kHz audio, each stream keeping its own length
  (no -shortest); `vf` filters the video (e.g. select to make it variable-frame-rate)."""
  path.parent.mkdir(parents=True, exist_ok=True)
  n, h, w, _ = frames.shape
  cmd = [video_io.ffmpeg_exe(), '-nostdin', '-y', '-v', 'error', '-f', 'rawvideo', '-pix_fmt', 'rgb24',
         '-s', f'{w}x{h}', '-r', str(fps), '-i', '-']
  with tempfile.TemporaryDirectory() as tmp:
    if audio is not None:
      wav = os.path.join(tmp, 'a.wav')
      sf.write(wav, audio, SR, subtype='PCM_16')
      cmd += ['-i', wav, '-map', '0:v', '-map', '1:a', '-c:a', 'aac', '-b:a', '64k', '-ar', str(SR),
              '-ac', '1']
    if vf:
      cmd += ['-vf', vf]
    if vfr:
      cmd += ['-fps_mode', 'vfr']
    cmd += ['-c:v', 'libx264', '-preset', 'veryfast', '-crf', '14', '-pix_fmt', 'yuv420p']
    cmd += (['-movflags', '+faststart'] if faststart else []) + [str(path)]
    proc = subprocess.run(cmd, input=np.ascontiguousarray(frames).tobytes(), stderr=subprocess.PIPE,
                          check=False)
  assert proc.returncode == 0, proc.stderr.decode(errors='replace')[-400:]
  return path


def run_cli(src, out, *extra) -> int:
  return prepare.main(['--src', str(src), '--out', str(out), '--size', str(SIZE), '--crop', 'auto',
                       *extra])


def all_clips(out) -> list[dict]:
  clips = [c for s in ('train', 'val', 'test') for c in dataset.iterate_clips(out, s)]
  return sorted(clips, key=lambda c: (c['source'], c['start_frame']))


def per_frame(clips: list[dict], total: int):
  """Clips of one source → per source-frame arrays (NaN / False where a frame is not stored):
  crop centre (T, 2), box side (T,), pose (T, 3), crop brightness (T,), kept (T,), audio (T*640,)."""
  centre = np.full((total, 2), np.nan)
  side = np.full(total, np.nan)
  pose = np.full((total, 3), np.nan)
  bright = np.full(total, np.nan)
  kept = np.zeros(total, bool)
  audio = np.zeros(total * 640)
  for c in clips:
    k = c['start_frame'] + np.arange(c['num_frames'])
    assert c['audio'].shape == (c['num_frames'] * 640,)
    assert not kept[k].any(), 'a source frame stored twice'
    kept[k] = True
    box = c['box'].astype(np.float64)
    centre[k] = (box[:, :2] + box[:, 2:]) / 2
    side[k] = box[:, 2] - box[:, 0]
    pose[k] = c['pose']
    bright[k] = c['images'].reshape(len(k), -1).mean(1)
    audio[k[0] * 640:(k[-1] + 1) * 640] = contract.int16_to_float(c['audio'], np.float64)
  return centre, side, pose, bright, kept, audio


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
  """[lo, hi) index ranges of consecutive True values."""
  edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
  return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))


def no_leftovers(parent: pathlib.Path, name: str) -> None:
  left = [p.name for p in parent.iterdir() if p.name.lstrip('.').startswith(name)]   # temp folders are hidden
  assert not left, f'left behind: {left}'


# ------------------------------------------------------------------------------------------------
# 1. The astronaut video through `python -m data_prep.prepare --crop auto`.
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope='module')
def astronaut_build(tmp_path_factory):
  """Runs the real CLI in a subprocess (as a user would, so `--crop auto` must register itself
  under `python -m`); returns the video, the dataset folder and the CLI's stdout/stderr."""
  root = tmp_path_factory.mktemp('astro')
  video = _astronaut.make_video()  # 100 frames, 384x288: shifts, rolls +-5/+-10, 4 blank, zoom
  mux(root / 'src' / 'astronaut.mp4', video.frames, _astronaut.make_audio(len(video.frames)))
  out = root / 'data'
  env = dict(os.environ, PYTHONPATH=str(REPO))
  proc = subprocess.run([sys.executable, '-m', 'data_prep.prepare', '--src', str(root / 'src'),
                         '--out', str(out), '--size', str(SIZE), '--crop', 'auto'],
                        cwd=REPO, env=env, capture_output=True, text=True, check=False, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  return video, out, proc.stdout, proc.stderr


def test_astronaut_frames_kept_and_blank_dropped(astronaut_build):
  video, out, _, _ = astronaut_build
  n = len(video.frames)
  clips = all_clips(out)
  _, _, _, _, kept, _ = per_frame(clips, n)
  np.testing.assert_array_equal(kept, ~video.blank)  # every face frame, none of the blank ones
  # The blank frames split the video into two clips.
  assert [(c['start_frame'], c['num_frames']) for c in clips] == [(0, 68), (72, 28)]
  for c in clips:
    assert c['images'].shape == (c['num_frames'], SIZE, SIZE, 3)
    assert c['landmarks_valid'].all()
    lm = c['landmarks']
    assert np.all((lm > 0) & (lm < SIZE))  # 68 landmarks inside the crop, in crop pixels
  manifest = json.loads((out / 'manifest.json').read_text())
  (src,) = manifest['sources']
  assert src['status'] == 'ok' and src['face_detector'] == 'dlib'
  assert src['frames_decoded'] == n and src['frames_kept'] == n - video.blank.sum()
  assert src['frames_dropped'] == {'no_face': int(video.blank.sum())}
  assert src['landmark_frames'] == src['frames_kept']


def test_astronaut_crops_follow_the_face_smoothly(astronaut_build):
  video, out, _, _ = astronaut_build
  centre, side, _, _, kept, _ = per_frame(all_clips(out), len(video.frames))
  # The known face centre lies in the middle part of every crop.
  off = (video.anchor - centre) / side[:, None]
  assert np.all(np.abs(off[kept]) < 0.2), np.nanmax(np.abs(off))
  # Second difference of the crop centre within each clip: raw, and relative to the known motion.
  raw, rel = [], []
  for lo, hi in runs(kept):
    raw.append(np.diff(centre[lo:hi], 2, axis=0))
    rel.append(np.diff(centre[lo:hi] - video.anchor[lo:hi], 2, axis=0))
  rms = lambda d: float(np.sqrt(np.mean(np.concatenate(d) ** 2)))  # noqa: E731
  print(f'\n[prepare auto] crop-centre jitter (RMS 2nd difference): {rms(raw):.2f} px raw, '
        f'{rms(rel):.2f} px relative to the known face motion; crop side '
        f'{np.nanmedian(side[:20]):.0f} px')
  assert rms(rel) < 1.0 and rms(raw) < 1.5
  # The crop follows the zoom (1.3x at its peak).
  peak = int(np.argmax(video.scale))
  assert side[peak] / np.nanmedian(side[:20]) == pytest.approx(video.scale[peak], rel=0.06)


def test_astronaut_pose(astronaut_build):
  video, out, _, _ = astronaut_build
  _, _, pose, _, kept, _ = per_frame(all_clips(out), len(video.frames))
  frontal = kept & (video.cv_angle == 0)
  yaw, pitch, roll = pose[frontal].T
  base = np.median(roll)
  print(f'\n[prepare auto] un-rotated frames: yaw {np.median(yaw):+.1f} (max |{np.abs(yaw).max():.1f}|), '
        f'pitch {np.median(pitch):+.1f}, roll {base:+.1f} (max |{np.abs(roll).max():.1f}|) deg')
  assert np.all(np.abs(yaw) < 10) and np.all(np.abs(roll) < 10)
  assert np.all(np.abs(pitch) < 14)  # generic-model offset: the portrait reads pitch ~ -9
  errors = {}
  for angle in (5.0, -5.0, 10.0, -10.0):
    idx = np.flatnonzero(video.cv_angle == angle)[5:-5]  # whole smoothing window in the hold
    err = pose[idx, 2] - base + angle  # cv2 angles are counter-clockwise, roll clockwise
    cross = np.abs(pose[idx, 0] - np.median(yaw)).max()  # yaw read into a pure roll
    errors[angle] = (float(np.abs(err).max()), float(cross))
    assert np.all(np.abs(err) < 3.0), (angle, err)
    assert cross < 6.0, (angle, pose[idx])
  print('[prepare auto] cv2 rotation: max |roll error|, max |yaw change| (deg): ' +
        ', '.join(f'{a:+.0f}: {e:.2f}, {c:.2f}' for a, (e, c) in errors.items()))


def test_astronaut_report_written_and_printed(astronaut_build):
  video, out, stdout, _ = astronaut_build
  rep = json.loads((out / 'report.json').read_text())
  assert rep['crop'] == 'auto' and rep['frames_kept'] == int((~video.blank).sum())
  assert rep['face_coverage'] == pytest.approx(0.96)
  v = rep['validation']
  (s,) = v['sources']
  assert s['fps_found'] == 25 and s['duration_s'] == pytest.approx(4.0, abs=0.05)
  assert 120 < s['face_px_median'] < 200  # the crop box in source pixels (face ~90 px, 1.7x)
  assert s['pose']['roll']['max'] - s['pose']['roll']['min'] > 12  # the +-10 deg rolls
  assert abs(s['pose']['yaw']['median']) < 10
  assert s['audio']['seconds'] == pytest.approx(4.0, abs=0.05)
  assert -30 < s['audio']['rms_dbfs'] < -10 and s['audio']['clipping_fraction'] == 0
  assert any('short footage' in w for w in v['warnings'])
  assert not any('small face' in w for w in v['warnings'])  # 157 px boxes for 64 px crops
  # The same numbers were printed.
  assert 'validation report: 1 source(s)' in stdout
  assert 'astronaut.mp4: 4.0s 25fps, kept 96/100 (dropped: no_face 4)' in stdout
  assert 'WARNING all sources: short footage' in stdout
  assert '64px crops (auto)' in stdout


# ------------------------------------------------------------------------------------------------
# 2. No face anywhere.
# ------------------------------------------------------------------------------------------------


def test_no_face_anywhere_is_a_clear_error(tmp_path, capsys):
  n, h, w = 50, 240, 320
  y, x = np.mgrid[0:h, 0:w]
  rng = np.random.default_rng(0)
  frames = np.empty((n, h, w, 3), np.uint8)
  for k in range(n):  # moving gradients, a disc and some noise: texture but no face
    g = (x * 0.5 + y * 0.3 + 4 * k) % 256
    frames[k] = np.stack([g, 255 - g, (x + k) % 256], -1).astype(np.uint8)
    frames[k][(x - 60 - 3 * k) ** 2 + (y - 120) ** 2 < 40 ** 2] = (200, 180, 160)
    frames[k] = np.clip(frames[k] + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
  src = tmp_path / 'src'
  mux(src / 'scenery.mp4', frames, _astronaut.make_audio(n))
  out = tmp_path / 'data'
  assert run_cli(src, out) == 1
  err = capsys.readouterr().err.strip().splitlines()
  print('\n' + '\n'.join(err))
  assert err[-1].startswith('prepare: error: no usable video') and 'Traceback' not in ''.join(err)
  assert f'{src / "scenery.mp4"}: no usable face in any of {n} frames (no face: {n})' in err[-1]
  assert any(line.startswith(f'prepare: skipping {src / "scenery.mp4"}: no usable face') for line in err)
  assert not out.exists()
  no_leftovers(tmp_path, 'data')


def drifting(t: np.ndarray, width: int = 320, height: int = 240) -> np.ndarray:
  """(len(t), H, W, 3) uint8: the un-rotated astronaut drifting sideways (+-6 px, 3 s period)
  at times `t` (s); no blank frames."""
  base = _astronaut.make_video(1, width=width, height=height).frames[0]
  return np.stack([np.roll(base, int(round(6 * np.sin(2 * np.pi * s / 3))), axis=1) for s in t])


# ------------------------------------------------------------------------------------------------
# 3. Audio shorter than the video.
# ------------------------------------------------------------------------------------------------


def test_audio_shorter_than_video_is_padded_with_silence(tmp_path, capsys):
  """3 s of video with 2 s of audio: every frame is kept, audio = frames x 640 with silence at
  the end, and a warning says so (stderr and manifest)."""
  frames = drifting(np.arange(75) / 25)
  audio = _astronaut.make_audio(50)  # 2 s
  src = tmp_path / 'src'
  path = mux(src / 'short_audio.mp4', frames, audio)
  info = video_io.probe(path)
  assert info.duration == pytest.approx(3.0, abs=0.05)  # the video stream sets the duration
  out = tmp_path / 'data'
  assert run_cli(src, out, '--val-fraction', '0', '--test-fraction', '0') == 0
  err = capsys.readouterr().err
  assert f'prepare: {path}: audio ends 1.0' in err and 'padded with silence' in err, err
  clips = all_clips(out)
  assert sum(c['num_frames'] for c in clips) == 75
  for c in clips:
    assert c['audio'].shape == (c['num_frames'] * 640,)
  _, _, _, _, kept, a = per_frame(clips, 75)
  assert kept.all()
  level = np.sqrt(np.mean(a.reshape(75, 640) ** 2, 1))
  assert level[:48].max() > 0.05  # the buzz (4 syllables/s) in the first 2 s
  assert np.all(level[51:] < 1e-3), level[48:]  # silence after 2 s (AAC may ring ~1 frame)
  print(f'\n[audio short] {len(clips)} clip(s), {kept.sum()} frames, audio {a.size} samples; '
        f'RMS frames 0-49 {level[:50].mean():.3f}, frames 51-74 {level[51:].max():.1e}')
  (entry,) = json.loads((out / 'manifest.json').read_text())['sources']
  assert entry['audio_seconds'] == pytest.approx(2.0, abs=0.05)
  assert 'padded with silence' in entry['audio_warning']
  warnings = json.loads((out / 'report.json').read_text())['validation']['warnings']
  assert any(w.startswith(f'{path}: audio ends 1.0') for w in warnings), warnings


# ------------------------------------------------------------------------------------------------
# 4. 30 fps, 60 fps and variable-frame-rate sources → 25 fps, audio aligned.
# ------------------------------------------------------------------------------------------------

FLASHES = (0.6, 1.4, 2.2)  # seconds: the frame brightens for 0.12 s and the audio clicks
FLASH_SECONDS = 0.12
DURATION = 3.0


def flash_source(fps: float):
  """The astronaut (slowly drifting) at `fps` for 3 s; frames shown during a flash are brighter,
  and the audio has a 5 ms click at each flash onset over a quiet hum."""
  t = np.arange(int(round(DURATION * fps))) / fps
  frames = drifting(t)
  for i in range(len(t)):
    if any(f <= t[i] + 1e-6 < f + FLASH_SECONDS for f in FLASHES):
      frames[i] = np.clip(frames[i].astype(np.int16) + 70, 0, 255)
  m = int(DURATION * SR)
  audio = 0.01 * np.sin(2 * np.pi * 120 * np.arange(m) / SR)
  for f in FLASHES:
    s = int(round(f * SR))
    audio[s:s + 80] = 0.8 * np.sign(np.sin(2 * np.pi * 1000 * np.arange(80) / SR))
  return frames, audio.astype(np.float32)


@pytest.mark.parametrize('kind', ['30fps', '60fps', 'vfr'])
def test_frame_rate_resampled_and_audio_aligned(tmp_path, kind):
  src = tmp_path / 'src'
  if kind == 'vfr':  # 60 fps for the first second, then every 3rd frame (20 fps), timestamps kept
    frames, audio = flash_source(60)
    path = mux(src / f'{kind}.mp4', frames, audio, fps=60, vf=r"select='lt(t\,1)+not(mod(n\,3))'",
               vfr=True)
  else:
    fps = int(kind[:2])
    frames, audio = flash_source(fps)
    path = mux(src / f'{kind}.mp4', frames, audio, fps=fps)
  native = video_io.probe(path).fps
  out = tmp_path / 'data'
  report = prepare.prepare(src, out, size=SIZE, crop='auto', val_fraction=0, test_fraction=0)
  (entry,) = json.loads((out / 'manifest.json').read_text())['sources']
  total = entry['frames_decoded']
  assert abs(total - DURATION * 25) <= 1, total
  clips = all_clips(out)
  _, _, _, bright, kept, a = per_frame(clips, total)
  assert kept.sum() >= total - 2, entry['frames_dropped']  # the flash frames keep their face too
  # Flash onsets in the frames, click onsets in the audio (first sample above the hum).
  lit = bright > np.nanmedian(bright) + 25
  flash_k = [int(lo) for lo, _ in runs(lit)]
  loud = np.abs(a) > 0.3
  click_s = [int(s) for s in np.flatnonzero(loud) if s == 0 or not loud[max(0, s - 200):s].any()]
  print(f'\n[{kind}] native fps {native:.2f} → {total} frames at 25 fps ({kept.sum()} kept, '
        f'{len(clips)} clip(s)); flash frames {flash_k}, clicks at sample/640 '
        f'{[round(s / 640, 2) for s in click_s]}, expected {[round(f * 25, 2) for f in FLASHES]}')
  assert len(flash_k) == len(FLASHES) and len(click_s) == len(FLASHES), (flash_k, click_s)
  for k, s, f in zip(flash_k, click_s, FLASHES):
    assert abs(s / 640 - f * 25) < 0.1  # the click where it was put (audio timing exact)
    assert abs(k - s / 640) <= 1.0, (k, s / 640)  # frame and click agree within one frame
  assert report['source_fps'] == [round(native, 3)]
  if kind == 'vfr':  # 60 frames in the first second, 40 in the next two: an average of ~34 fps
    assert 30 < native < 40
  else:
    assert native == pytest.approx(int(kind[:2]))


# ------------------------------------------------------------------------------------------------
# 5. A corrupt file among good ones.
# ------------------------------------------------------------------------------------------------


def test_corrupt_file_is_skipped_and_the_rest_processed(tmp_path, capsys):
  video = _astronaut.make_video(60, width=320, height=240)
  audio = _astronaut.make_audio(60)
  src = tmp_path / 'src'
  mux(src / 'a_good.mp4', video.frames[:30], audio[:30 * 640])
  mux(src / 'b_good.mp4', video.frames[30:], audio[30 * 640:])
  cut = mux(src / 'c_cut.mp4', video.frames, audio, faststart=True)  # header first, frames cut off
  cut.write_bytes(cut.read_bytes()[:int(cut.stat().st_size * 0.5)])
  junk = src / 'd_junk.mp4'
  junk.write_bytes(np.random.default_rng(0).integers(0, 256, 20000, np.uint8).tobytes())
  out = tmp_path / 'data'
  assert run_cli(src, out) == 0
  captured = capsys.readouterr()
  err = captured.err.splitlines()
  print('\n' + '\n'.join(line for line in err if line.startswith('prepare:')))
  skips = [line for line in err if line.startswith('prepare: skipping')]
  assert len(skips) == 2, err
  assert skips[0].startswith(f'prepare: skipping {cut}: truncated video: decoded')
  assert skips[1].startswith(f'prepare: skipping {junk}: not a readable video')
  manifest = json.loads((out / 'manifest.json').read_text())
  status = {pathlib.Path(s['source']).name: s['status'] for s in manifest['sources']}
  assert status == {'a_good.mp4': 'ok', 'b_good.mp4': 'ok', 'c_cut.mp4': 'skipped',
                    'd_junk.mp4': 'skipped'}
  clips = all_clips(out)
  assert {pathlib.Path(c['source']).name for c in clips} == {'a_good.mp4', 'b_good.mp4'}
  assert sum(c['num_frames'] for c in clips) == 60  # nothing of the cut file was kept
  rep = json.loads((out / 'report.json').read_text())
  assert (rep['videos_found'], rep['videos_used'], rep['videos_skipped']) == (4, 2, 2)
  assert '(2 skipped)' in captured.out
  no_leftovers(tmp_path, 'data.')
