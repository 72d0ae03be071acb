"""What the public one-item step takes: its checks and its per-item inputs, from :func:`~manifold_jax.explore.prepare`.

The step runs inside the caller's ``jit``, ``vmap`` and ``grad``, so only shapes are checked
where values are traced; the inputs come from the same :func:`~manifold_jax.explore.prepare`
as the loop's (selection, box, target, goal normalised in one place).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from manifold_jax._checks import check_finite, is_concrete
from manifold_jax.explore.options import ExploreConfig
from manifold_jax.explore.problem import ExplorationState, ItemInputs, prepare
from manifold_jax.geometry import output_size


def _check_target(target: Any, anchor: jax.Array, k: int) -> None:
    """A target class in range and not x0's, or an output vector (k,) (values only where concrete)."""
    t = jnp.asarray(target)
    if jnp.issubdtype(t.dtype, jnp.integer):
        if t.shape != ():
            raise ValueError(f"target as a class must be one index, got shape {tuple(t.shape)}")
        if is_concrete((t, anchor)):
            cls = int(t)
            if not 0 <= cls < k:
                raise ValueError(f"target class {cls} is out of range: f has {k} outputs (0..{k - 1})")
            if cls == int(jnp.argmax(anchor)):
                raise ValueError(f"target class {cls} is already the predicted class at x0; choose another class")
    elif jnp.issubdtype(t.dtype, jnp.floating):
        if t.shape != (k,):
            raise ValueError(f"target as outputs must have shape ({k},), got {tuple(t.shape)}")
        check_finite("target", t)
    else:
        raise TypeError(f"target must be a class index or an output vector ({k},), got dtype {t.dtype}")


def check_step_inputs(f: Callable[..., jax.Array], state: ExplorationState, config: Any, args: tuple[Any, ...],
                      bounds: tuple[Any, Any] | None, target: Any) -> None:
    """One-line errors naming the argument for what the step cannot take (values only where concrete)."""
    if not isinstance(config, ExploreConfig):
        raise TypeError(f"config must be an ExploreConfig, got {type(config).__name__}")
    if state.x.ndim != 2:
        raise ValueError(
            f"step takes one item's state, x (n, d); got x of shape {tuple(state.x.shape)} (vmap it for a batch)"
        )
    if state.anchor.shape[-1] == 0:
        raise ValueError("the state has no anchor f(x0): build it with init_state(x0, key, f=f, args=args)")
    if state.x.dtype not in (jnp.float32, jnp.float64):
        raise TypeError(f"state.x must be a float32 or float64 array, got dtype {state.x.dtype}")
    k = output_size(f, state.x, args)
    if state.anchor.shape != (k,):
        raise ValueError(f"state.anchor has shape {tuple(state.anchor.shape)} but f returns {k} outputs: build the "
                         "state with init_state(x0, key, f=f, args=args)")
    check_finite("state.anchor", state.anchor)
    if target is not None:
        _check_target(target, state.anchor, k)
    if bounds is not None and is_concrete(bounds):
        try:
            lo, hi = (np.asarray(b, np.float64) for b in bounds)
            lo, hi = np.broadcast_to(lo, state.x.shape), np.broadcast_to(hi, state.x.shape)
        except (TypeError, ValueError):
            raise ValueError(f"bounds must be a pair (lo, hi) broadcastable to x {tuple(state.x.shape)}") from None
        if np.isnan(lo).any() or np.isnan(hi).any():
            raise ValueError("bounds hold NaN")
        if (lo > hi).any():
            raise ValueError("bounds: lo exceeds hi at some position")


def step_inputs(f: Callable[..., jax.Array], state: ExplorationState, *, args: tuple[Any, ...], select: Any,
                bounds: tuple[Any, Any] | None, target: Any, goal: Any) -> ItemInputs:
    """The item's inputs (unbatched) for the step at ``state``, through :func:`~manifold_jax.explore.prepare`."""
    problem, _ = prepare(f, state, args=args, select=select, bounds=bounds, target=target, goal=goal)
    return jax.tree.map(lambda a: a[0], problem.item_inputs())


__all__ = ["check_step_inputs", "step_inputs"]
