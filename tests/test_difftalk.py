"""DiffTalk: examples, model, the frozen first stage through the training loop, sampling and inpainting."""

import json

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import difftalk as dt_config
from daetalker_jax import checkpoint
from daetalker_jax import train
from daetalker_jax.data import examples
from daetalker_jax.inference import difftalk_codec
from daetalker_jax.models import difftalk
from daetalker_jax.models import unet as unet_lib
from tests import test_vq


# Its module fixtures are built once: pytest-xdist runs the whole module on one worker.
pytestmark = pytest.mark.xdist_group('difftalk')


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
  # Traced, not run (nnx.eval_shape): the shapes and the input checks are the same, without minutes of eager ops.
  model = nnx.eval_shape(_tiny_model)
  audio, lms = jnp.zeros((2, 8, 16, 80)), jnp.full((2, 39, 2), 0.5)
  ctx = nnx.eval_shape(lambda m: m.context(audio, lms), model)
  assert ctx.shape == (2, 1, 128)
  z = jnp.zeros((2, 16, 16, 3))
  assert nnx.eval_shape(lambda m: m(z, jnp.array([1, 500]), (z, z, jnp.zeros(ctx.shape))), model).shape == z.shape
  with pytest.raises(ValueError, match='audio must be'):
    nnx.eval_shape(lambda m: m.context(jnp.zeros((2, 8, 12, 80)), lms), model)
  with pytest.raises(ValueError, match='landmarks must be'):
    nnx.eval_shape(lambda m: m.context(audio, jnp.zeros((2, 68, 2))), model)


def test_published_shapes():
  """The full config: the 55.3M VQ-f4 first stage and the ~530M denoiser (UNet + audio and landmark nets)."""
  model = nnx.eval_shape(lambda: difftalk.build(dt_config.get_config('variant=full'), rngs=nnx.Rngs(0)))
  first = unet_lib.count_params(model.first_stage)
  denoiser = unet_lib.count_params(model) - first
  assert first == test_vq.F4_PARAMS                 # LDM's vq-f4, counted against diffusers' VQModel in test_vq
  # The denoiser, exactly (a change of architecture must change this line): UNet + audio and landmark nets.
  assert unet_lib.count_params(model.unet) == 530_152_963
  assert (unet_lib.count_params(model.audio_net), unet_lib.count_params(model.landmark_net)) == (37_696, 22_528)
  assert denoiser == 530_215_336, denoiser


@pytest.fixture(scope='module')
def trained(tiny_dataset, tiny_autoencoder, tmp_path_factory):
  """A tiny DiffTalk (3 steps, by the real training loop) on the session's tiny autoencoder (conftest)."""
  ae_dir, dt_dir = tiny_autoencoder, tmp_path_factory.mktemp('difftalk')
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
  # Inpainting: rows above the jaw polygon (its highest landmark, less the feathered edge's blur radius of 5 px
  # at 32 px) are the source crop's own pixels, in each frame's pose; the region below has been generated.
  order = video.info['source_order']
  crops = pipe.source.crops[order]
  tops = np.floor(pipe.source.landmarks[order][:, list(dtp.JAW_POLYGON), 1].min(1) * 32).astype(int) - 6
  assert tops.min() >= 6, tops
  for frame, crop, top in zip(frames, crops, tops):
    np.testing.assert_array_equal(frame[:top], crop[:top])
  assert np.abs(frames[:, tops.max() + 6:].astype(int) - crops[:, tops.max() + 6:]).mean() > 1.0
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


# ------------------------------------------------------------------------------------- the generate CLI
def _photo(tmp_path):
  import cv2  # pylint: disable=g-import-not-at-top
  import skimage.data  # pylint: disable=g-import-not-at-top
  photo = tmp_path / 'astronaut.png'
  cv2.imwrite(str(photo), cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
  return photo


def _generate_cli(args, capsys):
  rc = generate.main([*args, '--quiet'])
  captured = capsys.readouterr()
  return rc, captured.out, captured.err


def test_generate_cli_animates_a_photo_and_dubs_a_video(trained, tmp_path, capsys):
  """`python -m daetalker_jax.generate --method difftalk` with --image, then --video (--length trim): an mp4 at
  the source's size with the speech's frames (or the video's, trimmed) and the audio."""
  from daetalker_jax.data import video_io  # pylint: disable=g-import-not-at-top
  _, dt_dir = trained
  speech = _wav(tmp_path, _astronaut.make_audio(20))
  common = ['--method', 'difftalk', '--model', str(dt_dir), '--audio', str(speech), '--steps', '2', '--batch', '8']
  out = tmp_path / 'photo.mp4'
  rc, stdout, stderr = _generate_cli([*common, '--image', str(_photo(tmp_path)), '--out', str(out)], capsys)
  assert rc == 0, stderr
  info = video_io.probe(out)
  assert (info.width, info.height) == (512, 512) and info.has_audio
  assert len(list(video_io.iter_frames(out, info))) == 20 and f'{out}: 20 frames' in stdout
  video = _astronaut.make_video()
  src = tmp_path / 'src.mp4'
  _astronaut.write_mp4(str(src), video.frames[62:74], _astronaut.make_audio(12))   # frames 68-71 are blank
  out = tmp_path / 'dub.mp4'
  rc, stdout, stderr = _generate_cli([*common, '--video', str(src), '--length', 'trim', '--out', str(out)], capsys)
  assert rc == 0, stderr
  info = video_io.probe(out)
  assert (info.width, info.height) == (384, 288) and len(list(video_io.iter_frames(out, info))) == 12
  assert 'source frames had no face and were passed through untouched' in stdout


def test_no_inpaint_generates_the_whole_face(trained, tiny_dataset):
  """--no-inpaint: the whole crop is generated (its top rows are no longer the source's); inpainting keeps them."""
  from daetalker_jax.data import dataset  # pylint: disable=g-import-not-at-top
  _, dt_dir = trained
  args = generate._parser().parse_args(['--method', 'difftalk', '--audio', 'a.wav', '--out', 'o.mp4',  # pylint: disable=protected-access
                                        '--model', str(dt_dir), '--no-inpaint'])
  assert generate.pipeline_kwargs(args)['options'].inpaint is False
  clip = next(dataset.iterate_clips(tiny_dataset, 'test'))
  speech = clip['audio'][:8 * 640].astype(np.float32) / 32768.0
  top = {}
  for inpaint in (True, False):
    pipe = dtp.DiffTalkPipeline(str(dt_dir), dtp.DiffTalkOptions(clip=clip['clip_id'], data_dir=str(tiny_dataset),
                                                                 steps=2, batch=8, inpaint=inpaint))
    video = pipe(speech)
    frames = np.concatenate(list(video.frames)).astype(int)
    top[inpaint] = np.abs(frames[:, :6] - pipe.source.crops[video.info['source_order']][:, :6]).mean()
  assert top[True] == 0 and top[False] > 1.0, top


def _bad_generate_inputs(tmp_path, dt_dir, ae_dir):
  blank = tmp_path / 'blank.png'
  import cv2  # pylint: disable=g-import-not-at-top
  cv2.imwrite(str(blank), np.full((128, 128, 3), 90, np.uint8))
  photo = str(_photo(tmp_path))
  return {
      'no model': (['--image', photo], '--method difftalk needs --model WORKDIR'),
      'two sources': (['--model', dt_dir, '--image', photo, '--video', photo], 'exactly one face source'),
      'no source': (['--model', dt_dir], 'exactly one face source'),
      'missing image': (['--model', dt_dir, '--image', str(tmp_path / 'none.png')], 'none.png'),
      'faceless image': (['--model', dt_dir, '--image', str(blank)], 'no face found'),
      'missing model': (['--model', str(tmp_path / 'nowhere'), '--image', photo], 'nowhere'),
      'wrong task model': (['--model', ae_dir, '--image', photo], "task 'autoencoder'"),
      'landmarks flag': (['--model', dt_dir, '--image', photo, '--landmarks', 'x.npy'],
                         '--landmarks drives --method landmark only'),
      'guidance flag': (['--model', dt_dir, '--image', photo, '--guidance', '2'],
                        '--guidance is for --method dae_talker and landmark'),
  }


_BAD_GENERATE = ('no model', 'two sources', 'no source', 'missing image', 'faceless image', 'missing model',
                 'wrong task model', 'landmarks flag', 'guidance flag')


@pytest.mark.parametrize('name', _BAD_GENERATE, ids=[n.replace(' ', '_') for n in _BAD_GENERATE])
def test_generate_cli_bad_inputs_fail_in_one_line(trained, tmp_path, capsys, name):
  ae_dir, dt_dir = trained
  cases = _bad_generate_inputs(tmp_path, str(dt_dir), str(ae_dir))
  assert tuple(cases) == _BAD_GENERATE
  extra, message = cases[name]
  speech = _wav(tmp_path, _astronaut.make_audio(20))       # 0.8 s (generation needs 0.5 s)
  out = tmp_path / 'out' / 'video.mp4'
  rc, _, stderr = _generate_cli(['--method', 'difftalk', '--audio', str(speech), '--out', str(out), '--steps', '2',
                                 *extra], capsys)
  lines = stderr.strip().splitlines()
  assert rc == 1 and len(lines) == 1 and lines[0].startswith('error: ') and message in lines[0], stderr
  assert not out.exists() and not (out.parent.exists() and any(out.parent.iterdir()))
