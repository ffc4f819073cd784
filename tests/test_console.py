"""The terminal: progress rate/ETA leave evals out; library logs go to the work folder's log file."""

import logging
import types

from absl import logging as absl_logging
import pytest

from daetalker_jax import console


class _Clock:
  """A fake perf_counter that moves only when told: the rate and ETA are exact, whatever the machine's load."""

  def __init__(self):
    self.now = 1000.0

  def __call__(self):
    return self.now

  def sleep(self, seconds):
    self.now += seconds


def test_progress_rate_leaves_pauses_out(capsys, monkeypatch):
  clock = _Clock()
  monkeypatch.setattr(console, 'time', types.SimpleNamespace(perf_counter=clock))
  p = console.Progress(100, desc='t')
  clock.sleep(5.0)                 # the first step (compilation): not counted
  p.update(1)
  for k in range(2, 6):
    clock.sleep(0.02)
    p.update(k)
  assert p.steps_per_sec == pytest.approx(50.0)    # 4 steps in 80 ms
  p.pause()
  clock.sleep(0.3)                 # an "eval" as long as 15 steps
  p.resume()
  clock.sleep(0.02)
  p.update(6)
  assert p.steps_per_sec == pytest.approx(50.0)    # 5 steps in 100 ms of training; the eval left out
  assert p.eta_seconds == pytest.approx(94 / 50.0)
  p.close()
  assert '6/100' in capsys.readouterr().out
  # Without the pause the eval's time counts: the rate drops to 5 / 0.4 s.
  q = console.Progress(100, desc='t')
  q.update(1)
  clock.sleep(0.1)
  q.update(2)
  clock.sleep(0.3)
  q.update(3)
  assert q.steps_per_sec == pytest.approx(2 / 0.4)
  q.close()


def test_setup_sends_library_logs_to_the_workdir(tmp_path, capsys):
  path = console.setup(tmp_path)
  try:
    absl_logging.info('chatter that belongs in the file')
    logging.getLogger('orbax').info('orbax chatter')
    absl_logging.error('an error the user must see')
    err = capsys.readouterr().err
    assert 'chatter' not in err and 'an error the user must see' in err
    text = open(path).read()
    assert 'chatter that belongs in the file' in text and 'orbax chatter' in text
    console.setup(tmp_path / 'v', verbose=True)
    absl_logging.info('now on stderr too')
    assert "now on stderr too" in capsys.readouterr().err
  finally:
    root = logging.getLogger()
    for h in (console._file_handler, console._console_handler):  # pylint: disable=protected-access
      root.removeHandler(h)
    console._file_handler = console._console_handler = None  # pylint: disable=protected-access
