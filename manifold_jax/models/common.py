"""Small helpers shared by the ports."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def measured_box(x0: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Element-wise min and max over the batch of embeddings x0 (B, n, d): two (n, d) arrays."""
    if x0.ndim != 3 or x0.shape[0] == 0:
        raise ValueError(f"measured bounds need a non-empty batch of embeddings (B, n, d), got {x0.shape}")
    return jnp.min(x0, axis=0), jnp.max(x0, axis=0)
