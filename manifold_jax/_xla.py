"""``jit`` with the compiler options every manifold-jax program is built with.

On CPU, XLA (seen with jaxlib 0.10) hands dots, element-wise ops and reductions to
YNNPACK fusions. For attention those run up to 5x slower than XLA's own code (one
attention layer of the MNIST ViT at batch 16: 53 ms against 11 ms), their reduction
fusion computes the batched Jacobian of ``x * rsqrt(var + eps)`` wrongly
(``benchmarks/repro_xla_layernorm.py``: relative error 0.18 with it, 1e-7 without), and
restricted to dots and element-wise ops they failed to compile the MNIST ViT's Jacobian
("unsupported layout in YNN fusion"). So our programs switch the fusion off, through
``jax.jit(..., compiler_options=...)``: nothing global changes, the caller's own programs
keep XLA's defaults. What YNNPACK did well, products with a transposed weight matrix,
our layers get back by storing kernel^T (``models.layers.linear``).

The option is only passed where the installed jaxlib knows it (checked once by compiling
a one-line program), and never where the caller chose for themselves, by naming it in
``XLA_FLAGS`` or by setting ``MANIFOLD_JAX_XLA_DEFAULTS=0``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import jax

YNN_FUSION = "xla_cpu_experimental_ynn_fusion_type"
"""XLA's list of computations handed to YNNPACK on CPU; empty turns the fusion off."""

OPT_OUT = "MANIFOLD_JAX_XLA_DEFAULTS"
"""Environment variable: "0" keeps XLA's own defaults for every program of ours."""


@functools.cache
def compiler_options() -> dict[str, Any]:
    """The options our programs compile with: {} where the caller or jaxlib rules them out."""
    if os.environ.get(OPT_OUT, "1") == "0" or YNN_FUSION in os.environ.get("XLA_FLAGS", ""):
        return {}
    wanted = {YNN_FUSION: ""}
    try:
        jax.jit(lambda v: v + 1, compiler_options=wanted).lower(1.0).compile()
    except Exception:  # an older or newer jaxlib without the option: keep its defaults
        return {}
    return wanted


class _Jitted:
    """A ``jax.jit`` built on first use, when the backend (and so the options) are known.

    Building lazily keeps ``import manifold_jax`` from starting a backend, so callers can
    still choose platforms and x64 after importing us.
    """

    def __init__(self, fun: Callable[..., Any], kwargs: dict[str, Any]) -> None:
        self._fun = fun
        self._kwargs = kwargs
        self._jitted: Any = None
        self._nested: Any = None
        functools.update_wrapper(self, fun)

    @property
    def jitted(self) -> Any:
        """The underlying ``jax.jit`` object (with ``lower``, ``trace``, ``eval_shape``)."""
        if self._jitted is None:
            self._jitted = jax.jit(self._fun, compiler_options=compiler_options(), **self._kwargs)
        return self._jitted

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if _traced(args, kwargs):
            # inside the caller's jit / vmap / grad: JAX accepts compiler options on the
            # outermost jit only, and the caller's program is compiled with theirs
            if self._nested is None:
                self._nested = jax.jit(self._fun, **self._kwargs)
            return self._nested(*args, **kwargs)
        return self.jitted(*args, **kwargs)

    def lower(self, *args: Any, **kwargs: Any) -> Any:
        """``jax.jit(...).lower``: the program for these arguments, ready to compile."""
        return self.jitted.lower(*args, **kwargs)


def _traced(args: Any, kwargs: Any) -> bool:
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves((args, kwargs)))


def jit(fun: Callable[..., Any] | None = None, **kwargs: Any) -> Any:
    """``jax.jit`` with :func:`compiler_options`; usable as ``@jit`` or ``@jit(static_argnames=...)``."""
    if fun is None:
        return lambda f: _Jitted(f, kwargs)
    return _Jitted(fun, kwargs)
