"""The inference layer: the DAE codec (one jitted path for every user) and the method registry."""
import jax
import numpy as np
import pytest
from flax import nnx

from configs import dae as dae_config
from daetalker_jax import diffusion
from daetalker_jax import inference
from daetalker_jax.inference import dae_codec
from daetalker_jax.tasks import dae


# Its module fixtures are built once: pytest-xdist runs the whole module on one worker.
pytestmark = pytest.mark.xdist_group('inference')


@pytest.fixture(scope='module')
def tiny():
  """A tiny DAE whose zero-initialised output layers are perturbed (else it would ignore its latent)."""
  config = dae_config.get_config('variant=tiny')
  model = dae.create_model(config, nnx.Rngs(0))
  rng = np.random.default_rng(0)
  params = nnx.state(model, nnx.Param)
  nnx.update(model, jax.tree.map(lambda p: p + 0.05 * rng.standard_normal(p.shape).astype(np.float32), params))
  model.eval()
  images = rng.integers(0, 256, (11, 32, 32, 3), dtype=np.uint8)
  return model, config, images


@pytest.fixture(scope='module')
def codec(tiny):
  model, config, _ = tiny
  return dae_codec.DAECodec(model, config, steps=3, batch=8)


def test_codec_operations_agree_with_each_other_and_compile_once(tiny, codec):
  _, _, images = tiny
  assert codec.batch == 8 and codec.image_size == 32 and codec.latent_dim == 64
  z = codec.encode(images)                                           # 11 frames: a full + a padded batch
  assert z.shape == (11, 64) and z.dtype == np.float32
  np.testing.assert_allclose(codec.encode(images[:3]), z[:3], atol=1e-5)    # padding never leaks in
  x_T = codec.seed_noise(0)
  frames = codec.decode(z, x_T)
  assert frames.shape == (11, 32, 32, 3) and frames.dtype == np.uint8
  z2, rec_inv, rec_shared = codec.reconstruct(images, x_T)
  np.testing.assert_allclose(z2, z, atol=1e-5)
  assert np.abs(rec_shared.astype(int) - frames).max() <= 1          # reconstruct's shared path = decode
  # The inverted x_T reproduces the frame better than the shared one (it carries the frame's details).
  err = lambda a: np.abs(a.astype(float) - images).mean()
  assert err(rec_inv) < err(rec_shared)
  # decode from invert() = reconstruct's inverted path, frame by frame.
  x_inv = codec.invert(images[:2])
  assert x_inv.shape == (2, 32, 32, 3)
  assert np.abs(codec.decode(z[:1], x_inv[:1]).astype(int) - rec_inv[:1]).max() <= 1
  assert codec.num_compiles() == 1
  # Float input in [-1, 1] is the same as uint8; other resolutions are resized to the DAE's.
  np.testing.assert_allclose(codec.encode(images.astype(np.float32) / 127.5 - 1), z, atol=1e-5)
  assert codec.encode(np.repeat(np.repeat(images[:2], 2, 1), 2, 2)).shape == (2, 64)


def test_codec_decode_is_ddim_with_the_dae(tiny, codec):
  """The codec's decode is DDIM (eta 0, clipped x0) of the DAE over diffae's spaced linear schedule, written
  out here in float64 numpy from the paper's update rule; only the network is called from the library."""
  model, _, _ = tiny
  z = np.random.default_rng(1).normal(size=(8, 64)).astype(np.float32)
  x_T = codec.seed_noise(3)
  alphas_cumprod = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000, dtype=np.float64))   # the tiny config's betas
  timesteps = [0, 334, 668]                            # diffae's ddim3: range(0, 1000, 334)
  eps_of = nnx.jit(lambda m, x, t, c: m(x, t, cond=c))
  x = np.repeat(np.asarray(x_T, np.float64), 8, 0)
  for k in reversed(range(3)):
    t = timesteps[k]
    a, a_prev = alphas_cumprod[t], (alphas_cumprod[timesteps[k - 1]] if k else 1.0)
    eps = np.asarray(eps_of(model, x.astype(np.float32), np.full(8, t, np.int32), z), np.float64)
    x0 = np.clip((x - np.sqrt(1 - a) * eps) / np.sqrt(a), -1, 1)
    eps = (x - np.sqrt(a) * x0) / np.sqrt(1 - a)       # the noise that the clipped x0 implies
    x = np.sqrt(a_prev) * x0 + np.sqrt(1 - a_prev) * eps
  expected = np.round((np.clip(x, -1, 1) + 1) * 127.5)
  frames = codec.decode(z, x_T).astype(int)
  assert np.abs(frames - expected).max() <= 1
  assert np.abs(frames - frames[::-1]).mean() > 1.0     # the latents matter: not a constant image


def test_set_weights_changes_the_output_without_recompiling(tiny, codec):
  model, config, images = tiny
  before = codec.decode(codec.encode(images[:4]), codec.seed_noise(0))
  codec.set_weights(dae.create_model(config, nnx.Rngs(7)))
  after = codec.decode(codec.encode(images[:4]), codec.seed_noise(0))
  codec.set_weights(model)
  assert np.abs(after.astype(int) - before).mean() > 1.0
  np.testing.assert_array_equal(codec.decode(codec.encode(images[:4]), codec.seed_noise(0)), before)
  assert codec.num_compiles() == 1


def test_guided_eps_fn_is_the_guidance_formula_in_one_batch():
  calls = []

  def eps_fn(x, t, c):                    # any function of (x, t, cond): here a cond-dependent linear map
    calls.append(x.shape[0])
    return x * 0.5 + c.sum(-1)[:, None, None, None] + t[:, None, None, None] * 0.01

  assert diffusion.guided_eps_fn(eps_fn, 1.0, np.zeros(4)) is eps_fn     # scale 1: nothing added
  rng = np.random.default_rng(0)
  x, c, ref = rng.normal(size=(3, 2, 2, 3)), rng.normal(size=(3, 4)), rng.normal(size=4)
  t = np.array([5, 6, 7])
  got = diffusion.guided_eps_fn(eps_fn, 2.5, ref)(x, t, c)
  e_c, e_r = eps_fn(x, t, c), eps_fn(x, t, np.broadcast_to(ref, c.shape))
  np.testing.assert_allclose(got, e_r + 2.5 * (e_c - e_r), rtol=1e-5, atol=1e-5)
  assert calls[-3] == 6                   # both conditions went through the network as one batch of 2B


def test_paired_guidance_takes_a_reference_condition_per_frame():
  """paired_guided_eps_fn: cond is (own, ref), pytrees with the batch first (landmark diffusion's cond is a
  tuple of arrays and dicts); both go through the network as one batch of 2B; scale 1 is one plain call."""
  calls = []

  def eps_fn(x, t, c):
    calls.append(x.shape[0])
    return x * 0.5 + (c[0].sum(-1) + c[1]['m'].sum((-1, -2)))[:, None, None, None] + t[:, None, None, None] * 0.01

  rng = np.random.default_rng(1)
  x, t = rng.normal(size=(3, 2, 2, 3)), np.array([5, 6, 7])
  own = (rng.normal(size=(3, 4)), {'m': rng.normal(size=(3, 5, 2))})
  ref = (own[0], {'m': rng.normal(size=(3, 5, 2))})       # only the dict's entry differs, per frame
  got = diffusion.paired_guided_eps_fn(eps_fn, 3.0)(x, t, (own, ref))
  e_c, e_r = eps_fn(x, t, own), eps_fn(x, t, ref)
  np.testing.assert_allclose(got, e_r + 3.0 * (e_c - e_r), rtol=1e-5, atol=1e-5)
  assert calls[-3] == 6
  calls.clear()
  np.testing.assert_allclose(diffusion.paired_guided_eps_fn(eps_fn, 1.0)(x, t, (own, ref)), e_c)
  assert calls == [3]


def test_codec_guidance_decodes_further_from_the_reference(tiny):
  """Guidance by the mean latent: a frame whose latent IS the reference is unchanged (both branches agree);
  any other frame moves, and scale 1 is the plain decoder."""
  model, config, images = tiny
  plain = dae_codec.DAECodec(model, config, steps=3, batch=8)
  z = plain.encode(images[:4])
  ref = z.mean(0)
  guided = dae_codec.DAECodec(model, config, steps=3, batch=8, guidance=3.0, reference=ref)
  x_T = plain.seed_noise(0)
  at_ref = np.repeat(ref[None], 2, 0)
  assert np.abs(guided.decode(at_ref, x_T).astype(int) - plain.decode(at_ref, x_T)).max() <= 1
  assert np.abs(guided.decode(z, x_T).astype(int) - plain.decode(z, x_T)).mean() > 1.0
  same = dae_codec.DAECodec(model, config, steps=3, batch=8, guidance=1.0, reference=ref)
  np.testing.assert_array_equal(same.decode(z, x_T), plain.decode(z, x_T))
  with pytest.raises(ValueError, match=r'guidance != 1 needs the reference latent'):
    dae_codec.DAECodec(model, config, steps=3, guidance=2.0)
  with pytest.raises(ValueError, match=r'guidance=0.0 must be a finite number > 0'):
    dae_codec.DAECodec(model, config, steps=3, guidance=0.0, reference=ref)
  with pytest.raises(ValueError, match=r'reference latent of shape \(3,\)'):
    dae_codec.DAECodec(model, config, steps=3, guidance=2.0, reference=np.zeros(3))


def test_codec_rejects_bad_shapes(tiny, codec):
  model, config, images = tiny
  with pytest.raises(ValueError, match=r'expected square RGB frames'):
    codec.encode(images[:, :, :16])
  with pytest.raises(ValueError, match=r'the DAE expects \(N, 64\)'):
    codec.decode(np.zeros((3, 32), np.float32), codec.seed_noise(0))
  with pytest.raises(ValueError, match=r'steps=0'):
    dae_codec.DAECodec(model, config, steps=0)
  encoder_only = dae_codec.DAECodec(model, config, steps=None)        # latent extraction's codec
  with pytest.raises(ValueError, match=r'steps=None \(encode only\)'):
    encoder_only.decode(np.zeros((3, 64), np.float32), codec.seed_noise(0))


def test_method_registry():
  assert inference.METHODS == ('dae_talker', 'difftalk', 'landmark')
  with pytest.raises(inference.GenerateError,
                     match=r"--method='nope': expected one of dae_talker, difftalk, landmark"):
    inference.load_pipeline('nope')
