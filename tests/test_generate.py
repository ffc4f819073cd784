"""Generation (generate.py over daetalker_jax/inference/) end to end, tiny random models saved as checkpoints.

The checkpoints are fresh-initialised models whose weights are perturbed (diffae zero-initialises every
output convolution, so an untrained DAE ignores its latent and would make the batching / shared-noise
checks pass trivially), saved through `checkpoint.Checkpointer` exactly as the training loop saves them
and loaded back by `checkpoint.load_model`.
"""
import pathlib

import jax
import numpy as np
import pytest
import soundfile as sf

from configs import dae as dae_config
from configs import s2l as s2l_config
from daetalker_jax import checkpoint
from daetalker_jax import generate
from daetalker_jax import inference
from daetalker_jax.data import contract
from daetalker_jax.inference import clips as clips_lib
from daetalker_jax.inference import dae_codec
from daetalker_jax.inference import loading
from daetalker_jax.inference import paste_back
from daetalker_jax.inference import pose as pose_lib
from daetalker_jax.inference import speech2latent
from daetalker_jax.data import dataset
from daetalker_jax.data import video_io
from tests import _checkpoints

STEPS = 3


@pytest.fixture(scope='session')
def models(tiny_dataset, tmp_path_factory) -> dict[str, str]:
  """{'dae': workdir, 's2l': workdir} of tiny random models (DAE 32 px, 64-d latents; s2l tiny)."""
  root = tmp_path_factory.mktemp('gen_models')
  dc = dae_config.get_config('variant=tiny')
  dc.data.data_dir = str(tiny_dataset)
  dae = _checkpoints.save_random_checkpoint(dc, root / 'dae', {'data_dir': str(tiny_dataset), 'image_size': 32}, seed=0)
  sc = s2l_config.get_config('variant=tiny')
  sc.data.data_dir = str(tiny_dataset)
  rng = np.random.default_rng(0)
  stats = {'data_dir': str(tiny_dataset), 'latents': 'dae',
           'latent_mean': rng.normal(0, 0.5, 64).tolist(), 'latent_std': rng.uniform(0.5, 2.0, 64).tolist(),
           'normalize_latents': True, 'pose_scale': float(sc.loss.pose_scale)}
  s2l = _checkpoints.save_random_checkpoint(sc, root / 's2l', stats, seed=1)
  return {'dae': str(dae), 's2l': str(s2l), 'stats': stats}


@pytest.fixture(scope='session')
def speech(synth_videos, tmp_path_factory) -> dict:
  """2.0 s of synthface speech written as 44.1 kHz stereo (exercises the resampling), and 1.0 s mono."""
  folder = tmp_path_factory.mktemp('speech')
  wav, sr = sf.read(str(sorted(pathlib.Path(synth_videos).glob('*.wav'))[0]), dtype='float32')
  assert sr == 16000
  two = folder / 'two_seconds.wav'
  t = np.arange(int(2.0 * 44100)) / 44100
  resampled = np.interp(t, np.arange(len(wav)) / 16000, wav).astype(np.float32)
  sf.write(str(two), np.stack([resampled, 0.5 * resampled], 1), 44100, subtype='PCM_16')
  one = folder / 'one_second.wav'
  sf.write(str(one), wav[:16000], 16000, subtype='PCM_16')
  return {'two': str(two), 'one': str(one), 'folder': folder}


def _opts(**kw):
  return generate.Options(**{'steps': STEPS, 'batch': 8, **kw})


def _run_main(args, capsys):
  rc = generate.main([*args, '--quiet'])
  captured = capsys.readouterr()
  return rc, captured.out, captured.err


# --------------------------------------------------------------------------------------------------------
# End to end.
# --------------------------------------------------------------------------------------------------------
def test_cli_writes_mp4_with_all_frames_and_the_audio(models, speech, tmp_path, capsys):
  out = tmp_path / 'video.mp4'
  rc, stdout, stderr = _run_main(['--audio', speech['two'], '--dae', models['dae'], '--s2l', models['s2l'],
                                  '--out', str(out), '--steps', str(STEPS), '--batch', '16'], capsys)
  assert rc == 0, stderr
  info = video_io.probe(out)
  assert (info.width, info.height) == (32, 32) and info.has_audio and abs(info.fps - 25) < 1e-6
  frames = np.stack(list(video_io.iter_frames(out, info)))
  expected = contract.frames_for_samples(32000)
  assert expected == 50
  assert abs(len(frames) - expected) <= 1
  audio = video_io.read_audio_track(out)
  assert abs(len(audio) - 32000) <= 0.03 * 16000        # AAC keeps the input's length (within priming)
  assert float(np.std(frames.astype(np.float32), axis=0).mean()) > 1.0   # frames move with the speech
  assert f'{out}: 50 frames, 2.00 s of video' in stdout
  assert sorted(p.name for p in tmp_path.iterdir()) == ['video.mp4']    # no temp files left


def test_batch_size_does_not_change_frames_and_compiles_once(models, speech):
  results = {}
  for batch in (8, 24):
    pipeline = inference.DAETalkerPipeline(models['dae'], models['s2l'], _opts(batch=batch))
    video = pipeline(loading.load_speech(speech['one']))
    results[batch] = np.concatenate(list(video.frames))
    assert pipeline.codec.batch == batch and video.num_frames == 25
    assert pipeline.num_compiles() == 1          # 25 frames = 3 full + 1 padded batch of 8: one program
  a, b = results[8].astype(int), results[24].astype(int)
  assert a.shape == (25, 32, 32, 3)
  assert np.abs(a - b).max() <= 1 and np.mean(a != b) < 0.01
  # Not trivially equal: consecutive frames differ (the latents move).
  assert np.abs(np.diff(a, axis=0)).mean() > 1.0


def test_guidance_comes_from_the_dae_config_unless_given(models, speech):
  """--guidance overrides the DAE config's diffusion.guidance (absent in this checkpoint: 1 = off); the
  guide is the s2l checkpoint's mean latent."""
  plain = inference.DAETalkerPipeline(models['dae'], models['s2l'], _opts())
  assert plain.guidance == 1.0 and plain.codec.guidance == 1.0
  guided = inference.DAETalkerPipeline(models['dae'], models['s2l'], _opts(guidance=2.0))
  assert guided.codec.guidance == 2.0
  audio = loading.load_speech(speech['one'])
  a = np.concatenate(list(plain(audio).frames)).astype(int)
  b = np.concatenate(list(guided(audio).frames)).astype(int)
  assert a.shape == b.shape and np.abs(a - b).mean() > 1.0
  # The mean latent itself decodes the same either way: guidance only moves frames away from it.
  mean = np.asarray(models['stats']['latent_mean'], np.float32)[None]
  x_T = plain.x_T
  assert np.abs(guided.codec.decode(mean, x_T).astype(int) - plain.codec.decode(mean, x_T)).max() <= 1


def test_batch_is_rounded_to_the_device_count(models, speech):
  pipeline = inference.load_pipeline('dae_talker', dae=models['dae'], s2l=models['s2l'], options=_opts(batch=3))
  assert jax.device_count() == 8 and pipeline.codec.batch == 8


def test_noise_is_shared_by_every_frame(models):
  model, config = checkpoint.load_model(models['dae'])
  dec = dae_codec.DAECodec(model, config, steps=STEPS, batch=8)
  rng = np.random.default_rng(0)
  z = rng.normal(size=(3, 64)).astype(np.float32)
  latents = z[[0, 1, 0, 0, 2, 0, 1, 0, 0, 2, 0]]                  # 11 frames: a full and a padded batch
  x_T = dec.seed_noise(0)
  frames = np.concatenate(list(dec.iter_decode(latents, x_T))).astype(int)
  assert frames.shape == (11, 32, 32, 3)
  for i in (2, 3, 5, 7, 8, 10):                                  # identical latents → identical images
    assert np.abs(frames[i] - frames[0]).max() <= 1
  assert np.abs(frames[6] - frames[1]).max() <= 1 and np.abs(frames[9] - frames[4]).max() <= 1
  assert np.abs(frames[1] - frames[0]).mean() > 1.0               # different latents → different images
  other = np.concatenate(list(dec.iter_decode(latents[:1], dec.seed_noise(1)))).astype(int)
  assert np.abs(other[0] - frames[0]).mean() > 1.0                # the seed matters
  assert dec.num_compiles() == 1


def test_bf16_decoder_close_to_float32_and_streams_in_batches(models):
  model, config = checkpoint.load_model(models['dae'])
  z = np.random.default_rng(1).normal(size=(10, 64)).astype(np.float32)
  f32 = dae_codec.DAECodec(model, config, steps=STEPS, batch=8)
  bf16 = dae_codec.DAECodec(model, config, steps=STEPS, batch=8, bf16=True)
  batches = list(f32.iter_decode(z, f32.seed_noise(0)))
  assert [len(b) for b in batches] == [8, 2]                 # streamed batch by batch, padding dropped
  a = np.concatenate(batches).astype(int)
  b = np.concatenate(list(bf16.iter_decode(z, bf16.seed_noise(0)))).astype(int)
  assert a.shape == b.shape and not np.array_equal(a, b)     # bf16 really computed in bf16
  assert np.abs(a - b).mean() < 0.1 * np.abs(a - a[::-1]).mean()   # ...and stays close to float32


def test_dataset_options_invert_reference_pose_and_paste_back(models, speech, tiny_dataset):
  clip = dataset.clip_ids(tiny_dataset, 'train')[0]
  ex = next(c for c in dataset.iterate_clips(tiny_dataset, 'train') if c['clip_id'] == clip)
  opts = _opts(noise=f'invert:{clip}:3', pose=f'reference:{clip}', data_dir=str(tiny_dataset),
               paste_back=ex['source'], smooth=1.0)
  pipeline = inference.DAETalkerPipeline(models['dae'], models['s2l'], opts)
  video = pipeline(loading.load_speech(speech['one']))
  assert pipeline.size == video.size == (64, 64)                             # the source's frame size
  faces = np.concatenate(list(pipeline.decode(video.info['latents'])))
  pasted = np.concatenate(list(video.frames))
  assert faces.shape == (25, 32, 32, 3) and pasted.shape == (25, 64, 64, 3)
  boxes = paste_back.paste_boxes(str(tiny_dataset), ex['source'])
  np.testing.assert_allclose(boxes[ex['start_frame']:][:ex['num_frames']], ex['box'])
  source = list(video_io.iter_frames(ex['source']))
  s = faces.shape[1]
  for k in (0, 13, 24):                                  # output frame k <- source frame k, its box
    x0, y0, x1, y1 = (float(v) for v in boxes[k])
    # tiny_dataset is prepared with crop='none': the box is the whole frame (a box inside the frame, and the
    # frame outside it left untouched, is test_paste_face_feathers_into_the_box).
    np.testing.assert_allclose(boxes[k], [0, 0, 64, 64])
    # Around the box centre, the face k scaled onto the box: frame pixel centre (px + 0.5) is face coordinate
    # (px + 0.5 - x0) / scale - 0.5, sampled bilinearly (written here, independently of paste_face's warp).
    cx, cy = int((x0 + x1) / 2), int((y0 + y1) / 2)
    for py in range(cy - 2, cy + 3):
      for px in range(cx - 2, cx + 3):
        u, v = (px + 0.5 - x0) * s / (x1 - x0) - 0.5, (py + 0.5 - y0) * s / (y1 - y0) - 0.5
        i, j = int(np.floor(v)), int(np.floor(u))
        fv, fu = v - i, u - j
        f = faces[k].astype(float)
        want = ((1 - fv) * ((1 - fu) * f[i, j] + fu * f[i, j + 1]) + fv * ((1 - fu) * f[i + 1, j] + fu * f[i + 1, j + 1]))
        assert np.abs(pasted[k, py, px] - want).max() <= 2, (k, py, px, pasted[k, py, px], want)
    # Feathered: the box centre shows the face, the frame's corner pixel stays (almost) the source.
    assert np.abs(pasted[k, 0, 0].astype(int) - source[k][0, 0]).max() <= 8
    assert np.abs(pasted[k, 32].astype(int) - source[k][32]).mean() > 10


def test_invert_noise_differs_from_seed_noise(models, tiny_dataset):
  model, config = checkpoint.load_model(models['dae'])
  dec = dae_codec.DAECodec(model, config, steps=STEPS, batch=8)
  clip = dataset.clip_ids(tiny_dataset, 'train')[0]
  img = clips_lib.reference_frame(str(tiny_dataset), clip, 0)
  x_T = dec.invert(img[None])
  assert x_T.shape == (1, 32, 32, 3) and np.isfinite(x_T).all()
  assert np.abs(x_T - dec.seed_noise(0)).mean() > 0.1


# --------------------------------------------------------------------------------------------------------
# speech2latent windows, pose, smoothing.
# --------------------------------------------------------------------------------------------------------
def test_window_starts_cover_and_overlap():
  assert speech2latent.window_starts(100, 750, 50) == [0]
  starts = speech2latent.window_starts(100, 40, 10)
  assert starts == [0, 30, 60]
  covered = np.zeros(100, int)
  for s in starts:
    covered[s:s + 40] += 1
  assert covered.min() >= 1


def test_chunked_latents_equal_single_window_where_only_one_window_covers(models):
  model, _ = checkpoint.load_model(models['s2l'])
  predict = speech2latent.LatentPredictor(model)                  # one jit: windows of a length compile once
  audio = np.random.default_rng(0).normal(0, 0.1, 100 * 640).astype(np.float32)
  full, _ = predict(audio, pose=None, chunk_frames=750)
  chunked, pose = predict(audio, pose=None, chunk_frames=40, overlap_frames=10)
  assert chunked.shape == (100, 64) and pose.shape == (100, 3)
  first, _ = predict(audio[:40 * 640], pose=None, chunk_frames=40)
  np.testing.assert_allclose(chunked[:30], first[:30], atol=1e-5)   # frames 0..29: only window 0
  # Crossfade: the blend lies between the two windows' predictions in the shared frames 30..39.
  second, _ = predict(audio[30 * 640:70 * 640], pose=None, chunk_frames=40)
  lo, hi = np.minimum(first[30:40], second[:10]), np.maximum(first[30:40], second[:10])
  assert np.all(chunked[30:40] >= lo - 1e-5) and np.all(chunked[30:40] <= hi + 1e-5)
  assert np.abs(chunked - full).mean() < np.abs(full).mean()          # same signal, other context only


def test_pose_options(models, tmp_path):
  model, _ = checkpoint.load_model(models['s2l'])
  predict = speech2latent.LatentPredictor(model)
  audio = np.random.default_rng(1).normal(0, 0.1, 30 * 640).astype(np.float32)
  zeros = np.zeros((30, 3), np.float32)
  still, _ = predict(audio, pose=zeros)
  predicted, pose_pred = predict(audio, pose=None)
  muted, _ = predict(audio, pose=None, pose_gain=0.0)
  np.testing.assert_allclose(muted, still, atol=1e-6)                 # --pose-scale 0 == still
  assert np.abs(predicted - still).mean() > 1e-3                      # the pose adaptor is used
  supplied, _ = predict(audio, pose=pose_pred)
  np.testing.assert_allclose(supplied, predicted, atol=1e-5)          # predicted == its own pose supplied
  np.save(tmp_path / 'pose.npy', np.ones((7, 3), np.float32))
  track = pose_lib.pose_track('file', str(tmp_path / 'pose.npy'), 30, '')
  assert track.shape == (30, 3)
  np.save(tmp_path / 'bad.npy', np.ones((7, 2), np.float32))
  with pytest.raises(generate.GenerateError, match=r'bad.npy: expected an \(N, 3\) array'):
    pose_lib.pose_track('file', str(tmp_path / 'bad.npy'), 30, '')


def test_smooth_latents():
  rng = np.random.default_rng(0)
  z = rng.normal(size=(200, 4)).astype(np.float32)
  s = speech2latent.smooth_latents(z, 2.0)
  assert s.shape == z.shape and np.std(np.diff(s, axis=0)) < 0.3 * np.std(np.diff(z, axis=0))
  np.testing.assert_allclose(speech2latent.smooth_latents(np.full((50, 3), 2.5, np.float32), 3.0), 2.5, atol=1e-5)
  assert speech2latent.smooth_latents(z, 0.0) is z


def test_paste_face_feathers_into_the_box():
  frame = np.full((40, 60, 3), 10, np.uint8)
  face = np.full((16, 16, 3), 200, np.uint8)
  out = paste_back.paste_face(frame, face, np.array([20, 4, 52, 36], np.float32))   # 32 px box
  assert out[20, 36].tolist() == [200, 200, 200]                                  # box centre
  assert out[20, 5].tolist() == [10, 10, 10] and out[2, 36].tolist() == [10, 10, 10]  # outside
  assert 10 < out[20, 21, 0] < 200                                                # feathered edge
  partly_outside = paste_back.paste_face(frame, face, np.array([44, -10, 76, 22], np.float32))
  assert partly_outside.shape == frame.shape and partly_outside[5, 59, 0] > 100


# --------------------------------------------------------------------------------------------------------
# Bad input: one-line error, exit 1, no output file.
# --------------------------------------------------------------------------------------------------------
def _bad_inputs(tmp: pathlib.Path, speech: dict, models: dict, dataset_dir: str):
  text = tmp / 'notes.txt'
  text.write_text('not audio at all\n')
  empty = tmp / 'empty.wav'
  sf.write(str(empty), np.zeros(0, np.float32), 16000)
  short = tmp / 'short.wav'
  sf.write(str(short), np.zeros(1600, np.float32), 16000)              # 0.1 s
  plain = tmp / 'plain_dir'
  plain.mkdir(exist_ok=True)
  good = dict(audio=speech['one'], dae=models['dae'], s2l=models['s2l'])
  return {
      'missing audio': (dict(good, audio=str(tmp / 'nope.wav')), 'nope.wav: no such file'),
      'not audio': (dict(good, audio=str(text)), 'notes.txt: not a readable audio file'),
      'empty audio': (dict(good, audio=str(empty)), 'empty.wav: audio stream is empty'),
      'too short': (dict(good, audio=str(short)), 'audio is 0.10 s long; generation needs at least 0.5 s'),
      'missing dae': (dict(good, dae=str(tmp / 'nodir')), 'no such directory'),
      'not a workdir': (dict(good, dae=str(plain)), 'not a training workdir'),
      'wrong task dae': (dict(good, dae=models['s2l']), "checkpoint of task 'speech2latent', expected dae"),
      'wrong task s2l': (dict(good, s2l=models['dae']), "checkpoint of task 'dae', expected"),
      'invert without data': (dict(good, extra=['--noise', 'invert:x:0']), 'needs --data'),
      'bad noise': (dict(good, extra=['--noise', 'gauss']), "--noise='gauss': expected seed:N"),
      'bad pose': (dict(good, extra=['--pose', 'wobble']), "--pose='wobble': expected"),
      'unknown clip': (dict(good, extra=['--pose', 'reference:no_such_clip', '--data', dataset_dir]),
                       "no clip 'no_such_clip'"),
      'bad steps': (dict(good, extra=['--steps', '999']), '--steps=999: ddim_timesteps'),
      'bad guidance': (dict(good, extra=['--guidance', '0']), '--guidance=0.0: must be in (0, 10]'),
  }


_BAD_INPUTS = ('missing audio', 'not audio', 'empty audio', 'too short', 'missing dae', 'not a workdir',
               'wrong task dae', 'wrong task s2l', 'invert without data', 'bad noise', 'bad pose', 'unknown clip',
               'bad steps', 'bad guidance')


def test_bad_input_cases_are_all_parametrized(models, speech, tiny_dataset, tmp_path):
  assert tuple(_bad_inputs(tmp_path, speech, models, str(tiny_dataset))) == _BAD_INPUTS


@pytest.mark.parametrize('name', _BAD_INPUTS, ids=[n.replace(' ', '_') for n in _BAD_INPUTS])
def test_bad_inputs_fail_cleanly_without_output(models, speech, tiny_dataset, tmp_path, capsys, name):
  case, message = _bad_inputs(tmp_path, speech, models, str(tiny_dataset))[name]
  out = tmp_path / 'out' / f'{name.replace(" ", "_")}.mp4'
  rc, _, stderr = _run_main(['--audio', case['audio'], '--dae', case['dae'], '--s2l', case['s2l'],
                             '--out', str(out), '--steps', str(STEPS), *case.get('extra', [])], capsys)
  assert rc == 1, name
  lines = stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: ') and message in lines[0], (name, stderr)
  assert 'Traceback' not in stderr
  assert not out.exists(), name
  assert not (out.parent.exists() and any(out.parent.iterdir())), name   # no temp files either


def test_demo_generates_side_by_side_and_reports_lip_sync(models, synth_videos, tiny_dataset, tiny_latents,
                                                         tmp_path, capsys):
  """`python -m daetalker_jax.demo` with its training stages already done (the session's tiny dataset,
  latents and random models linked in, so every stage but generation is skipped): it writes both mp4s
  and prints the lip-sync numbers."""
  from daetalker_jax import demo  # pylint: disable=g-import-not-at-top
  out = tmp_path / 'demo'
  out.mkdir()
  for name, target in (('videos', synth_videos), ('data', tiny_dataset), ('dae', models['dae']),
                       ('s2l', models['s2l'])):
    (out / name).symlink_to(target)
  clips = len(list(pathlib.Path(synth_videos).glob('*.mp4')))
  assert demo.main(['--out', str(out), '--clips', str(clips), '--dae-variant', 'tiny', '--s2l-variant', 'tiny',
                    '--dae-steps', '0', '--s2l-steps', '0', '--sample-steps', '2']) == 0
  printed = capsys.readouterr().out
  for stage in ('1 synthface', '2 prepare', '3 train DAE', '4 extract latents', '5 train speech2latent'):
    assert f'[demo] {stage}: already done, skipped' in printed
  assert 'strict mouth r:' in printed and 'open-mouth recall:' in printed and 'soft r (secondary):' in printed
  assert printed.index('strict mouth r:') < printed.index('soft r (secondary):')
  assert (out / 'mouths.png').is_file()
  clip = next(iter(dataset.iterate_clips(tiny_dataset, 'test')))
  n = len(clip['images'])
  generated = np.stack(list(video_io.read_video(out / 'generated.mp4').frames))
  side = video_io.read_video(out / 'side_by_side.mp4')
  assert generated.shape == (n, 32, 32, 3) and side.info.has_audio
  assert np.stack(list(side.frames)).shape == (n, 32, 64, 3)
  # A folder whose DAE was trained with other settings is not silently reused.
  assert demo.main(['--out', str(out), '--clips', str(clips), '--dae-variant', 'demo', '--dae-steps', '0']) == 2
  assert 'trained with other model settings' in capsys.readouterr().err


def test_demo_inverts_a_closed_mouth_frontal_frame(tiny_dataset):
  """`demo --noise invert` takes its one shared x_T from a training frame with a closed mouth, near frontal."""
  from daetalker_jax import demo  # pylint: disable=g-import-not-at-top
  from data_prep.synthface_render import strict_mouth  # pylint: disable=g-import-not-at-top
  clip_id, k = demo.neutral_frame(tiny_dataset)
  clips = {c['clip_id']: c for c in dataset.iterate_clips(tiny_dataset, 'train')}
  assert strict_mouth(clips[clip_id]['images'][k])['area'] == 0
  closed = [(np.abs(c['pose'][i]).sum(), cid) for cid, c in clips.items() for i in range(len(c['images']))
            if strict_mouth(c['images'][i])['area'] == 0]
  assert np.abs(clips[clip_id]['pose'][k]).sum() == min(closed)[0]


def test_demo_reuses_a_dae_across_sampling_only_fields(models):
  """A DAE folder is reused when its config differs from the demo's only in how it samples (guidance); a
  training field still refuses it."""
  from daetalker_jax import demo
  want = dae_config.get_config('variant=tiny')
  want.diffusion.guidance = 3.0
  assert demo._has_checkpoint(pathlib.Path(models['dae']), 0, want)
  want.diffusion.prediction = 'v' if want.diffusion.prediction == 'eps' else 'eps'
  with pytest.raises(demo.DemoError, match='trained with other diffusion settings'):
    demo._has_checkpoint(pathlib.Path(models['dae']), 0, want)
  # A field newer than the checkpoint: it was trained with the field's default, so it is reused only when the
  # demo wants that default, and refused where the default is unknown.
  want, defaults = dae_config.get_config('variant=tiny'), dae_config.get_config('variant=tiny')
  for c in (want, defaults):
    with c.model.unlocked():
      c.model.newer_field = 1.0
  with pytest.raises(demo.DemoError, match='trained with other model settings'):
    demo._has_checkpoint(pathlib.Path(models['dae']), 0, want)
  assert demo._has_checkpoint(pathlib.Path(models['dae']), 0, want, defaults)
  want.model.newer_field = 2.0
  with pytest.raises(demo.DemoError, match='trained with other model settings'):
    demo._has_checkpoint(pathlib.Path(models['dae']), 0, want, defaults)


def test_demo_presets_and_guidance_flags(tmp_path, capsys):
  """The quality preset generates unguided (its converged DAE opens the mouths; guidance 2 overshot their colour:
  docs/RESULTS.md); the default takes the DAE config's; --guidance is refused for difftalk before any work."""
  from daetalker_jax import demo
  assert demo.PRESETS['quality']['guidance'] == 1.0 and demo.PRESETS['default']['guidance'] is None
  with pytest.raises(SystemExit) as e:
    demo.main(['--method', 'difftalk', '--guidance', '2', '--out', str(tmp_path / 'dt')])
  assert e.value.code == 2 and '--guidance is for --method dae_talker and landmark' in capsys.readouterr().err
  assert not (tmp_path / 'dt').exists()
  for method in ('difftalk', 'dae_talker'):   # --motion-scale is landmark diffusion's, refused before any work
    with pytest.raises(SystemExit) as e:
      demo.main(['--method', method, '--motion-scale', '1.3', '--out', str(tmp_path / method)])
    assert e.value.code == 2 and '--motion-scale is for --method landmark' in capsys.readouterr().err
    assert not (tmp_path / method).exists()
