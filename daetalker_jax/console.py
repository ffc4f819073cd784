"""What a person sees in the terminal: stage lines, progress bars with ETA, summaries.

Library chatter (absl/orbax INFO lines, TensorFlow deprecation warnings, Python warnings) goes to a log file
in the work folder; `setup(workdir, verbose=True)` brings it back to stderr. Errors always reach stderr.
"""

from __future__ import annotations

import logging
import os
import sys
import time

from absl import logging as absl_logging
import tqdm

LOG_NAME = 'log.txt'
_file_handler: logging.Handler | None = None
_console_handler: logging.Handler | None = None


def _console_handlers(root: logging.Logger) -> list[logging.Handler]:
  """The root logger's handlers that write to the terminal (absl's, basicConfig's, ours)."""
  terminal = (sys.stderr, sys.stdout, sys.__stderr__, sys.__stdout__)
  absl_handler = absl_logging.get_absl_handler()
  return [h for h in root.handlers if h is absl_handler or h is _console_handler or
          (type(h) is logging.StreamHandler and h.stream in terminal)]  # pylint: disable=unidiomatic-typecheck


def setup(workdir: str | os.PathLike, *, verbose: bool = False) -> str:
  """Sends every log record (INFO and up) to WORKDIR/log.txt, and to the terminal only errors unless `verbose`.

  Returns the log file's path. Calling it again with another folder moves the file handler there.
  """
  global _file_handler, _console_handler
  if not verbose:   # TensorFlow's C++ INFO/WARNING lines; read when TensorFlow loads (so before it is imported)
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  os.makedirs(workdir, exist_ok=True)
  process = os.environ.get('JAX_PROCESS_ID', '0')     # multi-process runs: one file per process
  path = os.path.join(os.fspath(workdir), LOG_NAME if process == '0' else f'log.{process}.txt')
  root = logging.getLogger()
  if _file_handler is not None:
    root.removeHandler(_file_handler)
    _file_handler.close()
  _file_handler = logging.FileHandler(path)
  _file_handler.setLevel(logging.INFO)
  _file_handler.setFormatter(logging.Formatter('%(asctime)s %(levelname)s %(name)s: %(message)s'))
  root.addHandler(_file_handler)
  if _console_handler is not None:
    root.removeHandler(_console_handler)
  handlers = _console_handlers(root)
  if not handlers:                                     # nothing prints log records yet: errors must show
    _console_handler = logging.StreamHandler(sys.stderr)
    _console_handler.setFormatter(logging.Formatter('%(levelname)s %(name)s: %(message)s'))
    root.addHandler(_console_handler)
    handlers = [_console_handler]
  try:  # TensorFlow's logger has a stderr handler of its own (deprecation notices); make it now, then quiet it
    from tensorflow.python.platform import tf_logging  # pylint: disable=g-import-not-at-top
    handlers += [h for h in tf_logging.get_logger().handlers if isinstance(h, logging.StreamHandler)]
  except ImportError:
    pass
  for h in handlers:
    h.setLevel(logging.INFO if verbose else logging.ERROR)
  root.setLevel(logging.INFO)
  absl_logging.set_verbosity(absl_logging.INFO)
  logging.captureWarnings(True)                        # warnings.warn(...) → the 'py.warnings' logger
  return path


def stage(message: str) -> None:
  """A stage line, e.g. '[demo] 3 train DAE ...'."""
  print(message, file=sys.stdout, flush=True)


class Progress:
  """A progress bar over training steps whose rate and ETA count only the time spent training.

  `pause()` … `resume()` brackets evaluations and checkpoints: their time is left out of the rate, so the
  line right after an eval does not read '0.0 steps/s, ETA 8h'. `postfix` shows the latest metrics.
  """

  def __init__(self, total: int, initial: int = 0, *, desc: str = 'train', enabled: bool = True):
    self.total, self.done = total, initial
    self._busy = 0.0                        # seconds spent in steps since the start
    self._t = time.perf_counter()
    self._paused_at: float | None = None
    self._start = initial
    self._warm = False                      # the first step (compilation) is left out of the rate
    self._bar = tqdm.tqdm(total=total, initial=initial, desc=desc, unit='step', dynamic_ncols=True,
                          disable=not enabled, file=sys.stdout, mininterval=1.0,
                          bar_format='{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]')

  @property
  def steps_per_sec(self) -> float:
    return (self.done - self._start) / self._busy if self._busy > 0 else float('nan')

  @property
  def eta_seconds(self) -> float:
    r = self.steps_per_sec
    return (self.total - self.done) / r if r and r == r else float('nan')

  def update(self, done: int, **metrics: float) -> None:
    now = time.perf_counter()
    if not self._warm:
      self._warm, self._start = True, done
    elif self._paused_at is None:
      self._busy += now - self._t
    self._t = now
    self._bar.update(done - self.done)
    self.done = done
    shown = {k: f'{v:.4g}' for k, v in metrics.items()}
    if self.done > self._start:
      shown['steps/s'] = f'{self.steps_per_sec:.2f}'
      shown['ETA'] = _duration(self.eta_seconds)
    if metrics or self.done > self._start:
      self._bar.set_postfix(shown, refresh=False)

  def pause(self) -> None:
    now = time.perf_counter()
    self._busy += now - self._t
    self._paused_at = self._t = now

  def resume(self) -> None:
    self._paused_at, self._t = None, time.perf_counter()   # (the bar's elapsed time stays wall time)

  def close(self) -> None:
    self._bar.close()


def _duration(seconds: float) -> str:
  if seconds != seconds:
    return '?'
  m, s = divmod(int(round(seconds)), 60)
  h, m = divmod(m, 60)
  return f'{h}h{m:02d}m' if h else f'{m}m{s:02d}s'
