"""SyncNet lip-sync scores: LSE-C / LSE-D and the AV offset (conventions: `evaluation/__init__`).

Reproduces `SyncNetInstance.evaluate` of joonson/syncnet_python (the procedure Wav2Lip's `scores_LSE`
scripts run), with python_speech_features' MFCC; see `sync_scores`.
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from collections.abc import Sequence
from typing import Any

import cv2
import jax
import numpy as np
from flax import nnx

from daetalker_jax.data import contract
from daetalker_jax.evaluation import audio as audio_lib

def _mel_filterbank(nfilt: int, nfft: int, samplerate: int, lowfreq: float, highfreq: float) -> np.ndarray:
  """python_speech_features.get_filterbanks: triangles on FFT bins floor((nfft+1) f / sr)."""
  hz2mel = lambda hz: 2595.0 * np.log10(1.0 + hz / 700.0)
  mel2hz = lambda mel: 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
  melpoints = np.linspace(hz2mel(lowfreq), hz2mel(highfreq), nfilt + 2)
  bins = np.floor((nfft + 1) * mel2hz(melpoints) / samplerate)
  fbank = np.zeros((nfilt, nfft // 2 + 1))
  for j in range(nfilt):
    for i in range(int(bins[j]), int(bins[j + 1])):
      fbank[j, i] = (i - bins[j]) / (bins[j + 1] - bins[j])
    for i in range(int(bins[j + 1]), int(bins[j + 2])):
      fbank[j, i] = (bins[j + 2] - i) / (bins[j + 2] - bins[j + 1])
  return fbank


def mfcc(signal: Any, samplerate: int = contract.SAMPLE_RATE, *, winlen: float = 0.025, winstep: float = 0.01,
         numcep: int = 13, nfilt: int = 26, nfft: int = 512, preemph: float = 0.97,
         ceplifter: int = 22) -> np.ndarray:
  """(num_frames, numcep) MFCC, identical to `python_speech_features.mfcc(signal, samplerate)` v0.6.

  The defaults are that function's: 25 ms rectangular windows every 10 ms (100 Hz), zero-padded to
  cover the signal (num_frames = 1 + ceil((T - 400) / 160)), pre-emphasis 0.97, |rfft(512)|^2 / 512,
  26 mel triangles 0..sr/2, log, orthonormal DCT-II, lifter 22, and coefficient 0 replaced by the log
  frame energy. No scaling of the input: SyncNet was trained on int16 sample values, so pass int16
  (or floats on that scale); the log energy shifts by 2 ln(scale) otherwise.
  """
  import scipy.fft  # pylint: disable=g-import-not-at-top

  sig = np.asarray(signal, np.float64).reshape(-1)
  sig = np.append(sig[0], sig[1:] - preemph * sig[:-1])
  # round_half_up of winlen*sr / winstep*sr, as sigproc.framesig does.
  frame_len = int(math.floor(winlen * samplerate + 0.5))
  frame_step = int(math.floor(winstep * samplerate + 0.5))
  n = sig.size
  num_frames = 1 if n <= frame_len else 1 + int(math.ceil((n - frame_len) / frame_step))
  pad = (num_frames - 1) * frame_step + frame_len - n
  sig = np.concatenate([sig, np.zeros(pad)])
  idx = np.arange(frame_len)[None, :] + frame_step * np.arange(num_frames)[:, None]
  frames = sig[idx]                                                  # (F, frame_len)
  pspec = np.square(np.abs(np.fft.rfft(frames, nfft))) / nfft       # (F, nfft/2 + 1)
  energy = pspec.sum(axis=1)
  energy = np.where(energy == 0, np.finfo(float).eps, energy)
  feat = pspec @ _mel_filterbank(nfilt, nfft, samplerate, 0.0, samplerate / 2).T
  feat = np.where(feat == 0, np.finfo(float).eps, feat)
  feat = scipy.fft.dct(np.log(feat), type=2, axis=1, norm='ortho')[:, :numcep]
  if ceplifter > 0:
    feat = feat * (1.0 + (ceplifter / 2.0) * np.sin(np.pi * np.arange(numcep) / ceplifter))
  feat[:, 0] = np.log(energy)
  return feat


def syncnet_face_crop(frame: np.ndarray, box: Sequence[float], crop_scale: float = 0.4) -> np.ndarray:
  """The face crop of syncnet_python's `run_pipeline.crop_video`, resized to 224x224.

  From a face box (x0, y0, x1, y1) in frame pixels: half-size bs = max(w, h) / 2; the crop spans
  [cy - bs, cy + bs (1 + 2 crop_scale)] vertically and cx +- bs (1 + crop_scale) horizontally (more room
  below the chin than above the brows), on the frame padded with the value 110. Use it when frames
  are whole video frames; frames that already are face crops go to `sync_scores` as they are.
  """
  x0, y0, x1, y1 = (float(v) for v in box)
  bs = max(y1 - y0, x1 - x0) / 2
  bsi = int(bs * (1 + 2 * crop_scale))
  padded = np.pad(frame, ((bsi, bsi), (bsi, bsi), (0, 0)), 'constant', constant_values=110)
  my, mx = (y0 + y1) / 2 + bsi, (x0 + x1) / 2 + bsi
  face = padded[int(my - bs):int(my + bs * (1 + 2 * crop_scale)),
                int(mx - bs * (1 + crop_scale)):int(mx + bs * (1 + crop_scale))]
  return cv2.resize(face, (224, 224))


def lse_from_embeddings(im_feat: Any, cc_feat: Any, vshift: int = 15) -> dict[str, Any]:
  """Offset, LSE-D and LSE-C from per-window video and audio embeddings (`calc_pdist` + `evaluate`).

  dists[i, j] = ||im_feat[i] - cc_pad[i + j] + 1e-6||_2 with cc_pad = cc_feat zero-padded by `vshift`
  windows at both ends (torch.nn.functional.pairwise_distance, eps 1e-6), j = 0..2 vshift.
  mdist[j] = mean_i dists[i, j]; LSE-D = min_j mdist (`Min dist`), LSE-C = median_j mdist - LSE-D
  (`Confidence`), offset = vshift - argmin_j mdist (`AV offset`, in frames). With offset k > 0 the
  video window i matches the audio window i - k: the audio leads the video by k frames.
  """
  v = np.asarray(im_feat, np.float32)
  a = np.asarray(cc_feat, np.float32)
  if v.shape != a.shape or v.ndim != 2:
    raise ValueError(f'eval_metrics.lse_from_embeddings: embeddings must be matching (T, D), got {v.shape} {a.shape}')
  t = v.shape[0]
  win = 2 * vshift + 1
  ap = np.pad(a, ((vshift, vshift), (0, 0)))
  idx = np.arange(t)[:, None] + np.arange(win)[None, :]                 # (T, win)
  dists = np.linalg.norm(v[:, None, :] - ap[idx] + np.float32(1e-6), axis=-1)   # (T, win)
  mdist = dists.mean(axis=0)
  minidx = int(np.argmin(mdist))
  minval = float(mdist[minidx])
  median = float(np.sort(mdist)[(win - 1) // 2])                        # torch.median: lower median
  return dict(offset=vshift - minidx, lse_d=minval, lse_c=median - minval, dists=dists)


@functools.partial(jax.jit, static_argnums=0)
def _syncnet_forward(graphdef, state, lips, mfccs):
  model = nnx.merge(graphdef, state)
  return model.forward_lip(lips), model.forward_aud(mfccs)


def syncnet_embeddings(frames_uint8: Any, audio16k: Any, model, *, batch_size: int = 16
                       ) -> tuple[np.ndarray, np.ndarray]:
  """Per-window SyncNet lip and audio embeddings, windows as in `SyncNetInstance.evaluate`.

  Window i (i = 0 .. min_length - 6, min_length = min(N, floor(T / 640))) is frames i..i+4 and MFCC
  frames 4i..4i+19 of `mfcc(audio)` over the whole clip. Frames are face crops, resized to 224x224
  (cv2 bilinear, as `crop_video` writes them), converted to BGR (the script reads them with
  cv2.imread) and fed as raw 0..255 floats. Returns (im_feat, cc_feat), each (windows, 1024).
  """
  x = np.asarray(frames_uint8)
  if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3:
    raise ValueError(f'eval_metrics.sync_scores: frames must be uint8 (N, H, W, 3) RGB, got {x.dtype} {x.shape}')
  audio = audio_lib.audio_int16_scale(audio16k, 'eval_metrics.sync_scores')   # as the script reads the wav
  min_length = min(x.shape[0], audio.size // contract.SAMPLES_PER_FRAME)
  lastframe = min_length - 5
  if lastframe < 1:
    raise ValueError(f'eval_metrics.sync_scores: need at least 6 frames of video and audio, got {min_length}')
  if x.shape[0] * contract.SAMPLES_PER_FRAME != audio.size:
    warnings.warn(f'eval_metrics.sync_scores: audio ({audio.size / contract.SAMPLE_RATE:.4f}s) and video '
                  f'({x.shape[0] / contract.FPS:.4f}s) lengths are different', RuntimeWarning, stacklevel=2)
  bgr = np.stack([cv2.resize(f, (224, 224))[..., ::-1] if f.shape[:2] != (224, 224) else f[..., ::-1]
                  for f in x[:min_length]])                            # (N, 224, 224, 3) uint8 BGR
  cc = mfcc(audio, contract.SAMPLE_RATE).T.astype(np.float32)                  # (13, F)

  graphdef, state = nnx.split(model)
  im_feat, cc_feat = [], []
  for start in range(0, lastframe, batch_size):
    ids = np.arange(start, start + batch_size)
    n = int(np.sum(ids < lastframe))
    ids = np.minimum(ids, lastframe - 1)                                # pad the last batch: one compile
    lips = np.stack([bgr[i:i + 5] for i in ids]).astype(np.float32)    # (B, 5, 224, 224, 3)
    mf = np.stack([cc[:, 4 * i:4 * i + 20] for i in ids])[..., None]   # (B, 13, 20, 1)
    v, a = _syncnet_forward(graphdef, state, lips, mf)
    im_feat.append(np.asarray(v)[:n])
    cc_feat.append(np.asarray(a)[:n])
  return np.concatenate(im_feat), np.concatenate(cc_feat)


def sync_scores(frames_uint8: Any, audio16k: Any, model, *, vshift: int = 15, batch_size: int = 16
                ) -> dict[str, float | int]:
  """SyncNet LSE-C (higher = better sync), LSE-D (lower = better) and AV offset of one clip.

  Reproduces syncnet_python `SyncNetInstance.evaluate` with `--vshift 15` as Wav2Lip's
  `calculate_scores_real_videos.sh` runs it: 25 fps face-crop frames (N, H, W, 3) uint8 RGB, 16 kHz
  mono audio (int16, or float [-1, 1] which is rescaled to int16 values), MFCC at 100 Hz, 5-frame /
  20-MFCC windows, distances over offsets -vshift..vshift (see `lse_from_embeddings`). Papers report
  the mean of lse_c and lse_d over clips. Differences from running the script on an mp4: no JPEG / XVID
  re-encoding of the frames in between, and no face detection (pass face crops; `syncnet_face_crop`
  reproduces the script's crop from a face box).
  """
  im_feat, cc_feat = syncnet_embeddings(frames_uint8, audio16k, model, batch_size=batch_size)
  r = lse_from_embeddings(im_feat, cc_feat, vshift)
  return dict(lse_c=r['lse_c'], lse_d=r['lse_d'], offset=r['offset'])


def load_syncnet(path: str | os.PathLike | None):
  """(model, '') from a `syncnet_v2.model` file, or (None, reason) so the caller can report LSE as unavailable.

  A missing path or file is not an error here: SyncNet weights are an optional user download.
  A file that exists but is not a SyncNet state_dict still raises (a wrong file should not pass silently).
  """
  if not path:
    return None, 'no SyncNet weights given (pass syncnet_v2.model from joonson/syncnet_python)'
  if not os.path.isfile(path):
    return None, f'{path}: SyncNet weights file not found'
  from daetalker_jax.importers import syncnet as syncnet_import  # pylint: disable=g-import-not-at-top

  return syncnet_import.load_syncnet_weights(path), ''
