"""The checked inputs of :func:`~manifold_jax.explore.counterfactual`: targets, explored coordinates, box.

Values are checked where they are concrete; under the caller's ``jit`` / ``vmap`` the traced
ones pass through, shaped for the batch.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from manifold_jax._checks import is_concrete
from manifold_jax._xla import jit
from manifold_jax.explore.problem import box
from manifold_jax.selection import Select, token_selection


def item_targets(target: Any, batch: int, k: int) -> jax.Array:
    """Class indices (B,) from one class or one per item; range checked where concrete."""
    if not is_concrete(target):
        arr = jnp.asarray(target)
        if not jnp.issubdtype(arr.dtype, jnp.integer):
            raise TypeError(f"target must be integer class indices, got dtype {arr.dtype}")
        return jnp.broadcast_to(arr, (batch,)).astype(jnp.int32)
    np_arr = np.asarray(target)
    if np_arr.dtype == bool or not np.issubdtype(np_arr.dtype, np.integer):
        raise TypeError(f"target must be a class index or one class index per item, got {target!r}")
    classes = np.broadcast_to(np_arr, (batch,)) if np_arr.ndim == 0 else np_arr
    if classes.shape != (batch,):
        raise ValueError(f"target holds {np_arr.size} class indices of shape {np_arr.shape}; expected one, "
                         f"or one per item ({batch})")
    if (classes < 0).any() or (classes >= k).any():
        bad = int(classes[(classes < 0) | (classes >= k)][0])
        raise ValueError(f"target class {bad} is out of range: f has {k} outputs (0..{k - 1})")
    return jnp.asarray(classes, jnp.int32)


def explored(select: Select, x0: jax.Array, lo: jax.Array, hi: jax.Array) -> jax.Array:
    """Explored coordinates (B, n, d): the selected tokens, minus coordinates pinned by lo == hi."""
    batch, n, _ = x0.shape
    if select is not None and not is_concrete(select):
        mask = jnp.broadcast_to(jnp.asarray(select, bool), (batch, n))
    else:
        mask = jnp.asarray(token_selection(select, n, batch).mask)
    return mask[:, :, None] & (lo < hi)


def check_source(f: Any, args: Any, x0: jax.Array, target: jax.Array) -> None:
    """Refuse a target that is already an item's predicted class (concrete inputs only)."""
    if not (is_concrete(x0) and is_concrete(target) and is_concrete(args)):
        return
    current = np.asarray(jit(jax.vmap(lambda x, a: jnp.argmax(f(x, *a))))(x0, args))
    same = current == np.asarray(target)
    if same.any():
        b = int(np.argmax(same))
        raise ValueError(f"target class {int(np.asarray(target)[b])} is already the predicted class of item {b}; "
                         "choose another class")


def item_bounds(bounds: tuple[Any, Any] | None, x0: jax.Array, select: Select) -> tuple[jax.Array, jax.Array]:
    """(lo, hi) broadcast to x0 (B, n, d), checked as for the explorations where concrete."""
    if bounds is None:
        inf = jnp.full(x0.shape, jnp.inf, x0.dtype)
        return -inf, inf
    if is_concrete((bounds, x0, select)):
        return box(bounds, x0, token_selection(select, x0.shape[1], x0.shape[0]), True)
    lo, hi = bounds
    return (jnp.broadcast_to(jnp.asarray(lo, x0.dtype), x0.shape[1:])[None].repeat(x0.shape[0], 0),
            jnp.broadcast_to(jnp.asarray(hi, x0.dtype), x0.shape[1:])[None].repeat(x0.shape[0], 0))


__all__ = ["check_source", "explored", "item_bounds", "item_targets"]
