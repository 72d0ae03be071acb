"""A batch of Jacobians equals the per-item Jacobians (a float32 XLA CPU miscompile once hid here)."""

from __future__ import annotations

import jax
import numpy as np

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
    single = np.concatenate([np.asarray(jac(x0[i : i + 1], jax.tree.map(lambda a: a[i : i + 1], ctx))) for i in range(16)])
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
