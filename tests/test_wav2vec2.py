"""wav2vec2 port: import of a tiny random HF model and parity of every hidden state, both variants."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from daetalker_jax.importers import wav2vec2 as w2v_import
from daetalker_jax.models import wav2vec2
from tests import _speech_models

_VARIANTS = _speech_models.WAV2VEC2_VARIANTS


def _tiny_hf(tmp_path, variant: str, *, seed: int = 0) -> tuple[str, object]:
  return _speech_models.tiny_hf(tmp_path, variant, family='wav2vec2', seed=seed)


@pytest.mark.parametrize('variant', ['base', 'large'])
def test_hidden_states_match_hf(tmp_path, variant):
  path, hf = _tiny_hf(tmp_path, variant)
  ours = w2v_import.load_wav2vec2(path)
  assert ours.cfg.total_stride == 320 and ours.cfg.receptive_field == 400   # 50 Hz like the real models
  rng = np.random.default_rng(1)
  audio = rng.standard_normal((2, 6400)).astype(np.float32)   # 0.4 s -> 19 frames
  with torch.no_grad():
    ref = hf(torch.from_numpy(audio), output_hidden_states=True)
  out = jax.jit(lambda m, a: m(a))(ours, jnp.asarray(audio))
  assert len(out['hidden_states']) == len(ref.hidden_states) == 3
  errs = {}
  for i, (a, b) in enumerate(zip(out['hidden_states'], ref.hidden_states)):
    errs[f'hidden_states[{i}]'] = np.abs(np.asarray(a) - b.numpy()).max()
  errs['last_hidden_state'] = np.abs(np.asarray(out['last_hidden_state']) - ref.last_hidden_state.numpy()).max()
  errs['extract_features'] = np.abs(np.asarray(out['extract_features']) - ref.extract_features.numpy()).max()
  print(variant, {k: f'{v:.1e}' for k, v in errs.items()})
  assert out['hidden_states'][-1].shape == (2, 19, 32)
  assert max(errs.values()) <= 1e-4, errs
  # The parity is not trivially satisfied: the outputs carry signal of order 1.
  assert np.abs(ref.last_hidden_state.numpy()).mean() > 0.1


def test_pytorch_bin_and_weight_g_v(tmp_path):
  """pytorch_model.bin with old-style weight_g / weight_v keys and a `wav2vec2.` prefix loads too."""
  path, hf = _tiny_hf(tmp_path, 'base', seed=3)
  os.remove(os.path.join(path, 'model.safetensors'))
  sd = hf.state_dict()
  renamed = {}
  for k, v in sd.items():
    k = k.replace('parametrizations.weight.original0', 'weight_g').replace('parametrizations.weight.original1',
                                                                           'weight_v')
    renamed['wav2vec2.' + k] = v
  renamed['lm_head.weight'] = torch.zeros(5, 32)                   # a CTC head is skipped
  torch.save(renamed, os.path.join(path, 'pytorch_model.bin'))
  ours = w2v_import.load_wav2vec2(path)
  audio = np.random.default_rng(0).standard_normal((1, 3200)).astype(np.float32)
  with torch.no_grad():
    ref = hf(torch.from_numpy(audio)).last_hidden_state.numpy()
  out = nnx.jit(lambda m, a: m(a)['last_hidden_state'])(ours, jnp.asarray(audio))
  np.testing.assert_allclose(np.asarray(out), ref, atol=1e-4)


def test_import_errors(tmp_path):
  path, _ = _tiny_hf(tmp_path, 'large')
  with pytest.raises(FileNotFoundError, match='config.json: not found'):
    w2v_import.load_wav2vec2(str(tmp_path / 'nope'))
  # A config with a different width than the checkpoint: clear shape error naming the key.
  with open(os.path.join(path, 'config.json')) as f:
    d = json.load(f)
  d['intermediate_size'] = 40
  with open(os.path.join(path, 'config.json'), 'w') as f:
    json.dump(d, f)
  with pytest.raises(ValueError, match=r"intermediate_dense.bias' has shape \(48,\)"):
    w2v_import.load_wav2vec2(path)
  # Loading into a model of a different architecture is refused before any weight is copied.
  other = wav2vec2.Wav2Vec2Model(wav2vec2.Wav2Vec2Config(
      hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=48, conv_dim=(16,),
      conv_stride=(5,), conv_kernel=(10,), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4),
      rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match='architecture differs'):
    w2v_import.load_wav2vec2_into(other, path)
  d['feat_extract_norm'] = 'batch'
  with open(os.path.join(path, 'config.json'), 'w') as f:
    json.dump(d, f)
  with pytest.raises(ValueError, match=r'config.json: Wav2Vec2Config: feat_extract_norm must be group\|layer'):
    w2v_import.load_wav2vec2(path)


@pytest.mark.parametrize('variant', ['base', 'large'])
def test_padding_does_not_change_real_frames(tmp_path, variant):
  path, _ = _tiny_hf(tmp_path, variant)
  model = w2v_import.load_wav2vec2(path)
  rng = np.random.default_rng(0)
  short = rng.standard_normal((1, 3200)).astype(np.float32)       # 9 frames
  padded = np.concatenate([short, 5 * rng.standard_normal((1, 3200)).astype(np.float32)], axis=1)
  padded[:, 3200:] = 0.0                                           # padding is zeros, as s2l feeds it
  run = nnx.jit(lambda m, x, n: m(x, lengths=n))
  a = run(model, jnp.asarray(short), jnp.array([3200]))
  b = run(model, jnp.asarray(padded), jnp.array([3200]))
  assert int(b['mask'].sum()) == 9 and a['hidden_states'][-1].shape[1] == 9
  for ha, hb in zip(a['hidden_states'], b['hidden_states']):
    np.testing.assert_allclose(np.asarray(hb[:, :9]), np.asarray(ha), atol=1e-4)


def test_layer_mix():
  hs = [jnp.full((1, 2, 3), float(i)) for i in range(3)]
  np.testing.assert_allclose(wav2vec2.LayerMix(3, 1, rngs=nnx.Rngs(0))(hs), hs[1])
  mix = wav2vec2.LayerMix(3, -1, rngs=nnx.Rngs(0))
  np.testing.assert_allclose(mix(hs), np.full((1, 2, 3), 1.0), rtol=1e-6)   # equal weights: mean
  with pytest.raises(ValueError, match='out of range'):
    wav2vec2.LayerMix(3, 3, rngs=nnx.Rngs(0))


def test_speech2latent_frontend_uses_imported_model(tmp_path):
  """configs -> s2l_config (architecture from wav2vec2_path) -> load_wav2vec2_into: HF's features at 2 per frame."""
  from daetalker_jax.data import features
  from daetalker_jax.models import speech2latent as s2l
  path, hf = _tiny_hf(tmp_path, 'large', seed=5)
  cfg = w2v_import.s2l_config(dict(frontend='wav2vec2', wav2vec2_path=path, wav2vec2_layer=1, d_model=16,
                                   num_heads=2, num_encoder_blocks=1, num_decoder_blocks=1, latent_dim=8))
  model = s2l.Speech2Latent(cfg, rngs=nnx.Rngs(0))
  w2v_import.load_wav2vec2_into(model.wav2vec2, cfg.wav2vec2_path)
  w = 5
  audio = (0.2 * np.random.default_rng(2).standard_normal((1, w * 640)) + 0.05).astype(np.float32)
  feats = np.asarray(nnx.jit(lambda m, a: m.frontend_features(a, jnp.ones((1, w), bool)))(model, audio))
  assert feats.shape == (1, 2 * w, 32)
  # HF reference: do_normalize, then the 40-sample padding on each side that makes 2W frames.
  x = (audio - audio.mean()) / np.sqrt(audio.var() + 1e-7)
  x = np.pad(x, ((0, 0), (s2l.W2V_PAD, s2l.W2V_PAD)))
  with torch.no_grad():
    ref = hf(torch.from_numpy(x), output_hidden_states=True).hidden_states[1].numpy()
  assert ref.shape[1] == 2 * w == features.MEL_PER_VIDEO_FRAME * w // 2
  np.testing.assert_allclose(feats, ref, atol=1e-4)
