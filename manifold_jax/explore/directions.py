"""Direction rules per metric block: a random null (SiMEC) or visible (SiMExp) unit direction, or the
previous tangent transported onto the block's subspace (:class:`~manifold_jax.explore.options.Coherent`).

Small vector helpers (unit vectors, projections, the token <-> block reshapes) are shared
with the guides of :mod:`manifold_jax.explore.guides`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from manifold_jax.explore.options import ExploreConfig
from manifold_jax.explore.step_size import rule_object


def canonical_sign(v: jax.Array) -> jax.Array:
    """Eigenvectors are defined up to sign; fix it so the largest component is positive."""
    pivot = v[jnp.argmax(jnp.abs(v))]
    return v * jnp.where(pivot < 0, -1.0, 1.0).astype(v.dtype)


def pick_index(key: jax.Array, allowed: jax.Array) -> jax.Array:
    """A uniformly random index among the True entries of ``allowed`` (p,)."""
    logits = jnp.where(allowed, 0.0, -jnp.inf)
    return jax.random.categorical(key, jnp.where(allowed.any(), logits, 0.0))


def project_off(rows: jax.Array, v: jax.Array) -> jax.Array:
    """v minus its projection on the (near-orthonormal) rows; twice is enough for rounding."""
    v = v - rows.T @ (rows @ v)
    return v - rows.T @ (rows @ v)


def unit(v: jax.Array) -> tuple[jax.Array, jax.Array]:
    """v / |v| (0 for v = 0) and |v|."""
    norm = jnp.linalg.norm(v)
    return v / jnp.where(norm > 0, norm, 1.0), norm


def blocks_of(values: jax.Array, blocks: str) -> jax.Array:
    """(m, d) -> (nb, D): a row per token block, or one joint row."""
    return values if blocks == "token" else values.reshape(1, -1)


def tokens_of(values: jax.Array, m: int, d: int) -> jax.Array:
    """(nb, D) -> (m, d), the inverse of :func:`blocks_of`."""
    return values.reshape(m, d)


def visible_mask(cfg: ExploreConfig, lam: jax.Array, dtype: Any) -> jax.Array:
    """Which eigenvalues (p,) of a block (descending) the threshold calls visible (non-null)."""
    return lam > cfg.threshold.cutoff(jnp.maximum(lam[0], 0.0), dtype)


def block_move(
    cfg: ExploreConfig,
    simexp: Any,
    lam: jax.Array,
    vecs: jax.Array,
    noise: jax.Array,
    key: jax.Array,
    previous: jax.Array,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Unit direction (D,), step size, v^T g v and whether a move exists, for one block.

    lam (p,) descending and vecs (p, D) are the block's eigenpairs; noise (D,) a Gaussian
    draw used by the projected null direction; key picks eigenvectors; previous (D,) the
    last tangent of this block (used by the coherent rule); simexp (a bool, traced in the
    paper's shared program) chooses SiMExp's visible direction over SiMEC's null one. The
    step size is the step rule's ``block_size`` (arc-length rules scale the joint tangent
    later).
    """
    dtype = vecs.dtype
    p, dim = vecs.shape
    lam_max = jnp.maximum(lam[0], 0.0)
    scale_ok = lam_max > 0
    nonnull = visible_mask(cfg, lam, dtype)
    null = ~nonnull
    visible = jnp.where(nonnull[:, None], vecs, 0.0)
    visible_dir = canonical_sign(vecs[pick_index(key, nonnull)])
    if cfg.null_direction == "eigenvector":
        null_dir = canonical_sign(vecs[pick_index(key, null)])
        null_exists = null.any()
    else:
        null_dir, _ = unit(project_off(visible, noise))
        null_exists = (dim - nonnull.sum()) > 0
    if cfg.direction != "random":
        # transport the previous tangent; draw afresh where the subspace turned away from it
        keep = cfg.direction.restart * jnp.linalg.norm(previous)
        carried_null, null_norm = unit(project_off(visible, previous))
        carried_visible, visible_norm = unit(visible.T @ (visible @ previous))
        null_dir = jnp.where(null_norm > keep, carried_null, null_dir)
        visible_dir = jnp.where(visible_norm > keep, carried_visible, visible_dir)
    v = jnp.where(simexp, visible_dir, null_dir)
    exists = jnp.where(simexp, nonnull.any(), null_exists)
    ok = exists & scale_ok
    delta = rule_object(cfg.step_rule).block_size(cfg.eta, lam, nonnull, p == dim)
    quad = jnp.sum(jnp.maximum(lam, 0.0) * (vecs @ v) ** 2)
    delta = jnp.where(ok, delta, 0.0).astype(dtype)
    return jnp.where(ok, v, 0.0), delta, quad.astype(dtype), ok


__all__ = [
    "block_move", "blocks_of", "canonical_sign", "pick_index", "project_off", "tokens_of", "unit", "visible_mask",
]
