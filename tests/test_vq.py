"""The VQ autoencoder (models/vq.py), its importers (importers/vq.py) and the `autoencoder` training task.

Parity: diffusers' PyTorch `VQModel` (numerically LDM's VQModel) with random, perturbed weights is saved
with `save_pretrained`, imported, and must give the same latents, codebook indices and decodes; the same
weights renamed to LDM's names inside a DiffTalk-style `.ckpt` must import to the same numbers.
"""

import pathlib

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from daetalker_jax.importers import vq as vq_importer
from daetalker_jax.models import vq


# Its module fixtures are built once: pytest-xdist runs the whole module on one worker.
pytestmark = pytest.mark.xdist_group('vq')


# The published VQ-f4 (LDM's vq-f4; diffusers VQModel with these settings): its exact parameter count.
F4_PARAMS = 55_322_782
SMALL = dict(block_out_channels=(32, 64), layers_per_block=1, latent_channels=3, num_vq_embeddings=64,
             vq_embed_dim=3, down_block_types=['DownEncoderBlock2D'] * 2, up_block_types=['UpDecoderBlock2D'] * 2,
             norm_num_groups=32, sample_size=64)


def _diffusers_vq(**kwargs):
  from diffusers import VQModel  # pylint: disable=g-import-not-at-top
  return VQModel(**kwargs)


@pytest.fixture(scope='module')
def torch_vq(tmp_path_factory):
  """(diffusers VQModel with perturbed random weights, its save_pretrained folder)."""
  torch.set_num_threads(1)
  torch.manual_seed(0)
  model = _diffusers_vq(**SMALL).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if 'norm' in name:                       # GroupNorm scale / bias away from (1, 0)
        p.add_(0.3 * torch.randn_like(p))
      elif name.endswith('bias'):              # conv / linear biases are zero-ish by default
        p.add_(0.1 * torch.randn_like(p))
    # A codebook on the latents' scale, so that many entries compete (default: U(+-1/n), all near 0).
    model.quantize.embedding.weight.normal_(0.0, 0.3)
  folder = tmp_path_factory.mktemp('vq') / 'diffusers'
  model.save_pretrained(folder)
  return model, folder


@pytest.fixture(scope='module')
def torch_outputs(torch_vq):
  """Inputs (NCHW) and diffusers' latents, indices, decodes."""
  model, _ = torch_vq
  x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
  with torch.no_grad():
    z = model.encode(x).latents
    _, _, (_, _, idx) = model.quantize(z)
    rec = model.decode(z).sample
  nhwc = lambda t: t.permute(0, 2, 3, 1).numpy()
  return nhwc(x), nhwc(z), idx.numpy().reshape(z.shape[0], z.shape[2], z.shape[3]), nhwc(rec)


def _check_parity(model: vq.VQModel, torch_outputs):
  x, z_ref, idx_ref, rec_ref = torch_outputs
  z = np.asarray(model.encode(x))
  assert z.shape == z_ref.shape == (2, 32, 32, 3)
  np.testing.assert_allclose(z, z_ref, atol=1e-4, rtol=0)
  _, idx, _, _ = model.quantize(z_ref)
  idx = np.asarray(idx)
  np.testing.assert_array_equal(idx, idx_ref)
  assert len(np.unique(idx)) > 10                      # the comparison is over many codebook entries
  np.testing.assert_allclose(np.asarray(model.decode(z_ref)), rec_ref, atol=1e-4, rtol=0)
  np.testing.assert_allclose(np.asarray(model.decode_code(idx)), rec_ref, atol=1e-4, rtol=0)


def test_diffusers_parity(torch_vq, torch_outputs):
  model = vq_importer.load_pretrained(torch_vq[1])
  assert model.cfg == vq.VQConfig(image_size=64, ch=32, ch_mult=(1, 2), num_res_blocks=1, n_embed=64)
  _check_parity(model, torch_outputs)


def test_task_load_pretrained(torch_vq, torch_outputs):
  from configs import autoencoder as ae_config  # pylint: disable=g-import-not-at-top
  from daetalker_jax.tasks import autoencoder  # pylint: disable=g-import-not-at-top
  config = ae_config.get_config('variant=tiny')
  config.model.update(image_size=64, ch=32, ch_mult=(1, 2), num_res_blocks=1, n_embed=64, norm_groups=32)
  model = nnx.eval_shape(lambda: autoencoder.create_model(config, nnx.Rngs(0)))
  assert not autoencoder.load_pretrained(config, model)           # nothing configured: nothing loaded
  config.pretrained = str(torch_vq[1])
  assert autoencoder.load_pretrained(config, model)
  np.testing.assert_allclose(np.asarray(model.encode(torch_outputs[0])), torch_outputs[1], atol=1e-4, rtol=0)
  config.model.norm_groups = 8                                      # same weight shapes, another model
  with pytest.raises(ValueError, match=r'another model shape \(norm_groups: 32 there, 8 in config.model\)'):
    autoencoder.load_pretrained(config, nnx.eval_shape(lambda: autoencoder.create_model(config, nnx.Rngs(0))))


def _ldm_state_dict(diffusers_sd: dict[str, torch.Tensor], levels: int) -> dict[str, torch.Tensor]:
  """diffusers VQModel keys -> LDM's (written independently of the importer: one table of substitutions)."""
  subs = [('.conv_norm_out.', '.norm_out.'), ('.conv_shortcut.', '.nin_shortcut.'),
          ('.mid_block.resnets.0.', '.mid.block_1.'), ('.mid_block.resnets.1.', '.mid.block_2.'),
          ('.mid_block.attentions.0.group_norm.', '.mid.attn_1.norm.'),
          ('.mid_block.attentions.0.to_q.', '.mid.attn_1.q.'), ('.mid_block.attentions.0.to_k.', '.mid.attn_1.k.'),
          ('.mid_block.attentions.0.to_v.', '.mid.attn_1.v.'),
          ('.mid_block.attentions.0.to_out.0.', '.mid.attn_1.proj_out.'),
          ('.downsamplers.0.', '.downsample.'), ('.upsamplers.0.', '.upsample.'), ('.resnets.', '.block.')]
  subs += [(f'encoder.down_blocks.{i}.', f'encoder.down.{i}.') for i in range(levels)]
  subs += [(f'decoder.up_blocks.{i}.', f'decoder.up.{levels - 1 - i}.') for i in range(levels)]
  out = {}
  for key, value in diffusers_sd.items():
    for a, b in subs:
      key = key.replace(a, b)
    if '.attn_1.' in key and key.endswith('.weight') and value.ndim == 2:
      value = value[:, :, None, None]                  # LDM's attention projections are 1x1 convs
    out[key] = value.clone()
  return out


@pytest.mark.parametrize('prefixed', [True, False], ids=['difftalk_ckpt', 'plain_ldm_ckpt'])
def test_ldm_ckpt_parity(torch_vq, torch_outputs, tmp_path, prefixed):
  ldm = _ldm_state_dict(torch_vq[0].state_dict(), levels=2)
  assert 'decoder.up.1.upsample.conv.weight' in ldm and 'decoder.up.0.block.0.nin_shortcut.weight' in ldm
  if prefixed:   # A latent diffusion checkpoint: the first stage among other models' weights.
    sd = {f'first_stage_model.{k}': v for k, v in ldm.items()}
    sd.update({'model.diffusion_model.out.2.weight': torch.zeros(3, 8, 3, 3), 'cond_stage_model.w': torch.ones(2)})
  else:          # An LDM VQModel training checkpoint: its loss modules are dropped.
    sd = {**ldm, 'loss.discriminator.main.0.weight': torch.zeros(4, 3, 4, 4)}
  path = tmp_path / 'model.ckpt'
  torch.save({'state_dict': sd, 'global_step': 7}, path)
  model = vq_importer.load_pretrained(path, image_size=64)
  assert model.cfg == vq.VQConfig(image_size=64, ch=32, ch_mult=(1, 2), num_res_blocks=1, n_embed=64)
  _check_parity(model, torch_outputs)


def test_importer_errors(torch_vq, tmp_path):
  (tmp_path / 'kl').mkdir()
  (tmp_path / 'kl' / 'config.json').write_text('{"_class_name": "AutoencoderKL", "latent_channels": 4}')
  with pytest.raises(ValueError, match=r'_class_name is .AutoencoderKL.*expected a diffusers "VQModel"'):
    vq_importer.load_pretrained(tmp_path / 'kl')
  (tmp_path / 'spatial').mkdir()
  (tmp_path / 'spatial' / 'config.json').write_text('{"_class_name": "VQModel", "norm_type": "spatial"}')
  with pytest.raises(ValueError, match=r"unsupported VQModel settings: norm_type='spatial'"):
    vq_importer.load_pretrained(tmp_path / 'spatial')
  # A checkpoint that lacks a key and has an extra one: both named in one error.
  ldm = _ldm_state_dict(torch_vq[0].state_dict(), levels=2)
  del ldm['decoder.conv_out.bias']
  ldm['encoder.extra.weight'] = torch.zeros(3)
  torch.save({'state_dict': ldm}, tmp_path / 'bad.ckpt')
  with pytest.raises(ValueError, match=r"1 missing keys \['decoder.conv_out.bias'\], 1 unexpected keys "
                                       r"\['encoder.extra.weight'\]"):
    vq_importer.load_pretrained(tmp_path / 'bad.ckpt')
  # The same weights into a model of another shape: a shape mismatch is reported.
  with pytest.raises(ValueError, match=r"1 shape mismatches \[.quantize.embedding.weight: \(64, 3\)"):
    vq_importer.load_ldm_checkpoint(tmp_path / 'bad.ckpt', vq.VQConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1,
                                                                        n_embed=128))


def test_f4_parameter_count():
  from configs import autoencoder as ae_config  # pylint: disable=g-import-not-at-top
  from daetalker_jax.tasks import autoencoder  # pylint: disable=g-import-not-at-top
  config = ae_config.get_config('variant=f4')
  model = nnx.eval_shape(lambda: autoencoder.create_model(config, nnx.Rngs(0)))
  assert model.cfg.latent_shape == (64, 64, 3)
  assert vq.count_params(model) == F4_PARAMS
  with torch.device('meta'):   # diffusers' VQModel of the same shape, nothing allocated
    ref = _diffusers_vq(block_out_channels=(128, 256, 512), layers_per_block=2, latent_channels=3,
                        num_vq_embeddings=8192, vq_embed_dim=3, down_block_types=['DownEncoderBlock2D'] * 3,
                        up_block_types=['UpDecoderBlock2D'] * 3, norm_num_groups=32)
  assert sum(p.numel() for p in ref.parameters()) == F4_PARAMS


def test_straight_through_and_losses():
  quantizer = vq.VectorQuantizer(16, 3, rngs=nnx.Rngs(0))
  z = jax.random.normal(jax.random.key(1), (2, 4, 4, 3)) * 0.01
  z_q, idx, codebook, commitment = quantizer(z)
  e, idx = np.asarray(quantizer.embedding.get_value()), np.asarray(idx)
  np.testing.assert_array_equal(idx, ((np.asarray(z)[..., None, :] - e) ** 2).sum(-1).argmin(-1))
  np.testing.assert_allclose(np.asarray(z_q), e[idx], atol=1e-6)                  # forward: the entries
  np.testing.assert_allclose(float(codebook), np.mean((e[idx] - np.asarray(z)) ** 2), rtol=1e-5)
  np.testing.assert_allclose(float(commitment), float(codebook), rtol=1e-6)
  # Backward: identity to z through z_q; the codebook loss moves only the entries in use, the commitment
  # loss none of them.
  np.testing.assert_allclose(np.asarray(jax.grad(lambda z: jnp.sum(quantizer(z)[0] * 3.0))(z)), 3.0)
  grad_of = lambda i: np.asarray(nnx.grad(lambda q: q(z)[i])(quantizer)['embedding'].get_value())
  used = np.zeros(16, bool)
  used[np.unique(idx)] = True
  g = grad_of(2)
  assert np.all(np.abs(g[used]).sum(-1) > 0) and np.all(g[~used] == 0)
  assert np.all(grad_of(3) == 0)
  model = nnx.eval_shape(lambda: vq.VQModel(vq.VQConfig(), rngs=nnx.Rngs(0)))
  with pytest.raises(ValueError, match=r'expected \(B, H, W, 3\) images with H and W divisible by 4'):
    model.encode(jnp.zeros((1, 6, 8, 3)))
  with pytest.raises(ValueError, match=r'VQModel.quantize: expected \(B, h, w, 3\) latents'):
    model.decode(jnp.zeros((1, 6, 8, 4)))


def test_mouth_weight_weighs_the_mouth_box_of_the_reconstruction():
  from configs import autoencoder as ae_config  # pylint: disable=g-import-not-at-top
  from daetalker_jax.tasks import autoencoder  # pylint: disable=g-import-not-at-top
  config = ae_config.get_config('variant=tiny')
  model = autoencoder.create_model(config, nnx.Rngs(0))
  x = jax.random.uniform(jax.random.key(2), (2, 32, 32, 3), minval=-1.0, maxval=1.0)
  box = jnp.array([[0.25, 0.5, 0.75, 0.75]] * 2)            # 16 x 8 pixels of 32 x 32 before the margin
  batch = dict(image=x, mouth_box=box, mouth_valid=jnp.array([True, False]))
  err = np.asarray(model(x)[0]) - np.asarray(x)
  _, plain = autoencoder.loss_fn(config, model, {'image': x}, None, train=False)
  np.testing.assert_allclose(float(plain['loss_l1']), np.abs(err).mean(), rtol=1e-5)
  config.loss.mouth_weight, config.loss.mouth_margin = 5.0, 0.0
  _, weighted = autoencoder.loss_fn(config, model, batch, None, train=False)
  w = np.ones((2, 32, 32, 1))
  w[0, 16:24, 8:24] = 5.0                                    # rows y 0.5-0.75, columns x 0.25-0.75; frame 1 has none
  np.testing.assert_allclose(float(weighted['loss_l1']), (w * np.abs(err)).sum() / (w.sum() * 3), rtol=1e-5)
  np.testing.assert_allclose(float(weighted['loss_l2']), (w * err ** 2).sum() / (w.sum() * 3), rtol=1e-5)
  with pytest.raises(ValueError, match='mouth_weight needs batches with mouth_box'):
    autoencoder.loss_fn(config, model, {'image': x}, None, train=False)


def _scalars(workdir: pathlib.Path) -> dict[str, dict[int, float]]:
  """{tag: {step: value}} of the run's TensorBoard scalars."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  events = list(workdir.glob('events.out.tfevents.*'))
  assert len(events) == 1, events
  out = {}
  for e in tf.compat.v1.train.summary_iterator(str(events[0])):
    for v in e.summary.value:
      if v.HasField('tensor') and not v.tensor.string_val:
        out.setdefault(v.tag, {})[e.step] = float(tf.make_ndarray(v.tensor))
  return out


def test_autoencoder_task_trains(tiny_autoencoder):
  """The session's autoencoder (conftest.tiny_autoencoder: 8 steps, lr 1e-3, mouth weight 5, eval at step 8)."""
  from daetalker_jax import checkpoint  # pylint: disable=g-import-not-at-top
  workdir = tiny_autoencoder
  assert (workdir / 'checkpoints' / '8').is_dir()
  assert (workdir / 'recon' / 'step_0000008.png').is_file()
  scalars = _scalars(workdir)
  assert all(np.isfinite(v) for v in scalars['loss'].values()) and sorted(scalars['loss']) == list(range(1, 9))
  # The reconstruction improves (the VQ terms first grow with the encoder's output: not a test target).
  assert scalars['loss_l1'][8] < 0.75 * scalars['loss_l1'][1], scalars['loss_l1']
  assert 0 < scalars['codebook_usage'][8] <= 1 and 0 < scalars['eval/codebook_usage'][8] <= 1
  # eval/psnr is the EMA model's reconstruction PSNR of the eval frames, recomputed here in numpy (peak-to-peak
  # 2 on [-1, 1]); 8 steps took it well above an untrained model's (measured: 18.6 dB against 12.7 dB).
  model, loaded = checkpoint.load_model(str(workdir))      # the checkpoint rebuilds the task's model (EMA)
  assert isinstance(model, vq.VQModel) and loaded.task == 'autoencoder' and model.cfg.n_embed == 64
  from daetalker_jax.tasks import autoencoder  # pylint: disable=g-import-not-at-top
  x0 = np.asarray(autoencoder.TASK.make_datasets(loaded, 0, 1)[1]['image'], np.float32)
  psnr = lambda a: float(np.mean(10 * np.log10(4.0 / np.mean((a - x0) ** 2, axis=(1, 2, 3)))))
  reconstruct = nnx.jit(lambda m, x: m(x)[0])
  model.eval()
  trained = psnr(np.clip(np.asarray(reconstruct(model, jnp.asarray(x0))), -1, 1))
  assert scalars['eval/psnr'][8] == pytest.approx(trained, abs=1e-3)
  fresh = vq.VQModel(model.cfg, rngs=nnx.Rngs(0))
  fresh.eval()
  untrained = psnr(np.clip(np.asarray(reconstruct(fresh, jnp.asarray(x0))), -1, 1))
  assert trained > untrained + 3.0, (trained, untrained)
