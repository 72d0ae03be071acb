"""The corrector in a box: the bound-constrained least-norm correction and what a walk makes of it.

The solver against scipy's SLSQP on random small problems, with an optimality certificate;
the linear map in a box over 50 seeds of x0 (per-token and joint blocks, two shapes), held
to float64 rounding at every saved point; a correction that exists only if a coordinate at
a bound moves inward; a Fixed step too long to correct, retried shorter.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize

import manifold_jax as mj
from manifold_jax.box_solve import box_min_norm_correction, box_min_norm_solve
from manifold_jax.explore import UNCONVERGED

KEY = jax.random.PRNGKey(0)
SEEDS = 50


def _problems(seed: int, count: int, k: int, dim: int) -> tuple[np.ndarray, ...]:
    """Random feasible problems: a (count, k, D), bounds with many coordinates at a bound
    (lower = 0 or upper = 0: the current point sits there), r = a c for a feasible c."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(count, k, dim))
    at_bound = rng.uniform(size=(count, dim)) < 0.5
    side = rng.uniform(size=(count, dim)) < 0.5
    lower = np.where(at_bound & side, 0.0, -rng.uniform(0.05, 1.0, (count, dim)))
    upper = np.where(at_bound & ~side, 0.0, rng.uniform(0.05, 1.0, (count, dim)))
    feasible = rng.uniform(lower, upper)
    return a, np.einsum("bkd,bd->bk", a, feasible), lower, upper, feasible


@pytest.mark.parametrize(("k", "dim"), [(1, 5), (3, 10), (6, 20)])
def test_the_box_solve_is_the_least_norm_point_scipy_finds(k: int, dim: int) -> None:
    """dx = clip(a^T lam, lower, upper) with a dx = r is the KKT point of the convex problem (a
    certificate of optimality); SLSQP, from the feasible point, finds the same dx to its own
    tolerance (1e-6). 40 problems per shape in one vmapped call."""
    a, r, lower, upper, feasible = _problems(k * 100 + dim, 40, k, dim)
    with jax.enable_x64(True):
        sol = jax.jit(jax.vmap(box_min_norm_solve))(*(jnp.asarray(v) for v in (a, r, lower, upper)))
    dx, lam = np.asarray(sol.dx), np.asarray(sol.multipliers)
    assert (dx >= lower).all() and (dx <= upper).all()
    np.testing.assert_allclose(np.einsum("bkd,bd->bk", a, dx), r, rtol=0, atol=1e-12 * (1 + np.abs(r).max()))
    # the certificate, to the rounding of a^T lam
    np.testing.assert_allclose(dx, np.clip(np.einsum("bkd,bk->bd", a, lam), lower, upper), rtol=0, atol=1e-13)
    assert int(np.asarray(sol.iterations).max()) <= 4 * k + 16
    for i in range(len(a)):
        ref = minimize(
            lambda c: 0.5 * c @ c, feasible[i], jac=lambda c: c, method="SLSQP",
            bounds=list(zip(lower[i], upper[i], strict=True)),
            constraints=[{"type": "eq", "fun": lambda c, i=i: a[i] @ c - r[i], "jac": lambda c, i=i: a[i]}],
            options={"ftol": 1e-14, "maxiter": 500},
        )
        assert ref.success, ref.message
        np.testing.assert_allclose(dx[i], ref.x, atol=1e-6)
        assert dx[i] @ dx[i] <= ref.x @ ref.x + 1e-9


def test_a_bound_coordinate_moves_inward_only_when_the_correction_needs_it() -> None:
    """y = x_0 + x_1 + x_2 with x_0 at its lower bound 0 and x_1 at its upper bound 1: a fall of y
    is made by x_2 alone while x_2 can (the bounds held), a rise needs x_0 to move inward
    (x_2 capped at 1); the unheld solve spreads a rise over x_0 and x_2, the least norm."""
    with jax.enable_x64(True):
        a = jnp.ones((1, 1, 3))
        x = jnp.asarray([[0.0, 1.0, 0.9]])
        lo, hi, movable = jnp.zeros((1, 3)), jnp.ones((1, 3)), jnp.ones((1, 3), bool)
        fall = np.asarray(box_min_norm_correction(a, jnp.asarray([0.3]), x, lo, hi, movable))
        rise = np.asarray(box_min_norm_correction(a, jnp.asarray([-0.3]), x, lo, hi, movable))
        spread = np.asarray(box_min_norm_correction(a, jnp.asarray([-0.1]), x, lo, hi, movable, hold=False))
    np.testing.assert_allclose(fall, [[0.0, 0.0, -0.3]], atol=1e-15)
    np.testing.assert_allclose(rise, [[0.2, 0.0, 0.1]], atol=1e-15)
    np.testing.assert_allclose(spread, [[0.05, 0.0, 0.05]], atol=1e-15)


def _linear(seed: int, n: int, d: int, k: int):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(k, n * d)) / np.sqrt(n * d)
    b = rng.normal(size=k)
    return lambda x: jnp.asarray(w, x.dtype) @ x.reshape(-1) + jnp.asarray(b, x.dtype)


@pytest.mark.parametrize(("n", "d", "k", "blocks"), [(4, 6, 3, "token"), (4, 6, 3, "joint"), (3, 5, 2, "token")])
def test_a_linear_map_in_a_box_keeps_its_outputs_for_every_seed(n: int, d: int, k: int, blocks: str) -> None:
    """y = W x + b over 50 starting points (one batched call): the predictor is clipped into the
    box and the box correction brings y back exactly, so every saved point lies in the box
    and keeps y0 to float64 rounding (1e-12 relative), with no UNCONVERGED step; the walks
    reach the box and go far."""
    f = _linear(2, n, d, k)
    with jax.enable_x64(True):
        x0 = jnp.asarray(np.stack([np.random.default_rng(s).uniform(-0.5, 0.5, (n, d)) for s in range(SEEDS)]))
        traj = mj.simec(f, x0, key=KEY, steps=200, eta=0.2, step_rule="fixed", direction="coherent", blocks=blocks,
                        bounds=(-0.55, 0.55), box="active", corrector="newton", tol=1e-12, save_every=1)
        y0 = np.asarray(jax.vmap(f)(x0))
    assert (traj.x >= -0.55).all() and (traj.x <= 0.55).all()
    error = np.abs(traj.y - y0[:, None]).max(axis=(1, 2)) / np.abs(y0).max(axis=1)
    assert (error <= 1e-12).all(), (np.flatnonzero(error > 1e-12), error.max())
    assert not (traj.status & UNCONVERGED).any()
    reached = (np.abs(traj.x) == 0.55).any(axis=(2, 3))
    assert reached.any(axis=1).all(), "every walk must reach the box for the test to mean anything"
    assert (traj.distance[:, -1] > 0.5).all()


def _inward_case(blocks: str) -> tuple[mj.ExplorationState, mj.ExploreConfig, object]:
    """y = x_0 + x_1 in [0, 1]^3 at x = (0, 1, 0.5), off its level 1.2; the previous tangent
    (-1, 1, 0)/sqrt 2 pushes both bound coordinates outward (so the active set freezes
    them for the predictor), yet y returns to 1.2 only if x_0 moves inward."""
    def f(x: jax.Array) -> jax.Array:
        return (x[0, 0] + x[0, 1])[None]

    state = mj.init_state(jnp.asarray([[0.3, 0.9, 0.5]]), KEY, f=f)
    state = dataclasses.replace(state, x=jnp.asarray([[0.0, 1.0, 0.5]]),
                                tangent=jnp.asarray([[-1.0, 1.0, 0.0]]) / np.sqrt(2.0))
    cfg = mj.ExploreConfig(algorithm="simec", eta=0.5, step_rule="fixed", direction="coherent", blocks=blocks,
                           box="active", corrector=mj.Newton(tol=1e-12))
    return state, cfg, f


@pytest.mark.parametrize("blocks", ["token", "joint"])
def test_a_correction_that_needs_a_bound_coordinate_to_move_inward(blocks: str) -> None:
    with jax.enable_x64(True):
        state, cfg, f = _inward_case(blocks)
        state = jax.tree.map(lambda v: v.astype(jnp.float64) if jnp.issubdtype(v.dtype, jnp.floating) else v, state)
        new, record = jax.jit(lambda s: mj.step(f, s, cfg, bounds=(0.0, 1.0)))(state)
        x = np.asarray(new.x)
        y = float(f(new.x)[0])
    assert int(record["status"]) & UNCONVERGED == 0
    assert y == pytest.approx(1.2, abs=1e-12)
    assert 0.0 < x[0, 0] <= 1.0 and x[0, 1] == 1.0 and 0.0 <= x[0, 2] <= 1.0


def test_a_fixed_step_too_long_to_correct_is_retried_shorter() -> None:
    """On an ellipsoid a step of length h leaves the level set by ~h^2 and each chord
    correction contracts that by ~h: with two corrections to 1e-9, steps of 0.1 do not
    converge and are halved. Every step then either keeps y0 to the tolerance or is given
    up (UNCONVERGED, the point stays), so the level set holds at every saved point."""
    a = np.linspace(0.5, 2.0, 6)

    def f(x: jax.Array) -> jax.Array:
        return jnp.sum(jnp.asarray(a, x.dtype).reshape(x.shape) * x**2)[None]

    with jax.enable_x64(True):
        x0 = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3)) / 2)
        traj = mj.simec(f, x0, key=KEY, steps=40, eta=0.1, step_rule="fixed", direction="coherent", blocks="joint",
                        corrector=mj.Newton(tol=1e-9, max_iters=2))
        y0 = float(f(x0)[0])
    assert np.abs(traj.y[:, 0] - y0).max() <= 1e-9
    given_up = (traj.status[:-1] & UNCONVERGED) != 0
    np.testing.assert_array_equal(traj.x[1:][given_up], traj.x[:-1][given_up])
    taken = traj.h[:-1][~given_up]
    assert (taken < 0.1).any(), "some step must have been halved for the test to mean anything"
    np.testing.assert_allclose(np.log2(0.1 / taken), np.round(np.log2(0.1 / taken)), atol=1e-12)
    assert (taken >= 0.1 / 2**4).all()
    assert traj.distance[-1] > 0.2
