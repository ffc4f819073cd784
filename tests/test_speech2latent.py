"""speech2latent: shapes and 25 fps alignment, padding invariance, pose adaptor switches, frozen wav2vec2."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import s2l as s2l_config
from daetalker_jax import tasks
from daetalker_jax.importers import wav2vec2 as w2v_import
from daetalker_jax.models import speech2latent as s2l
from daetalker_jax.models import wav2vec2 as w2v

# A wav2vec2 with the real conv geometry (stride 320, receptive field 400) but tiny widths.
_TINY_W2V = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                 conv_dim=(8,) * 7, conv_stride=(5, 2, 2, 2, 2, 2, 2), conv_kernel=(10, 3, 3, 3, 3, 2, 2),
                 num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2)


def _cfg(frontend='logmel', **kw) -> s2l.S2LConfig:
  base = dict(frontend=frontend, d_model=32, num_heads=2, num_encoder_blocks=1, num_decoder_blocks=1,
              conv_kernel=5, dropout=0.1, latent_dim=12, pose_hidden=16)
  if frontend == 'wav2vec2':
    base['wav2vec2'] = w2v.Wav2Vec2Config(**_TINY_W2V, **kw.pop('w2v', {}))
  base.update(kw)
  return s2l.S2LConfig(**base)


def _audio(b: int, w: int, seed: int = 0) -> np.ndarray:
  return (0.3 * np.random.default_rng(seed).standard_normal((b, w * 640))).astype(np.float32)


@nnx.jit(static_argnames=('pose_mode',))
def _run(model, audio, mask, pose, pose_mode='gt'):
  return model(audio, mask=mask, pose=pose, pose_mode=pose_mode, deterministic=True)


def test_shapes_and_frame_alignment():
  model = s2l.Speech2Latent(_cfg(), rngs=nnx.Rngs(0))
  # (All tests use B=2, W=6 windows where they can: one compiled program serves them.)
  out = _run(model, jnp.asarray(_audio(2, 6)), jnp.ones((2, 6), bool), jnp.zeros((2, 6, 3)))
  assert out['latent'].shape == (2, 6, 12) and out['pose_pred'].shape == (2, 6, 3)
  # Front end + downsampling: output frame k sees mel frames 4k-3 .. 4k+6 (symmetric about 4k..4k+3),
  # i.e. samples [640k - 680, 640k + 1160): its own 640 samples plus about one frame on each side.
  w, k = 8, 4
  audio = jnp.asarray(_audio(1, w))
  mask = jnp.ones((1, w), bool)

  def frame_k(a):
    x = model.frontend_features(a, mask)
    return model.downsample(x, mask)[0, k].sum()
  g = np.abs(np.asarray(jax.jit(jax.grad(frame_k))(audio)))[0]
  support = np.nonzero(g > 1e-7 * g.max())[0]
  # (The Hann window is 0 at its first sample, so the first sample of the range has no gradient.)
  assert (support.min(), support.max()) == (640 * k - 679, 640 * k + 1159), (support.min(), support.max())


@pytest.mark.parametrize('frontend', ['logmel', 'wav2vec2'])
def test_padding_does_not_change_real_frames(frontend):
  model = s2l.Speech2Latent(_cfg(frontend), rngs=nnx.Rngs(1))
  w_real, w = 4, 6
  audio = _audio(2, w, seed=2)
  pose = np.random.default_rng(3).standard_normal((2, w, 3)).astype(np.float32)
  mask = np.arange(w)[None] < np.array([[w], [w_real]])
  out = _run(model, jnp.asarray(audio), jnp.asarray(mask), jnp.asarray(pose))
  # The same example cut to its real frames, run alone.
  short = _run(model, jnp.asarray(audio[1:, :w_real * 640]), jnp.ones((1, w_real), bool),
               jnp.asarray(pose[1:, :w_real]))
  for key in ('latent', 'pose_pred'):
    np.testing.assert_allclose(np.asarray(out[key][1, :w_real]), np.asarray(short[key][0]), atol=1e-4)
  # Garbage audio and pose in the padding: still nothing changes.
  audio2, pose2 = audio.copy(), pose.copy()
  audio2[1, w_real * 640:] = 1.0
  pose2[1, w_real:] = 50.0
  out2 = _run(model, jnp.asarray(audio2), jnp.asarray(mask), jnp.asarray(pose2))
  for key in ('latent', 'pose_pred'):
    np.testing.assert_allclose(np.asarray(out2[key][1, :w_real]), np.asarray(out[key][1, :w_real]), atol=1e-4)
    np.testing.assert_allclose(np.asarray(out2[key][0]), np.asarray(out[key][0]), atol=1e-5)
  # Without the mask the garbage does reach the real frames (so the test can fail).
  out3 = _run(model, jnp.asarray(audio2), jnp.ones((2, w), bool), jnp.asarray(pose2))
  assert np.abs(np.asarray(out3['latent'][1, :w_real]) - np.asarray(out['latent'][1, :w_real])).max() > 1e-3


def test_pose_adaptor_switches():
  model = s2l.Speech2Latent(_cfg(), rngs=nnx.Rngs(2))
  w = 6
  audio = jnp.asarray(_audio(2, w, seed=4))
  mask = jnp.ones((2, w), bool)
  pose = jnp.asarray(np.random.default_rng(5).standard_normal((2, w, 3)).astype(np.float32))
  gt = _run(model, audio, mask, pose, pose_mode='gt')
  sup = _run(model, audio, mask, pose, pose_mode='supplied')
  np.testing.assert_array_equal(np.asarray(gt['latent']), np.asarray(sup['latent']))
  # Another supplied pose changes the latent but not the pose prediction (made before the adaptor).
  sup2 = _run(model, audio, mask, pose + 0.5, pose_mode='supplied')
  assert np.abs(np.asarray(sup2['latent']) - np.asarray(sup['latent'])).max() > 1e-3
  np.testing.assert_array_equal(np.asarray(sup2['pose_pred']), np.asarray(sup['pose_pred']))
  # 'predicted' ignores the given pose, and equals supplying the prediction itself.
  p1 = _run(model, audio, mask, pose, pose_mode='predicted')
  p2 = _run(model, audio, mask, pose * 0 - 3.0, pose_mode='predicted')
  np.testing.assert_array_equal(np.asarray(p1['latent']), np.asarray(p2['latent']))
  own = _run(model, audio, mask, p1['pose_pred'], pose_mode='supplied')
  np.testing.assert_allclose(np.asarray(own['latent']), np.asarray(p1['latent']), atol=1e-6)
  # A (B, 3) pose is held for the whole window.
  held = _run(model, audio, mask, pose[:, 0], pose_mode='supplied')
  full = _run(model, audio, mask, jnp.repeat(pose[:, :1], w, axis=1), pose_mode='supplied')
  np.testing.assert_allclose(np.asarray(held['latent']), np.asarray(full['latent']), atol=1e-6)
  # In 'predicted' mode no gradient flows from the latent into the pose predictor.
  @nnx.jit
  def grads(m):
    return nnx.grad(lambda m: (m(audio, mask=mask, pose_mode='predicted')['latent'] ** 2).mean())(m)
  g = grads(model)
  assert float(jnp.abs(g['pose_adaptor']['fc2']['kernel'][...]).max()) == 0.0
  with pytest.raises(ValueError, match='needs a pose'):
    model(audio, mask=mask, pose_mode='gt')
  with pytest.raises(ValueError, match='pose_mode must be one of'):
    model(audio, mask=mask, pose=pose, pose_mode='gtt')
  with pytest.raises(ValueError, match='not a multiple of 640'):
    model(audio[:, :-1], pose=pose)


def test_features_input_equals_audio_input_and_dropout():
  model = s2l.Speech2Latent(_cfg(), rngs=nnx.Rngs(3))
  w = 6
  audio = jnp.asarray(_audio(2, w, seed=6))
  mask = jnp.ones((2, w), bool)
  pose = jnp.zeros((2, w, 3))
  feats = model.frontend_features(audio, mask)
  assert feats.shape == (2, 4 * w, 80)
  a = _run(model, audio, mask, pose)
  b = _run(model, feats, mask, pose)
  np.testing.assert_allclose(np.asarray(a['latent']), np.asarray(b['latent']), atol=1e-5)
  c = nnx.jit(lambda m: m(audio, mask=mask, pose=pose, deterministic=False))(model)
  assert np.abs(np.asarray(c['latent']) - np.asarray(a['latent'])).max() > 1e-3


def test_wav2vec2_frontend_is_frozen():
  model = s2l.Speech2Latent(_cfg('wav2vec2', wav2vec2_layer=-1), rngs=nnx.Rngs(4))
  w = 4
  audio = jnp.asarray(_audio(2, w, seed=7))
  mask = jnp.ones((2, w), bool)
  assert nnx.eval_shape(lambda m: m.frontend_features(audio, mask), model).shape == (2, 2 * w, 16)  # 50 Hz
  trainable = nnx.state(model, s2l.TRAINABLE)
  everything = nnx.state(model, nnx.Param)
  n_train = sum(x.size for x in jax.tree.leaves(trainable))
  n_all = sum(x.size for x in jax.tree.leaves(everything))
  n_w2v = sum(x.size for x in jax.tree.leaves(nnx.state(model.wav2vec2, nnx.Param)))
  assert n_train == n_all - n_w2v and n_w2v > 0
  assert 'layer_mix' in trainable and 'wav2vec2' not in trainable

  @nnx.jit
  def grad_fn(m):
    return nnx.grad(lambda m: (m(audio, mask=mask, pose_mode='predicted')['latent'] ** 2).mean())(m)
  grads = grad_fn(model)
  w2v_grad = max(float(jnp.abs(x).max()) for x in jax.tree.leaves(grads['wav2vec2']))
  assert w2v_grad == 0.0
  assert float(jnp.abs(grads['layer_mix']['logits'][...]).max()) > 0.0   # the layer mix does learn
  # A chosen layer runs only the layers it needs.
  layer0 = s2l.Speech2Latent(_cfg('wav2vec2', wav2vec2_layer=0), rngs=nnx.Rngs(4))
  assert layer0._num_layers == 0
  out = nnx.eval_shape(lambda m: m(audio, mask=mask, pose_mode='predicted'), layer0)
  assert out['latent'].shape == (2, w, 12)


@pytest.mark.parametrize('variant,params', [('tiny', 437_891), ('demo', 2_451_459), ('base', 50_284_547)])
def test_config_variants_build(variant, params):
  config = s2l_config.get_config(f'variant={variant}')
  assert config.task == 'speech2latent'   # the task module's name (daetalker_jax/tasks/)
  cfg = s2l.config_from_dict(config.model, dtype=tasks.compute_dtype(config), remat=config.remat)
  abstract = nnx.eval_shape(lambda: s2l.Speech2Latent(cfg, rngs=nnx.Rngs(0)))
  n = sum(x.size for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))
  assert n == params, n               # exactly: a change of architecture must change this table
  if variant == 'base':
    assert cfg.d_model == 512 and cfg.num_encoder_blocks == cfg.num_decoder_blocks == 4
  with pytest.raises(ValueError, match='unknown model config fields'):
    s2l.config_from_dict(dict(config.model, bogus=1))
  with pytest.raises(ValueError, match='needs the wav2vec2 architecture'):
    s2l.config_from_dict(dict(config.model, frontend='wav2vec2'))   # the model module reads no files
  with pytest.raises(ValueError, match='needs model.wav2vec2_path'):
    w2v_import.s2l_config(dict(config.model, frontend='wav2vec2'))
