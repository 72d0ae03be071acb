"""Small models with known structure for the engine tests."""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp


def linear_map(key: jax.Array, n: int, d: int, k: int) -> tuple[Callable[[jax.Array], jax.Array], jax.Array]:
    """f(x) = A vec(x): its level sets are affine, so SiMEC must keep y fixed exactly."""
    a = jax.random.normal(key, (k, n * d))
    return (lambda x: a.astype(x.dtype) @ x.reshape(-1)), a


class _Block(nn.Module):
    heads: int

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        h = nn.LayerNorm()(x)
        attn_mask = mask[None, None, :] & mask[None, :, None]
        x = x + nn.MultiHeadDotProductAttention(num_heads=self.heads)(h, h, mask=attn_mask)
        h = nn.LayerNorm()(x)
        return x + nn.Dense(x.shape[-1])(jax.nn.gelu(nn.Dense(2 * x.shape[-1])(h)))


class ToyClassifier(nn.Module):
    """A two-layer pre-LN Transformer classifier on embeddings (n, d), CLS at position 0."""

    classes: int
    layers: int = 2
    heads: int = 2
    centered: bool = False  # logits summing to zero: a rank k - 1 Jacobian, as softmax training gives

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        for _ in range(self.layers):
            x = _Block(self.heads)(x, mask)
        logits = nn.Dense(self.classes)(nn.LayerNorm()(x)[0])
        return logits - logits.mean() if self.centered else logits


def toy_classifier(
    key: jax.Array, n: int = 8, d: int = 16, k: int = 4, centered: bool = False
) -> tuple[jax.tree_util.Partial, jax.Array]:
    """A random ToyClassifier as a pytree callable f(x, mask) -> logits, and an input x0."""
    module = ToyClassifier(classes=k, centered=centered)
    kp, kx = jax.random.split(key)
    x0 = jax.random.normal(kx, (n, d))
    params = module.init(kp, x0, jnp.ones((n,), bool))

    def apply(p: dict, x: jax.Array, mask: jax.Array) -> jax.Array:
        return module.apply(p, x, mask)

    return jax.tree_util.Partial(apply, params), x0
