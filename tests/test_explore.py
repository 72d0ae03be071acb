"""SiMEC / SiMExp: level sets kept and left, the box, determinism, resume, batching, errors."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import manifold_jax as mj
from manifold_jax.explore import NONFINITE, STALLED
from manifold_jax.explore.iteration import pick_index
from tests.toy_models import linear_map, toy_classifier

KEY = jax.random.PRNGKey(0)


def _rel_change(y: np.ndarray) -> float:
    return float(np.abs(y - y[0]).max() / np.abs(y[0]).max())


# --------------------------------------------------------------------------- analytic level sets


@pytest.mark.parametrize(
    ("options", "x64"),
    [
        ({}, False),
        ({"blocks": "joint"}, False),
        ({"spectrum": "matfree"}, False),
        ({"spectrum": "svd", "step_rule": "paper"}, True),
        ({"spectrum": "dense", "null_direction": "eigenvector"}, True),
    ],
    ids=["token-gram", "joint", "matfree", "svd-paper-f64", "dense-eigenvector-f64"],
)
def test_simec_keeps_a_linear_map_fixed_and_simexp_moves_it(options: dict, x64: bool) -> None:
    """y = A x is exactly invariant along null directions; only rounding of x moves it.

    Each update x + delta v rounds every coordinate by up to eps/2 |x_j|, which moves y_i
    by sum_j A_ij r_j: about eps |x| ||A_i|| per step, a random walk of sqrt(1000) steps,
    ~1e-6 relative in float32. The paper's larger steps and the eigenvector choice (the
    same few directions with the same sign, so the rounding no longer averages out) are
    checked in float64, where the same reasoning gives ~1e-13.
    """
    n, d, k = 5, 8, 3
    with jax.enable_x64(x64):
        f, _ = linear_map(KEY, n, d, k)
        x0 = jax.random.normal(jax.random.PRNGKey(1), (n, d), jnp.float64 if x64 else jnp.float32)
        stay = mj.simec(f, x0, key=KEY, steps=1000, save_every=10, **options)
        leave = mj.simexp(f, x0, key=KEY, steps=1000, save_every=10, **options)
    assert stay.x.shape == (101, n, d) and stay.y.shape == (101, k)
    np.testing.assert_array_equal(stay.iteration, np.arange(0, 1001, 10))
    tol = 1e-12 if x64 else 1e-5
    assert _rel_change(stay.y) <= tol, _rel_change(stay.y)
    assert np.abs(stay.x[-1] - np.asarray(x0)).max() > 1e-3, "SiMEC must actually move"
    assert _rel_change(leave.y) >= 1e-3
    assert (stay.status == 0).all() and (leave.status == 0).all()


def test_box_projection_is_honoured_at_every_saved_point() -> None:
    n, d, k = 4, 6, 2
    f, _ = linear_map(KEY, n, d, k)
    x0 = jax.random.uniform(jax.random.PRNGKey(1), (n, d), minval=-0.5, maxval=0.5)
    lo, hi = -0.55 * jnp.ones((n, d)), 0.55
    for algorithm in ("simec", "simexp"):
        traj = mj.explore(f, x0, algorithm=algorithm, key=KEY, steps=600, eta=300.0, bounds=(lo, hi))
        assert (traj.x >= -0.55).all() and (traj.x <= 0.55).all()
        assert np.isclose(np.abs(traj.x), 0.55).any(), "the walk must reach the box to test the clip"


def test_reference_threshold_reproduces_the_drift_of_an_absolute_level() -> None:
    """docs/method.md section 4: an absolute 0.01 calls a visible direction with eigenvalue 0.005 null."""
    d = 6
    a = jnp.zeros((2, d)).at[0, 0].set(1.0).at[1, 1].set(np.sqrt(0.005))
    f = lambda x: a @ x[0]  # noqa: E731 - one token, eigenvalues 1 and 0.005
    x0 = jnp.zeros((1, d))
    relative = mj.simec(f, x0, key=KEY, steps=400, eta=100.0)
    absolute = mj.simec(f, x0, key=KEY, steps=400, eta=100.0, threshold=mj.Absolute(0.01))
    assert np.abs(relative.y).max() <= 1e-6
    assert np.abs(absolute.y[:, 1]).max() >= 1e-3, "the absolute threshold must let the 0.005 direction drift"


def test_step_rules_follow_their_formulas() -> None:
    n, d, k = 3, 7, 3
    f, _ = linear_map(jax.random.PRNGKey(4), n, d, k)
    x0 = jax.random.normal(jax.random.PRNGKey(5), (n, d))
    lam = np.asarray(mj.spectrum(f, x0, method="dense").eigenvalues, np.float64)
    eta = 2.5
    reference = mj.simexp(f, x0, key=KEY, steps=1, eta=eta)
    paper = mj.simexp(f, x0, key=KEY, steps=1, eta=eta, step_rule="paper")
    # d > k: the smallest of the d eigenvalues of each block is zero
    np.testing.assert_allclose(reference.step[0], eta * np.sqrt(1e-6 / lam[:, 0]), rtol=1e-5)
    np.testing.assert_allclose(paper.step[0], eta * np.sqrt(lam[:, k - 1] / lam[:, 0]), rtol=1e-5)
    # SiMExp moves along an eigenvector: v^T g v is one of the block's eigenvalues
    chosen = paper.eigenvalue[0]
    assert all(np.isclose(lam[b, :k], chosen[b], rtol=1e-4).any() for b in range(n))


def test_pick_is_uniform_over_the_allowed_indices_only() -> None:
    """The reference's off-by-one picks outside the allowed set; ours never does."""
    allowed = jnp.array([False, True, True, False, True])
    picks = np.asarray(jax.vmap(lambda k: pick_index(k, allowed))(jax.random.split(KEY, 6000)))
    counts = np.bincount(picks, minlength=5)
    assert counts[[0, 3]].sum() == 0
    # 2000 expected per allowed index; 5 standard deviations is ~+-183
    assert np.abs(counts[[1, 2, 4]] - 2000).max() < 190, counts


# --------------------------------------------------------------------------- a real Transformer


@pytest.mark.parametrize("centered", [False, True], ids=["full-rank", "rank-k-minus-1"])
def test_transformer_simec_stays_in_class_and_simexp_leaves(centered: bool, full_size: bool) -> None:
    f, x0 = toy_classifier(jax.random.PRNGKey(7), centered=centered)
    mask = jnp.ones((x0.shape[0],), bool)
    select = np.arange(1, x0.shape[0])  # every token but CLS
    common = dict(key=KEY, steps=1000, eta=1.0, args=(mask,), select=select, save_every=5)
    stay = mj.simec(f, x0, **common)
    leave = mj.simexp(f, x0, **common)
    for traj in (stay, leave):
        assert np.isfinite(traj.x).all() and np.isfinite(traj.y).all()
        assert (traj.status & NONFINITE == 0).all()
    p_stay = jax.nn.softmax(stay.y)
    p_leave = jax.nn.softmax(leave.y)
    move_stay = float(jnp.abs(p_stay - p_stay[0]).max())
    move_leave = float(jnp.abs(p_leave - p_leave[0]).max())
    assert move_stay * 10 <= move_leave, (move_stay, move_leave)
    assert (np.argmax(stay.y, axis=1) == np.argmax(stay.y[0])).all()


def test_trajectories_agree_across_spectrum_backends() -> None:
    """A projected null direction depends only on the visible subspace, not on the backend."""
    f, x0 = toy_classifier(jax.random.PRNGKey(8), n=6, d=24, k=3)
    mask = jnp.ones((6,), bool)
    runs = {
        m: mj.simec(f, x0, key=KEY, steps=20, eta=10.0, args=(mask,), spectrum=m)
        for m in ("gram", "svd", "dense", "matfree")
    }
    base = runs["gram"].x
    for name, traj in runs.items():
        # each backend resolves the same subspace to ~1e-5 in float32; over 20 steps of
        # size ~1e-2 the points agree to well under 1e-4 of their own scale
        assert np.abs(traj.x - base).max() <= 1e-4 * np.abs(base).max(), name


# --------------------------------------------------------------------------- determinism and resume


def test_same_key_same_trajectory_other_key_other_trajectory() -> None:
    f, x0 = toy_classifier(jax.random.PRNGKey(9), n=5, d=8, k=3)
    mask = jnp.ones((5,), bool)
    a = mj.simec(f, x0, key=KEY, steps=50, args=(mask,))
    b = mj.simec(f, x0, key=KEY, steps=50, args=(mask,))
    c = mj.simec(f, x0, key=jax.random.PRNGKey(1), steps=50, args=(mask,))
    np.testing.assert_array_equal(a.x, b.x)
    assert np.abs(a.x[-1] - c.x[-1]).max() > 1e-4


@pytest.mark.parametrize("save_every", [1, 10])
def test_resumed_run_is_bit_identical(save_every: int) -> None:
    f, x0 = toy_classifier(jax.random.PRNGKey(10), n=5, d=8, k=3)
    mask = jnp.ones((5,), bool)
    common = dict(args=(mask,), save_every=save_every, chunk_size=70, eta=5.0)
    whole = mj.simexp(f, x0, key=KEY, steps=1000, **common)
    first = mj.simexp(f, x0, key=KEY, steps=500, **common)
    # the state crosses a process boundary as plain arrays, as a checkpoint would
    saved = {k: np.asarray(v) for k, v in vars(first.final).items()}
    state = mj.ExplorationState(**{k: jnp.asarray(v) for k, v in saved.items()})
    rest = mj.simexp(f, state, steps=500, **common)
    joined = first.extend(rest)
    for name in ("x", "y", "step", "eigenvalue", "status", "stalls", "iteration"):
        np.testing.assert_array_equal(getattr(joined, name), getattr(whole, name), err_msg=name)
    np.testing.assert_array_equal(joined.final.key, whole.final.key)
    assert int(joined.final.iteration) == 1000


def test_on_chunk_reports_progress_states() -> None:
    f, _ = linear_map(KEY, 2, 4, 2)
    seen: list[int] = []
    traj = mj.simec(f, jnp.ones((2, 4)), key=KEY, steps=250, chunk_size=100,
                    on_chunk=lambda state, chunk: seen.append(int(state.iteration)))
    assert seen == [100, 200, 250]
    assert traj.x.shape[0] == 251


def test_the_progress_bar_is_named_and_says_when_it_compiles(capsys: pytest.CaptureFixture[str]) -> None:
    """The bar is up, saying "compiling", before the first chunk; ``on_compiled`` runs once, before it."""
    f, _ = linear_map(KEY, 2, 4, 2)
    events: list[str] = []
    mj.simexp(f, jnp.ones((2, 4)), key=KEY, steps=20, chunk_size=10, progress=True, label="counterfactual",
              on_compiled=lambda: events.append("compiled"), on_chunk=lambda state, chunk: events.append("chunk"))
    err = capsys.readouterr().err
    assert events == ["compiled", "chunk", "chunk"]
    assert "counterfactual:" in err and "compiling" in err and "simexp" not in err, err


# --------------------------------------------------------------------------- batches


def test_batched_run_equals_a_loop_over_items() -> None:
    f, _ = toy_classifier(jax.random.PRNGKey(11), n=6, d=8, k=3)
    xs = jax.random.normal(jax.random.PRNGKey(12), (3, 6, 8))
    masks = jnp.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0]], bool)
    select = [[1, 2, 3, 4], [1, 3], [2]]
    common = dict(steps=40, eta=3.0, save_every=4)
    batched = mj.simexp(f, xs, key=KEY, args=(masks,), select=select, **common)
    keys = jax.random.split(KEY, 3)
    assert batched.x.shape == (3, 11, 6, 8) and batched.step.shape == (3, 11, 4)
    for b in range(3):
        single = mj.simexp(f, xs[b], key=keys[b], args=(masks[b],), select=select[b], **common)
        # the same arithmetic vectorised differently: equal up to float32 rounding
        np.testing.assert_allclose(batched.x[b], single.x, rtol=0, atol=1e-5)
        np.testing.assert_allclose(batched.y[b], single.y, rtol=0, atol=1e-5)
        np.testing.assert_allclose(batched.step[b, :, : len(select[b])], single.step, rtol=1e-5)
        np.testing.assert_array_equal(batched.step[b, :, len(select[b]):], 0.0)
        unselected = np.setdiff1d(np.arange(6), select[b])
        still = np.broadcast_to(xs[b][unselected], (11, len(unselected), 8))
        np.testing.assert_array_equal(batched.x[b][:, unselected], still)


# --------------------------------------------------------------------------- status flags


def test_zero_jacobian_stalls_simexp_with_a_flag_not_nan() -> None:
    f = lambda x: jnp.stack([x[0].sum(), 2.0 * x[0].sum()])  # noqa: E731 - token 1 is invisible
    traj = mj.simexp(f, jnp.ones((2, 5)), key=KEY, steps=5, select=[0, 1])
    assert (traj.status & STALLED).all()
    np.testing.assert_array_equal(traj.x[:, 1], 1.0)
    assert (traj.step[:, 1] == 0).all() and (traj.step[:, 0] > 0).all()
    assert int(traj.stalls[-1]) == 5 and np.isfinite(traj.x).all()


def test_a_nan_during_the_run_is_flagged_and_the_point_kept() -> None:
    a = jnp.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])

    def f(x: jax.Array) -> jax.Array:
        y = a @ x[0]
        return jnp.where(jnp.abs(x[0, :2]).max() > 0.05, jnp.nan, y)

    traj = mj.simexp(f, jnp.zeros((1, 3)), key=KEY, steps=200, eta=10.0)
    bad = (traj.status & NONFINITE) != 0
    assert bad.any() and not bad[0]
    assert np.isfinite(traj.x).all()
    first_bad = int(np.argmax(bad))
    np.testing.assert_array_equal(traj.x[first_bad:], np.broadcast_to(traj.x[first_bad], traj.x[first_bad:].shape))


# --------------------------------------------------------------------------- bad input


def _f(x: jax.Array) -> jax.Array:
    return jnp.stack([x.sum(), (x**2).sum()])


X0 = np.ones((3, 4), np.float32)


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"start": np.full((3, 4), np.nan)}, ValueError, "x0 must be finite"),
        ({"start": np.ones(4)}, ValueError, "x0 must be 2-D or 3-D"),
        ({"start": np.ones((3, 4), int)}, TypeError, "x0 must be a floating-point array"),
        ({"key": None}, ValueError, "key is required"),
        ({"steps": 0}, ValueError, "steps must be a positive integer"),
        ({"steps": 10, "save_every": 3}, ValueError, r"steps \(10\) must be a multiple of save_every \(3\)"),
        ({"algorithm": "simex"}, ValueError, "algorithm='simex'.*'simec', 'simexp'"),
        ({"spectrum": "eig"}, ValueError, "spectrum='eig'.*'dense', 'gram'"),
        ({"step_rule": "fast"}, ValueError, "step_rule='fast'.*'reference', 'paper'"),
        ({"blocks": "all"}, ValueError, "blocks='all'"),
        ({"output_metric": "l1"}, ValueError, "output_metric='l1'"),
        ({"eta": -1.0}, ValueError, "eta must be a positive finite number"),
        ({"threshold": 0.01}, TypeError, "threshold=0.01 is not supported"),
        ({"null_direction": "eigenvector"}, ValueError, "needs spectrum='dense'"),
        ({"select": []}, ValueError, "selects no position"),
        ({"select": [5]}, ValueError, "out of range for 3 positions"),
        ({"bounds": (1.0, 0.0)}, ValueError, "lo exceeds hi"),
        ({"bounds": (np.zeros(5), 1.0)}, ValueError, r"bounds lo of shape \(5,\) does not broadcast"),
        ({"bounds": 3.0}, ValueError, "bounds must be a pair"),
        ({"f": lambda x: x}, ValueError, r"f must return a vector of shape \(k,\)"),
        ({"f": lambda x: x.sum(0) / 0.0}, ValueError, r"f\(x0\) is not finite"),
        ({"f": lambda x: x.sum(0)}, ValueError, "leaves no null direction"),
        ({"start": np.ones((2, 3, 4), np.float32), "args": (np.ones(3),),
          "f": lambda x, a: x.sum(0)}, ValueError, r"args\[0\] has shape \(3,\).*batch"),
        ({"start": np.ones((2, 3, 4), np.float32), "select": [[0], [1], [2]]}, ValueError,
         "select has 3 rows but x0 has a batch of 2"),
        ({"start": np.ones((2, 3, 4), np.float32), "key": jax.random.split(KEY, 3)}, ValueError,
         "key holds 3 keys but x0 has a batch of 2"),
    ],
)
def test_bad_input_raises_a_clear_error(kwargs: dict, error: type, pattern: str) -> None:
    call = dict(f=_f, start=X0, algorithm="simec", key=KEY, steps=10)
    call.update(kwargs)
    with pytest.raises(error, match=pattern):
        mj.explore(call.pop("f"), call.pop("start"), **call)


def test_thresholds_validate_themselves() -> None:
    with pytest.raises(ValueError, match=r"rtol must lie in \(0, 1\)"):
        mj.Relative(2.0)
    with pytest.raises(ValueError, match="atol must be a positive finite number"):
        mj.Absolute(float("nan"))


def test_simec_with_too_few_dimensions_has_no_null_direction() -> None:
    f = lambda x: jnp.array([[1.0, 2.0], [3.0, -1.0], [0.5, 0.5]]) @ x[0]  # noqa: E731
    with pytest.raises(ValueError, match="leaves no null direction at x0"):
        mj.simec(f, jnp.ones((1, 2)), key=KEY, steps=5)


def test_resuming_with_a_key_is_refused() -> None:
    traj = mj.simec(_f, X0, key=KEY, steps=2)
    with pytest.raises(ValueError, match="key must not be given when resuming"):
        mj.simec(_f, traj.final, key=KEY, steps=2)


def test_starting_outside_the_box_warns() -> None:
    with pytest.warns(UserWarning, match="x0 lies outside the bounds"):
        mj.simec(_f, X0, key=KEY, steps=1, bounds=(0.0, 0.5))


def test_float64_when_x64_is_on() -> None:
    with jax.enable_x64(True):
        traj = mj.simec(_f, X0.astype(np.float64), key=KEY, steps=3)
    assert traj.x.dtype == np.float64 and traj.y.dtype == np.float64
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        traj32 = mj.simec(_f, X0, key=KEY, steps=3)
    assert traj32.x.dtype == np.float32


def test_batch_slices_equal_one_vmapped_batch() -> None:
    f, _ = toy_classifier(jax.random.PRNGKey(13), n=6, d=8, k=3)
    xs = jax.random.normal(jax.random.PRNGKey(14), (5, 6, 8))
    masks = jnp.ones((5, 6), bool)
    runs = {bs: mj.simexp(f, xs, key=KEY, steps=20, eta=3.0, args=(masks,), batch_size=bs) for bs in (5, 2)}
    # the same arithmetic, vectorised differently: equal up to float32 rounding
    np.testing.assert_allclose(runs[2].x, runs[5].x, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(runs[2].iteration, runs[5].iteration)
    for bad in (0, True):
        with pytest.raises(ValueError, match="batch_size must be a positive integer"):
            mj.simexp(f, xs, key=KEY, steps=2, args=(masks,), batch_size=bad)


def test_slices_are_balanced_and_sized_by_the_jacobian() -> None:
    from manifold_jax.explore import AUTO_BATCH_ROWS, slice_size

    assert slice_size(8, 10, 1) == 5  # two slices of 5, not 8 + 2
    assert slice_size(2, 5, 1) == 2  # three slices, the last one padded
    assert slice_size(5, 5, 1) is None and slice_size(None, 3, 10) is None  # one vmap
    # the MNIST ViT of the paper at batch 16: 10 classes x 197 tokens of cotangent rows per item
    assert slice_size(None, 16, 10 * 197) == AUTO_BATCH_ROWS // (10 * 197) == 2


# --------------------------------------------------------------------------- option objects and their behaviour


def test_step_rules_own_their_control_and_trajectories_join() -> None:
    """Rule objects are accepted by name or object; Adaptive accepts and grows within tol, rejects and shrinks
    above it; Trajectory.join keeps a shared point once (from the later piece) and concatenates disjoint ones."""
    from manifold_jax.explore import Adaptive, ExploreConfig, Paper, Reference

    assert ExploreConfig(algorithm="simec", step_rule=Paper()).step_rule == "paper"
    assert ExploreConfig(algorithm="simec", step_rule=Reference()).rule == Reference()
    rule = Adaptive(tol=1e-3, grow=2.0, shrink=0.25)
    h = jnp.float32(1.0)
    grown, accepted, unconverged = rule.adapt(h, jnp.float32(1e-4), jnp.float32(1e-3), jnp.int32(0), 1.0, True)
    assert bool(accepted) and not bool(unconverged) and float(grown) == 2.0
    shrunk, accepted, _ = rule.adapt(h, jnp.float32(1e-2), jnp.float32(1e-3), jnp.int32(0), 1.0, True)
    assert not bool(accepted) and float(shrunk) == 0.25
    at_min, _, unconverged = rule.adapt(jnp.float32(1e-3), jnp.float32(1e-2), jnp.float32(1e-3), jnp.int32(0), 1.0,
                                        True)
    assert bool(unconverged) and float(at_min) == pytest.approx(1e-3)

    f, _ = linear_map(KEY, n=3, d=4, k=2)
    x0 = jax.random.normal(jax.random.PRNGKey(1), (3, 4))
    whole = mj.simec(f, x0, key=KEY, steps=4)
    first = mj.simec(f, x0, key=KEY, steps=2)
    rest = mj.simec(f, first.final, steps=2)
    joined = first.join(rest)
    np.testing.assert_array_equal(joined.iteration, whole.iteration)
    np.testing.assert_array_equal(joined.x, whole.x)
    np.testing.assert_array_equal(joined.step, whole.step)
    later = mj.simec(f, rest.final, steps=2)
    disjoint = first.join(later)
    np.testing.assert_array_equal(disjoint.iteration, [0, 1, 2, 4, 5, 6])
    np.testing.assert_array_equal(disjoint.x[3:], later.x)
