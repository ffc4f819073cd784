"""The terminal: progress rate/ETA leave evals out; library logs go to the work folder's log file."""

import logging
import time

from absl import logging as absl_logging

from daetalker_jax import console


def test_progress_rate_leaves_pauses_out(capsys):
  p = console.Progress(100, desc='t')
  p.update(1)                      # the first step (compilation) is not counted
  for k in range(2, 6):
    time.sleep(0.02)
    p.update(k)
  rate = p.steps_per_sec
  assert 20 < rate < 60, rate      # ~50 steps/s (sleep 20 ms each)
  p.pause()
  time.sleep(0.3)                  # an "eval" as long as 15 steps
  p.resume()
  time.sleep(0.02)
  p.update(6)
  assert p.steps_per_sec > 0.8 * rate, (p.steps_per_sec, rate)
  assert p.eta_seconds < 94 / (0.8 * rate)
  p.close()
  assert '6/100' in capsys.readouterr().out


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
