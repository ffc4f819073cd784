"""LDM UNet (DiffTalk's denoiser) against diffusers' UNet2DConditionModel, its importers, size and input checks."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint
from flax import nnx

from daetalker_jax.importers import ldm_unet as importer
from daetalker_jax.models import ldm_unet

torch.set_num_threads(1)


# Its module fixtures are built once: pytest-xdist runs the whole module on one worker.
pytestmark = pytest.mark.xdist_group('ldm_unet')


# One level without attention (DownBlock2D), one with cross-attention, plus the middle block; 16-channel heads.
_TINY_DIFFUSERS = dict(
    sample_size=16, in_channels=9, out_channels=3, block_out_channels=(32, 64), layers_per_block=2,
    down_block_types=('DownBlock2D', 'CrossAttnDownBlock2D'), up_block_types=('CrossAttnUpBlock2D', 'UpBlock2D'),
    cross_attention_dim=16, attention_head_dim=(2, 4), norm_num_groups=16)
_TINY = ldm_unet.LDMUNetConfig(image_size=16, in_channels=9, out_channels=3, model_channels=32, channel_mult=(1, 2),
                               num_res_blocks=2, attention_resolutions=(2,), num_head_channels=16, context_dim=16,
                               norm_groups=16)


@pytest.fixture(scope='module')
def tiny_torch(tmp_path_factory):
  """A tiny diffusers UNet with every parameter perturbed (zero-inits and unit norms cannot hide bugs), saved."""
  torch.manual_seed(0)
  model = UNet2DConditionModel(**_TINY_DIFFUSERS).eval()
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.05 * torch.randn_like(p))
  path = tmp_path_factory.mktemp('ldm_unet') / 'unet'
  model.save_pretrained(path)  # config.json + diffusion_pytorch_model.safetensors
  return path, model


@pytest.fixture(scope='module')
def tiny(tiny_torch):
  return importer.load_diffusers(tiny_torch[0])


@nnx.jit
def _apply(model, x, t, context):
  return model(x, t, context)


def _inputs(context_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """x (2,9,16,16) NCHW, t (2,), context (2,L,16); integer timesteps for L=1, fractional ones for L=3."""
  rs = np.random.RandomState(context_len)
  x = rs.randn(2, 9, 16, 16).astype(np.float32)
  t = np.array([3, 871]) if context_len == 1 else np.array([250.5, 250.5], np.float32)
  return x, t, rs.randn(2, context_len, 16).astype(np.float32)


def test_config_from_diffusers_folder(tiny):
  assert tiny.cfg == _TINY


@pytest.mark.parametrize('context_len', [1, 3])
def test_matches_diffusers(tiny_torch, tiny, context_len):
  x, t, context = _inputs(context_len)
  with torch.no_grad():
    ref = tiny_torch[1](torch.from_numpy(x), torch.from_numpy(t), torch.from_numpy(context)).sample.numpy()
  out = _apply(tiny, jnp.asarray(x.transpose(0, 2, 3, 1)), jnp.asarray(t), jnp.asarray(context))
  assert out.shape == (2, 16, 16, 3) and out.dtype == jnp.float32
  err = np.abs(np.asarray(out).transpose(0, 3, 1, 2) - ref).max()
  print(f'context {context_len}: max abs err {err:.2e}, max |ref| {np.abs(ref).max():.2f}')
  assert np.abs(ref).std() > 0.1  # the reference is not trivially small
  assert err <= 1e-4


def test_ldm_checkpoint_names(tiny, tiny_torch, tmp_path):
  """Our LDM key names agree with diffusers' own LDM -> diffusers converter; .ckpt (and its EMA copy) loads."""
  ldm = importer.export_state_dict(tiny, naming='ldm')
  ema = {k: v + 1 for k, v in ldm.items()}
  ckpt = {'model.diffusion_model.' + k: torch.tensor(v) for k, v in ldm.items()}
  ckpt.update({'model_ema.' + ('diffusion_model.' + k).replace('.', ''): torch.tensor(v) for k, v in ema.items()})
  ckpt['model_ema.num_updates'] = torch.tensor(7)
  ckpt['first_stage_model.encoder.conv_in.weight'] = torch.zeros(3, 3, 3, 3)  # other LatentDiffusion parts
  # diffusers' converter maps LDM names to its own; loading strictly proves every name and shape.
  ref_config = dict(tiny_torch[1].config)
  converted = convert_ldm_unet_checkpoint(ckpt, ref_config)
  ref_sd = tiny_torch[1].state_dict()
  assert set(converted) == set(ref_sd)
  for k, v in ref_sd.items():
    np.testing.assert_array_equal(converted[k].numpy(), v.numpy(), err_msg=k)
  converted_ema = convert_ldm_unet_checkpoint(ckpt, ref_config, extract_ema=True)
  np.testing.assert_array_equal(converted_ema['conv_in.weight'].numpy(), ref_sd['conv_in.weight'].numpy() + 1)

  path = tmp_path / 'last.ckpt'
  torch.save({'state_dict': ckpt, 'global_step': 3}, path)
  plain = importer.read_ldm_state_dict(path)
  assert set(plain) == set(ldm) and all(np.array_equal(plain[k], ldm[k]) for k in ldm)
  loaded = importer.load_ldm_checkpoint(path, _TINY, ema=True)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(b), np.asarray(a) + 1, atol=1e-6),
               nnx.state(tiny, nnx.Param), nnx.state(loaded, nnx.Param))


def test_import_errors(tiny, tiny_torch, tmp_path):
  sd = importer.read_diffusers_state_dict(tiny_torch[0])
  with pytest.raises(ValueError, match='1 unmapped checkpoint keys'):
    importer.import_state_dict(tiny, {**sd, 'extra.weight': np.zeros(3)}, naming='diffusers')
  with pytest.raises(ValueError, match='1 model params missing'):
    importer.import_state_dict(tiny, {k: v for k, v in sd.items() if k != 'conv_out.bias'}, naming='diffusers')
  with pytest.raises(ValueError, match="naming must be"):
    importer.import_state_dict(tiny, sd, naming='torch')
  path = tmp_path / 'bare.ckpt'
  torch.save({'state_dict': {'model.diffusion_model.input_blocks.0.0.weight': torch.zeros(32, 9, 3, 3)}}, path)
  with pytest.raises(ValueError, match='ema=True but'):
    importer.read_ldm_state_dict(path, ema=True)


def _diffusers_config(**changes):
  d = json.loads(json.dumps(UNet2DConditionModel(**_TINY_DIFFUSERS).config))
  d.update(changes)
  return d


@pytest.mark.parametrize('changes,message', [
    (dict(use_linear_projection=True), 'use_linear_projection=True'),
    (dict(down_block_types=['AttnDownBlock2D', 'CrossAttnDownBlock2D']), 'AttnDownBlock2D'),
    (dict(up_block_types=['UpBlock2D', 'CrossAttnUpBlock2D']), 'LDM mirrors the down path'),
    (dict(resnet_time_scale_shift='scale_shift'), 'resnet_time_scale_shift'),
    (dict(attention_head_dim=[2, 3]), 'heads must divide'),
    (dict(transformer_layers_per_block=[1, 2]), 'same on every level'),
    (dict(some_new_option=1), 'unknown setting'),
])
def test_unsupported_diffusers_configs(changes, message):
  with pytest.raises(ValueError, match=message):
    importer.config_from_diffusers(_diffusers_config(**changes))


def test_num_heads_mode_from_diffusers():
  """Equal head counts with unequal head widths map to LDM's num_heads mode."""
  d = _diffusers_config(down_block_types=['CrossAttnDownBlock2D'] * 2, up_block_types=['CrossAttnUpBlock2D'] * 2,
                        attention_head_dim=4)
  cfg = importer.config_from_diffusers(d)
  assert (cfg.num_head_channels, cfg.num_heads, cfg.attention_resolutions) == (-1, 4, (1, 2))
  assert cfg.heads(32) == (4, 8) and cfg.heads(64) == (4, 16)


def test_difftalk_param_count():
  """DiffTalk's denoiser (the config's defaults), built abstractly; diffusers' equivalent on the meta device."""
  cfg = ldm_unet.LDMUNetConfig()
  model = nnx.eval_shape(lambda: ldm_unet.LDMUNet(cfg, rngs=nnx.Rngs(0)))
  assert ldm_unet.count_params(model) == 530_152_963
  with torch.device('meta'):
    ref = UNet2DConditionModel(
        sample_size=64, in_channels=9, out_channels=3, block_out_channels=(256, 512, 768, 1024),
        down_block_types=('DownBlock2D',) + ('CrossAttnDownBlock2D',) * 3,
        up_block_types=('CrossAttnUpBlock2D',) * 3 + ('UpBlock2D',), layers_per_block=2,
        cross_attention_dim=128, attention_head_dim=(8, 16, 24, 32))
  assert sum(p.numel() for p in ref.parameters()) == 530_152_963
  # Same tree: every diffusers parameter has a twin of the same size.
  names = importer.diffusers_namer(cfg)
  ours = {names(importer.ldm_name(p)): v.get_value().size for p, v in nnx.iter_graph(model)
          if isinstance(v, nnx.Param)}
  assert ours == {k: p.numel() for k, p in ref.named_parameters()}


def test_zero_init():
  """LDM's zero_module: res-block out convs, transformer proj_out and the final conv start at zero."""
  # An rbg key: threefry's per-shape compiles make this init ~5x slower on CPU.
  model = ldm_unet.LDMUNet(_TINY, rngs=nnx.Rngs(jax.random.key(0, impl='unsafe_rbg')))
  zero = [p for p, v in nnx.iter_graph(model) if isinstance(v, nnx.Param) and not np.any(np.asarray(v.get_value()))]
  kernels = {p[-2] for p in zero if p[-1] == 'kernel'}
  assert kernels == {'out_conv', 'proj_out'}
  n_res = sum(isinstance(m, ldm_unet.ResBlock) for _, m in nnx.iter_graph(model))
  n_tr = sum(isinstance(m, ldm_unet.SpatialTransformer) for _, m in nnx.iter_graph(model))
  assert (n_res, n_tr) == (4 + 2 + 6, 2 + 1 + 3)
  assert sum(p[-1] == 'kernel' for p in zero) == n_res + n_tr + 1


def test_bfloat16_remat_and_scalar_t(tiny):
  """bfloat16 compute (with remat) returns float32 near the float32 output; a scalar t is broadcast."""
  cfg = ldm_unet.LDMUNetConfig(**{**tiny.cfg.__dict__, 'dtype': 'bfloat16', 'remat': True})
  fast = nnx.eval_shape(lambda: ldm_unet.LDMUNet(cfg, rngs=nnx.Rngs(0)))
  nnx.update(fast, nnx.state(tiny, nnx.Param))
  x, t, context = _inputs(3)
  x = jnp.asarray(x.transpose(0, 2, 3, 1))
  ref = np.asarray(_apply(tiny, x, jnp.asarray(t), jnp.asarray(context)))
  out = _apply(fast, x, jnp.asarray(t[0]), jnp.asarray(context))
  assert out.dtype == jnp.float32
  err = np.abs(np.asarray(out) - ref).max()
  print(f'bfloat16 max abs err {err:.2e}, max |ref| {np.abs(ref).max():.2f}')
  assert 0 < err < 0.05 * np.abs(ref).max()


@pytest.mark.parametrize('x_shape,t_shape,c_shape,message', [
    ((2, 16, 16, 4), (2,), (2, 1, 16), r'x must be \(B,H,W,9\)'),
    ((2, 9, 16, 16), (2,), (2, 1, 16), r'x must be \(B,H,W,9\)'),
    ((2, 15, 16, 9), (2,), (2, 1, 16), 'multiples of 2'),
    ((2, 16, 16, 9), (3,), (2, 1, 16), 't must be'),
    ((2, 16, 16, 9), (2,), (2, 1, 8), r'context must be \(B, L, 16\)'),
    ((2, 16, 16, 9), (2,), (2, 16), r'context must be \(B, L, 16\)'),
    ((2, 16, 16, 9), (2,), (1, 1, 16), r'context must be \(B, L, 16\)'),
])
def test_bad_inputs(tiny, x_shape, t_shape, c_shape, message):
  with pytest.raises(ValueError, match=message):
    tiny(jnp.zeros(x_shape), jnp.zeros(t_shape), jnp.zeros(c_shape))


@pytest.mark.parametrize('changes,message', [
    (dict(attention_resolutions=(32, 16, 8)), 'not downsample factors'),
    (dict(model_channels=48), 'not divisible into norm_groups'),
    (dict(num_head_channels=-1), 'set num_head_channels'),
    (dict(num_head_channels=24, model_channels=64, norm_groups=32), 'not divisible by num_head_channels'),
    (dict(image_size=60), 'not divisible by 2'),
])
def test_bad_configs(changes, message):
  with pytest.raises(ValueError, match=message):
    ldm_unet.LDMUNetConfig(**changes)
  with pytest.raises(ValueError, match='unknown fields'):
    ldm_unet.config_from_dict({'model_channel': 3})
  assert ldm_unet.config_from_dict({'model_channels': 64}, dtype='bfloat16') == ldm_unet.LDMUNetConfig(
      model_channels=64, dtype='bfloat16')
