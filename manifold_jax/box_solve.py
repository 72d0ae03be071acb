"""The smallest change that solves a linear system inside a box: the corrector of a bounded walk.

A corrector brings y(x) back to y(x0): linearised, a c = b with a = dphi J (k, D), b the
negated residual (k,). Unbounded, the smallest such c is a^+ b. In a box lo <= x + c <= hi
it is the solution of the bound-constrained least-norm problem

    minimise |c|^2 / 2   subject to   a c = b,   lower <= c <= upper,

(lower = lo - x, upper = hi - x). Its dual has k unknowns: for multipliers lam (k,) the
minimising c is the box projection c(lam) = clip(a^T lam, lower, upper), and the dual is
solved by a semismooth Newton iteration, which is the primal-dual active-set method:
coordinates whose a^T lam leaves the box are clamped to their bound (their contribution
moves to the right-hand side), the others are solved for in minimum norm, and a clamped
coordinate is released as soon as a^T lam points back into the box (its multiplier changes
sign). A backtracking search on the concave dual makes every step an ascent. On a linear
map the answer is exact: a (x + c) = a x + b to rounding whenever the box allows it.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from manifold_jax.geometry import numerical_floor

BACKTRACKS = 12
"""Step lengths tried at once along a Newton direction: 1, 1/2, ..., 2^-11."""

DAMPING = 0.1
"""Weight of the clamped coordinates in the fallback step (see :func:`box_min_norm_solve`)."""


class BoxSolve(NamedTuple):
    """A solution of the bounded least-norm problem.

    dx (D,) the change; multipliers (k,) lam with dx = clip(a^T lam, lower, upper) (a
    certificate of optimality when a dx = r); iterations () Newton steps taken.
    """

    dx: jax.Array
    multipliers: jax.Array
    iterations: jax.Array


def _pinv_solve(h: jax.Array, g: jax.Array) -> jax.Array:
    """h^+ g for a symmetric PSD h (k, k), eigenvalues under the numerical floor dropped."""
    lam, u = jnp.linalg.eigh(h)
    keep = lam > numerical_floor(h.dtype) * jnp.maximum(lam[-1], 0.0)
    return u @ jnp.where(keep, (u.T @ g) / jnp.where(keep, lam, 1.0), 0.0)


def box_min_norm_solve(
    a: jax.Array, r: jax.Array, lower: jax.Array, upper: jax.Array, max_iters: int | None = None
) -> BoxSolve:
    """The smallest dx (D,) with a dx = r (a (k, D), r (k,)) and lower <= dx <= upper.

    lower <= 0 <= upper is expected (the current point lies in the box); a coordinate with
    lower == upper is fixed. At most ``max_iters`` Newton steps (default 4 k + 16, each
    O(k^2 D)); when the box leaves no solution the last iterate is returned, and the caller
    sees the residual left. Jittable and vmappable: the loop is a ``lax.while_loop``.
    """
    k = a.shape[0]
    dtype = a.dtype
    limit = 4 * k + 16 if max_iters is None else max_iters
    movable = lower < upper
    eps = jnp.asarray(numerical_floor(dtype), dtype)
    ts = 0.5 ** jnp.arange(BACKTRACKS, dtype=dtype)
    longer = 2.0 ** jnp.arange(-BACKTRACKS // 2, BACKTRACKS, dtype=dtype)

    def primal(lam: jax.Array) -> tuple[jax.Array, jax.Array]:
        z = a.T @ lam
        return z, jnp.where(movable, jnp.clip(z, lower, upper), 0.0)

    def dual(lam: jax.Array) -> jax.Array:
        z, c = primal(lam)
        return lam @ r + jnp.sum(0.5 * c * c - z * c)

    def converged(c: jax.Array) -> jax.Array:
        scale = jnp.max(jnp.abs(r)) + jnp.max(jnp.abs(a) @ jnp.abs(c))
        return jnp.max(jnp.abs(a @ c - r), initial=0.0) <= eps * scale

    State = tuple[jax.Array, jax.Array, jax.Array]

    def cond(s: State) -> jax.Array:
        return ~s[2] & (s[1] < limit)

    def body(s: State) -> State:
        lam, i, _ = s
        z, c = primal(lam)
        free = (movable & (z >= lower) & (z <= upper)).astype(dtype)  # at a kink a coordinate counts as free
        g = r - a @ c  # the dual gradient
        gram_free = (a * free[None]) @ a.T
        # the active-set Newton step, exact once the active set is right; where the free
        # coordinates cannot reduce g, a step that also sees the clamped ones (damped)
        # moves the multipliers until some of them are released
        newton = _pinv_solve(gram_free, g)
        damped = _pinv_solve(gram_free + DAMPING * ((a * (1 - free)[None]) @ a.T), g)
        candidates = jnp.concatenate([lam + ts[:, None] * newton, lam + longer[:, None] * damped, lam[None]])
        values = jax.vmap(dual)(candidates)
        # the first candidate (the full Newton step first) within rounding of the best: an ascent
        best = jnp.max(values)
        slack = eps * (jnp.abs(best) + jnp.abs(lam @ r) + 1e-300)
        new = candidates[jnp.argmax(values >= best - slack)]
        _, c_new = primal(new)
        stuck = jnp.all(new == lam)
        return new, i + 1, converged(c_new) | stuck

    lam0 = jnp.zeros((k,), dtype)
    _, c0 = primal(lam0)
    lam, iterations, _ = jax.lax.while_loop(cond, body, (lam0, jnp.zeros((), jnp.int32), converged(c0)))
    return BoxSolve(primal(lam)[1], lam, iterations)


def box_min_norm_correction(
    a: jax.Array, residual: jax.Array, x: jax.Array, lo: jax.Array, hi: jax.Array, movable: jax.Array,
    hold: bool = True,
) -> jax.Array:
    """The smallest correction c (shape of x) with a c = -residual and lo <= x + c <= hi.

    a (k, ...) with trailing axes x's (the measured Jacobian at or near x), residual (k,)
    phi(y) - phi(y0); coordinates where ``movable`` (x's shape, bool) is False do not
    move. With ``hold`` the coordinates at a bound stay there when the others can make the
    correction alone (the box as an active set: an active bound is released only when it
    must be), else the smallest correction over the whole box releases them inward. Exact
    on a linear map whenever the box allows it: phi(y(x + c)) = phi(y0).
    """
    shape = x.shape
    flat = a.reshape(a.shape[0], -1)
    r = -residual
    keep = movable.reshape(-1)
    gap_lo = jnp.where(keep, jnp.minimum(lo - x, 0.0).reshape(-1), 0.0)
    gap_hi = jnp.where(keep, jnp.maximum(hi - x, 0.0).reshape(-1), 0.0)
    whole = box_min_norm_solve(flat, r, gap_lo, gap_hi).dx
    if not hold:
        return whole.reshape(shape)
    inside = (gap_lo < 0) & (gap_hi > 0)
    held = box_min_norm_solve(flat, r, jnp.where(inside, gap_lo, 0.0), jnp.where(inside, gap_hi, 0.0)).dx
    eps = numerical_floor(flat.dtype)
    scale = jnp.max(jnp.abs(r)) + jnp.max(jnp.abs(flat) @ jnp.abs(held))
    enough = jnp.max(jnp.abs(flat @ held - r), initial=0.0) <= eps * scale
    return jnp.where(enough, held, whole).reshape(shape)


__all__ = ["BoxSolve", "box_min_norm_correction", "box_min_norm_solve"]
