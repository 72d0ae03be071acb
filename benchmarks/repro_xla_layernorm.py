"""Minimal reproduction: a wrong float32 Jacobian of LayerNorm under ``jit`` on CPU.

Found by the benchmarks (``bench.py speed``, MNIST ViT at batch 16: our first step sizes
differed from the reference by up to 21 % while every single-item spectrum matched).
``jax.jit(jax.jacrev(f))`` of a LayerNorm written with ``x * rsqrt(var + eps)`` returns
wrong rows (every cotangent but the first) once k x rows is large (here 3 x 2000); the
un-jitted Jacobian, the float64 one and the ``x / sqrt(var + eps)`` form are right. The
batched engine hits it through ``vmap``: batch x classes x tokens = 16 x 10 x 197 rows.

Run: ``python benchmarks/repro_xla_layernorm.py`` (prints the relative errors; exits 1
when the bug is present).
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np


def layer_norm_rsqrt(x: jax.Array) -> jax.Array:
    c = x - x.mean(-1, keepdims=True)
    return c * jax.lax.rsqrt((c * c).mean(-1, keepdims=True) + 1e-5)


def layer_norm_sqrt(x: jax.Array) -> jax.Array:
    c = x - x.mean(-1, keepdims=True)
    return c / jnp.sqrt((c * c).mean(-1, keepdims=True) + 1e-5)


def errors(rows: int = 2000, d: int = 48, k: int = 3) -> dict[str, float]:
    """Relative max error of the jitted float32 Jacobian against the un-jitted one."""
    rng = np.random.default_rng(0)
    w = jnp.asarray(rng.standard_normal((d, k)), jnp.float32)
    x = jnp.asarray(rng.standard_normal((rows, d)), jnp.float32)
    out = {}
    for name, norm in (("x * rsqrt(var + eps)", layer_norm_rsqrt), ("x / sqrt(var + eps)", layer_norm_sqrt)):
        f = lambda z, norm=norm: norm(z)[0] @ w  # noqa: E731
        jitted, eager = jax.jit(jax.jacrev(f))(x), jax.jacrev(f)(x)
        out[name] = float(jnp.abs(jitted - eager).max() / jnp.abs(eager).max())
    return out


if __name__ == "__main__":
    print(f"jax {jax.__version__}, {jax.devices()[0].platform}")
    result = errors()
    for name, err in result.items():
        print(f"jit(jacrev) vs jacrev, LayerNorm as {name}: relative error {err:.1e}")
    sys.exit(1 if max(result.values()) > 1e-4 else 0)
