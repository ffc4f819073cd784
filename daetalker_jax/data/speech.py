"""Speech features of the generic-identity methods (DiffTalk, landmark diffusion): one (4N, D) array per clip.

For N video frames (N*640 samples at 16 kHz) a front end returns 4N feature steps (100 Hz: step j belongs to
video frame j // 4, as data/features.py's log-mel), normalised per clip to zero mean and unit variance per
dimension, so the level of a recording does not matter. Both methods read windows of these steps around each
frame (data/examples.audio_windows), so either front end feeds the same models; only `audio_dim` changes.

Front ends (`config.data.frontend`):
  logmel    80 log-mel bins (data/features.log_mel). The default: nothing to download.
  wav2vec2  one hidden state (`config.data.wav2vec2_layer`, 0 = the input of the first transformer layer) of a
            frozen wav2vec2 or HuBERT model read from a local Hugging Face folder (`config.data.wav2vec2_path`;
            config.json's model_type says which: importers/wav2vec2.py). The model runs at 50 Hz; the audio is
            padded by 40 samples on each side so that its frames 2k and 2k+1 fall on video frame k (as in
            models/speech2latent.py), and each step is repeated twice to reach 100 Hz. The model is frozen, so
            the features are computed once per clip when the clips are loaded (as DiffTalk precomputed its
            DeepSpeech features), not in the train step. Long audio runs in chunks of `chunk_frames` 50 Hz
            frames with `context_frames` of real audio on each side, so memory does not grow with the clip.
            Base models (768 wide) want `audio_dim=768`; layer 9 of 12 carries the most phonetic content in
            the SUPERB probes of both wav2vec2 and HuBERT, hence the default.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from daetalker_jax.data import contract
from daetalker_jax.data import features

FRONTENDS = ('logmel', 'wav2vec2')
W2V_PAD = 40            # samples on each side: 50 Hz frames 2k, 2k+1 cover video frame k (models/speech2latent.py)
W2V_HOP = 320           # samples per wav2vec2 frame


class FrontendError(ValueError):
  """A front end that cannot run as configured (one line, for the terminal)."""


@dataclasses.dataclass(frozen=True)
class Frontend:
  """A speech front end (module doc); `Frontend.from_config(config.data)`."""
  kind: str = 'logmel'
  path: str = ''                 # wav2vec2: local HF wav2vec2/HuBERT folder
  layer: int = 9                 # wav2vec2: hidden state index (0 .. num_hidden_layers)
  normalize: bool = True         # wav2vec2: zero-mean/unit-variance waveform first (HF do_normalize)
  chunk_frames: int = 1000       # wav2vec2: 50 Hz frames per chunk (20 s)
  context_frames: int = 50       # wav2vec2: frames of audio on each side of a chunk (1 s)

  def __post_init__(self):
    if self.kind not in FRONTENDS:
      raise FrontendError(f'config.data.frontend={self.kind!r}: expected one of {", ".join(FRONTENDS)}')
    if self.kind == 'wav2vec2':
      if not self.path:
        raise FrontendError('config.data.frontend=wav2vec2 needs config.data.wav2vec2_path: a local Hugging Face '
                            'wav2vec2 or HuBERT folder (config.json + weights)')
      if not os.path.isfile(os.path.join(self.path, 'config.json')):
        raise FrontendError(f'config.data.wav2vec2_path={self.path}: no config.json there (a Hugging Face wav2vec2 '
                            'or HuBERT folder, downloaded beforehand)')
      if self.chunk_frames < 1 or self.context_frames < 0:
        raise FrontendError(f'wav2vec2 front end: chunk_frames {self.chunk_frames} must be >= 1 and context_frames '
                            f'{self.context_frames} >= 0')

  @classmethod
  def from_config(cls, data: Any) -> Frontend:
    """From a config's `data` block; configs without front-end fields (older workdirs) get log-mel."""
    get = data.get if hasattr(data, 'get') else lambda k, d: getattr(data, k, d)
    return cls(kind=str(get('frontend', 'logmel')), path=str(get('wav2vec2_path', '')),
               layer=int(get('wav2vec2_layer', 9)), normalize=bool(get('wav2vec2_normalize', True)))

  @property
  def dim(self) -> int:
    """Features per step."""
    if self.kind == 'logmel':
      return features.N_MELS
    return _wav2vec2(self.path)[0].cfg.hidden_size

  def check(self, audio_dim: int, where: str) -> None:
    """One clear line when a model's `audio_dim` is not this front end's width (and the layer is out of range)."""
    if self.kind == 'wav2vec2':
      layers = _wav2vec2(self.path)[0].cfg.num_hidden_layers
      if not 0 <= self.layer <= layers:
        raise FrontendError(f'config.data.wav2vec2_layer={self.layer}: {self.path} has hidden states 0..{layers}')
    if audio_dim != self.dim:
      raise FrontendError(f'{where}.audio_dim={audio_dim}, but the {self.kind} front end gives {self.dim} features '
                          f'per step: pass --config.{where}.audio_dim={self.dim}')

  def __call__(self, audio: np.ndarray) -> np.ndarray:
    """(N*640,) int16 or float audio -> (4N, D) float32, normalised per dimension over the clip."""
    wav = contract.int16_to_float(audio) if audio.dtype == np.int16 else np.asarray(audio, np.float32)
    if self.kind == 'logmel':
      feats = np.asarray(features.log_mel(wav), np.float32)   # eager: clips of any length, no compile each
    else:
      feats = np.repeat(self._wav2vec2_states(wav), 2, axis=0)[:len(wav) // features.HOP]
    return (feats - feats.mean(0)) / (feats.std(0) + 1e-5)

  def _wav2vec2_states(self, wav: np.ndarray) -> np.ndarray:
    """(S,) float audio -> (S // 320, D) hidden state `layer`, chunk by chunk (module doc).

    Frame f reads samples 320f - 40 ... 320f + 360 (the audio padded by 40 zeros on each side). A chunk of
    frames [s, s + c) runs on the real audio of frames [s - m, s + c + m) clipped to the clip, zero-padded at
    the end to one fixed width (masked by `lengths`, so one compile serves every chunk); a clip shorter than a
    chunk runs whole, exactly as the Hugging Face model on the padded audio."""
    model, run = _wav2vec2(self.path)
    num = len(wav) // W2V_HOP
    if num < 1:
      raise FrontendError(f'wav2vec2 front end: {len(wav)} samples is shorter than one frame ({W2V_HOP})')
    if self.normalize:   # over the whole clip, as HF's feature extractor normalises the whole input
      wav = (wav - wav.mean()) / np.sqrt(wav.var() + 1e-7)
    c, m = min(self.chunk_frames, -(-num // 250) * 250), self.context_frames   # short clips: 5 s buckets
    width = (min(c + 2 * m, -(-num // 250) * 250)) * W2V_HOP + 2 * W2V_PAD
    padded = np.zeros(num * W2V_HOP + 2 * W2V_PAD, np.float32)
    padded[W2V_PAD:W2V_PAD + num * W2V_HOP] = wav[:num * W2V_HOP]
    out = []
    for s in range(0, num, c):
      lo, hi = max(0, s - m), min(num, s + c + m)
      window = np.zeros(width, np.float32)
      real = (hi - lo) * W2V_HOP + 2 * W2V_PAD
      window[:real] = padded[lo * W2V_HOP:hi * W2V_HOP + 2 * W2V_PAD]
      states = run(model, jnp.asarray(window[None]), jnp.array([real]), self.layer)
      out.append(np.asarray(states[0, s - lo:s - lo + min(c, num - s)], np.float32))
    return np.concatenate(out)


@functools.lru_cache(maxsize=2)
def _wav2vec2(path: str):
  """The frozen model of `path` and a jitted (model, audio (1, S), lengths (1,), layer) -> (1, T, D) state."""
  from daetalker_jax.importers import wav2vec2 as w2v_import  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  model = w2v_import.load_wav2vec2(path)

  @nnx.jit(static_argnums=3)
  def run(m, audio, lengths, layer):
    return m(audio, lengths=lengths, num_layers=layer)['hidden_states'][layer]

  return model, run



def for_config(config: Any) -> Frontend:
  """The front end of a DiffTalk / landmarks / talkformer config, checked against its model's `audio_dim`
  (`model.cond` for DiffTalk, `model.stage_a` for landmark diffusion)."""
  frontend = Frontend.from_config(config.data)
  where = 'model.cond' if 'cond' in config.model else 'model.stage_a'
  block = config.model.cond if 'cond' in config.model else config.model.stage_a
  frontend.check(int(block.audio_dim), where)
  return frontend
