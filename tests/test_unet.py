"""The Flax UNet + semantic encoder against the official diffae tiny model (tests/reference/diffae)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import dae as dae_config
from daetalker_jax.importers import diffae
from tests._reference import max_err, nchw, nhwc
from daetalker_jax.models import unet


# Its module fixtures are built once: pytest-xdist runs the whole module on one worker.
pytestmark = pytest.mark.xdist_group('unet')


@pytest.fixture(scope='module')
def tiny_io(reference_dir):
  return dict(np.load(reference_dir / 'tiny_io.npz'))


def forward(model, x_start, x_t, t, cond):
  """Jitted encoder + UNet with every block's output (split/merge: the graph is static)."""
  graphdef, state = nnx.split(model)

  @jax.jit
  def f(state, x_start, x_t, t, cond):
    m = nnx.merge(graphdef, state)
    inter = {}
    z = m.encoder(x_start, intermediates=inter)
    eps = m.unet(x_t, t, cond, intermediates=inter)
    return z, eps, inter

  return f(state, x_start, x_t, t, cond)


@pytest.fixture(scope='module')
def tiny_out(tiny, tiny_io):
  return forward(tiny, nhwc(tiny_io['x_start']), nhwc(tiny_io['x_t']), jnp.asarray(tiny_io['t']),
                 jnp.asarray(tiny_io['cond']))


def test_param_counts_match_official(tiny):
  assert unet.count_params(tiny) == 1_741_827
  assert unet.count_params(tiny.encoder) == 437_600
  assert unet.count_params(tiny.unet) == 1_304_227


def test_time_embedding_matches_official(tiny, tiny_io):
  from daetalker_jax.models import layers
  sin = layers.timestep_embedding(jnp.asarray(tiny_io['t']), 32)
  assert max_err(sin, tiny_io['t_emb_sinusoidal']) < 1e-5
  te = tiny.unet.time_embed
  emb = te[1](nnx.silu(te[0](sin)))
  assert max_err(emb, tiny_io['time_emb']) < 1e-5


def test_encoder_cond_matches_official(tiny_out, tiny_io):
  err = max_err(tiny_out[0], tiny_io['cond'])
  print(f'encoder cond max abs err {err:.2e}')
  assert err <= 1e-4


def test_eps_matches_official(tiny_out, tiny_io):
  err = max_err(nchw(tiny_out[1]), tiny_io['eps'])
  print(f'eps max abs err {err:.2e}')
  assert err <= 1e-4
  assert np.abs(tiny_io['eps']).max() > 1  # the reference is not trivially small


def test_every_block_matches_official(tiny_out, reference_dir):
  ref = np.load(reference_dir / 'tiny_intermediates.npz')
  inter = tiny_out[2]
  assert set(ref.files) <= set(inter), sorted(set(ref.files) - set(inter))
  for k in ref.files:
    assert max_err(nchw(inter[k][:1]), ref[k]) <= 1e-4, k


@nnx.jit
def apply(model, x_t, t, cond):
  return model(x_t, t, cond=cond)


@nnx.jit
def apply_x_start(model, x_t, t, x_start):
  return model(x_t, t, x_start=x_start)


@nnx.jit
def apply_encode(model, x):
  return model.encode(x)


def test_x_start_path_equals_cond_path(tiny, tiny_io):
  x_t, t = nhwc(tiny_io['x_t']), jnp.asarray(tiny_io['t'])
  a = apply_x_start(tiny, x_t, t, nhwc(tiny_io['x_start']))
  np.testing.assert_allclose(nchw(a), tiny_io['eps'], atol=1e-4)
  with pytest.raises(ValueError, match='cond'):
    tiny(x_t, t)


def test_cond_and_time_change_the_output(tiny, tiny_io):
  x_t, t, cond = nhwc(tiny_io['x_t']), jnp.asarray(tiny_io['t']), jnp.asarray(tiny_io['cond'])
  eps = apply(tiny, x_t, t, cond)
  assert max_err(apply(tiny, x_t, t, jnp.zeros_like(cond)), eps) > 0.5
  assert max_err(apply(tiny, x_t, jnp.asarray([500, 200]), cond), eps) > 0.5


def test_bf16_forward_close_to_fp32(tiny, official_cfg, tiny_io):
  bf = diffae.config_from_official(official_cfg, dtype='bfloat16')
  model = nnx.eval_shape(lambda: unet.DiffusionAutoencoder(bf, rngs=nnx.Rngs(0)))  # no init cost
  nnx.update(model, nnx.state(tiny, nnx.Param))
  z, eps, _ = forward(model, nhwc(tiny_io['x_start']), nhwc(tiny_io['x_t']), jnp.asarray(tiny_io['t']),
                      jnp.asarray(tiny_io['cond']))
  assert eps.dtype == jnp.float32 and z.dtype == jnp.float32
  e_err, z_err = max_err(nchw(eps), tiny_io['eps']), max_err(z, tiny_io['cond'])
  rel = float(np.sqrt(np.mean((nchw(eps) - tiny_io['eps']) ** 2)) / tiny_io['eps'].std())
  print(f'bf16: eps max abs err {e_err:.3f} (rms/std {rel:.3f}), cond max abs err {z_err:.3f}')
  assert 0 < rel < 0.05 and e_err < 0.3 and z_err < 0.1


# A smaller model than tiny for the tests that compile gradients (keeps them fast on CPU).
SMALL = dict(image_size=16, model_channels=32, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(8,),
             embed_channels=32, enc_out_channels=32, enc_channel_mult=(1, 2), enc_num_res_block=1)
# One level only, for tests that build real (randomly initialised) models: eager init compiles one small
# program per distinct parameter shape, so fewer shapes is what makes it fast.
ONE_LEVEL = dict(SMALL, image_size=8, channel_mult=(1,), enc_channel_mult=(1,))


def test_fresh_init_zero_output_and_dropout():
  cfg = unet.config_from_dict(dae_config.get_config('variant=tiny').model)
  assert unet.count_params(nnx.eval_shape(lambda: unet.DiffusionAutoencoder(cfg, rngs=nnx.Rngs(0)))) == 1_741_827

  model = unet.DiffusionAutoencoder(unet.UNetConfig(**ONE_LEVEL, dropout=0.3), rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
  t = jnp.array([3, 900])
  model.eval()
  assert float(jnp.abs(apply_x_start(model, x, t, x)).max()) == 0  # zero-initialised output convs, as diffae
  z = apply_encode(model, x)
  assert z.shape == (2, 32) and float(jnp.abs(z).max()) > 0  # the adaptivenonzero head is not zeroed

  # Give the zeroed convs values, then dropout must act in train mode only, with fresh masks per call.
  rng = np.random.default_rng(0)
  zeroed = jax.tree.map(lambda p: p if np.any(p) else 0.1 * rng.standard_normal(p.shape).astype(np.float32),
                        nnx.state(model, nnx.Param))
  nnx.update(model, zeroed)
  a, b = apply_x_start(model, x, t, x), apply_x_start(model, x, t, x)
  assert float(jnp.abs(a).max()) > 0
  np.testing.assert_array_equal(a, b)
  model.train()
  c, d = apply_x_start(model, x, t, x), apply_x_start(model, x, t, x)
  assert max_err(a, c) > 1e-3 and max_err(c, d) > 1e-3


def test_remat_wraps_every_block():
  """remat=True puts each UNet block under jax.checkpoint (values are JAX's job; checked by tracing only)."""
  import dataclasses
  x = jax.ShapeDtypeStruct((2, 16, 16, 3), jnp.float32)
  t = jnp.array([3, 900])

  def count_remat(cfg):
    graphdef, state = nnx.split(nnx.eval_shape(lambda: unet.DiffusionAutoencoder(cfg, rngs=nnx.Rngs(0))))
    loss = lambda s, x: jnp.mean(nnx.merge(graphdef, s)(x, t, x_start=x) ** 2)
    eqns = jax.make_jaxpr(jax.grad(loss))(state, x).jaxpr.eqns
    return sum('remat' in e.primitive.name or 'checkpoint' in e.primitive.name for e in eqns)

  base = unet.UNetConfig(**SMALL, dropout=0.)
  n_blocks = 4 + 1 + 4  # UNet input blocks (conv, res, down, res), middle, output blocks
  assert count_remat(base) == 0
  assert count_remat(dataclasses.replace(base, remat=True)) >= n_blocks


@pytest.mark.parametrize('variant', ['demo', '64'])  # 128/256: tests/test_importer_diffae.py
def test_every_config_variant_builds(variant):
  cfg = unet.config_from_dict(dae_config.get_config(f'variant={variant}').model)
  model = nnx.eval_shape(lambda: unet.DiffusionAutoencoder(cfg, rngs=nnx.Rngs(0)))
  size = cfg.image_size
  x = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
  graphdef, state = nnx.split(model)
  out = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x, jnp.zeros((2,), jnp.int32), x_start=x), state, x)
  assert out.shape == (2, size, size, 3)


def test_config_from_dict_rejects_unknown_fields():
  with pytest.raises(ValueError, match='enc_num_res_blocks'):
    unet.config_from_dict({'enc_num_res_blocks': 2})
