"""`python -m tests._main_with_hooks FLAGS` is `python -m daetalker_jax.main FLAGS` with test hooks, so that the
end-to-end tests can interrupt a run at a known point instead of racing it.

DAETALKER_TEST_KILL_AT_SAVE=N: when the training loop asks to save step N, the process first waits until the
  earlier checkpoints are on disk, then SIGKILLs itself: a crash between two checkpoints, with step N's work
  done and lost (the resumed run must redo steps after the last checkpoint).
DAETALKER_TEST_TERM_AT_STEP=N: the process sends itself SIGTERM when step N's batch is drawn (before the step
  runs), as a scheduler would mid-step.
"""

import os
import signal
import sys

from absl import app
import jax

from daetalker_jax import checkpoint
from daetalker_jax import main


def _install_hooks() -> None:
  kill_at = os.environ.get('DAETALKER_TEST_KILL_AT_SAVE')
  if kill_at:
    save = checkpoint.Checkpointer.save

    def save_or_die(self, step, *args, **kwargs):
      if step == int(kill_at):
        self.wait_until_finished()
        sys.stderr.write(f'[hooks] SIGKILL at the save of step {step}\n')
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)
      return save(self, step, *args, **kwargs)
    checkpoint.Checkpointer.save = save_or_die

  term_at = os.environ.get('DAETALKER_TEST_TERM_AT_STEP')
  if term_at:
    from daetalker_jax import train  # pylint: disable=g-import-not-at-top
    prefetch = train.prefetch_to_mesh

    def prefetch_then_term(*args, **kwargs):
      for n, batch in enumerate(prefetch(*args, **kwargs)):
        if n == int(term_at):          # (counted from the run's first step: a fresh run's step n)
          os.kill(os.getpid(), signal.SIGTERM)
        yield batch
    train.prefetch_to_mesh = prefetch_then_term


if __name__ == '__main__':
  _install_hooks()
  jax.config.config_with_absl()
  app.run(main.main)
