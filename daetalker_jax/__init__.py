"""daetalker_jax: speech-driven talking-face video with diffusion models, in JAX/Flax NNX."""

import glob
import os


def _cpu_host_with_libtpu() -> bool:
  """Whether JAX would probe a TPU that is not there: libtpu installed (`make install` brings it for the pod plan,
  daetalker_jax/plan.py), no TPU or NVIDIA device files, and no backend chosen (JAX_PLATFORMS)."""
  if os.environ.get('JAX_PLATFORMS') or os.environ.get('TPU_ACCELERATOR_TYPE'):
    return False
  if glob.glob('/dev/accel*') or glob.glob('/dev/vfio/[0-9]*') or glob.glob('/dev/nvidia[0-9]*'):
    return False
  try:
    import importlib.util  # pylint: disable=g-import-not-at-top
    return importlib.util.find_spec('libtpu') is not None
  except (ImportError, ValueError):
    return False


# On a CPU host with libtpu, JAX's TPU probe prints a screen of "could not determine TPU accelerator type" lines
# and then falls back to the CPU: choose the CPU at once instead (the pod plan still compiles for TPU topologies).
AUTO_CPU = _cpu_host_with_libtpu()   # the CPU was chosen here, not by the user (main.cpu_requested tells them apart)
if AUTO_CPU:
  os.environ['JAX_PLATFORMS'] = 'cpu'

from daetalker_jax import _jax_compat  # noqa: E402,F401  (quadratic tracing in jax 0.10: see the module)
