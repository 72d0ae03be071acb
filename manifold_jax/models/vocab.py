"""Exact scans over a token-embedding table: nearest rows and the box of all rows.

A causal LM's input embedding is linear and separable, x_i = W[v_i] + P[i], so decoding a
point back to tokens is a nearest-row search in W of x_i - P[i], and the box of every
embedding any token sequence can have is (min_v W_v + P_i, max_v W_v + P_i). Both scan the
vocabulary in chunks so that a 50,257-row table never meets a (B, n, V) array at once.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from manifold_jax._xla import jit

CHUNK_ELEMENTS = 1 << 23
"""Memory budget (array elements) of one vocabulary chunk."""


def chunk_rows(vocab: int, per_row: int, budget: int = CHUNK_ELEMENTS) -> int:
    """Vocabulary rows per chunk so that a chunk's score array holds about ``budget`` elements."""
    return int(max(1, min(vocab, budget // max(per_row, 1))))


@jit(static_argnums=(3,))
def nearest_rows(queries: jax.Array, table: jax.Array, allowed: jax.Array, chunk: int) -> jax.Array:
    """For each query (N, d) the index of the nearest allowed row of ``table`` (V, d) in L2: (N,).

    Scores are ||W_v||^2 - 2 <q, W_v> (the query's own norm does not change the arg-min),
    computed at HIGHEST precision; ``allowed`` (V,) bool excludes rows.
    """
    vocab = table.shape[0]
    starts = jnp.arange(math.ceil(vocab / chunk), dtype=jnp.int32) * chunk

    def step(carry: tuple[jax.Array, jax.Array], start: jax.Array) -> tuple[tuple[jax.Array, jax.Array], None]:
        best, arg = carry
        ids = jnp.minimum(start + jnp.arange(chunk, dtype=jnp.int32), vocab - 1)  # clipped: a duplicate row
        rows = table[ids]
        dots = jnp.einsum("nd,cd->nc", queries, rows, precision=jax.lax.Precision.HIGHEST)
        score = jnp.sum(rows * rows, -1)[None] - 2 * dots
        score = jnp.where(allowed[ids][None], score, jnp.inf)
        low, where = score.min(1), ids[score.argmin(1)]
        better = low < best
        return (jnp.where(better, low, best), jnp.where(better, where, arg)), None

    n = queries.shape[0]
    init = (jnp.full((n,), jnp.inf, queries.dtype), jnp.zeros((n,), jnp.int32))
    return jax.lax.scan(step, init, starts)[0][1]


def table_box(table: jax.Array, offsets: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The exact box of W[v] + offsets[i] over every row v: (lo, hi), each (n, d)."""
    return jnp.min(table, axis=0) + offsets, jnp.max(table, axis=0) + offsets
