"""A batch of Jacobians equals the per-item Jacobians (a float32 XLA CPU miscompile once hid here)."""

from __future__ import annotations

import functools
from typing import Any

import jax
import numpy as np
import pytest

from manifold_jax.data import mnist_split
from manifold_jax.models import load


def test_vmapped_jacobian_of_the_shipped_vit_equals_per_item_jacobians() -> None:
    """16 images x 10 classes x 50 tokens of cotangents: the size at which the jitted Jacobian
    of LayerNorm written as x * rsqrt(var + eps) came back wrong on CPU (errors up to 20 %)."""
    model = load("mnist-vit")
    images = mnist_split(seed=0).test_images[:16, ..., None]
    x0, ctx = model.embed(images)
    jac = jax.jit(jax.vmap(jax.jacrev(model.head)))
    batched = np.asarray(jac(x0, ctx))
    items = [jax.tree.map(functools.partial(_rows, i=i), ctx) for i in range(16)]
    single = np.concatenate([np.asarray(jac(x0[i : i + 1], item)) for i, item in enumerate(items)])
    scale = np.abs(single).max()
    # the same float32 arithmetic, vectorised differently: equal to a few ulps of the scale
    assert np.abs(batched - single).max() <= 1e-5 * scale


def test_jitted_jacobian_of_our_layer_norm_is_right_for_many_cotangents() -> None:
    """The minimal case of that miscompile (benchmarks/repro_xla_layernorm.py): 2000 rows, 3 outputs."""
    import jax.numpy as jnp

    from manifold_jax.models.layers import layer_norm

    rng = np.random.default_rng(0)
    w = jnp.asarray(rng.standard_normal((48, 3)), jnp.float32)
    x = jnp.asarray(rng.standard_normal((2000, 48)), jnp.float32)
    ones, zeros = jnp.ones((48,)), jnp.zeros((48,))

    def f(z: jax.Array) -> jax.Array:
        return layer_norm(z, ones, zeros, 1e-5)[0] @ w

    jitted, eager = np.asarray(jax.jit(jax.jacrev(f))(x)), np.asarray(jax.jacrev(f)(x))
    assert np.abs(jitted - eager).max() <= 1e-5 * np.abs(eager).max()


def _rsqrt_layer_norm_jacobians(jit: Any) -> tuple[np.ndarray, np.ndarray]:
    """The jitted and eager Jacobians of x * rsqrt(var + eps) at the size XLA's CPU YNN fusion
    miscompiles (benchmarks/repro_xla_layernorm.py): 2000 rows, 3 outputs."""
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    w = jnp.asarray(rng.standard_normal((48, 3)), jnp.float32)
    x = jnp.asarray(rng.standard_normal((2000, 48)), jnp.float32)

    def f(z: jax.Array) -> jax.Array:
        c = z - z.mean(-1, keepdims=True)
        return (c * jax.lax.rsqrt((c * c).mean(-1, keepdims=True) + 1e-5))[0] @ w

    return np.asarray(jit(jax.jacrev(f))(x)), np.asarray(jax.jacrev(f)(x))


def test_our_programs_compile_without_the_fusion_that_miscompiles_the_jacobian() -> None:
    """Every program of ours is built by manifold_jax._xla.jit, which turns XLA's CPU YNN
    fusion off; with it, even the rsqrt form of LayerNorm gets its right Jacobian."""
    from manifold_jax import _xla

    if not _xla.compiler_options():
        pytest.skip("this jaxlib has no YNN fusion option")
    jitted, eager = _rsqrt_layer_norm_jacobians(_xla.jit)
    # the same float32 arithmetic compiled differently: equal to a few ulps of the scale
    assert np.abs(jitted - eager).max() <= 1e-5 * np.abs(eager).max()
    text = _xla.jit(lambda z: jax.nn.softmax(z @ z.T) @ z).lower(np.ones((64, 8), np.float32)).compile().as_text()
    assert "ynn_fusion" not in text


def test_the_caller_can_keep_xla_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    from manifold_jax import _xla

    _xla.compiler_options.cache_clear()
    try:
        monkeypatch.setenv(_xla.OPT_OUT, "0")
        assert _xla.compiler_options() == {}
        _xla.compiler_options.cache_clear()
        monkeypatch.delenv(_xla.OPT_OUT)
        monkeypatch.setenv("XLA_FLAGS", f"--{_xla.YNN_FUSION}=dot")
        assert _xla.compiler_options() == {}
    finally:
        monkeypatch.undo()
        _xla.compiler_options.cache_clear()


def _rows(a: Any, i: int) -> Any:
    return a[i : i + 1]
