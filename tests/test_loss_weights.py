"""The training recipe's levers: mouth-box pixel weights, min-SNR-γ, per-module learning rates."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from daetalker_jax import diffusion as D
from daetalker_jax import train


def test_box_weight_marks_the_box_only_when_valid():
  w = D.box_weight(jnp.array([[0.25, 0.5, 0.75, 1.0], [0.0, 0.0, 1.0, 1.0]]), jnp.array([True, False]),
                   (4, 4), 5.0)
  assert w.shape == (2, 4, 4, 1)
  np.testing.assert_array_equal(w[0, ..., 0], [[1, 1, 1, 1], [1, 1, 1, 1], [1, 5, 5, 1], [1, 5, 5, 1]])
  np.testing.assert_array_equal(w[1], 1.0)
  grown = D.box_weight(jnp.array([[0.25, 0.5, 0.75, 0.75]]), jnp.array([True]), (4, 4), 5.0, margin=0.5)
  np.testing.assert_array_equal(grown[0, ..., 0], [[1, 1, 1, 1], [5, 5, 5, 5], [5, 5, 5, 5], [5, 5, 5, 5]])


def test_pixel_weight_moves_the_loss_towards_the_box():
  sch = D.linear_schedule()
  x0 = jnp.zeros((4, 8, 8, 3))
  err = jnp.zeros((8, 8, 3)).at[6:, 2:6].set(1.0)          # the model is wrong only in the "mouth"
  fn = lambda x, t, c: c + err          # the eps target plus the error (cond carries the loss's own noise)
  rng = jax.random.key(0)
  noise = jax.random.normal(jax.random.split(rng)[1], x0.shape)
  plain, _ = D.diffusion_loss(fn, sch, x0, rng, cond=noise)
  box = D.box_weight(jnp.tile(jnp.array([[0.25, 0.75, 0.75, 1.0]]), (4, 1)), jnp.ones(4, bool), (8, 8), 10.0)
  weighted, aux = D.diffusion_loss(fn, sch, x0, rng, cond=noise, pixel_weight=box)
  np.testing.assert_allclose(plain, 8 / 64, rtol=1e-6)      # 8 wrong pixels of 64
  np.testing.assert_allclose(weighted, 80 / (56 + 80), rtol=1e-6)   # weighted mean: box pixels count 10x
  assert aux['loss_per_example'].shape == (4,)


def test_min_snr_weight_clamps_the_x0_loss():
  for prediction in ('eps', 'v'):
    sch = D.linear_schedule(prediction=prediction)
    t = jnp.array([0, 100, 300, 999])
    snr = np.asarray(D.snr(sch, t))
    w = np.asarray(D.min_snr_weight(sch, t, 5.0))
    expect = np.minimum(snr, 5.0) / (snr if prediction == 'eps' else snr + 1)
    np.testing.assert_allclose(w, expect, rtol=1e-6)
    assert w[0] < 0.01 and (prediction == 'v' or w[-1] == 1.0)  # low noise is clamped, eps keeps high noise


def test_lr_scale_gives_a_module_its_own_learning_rate():
  config = ml_collections.ConfigDict(dict(optim=dict(learning_rate=1e-2, warmup_steps=1, b1=0.9, b2=0.999,
                                                     weight_decay=0.0, grad_clip=1.0, lr_scale={'encoder': 3.0})))
  tx, _ = train.create_optimizer(config)
  params = {'encoder': {'w': jnp.ones(3)}, 'unet': {'w': jnp.ones(3)}}
  grads = {'encoder': {'w': jnp.full(3, 0.1)}, 'unet': {'w': jnp.full(3, 0.1)}}
  state = tx.init(params)
  for _ in range(2):
    updates, state = tx.update(grads, state, params)
  np.testing.assert_allclose(updates['encoder']['w'], 3.0 * updates['unet']['w'], rtol=1e-6)
  assert float(jnp.abs(updates['unet']['w']).max()) > 0
  config.optim.lr_scale = {}
  tx, _ = train.create_optimizer(config)
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(updates['encoder']['w'], updates['unet']['w'])


def test_dae_task_feeds_the_mouth_box_to_its_loss(tiny_dataset):
  """The DAE task's own input stream carries the mouth box when the loss weighs it, and the loss uses it."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from configs import dae as dae_config  # pylint: disable=g-import-not-at-top
  from daetalker_jax.tasks import dae  # pylint: disable=g-import-not-at-top
  config = dae_config.get_config('variant=tiny')
  config.data.data_dir = str(tiny_dataset)
  plain = next(dae.make_datasets(config, 0, 1)[0])
  assert set(plain) == {'image'}
  config.loss.mouth_weight = 10.0
  batch = next(dae.make_datasets(config, 0, 1)[0])
  assert set(batch) == {'image', 'mouth_box', 'mouth_valid'} and batch['mouth_valid'].all()
  model = dae.create_model(config, nnx.Rngs(0))   # fresh: zero output, so the loss is the target's energy
  rng = jax.random.key(0)

  def loss(weight):    # compiled (op by op, every layer's ops compile on their own); the weight is read at trace
    config.loss.mouth_weight = weight
    return float(nnx.jit(lambda m, b: dae.loss_fn(config, m, b, rng, train=False)[0])(model, batch))
  weighted, unweighted = loss(10.0), loss(1.0)
  assert abs(weighted - unweighted) > 1e-4 * unweighted
  config.loss.mouth_weight = 10.0
  with np.testing.assert_raises(ValueError):
    dae.loss_fn(config, model, {'image': batch['image']}, rng, train=False)
  config.loss.mouth_probe_weight = 1.0           # the probe's targets: the 20 mouth landmarks of each frame
  batch = next(dae.make_datasets(config, 0, 1)[0])
  assert set(batch) == {'image', 'mouth_box', 'mouth_valid', 'mouth_points'}
  assert batch['mouth_points'].shape == (8, 20, 2)
  np.testing.assert_allclose(batch['mouth_points'].min(1), batch['mouth_box'][:, :2], atol=1e-6)


def test_mouth_probe_loss_trains_the_encoder_to_carry_the_mouth():
  """The auxiliary probe: z_sem -> mouth landmarks; its loss reaches the semantic encoder through the probe."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  import pytest  # pylint: disable=g-import-not-at-top
  from configs import dae as dae_config  # pylint: disable=g-import-not-at-top
  from daetalker_jax.tasks import dae  # pylint: disable=g-import-not-at-top
  pts = jnp.stack([jnp.linspace(0.4, 0.6, 20), jnp.full(20, 0.7)], -1)[None].repeat(2, 0)   # (2, 20, 2)
  target = dae.mouth_probe_target(pts)
  assert target.shape == (2, dae.PROBE_OUTPUTS)
  np.testing.assert_allclose(target[:, :2], [[0.0, 0.4]] * 2, atol=1e-6)     # the centre in [-1, 1]
  config = dae_config.get_config('variant=tiny')
  config.model.enc_probe_outputs = dae.PROBE_OUTPUTS
  config.loss.mouth_probe_weight = 1.0
  model = dae.create_model(config, nnx.Rngs(0))
  batch = {'image': jnp.zeros((2, 32, 32, 3)), 'mouth_points': pts, 'mouth_valid': jnp.array([True, False])}
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  def loss_of(p):
    loss, aux = dae.loss_fn(config, nnx.merge(graphdef, p, rest), batch, jax.random.key(0), train=True)
    return loss, aux
  (_, aux), grads = jax.jit(jax.value_and_grad(loss_of, has_aux=True))(params)   # one program, not op by op
  assert float(aux['probe_loss']) > 0
  norm = lambda tree: float(sum(jnp.abs(x).sum() for x in jax.tree.leaves(tree)))
  assert norm(grads['probe']) > 0 and norm(grads['encoder']) > 0
  config.model.enc_probe_outputs = 0
  with pytest.raises(ValueError, match='enc_probe_outputs'):    # traced: the error comes before any compute
    nnx.eval_shape(lambda: dae.loss_fn(config, dae.create_model(config, nnx.Rngs(0)), batch, jax.random.key(0),
                                       train=True))
