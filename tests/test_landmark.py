"""Landmark diffusion with TalkFormer (docs/LANDMARK.md): Stage A, the renderer, end to end, generation."""

import json

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import landmarks as lm_config
from configs import talkformer as tf_config
from daetalker_jax import checkpoint
from daetalker_jax import train
from daetalker_jax.data import examples
from daetalker_jax.inference import landmark_pipeline as lmp
from daetalker_jax.inference.errors import GenerateError
from daetalker_jax.models import audio2landmarks as a2l
from daetalker_jax.models import talkformer
from daetalker_jax.models import unet as unet_lib
from daetalker_jax.tasks import talkformer as tf_task
from tests import test_vq


# Its module fixtures are built once: pytest-xdist runs the whole module on one worker.
pytestmark = pytest.mark.xdist_group('landmark')


def _face(rng, b):
  """(b, 68, 2) plausible landmarks: a jittered copy of one face in the middle of the crop."""
  base = np.stack([0.5 + 0.3 * np.cos(np.linspace(0, 2 * np.pi, 68)), 0.5 + 0.3 * np.sin(np.linspace(0, 3, 68))], 1)
  base[36:42] = [0.35, 0.4]
  base[42:48] = [0.65, 0.4]
  return (base + 0.01 * rng.normal(size=(b, 68, 2))).astype(np.float32)


def test_pose_frame_round_trip_and_split_join():
  rng = np.random.default_rng(0)
  pts = _face(rng, 3)
  ctx, motion = a2l.split_68(jnp.asarray(pts))
  np.testing.assert_array_equal(np.asarray(a2l.join_68(ctx, motion)), pts)
  frame = a2l.pose_frame(ctx)
  n = a2l.normalise(motion, frame)
  np.testing.assert_allclose(np.asarray(a2l.to_image(n, frame)), np.asarray(motion), atol=1e-6)
  # Normalised eyes: centred, one apart, level.
  eyes = a2l.normalise(ctx, frame)
  left, right = eyes[:, a2l._LEFT_EYE].mean(1), eyes[:, a2l._RIGHT_EYE].mean(1)  # pylint: disable=protected-access
  np.testing.assert_allclose(np.asarray(left + right), 0, atol=1e-5)
  np.testing.assert_allclose(np.asarray(right - left), [[1, 0]] * 3, atol=1e-5)
  # A moved, scaled, rotated head gives the same normalised points.
  c, s = np.cos(0.3), np.sin(0.3)
  moved = (pts - 0.5) @ np.array([[c, s], [-s, c]]) * 0.8 + 0.55
  mc, mm = a2l.split_68(jnp.asarray(moved))
  np.testing.assert_allclose(np.asarray(a2l.normalise(mm, a2l.pose_frame(mc))), np.asarray(n), atol=1e-5)


def test_landmark_batches_from_a_prepared_dataset(tiny_dataset):
  store = examples.load_store(tiny_dataset, 'train', image_size=32)
  b = examples.make_landmark_batch(store, np.random.default_rng(0), 3, num_frames=5, num_refs=4)
  assert b['audio'].shape == (3, 5, 16, 80) and b['context'].shape == (3, 5, 39, 2)
  assert b['motion'].shape == (3, 5, 29, 2) and b['ref_sets'].shape == (3, 4, 68, 2) and b['valid'].shape == (3, 5)
  assert b['image'].shape == (3, 32, 32, 3) and b['landmarks'].shape == b['ref_landmarks'].shape == (3, 68, 2)
  # The centre frame of the window is the target frame.
  np.testing.assert_array_equal(a2l.join_68(b['context'][:, 2], b['motion'][:, 2]), b['landmarks'])
  small = examples.make_landmark_batch(store, np.random.default_rng(0), 3, num_frames=5, num_refs=4, images=False)
  assert 'image' not in small and small['audio'].shape == (3, 5, 16, 80)


def test_stage_a_shapes_and_bad_input():
  cfg = lm_config.get_config('variant=tiny')
  model = a2l.build(cfg, rngs=nnx.Rngs(0))
  rng = np.random.default_rng(0)
  face = _face(rng, 2)
  audio, context = jnp.zeros((2, 5, 16, 80)), jnp.repeat(face[:, None, a2l.CONTEXT_LANDMARKS], 5, 1)
  refs = jnp.repeat(face[:, None], 4, 1)
  out = model(audio, context, refs)
  assert out.shape == (2, 5, 29, 2)
  # A fresh head predicts the mean reference mouth, in the pose-normalised frame.
  np.testing.assert_allclose(np.asarray(model.predict_image(audio, context, refs)),
                             np.repeat(face[:, None, a2l.MOTION_LANDMARKS], 5, 1), atol=1e-5)
  with pytest.raises(ValueError, match='audio must be'):
    model(jnp.zeros((2, 4, 16, 80)), context, refs)


def _batch(rng, b=2, t=5, k=4, size=32):
  face = _face(rng, b)
  return dict(image=rng.uniform(-1, 1, (b, size, size, 3)).astype(np.float32),
              masked=rng.uniform(-1, 1, (b, size, size, 3)).astype(np.float32),
              reference=rng.uniform(-1, 1, (b, size, size, 3)).astype(np.float32),
              audio=rng.normal(size=(b, t, 16, 80)).astype(np.float32),
              context=np.repeat(face[:, None, a2l.CONTEXT_LANDMARKS], t, 1),
              motion=np.repeat(face[:, None, a2l.MOTION_LANDMARKS], t, 1), valid=np.ones((b, t), np.float32),
              ref_sets=np.repeat(face[:, None], k, 1), landmarks=face, ref_landmarks=face,
              mouth_box=np.tile(np.array([[0.4, 0.6, 0.6, 0.7]], np.float32), (b, 1)))


def test_end_to_end_gradients_reach_stage_a():
  """The diffusion loss alone (Stage A's own loss off) has a non-zero gradient in Stage A's layers once the
  zero-initialised TalkFormer outputs have moved, and none with ground-truth landmarks."""
  cfg = tf_config.get_config('variant=tiny,stage=e2e')
  cfg.loss.landmark_weight = 0.0
  model = talkformer.build(cfg, rngs=nnx.Rngs(0))
  batch = _batch(np.random.default_rng(0))

  @nnx.jit(static_argnums=2)
  def grads(m, batch, end_to_end):
    c = cfg.copy_and_resolve_references()
    c.loss.end_to_end = end_to_end
    return nnx.grad(lambda m: tf_task.loss_fn(c, m, batch, jax.random.key(1), train=True)[0])(m)

  # At init the blocks' outputs are zero (proj_out, then the attention outputs behind it) and so is Stage A's
  # head: the landmarks cannot matter yet. A few optimizer steps open the path, one zero layer per step.
  opt = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

  @nnx.jit
  def update(m, opt, batch):     # one compiled program (eager Adam over every leaf takes minutes)
    g = grads(m, batch, True)
    opt.update(m, g)
    return g

  for _ in range(5):
    update(model, opt, batch)
  g = update(model, opt, batch)  # the gradient after 5 updates
  norms = {'/'.join(n for n in train._path_names(p) if n != 'value'): float(jnp.linalg.norm(x))  # pylint: disable=protected-access
           for p, x in jax.tree_util.tree_leaves_with_path(nnx.state(g.stage_a, nnx.Param))}
  assert norms and all(np.isfinite(list(norms.values())))
  assert norms['head/kernel'] > 0 and norms['layers/0/attn/query/kernel'] > 0 and norms['audio_in/kernel'] > 0, norms
  g_truth = grads(model, batch, False)
  assert all(float(jnp.abs(x).max()) == 0 for x in jax.tree.leaves(nnx.state(g_truth.stage_a, nnx.Param)))


def test_concat_reference_joins_the_unet_input():
  """With model.talkformer.concat_reference the reference latent is part of the UNet input, beside the masked
  target's (and the UNet is sized for it); without it the input is the masked latent alone; a UNet sized for
  the other layout is one clear error."""
  batch = _batch(np.random.default_rng(0))
  for concat in (False, True):
    cfg = tf_config.get_config('variant=tiny')
    cfg.model.talkformer.concat_reference = concat
    cfg.model.unet.in_channels = (3 if concat else 2) * cfg.model.unet.out_channels
    model = talkformer.build(cfg, rngs=nnx.Rngs(0))

    @nnx.jit
    def condition(m, b):    # one program (op by op, the encoders' and the UNet's ops each compile on their own)
      inputs, context = m.sample_condition(b['masked'], b['reference'], b['landmarks'], b['ref_landmarks'])
      want = [m.encode(b['masked'])] + ([m.encode(b['reference'])] if concat else [])
      return inputs, jnp.concatenate(want, -1), context

    inputs, want, context = condition(model, {k: jnp.asarray(v) for k, v in batch.items()})
    np.testing.assert_allclose(np.asarray(inputs), np.asarray(want), atol=1e-6)
    assert set(context) == {'ref', 'ref_landmarks', 'motion'}
    side = cfg.model.unet.image_size
    eps = nnx.eval_shape(lambda m: m(jnp.zeros((2, side, side, m.latent_channels)), jnp.array([10, 500]),
                                     (inputs, context)), model)
    assert eps.shape == (2, side, side, model.latent_channels)
  cfg = tf_config.get_config('variant=tiny')
  cfg.model.talkformer.concat_reference = True                        # in_channels left at 2 z
  with pytest.raises(ValueError, match=r'takes \[z_t, masked, reference\] \(\d+ channels\)'):
    talkformer.build(cfg, rngs=nnx.Rngs(0))
  # The config argument sizes the UNet with the layout: on for the CPU demo, off elsewhere, either way by choice.
  for arg, concat in (('variant=demo', True), ('variant=demo,concat_reference=0', False), ('variant=full', False),
                      ('variant=tiny,concat_reference=1', True)):
    cfg = tf_config.get_config(arg)
    z = cfg.model.unet.out_channels
    assert (cfg.model.talkformer.concat_reference, cfg.model.unet.in_channels) == (concat, (3 if concat else 2) * z)
  with pytest.raises(ValueError, match="unknown concat_reference 'yes'"):
    tf_config.get_config('variant=demo,concat_reference=yes')


def test_published_shapes():
  """The full renderer at 64² latents (TalkFormer at 32², 16², 8² and the middle) and IP_LAP's Stage A."""
  model = nnx.eval_shape(lambda: talkformer.build(tf_config.get_config('variant=full'), rngs=nnx.Rngs(0)))
  first, stage_a = unet_lib.count_params(model.first_stage), unet_lib.count_params(model.stage_a)
  assert first == test_vq.F4_PARAMS                 # LDM's vq-f4, counted against diffusers' VQModel in test_vq
  assert stage_a == 13_410_874, stage_a             # exactly: a change of architecture must change this line
  assert unet_lib.count_params(model) == 582_124_635
  blocks = [b for b in jax.tree.leaves(model.unet, is_leaf=lambda x: isinstance(x, talkformer.TalkFormerBlock))
            if isinstance(b, talkformer.TalkFormerBlock)]
  assert sorted({b.channels for b in blocks}) == [512, 768, 1024]


# ------------------------------------------------------------------------------------------------ smoothing
def test_smoothing_has_no_lag_and_track_files_are_checked(tmp_path):
  n = 41
  bump = np.exp(-0.5 * ((np.arange(n) - 20) / 3.0) ** 2)
  track = np.zeros((n, 29, 2), np.float32) + bump[:, None, None].astype(np.float32)
  smooth = lmp.smooth_track(track, 2.0)
  assert int(np.argmax(smooth[:, 0, 0])) == 20               # the peak stays where it was: no lag
  flat = np.full((n, 29, 2), 0.4, np.float32)
  np.testing.assert_allclose(lmp.smooth_track(flat, 2.0), flat, atol=1e-6)
  path = tmp_path / 'track.npy'
  np.save(path, np.full((5, 68, 2), 0.5, np.float32))
  out = lmp.load_track(str(path), 8)
  assert out.shape == (8, 29, 2)
  np.save(path, np.zeros((5, 10, 2), np.float32))
  with pytest.raises(GenerateError, match=r'expected \(frames, 68, 2\)'):
    lmp.load_track(str(path), 8)
  np.save(path, np.full((5, 29, 2), 300.0, np.float32))
  with pytest.raises(GenerateError, match='fractions of the crop'):
    lmp.load_track(str(path), 8)


def test_mean_mouth_is_the_average_mouth_in_each_frames_pose():
  """The guidance branch's mouth: the track's mean in the pose-normalised frame, put back in every frame's pose.
  A head that moves with a mouth that does not gives the track back; a mouth that opens and closes gives one
  shape (the mean opening) in every frame; taking it twice changes nothing."""
  rng = np.random.default_rng(0)
  n = 12
  face = _face(rng, 1)[0]
  angle, scale = 0.1 * np.sin(np.arange(n)), 1 + 0.05 * np.cos(np.arange(n))
  rot = np.stack([np.stack([np.cos(angle), -np.sin(angle)], -1), np.stack([np.sin(angle), np.cos(angle)], -1)], -2)

  def head(points):       # (n, P, 2) in the face's own frame -> the image, the head turned, scaled and moved
    moved = np.einsum('nij,npj->npi', rot * scale[:, None, None], points - 0.5)
    return (moved + 0.5 + np.stack([0.02 * np.sin(np.arange(n)), 0.01 * np.arange(n) / n], 1)[:, None]
            ).astype(np.float32)

  pts = head(np.repeat(face[None], n, 0))                      # the head moves, the face does not
  context, motion = pts[:, examples.CONTEXT_LANDMARKS], pts[:, a2l.MOTION_LANDMARKS]
  np.testing.assert_allclose(lmp.mean_mouth(motion, context), motion, atol=1e-5)
  opened = np.repeat(face[None], n, 0)
  opened[:, 66, 1] += 0.05 * (np.arange(n) % 2)               # the lower lip down every other frame
  mean = lmp.mean_mouth(head(opened)[:, a2l.MOTION_LANDMARKS], context)
  half = face.copy()
  half[66, 1] += 0.025                                           # half open, in each frame's pose
  np.testing.assert_allclose(mean, head(np.repeat(half[None], n, 0))[:, a2l.MOTION_LANDMARKS], atol=1e-5)
  np.testing.assert_allclose(lmp.mean_mouth(mean, context), mean, atol=1e-5)


# ------------------------------------------------------------------------------------------ the three stages
@pytest.fixture(scope='module')
def trained(tiny_dataset, tmp_path_factory):
  """Stage A (3 steps), the renderer in pixel space on ground-truth landmarks (2 steps), then end to end (2
  steps), all by the real training loop."""
  a_dir, b_dir, e_dir = (tmp_path_factory.mktemp(n) for n in ('landmarks', 'renderer', 'e2e'))
  cfg = lm_config.get_config('variant=tiny')
  cfg.data.data_dir = str(tiny_dataset)
  cfg.num_train_steps = cfg.checkpoint_every_steps = 3
  cfg.log_every_steps, cfg.eval_every_steps = 1, 0            # no evaluation: no test reads Stage A's
  train.train_and_evaluate(cfg, str(a_dir))

  def renderer_config(stage):
    c = tf_config.get_config(f'variant=tiny,stage={stage}')
    c.model.talkformer.space = 'pixel'
    c.model.unet.update(in_channels=6, out_channels=3, channel_mult=(1, 2), attention_resolutions=(2,))
    c.data.data_dir = str(tiny_dataset)
    c.num_train_steps = c.checkpoint_every_steps = c.eval_every_steps = 2
    c.log_every_steps, c.batch_size, c.num_eval_images = 1, 8, 2
    c.diffusion.sample_steps = 2
    return c

  cfg = renderer_config('renderer')
  cfg.stage_a_from, cfg.eval_every_steps = str(a_dir), 0      # 0: no evaluation (the e2e run below evaluates)

  train.train_and_evaluate(cfg, str(b_dir))
  cfg = renderer_config('e2e')
  cfg.init_from = str(b_dir)
  train.train_and_evaluate(cfg, str(e_dir))
  return a_dir, b_dir, e_dir


def test_stage_a_is_frozen_for_the_renderer_and_trains_end_to_end(trained):
  a_dir, b_dir, e_dir = trained
  stage_a, _ = checkpoint.load_model(str(a_dir))                # its EMA weights are what stage_a_from loads
  renderer, config = checkpoint.load_model(str(b_dir), which='params')
  assert config.task == 'talkformer' and list((e_dir / 'samples').glob('step_*.png'))
  jax.tree.map(np.testing.assert_array_equal, nnx.state(renderer.stage_a, nnx.Param), nnx.state(stage_a, nnx.Param))
  e2e, _ = checkpoint.load_model(str(e_dir), which='params')
  moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), nnx.state(e2e.stage_a, nnx.Param),
                       nnx.state(stage_a, nnx.Param))
  assert max(jax.tree.leaves(moved)) > 0


def test_generate_from_speech_and_from_a_landmark_track(trained, tiny_dataset, tmp_path):
  from daetalker_jax.data import dataset  # pylint: disable=g-import-not-at-top
  _, _, e_dir = trained
  clip = next(dataset.iterate_clips(tiny_dataset, 'test'))
  speech = clip['audio'][:20 * 640].astype(np.float32) / 32768.0
  opts = lmp.LandmarkOptions(clip=clip['clip_id'], data_dir=str(tiny_dataset), steps=2, batch=8)
  pipe = lmp.LandmarkPipeline(str(e_dir), opts)
  video = pipe(speech)
  frames = np.concatenate(list(video.frames))
  assert frames.shape == (20, 32, 32, 3) and video.info['frames_without_face'] == 0
  assert video.info['motion'].shape == (20, 29, 2) and np.isfinite(video.info['lmd'])
  # Rows above the face are the source crop's own pixels (only the jaw region is generated).
  np.testing.assert_array_equal(frames[:, :3], pipe.source.crops[video.info['source_order']][:, :3])
  # A landmark track drives the mouth instead: the track used is the file's (no smoothing asked).
  track = np.asarray(clip['landmarks'][:20], np.float32) / clip['images'].shape[1]
  path = tmp_path / 'track.npy'
  np.save(path, track)
  pipe = lmp.LandmarkPipeline(str(e_dir), lmp.LandmarkOptions(clip=clip['clip_id'], data_dir=str(tiny_dataset),
                                                              steps=2, batch=8, landmarks=str(path), smooth=0))
  v = pipe(speech)
  assert len(np.concatenate(list(v.frames))) == 20
  np.testing.assert_allclose(v.info['motion'], track[:, a2l.MOTION_LANDMARKS])
  assert v.info['lmd'] == pytest.approx(0.0, abs=1e-4)
  with pytest.raises(GenerateError, match='no such file'):
    lmp.LandmarkPipeline(str(e_dir), lmp.LandmarkOptions(clip=clip['clip_id'], data_dir=str(tiny_dataset),
                                                         landmarks=str(tmp_path / 'none.npy')))


def test_evaluate_cli_scores_the_landmark_method(trained, tiny_dataset, tmp_path, capsys):
  from daetalker_jax import evaluate  # pylint: disable=g-import-not-at-top
  _, _, e_dir = trained
  out = tmp_path / 'eval'
  rc = evaluate.main(['--method', 'landmark', '--model', str(e_dir), '--data', str(tiny_dataset), '--split', 'test',
                      '--max-frames', '12', '--steps', '2', '--batch', '8', '--out', str(out)])
  assert rc == 0, capsys.readouterr().err
  res = json.loads((out / 'results.json').read_text())
  assert res['method'] == 'landmark' and res['num_frames'] == 12
  for k in ('strict_r', 'open_recall', 'psnr_mouth', 'lmd', 'landmark_jitter_ratio'):
    assert k in res['summary'], k


def _renderer_with_random_outputs(seed=0):
  """A tiny pixel-space renderer whose zero-initialised kernels (the UNet's last conv, the TalkFormer blocks'
  outputs) are random: an untrained model that already follows its landmarks."""
  c = tf_config.get_config('variant=tiny')
  c.model.talkformer.space = 'pixel'
  c.model.unet.update(in_channels=6, out_channels=3, channel_mult=(1, 2), attention_resolutions=(2,))
  model = talkformer.build(c, rngs=nnx.Rngs(seed))
  rng = np.random.default_rng(seed)
  for _, layer in model.iter_modules():
    kernel = getattr(layer, 'kernel', None)
    if isinstance(kernel, nnx.Param) and not np.any(np.asarray(kernel[...])):
      kernel[...] = jnp.asarray(0.05 * rng.normal(size=kernel.shape), kernel.dtype)
  return model, c


def test_codec_guidance_by_other_landmarks():
  """The codec's guidance (diffusion.paired_guided_eps_fn): a guide equal to the frame's own landmarks changes
  nothing, another guide moves the frames; it needs its guide, and guide keys among the model's conditions."""
  from daetalker_jax.inference import difftalk_codec  # pylint: disable=g-import-not-at-top
  model, config = _renderer_with_random_outputs()
  rng = np.random.default_rng(1)
  ex = {'masked': rng.uniform(-1, 1, (4, 32, 32, 3)), 'reference': rng.uniform(-1, 1, (4, 32, 32, 3)),
        'landmarks': _face(rng, 4), 'ref_landmarks': _face(rng, 4)}
  other = {'landmarks': _face(rng, 4)}
  plain = difftalk_codec.DiffTalkCodec(model, config, steps=2, batch=4)
  guided = difftalk_codec.DiffTalkCodec(model, config, steps=2, batch=4, guidance=3.0, guide_keys=('landmarks',))
  x_T = plain.seed_noise(0)
  a = plain.sample(ex, x_T).astype(int)
  assert np.abs(guided.sample(ex, x_T, guide={'landmarks': ex['landmarks']}).astype(int) - a).max() <= 1
  swapped = plain.sample({**ex, **other}, x_T).astype(int)
  moved = guided.sample(ex, x_T, guide=other).astype(int)
  assert np.abs(swapped - a).mean() > 0.05 and np.abs(moved - a).mean() > np.abs(swapped - a).mean()
  with pytest.raises(ValueError, match=r"needs guide=\{...\} with \['landmarks'\]"):
    guided.sample(ex, x_T)
  with pytest.raises(ValueError, match='needs guide_keys'):
    difftalk_codec.DiffTalkCodec(model, config, steps=2, guidance=2.0)
  with pytest.raises(ValueError, match='needs guide_keys'):
    difftalk_codec.DiffTalkCodec(model, config, steps=2, guidance=2.0, guide_keys=('audio',))


def test_mean_mouth_guidance(trained, tiny_dataset, tmp_path):
  """--guidance on the landmark method: the guidance branch gets the clip's average mouth (mean_mouth of the
  track, in each frame's pose); a track that IS its own average gives both branches the same landmarks, so
  guidance changes nothing; bad scales and difftalk are refused."""
  from daetalker_jax import generate  # pylint: disable=g-import-not-at-top
  from daetalker_jax.data import dataset  # pylint: disable=g-import-not-at-top
  _, _, e_dir = trained
  clip = next(dataset.iterate_clips(tiny_dataset, 'test'))
  speech = clip['audio'][:16 * 640].astype(np.float32) / 32768.0
  common = dict(clip=clip['clip_id'], data_dir=str(tiny_dataset), steps=2, batch=8, smooth=0)
  lm = np.asarray(clip['landmarks'][:16], np.float32) / clip['images'].shape[1]   # the clip's own track
  own = lmp.mean_mouth(lm[:, a2l.MOTION_LANDMARKS], lm[:, examples.CONTEXT_LANDMARKS])
  track, mean = tmp_path / 'track.npy', tmp_path / 'mean.npy'
  np.save(track, lm)
  np.save(mean, own)
  frames = lambda pipe: np.concatenate(list(pipe(speech).frames)).astype(int)
  plain = lmp.LandmarkPipeline(str(e_dir), lmp.LandmarkOptions(**common, landmarks=str(track)))
  guided = lmp.LandmarkPipeline(str(e_dir), lmp.LandmarkOptions(**common, landmarks=str(track), guidance=3.0))
  assert plain.guidance == 1.0 and guided.codec.guidance == 3.0     # the tiny config has no guidance: 1 = off
  guides, sample = [], guided.codec.sample
  guided.codec.sample = lambda ex, x_T, **kw: guides.append(kw['guide']['landmarks']) or sample(ex, x_T, **kw)
  video = guided(speech)
  assert len(np.concatenate(list(video.frames))) == 16 and video.info['guidance'] == 3.0
  # The guide, checked from its definition rather than against mean_mouth: in each frame's pose-normalised
  # frame (a2l.normalise, tested above) it is one shape, the mean of the track's normalised mouths.
  frame = a2l.pose_frame(lm[:, None, examples.CONTEXT_LANDMARKS])
  normalised = lambda motion: np.asarray(a2l.normalise(motion[:, None], frame))[:, 0]
  guide = normalised(np.concatenate(guides)[:, a2l.MOTION_LANDMARKS])
  track_mean = normalised(lm[:, a2l.MOTION_LANDMARKS]).mean(0)
  np.testing.assert_allclose(guide, np.broadcast_to(track_mean, guide.shape), atol=1e-4)
  assert np.abs(normalised(lm[:, a2l.MOTION_LANDMARKS]) - track_mean).max() > 1e-3     # the track itself moves
  a = frames(lmp.LandmarkPipeline(str(e_dir), lmp.LandmarkOptions(**common, landmarks=str(mean))))
  b = frames(lmp.LandmarkPipeline(str(e_dir), lmp.LandmarkOptions(**common, landmarks=str(mean), guidance=3.0)))
  assert np.abs(a - b).max() <= 1
  with pytest.raises(GenerateError, match=r'--guidance=0.0: must be in \(0, 10\]'):
    lmp.LandmarkPipeline(str(e_dir), lmp.LandmarkOptions(**common, guidance=0.0))
  parser = generate._parser()  # pylint: disable=protected-access
  args = parser.parse_args(['--method', 'difftalk', '--audio', 'a.wav', '--out', 'o.mp4', '--model', str(e_dir),
                            '--guidance', '2'])
  with pytest.raises(GenerateError, match='--guidance is for --method dae_talker and landmark'):
    generate.pipeline_kwargs(args)


def test_motion_scale_widens_stage_as_track_around_its_mean(trained, tiny_dataset, tmp_path):
  """track.motion_scale / --motion-scale: Stage A's departure from the clip's mean mouth (pose-normalised frame)
  times the gain, the mean kept; a --landmarks file is used as given; bad gains and other methods are refused."""
  from daetalker_jax import generate  # pylint: disable=g-import-not-at-top
  from daetalker_jax.data import dataset  # pylint: disable=g-import-not-at-top
  normed = np.random.default_rng(0).normal(size=(6, 29, 2)).astype(np.float32)
  wide = lmp.scale_motion(normed, 2.0)
  np.testing.assert_allclose(wide.mean(0), normed.mean(0), atol=1e-6)
  np.testing.assert_allclose(wide - wide.mean(0), 2.0 * (normed - normed.mean(0)), atol=1e-5)
  assert lmp.scale_motion(normed, 1.0) is normed
  assert tf_config.get_config('variant=demo').track.motion_scale == 1.3
  assert tf_config.get_config('variant=tiny').track.motion_scale == 1.0

  _, _, e_dir = trained
  clip = next(dataset.iterate_clips(tiny_dataset, 'test'))
  speech = clip['audio'][:8 * 640].astype(np.float32) / 32768.0
  common = dict(clip=clip['clip_id'], data_dir=str(tiny_dataset), steps=2, batch=8, smooth=0)

  def normalised_track(scale, **kw):
    pipe = lmp.LandmarkPipeline(str(e_dir), lmp.LandmarkOptions(**common, motion_scale=scale, **kw))
    video = pipe(speech)
    ctx = pipe.source.landmarks[video.info['source_order']][:, examples.CONTEXT_LANDMARKS]
    frame = a2l.pose_frame(np.asarray(ctx, np.float32)[:, None])
    return pipe, video, np.asarray(a2l.normalise(video.info['motion'][:, None], frame))[:, 0]

  plain, video, one = normalised_track(None)
  assert plain.motion_scale == 1.0 and video.info['motion_scale'] == 1.0   # the tiny config's default
  _, video, two = normalised_track(2.0)
  assert video.info['motion_scale'] == 2.0
  np.testing.assert_allclose(two.mean(0), one.mean(0), atol=1e-4)
  np.testing.assert_allclose(two - two.mean(0), 2.0 * (one - one.mean(0)), atol=1e-4)
  assert np.abs(one - one.mean(0)).max() > 1e-3                          # Stage A's track does move
  track = np.asarray(clip['landmarks'][:8], np.float32) / clip['images'].shape[1]
  np.save(tmp_path / 'track.npy', track)
  _, video, _ = normalised_track(2.0, landmarks=str(tmp_path / 'track.npy'))
  np.testing.assert_allclose(video.info['motion'], track[:, a2l.MOTION_LANDMARKS])
  assert video.info['motion_scale'] == 1.0
  with pytest.raises(GenerateError, match=r'--motion-scale=-1.0: must be in \[0, 3\]'):
    lmp.LandmarkPipeline(str(e_dir), lmp.LandmarkOptions(**common, motion_scale=-1.0))
  args = generate._parser().parse_args(['--method', 'difftalk', '--audio', 'a.wav', '--out', 'o.mp4',  # pylint: disable=protected-access
                                        '--model', str(e_dir), '--motion-scale', '1.3'])
  with pytest.raises(GenerateError, match='--motion-scale is for --method landmark'):
    generate.pipeline_kwargs(args)


# ------------------------------------------------------------------------------------- the generate CLI
def _generate_cli(args, capsys):
  from daetalker_jax import generate  # pylint: disable=g-import-not-at-top
  rc = generate.main([*args, '--quiet'])
  captured = capsys.readouterr()
  return rc, captured.out, captured.err


def test_generate_cli_animates_a_photo_and_dubs_a_video_without_inpainting(trained, tmp_path, capsys):
  """`generate --method landmark` with --image, then --video --no-inpaint: mp4s at the source's size."""
  import cv2  # pylint: disable=g-import-not-at-top
  import skimage.data  # pylint: disable=g-import-not-at-top
  import soundfile as sf  # pylint: disable=g-import-not-at-top
  from daetalker_jax.data import video_io  # pylint: disable=g-import-not-at-top
  from tests import _astronaut  # pylint: disable=g-import-not-at-top
  _, _, e_dir = trained
  photo, speech = tmp_path / 'astronaut.png', tmp_path / 'speech.wav'
  cv2.imwrite(str(photo), cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
  sf.write(str(speech), _astronaut.make_audio(16), 16000)
  common = ['--method', 'landmark', '--model', str(e_dir), '--audio', str(speech), '--steps', '2', '--batch', '8']
  out = tmp_path / 'photo.mp4'
  rc, stdout, stderr = _generate_cli([*common, '--image', str(photo), '--out', str(out)], capsys)
  assert rc == 0, stderr
  info = video_io.probe(out)
  assert (info.width, info.height) == (512, 512) and info.has_audio and f'{out}: 16 frames' in stdout
  src = tmp_path / 'src.mp4'
  _astronaut.write_mp4(str(src), _astronaut.make_video().frames[:8], _astronaut.make_audio(8))
  out = tmp_path / 'dub.mp4'
  rc, stdout, stderr = _generate_cli([*common, '--video', str(src), '--no-inpaint', '--out', str(out)], capsys)
  assert rc == 0, stderr
  info = video_io.probe(out)
  assert (info.width, info.height) == (384, 288) and len(list(video_io.iter_frames(out, info))) == 16  # looped


def test_no_inpaint_generates_the_whole_face(trained, tiny_dataset):
  from daetalker_jax.data import dataset  # pylint: disable=g-import-not-at-top
  _, _, e_dir = trained
  clip = next(dataset.iterate_clips(tiny_dataset, 'test'))
  speech = clip['audio'][:8 * 640].astype(np.float32) / 32768.0
  top = {}
  for inpaint in (True, False):
    pipe = lmp.LandmarkPipeline(str(e_dir), lmp.LandmarkOptions(clip=clip['clip_id'], data_dir=str(tiny_dataset),
                                                                steps=2, batch=8, inpaint=inpaint))
    video = pipe(speech)
    frames = np.concatenate(list(video.frames)).astype(int)
    top[inpaint] = np.abs(frames[:, :3] - pipe.source.crops[video.info['source_order']][:, :3]).mean()
  assert top[True] == 0 and top[False] > 1.0, top


_BAD_GENERATE = {
    'no model': ([], '--method landmark needs --model WORKDIR (a talkformer training workdir)'),
    'two sources': (['--image', '{photo}', '--video', '{photo}'], 'exactly one face source'),
    'missing track': (['--image', '{photo}', '--landmarks', '{tmp}/none.npy'], 'no such file'),
    'bad motion scale': (['--image', '{photo}', '--motion-scale', '5'], '--motion-scale=5.0: must be in [0, 3]'),
    'bad guidance': (['--image', '{photo}', '--guidance', '0'], '--guidance=0.0: must be in (0, 10]'),
    'wrong task model': (['--image', '{photo}', '--model', '{stage_a}'], "task 'landmarks'"),
}


@pytest.mark.parametrize('name', list(_BAD_GENERATE), ids=[n.replace(' ', '_') for n in _BAD_GENERATE])
def test_generate_cli_bad_inputs_fail_in_one_line(trained, tmp_path, capsys, name):
  import cv2  # pylint: disable=g-import-not-at-top
  import skimage.data  # pylint: disable=g-import-not-at-top
  import soundfile as sf  # pylint: disable=g-import-not-at-top
  from tests import _astronaut  # pylint: disable=g-import-not-at-top
  a_dir, _, e_dir = trained
  photo, speech = tmp_path / 'astronaut.png', tmp_path / 'speech.wav'
  cv2.imwrite(str(photo), cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
  sf.write(str(speech), _astronaut.make_audio(20), 16000)     # 0.8 s (generation needs 0.5 s)
  extra, message = _BAD_GENERATE[name]
  extra = [a.format(photo=photo, tmp=tmp_path, stage_a=a_dir) for a in extra]
  model = [] if name == 'no model' or '--model' in extra else ['--model', str(e_dir)]
  out = tmp_path / 'out' / 'video.mp4'
  rc, _, stderr = _generate_cli(['--method', 'landmark', '--audio', str(speech), '--out', str(out), '--steps', '2',
                                 *model, *extra], capsys)
  lines = stderr.strip().splitlines()
  assert rc == 1 and len(lines) == 1 and lines[0].startswith('error: ') and message in lines[0], stderr
  assert not out.exists() and not (out.parent.exists() and any(out.parent.iterdir()))
