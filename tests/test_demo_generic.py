"""The DiffTalk and landmark demos (demo_difftalk.run, demo_landmark.run) on a tiny preset: their stages run in
order into one folder, and a second run skips every finished stage: a lost stage is the only one run again.

The data stages are real (synthface identities, prepare split by identity); each training stage is replaced by
a random checkpoint of the exact config the demo asks for, saved at the step count it asks for (tests/
_checkpoints.py), so that the resume logic (demo._has_checkpoint) and the generation and scoring that follow
run on real checkpoints without minutes of training.
"""

import pathlib
import shutil

import pytest

from daetalker_jax import demo
from daetalker_jax import demo_difftalk
from daetalker_jax import demo_landmark
from daetalker_jax import tasks
from tests import _checkpoints

pytestmark = pytest.mark.xdist_group('demo_generic')

TINY = dict(identities=3, clips=3, seconds=1.0, video_size=64, image_size=64, sample_steps=1, heldout_clips=1)


@pytest.fixture
def trained(monkeypatch):
  """demo._train replaced by a random checkpoint at the requested step; returns the tasks trained, in order."""
  calls = []

  def fake_train(config, data_dir, workdir, steps, batch_size, *, evaluate=True):
    del batch_size, evaluate
    config.data.data_dir = str(data_dir)
    calls.append(config.task)
    stats = tasks.get_task(config.task).data_stats(config)
    _checkpoints.save_random_checkpoint(config, pathlib.Path(workdir), stats, seed=len(calls), step=steps)
  monkeypatch.setattr(demo, '_train', fake_train)
  return calls


def _started(out: str) -> list[str]:
  return [line[len('[demo] '):-len(' ...')] for line in out.splitlines()
          if line.startswith('[demo] ') and line.endswith(' ...')]


def _skipped(out: str) -> list[str]:
  return [line[len('[demo] '):-len(': already done, skipped')] for line in out.splitlines()
          if line.endswith(': already done, skipped')]


@pytest.mark.parametrize('method', ['difftalk', 'landmark'])
def test_generic_demo_stage_order_and_resume(method, trained, tmp_path, capsys):
  if method == 'difftalk':
    run = lambda: demo_difftalk.run(str(tmp_path), **TINY, ae_steps=2, dt_steps=2)
    stages = ['1 synthface', '2 prepare', '3 train autoencoder', '4 train DiffTalk']
    trains = ['autoencoder', 'difftalk']
    lost = ('difftalk', '4 train DiffTalk', 'difftalk')
  else:
    run = lambda: demo_landmark.run(str(tmp_path), **TINY, ae_steps=2, a_steps=2, b_steps=2, e2e_steps=2)
    stages = ['1 synthface', '2 prepare', '3 train autoencoder', '4 train Stage A (landmarks)',
              '5 train Stage B (renderer)', '6 train end to end']
    trains = ['autoencoder', 'landmarks', 'talkformer', 'talkformer']
    lost = ('talkformer', '6 train end to end', 'talkformer')
  res = run()
  out = capsys.readouterr().out
  assert _started(out) == stages and trained == trains
  assert set(res['timings']) >= set(stages)
  assert (tmp_path / 'videos').is_dir() and (tmp_path / 'data' / 'dataset_info.json').is_file()
  # A second run, with one stage's folder gone: that stage is the only one trained again, every other one is
  # found done and skipped, and the run still generates and scores.
  folder, stage, task = lost
  shutil.rmtree(tmp_path / folder)
  trained.clear()
  res = run()
  out = capsys.readouterr().out
  assert _started(out) == [stage] and trained == [task]
  assert _skipped(out) == [s for s in stages if s != stage]
  assert any('generate' in name for name in res['timings'])   # it generated and scored again
