"""Exact scans over a BERT-family vocabulary: the box of every embedding and the nearest token.

The embedding module ends in a LayerNorm, so the candidate embeddings of position i are
LayerNorm(W_v + T_t + P_i) for every token v and type t; both scans build them chunk by
chunk (:meth:`~manifold_jax.models.bert_modules.BertModule.candidates`) so that the whole
(T, V, n, d) array never exists.
"""

from __future__ import annotations

import math
from typing import Any, cast

import jax
import jax.numpy as jnp

from manifold_jax._xla import jit

from .bert_modules import BertModule

VOCAB_CHUNK_ELEMENTS = 1 << 23
"""Memory budget (array elements) of one vocabulary chunk in the exact vocabulary scans."""


def chunk_size(vocab: int, per_entry: int, budget: int = VOCAB_CHUNK_ELEMENTS) -> int:
    """Vocabulary entries per chunk so that one chunk holds about ``budget`` elements."""
    return int(max(1, min(vocab, budget // max(per_entry, 1))))


def _candidates(model: Any, ids: jax.Array, n: int) -> jax.Array:
    module = BertModule(model.config, model.task)
    return cast(jax.Array, module.apply({"params": model.params}, ids, n, method=BertModule.candidates))


def _vocab_chunks(vocab: int, chunk: int) -> jax.Array:
    """Start index of every vocabulary chunk; ids past the end are clipped to V-1 by the
    callers, which only duplicates a real entry (harmless for min, max and argmin)."""
    return jnp.arange(math.ceil(vocab / chunk), dtype=jnp.int32) * chunk


def _chunk_ids(start: jax.Array, chunk: int, vocab: int) -> jax.Array:
    return jnp.minimum(start + jnp.arange(chunk, dtype=jnp.int32), vocab - 1)


@jit(static_argnums=(1, 2))
def vocab_box(model: Any, n: int, chunk: int) -> tuple[jax.Array, jax.Array]:
    vocab = model.config.vocab_size

    def step(carry: tuple[jax.Array, jax.Array], start: jax.Array) -> tuple[tuple[jax.Array, jax.Array], None]:
        cand = _candidates(model, _chunk_ids(start, chunk, vocab), n)  # (T, C, n, d)
        lo, hi = carry
        return (jnp.minimum(lo, cand.min((0, 1))), jnp.maximum(hi, cand.max((0, 1)))), None

    d = model.config.hidden_size
    dtype = model.params["embeddings"]["word"]["embedding"].dtype
    init = (jnp.full((n, d), jnp.inf, dtype), jnp.full((n, d), -jnp.inf, dtype))
    return jax.lax.scan(step, init, _vocab_chunks(vocab, chunk))[0]


@jit(static_argnums=(4,))
def nearest_tokens(model: Any, x: jax.Array, types: jax.Array, allowed: jax.Array, chunk: int) -> jax.Array:
    vocab = model.config.vocab_size
    n = x.shape[-2]

    def step(carry: tuple[jax.Array, jax.Array], start: jax.Array) -> tuple[tuple[jax.Array, jax.Array], None]:
        best, arg = carry
        ids = _chunk_ids(start, chunk, vocab)
        cand = _candidates(model, ids, n)  # (T, C, n, d)
        dots = jnp.einsum("bid,tcid->tbci", x, cand, precision=jax.lax.Precision.HIGHEST)
        # ||x - c||^2 - ||x||^2 for every type, then keep each position's own type.
        score = jnp.sum(cand * cand, -1)[:, None] - 2 * dots  # (T, B, C, n)
        score = jnp.take_along_axis(score, types[None, :, None, :], axis=0)[0]  # (B, C, n)
        score = jnp.where(allowed[ids][None, :, None], score, jnp.inf)
        low, where = score.min(1), ids[score.argmin(1)]
        better = low < best
        return (jnp.where(better, low, best), jnp.where(better, where, arg)), None

    init = (jnp.full(x.shape[:2], jnp.inf, x.dtype), jnp.zeros(x.shape[:2], jnp.int32))
    return jax.lax.scan(step, init, _vocab_chunks(vocab, chunk))[0][1]


