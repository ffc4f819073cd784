"""HuBERT through the wav2vec2 port: import of tiny random HF `HubertModel`s and parity of every hidden state."""

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

torch.set_num_threads(1)

_VARIANTS = _speech_models.HUBERT_VARIANTS


def _tiny_hf(tmp_path, variant: str, *, seed: int = 0) -> tuple[str, object]:
  return _speech_models.tiny_hf(tmp_path, variant, family='hubert', seed=seed)


@pytest.mark.parametrize('variant', sorted(_VARIANTS))
def test_hidden_states_match_hf(tmp_path, variant):
  path, hf = _tiny_hf(tmp_path, variant)
  with open(os.path.join(path, 'config.json')) as f:
    assert json.load(f)['model_type'] == 'hubert'
  ours = w2v_import.load_wav2vec2(path)
  assert ours.cfg.feat_proj_layer_norm == (variant != 'options')
  assert ours.cfg.conv_pos_batch_norm == (variant == 'options')
  rng = np.random.default_rng(1)
  audio = rng.standard_normal((2, 6400)).astype(np.float32)   # 0.4 s -> 19 frames
  with torch.no_grad():
    ref = hf(torch.from_numpy(audio), output_hidden_states=True)
    # HubertModel returns no extract_features: the projection's input, rebuilt from HF's own modules.
    feats = hf.feature_extractor(torch.from_numpy(audio)).transpose(1, 2)
    ref_extract = (hf.feature_projection.layer_norm(feats) if hf.config.feat_proj_layer_norm else feats).numpy()
  out = jax.jit(lambda m, a: m(a))(ours, jnp.asarray(audio))
  assert len(out['hidden_states']) == len(ref.hidden_states) == 3
  errs = {}
  for i, (a, b) in enumerate(zip(out['hidden_states'], ref.hidden_states)):
    errs[f'hidden_states[{i}]'] = np.abs(np.asarray(a) - b.numpy()).max()
  errs['last_hidden_state'] = np.abs(np.asarray(out['last_hidden_state']) - ref.last_hidden_state.numpy()).max()
  errs['extract_features'] = np.abs(np.asarray(out['extract_features']) - ref_extract).max()
  print(variant, {k: f'{v:.1e}' for k, v in errs.items()})
  assert out['hidden_states'][-1].shape == (2, 19, 32)
  assert max(errs.values()) <= 1e-4, errs
  assert np.abs(ref.last_hidden_state.numpy()).mean() > 0.1      # outputs carry signal of order 1


def test_ctc_checkpoint_bin_with_prefix_and_weight_g_v(tmp_path):
  """A `HubertForCTC`-style pytorch_model.bin (`hubert.` prefix, old weight_g / weight_v, a CTC head) loads."""
  path, hf = _tiny_hf(tmp_path, 'base', seed=3)
  os.remove(os.path.join(path, 'model.safetensors'))
  renamed = {}
  for k, v in hf.state_dict().items():
    k = k.replace('parametrizations.weight.original0', 'weight_g').replace('parametrizations.weight.original1',
                                                                           'weight_v')
    renamed['hubert.' + k] = v
  renamed['lm_head.weight'] = torch.zeros(5, 32)                   # the CTC head is skipped
  renamed['lm_head.bias'] = torch.zeros(5)
  torch.save(renamed, os.path.join(path, 'pytorch_model.bin'))
  ours = wav2vec2.Wav2Vec2Model(w2v_import.read_config(path), rngs=nnx.Rngs(0))
  skipped = w2v_import.load_wav2vec2_into(ours, path)
  assert set(skipped) == {'lm_head.weight', 'lm_head.bias', 'masked_spec_embed'}
  audio = np.random.default_rng(0).standard_normal((1, 3200)).astype(np.float32)
  with torch.no_grad():
    ref = hf(torch.from_numpy(audio)).last_hidden_state.numpy()
  out = nnx.jit(lambda m, a: m(a)['last_hidden_state'])(ours, jnp.asarray(audio))
  np.testing.assert_allclose(np.asarray(out), ref, atol=1e-4)


def test_default_hubert_config_equals_wav2vec2_config(tmp_path):
  """HuBERT with its default flags has exactly wav2vec2's architecture; wav2vec2 configs ignore the flags."""
  path, _ = _tiny_hf(tmp_path, 'large')
  with open(os.path.join(path, 'config.json')) as f:
    d = json.load(f)
  d['model_type'] = 'wav2vec2'
  # wav2vec2 has no such flags: they are ignored for it, whatever their value.
  as_w2v = wav2vec2.Wav2Vec2Config.from_hf_dict(dict(d, feat_proj_layer_norm=False, conv_pos_batch_norm=True))
  assert w2v_import.read_config(path) == as_w2v


def test_import_errors(tmp_path):
  path, _ = _tiny_hf(tmp_path, 'options')
  cfg_path = os.path.join(path, 'config.json')
  with open(cfg_path) as f:
    d = json.load(f)
  # Unsupported model types: one error naming the accepted ones.
  with open(cfg_path, 'w') as f:
    json.dump(dict(d, model_type='wavlm'), f)
  with pytest.raises(ValueError, match=r"model_type is 'wavlm', expected one of wav2vec2, hubert"):
    w2v_import.read_config(path)
  with pytest.raises(ValueError, match=r"model_type is 'wavlm', expected one of wav2vec2, hubert"):
    w2v_import.load_wav2vec2(path)
  # The checkpoint has a BatchNorm the config does not announce: refused naming the key.
  with open(cfg_path, 'w') as f:
    json.dump(dict(d, conv_pos_batch_norm=False), f)
  with pytest.raises(ValueError, match=r"'encoder.pos_conv_embed.batch_norm.bias' .* has no parameter"):
    w2v_import.load_wav2vec2(path)
  # The config announces a feature-projection LayerNorm the checkpoint lacks: missing parameters listed.
  with open(cfg_path, 'w') as f:
    json.dump(dict(d, feat_proj_layer_norm=True), f)
  with pytest.raises(ValueError, match=r'2 model parameters missing .*feature_projection/layer_norm'):
    w2v_import.load_wav2vec2(path)
  # The config announces a BatchNorm the checkpoint lacks.
  path2, _ = _tiny_hf(tmp_path, 'base')
  cfg_path2 = os.path.join(path2, 'config.json')
  with open(cfg_path2) as f:
    d2 = json.load(f)
  with open(cfg_path2, 'w') as f:
    json.dump(dict(d2, conv_pos_batch_norm=True), f)
  with pytest.raises(ValueError, match=r'conv_pos_batch_norm=true but the checkpoint lacks'):
    w2v_import.load_wav2vec2(path2)


def test_speech2latent_frontend_with_hubert_folder(tmp_path):
  """The s2l wav2vec2 front end takes a HuBERT folder through the same wav2vec2_path field."""
  from daetalker_jax.models import speech2latent as s2l
  path, hf = _tiny_hf(tmp_path, 'options', seed=5)
  cfg = w2v_import.s2l_config(dict(frontend='wav2vec2', wav2vec2_path=path, wav2vec2_layer=2, d_model=16,
                                   num_heads=2, num_encoder_blocks=1, num_decoder_blocks=1, latent_dim=8))
  assert cfg.wav2vec2 == w2v_import.read_config(path) and cfg.wav2vec2.conv_pos_batch_norm
  model = s2l.Speech2Latent(cfg, rngs=nnx.Rngs(0))
  w2v_import.load_wav2vec2_into(model.wav2vec2, cfg.wav2vec2_path)
  w = 5
  audio = (0.2 * np.random.default_rng(2).standard_normal((1, w * 640)) + 0.05).astype(np.float32)
  feats = np.asarray(nnx.jit(lambda m, a: m.frontend_features(a, jnp.ones((1, w), bool)))(model, audio))
  assert feats.shape == (1, 2 * w, 32)
  x = (audio - audio.mean()) / np.sqrt(audio.var() + 1e-7)       # do_normalize, then s2l's padding
  x = np.pad(x, ((0, 0), (s2l.W2V_PAD, s2l.W2V_PAD)))
  with torch.no_grad():
    ref = hf(torch.from_numpy(x), output_hidden_states=True).hidden_states[2].numpy()
  np.testing.assert_allclose(feats, ref, atol=1e-4)
