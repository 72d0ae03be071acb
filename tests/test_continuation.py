"""Exploration as numerical continuation: analytic level sets where the answer is known.

Corrector (Gauss-Newton onto the level set), coherent directions, fixed and adaptive
steps, the box as an active set, targeted SiMExp, SiMEC toward a goal, stop events,
exact resume, and the public pure functions under jit / vmap / grad.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import manifold_jax as mj
from manifold_jax.explore import RECORD_FIELDS, REJECTED, STOPPED, UNCONVERGED

KEY = jax.random.PRNGKey(0)


def ellipsoid(a: np.ndarray):
    """f(x) = [sum_i a_i x_i^2]: its level sets are ellipsoids, curved in every direction."""
    return lambda x: jnp.sum(jnp.asarray(a, x.dtype).reshape(x.shape) * x**2)[None]


def linear_classifier(seed: int, n: int, d: int, k: int):
    """Logits y = W vec(x) + b: affine level sets, a full-row-rank Jacobian W (k < n d)."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(k, n * d)) / np.sqrt(n * d)
    b = rng.normal(size=k)
    return (lambda x: jnp.asarray(w, x.dtype) @ x.reshape(-1) + jnp.asarray(b, x.dtype)), w, b


# --------------------------------------------------------------------------- the corrector


def test_simec_with_the_corrector_stays_on_an_ellipsoid_to_1e_12() -> None:
    """A quadratic map's level set is an ellipsoid: without correction a tangent step of length
    h leaves it by ~kappa h^2 (here ~1e-3); the chord corrector contracts that by ~kappa h
    (~0.04) per iteration, so 10 iterations reach the 1e-13 tolerance, which every accepted
    point then satisfies. 1e-12 leaves a margin of 10 over float64 rounding of y ~ 1."""
    a = np.linspace(0.5, 2.0, 6)
    f = ellipsoid(a)
    with jax.enable_x64(True):
        x0 = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3)) / 2, jnp.float64)
        traj = mj.simec(f, x0, key=KEY, steps=1000, save_every=10, eta=0.02, step_rule="fixed",
                        direction="coherent", blocks="joint", corrector=mj.Newton(tol=1e-13, max_iters=10))
        plain = mj.simec(f, x0, key=KEY, steps=1000, save_every=10, eta=0.02, step_rule="fixed",
                         direction="coherent", blocks="joint")
        y0 = float(f(x0)[0])
    assert (traj.status & UNCONVERGED == 0).all()
    assert np.abs(traj.y[:, 0] - y0).max() <= 1e-12, np.abs(traj.y[:, 0] - y0).max()
    # it really walked 1000 steps of 0.02; each correction adds ~kappa h^2 / h = 2 % of a step at most
    assert traj.arc_length[-1] == pytest.approx(1000 * 0.02, rel=2e-2)
    assert traj.distance.max() > 0.3, "on an ellipsoid of radius ~0.5 the walk must get far from x0"
    assert np.abs(plain.y[:, 0] - y0).max() > 1e-4, "without the corrector the walk must drift off"


def test_the_corrector_converges_quadratically() -> None:
    """Minimum-norm Gauss-Newton on an underdetermined system: |F| roughly squares per step.

    For F = sum a_i x_i^2 - c the error after one step is bounded by (max a / 4 min a^2...)
    of order |F|^2 / |grad F|^2 * max a: here below |F|^2 (a in [0.5, 2], |x| ~ 1)."""
    a = np.linspace(0.5, 2.0, 6)
    f = ellipsoid(a)
    with jax.enable_x64(True):
        rng = np.random.default_rng(1)
        x = jnp.asarray(rng.normal(size=(2, 3)), jnp.float64)
        anchor = f(x) * 1.1  # the level set lies 10 % away
        residuals = [float(jnp.abs(f(x) - anchor)[0])]
        for _ in range(5):
            x = mj.newton_correction(f, x, anchor)
            residuals.append(float(jnp.abs(f(x) - anchor)[0]))
    r = np.array(residuals)
    big = r[:-1] > 1e-7  # above float64 rounding of the square
    assert big.sum() >= 3
    assert (r[1:][big] <= r[:-1][big] ** 2).all(), r
    assert r[-1] <= 1e-14, r


def test_a_linear_map_in_a_box_keeps_its_outputs_and_the_box_exactly() -> None:
    """y = W x: a clipped step leaves the level set (the clip is not a null move); the
    active set freezes the coordinates at a bound that the step pushes out, and the
    corrector removes what clipping the others leaves. Every saved point satisfies
    lo <= x <= hi exactly, and y stays to float64 rounding (1e-12 relative)."""
    f, _, _ = linear_classifier(2, 4, 6, 3)
    with jax.enable_x64(True):
        x0 = jnp.asarray(np.random.default_rng(3).uniform(-0.5, 0.5, size=(4, 6)))
        common = dict(key=KEY, steps=300, eta=0.2, step_rule="fixed", direction="coherent", bounds=(-0.55, 0.55))
        active = mj.simec(f, x0, box="active", corrector="newton", tol=1e-12, **common)
        clipped = mj.simec(f, x0, **common)
        y0 = np.asarray(f(x0))
    assert (active.x >= -0.55).all() and (active.x <= 0.55).all()
    at_bound = np.abs(active.x[-1]) == 0.55
    assert at_bound.sum() >= 3, "the walk must reach the box for the test to mean anything"
    assert np.abs(active.y - y0).max() <= 1e-12 * np.abs(y0).max()
    assert np.abs(clipped.y - y0).max() >= 1e-3, "clipping alone must move the outputs"
    assert active.distance[-1] > 0.5


# --------------------------------------------------------------------------- directions


@pytest.mark.parametrize("blocks", ["token", "joint"])
def test_coherent_paths_on_a_planes_null_space_are_straight_lines(blocks: str) -> None:
    """For linear f the null space is the same at every point, so transporting the tangent
    onto it changes nothing: x_k = x0 + k h T, distance from x0 equals the arc length and
    the displacements span one direction (float64 rounding over 200 steps: ~1e-13)."""
    f, _, _ = linear_classifier(4, 3, 5, 2)
    with jax.enable_x64(True):
        x0 = jnp.asarray(np.random.default_rng(5).normal(size=(3, 5)))
        traj = mj.simec(f, x0, key=KEY, steps=200, eta=0.1, step_rule="fixed", direction="coherent", blocks=blocks)
    np.testing.assert_allclose(traj.distance, traj.arc_length, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(traj.distance[-1], 200 * 0.1, rtol=1e-10)
    offsets = (traj.x - np.asarray(x0)).reshape(len(traj.iteration), -1)
    s = np.linalg.svd(offsets, compute_uv=False)
    assert s[1] <= 1e-10 * s[0], s[:3]


def test_random_directions_walk_like_a_random_walk() -> None:
    """The reference's random null directions: distance ~ h sqrt(K), far below the arc length."""
    f, _, _ = linear_classifier(4, 3, 5, 2)
    x0 = jnp.asarray(np.random.default_rng(5).normal(size=(3, 5)), jnp.float32)
    traj = mj.simec(f, x0, key=KEY, steps=400, eta=0.1, step_rule="fixed", blocks="joint")
    # 400 independent unit directions in a 13-dim null space: |sum| ~ sqrt(400) h = 2, far below 40
    assert traj.distance[-1] < 0.25 * traj.arc_length[-1]


# --------------------------------------------------------------------------- targets and goals


def _predicted_flip_step(w: np.ndarray, b: np.ndarray, x0: np.ndarray, target: int, h: float) -> int:
    """The reduced dynamics of targeted SiMExp on y = W x + b, in numpy: x moves by
    h W^+ dy / |W^+ dy| with dy = e_c - p, so y moves by h dy / |W^+ dy|."""
    pinv = np.linalg.pinv(w)
    x = x0.reshape(-1).astype(np.float64)
    for t in range(10_000):
        y = w @ x + b
        if np.argmax(y) == target:
            return t
        p = np.exp(y - y.max())
        p /= p.sum()
        dx = pinv @ (np.eye(len(b))[target] - p)
        x = x + h * dx / np.linalg.norm(dx)
    raise AssertionError("the reduced dynamics never reached the target")


def test_targeted_simexp_flips_a_linear_classifier_when_the_algebra_says() -> None:
    """Each item of a batch stops at the step the reduced (k-dimensional) dynamics predict,
    then freezes; the loop ends once every item has stopped."""
    f, w, b = linear_classifier(6, 4, 6, 4)
    with jax.enable_x64(True):
        x0 = jnp.asarray(np.random.default_rng(7).normal(size=(3, 4, 6)))
        y0 = np.asarray(jax.vmap(f)(x0))
        targets = [int(np.argsort(y)[0]) for y in y0]  # the least likely class of each
        traj = mj.simexp(f, x0, key=KEY, steps=2000, eta=0.05, step_rule="fixed", target=targets,
                         stop="flip", save_every=1, chunk_size=50)
    predicted = [_predicted_flip_step(w, b, np.asarray(x0[i]), targets[i], 0.05) for i in range(3)]
    np.testing.assert_array_equal(traj.stop_iteration, predicted)
    assert traj.iteration[-1] == max(predicted) < 2000, "the loop must end when every item has stopped"
    for i, s in enumerate(predicted):
        assert np.argmax(traj.y[i, s]) == targets[i] and np.argmax(traj.y[i, s - 1]) != targets[i]
        np.testing.assert_array_equal(traj.x[i, s:], np.broadcast_to(traj.x[i, s], traj.x[i, s:].shape))
        assert (traj.status[i, s:] == STOPPED).all() and not (traj.status[i, :s] & STOPPED).any()


def test_targeted_simexp_reaches_a_class_of_a_transformer() -> None:
    from tests.toy_models import toy_classifier

    f, x0 = toy_classifier(jax.random.PRNGKey(7), n=6, d=16, k=4)
    mask = jnp.ones((6,), bool)
    y0 = np.asarray(f(x0, mask))
    target = int(np.argsort(y0)[1])
    traj = mj.simexp(f, x0, key=KEY, steps=300, eta=0.1, step_rule="adaptive", tol=1e-3, args=(mask,),
                     select=np.arange(1, 6), target=target, stop="flip")
    assert 0 < int(traj.stop_iteration) < 300
    assert np.argmax(traj.y[-1]) == target
    # SiMExp moves only the selected tokens
    np.testing.assert_array_equal(traj.x[:, 0], np.broadcast_to(np.asarray(x0[0]), traj.x[:, 0].shape))


def test_simec_toward_a_goal_stays_in_class_and_gets_closer() -> None:
    """On y = W x the closest point of x0's level set to a goal g is x0 + P_null (g - x0): a
    straight walk toward it ends there, at distance |P_row (g - x0)| (float64 rounding)."""
    f, w, _ = linear_classifier(8, 3, 4, 2)
    with jax.enable_x64(True):
        rng = np.random.default_rng(9)
        x0 = jnp.asarray(rng.normal(size=(3, 4)))
        goal = jnp.asarray(rng.normal(size=(3, 4)))
        traj = mj.simec(f, x0, key=KEY, steps=200, eta=0.05, step_rule="fixed", goal=goal, blocks="joint")
        y0 = np.asarray(f(x0))
    assert np.abs(traj.y - y0).max() <= 1e-12
    offset = np.asarray(goal - x0).reshape(-1)
    row = np.linalg.pinv(w) @ (w @ offset)
    assert float(traj.final.closest) == pytest.approx(np.linalg.norm(row), rel=1e-9)
    assert traj.goal_distance[-1] == pytest.approx(np.linalg.norm(row), rel=1e-9)
    assert (np.diff(traj.goal_distance) <= 1e-12).all(), "the distance to the goal never grows"


# --------------------------------------------------------------------------- step-size control


def test_adaptive_steps_grow_where_the_set_is_flat_and_shrink_where_it_curves() -> None:
    """On an ellipsoid of radius ~1 a step of length h changes y by ~h^2: with tol 1e-6 on
    that change and no corrector the controller settles near h ~ 1e-3, rejecting what is
    too long, and the drift of the accepted steps adds up to at most 300 tol; on a
    linear map (no curvature) every step is accepted and h grows to its cap."""
    a = np.linspace(0.5, 2.0, 6)
    with jax.enable_x64(True):
        x0 = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3)) / 2)
        curved = mj.simec(ellipsoid(a), x0, key=KEY, steps=300, eta=0.1, step_rule="adaptive", tol=1e-6,
                          direction="coherent", blocks="joint")
        f, _, _ = linear_classifier(2, 2, 3, 1)
        flat = mj.simec(f, x0, key=KEY, steps=60, eta=0.1, step_rule=mj.Adaptive(tol=1e-6, max_step=5.0),
                        direction="coherent", blocks="joint")
        y0 = float(ellipsoid(a)(x0)[0])
    accepted = (curved.status & REJECTED) == 0
    assert curved.rejected[-1] >= 1 and accepted.sum() > len(accepted) // 2
    assert np.abs(curved.y[:, 0] - y0).max() <= 1e-6 * 300, "each accepted step keeps its error under tol"
    assert curved.h[-1] < 0.02
    assert flat.rejected[-1] == 0 and flat.h[-1] == pytest.approx(5.0)


# --------------------------------------------------------------------------- resume and batches


RESUMABLE = {
    "corrector-coherent-fixed": dict(corrector="newton", direction="coherent", step_rule="fixed", eta=0.2),
    "adaptive-active-box": dict(step_rule="adaptive", tol=1e-4, corrector="newton", box="active", eta=0.2,
                                bounds=(-1.5, 1.5)),
    "targeted-flip": dict(algorithm="simexp", step_rule="fixed", eta=0.05, target=0, stop="flip"),
    "goal-distance-stop": dict(step_rule="fixed", eta=0.05, goal="goal", stop=mj.Distance(1.5)),
    "coherent-simexp-reference": dict(algorithm="simexp", direction="coherent", eta=5.0),
}


@pytest.mark.parametrize("options", list(RESUMABLE.values()), ids=list(RESUMABLE))
def test_resume_is_bit_identical_with_every_option(options: dict) -> None:
    from tests.toy_models import toy_classifier

    f, _ = toy_classifier(jax.random.PRNGKey(10), n=5, d=8, k=3)
    xs = jax.random.normal(jax.random.PRNGKey(11), (2, 5, 8))
    masks = jnp.ones((2, 5), bool)
    options = dict(options)
    algorithm = options.pop("algorithm", "simec")
    if options.get("goal") == "goal":
        options["goal"] = xs[::-1]
    if "target" in options:
        y0 = np.asarray(jax.vmap(f)(xs, masks))
        options["target"] = [int(np.argsort(y)[0]) for y in y0]
    common = dict(args=(masks,), save_every=2, chunk_size=14, **options)
    whole = mj.explore(f, xs, algorithm=algorithm, key=KEY, steps=60, **common)
    first = mj.explore(f, xs, algorithm=algorithm, key=KEY, steps=30, **common)
    saved = {k: np.asarray(v) for k, v in vars(first.final).items()}  # as a checkpoint would
    state = mj.ExplorationState(**{k: jnp.asarray(v) for k, v in saved.items()})
    rest = mj.explore(f, state, algorithm=algorithm, steps=30, **common)
    joined = first.extend(rest)
    for name in (*RECORD_FIELDS, "iteration"):
        np.testing.assert_array_equal(getattr(joined, name), getattr(whole, name), err_msg=name)
    for name, value in vars(whole.final).items():
        np.testing.assert_array_equal(np.asarray(getattr(joined.final, name)), np.asarray(value), err_msg=name)


def test_precision_is_the_only_difference_between_float32_and_float64() -> None:
    """The random draws are made in float32 whatever the dtype, so a float64 run takes the same
    directions: over 100 steps of a contractive-free linear walk the two agree to float32
    rounding accumulated over the steps (~100 * 1e-7 relative)."""
    from tests.toy_models import toy_classifier

    f, x0 = toy_classifier(jax.random.PRNGKey(12), n=5, d=8, k=3)
    mask = jnp.ones((5,), bool)
    low = mj.simec(f, x0, key=KEY, steps=100, eta=5.0, args=(mask,), save_every=10)
    with jax.enable_x64(True):
        f64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a, f)
        high = mj.simec(f64, jnp.asarray(x0, jnp.float64), key=KEY, steps=100, eta=5.0, args=(mask,), save_every=10)
    scale = np.abs(high.x).max()
    assert np.abs(low.x - high.x).max() <= 1e-4 * scale
    assert np.abs(high.x[-1] - high.x[0]).max() > 1e-2, "the walk must move for the comparison to mean anything"


# --------------------------------------------------------------------------- composing with JAX


def test_spectrum_pullback_and_step_compose_with_jit_vmap_and_grad() -> None:
    from tests.toy_models import toy_classifier

    f, x0 = toy_classifier(jax.random.PRNGKey(13), n=4, d=6, k=3)
    mask = jnp.ones((4,), bool)
    eager = mj.spectrum(f, x0, mask).eigenvalues
    np.testing.assert_allclose(jax.jit(lambda x: mj.spectrum(f, x, mask).eigenvalues)(x0), eager, rtol=1e-5, atol=1e-7)
    xs = jnp.stack([x0, x0 * 1.1])
    batched = jax.vmap(lambda x: mj.spectrum(f, x, mask).eigenvalues)(xs)
    np.testing.assert_allclose(batched[1], mj.spectrum(f, xs[1], mask).eigenvalues, rtol=1e-5, atol=1e-7)
    # a traced selection mask keeps a block per position, the unselected ones exactly null
    sel = jnp.array([True, False, True, True])
    traced = jax.jit(lambda x, s: mj.spectrum(f, x, mask, select=s).eigenvalues)(x0, sel)
    chosen = mj.spectrum(f, x0, mask, select=[0, 2, 3]).eigenvalues
    np.testing.assert_allclose(np.asarray(traced)[[0, 2, 3]], chosen, rtol=1e-5, atol=1e-7)
    assert float(jnp.abs(traced[1]).max()) == 0.0
    g = jax.grad(lambda x: mj.spectrum(f, x, mask).eigenvalues[:, 0].sum())(x0)
    eps = 1e-3
    direction = jax.random.normal(KEY, x0.shape)
    numeric = (mj.spectrum(f, x0 + eps * direction, mask).eigenvalues[:, 0].sum()
               - mj.spectrum(f, x0 - eps * direction, mask).eigenvalues[:, 0].sum()) / (2 * eps)
    assert float(jnp.sum(g * direction)) == pytest.approx(float(numeric), rel=2e-2)
    metric = mj.pullback_metric(f, x0, mask)
    np.testing.assert_allclose(jax.jit(lambda x: mj.pullback_metric(f, x, mask))(x0), metric, rtol=1e-5, atol=1e-7)

    cfg = mj.ExploreConfig(algorithm="simec", eta=0.1, step_rule="fixed", corrector="newton", direction="coherent")
    state = mj.init_state(x0, KEY, f=f, args=(mask,))
    # one step compiled alone equals the first step of a scan of them (op-by-op dispatch of a whole
    # step, primitive by primitive, would cost more than every compiled program of this test)
    step_jit = jax.jit(lambda s: mj.step(f, s, cfg, args=(mask,)))
    jit_state, jit_rec = step_jit(state)

    def scan_body(s: mj.ExplorationState, _: None) -> tuple[mj.ExplorationState, tuple[jax.Array, jax.Array]]:
        s, rec = mj.step(f, s, cfg, args=(mask,))
        return s, (rec["drift"], s.x)

    end, (drifts, xs_scanned) = jax.lax.scan(scan_body, state, None, length=20)
    np.testing.assert_allclose(xs_scanned[0], jit_state.x, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(f(jit_state.x, mask), jit_rec["y"], rtol=1e-5, atol=1e-6)
    assert int(end.iteration) == 20 and float(drifts.max()) <= 1e-4
    loop = mj.simec(f, x0, key=KEY, steps=20, args=(mask,), eta=0.1, step_rule="fixed", corrector="newton",
                    direction="coherent")
    np.testing.assert_allclose(end.x, loop.final.x, rtol=1e-5, atol=1e-5)
    states = jax.vmap(lambda x, k: mj.init_state(x, k, f=f, args=(mask,)))(xs, jax.random.split(KEY, 2))
    # vmap and grad compiled (jit): op by op they dispatch every primitive of the step alone
    vm_state, _ = jax.jit(jax.vmap(lambda s: mj.step(f, s, cfg, args=(mask,))))(states)
    one_state, _ = step_jit(jax.tree.map(lambda a: a[1], states))
    np.testing.assert_allclose(vm_state.x[1], one_state.x, rtol=1e-5, atol=1e-6)
    grad_x = jax.jit(jax.grad(
        lambda x: mj.step(f, mj.init_state(x, KEY, f=f, args=(mask,)), cfg, args=(mask,))[1]["y"][0]))(x0)
    np.testing.assert_allclose(grad_x, jax.grad(lambda x: f(x, mask)[0])(x0), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- bad input


_F, _W, _B = linear_classifier(0, 3, 4, 3)
_X0 = np.asarray(np.random.default_rng(0).normal(size=(3, 4)), np.float32)
_CLASS = int(np.argmax(_W @ _X0.reshape(-1) + _B))


@pytest.mark.parametrize(
    ("algorithm", "kwargs", "error", "pattern"),
    [
        ("simexp", {"target": _CLASS, "step_rule": "fixed"}, ValueError, "already the predicted class"),
        ("simexp", {"target": 7, "step_rule": "fixed"}, ValueError, "target class 7 is out of range"),
        ("simexp", {"target": [0, 1], "step_rule": "fixed"}, ValueError, "target holds"),
        ("simexp", {"target": (_CLASS + 1) % 3}, ValueError, "use step_rule='fixed'"),
        ("simec", {"target": (_CLASS + 1) % 3, "step_rule": "fixed"}, ValueError, "it is a SiMExp option"),
        ("simec", {"goal": np.zeros((3, 5)), "step_rule": "fixed"}, ValueError, "goal has shape"),
        ("simexp", {"goal": np.zeros((3, 4)), "step_rule": "fixed"}, ValueError, "it is a SiMEC option"),
        ("simec", {"step_rule": "adaptive", "tol": 0.0}, ValueError, "tolerance must be a positive"),
        ("simec", {"step_rule": mj.Adaptive(max_step=0.1), "eta": 1.0}, ValueError, "no admissible initial step"),
        ("simec", {"tol": 1e-6}, ValueError, "tol= and on= belong to"),
        ("simec", {"step_rule": mj.Adaptive(on="logits"), "on": "probabilities"}, ValueError,
         "on='probabilities' conflicts"),
        ("simexp", {"corrector": "newton"}, ValueError, "SiMExp leaves it by design"),
        ("simec", {"corrector": "newton", "spectrum": "matfree"}, ValueError, "needs the Jacobian"),
        ("simec", {"direction": "straight"}, ValueError, "direction='straight'"),
        ("simec", {"stop": "never"}, ValueError, "stop='never'"),
        ("simec", {"stop": mj.ProbabilityLevel(0.5, cls=9)}, ValueError, "out of range"),
        ("simec", {"box": "soft"}, ValueError, "box='soft'"),
        ("simec", {"eta": True}, TypeError, "eta must be a real number"),
        ("simec", {"steps": 1e11}, ValueError, "steps must be a positive integer"),
        ("simec", {"bounds": (np.inf, np.inf)}, ValueError, "leaves no feasible point"),
        ("simec", {"bounds": (np.zeros((3, 4)), np.zeros((3, 4)))}, ValueError, "lo == hi at every coordinate"),
    ],
)
def test_bad_continuation_input_raises_a_named_error(algorithm: str, kwargs: dict, error: type, pattern: str) -> None:
    call = dict(key=KEY, steps=4)
    call.update(kwargs)
    with pytest.raises(error, match=pattern):
        mj.explore(_F, _X0, algorithm=algorithm, **call)


def test_option_objects_validate_themselves() -> None:
    with pytest.raises(ValueError, match="tolerance must be a positive"):
        mj.Newton(tol=-1.0)
    with pytest.raises(ValueError, match=r"Newton\(max_iters\) must be an integer >= 0"):
        mj.Newton(max_iters=-1)
    with pytest.raises(ValueError, match="no admissible step size"):
        mj.Adaptive(min_step=1.0, max_step=0.1)
    with pytest.raises(ValueError, match="must shrink"):
        mj.Adaptive(shrink=1.0)
    with pytest.raises(ValueError, match=r"Coherent\(restart\) must be > 0.0"):
        mj.Coherent(restart=0.0)
    with pytest.raises(ValueError, match=r"must be <= 1\.0"):
        mj.ProbabilityLevel(level=1.5)


def test_numpy_scalars_are_accepted_and_bools_refused() -> None:
    traj = mj.simec(_F, _X0, key=KEY, steps=np.int64(4), eta=np.float32(0.5), save_every=np.int32(2))
    assert traj.x.shape[0] == 3
    for bad in ({"steps": True}, {"save_every": True}):
        with pytest.raises(ValueError, match="must be a positive integer"):
            mj.simec(_F, _X0, key=KEY, **{"steps": 4, **bad})


def test_an_empty_output_and_a_nan_output_are_refused_by_spectrum() -> None:
    with pytest.raises(ValueError, match=r"empty output vector \(k = 0\)"):
        mj.spectrum(lambda x: x.sum() * jnp.zeros((0,)), _X0)
    with pytest.raises(ValueError, match="spectrum at x is not finite"):
        mj.spectrum(lambda x: jnp.where(x.sum() > -100, jnp.nan, 1.0) + x[0, :2], _X0)
    nan_spec = jax.jit(lambda x: mj.spectrum(lambda z: jnp.nan + z[0, :2], x).eigenvalues)(_X0)
    assert np.isnan(np.asarray(nan_spec)).all(), "under jit a NaN output gives NaN eigenvalues, not finite ones"
