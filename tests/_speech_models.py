"""Tiny random Hugging Face wav2vec2 / HuBERT folders, for the parity tests of the port and its users."""

import os

import torch
import transformers

WAV2VEC2_VARIANTS = {
    'base': dict(feat_extract_norm='group', do_stable_layer_norm=False),
    'large': dict(feat_extract_norm='layer', do_stable_layer_norm=True, conv_bias=True),
}
HUBERT_VARIANTS = {
    # hubert-base: GroupNorm conv stack, post-LN layers, weight-normed positional conv.
    'base': dict(feat_extract_norm='group', do_stable_layer_norm=False),
    # hubert-large / xlarge: LayerNorm conv stack with conv bias, pre-LN layers.
    'large': dict(feat_extract_norm='layer', do_stable_layer_norm=True, conv_bias=True),
    # HuBERT-only options: no LayerNorm before the projection, BatchNorm instead of weight norm.
    'options': dict(feat_extract_norm='group', do_stable_layer_norm=False, feat_proj_layer_norm=False,
                    conv_pos_batch_norm=True),
}
_FAMILIES = {'wav2vec2': (transformers.Wav2Vec2Config, transformers.Wav2Vec2Model, WAV2VEC2_VARIANTS),
             'hubert': (transformers.HubertConfig, transformers.HubertModel, HUBERT_VARIANTS)}


def tiny_hf(tmp_path, variant: str, *, family: str = 'wav2vec2', seed: int = 0, num_hidden_layers: int = 2
            ) -> tuple[str, object]:
  """Saves a tiny random `family` model (hidden 32, 50 Hz like the real ones) under tmp_path/variant; returns
  (folder, the PyTorch model)."""
  config_cls, model_cls, variants = _FAMILIES[family]
  torch.manual_seed(seed)
  cfg = config_cls(
      hidden_size=32, num_hidden_layers=num_hidden_layers, num_attention_heads=2, intermediate_size=48,
      conv_dim=(16,) * 7, conv_stride=(5, 2, 2, 2, 2, 2, 2), conv_kernel=(10, 3, 3, 3, 3, 2, 2),
      num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, **variants[variant])
  model = model_cls(cfg).eval()
  # Random init leaves norms at identity, weight-norm g at ||v|| and BatchNorm statistics at (0, 1); perturb
  # every parameter and statistic so that a wrong mapping, a missed transpose or a wrong fold cannot hide.
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.1 * torch.randn_like(p))
    for name, b in model.named_buffers():
      if name.endswith('running_mean'):
        b.copy_(0.3 * torch.randn_like(b))
      elif name.endswith('running_var'):
        b.copy_(0.5 + torch.rand_like(b))
  path = os.path.join(tmp_path, variant)
  model.save_pretrained(path)                                   # config.json + model.safetensors
  return path, model
