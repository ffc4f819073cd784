"""Evaluation (daetalker_jax/evaluate.py): metric known cases on real synthface clips, and the whole
command on tiny random-weight checkpoints (tests/_checkpoints.py) over the `tiny_dataset` fixture."""

import json
import math

import numpy as np
import pytest
from PIL import Image

from configs import dae as dae_config
from configs import s2l as s2l_config
from daetalker_jax import eval_metrics as em
from daetalker_jax import evaluate
from daetalker_jax import inference
from daetalker_jax.evaluation import video as video_lib
from daetalker_jax.data import dataset
from tests import _checkpoints


# Its module fixtures are built once: pytest-xdist runs the whole module on one worker.
pytestmark = pytest.mark.xdist_group('evaluate')


@pytest.fixture(scope='module')
def test_clip(tiny_dataset) -> dict:
  return next(dataset.iterate_clips(tiny_dataset, 'test'))


@pytest.fixture(scope='module')
def models(tiny_dataset, tmp_path_factory) -> dict[str, str]:
  """Tiny random DAE (32 px, 64-d latents) and speech2latent checkpoints (no training: seconds, not minutes)."""
  root = tmp_path_factory.mktemp('eval_models')
  dc = dae_config.get_config('variant=tiny')
  dc.data.data_dir = str(tiny_dataset)
  dae = str(_checkpoints.save_random_checkpoint(dc, root / 'dae', {'data_dir': str(tiny_dataset)}, seed=0))
  sc = s2l_config.get_config('variant=tiny')
  sc.data.data_dir = str(tiny_dataset)
  rng = np.random.default_rng(0)
  stats = {'latents': 'dae', 'latent_mean': rng.normal(0, 0.5, 64).tolist(),
           'latent_std': rng.uniform(0.5, 2.0, 64).tolist(), 'normalize_latents': True,
           'pose_scale': float(sc.loss.pose_scale)}
  return {'dae': dae, 's2l': str(_checkpoints.save_random_checkpoint(sc, root / 's2l', stats, seed=1))}


def test_identical_videos_are_perfect(test_clip):
  real = test_clip['images']
  m = video_lib.video_metrics(real, real.copy(), test_clip['audio'], kind='synthface')
  assert math.isinf(m['psnr']) and m['psnr'] > 0
  assert m['ssim'] == pytest.approx(1.0, abs=1e-5)
  assert m['lip_sync_r'] == pytest.approx(1.0, abs=1e-9)
  assert m['lip_sync_lag'] == 0
  assert m['jitter_ratio'] == pytest.approx(1.0)
  # Roll from the irises: the same frames give 0 where any frame has a measurable roll, else NaN (none measured).
  rolls = np.array([em._default_measure_frame()(f)['roll'] for f in real])  # pylint: disable=protected-access
  if np.isfinite(rolls).any():
    assert m['roll_measured_mae_deg'] == 0.0
  else:
    assert math.isnan(m['roll_measured_mae_deg'])
  assert m['mouth_closed_in_silence'] == m['mouth_closed_in_silence_real']
  # The strict headline (docs/EVALUATION.md) on the prepared 32 px JPEG crops.
  assert m['strict_r'] == pytest.approx(1.0) and m['strict_best_lag'] == 0
  assert m['num_open_frames'] > 0 and m['open_recall'] == 1.0 and m['amplitude_ratio'] == 1.0
  assert m['strict_closed_in_silence'] == m['strict_closed_in_silence_real']
  # Strict reading of the real crops (h264, 32 px JPEG) against the renderer's exact mouth_open.
  truth = evaluate.synthface_truth(test_clip['source'], test_clip['start_frame'], len(real))
  assert em.pearson(em.strict_mouth_series(real)['area'], truth) > 0.8


def test_video_shifted_against_its_audio_scores_lower(test_clip):
  real = test_clip['images']                                             # (N, 32, 32, 3) synthface crops
  shifted = np.concatenate([real[:1].repeat(3, 0), real[:-3]])           # the video 3 frames late
  aligned = video_lib.video_metrics(real, real, test_clip['audio'], kind='synthface')
  late = video_lib.video_metrics(real, shifted, test_clip['audio'], kind='synthface')
  assert late['lip_sync_r'] < aligned['lip_sync_r'] - 0.2, (late['lip_sync_r'], aligned['lip_sync_r'])
  assert late['lip_sync_lag'] == 3                                       # the lag search finds the delay
  assert late['lip_sync_r_best_lag'] > late['lip_sync_r']
  assert late['strict_r'] < aligned['strict_r'] - 0.2 and late['strict_best_lag'] == 2   # searched in +-2
  assert late['ssim'] < 1.0


def test_landmark_metrics_known_case():
  rng = np.random.default_rng(0)
  lm = rng.uniform(5, 27, (10, 68, 2)).astype(np.float32)
  lm[:, 36], lm[:, 45] = (8, 12), (24, 12)                               # inter-ocular distance 16 px
  frames = rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)
  audio = np.zeros(10 * 640, np.float32)
  same = video_lib.video_metrics(frames, frames, audio, kind='landmarks', real_landmarks=lm, gen_landmarks=lm)
  assert same['mouth_landmark_distance'] == 0.0 and same['lip_sync_r'] == pytest.approx(1.0)
  moved = lm.copy()
  moved[:, 48:68] += (1.6, 0.0)                                          # mouth 0.1 IOD to the right
  m = video_lib.video_metrics(frames, frames, audio, kind='landmarks', real_landmarks=lm, gen_landmarks=moved)
  assert m['mouth_landmark_distance'] == pytest.approx(0.1, rel=1e-5)


def test_evaluate_end_to_end(tiny_dataset, models, tmp_path, capsys):
  out = tmp_path / 'results.json'
  res = evaluate.evaluate(models['dae'], models['s2l'], str(tiny_dataset), 'test', max_clips=1,
                          max_frames=16, steps=3, batch=8, out=str(out))
  text = capsys.readouterr().out
  assert 'PSNR (dB)' in text and 'unavailable (no weights)' in text and 'DAE reconstruction' in text
  assert 'strict r (lag 0)' in text and 'open-mouth recall' in text and 'soft r (secondary)' in text
  assert text.index('strict r (lag 0)') < text.index('PSNR (dB)') < text.index('soft r (secondary)')

  saved = json.loads(out.read_text())                                    # strict JSON (no NaN literals)
  assert saved['num_clips'] == 1 and saved['num_frames'] == 16
  assert saved['lip_sync_kind'] == 'synthface'
  assert saved['syncnet'] == evaluate.UNAVAILABLE_SYNCNET
  assert saved['decoder_compiles'] == 1                                  # both latent tracks, one program
  # The numbers, recomputed here: the same pipeline's frames and latents for the clip's first 16 frames, and
  # PSNR / latent error / pose error written out in numpy.
  clip = next(dataset.iterate_clips(tiny_dataset, 'test'))
  real, audio, pose = clip['images'][:16], clip['audio'][:16 * 640].astype(np.float32) / 32768, clip['pose'][:16]
  pipe = inference.load_pipeline('dae_talker', dae=models['dae'], s2l=models['s2l'],
                                 options=inference.Options(steps=3, batch=8, noise='seed:0', data_dir=str(tiny_dataset)))
  z_real = (pipe.codec.encode(real) - pipe.mean) / pipe.std
  psnr = lambda a, b: np.mean([10 * np.log10(255.0 ** 2 / np.mean((x.astype(float) - y) ** 2)) for x, y in zip(a, b)])
  for group, given in (('gt_pose', pose.astype(np.float32)), ('pred_pose', None)):
    m = saved['summary'][group]
    latent, pose_pred = pipe.latents(audio, given)
    frames = np.concatenate(list(pipe.decode(latent)))
    assert m['psnr'] == pytest.approx(psnr(frames, real), abs=1e-3), group
    assert m['latent_error'] == pytest.approx(np.abs(latent - z_real).mean(), rel=1e-4)        # l1 (tiny s2l)
    assert m['latent_error_mean_baseline'] == pytest.approx(np.abs(z_real).mean(), rel=1e-4)
    assert m['pose_mae_deg'] == pytest.approx(np.abs(pose_pred - pose).mean(), rel=1e-4)
    assert math.isfinite(m['ssim']) and m['ssim'] < 0.9                # random weights: not the face
    assert math.isfinite(m['jitter_ratio']) and m['jitter_ratio'] > 0
  # Inverting a frame then decoding it reconstructs it better than decoding from unrelated noise.
  d = saved['summary']['dae_recon']
  assert d['psnr_inverted'] > d['psnr_shared_noise']
  assert saved['summary']['real']['lip_sync_r_truth'] > 0.8             # measure_frame reads real mouths
  assert res['summary']['gt_pose']['psnr'] == saved['summary']['gt_pose']['psnr']   # returned = saved

  sheet = np.asarray(Image.open(saved['contact_sheet']))
  assert sheet.shape[0] == 3 * (32 + 2) + 2                              # real | GT pose | predicted pose
  assert sheet.shape[1] >= 6 * 32
  # Strict mouth metrics are reported for both tracks, with the picture behind them.
  for group in ('gt_pose', 'pred_pose'):
    m = saved['summary'][group]
    assert 'strict_r' in m and 'teeth_recall' in m and 'strict_closed_in_silence' in m
    if m['num_open_frames']:
      assert 0 <= m['open_recall'] <= 1 and m['amplitude_ratio'] >= 0
    else:                                                                # no real frame open: null, not 0
      assert m['open_recall'] is None and m['amplitude_ratio'] is None
  strip = tmp_path / f"mouths_{saved['clips'][0]['clip_id']}.png"
  assert saved['clips'][0]['mouth_strip'] == str(strip)
  assert np.asarray(Image.open(strip)).shape == (3 * (32 + 2) + 2, 8 * (32 + 2) + 2, 3)   # GT | pred | real
  assert saved['summary']['real']['strict_r_truth'] > 0                 # (16 frames: see the next test)


def test_bad_inputs_give_one_line_errors(tiny_dataset, models, tmp_path, capsys):
  rc = evaluate.main(['--dae', models['dae'], '--s2l', str(tmp_path / 'nope'), '--data',
                      str(tiny_dataset), '--out', str(tmp_path / 'r.json')])
  err = capsys.readouterr().err
  assert rc == 1 and 'nope' in err and err.count('\n') == 1
  rc = evaluate.main(['--dae', models['dae'], '--s2l', models['s2l'], '--data',
                      str(tmp_path), '--out', str(tmp_path / 'r.json')])
  assert rc == 1 and 'dataset_info.json' in capsys.readouterr().err
  assert not (tmp_path / 'r.json').exists()
