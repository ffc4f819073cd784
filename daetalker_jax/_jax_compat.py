"""A workaround for quadratic tracing in the pinned jax (0.10.x) under flax NNX; imported by the package.

`Tracer.sharding` raises AttributeError (so that hasattr/getattr probes work) with a message that walks every
equation traced so far. flax NNX's `Variable.set_value` probes `value.sharding` on every assignment, among them
each RNG-stream counter update of every parameter initialiser, so building a model under `jit`/`eval_shape`
costs O(parameters²): 8 s of the 8.7 s it took to trace the demo TalkFormer model (600 initialisers), more for
the full-size ones. Upstream: jax-ml/jax#40041. The replacement raises the same AttributeError without the walk;
nothing else changes. Newer jax without the walk keeps its own property (the version check).
"""

import jax
from jax._src import core


def _sharding(self):
  raise AttributeError(f"The 'sharding' attribute is not available on a tracer ({type(self).__name__}): it is "
                       'only defined on concrete arrays.')


if jax.__version_info__[:2] == (0, 10):
  core.Tracer.sharding = property(_sharding)
