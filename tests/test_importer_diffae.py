"""Importing official diffae checkpoints: names, layouts, full-size configs, file formats, errors."""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from safetensors.numpy import load_file

from configs import dae as dae_config
from daetalker_jax.importers import diffae
from daetalker_jax.models import unet
from tests import _reference


# Its module fixtures are built once: pytest-xdist runs the whole module on one worker.
pytestmark = pytest.mark.xdist_group('importer_diffae')


@pytest.fixture(scope='module')
def tiny_cfg(reference_dir):
  off = json.loads((reference_dir / 'tiny_config.json').read_text())['BeatGANsAutoencConfig']
  return diffae.config_from_official(off)


@pytest.fixture(scope='module')
def tiny_sd(tiny_weights):
  return load_file(str(tiny_weights))


def test_rebuilt_tiny_weights_are_the_official_file(tiny_sd):
  """The seeded recipe rebuilds the official tiny_weights.safetensors bit for bit (tests/reference/diffae).

  The 7 MB file is not stored: `tiny_params.json` holds the sha256 of its tensors, taken from the file. Where
  the file is at hand, DIFFAE_TINY_WEIGHTS=/path/to/tiny_weights.safetensors also compares it array by array.
  """
  spec = _reference.tiny_param_spec()
  assert list(tiny_sd) and set(tiny_sd) == {n for n, _, _ in spec['params']}
  assert sum(v.size for v in tiny_sd.values()) == spec['num_params'] == 1_741_827
  assert _reference.weights_digest(tiny_sd) == spec['sha256']
  changed = dict(tiny_sd, **{'out.2.bias': np.nextafter(tiny_sd['out.2.bias'], np.inf)})  # one ulp: caught
  assert _reference.weights_digest(changed) != spec['sha256']
  # Encoder/UNet split as the official config reports it.
  assert sum(v.size for k, v in tiny_sd.items() if k.startswith('encoder.')) == 437_600
  if path := os.environ.get('DIFFAE_TINY_WEIGHTS'):
    official = load_file(path)
    assert set(official) == set(tiny_sd)
    for k, v in official.items():
      np.testing.assert_array_equal(tiny_sd[k], v, err_msg=k)


def abstract(cfg):
  return nnx.eval_shape(lambda: unet.DiffusionAutoencoder(cfg, rngs=nnx.Rngs(0)))


@pytest.mark.parametrize('name,total,enc,variant', [
    ('ffhq128_autoenc_130M_params.json', 128_545_155, 24_673_536, '128'),
    ('ffhq256_autoenc_params.json', 168_492_291, 30_150_400, '256'),
])
def test_full_size_official_configs_map_every_key(reference_dir, name, total, enc, variant):
  spec = json.loads((reference_dir / name).read_text())
  cfg = diffae.config_from_official(spec['BeatGANsAutoencConfig'])
  model = abstract(cfg)  # shapes only: no 168M allocation
  shapes = {e['key']: tuple(e['shape']) for e in spec['state_dict']}
  assert len(shapes) == spec['num_keys']
  plan = diffae.plan_import(model, shapes, source=name)
  assert set(plan) == set(shapes)
  assert unet.count_params(model) == total == spec['num_params_total']
  assert unet.count_params(model.encoder) == enc
  # Our configs/dae.py variant is the same network.
  ours = unet.config_from_dict(dae_config.get_config(f'variant={variant}').model)
  assert ours == cfg, [f.name for f in dataclasses.fields(cfg) if getattr(ours, f.name) != getattr(cfg, f.name)]


def test_torch_names_cover_all_module_kinds():
  assert diffae.torch_name(('unet', 'time_embed', 1, 'kernel')) == 'time_embed.time_embed.2.weight'
  assert diffae.torch_name(('unet', 'input_blocks', 3, 1, 'qkv', 'bias')) == 'input_blocks.3.1.qkv.bias'
  assert diffae.torch_name(('unet', 'output_blocks', 1, 1, 'in_norm', 'scale')) == \
      'output_blocks.1.1.in_layers.0.weight'
  assert diffae.torch_name(('unet', 'middle_block', 0, 'cond_proj', 'kernel')) == \
      'middle_block.0.cond_emb_layers.1.weight'
  assert diffae.torch_name(('unet', 'out_conv', 'kernel')) == 'out.2.weight'
  assert diffae.torch_name(('encoder', 'out_conv', 'kernel')) == 'encoder.out.3.weight'
  assert diffae.torch_name(('encoder', 'input_blocks', 4, 0, 'skip', 'kernel')) == \
      'encoder.input_blocks.4.0.skip_connection.weight'


def test_layouts_are_converted(tiny_cfg, tiny_sd):
  model = abstract(tiny_cfg)
  diffae.import_state_dict(model, tiny_sd)
  w = tiny_sd['input_blocks.3.0.in_layers.2.weight']  # (O, I, kh, kw)
  np.testing.assert_array_equal(model.unet.input_blocks[3][0].in_conv.kernel.get_value(), w.transpose(2, 3, 1, 0))
  w = tiny_sd['input_blocks.3.1.qkv.weight']  # Conv1d (O, I, 1)
  np.testing.assert_array_equal(model.unet.input_blocks[3][1].qkv.kernel.get_value(), w[:, :, 0].T)
  w = tiny_sd['encoder.out.3.weight']  # 1x1 Conv2d (O, I, 1, 1)
  np.testing.assert_array_equal(model.encoder.out_conv.kernel.get_value(), w[:, :, 0, 0].T)
  w = tiny_sd['time_embed.time_embed.0.weight']  # Linear (O, I)
  np.testing.assert_array_equal(model.unet.time_embed[0].kernel.get_value(), w.T)


def test_mismatches_are_listed_in_one_error(tiny_cfg, tiny_sd):
  sd = dict(tiny_sd)
  del sd['middle_block.1.qkv.bias']
  sd['middle_block.9.extra.weight'] = np.zeros(3, np.float32)
  sd['out.2.bias'] = np.zeros(4, np.float32)
  with pytest.raises(ValueError) as e:
    diffae.import_state_dict(abstract(tiny_cfg), sd, source='bad.ckpt')
  msg = str(e.value)
  assert 'bad.ckpt' in msg and 'middle_block.9.extra.weight' in msg and 'middle_block.1.qkv.bias' in msg
  assert 'out.2.bias: (4,)' in msg
  # A config that does not match the weights (wider UNet) is caught by the shape check.
  with pytest.raises(ValueError, match='shape mismatches'):
    diffae.import_state_dict(abstract(dataclasses.replace(tiny_cfg, model_channels=64)), tiny_sd)


def test_lightning_ckpt_prefers_ema_and_plain_pt(tmp_path, tiny_cfg, tiny_sd):
  tensors = {k: torch.from_numpy(v.copy()) for k, v in tiny_sd.items()}
  ckpt = {'state_dict': {**{f'model.{k}': v * 0 for k, v in tensors.items()},
                         **{f'ema_model.{k}': v for k, v in tensors.items()},
                         'x_T': torch.zeros(1, 3, 32, 32)},
          'epoch': 3, 'global_step': 1000}
  torch.save(ckpt, tmp_path / 'last.ckpt')
  sd = diffae.load_state_dict(tmp_path / 'last.ckpt')
  assert set(sd) == set(tiny_sd)
  np.testing.assert_array_equal(sd['out.2.weight'], tiny_sd['out.2.weight'])  # the EMA copy
  torch.save(tensors, tmp_path / 'plain.pt')
  model = diffae.load_pretrained(tmp_path / 'plain.pt', tiny_cfg)
  np.testing.assert_array_equal(model.unet.out_conv.bias.get_value(), tiny_sd['out.2.bias'])


class NotATensor:  # pickled by reference: weights_only loading must refuse it
  pass


def test_unsafe_pickles_are_refused(tmp_path):
  torch.save({'state_dict': {'w': torch.zeros(2)}, 'hparams': NotATensor()}, tmp_path / 'unsafe.ckpt')
  with pytest.raises(ValueError, match='weights_only'):
    diffae.load_state_dict(tmp_path / 'unsafe.ckpt')
  with pytest.raises(FileNotFoundError, match='missing.ckpt'):
    diffae.load_state_dict(tmp_path / 'missing.ckpt')
  (tmp_path / 'w.npz').write_bytes(b'')
  with pytest.raises(ValueError, match='unknown checkpoint type'):
    diffae.load_state_dict(tmp_path / 'w.npz')


def test_config_from_official_rejects_networks_we_do_not_build(reference_dir):
  off = json.loads((reference_dir / 'tiny_config.json').read_text())['BeatGANsAutoencConfig']
  with pytest.raises(ValueError, match='use_new_attention_order'):
    diffae.config_from_official({**off, 'use_new_attention_order': True})
  with pytest.raises(ValueError, match='num_classes'):
    diffae.config_from_official({**off, 'num_classes': 10})
  with pytest.raises(ValueError, match='enc_pool'):
    unet.DiffusionAutoencoder(diffae.config_from_official({**off, 'enc_pool': 'depthconv'}), rngs=nnx.Rngs(0))


def test_imported_bf16_params_stay_float32(tiny_cfg, tiny_sd):
  model = abstract(dataclasses.replace(tiny_cfg, dtype='bfloat16'))
  diffae.import_state_dict(model, tiny_sd)
  assert {x.dtype for x in jax.tree.leaves(nnx.state(model, nnx.Param))} == {jnp.dtype('float32')}
