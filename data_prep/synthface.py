r"""The synthetic talking face ("synthface", DESIGN §4): mp4 clips with exact ground truth.

    python -m data_prep.synthface --out runs/synth_videos --clips 40 --seconds 8 --size 128 --seed 0 \
        [--identities N]

Each clip speaks random sentences with libespeak-ng (voice, rate and pitch drawn per clip); the
phoneme start times from espeak's event callback drive the mouth (visemes with coarticulation),
speech energy drives the amplitude of a smooth random head motion, and blinks come every 2-6 s.
Per clip the output is `synth_XXXX.mp4` (h264 yuv420p 25 fps + AAC 16 kHz mono), the ground-truth
sidecar `synth_XXXX.json` and the lossless audio `synth_XXXX.wav` (format: docs/ARCHITECTURE.md).

Identities: without `--identities` every clip shows the one default look (and the files are exactly
those of earlier versions). With `--identities N`, clip i shows identity k = i % N, drawn by
`synthface_render.draw_identity(seed, k)` (face shape, skin, hair, brows, nose, eye spacing, lips,
background texture), so identity k is the same person in every clip that uses it; the sidecar adds
`identity` (k), `identity_name` (`synth_s<seed>_id<kkk>`, what `data_prep.prepare` stores as the clip's
identity), `identities` (N) and `identity_params` (the drawn parameters, the ground truth of the
person's colours and shape). The speech, pose and blink tracks of clip i do not depend on N.

Clip i depends only on (seed, i) (and N), so clips can be made in any order and in parallel, and the same
arguments give byte-identical files. The whole folder is written to a temporary sibling and renamed
into place, so an interrupted run never leaves a folder that looks complete.
"""
from __future__ import annotations

import argparse
from collections.abc import Iterator
import json
import multiprocessing
import os
import pathlib
import subprocess
import tempfile
import wave

import imageio_ffmpeg
import numpy as np
import scipy.ndimage
import scipy.signal

from daetalker_jax import atomic
from daetalker_jax.data import contract
from daetalker_jax.data.contract import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from data_prep import espeak
from data_prep.synthface_render import (  # noqa: F401 (public API)
    draw_identity, face_landmarks, measure_frame, render_frame)

SILENCE = '_'

# Voices that exist in Debian's espeak-ng-data, and variants (+f = female-ish, +m = male-ish).
VOICES = ('en', 'en-us', 'en-gb-scotland', 'en-gb-x-rp', 'en-029')
VARIANTS = ('', '+f2', '+f3', '+f4', '+m1', '+m3')

WORDS = tuple("""
the a my your our this that big small red blue green bright dark happy quiet loud soft warm cold
old new fast slow good bad long short open round wide deep cat dog bird fish horse mouse bear frog
apple banana bread butter cheese milk water coffee tea pizza pepper potato tomato orange lemon
house garden window door table chair bottle paper pencil book music movie robot rocket planet
moon sun star cloud rain snow wind river mountain ocean beach island forest city market bridge road
boy girl mother father baby teacher doctor farmer pilot painter player people friend family
sees finds makes takes gives likes loves wants needs keeps brings buys moves plays paints opens
calls helps watches visits builds carries follows pushes pulls throws catches reads writes sings
today tomorrow always never maybe often again away above below behind beside before after
very really quite almost only just also
""".split())

# Viseme targets (mouth_open, mouth_width) per espeak-ng English phoneme mnemonic. Open vowels ~0.9,
# mid ~0.5, close ~0.25; rounded vowels and w/r/sh are narrow, i/e are spread; p/b/m closed.
VISEMES = {
    # open vowels
    'a': (0.85, 0.75), 'aa': (0.9, 0.7), 'A:': (0.95, 0.6), 'A@': (0.9, 0.6), 'a#': (0.8, 0.7),
    'aI': (0.9, 0.7), 'aI@': (0.9, 0.7), 'aU': (0.9, 0.5), '0': (0.8, 0.4), 'V': (0.75, 0.6),
    # mid vowels
    'E': (0.55, 0.75), 'e': (0.5, 0.75), 'e@': (0.55, 0.7), 'eI': (0.5, 0.8), '@': (0.45, 0.55),
    '@2': (0.45, 0.55), '@5': (0.45, 0.5), '@L': (0.45, 0.55), '3': (0.45, 0.45), '3:': (0.5, 0.4),
    'O:': (0.6, 0.25), 'O': (0.6, 0.3), 'O@': (0.6, 0.3), 'o@': (0.55, 0.25), 'OI': (0.6, 0.3),
    'oU': (0.5, 0.2), 'o': (0.5, 0.25),
    # close vowels
    'i': (0.25, 0.9), 'i:': (0.25, 0.95), 'I': (0.3, 0.85), 'I2': (0.3, 0.85), 'I#': (0.3, 0.8),
    'i@': (0.3, 0.85), 'i@3': (0.3, 0.85), 'u:': (0.25, 0.1), 'U': (0.3, 0.2), 'U@': (0.3, 0.2),
    'u': (0.25, 0.15),
    # consonants
    'p': (0.0, 0.5), 'b': (0.0, 0.5), 'm': (0.0, 0.5),
    'f': (0.08, 0.6), 'v': (0.08, 0.6),
    'T': (0.2, 0.6), 'D': (0.2, 0.6),
    't': (0.2, 0.65), 'd': (0.2, 0.65), 'n': (0.2, 0.6), 'l': (0.25, 0.6), 's': (0.15, 0.75),
    'z': (0.15, 0.75), 't#': (0.2, 0.65), 'd#': (0.2, 0.65), 'n-': (0.2, 0.6), 'l/': (0.25, 0.6),
    'S': (0.2, 0.25), 'Z': (0.2, 0.25), 'tS': (0.2, 0.25), 'dZ': (0.2, 0.25),
    'k': (0.3, 0.55), 'g': (0.3, 0.55), 'N': (0.3, 0.55), 'h': (0.4, 0.55), 'x': (0.3, 0.55),
    'r': (0.25, 0.35), 'r-': (0.25, 0.35), 'w': (0.12, 0.1), 'j': (0.2, 0.75), '?': (0.1, 0.5),
}
REST = (0.0, 0.5)  # silence: lips closed at a neutral width


def viseme(phoneme: str) -> tuple[float, float]:
  """(mouth_open, mouth_width) target of an espeak mnemonic; unknown ones fall back by letter."""
  if not phoneme or phoneme.startswith(SILENCE):
    return REST
  if phoneme in VISEMES:
    return VISEMES[phoneme]
  base = phoneme.rstrip('#:23-/;')
  if base in VISEMES:
    return VISEMES[base]
  if phoneme[0] in 'aAV0':
    return (0.85, 0.6)
  if phoneme[0] in 'eE@3oO':
    return (0.5, 0.5)
  if phoneme[0] in 'iIuU':
    return (0.25, 0.5)
  return (0.25, 0.55)


# ----------------------------------------------------------------------------------------------
# Speech.


def _sentence(rng: np.random.Generator, n_words: int) -> str:
  words = [WORDS[i] for i in rng.integers(0, len(WORDS), n_words)]
  return ' '.join(words).capitalize() + '.'


def _resample(audio: np.ndarray, rate: int) -> np.ndarray:
  """int16 at `rate` -> float64 at 16 kHz (polyphase, deterministic)."""
  x = contract.int16_to_float(audio, np.float64)
  if rate == SAMPLE_RATE:
    return x
  g = np.gcd(rate, SAMPLE_RATE)
  return scipy.signal.resample_poly(x, SAMPLE_RATE // g, rate // g)


def make_speech(rng: np.random.Generator, num_samples: int) -> dict:
  """Sentences separated by silences, filling exactly `num_samples` at 16 kHz.

  Returns dict(audio=int16 (num_samples,), phonemes=[(name, start_s, end_s)] of spoken phonemes,
  text, voice).
  """
  voice = {'name': VOICES[rng.integers(len(VOICES))] + VARIANTS[rng.integers(len(VARIANTS))],
           'rate': int(rng.integers(135, 196)), 'pitch': int(rng.integers(30, 71)),
           'range': int(rng.integers(30, 81))}
  audio = np.zeros(num_samples, np.float64)
  phonemes, sentences = [], []
  pos = int(rng.uniform(0.25, 0.6) * SAMPLE_RATE)  # leading silence
  tail = int(0.25 * SAMPLE_RATE)  # minimum trailing silence
  n_words = int(rng.integers(3, 9))
  with espeak.Speaker() as speaker:  # a fresh engine per clip: espeak's state would leak
    while n_words >= 1 and pos + tail < num_samples:
      text = _sentence(rng, n_words)
      utt = speaker.synthesize(text, voice=voice['name'], rate=voice['rate'], pitch=voice['pitch'],
                               pitch_range=voice['range'])
      wav = _resample(utt.audio, utt.sample_rate)
      if pos + len(wav) + tail > num_samples:
        n_words //= 2  # too long for the remaining time: try a shorter sentence
        continue
      audio[pos:pos + len(wav)] = wav
      end_s = (pos + len(wav)) / SAMPLE_RATE
      # A phoneme lasts until the next one starts (the last one until the end of the audio).
      times = [pos / SAMPLE_RATE + ev.start_ms / 1000.0 for ev in utt.phonemes] + [end_s]
      for ev, start, stop in zip(utt.phonemes, times[:-1], times[1:]):
        if not ev.name.startswith(SILENCE) and min(stop, end_s) > start:
          phonemes.append((ev.name, round(start, 4), round(min(stop, end_s), 4)))
      sentences.append(text)
      pos += len(wav) + int(rng.uniform(0.2, 0.6) * SAMPLE_RATE)  # silence between sentences
      n_words = int(rng.integers(3, 9))
  pcm = contract.float_to_int16(audio)  # readers divide by 32768
  return {'audio': pcm, 'phonemes': phonemes, 'text': ' '.join(sentences), 'voice': voice}


# ----------------------------------------------------------------------------------------------
# Ground-truth tracks (one value per video frame).


def viseme_tracks(phonemes: list[tuple[str, float, float]], num_frames: int,
                  smooth_ms: float = 18.0) -> dict[str, np.ndarray]:
  """Per-frame mouth_open, mouth_width and phoneme label, sampled at the frame centres.

  Targets are piecewise constant over each phoneme on a 1 ms grid and Gaussian-smoothed
  (coarticulation: neighbouring phonemes blend, short closures are not reached fully).
  """
  n_ms = num_frames * 1000 // FPS
  open_ms = np.full(n_ms, REST[0])
  width_ms = np.full(n_ms, REST[1])
  label_ms = np.zeros(n_ms, np.int32)  # 0 = silence, k = phonemes[k - 1]
  for k, (name, start, stop) in enumerate(phonemes):
    a, b = int(round(start * 1000)), int(round(stop * 1000))
    open_ms[a:b], width_ms[a:b] = viseme(name)
    label_ms[a:b] = k + 1
  open_ms = scipy.ndimage.gaussian_filter1d(open_ms, smooth_ms, mode='nearest')
  width_ms = scipy.ndimage.gaussian_filter1d(width_ms, smooth_ms, mode='nearest')
  centres = ((np.arange(num_frames) + 0.5) * 1000 / FPS).astype(np.int64)  # ms
  labels = [SILENCE if label_ms[c] == 0 else phonemes[label_ms[c] - 1][0] for c in centres]
  mouth_open = np.clip(open_ms[centres], 0.0, 1.0)
  mouth_open[mouth_open < 1e-3] = 0.0
  return {'mouth_open': mouth_open, 'mouth_width': np.clip(width_ms[centres], 0.0, 1.0),
          'phoneme': labels}


def _smooth_noise(rng: np.random.Generator, n: int, sigma: float) -> np.ndarray:
  pad = int(4 * sigma)
  x = scipy.ndimage.gaussian_filter1d(rng.standard_normal(n + 2 * pad), sigma)[pad:pad + n]
  return x / max(float(np.std(x)), 1e-6)


def pose_tracks(rng: np.random.Generator, audio: np.ndarray,
                num_frames: int) -> dict[str, np.ndarray]:
  """Smooth random yaw/pitch/roll (deg) whose amplitude follows the speech energy."""
  frames = audio[:num_frames * SAMPLES_PER_FRAME].astype(np.float64).reshape(num_frames, -1)
  rms = np.sqrt((frames ** 2).mean(1))
  energy = np.clip(rms / max(float(np.percentile(rms, 95)), 1.0), 0.0, 1.0)
  envelope = 0.35 + 0.65 * scipy.ndimage.gaussian_filter1d(energy, 6.0, mode='nearest')
  out = {}
  for name, limit, sigma in (('yaw', 15.0, 14.0), ('pitch', 10.0, 10.0), ('roll', 8.0, 16.0)):
    out[name] = limit * np.tanh(0.8 * envelope * _smooth_noise(rng, num_frames, sigma))
  return out


_BLINK_PROFILE = np.array([0.35, 0.8, 1.0, 0.75, 0.45, 0.2, 0.05])  # ~0.28 s at 25 fps


def blink_track(rng: np.random.Generator, num_frames: int) -> np.ndarray:
  """Eyelid closure in [0, 1] per frame; a blink every 2-6 s."""
  blink = np.zeros(num_frames)
  t = rng.uniform(0.5, 3.0)
  while (start := int(t * FPS)) < num_frames:
    seg = _BLINK_PROFILE[:num_frames - start]
    blink[start:start + len(seg)] = np.maximum(blink[start:start + len(seg)], seg)
    t += rng.uniform(2.0, 6.0)
  return blink


# ----------------------------------------------------------------------------------------------
# One clip.


def clip_rng(seed: int, index: int) -> np.random.Generator:
  """The clip's own generator: clips are independent of each other and of the worker count."""
  return np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))


_POSE_KEYS = ('mouth_open', 'mouth_width', 'blink', 'yaw', 'pitch', 'roll')  # render_frame's inputs


def identity_name(seed: int, k: int) -> str:
  """The name of identity k of `seed` (the sidecar's `identity_name`, the prepared dataset's `identity`)."""
  return f'synth_s{int(seed)}_id{int(k):03d}'


def make_clip(index: int, *, seconds: float, size: int, seed: int, identities: int | None = None) -> dict:
  """Everything about one clip: audio (int16), per-frame tracks and metadata (nothing rendered).

  identities: None for the default look; N for identity index % N (`draw_identity(seed, index % N)`).
  """
  rng = clip_rng(seed, index)
  num_frames = int(round(seconds * FPS))
  if num_frames < 1:
    raise ValueError(f'synthface: --seconds {seconds} gives no frames')
  if identities is not None and identities < 1:
    raise ValueError(f'synthface: --identities must be >= 1, got {identities}')
  k = None if identities is None else index % identities
  look = None if k is None else draw_identity(seed, k)
  speech = make_speech(rng, num_frames * SAMPLES_PER_FRAME)
  tracks = viseme_tracks(speech['phonemes'], num_frames)
  tracks.update(pose_tracks(rng, speech['audio'], num_frames))
  tracks['blink'] = blink_track(rng, num_frames)
  frames = {k: (tracks[k] if k == 'phoneme' else [round(float(x), 5) for x in tracks[k]])
            for k in ('mouth_open', 'mouth_width', 'blink', 'yaw', 'pitch', 'roll', 'phoneme')}
  # The 68 landmarks (iBUG order, output pixels) of the frame as render_clip draws it (rounded values).
  frames['landmarks'] = [np.round(face_landmarks(size, identity=look, **{p: frames[p][i] for p in _POSE_KEYS}),
                                   2).tolist() for i in range(num_frames)]
  # Beyond docs/ARCHITECTURE.md's fields: the clip index and the timed phonemes [name, start_s,
  # end_s] (silences left out), for evaluations that need more than the per-frame label.
  sidecar = {'clip_id': f'synth_{index:04d}', 'fps': FPS, 'sample_rate': SAMPLE_RATE, 'size': size,
             'num_frames': num_frames, 'text': speech['text'], 'voice': speech['voice'],
             'seed': int(seed), 'index': int(index), 'frames': frames,
             'phonemes': [list(p) for p in speech['phonemes']]}
  if k is not None:  # the default look's sidecar stays exactly as before
    sidecar.update(identity=k, identity_name=identity_name(seed, k), identities=int(identities),
                   identity_params=look)
  return {'sidecar': sidecar, 'audio': speech['audio']}


def render_clip(sidecar: dict) -> Iterator[np.ndarray]:
  """Yields the clip's frames (uint8 (S, S, 3) RGB) from the (rounded) sidecar values and its identity."""
  f = sidecar['frames']
  look = sidecar.get('identity_params')
  for i in range(sidecar['num_frames']):
    yield render_frame(sidecar['size'], identity=look, **{k: f[k][i] for k in _POSE_KEYS})


def write_wav(path: pathlib.Path, audio: np.ndarray) -> None:
  """16 kHz mono int16 wav (stdlib `wave`: fixed 44-byte header, so the bytes are reproducible)."""
  with wave.open(str(path), 'wb') as w:
    w.setnchannels(1)
    w.setsampwidth(2)
    w.setframerate(SAMPLE_RATE)
    w.writeframes(audio.astype('<i2').tobytes())


def read_wav(path: str | os.PathLike) -> np.ndarray:
  """int16 (S,) samples of a 16 kHz mono wav written by `write_wav`."""
  with wave.open(str(path), 'rb') as w:
    if w.getnchannels() != 1 or w.getsampwidth() != 2 or w.getframerate() != SAMPLE_RATE:
      raise ValueError(f'{path}: expected 16 kHz mono int16 wav')
    return np.frombuffer(w.readframes(w.getnframes()), '<i2').astype(np.int16)


def encode_mp4(path: pathlib.Path, frames, size: int, wav_path: pathlib.Path) -> None:
  """Pipes RGB frames to ffmpeg: h264 yuv420p 25 fps + AAC 16 kHz mono, bit-exact output."""
  cmd = [imageio_ffmpeg.get_ffmpeg_exe(), '-y', '-loglevel', 'error',
         '-f', 'rawvideo', '-pix_fmt', 'rgb24', '-s', f'{size}x{size}', '-framerate', str(FPS),
         '-i', 'pipe:0', '-i', str(wav_path), '-map', '0:v:0', '-map', '1:a:0',
         '-c:v', 'libx264', '-preset', 'medium', '-crf', '16', '-pix_fmt', 'yuv420p',
         '-threads', '1', '-c:a', 'aac', '-b:a', '64k', '-ar', str(SAMPLE_RATE), '-ac', '1',
         '-fflags', '+bitexact', '-flags:v', '+bitexact', '-flags:a', '+bitexact',
         '-map_metadata', '-1', '-f', 'mp4', str(path)]
  with tempfile.TemporaryFile() as err:
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=err)
    try:
      for frame in frames:
        proc.stdin.write(np.ascontiguousarray(frame, np.uint8).tobytes())
      proc.stdin.close()
    except BrokenPipeError:
      pass
    rc = proc.wait()
    if rc != 0:
      err.seek(0)
      raise RuntimeError(f'ffmpeg failed writing {path} (rc={rc}): '
                         f'{err.read().decode(errors="replace").strip()[-500:]}')


def write_clip(out_dir: str | os.PathLike, index: int, *, seconds: float, size: int,
               seed: int, identities: int | None = None) -> str:
  """Makes clip `index` in `out_dir` (mp4 + json + wav); returns its clip id."""
  out_dir = pathlib.Path(out_dir)
  clip = make_clip(index, seconds=seconds, size=size, seed=seed, identities=identities)
  sidecar = clip['sidecar']
  stem = out_dir / sidecar['clip_id']
  write_wav(stem.with_suffix('.wav'), clip['audio'])
  encode_mp4(stem.with_suffix('.mp4'), render_clip(sidecar), size, stem.with_suffix('.wav'))
  stem.with_suffix('.json').write_text(json.dumps(sidecar, separators=(',', ':')))
  return sidecar['clip_id']


def _write_clip_job(args: tuple) -> str:
  out_dir, index, seconds, size, seed, identities = args
  return write_clip(out_dir, index, seconds=seconds, size=size, seed=seed, identities=identities)


# ----------------------------------------------------------------------------------------------
# Reading back (tests, evaluation).


def read_mp4_frames(path: str | os.PathLike) -> np.ndarray:
  """Decodes an mp4's video to uint8 (N, H, W, 3) RGB with the same ffmpeg."""
  gen = imageio_ffmpeg.read_frames(str(path), pix_fmt='rgb24')
  meta = next(gen)
  w, h = meta['size']
  return np.stack([np.frombuffer(f, np.uint8).reshape(h, w, 3) for f in gen])


def read_mp4_audio(path: str | os.PathLike) -> np.ndarray:
  """Decodes an mp4's audio track to int16 (S,) at 16 kHz mono."""
  cmd = [imageio_ffmpeg.get_ffmpeg_exe(), '-loglevel', 'error', '-i', str(path), '-map', '0:a:0',
         '-f', 's16le', '-ac', '1', '-ar', str(SAMPLE_RATE), 'pipe:1']
  res = subprocess.run(cmd, capture_output=True, check=False)
  if res.returncode != 0:
    raise RuntimeError(f'{path}: ffmpeg could not decode audio: {res.stderr.decode()[-300:]}')
  return np.frombuffer(res.stdout, '<i2').astype(np.int16)


# ----------------------------------------------------------------------------------------------
# Dataset.


def generate_dataset(out_dir: str | os.PathLike, clips: int = 40, seconds: float = 8.0,
                     size: int = 128, seed: int = 0, workers: int | None = None, *,
                     identities: int | None = None, overwrite: bool = False,
                     progress: bool = False) -> list[pathlib.Path]:
  """Writes `clips` synthface clips into `out_dir` atomically; returns the mp4 paths.

  The clips are made in a temporary folder beside `out_dir` and renamed into place at the end.
  `workers` processes (default: all CPUs) make clips in parallel; the bytes do not depend on it.
  `identities` N gives clip i identity i % N (None: the default look in every clip).
  """
  if clips < 1:
    raise ValueError(f'synthface: --clips must be >= 1, got {clips}')
  if identities is not None and identities < 1:
    raise ValueError(f'synthface: --identities must be >= 1, got {identities}')
  if not 32 <= size <= 512 or size % 2:
    raise ValueError(f'synthface: --size must be even (yuv420p) and in 32..512, got {size}')
  if not 0 < seconds <= 600:
    raise ValueError(f'synthface: --seconds must be in (0, 600], got {seconds}')
  out = pathlib.Path(out_dir).absolute()
  if out.exists() and not out.is_dir():
    raise FileExistsError(f'synthface: {out} exists and is not a folder')
  if out.is_dir() and any(out.iterdir()) and not overwrite:
    raise FileExistsError(f'synthface: {out} is not empty (pass --overwrite to replace it)')
  workers = max(1, min(workers or os.cpu_count() or 1, clips))
  with atomic.temp_dir(out) as tmp:  # replaces `out` only once every clip is written
    jobs = [(str(tmp), i, seconds, size, seed, identities) for i in range(clips)]
    bar = None
    if progress:
      import tqdm  # pylint: disable=g-import-not-at-top
      bar = tqdm.tqdm(total=clips, desc='synthface', unit='clip')
    if workers == 1:
      for job in jobs:
        _write_clip_job(job)
        if bar is not None:
          bar.update()
    else:
      # spawn: the parent may hold JAX/TF threads, which fork must not copy.
      with multiprocessing.get_context('spawn').Pool(workers) as pool:
        for _ in pool.imap_unordered(_write_clip_job, jobs):
          if bar is not None:
            bar.update()
    if bar is not None:
      bar.close()
  return [out / f'synth_{i:04d}.mp4' for i in range(clips)]


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(prog='python -m data_prep.synthface',
                                   description=__doc__.split('\n\n')[0])
  parser.add_argument('--out', required=True, help='output folder (created atomically)')
  parser.add_argument('--clips', type=int, default=40, help='number of clips')
  parser.add_argument('--seconds', type=float, default=8.0, help='length of each clip')
  parser.add_argument('--size', type=int, default=128, help='frame side in pixels (even, 32..512)')
  parser.add_argument('--seed', type=int, default=0, help='dataset seed; clip i uses (seed, i)')
  parser.add_argument('--identities', type=int, default=None, metavar='N',
                      help='clip i shows identity i %% N, drawn from (seed, k) (default: the one default look)')
  parser.add_argument('--workers', type=int, default=None, help='processes (default: all CPUs)')
  parser.add_argument('--overwrite', action='store_true', help='replace a non-empty --out')
  args = parser.parse_args(argv)
  try:
    paths = generate_dataset(args.out, args.clips, args.seconds, args.size, args.seed,
                             args.workers, identities=args.identities, overwrite=args.overwrite, progress=True)
  except (ValueError, FileExistsError) as e:
    parser.exit(2, f'error: {e}\n')
  print(f'wrote {len(paths)} clips to {pathlib.Path(args.out)}')


if __name__ == '__main__':
  main()
