"""Minimal counterfactuals (``mj.counterfactual``) on models whose closest boundary point is known:
a linear classifier (a projection, in closed form), the same in a box (a clipped projection:
KKT with an active set, checked against SLSQP), spheres and ellipsoids, batches with different
targets, bad inputs, jit / vmap, and the shipped MNIST ViT in pixel space."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize

import manifold_jax as mj

DELTA = 1e-3


def _linear(seed: int = 0, k: int = 4, shape: tuple[int, int] = (2, 3)) -> tuple[np.ndarray, np.ndarray, Callable]:
    rng = np.random.default_rng(seed)
    w, b = rng.normal(size=(k, shape[0] * shape[1])), rng.normal(size=k)
    return w, b, lambda x: jnp.asarray(w) @ x.reshape(-1) + jnp.asarray(b)


def _slsqp(x0: np.ndarray, constraints: list[Callable[[np.ndarray], float]],
           bounds: tuple[float, float] | None = None) -> np.ndarray:
    """The closest point to x0 (flat) with every constraint >= 0, by SLSQP at tight tolerance."""
    res = minimize(lambda z: 0.5 * np.sum((z - x0) ** 2), x0, jac=lambda z: z - x0, method="SLSQP",
                   constraints=[{"type": "ineq", "fun": c} for c in constraints],
                   bounds=None if bounds is None else [bounds] * x0.size, options={"ftol": 1e-12, "maxiter": 1000})
    assert res.success, res.message
    return np.asarray(res.x)


def _polyhedron_projection(x0: np.ndarray, a: np.ndarray, c: np.ndarray) -> np.ndarray:
    """The closest point to x0 of {a z >= c} (few rows), exactly: the active set whose projection is
    feasible with non-negative multipliers."""
    rows = a.shape[0]
    for mask in range(1, 2 ** rows):
        s = [r for r in range(rows) if mask >> r & 1]
        mult = np.linalg.solve(a[s] @ a[s].T, c[s] - a[s] @ x0)
        z = x0 + a[s].T @ mult
        if np.all(mult >= 0) and np.all(a @ z >= c - 1e-12):
            return z
    raise AssertionError("no active set found")


def test_linear_source_margin_is_the_projection_onto_the_hyperplane() -> None:
    """f_t - f_s = w.x + c is linear: the closest point of {m = delta} is x0 + (delta - m0) w / |w|^2."""
    with jax.enable_x64(True):
        w, b, f = _linear()
        x0 = np.random.default_rng(1).normal(size=(6, 2, 3))
        y0 = x0.reshape(6, -1) @ w.T + b
        source = y0.argmax(1)
        target = (source + 1) % 4
        out = mj.counterfactual(f, x0, target, margin="source", overshoot=DELTA)
        for i in range(6):
            normal = w[target[i]] - w[source[i]]
            m0 = y0[i, target[i]] - y0[i, source[i]]
            expected = x0[i].reshape(-1) + (DELTA - m0) / (normal @ normal) * normal
            np.testing.assert_allclose(np.asarray(out.x[i]).reshape(-1), expected, rtol=0, atol=1e-6)
            np.testing.assert_allclose(float(out.distance[i]), np.linalg.norm(expected - x0[i].reshape(-1)), atol=1e-6)
        np.testing.assert_allclose(np.asarray(out.margin), DELTA, atol=1e-9)
        assert np.asarray(out.source).tolist() == source.tolist()
        # reached means the target is the predicted class: a third class may win on that hyperplane
        predicted = (np.asarray(out.x).reshape(6, -1) @ w.T + b).argmax(1)
        assert np.asarray(out.reached).tolist() == (predicted == target).tolist()
        assert np.all(np.asarray(out.kkt)[np.asarray(out.reached)] < 1e-9)


def test_linear_best_other_margin_matches_the_quadratic_program() -> None:
    """With margin="other" the target region is a polyhedron {f_t - f_j >= delta for all j}; with
    rows = k - 1 every constraint is seen, and the answer is the QP's, several constraints active."""
    with jax.enable_x64(True):
        w, b, f = _linear()
        x0 = np.random.default_rng(1).normal(size=(5, 2, 3))
        y0 = x0.reshape(5, -1) @ w.T + b
        target = (y0.argmax(1) + 1) % 4
        out = mj.counterfactual(f, x0, target, overshoot=DELTA, rows=3)
        assert bool(np.all(out.reached)) and bool(np.all(out.converged))
        for i in range(5):
            t = int(target[i])
            others = [j for j in range(4) if j != t]
            a = np.stack([w[t] - w[j] for j in others])
            expected = _polyhedron_projection(x0[i].reshape(-1), a, np.array([DELTA - b[t] + b[j] for j in others]))
            np.testing.assert_allclose(np.asarray(out.x[i]).reshape(-1), expected, atol=1e-6)
        assert float(np.max(out.kkt)) < 1e-8
        assert np.asarray(out.reached).all()


def test_box_clips_the_projection_and_the_certificate_holds_with_the_active_set() -> None:
    """In [0, 1] the hyperplane's projection leaves the box: the answer clips some coordinates
    (found by SLSQP with bounds), and the KKT residual with the bounds' multipliers is ~0."""
    with jax.enable_x64(True):
        w = np.array([[0.0, 0.0, 0.0, 0.0], [3.0, 1.0, 0.5, -0.2]])
        f = lambda x: jnp.asarray(w) @ x.reshape(-1) + jnp.array([0.0, -3.8])  # noqa: E731
        x0 = np.array([[0.7, 0.2], [0.4, 0.5]])
        free = x0.reshape(-1) + (3.8 + DELTA - w[1] @ x0.reshape(-1)) / (w[1] @ w[1]) * w[1]
        assert free.max() > 1  # the unconstrained projection leaves the box
        out = mj.counterfactual(f, x0, 1, bounds=(0.0, 1.0), overshoot=DELTA)
        expected = _slsqp(x0.reshape(-1), [lambda z: w[1] @ z - 3.8 - DELTA], bounds=(0.0, 1.0))
        assert bool(out.reached) and bool(out.converged)
        np.testing.assert_allclose(np.asarray(out.x).reshape(-1), expected, atol=1e-6)
        assert np.sum(np.asarray(out.x) == 1.0) >= 1 and float(out.kkt) < 1e-8
        np.testing.assert_allclose(float(out.margin), DELTA, atol=1e-9)


def _quadratic(a: np.ndarray, centre: np.ndarray) -> Callable[[jax.Array], jax.Array]:
    """Two logits (0, 1 - (x - c)^T A (x - c)): class 1 inside the ellipsoid."""
    def f(x: jax.Array) -> jax.Array:
        v = x.reshape(-1) - centre
        return jnp.stack([jnp.zeros((), x.dtype), 1 - v @ jnp.asarray(a) @ v])

    return f


def test_sphere_closest_point_is_radial() -> None:
    with jax.enable_x64(True):
        centre = np.array([0.3, -0.2, 0.1])
        f = _quadratic(np.eye(3), centre)
        x0 = np.array([[[2.0, 1.0, -1.0]], [[0.3, 2.2, 0.4]]])
        out = mj.counterfactual(f, x0, 1, overshoot=DELTA)
        assert np.all(np.abs(np.asarray(out.margin) - DELTA) <= DELTA / 2)
        for i in range(2):
            radius = np.sqrt(1 - float(out.margin[i]))  # the level it ended on, within level_tol of DELTA
            v = x0[i, 0] - centre
            np.testing.assert_allclose(np.asarray(out.x[i, 0]), centre + radius * v / np.linalg.norm(v), atol=1e-6)
        assert bool(np.all(out.converged))


def test_ellipsoid_needs_the_slide_and_matches_slsqp() -> None:
    """On an ellipsoid the gradient walk does not end at the closest point: the slide along the
    level set does, to SLSQP's answer."""
    with jax.enable_x64(True):
        a = np.diag([4.0, 1.0, 0.25])
        f = _quadratic(a, np.zeros(3))
        x0 = np.array([[1.5, 1.5, 2.5]])
        out = mj.counterfactual(f, x0, 1, overshoot=DELTA, tol=1e-8)
        level = float(out.margin)  # the slide ends on the level (the corrector converges there)
        assert abs(level - DELTA) < 1e-9
        expected = _slsqp(x0.reshape(-1), [lambda z: 1 - z @ a @ z - level])
        assert bool(out.reached) and bool(out.converged)
        np.testing.assert_allclose(np.asarray(out.x).reshape(-1), expected, atol=1e-6)
        phases = np.asarray(out.path_phase)
        assert {0, 1, 2, 3} <= set(phases.tolist())  # reached, located, slid, done
        reach_end = np.asarray(out.path_distance)[np.flatnonzero(phases == 2)[0]]
        assert float(out.distance) < reach_end - 1e-3  # the slide shortened the reach's answer


def test_batched_items_with_different_targets_equal_single_runs() -> None:
    with jax.enable_x64(True):
        w, b, f = _linear(seed=3, k=5)
        x0 = np.random.default_rng(4).normal(size=(4, 2, 3))
        source = (x0.reshape(4, -1) @ w.T + b).argmax(1)
        target = np.array([(s + 1 + i) % 5 for i, s in enumerate(source)])
        assert len(set(target.tolist())) > 1
        batch = mj.counterfactual(f, x0, target, rows=4)
        for i in range(4):
            one = mj.counterfactual(f, x0[i], int(target[i]), rows=4)
            np.testing.assert_allclose(np.asarray(one.x), np.asarray(batch.x[i]), atol=1e-12)
            assert bool(one.reached) == bool(batch.reached[i]) and int(one.target) == target[i]


def test_unreachable_target_is_reported_not_reached() -> None:
    """x1 + x2 >= 3 has no point in [0, 1]^2: the item stops at the corner, reached False, kkt NaN."""
    f = lambda x: jnp.stack([jnp.zeros(()), x.sum() - 3.0])  # noqa: E731
    out = mj.counterfactual(f, jnp.array([[0.2, 0.3]]), 1, bounds=(0.0, 1.0), max_steps=50)
    assert not bool(out.reached) and not bool(out.converged) and bool(np.isnan(out.kkt))
    assert float(out.margin) < 0 and int(out.iterations) < 50
    np.testing.assert_allclose(np.asarray(out.x), [[1.0, 1.0]])


@pytest.mark.parametrize(("target", "kwargs", "error", "match"), [
    (0, {}, ValueError, "target class 0 is already the predicted class of item 0"),
    (7, {}, ValueError, "target class 7 is out of range: f has 4 outputs"),
    (np.array([1, 2, 3]), {}, ValueError, "target holds 3 class indices .* one per item \\(2\\)"),
    (1.5, {}, TypeError, "target must be a class index"),
    (1, {"margin": "worst"}, ValueError, "margin='worst' is not supported"),
    (1, {"overshoot": 1e-3, "level_tol": 1e-2}, ValueError, "level_tol must be below overshoot"),
    (1, {"max_steps": 0}, ValueError, "max_steps must be a positive integer"),
])
def test_bad_inputs_get_named_errors(target: Any, kwargs: dict[str, Any], error: type, match: str) -> None:
    f = lambda x: jnp.array([10.0, 0.0, 0.0, 0.0]) + x.reshape(-1)[:4]  # noqa: E731
    with pytest.raises(error, match=match):
        mj.counterfactual(f, jnp.zeros((2, 2, 2)), target, **kwargs)


def test_jit_and_vmap_give_the_eager_answer() -> None:
    w, b, f = _linear(seed=5)
    x0 = jnp.asarray(np.random.default_rng(6).normal(size=(3, 2, 3)), jnp.float32)
    target = jnp.asarray((np.asarray(x0).reshape(3, -1) @ w.T + b).argmax(1) + 1) % 4
    eager = mj.counterfactual(f, x0, target, rows=3)
    jitted = jax.jit(lambda x, t: mj.counterfactual(f, x, t, rows=3))(x0, target)
    mapped = jax.vmap(lambda x, t: mj.counterfactual(f, x, t, rows=3))(x0, target)
    for other in (jitted, mapped):
        np.testing.assert_allclose(np.asarray(other.x), np.asarray(eager.x), atol=1e-5)
        assert np.asarray(other.reached).tolist() == np.asarray(eager.reached).tolist()


@pytest.mark.slow
def test_mnist_vit_pixel_space_reaches_the_runner_up_with_a_certificate() -> None:
    """Two held-out digits (test images 5 and 6 of the seed-0 split) to their runner-up class in
    pixel space: both reached, the decoded image re-predicted as the target, the margin at the
    overshoot, and the KKT residual under tol. (On some digits, test image 0 for one, the boundary
    curves so fast that the slide stops short of tol within 200 steps; those report converged False.)"""
    from manifold_jax.data import mnist_split
    from manifold_jax.models import load

    model = load("mnist-vit").pixel_space()
    images = mnist_split(seed=0).test_images[5:7, ..., None]
    x0, ctx = model.embed(images)
    logits = np.asarray(jax.vmap(model.head)(x0, ctx))
    runner_up = np.argsort(logits, axis=1)[:, -2]
    out = mj.counterfactual(model.head, x0, runner_up, args=(ctx,), select=ctx["token_mask"], bounds=model.bounds())
    assert bool(np.all(out.reached)) and bool(np.all(out.converged)), (out.kkt, out.iterations)
    assert np.all(np.abs(np.asarray(out.margin) - DELTA) <= DELTA / 2)
    again = model.embed(model.decode(out.x, ctx))[0]
    predicted = np.asarray(jax.vmap(model.head)(again, ctx)).argmax(1)
    assert predicted.tolist() == runner_up.tolist()
    assert float(np.max(out.x)) <= 1 and float(np.min(out.x)) >= 0
    # the slide only moves closer: the answer is no farther than the located crossing it started from
    start = np.argmax(np.asarray(out.path_phase) == 2, axis=1)
    assert np.all(np.asarray(out.distance) <= np.asarray(out.path_distance)[np.arange(2), start] * (1 + 1e-6))


@pytest.mark.slow
def test_a_reach_stalled_where_three_other_classes_tie_needs_three_rows() -> None:
    """Held-out digit 8 of the seed-0 split (a 5) toward class 1 in pixel space: the reach walks
    to a point where three other classes (5, 6, 8) share the best logit. Lifting two of them at
    a time (rows=2) leaves the third above the target: the margin stalls below 0 and the pair is
    reported not reached. Three rows (the default) lift all three and reach the target."""
    from manifold_jax.data import mnist_split
    from manifold_jax.models import load

    model = load("mnist-vit").pixel_space()
    x0, ctx = model.embed(mnist_split(seed=0).test_images[8:9, ..., None])
    options = dict(args=(ctx,), select=ctx["token_mask"], bounds=model.bounds())
    two = mj.counterfactual(model.head, x0, np.array([1]), rows=2, **options)
    y = np.asarray(model.head(two.x[0], jax.tree.map(lambda a: a[0], ctx)))
    top = np.sort(y)[-3:]
    assert not bool(two.reached[0]) and float(two.margin[0]) < 0
    assert np.argmax(y) != 1 and float(top[-1] - top[0]) < 1e-3 * abs(float(top[-1]))  # three tie at the top
    three = mj.counterfactual(model.head, x0, np.array([1]), **options)
    assert bool(three.reached[0]) and abs(float(three.margin[0]) - DELTA) <= DELTA / 2
