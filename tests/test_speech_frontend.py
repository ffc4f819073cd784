"""The generic methods' speech front ends (data/speech.py): log-mel, and a frozen wav2vec2 / HuBERT hidden state
with parity against the Hugging Face PyTorch model, chunking, configs and one clear line per bad setting."""

import numpy as np
import pytest
import torch

from configs import difftalk as difftalk_config
from configs import landmarks as landmarks_config
from configs import talkformer as talkformer_config
from daetalker_jax.data import examples
from daetalker_jax.data import features
from daetalker_jax.data import speech
from tests import _speech_models

torch.set_num_threads(1)


def _speech(frames: int, seed: int = 0) -> np.ndarray:
  """A voiced-ish test signal: harmonics with a moving pitch and an envelope, plus a little noise."""
  t = np.arange(frames * 640) / 16000
  rng = np.random.default_rng(seed)
  f0 = 120 + 40 * np.sin(2 * np.pi * 1.3 * t)
  phase = 2 * np.pi * np.cumsum(f0) / 16000
  x = sum(np.sin(k * phase) / k for k in range(1, 6)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2)
  return (0.3 * x + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def _normalised(x: np.ndarray) -> np.ndarray:
  return (x - x.mean(0)) / (x.std(0) + 1e-5)


def test_logmel_is_the_default_and_normalised_per_clip():
  audio = _speech(25)
  feats = examples.clip_features(audio)
  assert feats.shape == (100, features.N_MELS)
  np.testing.assert_allclose(feats, speech.Frontend('logmel')(audio))
  np.testing.assert_allclose(feats.mean(0), 0, atol=1e-4)
  np.testing.assert_allclose(feats.std(0), 1, atol=1e-3)
  # int16 audio reads the same, and the level hardly matters (log(mel + 1e-5): only the quietest bins move).
  for other in (examples.clip_features((audio * 16384).astype(np.int16)), examples.clip_features(3 * audio)):
    assert np.corrcoef(other.ravel(), feats.ravel())[0, 1] > 0.99


@pytest.mark.parametrize('family,variant', [('wav2vec2', 'base'), ('hubert', 'large')])
def test_wav2vec2_frontend_matches_hf(tmp_path, family, variant):
  path, hf = _speech_models.tiny_hf(tmp_path, variant, family=family, num_hidden_layers=3)
  audio = _speech(10)                                                    # 6400 samples: 20 wav2vec2 frames
  fe = speech.Frontend('wav2vec2', path=path, layer=2)
  assert fe.dim == 32
  feats = fe(audio)
  assert feats.shape == (40, 32)                                         # 4 steps per video frame, as log-mel
  # Reference: HF on the whole-clip-normalised audio padded by 40 zeros on each side, frames repeated twice.
  x = (audio - audio.mean()) / np.sqrt(audio.var() + 1e-7)
  x = np.pad(x, (speech.W2V_PAD, speech.W2V_PAD))
  with torch.no_grad():
    ref = hf(torch.from_numpy(x[None]), output_hidden_states=True).hidden_states[2][0].numpy()
  assert ref.shape == (20, 32)
  want = _normalised(np.repeat(ref, 2, axis=0))
  np.testing.assert_allclose(feats, want, atol=2e-4)
  assert np.abs(want).mean() > 0.3                                       # signal, not zeros
  # Frames 2k, 2k+1 of the model are video frame k: steps 4k..4k+3.
  np.testing.assert_allclose(feats[0::4], feats[1::4])
  # Another layer gives other features.
  assert np.abs(speech.Frontend('wav2vec2', path=path, layer=1)(audio) - feats).mean() > 0.1


def test_wav2vec2_chunks_cover_the_clip(tmp_path):
  path, _ = _speech_models.tiny_hf(tmp_path, 'base', num_hidden_layers=2)
  audio = _speech(30)                                                    # 60 frames
  whole = speech.Frontend('wav2vec2', path=path, layer=2)(audio)
  # Chunks whose context reaches past both ends see the whole clip: the same features.
  wide = speech.Frontend('wav2vec2', path=path, layer=2, chunk_frames=16, context_frames=100)(audio)
  np.testing.assert_allclose(wide, whole, atol=2e-4)
  # Short context: every frame is computed once, in order, and close to the whole-clip features.
  short = speech.Frontend('wav2vec2', path=path, layer=2, chunk_frames=16, context_frames=8)(audio)
  assert short.shape == whole.shape == (120, 32)
  assert np.corrcoef(short.ravel(), whole.ravel())[0, 1] > 0.9


def test_configs_and_errors(tmp_path):
  path, _ = _speech_models.tiny_hf(tmp_path, 'base')
  for module, block in ((difftalk_config, 'cond'), (landmarks_config, 'stage_a'), (talkformer_config, 'stage_a')):
    cfg = module.get_config('variant=tiny')
    assert cfg.data.frontend == 'logmel' and cfg.model[block].audio_dim == 80
    speech.for_config(cfg)                                               # log-mel: nothing to check
    cfg = module.get_config('variant=tiny,frontend=wav2vec2')
    assert cfg.data.frontend == 'wav2vec2' and cfg.model[block].audio_dim == 768
    with pytest.raises(speech.FrontendError, match='needs config.data.wav2vec2_path'):
      speech.for_config(cfg)
    cfg.data.wav2vec2_path = path
    with pytest.raises(speech.FrontendError, match=r'wav2vec2_layer=9: .* has hidden states 0\.\.2'):
      speech.for_config(cfg)
    cfg.data.wav2vec2_layer = 2
    with pytest.raises(speech.FrontendError,
                       match=rf'model.{block}.audio_dim=768, but the wav2vec2 front end gives 32 features per step: '
                             rf'pass --config.model.{block}.audio_dim=32'):
      speech.for_config(cfg)
    cfg.model[block].audio_dim = 32
    assert speech.for_config(cfg) == speech.Frontend('wav2vec2', path=path, layer=2)
  with pytest.raises(speech.FrontendError, match='no config.json there'):
    speech.Frontend('wav2vec2', path=str(tmp_path / 'missing'))
  with pytest.raises(speech.FrontendError, match="frontend='mfcc': expected one of logmel, wav2vec2"):
    speech.Frontend('mfcc')
  with pytest.raises(ValueError, match="unknown frontend 'mfcc'"):
    difftalk_config.get_config('variant=tiny,frontend=mfcc')


def test_wav2vec2_features_feed_difftalk_and_stage_a(tmp_path, tiny_dataset):
  """The task's data path uses the configured front end: DiffTalk batches and Stage A windows carry the
  model's features (width 32 here), and both models take them."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from daetalker_jax.models import audio2landmarks as a2l  # pylint: disable=g-import-not-at-top
  from daetalker_jax.tasks import difftalk as difftalk_task  # pylint: disable=g-import-not-at-top
  path, _ = _speech_models.tiny_hf(tmp_path, 'base')
  cfg = difftalk_config.get_config('variant=tiny,frontend=wav2vec2')
  cfg.data.update(data_dir=str(tiny_dataset), wav2vec2_path=path, wav2vec2_layer=1)
  cfg.model.cond.audio_dim = 32
  args = difftalk_task._example_args(cfg)  # pylint: disable=protected-access
  assert args['frontend'] == speech.Frontend('wav2vec2', path=path, layer=1)
  batch = examples.fixed_examples(tiny_dataset, 'val', 2, **args)
  assert batch['audio'].shape == (2, 8, 16, 32) and np.isfinite(batch['audio']).all()
  model = difftalk_task.TASK.create_model(cfg, nnx.Rngs(0))
  loss, _ = difftalk_task.loss_fn(cfg, model, jax.tree.map(jnp.asarray, batch), jax.random.key(0), train=True)
  assert np.isfinite(float(loss))
  lm_cfg = landmarks_config.get_config('variant=tiny,frontend=wav2vec2')
  lm_cfg.data.update(wav2vec2_path=path, wav2vec2_layer=1)
  lm_cfg.model.stage_a.audio_dim = 32
  window = examples.fixed_landmark_examples(tiny_dataset, 'val', 2, image_size=16, images=False,
                                            frontend=speech.for_config(lm_cfg), num_frames=5, num_refs=4,
                                            audio_window=16)
  assert window['audio'].shape == (2, 5, 16, 32)
  stage_a = a2l.build(lm_cfg, rngs=nnx.Rngs(0))
  assert stage_a(window['audio'], window['context'], window['ref_sets']).shape == (2, 5, 29, 2)
