"""Feature importance from the pullback metric, and token selections built on it.

The paper's importance of token i is the largest eigenvalue of its metric block
g_i = J_i^T G J_i: how much the output can change per unit move of that token. It drives
the selections "one" (the most important token) and "q1"/"q2"/"q3" (quartiles).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from manifold_jax._callables import StaticPart, merge_callable
from manifold_jax._xla import jit
from manifold_jax.explore import prepare_problem
from manifold_jax.geometry import block_spectrum
from manifold_jax.output_metrics import OutputMetric, resolve_output_metric

SELECTIONS: tuple[str, ...] = ("all", "one", "q1", "q2", "q3")
"""Named selections: all explorable tokens, the most important one, or those at or above
the first quartile (q1: the top three quarters), the median (q2: the top half) or the
third quartile (q3: the top quarter) of the importance of the explorable tokens."""


@jit(static_argnames=("static", "metric"))
def _importance(
    dynamic: list[Any], x0: jax.Array, args: tuple[Any, ...], *, static: StaticPart, metric: OutputMetric
) -> jax.Array:
    f = merge_callable(dynamic, static)
    n = x0.shape[1]
    index, valid = jnp.arange(n), jnp.ones((n,), bool)

    def one(x: jax.Array, a: tuple[Any, ...]) -> jax.Array:
        _, spec = block_spectrum(f, x, a, index, valid, metric=metric, blocks="token", method="gram")
        return spec.eigenvalues[:, 0]

    return jax.vmap(one)(x0, args)


def token_importance(
    f: Callable[..., jax.Array],
    x0: Any,
    args: Any = (),
    output_metric: str | OutputMetric = "euclidean",
) -> np.ndarray:
    """Largest pullback eigenvalue of every token: x0 (B, n, d), args batched -> (B, n)."""
    problem = prepare_problem(f, x0, args=args, batched=True)
    metric = resolve_output_metric(output_metric)
    return np.asarray(_importance(problem.dynamic, jnp.asarray(x0), problem.args, static=problem.static, metric=metric))


def _positions(how: Any, mask: np.ndarray) -> np.ndarray:
    """Boolean selection (B, n) of explicit positions shared by the batch, each explorable in every item."""
    n = mask.shape[1]
    idx = np.asarray(how)
    if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"select must name a selection {SELECTIONS} or list positions, got {how!r}")
    if idx.min() < 0 or idx.max() >= n:
        bad = int(idx.max() if idx.max() >= n else idx.min())
        raise ValueError(f"select position {bad} is out of range: inputs have {n} positions (0..{n - 1})")
    out = np.zeros_like(mask)
    out[:, idx] = True
    if (out & ~mask).any():
        b, i = np.argwhere(out & ~mask)[0]
        raise ValueError(
            f"select position {int(i)} is not an explorable token of item {int(b)} (special token or padding)"
        )
    return out


def select_tokens(importance: Any, token_mask: Any, how: str | list[int]) -> np.ndarray:
    """Boolean selection (B, n) from importance (B, n), explorable mask (B, n) and ``how``.

    ``how`` is one of SELECTIONS or explicit position indices (shared by the batch);
    explicit positions must be explorable.
    """
    importance = np.asarray(importance, np.float64)
    mask = np.asarray(token_mask, bool)
    if importance.shape != mask.shape or importance.ndim != 2:
        raise ValueError(f"importance {importance.shape} and token_mask {mask.shape} must both be (B, n)")
    if not mask.any(axis=1).all():
        bad = int(np.argmin(mask.any(axis=1)))
        raise ValueError(f"item {bad} has no explorable token to select")
    if not isinstance(how, str):
        return _positions(how, mask)
    if how not in SELECTIONS:
        raise ValueError(f"select={how!r} is not supported; expected one of {', '.join(SELECTIONS)} or positions")
    if how == "all":
        return mask.copy()
    if how == "one":
        out = np.zeros_like(mask)
        out[np.arange(len(mask)), np.argmax(np.where(mask, importance, -np.inf), axis=1)] = True
        return out
    level = {"q1": 25, "q2": 50, "q3": 75}[how]
    out = np.zeros_like(mask)
    for b in range(len(mask)):
        cut = np.percentile(importance[b, mask[b]], level)
        out[b] = mask[b] & (importance[b] >= cut)
    return out
