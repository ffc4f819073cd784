"""DiffTalk: examples, model, the frozen first stage through the training loop, sampling and inpainting."""

import json

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import autoencoder as ae_config
from configs import difftalk as dt_config
from daetalker_jax import checkpoint
from daetalker_jax import train
from daetalker_jax.data import examples
from daetalker_jax.inference import difftalk_codec
from daetalker_jax.models import difftalk
from daetalker_jax.models import unet as unet_lib


def test_audio_windows_are_centred_on_each_frame():
  feats = np.arange(40, dtype=np.float32)[:, None] * np.ones((1, 2), np.float32)    # step j holds j
  w = examples.audio_windows(feats, np.array([0, 5]), num_frames=4, window=4)
  assert w.shape == (2, 4, 4, 2)
  # frame 5, neighbour offset 0 (index 2 of 4): centre step 4*5+2 = 22, window 20..23.
  np.testing.assert_array_equal(w[1, 2, :, 0], [20, 21, 22, 23])
  # frame 0, offset -2: centre step -6 -> clamped to the first step.
  np.testing.assert_array_equal(w[0, 0, :, 0], [0, 0, 0, 0])


def test_mask_below_and_reference_gap():
  img = np.zeros((2, 8, 8, 3), np.float32) + 0.5
  m = examples.mask_below(img, np.array([0.5, 1.0]))
  assert (m[0, 4:] == -1).all() and (m[0, :4] == 0.5).all()
  assert (m[1] == 0.5).all()
  rng = np.random.default_rng(0)
  ref = examples.reference_frames(rng, np.array([0, 100, 10, 40] * 20), np.array([200, 200, 30, 75] * 20), 60)
  frames = np.array([0, 100, 10, 40] * 20)
  gap = np.abs(ref - frames)
  assert (gap[0::4] >= 60).all() and (gap[1::4] >= 60).all()
  assert (gap[2::4] >= 19).all()                   # a 30-frame clip: as far as it allows (frame 10 -> >= 19 away)
  assert (gap[3::4] >= 40).all()


def test_batches_from_a_prepared_dataset(tiny_dataset):
  store = examples.load_store(tiny_dataset, 'train', image_size=32)
  b = examples.make_batch(store, np.random.default_rng(0), 4)
  assert b['image'].shape == b['masked'].shape == b['reference'].shape == (4, 32, 32, 3)
  assert b['audio'].shape == (4, 8, 16, 80) and b['landmarks'].shape == (4, 39, 2)
  assert np.isfinite(b['audio']).all() and (b['landmarks'] >= 0).all() and (b['landmarks'] <= 1).all()
  # Rows above the nose tip are the target's, rows below are black.
  assert (b['masked'][:, -1] == -1).all() and np.allclose(b['masked'][:, 0], b['image'][:, 0])
  # Stateless stream: batch k is the same whether or not the batches before it were drawn.
  s = examples.talking_examples(tiny_dataset, 'train', image_size=32, batch_size=2, seed=3)
  first = [next(s) for _ in range(3)]
  resumed = next(examples.talking_examples(tiny_dataset, 'train', image_size=32, batch_size=2, seed=3, start_batch=2))
  np.testing.assert_array_equal(first[2]['image'], resumed['image'])
  np.testing.assert_array_equal(first[2]['reference'], resumed['reference'])


def _tiny_model():
  return difftalk.build(dt_config.get_config('variant=tiny'), rngs=nnx.Rngs(0))


def test_model_shapes_and_bad_input():
  model = _tiny_model()
  audio, lms = jnp.zeros((2, 8, 16, 80)), jnp.full((2, 39, 2), 0.5)
  ctx = model.context(audio, lms)
  assert ctx.shape == (2, 1, 128)
  z = jnp.zeros((2, 16, 16, 3))
  assert model(z, jnp.array([1, 500]), (z, z, ctx)).shape == (2, 16, 16, 3)
  with pytest.raises(ValueError, match='audio must be'):
    model.context(jnp.zeros((2, 8, 12, 80)), lms)
  with pytest.raises(ValueError, match='landmarks must be'):
    model.context(audio, jnp.zeros((2, 68, 2)))


def test_published_shapes():
  """The full config: the 55.3M VQ-f4 first stage and the ~530M denoiser (UNet + audio and landmark nets)."""
  model = nnx.eval_shape(lambda: difftalk.build(dt_config.get_config('variant=full'), rngs=nnx.Rngs(0)))
  first = unet_lib.count_params(model.first_stage)
  denoiser = unet_lib.count_params(model) - first
  assert 55.2e6 < first < 55.4e6
  assert 520e6 < denoiser < 540e6, denoiser


@pytest.fixture(scope='module')
def trained(tiny_dataset, tmp_path_factory):
  """A tiny autoencoder (2 steps) and a tiny DiffTalk on it (3 steps), both by the real training loop."""
  ae_dir, dt_dir = tmp_path_factory.mktemp('vq'), tmp_path_factory.mktemp('difftalk')
  cfg = ae_config.get_config('variant=tiny')
  cfg.data.data_dir = str(tiny_dataset)
  cfg.num_train_steps = cfg.checkpoint_every_steps = 2
  cfg.eval_every_steps, cfg.log_every_steps = 0, 1      # 0: no evaluation
  train.train_and_evaluate(cfg, str(ae_dir))
  cfg = dt_config.get_config('variant=tiny')
  cfg.data.data_dir, cfg.first_stage = str(tiny_dataset), str(ae_dir)
  cfg.num_train_steps = cfg.checkpoint_every_steps = cfg.eval_every_steps = 3
  cfg.log_every_steps, cfg.batch_size, cfg.num_eval_images = 1, 8, 4
  cfg.diffusion.sample_steps = 4
  train.train_and_evaluate(cfg, str(dt_dir))
  return ae_dir, dt_dir


def test_training_keeps_the_first_stage_frozen(trained):
  ae_dir, dt_dir = trained
  ae, _ = checkpoint.load_model(str(ae_dir))
  for which in ('ema', 'params'):   # params exactly; the EMA of an unchanging value to rounding (d*x + (1-d)*x)
    model, config = checkpoint.load_model(str(dt_dir), which=which)
    check = np.testing.assert_array_equal if which == 'params' else (
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-12))
    jax.tree.map(check, nnx.state(model.first_stage, nnx.Param), nnx.state(ae, nnx.Param))
  assert config.task == 'difftalk'
  assert list((dt_dir / 'samples').glob('step_*.png'))
  assert not (ae_dir / 'recon').exists()      # eval_every_steps=0: no evaluation, not even at the last step


def test_missing_first_stage_is_one_clear_error(tmp_path):
  """The loop calls load_pretrained on a fresh start (the `trained` fixture goes through it); its errors:"""
  from daetalker_jax.tasks import difftalk as dt_task  # pylint: disable=g-import-not-at-top
  cfg = dt_config.get_config('variant=tiny')
  model = _tiny_model()
  with pytest.raises(ValueError, match='config.first_stage is empty'):
    dt_task.load_pretrained(cfg, model)
  cfg.first_stage = str(tmp_path / 'nowhere')
  with pytest.raises(ValueError, match='no such file or folder'):
    dt_task.load_pretrained(cfg, model)
  (tmp_path / 'other' / 'checkpoints').mkdir(parents=True)      # a workdir, but not of an autoencoder
  cfg.first_stage = str(tmp_path / 'other')
  with pytest.raises(FileNotFoundError):
    dt_task.load_pretrained(cfg, model)


def test_codec_samples_and_inpaints(trained, tiny_dataset):
  _, dt_dir = trained
  model, config = checkpoint.load_model(str(dt_dir))
  ex = examples.fixed_examples(tiny_dataset, 'val', 3, image_size=32)
  codec = difftalk_codec.DiffTalkCodec(model, config, steps=3, batch=2)
  x_T = codec.seed_noise(0)
  frames = codec.sample(ex, x_T)
  assert frames.shape == (3, 32, 32, 3) and frames.dtype == np.uint8
  np.testing.assert_array_equal(codec.sample(ex, x_T), frames)          # deterministic from one x_T
  # keep = 1 everywhere: nothing is generated, the output is the source's first-stage reconstruction.
  keep = np.ones((3, 32, 32, 1), np.float32)
  kept = codec.sample(ex, x_T, source=ex['image'], keep=keep)
  fs = model.first_stage
  recon = np.asarray(jnp.round((jnp.clip(fs.decode(fs.encode(jnp.asarray(ex['image']))), -1, 1) + 1) * 127.5))
  assert np.abs(kept.astype(int) - recon.astype(int)).max() <= 1
  with pytest.raises(ValueError, match='both source= and keep='):
    codec.sample(ex, x_T, source=ex['image'])


# ------------------------------------------------------------------------------------------------ generation
from daetalker_jax import generate  # noqa: E402
from daetalker_jax.inference import difftalk_pipeline as dtp  # noqa: E402
from daetalker_jax.inference import face_source  # noqa: E402
from daetalker_jax.inference.errors import GenerateError  # noqa: E402
from tests import _astronaut  # noqa: E402


def test_source_order_and_jaw_mask():
  np.testing.assert_array_equal(dtp.source_order(9, 4), [0, 1, 2, 3, 2, 1, 0, 1, 2])
  np.testing.assert_array_equal(dtp.source_order(3, 1), [0, 0, 0])
  lm = np.zeros((68, 2), np.float32) + 0.5
  jaw = np.array([[0.2, 0.5], [0.25, 0.7], [0.35, 0.85], [0.5, 0.9], [0.65, 0.85], [0.75, 0.7], [0.8, 0.5]])
  lm[list(range(2, 15))] = np.concatenate([jaw, jaw[:6]])
  lm[33] = [0.5, 0.55]
  keep = dtp.jaw_keep_mask(lm[list(dtp.JAW_POLYGON)], 32)
  assert keep[int(0.75 * 32), 16, 0] == 0 and keep[4, 16, 0] == 1 and keep[31, 0, 0] == 1


def test_photo_source_finds_the_face_and_rejects_a_blank(tmp_path):
  import cv2  # pylint: disable=g-import-not-at-top
  import skimage.data  # pylint: disable=g-import-not-at-top
  photo = tmp_path / 'astronaut.png'
  cv2.imwrite(str(photo), cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
  src = face_source.from_image(str(photo), 64)
  assert src.valid.all() and src.crops.shape == (1, 64, 64, 3)
  x0, y0, x1, y1 = src.boxes[0]
  assert x0 < _astronaut.FACE_CENTRE[0] < x1 and y0 < _astronaut.FACE_CENTRE[1] < y1
  assert ((src.landmarks > 0) & (src.landmarks < 1)).all()            # every landmark inside the crop
  blank = tmp_path / 'blank.png'
  cv2.imwrite(str(blank), np.full((128, 128, 3), 90, np.uint8))
  with pytest.raises(GenerateError, match='no face found'):
    face_source.from_image(str(blank), 64)


def test_dub_a_dataset_clip_and_animate_a_photo(trained, tiny_dataset, tmp_path):
  import cv2  # pylint: disable=g-import-not-at-top
  import skimage.data  # pylint: disable=g-import-not-at-top
  _, dt_dir = trained
  from daetalker_jax.data import dataset  # pylint: disable=g-import-not-at-top
  clip = next(dataset.iterate_clips(tiny_dataset, 'test'))
  speech = clip['audio'][:30 * 640].astype(np.float32) / 32768.0
  pipe = dtp.DiffTalkPipeline(str(dt_dir), dtp.DiffTalkOptions(clip=clip['clip_id'], data_dir=str(tiny_dataset),
                                                               steps=3, batch=8))
  video = pipe(speech)
  frames = np.concatenate(list(video.frames))
  assert frames.shape == (30, 32, 32, 3) and video.info['frames_without_face'] == 0
  # Inpainting: rows above the jaw polygon are the source crop's own pixels.
  top = int(clip['landmarks'][0, examples.CONTEXT_LANDMARKS, 1].min() * 0 + 4)
  np.testing.assert_array_equal(frames[:, :top], pipe.source.crops[video.info['source_order']][:, :top])
  # A photo: output at the photo's size, only the face region changes.
  photo = tmp_path / 'astronaut.png'
  cv2.imwrite(str(photo), cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
  out = tmp_path / 'photo.mp4'
  s = generate.generate_with('difftalk', str(_wav(tmp_path, speech)), str(out),
                             dict(model=str(dt_dir), options=dtp.DiffTalkOptions(image=str(photo), steps=2)),
                             progress=False)
  assert out.is_file() and s['frames'] == 30 and s['frames_without_face'] == 0
  # Bad input: one clear line each.
  with pytest.raises(GenerateError, match='exactly one face source'):
    dtp.DiffTalkPipeline(str(dt_dir), dtp.DiffTalkOptions(image=str(photo), video=str(photo)))
  with pytest.raises(GenerateError, match='--length'):
    dtp.DiffTalkPipeline(str(dt_dir), dtp.DiffTalkOptions(image=str(photo), length='stretch'))


def _wav(tmp_path, speech):
  import soundfile as sf  # pylint: disable=g-import-not-at-top
  path = tmp_path / 'speech.wav'
  sf.write(str(path), speech, 16000)
  return path


def test_video_source_passes_faceless_frames_through(trained, tmp_path):
  _, dt_dir = trained
  video = _astronaut.make_video()
  src_path = tmp_path / 'src.mp4'
  _astronaut.write_mp4(str(src_path), video.frames[62:74], _astronaut.make_audio(12))   # frames 68-71 are blank
  speech = _astronaut.make_audio(20)
  pipe = dtp.DiffTalkPipeline(str(dt_dir), dtp.DiffTalkOptions(video=str(src_path), steps=2))
  np.testing.assert_array_equal(pipe.source.valid, ~video.blank[62:74])
  v = pipe(np.asarray(speech, np.float32))
  frames = np.concatenate(list(v.frames))
  assert frames.shape == (20, 288, 384, 3) and v.size == (384, 288)
  blank = ~pipe.source.valid[v.info['source_order']]
  assert v.info['frames_without_face'] == int(blank.sum()) > 0
  np.testing.assert_array_equal(frames[blank], pipe.source.frames[v.info['source_order'][blank]])
  trimmed = dtp.DiffTalkPipeline(str(dt_dir), dtp.DiffTalkOptions(video=str(src_path), steps=2, length='trim'))
  assert trimmed(np.asarray(speech, np.float32)).num_frames == 12


def test_evaluate_cli_scores_held_out_clips(trained, tiny_dataset, tmp_path, capsys):
  from daetalker_jax import evaluate  # pylint: disable=g-import-not-at-top
  _, dt_dir = trained
  out = tmp_path / 'eval'
  rc = evaluate.main(['--method', 'difftalk', '--model', str(dt_dir), '--data', str(tiny_dataset), '--split', 'test',
                      '--max-frames', '16', '--steps', '2', '--batch', '8', '--out', str(out)])
  assert rc == 0, capsys.readouterr().err
  res = json.loads((out / 'results.json').read_text())
  assert res['method'] == 'difftalk' and res['num_clips'] == 1 and res['num_frames'] == 16
  for k in ('strict_r', 'open_recall', 'psnr', 'psnr_mouth', 'ssim', 'jitter_ratio', 'colour_upper_lip'):
    assert k in res['summary']
  assert (out / f"mouths_{res['clips'][0]['clip_id']}.png").is_file()
  assert evaluate.main(['--method', 'difftalk', '--data', str(tiny_dataset), '--out', str(out)]) == 1
  assert 'needs --model' in capsys.readouterr().err
