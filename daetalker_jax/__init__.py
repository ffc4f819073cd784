"""daetalker_jax: speech-driven talking-face video with diffusion models, in JAX/Flax NNX."""

from daetalker_jax import _jax_compat  # noqa: F401  (quadratic tracing in jax 0.10: see the module)
