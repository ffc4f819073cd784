"""Diffusion math and DDIM sampling/inversion against the official diffae loops (tests/reference/diffae)."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from daetalker_jax import diffusion as D
from daetalker_jax.importers import diffae
from tests._reference import max_err, nchw, nhwc


# Its module fixtures are built once: pytest-xdist runs the whole module on one worker.
pytestmark = pytest.mark.xdist_group('diffusion')


@pytest.fixture(scope='module')
def ref(reference_dir):
  return dict(np.load(reference_dir / 'ddim_io.npz'))


@nnx.jit
def eps_of(model, x, t, cond):
  return model(x, t, cond=cond)


def test_schedule_and_spaced_tables_match_official(ref):
  sch = D.linear_schedule(1000, 1e-4, 0.02)
  np.testing.assert_array_equal(sch.betas, ref['betas_full'].astype(np.float32))
  tb = D.ddim_table(1000, 10)
  np.testing.assert_array_equal(tb.timesteps, ref['timesteps'])
  np.testing.assert_array_equal(tb.ac, ref['alphas_cumprod_spaced'].astype(np.float32))
  np.testing.assert_array_equal(tb.ac_prev, ref['alphas_cumprod_prev_spaced'].astype(np.float32))
  np.testing.assert_array_equal(tb.ac_next, ref['alphas_cumprod_next_spaced'].astype(np.float32))
  assert tb.ac_next[-1] == 0 and tb.ac_prev[0] == 1


@pytest.mark.parametrize('steps,stride', [(10, 100), (20, 50), (50, 20), (100, 10), (250, 4), (1000, 1)])
def test_ddim_timesteps_use_diffae_spacing(steps, stride):
  ts = D.ddim_timesteps(1000, steps)
  np.testing.assert_array_equal(ts, np.arange(0, 1000, stride))


def test_ddim_timesteps_rejects_impossible_counts():
  with pytest.raises(ValueError, match='999'):
    D.ddim_timesteps(1000, 999)


def test_q_sample_and_diffusion_loss():
  sch = D.linear_schedule()
  x0 = jax.random.uniform(jax.random.key(0), (4, 8, 8, 3), minval=-1, maxval=1)
  noise = jax.random.normal(jax.random.key(1), x0.shape)
  t = jnp.array([0, 10, 500, 999])
  ac = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))[np.asarray(t)][:, None, None, None]
  want = np.sqrt(ac) * np.asarray(x0, np.float64) + np.sqrt(1 - ac) * np.asarray(noise, np.float64)
  assert max_err(D.q_sample(sch, x0, t, noise), want) < 1e-6

  # With an eps_fn that recovers the noise exactly from (x_t, t, x0), the loss is 0; with zeros it is ~1.
  def oracle(x_t, t, c):
    a = sch.alphas_cumprod[t][:, None, None, None]
    return (x_t - jnp.sqrt(a) * c) / jnp.sqrt(1 - a)
  loss, aux = jax.jit(lambda r: D.diffusion_loss(oracle, sch, x0, r, cond=x0))(jax.random.key(2))
  assert float(loss) < 1e-6 and aux['loss_per_example'].shape == (4,)
  assert np.all((aux['t'] >= 0) & (aux['t'] < 1000))
  loss0, _ = D.diffusion_loss(lambda x, t, c: jnp.zeros_like(x), sch, jnp.zeros((64, 8, 8, 3)), jax.random.key(3))
  assert 0.9 < float(loss0) < 1.1


def test_v_prediction_loss_and_sampler_conversion():
  """A v-predicting network: the loss targets v, and samplers see the right eps (an oracle decodes exactly)."""
  sch = D.linear_schedule(prediction='v')
  x0 = jax.random.uniform(jax.random.key(0), (4, 8, 8, 3), minval=-0.9, maxval=0.9)

  def oracle_v(x_t, t, cond):  # knows x0 through cond: v = sqrt(a) eps - sqrt(1-a) x0, eps from x_t
    a = sch.alphas_cumprod[t][:, None, None, None]
    eps = (x_t - jnp.sqrt(a) * cond) / jnp.sqrt(1 - a)
    return jnp.sqrt(a) * eps - jnp.sqrt(1 - a) * cond
  loss, _ = D.diffusion_loss(oracle_v, sch, x0, jax.random.key(2), cond=x0)
  assert float(loss) < 1e-6
  # Predicting eps where v is wanted is penalised (the targets differ).
  eps_sch = D.linear_schedule()
  eps_oracle = D.model_eps_fn(lambda x, t, cond: oracle_v(x, t, cond), sch)
  assert float(D.diffusion_loss(eps_oracle, sch, x0, jax.random.key(2), cond=x0)[0]) > 0.1
  assert float(D.diffusion_loss(eps_oracle, eps_sch, x0, jax.random.key(2), cond=x0)[0]) < 1e-6
  # DDIM and its inversion through the conversion: from any x_T the oracle decodes x0.
  x_T = jax.random.normal(jax.random.key(3), x0.shape)
  assert max_err(D.ddim_sample(eps_oracle, sch, x_T, x0, steps=10), np.asarray(x0)) < 1e-4
  assert max_err(D.schedule_from_config(ml_collections.ConfigDict(dict(T=1000, beta_start=1e-4, beta_end=0.02)))
                 .alphas_cumprod, np.asarray(sch.alphas_cumprod)) == 0
  with pytest.raises(ValueError, match='prediction'):
    D.linear_schedule(prediction='x0')


def test_python_loop_matches_official_every_step(tiny, ref):
  sch = D.linear_schedule()
  fn = lambda x, t, c: eps_of(tiny, x, t, c)
  cond = jnp.asarray(ref['cond'])
  x0, xs, x0s = D.ddim_sample_loop(fn, sch, nhwc(ref['x_T']), cond, steps=10)
  for k in range(10):
    assert max_err(nchw(xs[k]), ref['sample_steps'][k]) <= 1e-4, k
    # x0_hat at t=900 is sqrt(1/a)~4x amplified before clipping; compare with a matching tolerance.
    assert max_err(nchw(x0s[k]), ref['sample_pred_xstart'][k]) <= 5e-4, k
  err = max_err(nchw(x0), ref['x0'])
  x_T, xs, _ = D.ddim_sample_loop(fn, sch, nhwc(ref['x_start']), cond, steps=10, reverse=True)
  for k in range(10):
    assert max_err(nchw(xs[k]), ref['reverse_steps'][k]) <= 1e-4, k
  inv_err = max_err(nchw(x_T), ref['x_T_inverted'])
  print(f'DDIM x0 max abs err {err:.2e}; inversion x_T max abs err {inv_err:.2e}')
  assert err <= 1e-4 and inv_err <= 1e-4

  # No clipping: the model's output matters everywhere (x0 reaches ~290 here).
  x0_nc, _, _ = D.ddim_sample_loop(fn, sch, nhwc(ref['x_T']), cond, steps=10, clip=False)
  x_T_nc, _, _ = D.ddim_sample_loop(fn, sch, nhwc(ref['x_start']), cond, steps=10, clip=False, reverse=True)
  e1, e2 = max_err(nchw(x0_nc), ref['x0_noclip']), max_err(nchw(x_T_nc), ref['x_T_inverted_noclip'])
  # The official float32 loop itself is 3.3e-4 / 9.0e-4 away from its float64 twin here.
  o1 = max_err(nchw(x0_nc), ref['x0_noclip_float64'])
  o2 = max_err(nchw(x_T_nc), ref['x_T_inverted_noclip_float64'])
  print(f'noclip: x0 err {e1:.2e} (vs float64 {o1:.2e}), x_T err {e2:.2e} (vs float64 {o2:.2e})')
  np.testing.assert_allclose(nchw(x0_nc), ref['x0_noclip'], rtol=1e-5, atol=5e-3)
  np.testing.assert_allclose(nchw(x_T_nc), ref['x_T_inverted_noclip'], rtol=1e-5, atol=5e-3)
  assert o1 < 2e-3 and o2 < 5e-3


def test_scan_sampler_equals_loop_and_compiles_once(tiny, ref):
  sch = D.linear_schedule()
  cond = jnp.asarray(ref['cond'])
  state = nnx.state(tiny)
  sample = D.make_sampler(tiny, sch, steps=10)
  x0 = sample(state, nhwc(ref['x_T']), cond)
  x0_again = sample(state, nhwc(ref['x_T']) + 0, cond)
  assert sample._cache_size() == 1  # second call reused the compiled program
  np.testing.assert_array_equal(x0, x0_again)
  loop, _, _ = D.ddim_sample_loop(lambda x, t, c: eps_of(tiny, x, t, c), sch, nhwc(ref['x_T']), cond, steps=10)
  assert max_err(x0, loop) <= 1e-4  # XLA fuses the scan body differently from eager ops
  assert max_err(nchw(x0), ref['x0']) <= 1e-4

  invert = D.make_sampler(tiny, sch, steps=10, invert=True)
  x_T = invert(state, nhwc(ref['x_start']), cond)
  assert max_err(nchw(x_T), ref['x_T_inverted']) <= 1e-4
  # The scan keeps only the running x: the compiled memory does not grow with the step count.
  mem = lambda s: D.make_sampler(tiny, sch, steps=s).lower(state, nhwc(ref['x_T']), cond).compile().memory_analysis()
  m10, m50 = mem(10), mem(50)
  assert m50.temp_size_in_bytes <= m10.temp_size_in_bytes * 1.05 + 4096


def test_eta_needs_rng_and_adds_noise(tiny, ref):
  sch = D.linear_schedule()
  fn = lambda x, t, c: eps_of(tiny, x, t, c)
  x_T, cond = nhwc(ref['x_T']), jnp.asarray(ref['cond'])
  with pytest.raises(ValueError, match='rng'):
    D.ddim_sample(fn, sch, x_T, cond, steps=10, eta=1.)
  a, _, _ = D.ddim_sample_loop(fn, sch, x_T, cond, steps=10, eta=1., clip=False, rng=jax.random.key(0))
  b, _, _ = D.ddim_sample_loop(fn, sch, x_T, cond, steps=10, eta=1., clip=False, rng=jax.random.key(1))
  c, _, _ = D.ddim_sample_loop(fn, sch, x_T, cond, steps=10, eta=0., clip=False)
  assert max_err(a, b) > 1e-2 and max_err(a, c) > 1e-2


def test_decode_invert_round_trip_with_many_steps(tiny, ref):
  """x_T -> decode -> invert recovers x_T, and better with more steps.

  Random weights give no meaningful x0 (noclip x0 reaches hundreds), so the eps model is the exact eps of
  Gaussian data N(mu, 0.5^2) plus 0.05 x the tiny UNet: the real network runs inside the scan, and the
  flow is well defined. What remains is DDIM's own discretisation error, which must shrink with steps.
  """
  sch = D.linear_schedule()
  mu = 0.5 * nhwc(ref['x_start'])
  graphdef, state = nnx.split(tiny)

  def eps_fn(model):
    def fn(x, t, c):
      a = sch.alphas_cumprod[t][:, None, None, None]
      return jnp.sqrt(1 - a) * (x - jnp.sqrt(a) * mu) / (0.25 * a + 1 - a) + 0.05 * model(x, t, cond=c)
    return fn

  @jax.jit
  def round_trip(state, x_T, cond, *, steps=100):
    fn = eps_fn(nnx.merge(graphdef, state))
    x0 = D.ddim_sample(fn, sch, x_T, cond, steps=steps, clip=False)
    return D.ddim_invert(fn, sch, x0, cond, steps=steps, clip=False)

  x_T, cond = nhwc(ref['x_T']), jnp.asarray(ref['cond'])
  rms = lambda a: float(jnp.sqrt(jnp.mean(jnp.square(a - x_T))))
  r100 = rms(round_trip(state, x_T, cond))
  r10 = rms(jax.jit(round_trip.__wrapped__, static_argnames='steps')(state, x_T, cond, steps=10))
  print(f'round trip rms error: 10 steps {r10:.3f}, 100 steps {r100:.3f} (x_T std 1)')
  assert r100 < 0.1 and r100 < r10 / 2


def test_float64_port_matches_official_float64(reference_dir, tiny_weights, official_cfg, ref):
  """With jax_enable_x64 the port reproduces diffae's float64 computation to ~1e-12: same math, not luck."""
  io = np.load(reference_dir / 'tiny_io.npz')
  with jax.enable_x64(True):
    cfg = diffae.config_from_official(official_cfg, dtype='float64', param_dtype='float64')
    model = diffae.load_pretrained(tiny_weights, cfg)
    f64 = lambda a: jnp.asarray(np.asarray(a, np.float64))
    # diffae's eps_float64 used the float32 cond.
    eps = eps_of(model, f64(nhwc(io['x_t'])), jnp.asarray(io['t']), f64(io['cond']))
    assert eps.dtype == jnp.float64
    assert max_err(nchw(eps), io['eps_float64']) < 1e-9
    sch = D.linear_schedule()
    table = D.ddim_table(1000, 10, dtype=np.float64)
    fn = lambda x, t, c: eps_of(model, x, t, c)
    x_T, _, _ = D.ddim_sample_loop(fn, sch, f64(nhwc(ref['x_start'])), f64(ref['cond']), steps=10, clip=False,
                                   reverse=True, table=table)
    assert max_err(nchw(x_T), ref['x_T_inverted_noclip_float64']) < 1e-9


def test_sampler_sharded_over_frames_equals_single_device(tiny, ref):
  """Frames split over the mesh's data axis (8 fake CPU devices) give the same frames as one device."""
  n = jax.device_count()
  assert n == 8, 'tests/conftest.py sets 8 fake CPU devices'
  mesh = jax.make_mesh((n,), ('data',), axis_types=(jax.sharding.AxisType.Auto,))
  data = jax.sharding.NamedSharding(mesh, jax.P('data'))
  sch = D.linear_schedule()
  x_T = jnp.broadcast_to(nhwc(ref['x_T'])[:1], (n, 32, 32, 3))  # one shared noise image for every frame
  cond = jnp.asarray(np.resize(ref['cond'], (n, 64)))
  state = nnx.state(tiny)
  sample = D.make_sampler(tiny, sch, steps=10, clip=False)
  want = sample(state, x_T, cond)
  got = sample(jax.device_put(state, jax.sharding.NamedSharding(mesh, jax.P())), jax.device_put(x_T, data),
               jax.device_put(cond, data))
  assert got.sharding.spec == jax.P('data')
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-3)
  np.testing.assert_allclose(got[0::2], jnp.broadcast_to(got[0], got[0::2].shape), rtol=1e-5, atol=1e-3)


def test_cpu_compiler_options_turn_ynnpack_off_only_on_cpu():
  """XLA:CPU's YNNPACK kernels are slower for the UNet's convolutions (benchmarks/bench_torch_unet.py)."""
  assert D.compiler_options('cpu') == {'xla_cpu_experimental_ynn_fusion_type': ''}
  assert D.compiler_options('tpu') == {} and D.compiler_options('gpu') == {}


def test_sqrt_linear_schedule_is_ldms():
  """DiffTalk / LDM: betas = linspace(sqrt(0.0015), sqrt(0.0195), 1000)²; the DDIM table follows it."""
  sch = D.linear_schedule(1000, 0.0015, 0.0195, beta_schedule='sqrt_linear')
  b = np.asarray(sch.betas, np.float64)
  np.testing.assert_allclose(b[[0, -1]], [0.0015, 0.0195], rtol=1e-6)
  np.testing.assert_allclose(np.diff(np.sqrt(b)), np.diff(np.sqrt(b))[0], rtol=1e-3)
  assert not np.allclose(b, np.asarray(D.linear_schedule(1000, 0.0015, 0.0195).betas))
  np.testing.assert_allclose(D.table_for(sch, 10).ac, np.asarray(sch.alphas_cumprod)[D.ddim_timesteps(1000, 10)],
                             rtol=1e-5)
  with pytest.raises(ValueError, match='beta_schedule'):
    D.linear_schedule(beta_schedule='cosine')


def test_inpainting_keeps_the_known_region_and_generates_the_rest():
  sch = D.linear_schedule(1000, 0.0015, 0.0195, beta_schedule='sqrt_linear')
  k = jax.random.split(jax.random.key(0), 3)
  known = jax.random.normal(k[0], (2, 8, 8, 3))
  x_T = jax.random.normal(k[1], (1, 8, 8, 3))
  keep = jnp.zeros((2, 8, 8, 1)).at[:, :4].set(1.0)          # top half known, bottom half generated
  pixelwise = lambda x, t, c: 0.3 * x
  plain = D.ddim_sample(pixelwise, sch, jnp.broadcast_to(x_T, known.shape), None, steps=10, clip=False)
  out = D.ddim_sample(pixelwise, sch, x_T, None, steps=10, clip=False, inpaint=(known, keep))
  np.testing.assert_array_equal(out[:, :4], known[:, :4])
  np.testing.assert_allclose(out[:, 4:], plain[:, 4:], atol=1e-5)   # a pixelwise model ignores the known region
  # A model that mixes pixels: the generated half now depends on the known half.
  mixing = lambda x, t, c: 0.3 * x + x.mean(axis=(1, 2), keepdims=True)
  a = D.ddim_sample(mixing, sch, x_T, None, steps=10, clip=False, inpaint=(known, keep))
  b = D.ddim_sample(mixing, sch, x_T, None, steps=10, clip=False, inpaint=(known + 1.0, keep))
  assert float(jnp.abs(a[:, 4:] - b[:, 4:]).max()) > 1e-3
