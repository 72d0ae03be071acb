"""Studies on disk; kept as the historical entry point: everything lives in :mod:`manifold_jax.study`."""

from manifold_jax.study import *  # noqa: F403
from manifold_jax.study import __all__  # noqa: F401
