"""Metrics of docs/method.md section 9 on hand-built runs whose answers are known by construction."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import scipy.stats

from manifold_jax import analysis as A


def _one_hot_run(classes: list[int], k: int = 4, conf: float = 0.7) -> np.ndarray:
    """(T, k) probabilities whose arg-max follows ``classes``."""
    p = np.full((len(classes), k), (1 - conf) / (k - 1))
    p[np.arange(len(classes)), classes] = conf
    return p


# ------------------------------------------------------------- prediction changes


def test_prediction_changes_counts_exactly_three_flips() -> None:
    p = _one_hot_run([0, 0, 1, 1, 1, 0, 0, 2, 2])
    assert A.prediction_changes(p) == 3
    np.testing.assert_array_equal(A.prediction_change_steps(p), [2, 5, 7])
    # logits give the same answer (softmax is monotone)
    assert A.prediction_changes(np.log(p) + 5.0) == 3


def test_prediction_changes_zero_for_a_constant_decision() -> None:
    p = _one_hot_run([3] * 6)
    assert A.prediction_changes(p) == 0
    assert A.prediction_change_steps(p).size == 0


# -------------------------------------------------------------- ranking metrics


def _brute_inversions(a: np.ndarray, b: np.ndarray) -> int:
    n = 0
    for i, j in itertools.combinations(range(a.size), 2):
        if (a[i] - a[j]) * (b[i] - b[j]) < 0:
            n += 1
    return n


def test_ranking_inversions_known_counts() -> None:
    # ranking 0>1>2>3, then fully reversed (6 = C(4,2)), then one adjacent swap (1)
    s = np.array(
        [
            [4.0, 3.0, 2.0, 1.0],
            [1.0, 2.0, 3.0, 4.0],
            [1.0, 2.0, 4.0, 3.0],
            [1.0, 2.0, 4.0, 3.0],
        ]
    )
    inv = A.ranking_inversions(s)
    np.testing.assert_array_equal(inv.per_step, [6, 1, 0])
    assert inv.total == 7
    per, total = inv  # unpacks as (per_step, total)
    assert total == int(per.sum())


def test_ranking_inversions_match_brute_force_and_ignore_ties() -> None:
    rng = np.random.default_rng(0)
    s = rng.integers(0, 5, size=(40, 7)).astype(float)  # many ties on purpose
    inv = A.ranking_inversions(s, chunk_bytes=1000)  # force several chunks
    brute = [_brute_inversions(s[t], s[t + 1]) for t in range(s.shape[0] - 1)]
    np.testing.assert_array_equal(inv.per_step, brute)
    assert inv.total == sum(brute) > 0


def test_ranking_inversions_equal_kendall_distance_without_ties() -> None:
    rng = np.random.default_rng(1)
    s = rng.normal(size=(20, 9))
    inv = A.ranking_inversions(s)
    pairs = 9 * 8 // 2
    for t in range(19):
        tau = scipy.stats.kendalltau(s[t], s[t + 1]).statistic
        # without ties tau = 1 - 4 * inversions / (k (k - 1))
        assert inv.per_step[t] == round((1 - tau) * pairs / 2)


def test_ranking_spearman_matches_scipy_with_ties() -> None:
    rng = np.random.default_rng(2)
    s = rng.integers(0, 4, size=(30, 6)).astype(float)
    s[:, 0] += 0.5  # keep every row non-constant
    ours = A.ranking_spearman(s)
    ref = [scipy.stats.spearmanr(s[t], s[t + 1]).statistic for t in range(29)]
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-12)
    assert ours.shape == (29,)


def test_ranking_spearman_one_for_unchanged_and_minus_one_for_reversed() -> None:
    s = np.array([[0.1, 0.2, 0.7], [0.15, 0.25, 0.6], [0.6, 0.25, 0.15]])
    np.testing.assert_allclose(A.ranking_spearman(s), [1.0, -1.0])


# ------------------------------------------------------ class probabilities


def test_original_and_top_class_probability() -> None:
    p = np.array([[0.6, 0.3, 0.1], [0.4, 0.5, 0.1], [0.2, 0.1, 0.7]])
    np.testing.assert_allclose(A.original_class_probability(p), [0.6, 0.4, 0.2])
    np.testing.assert_allclose(A.original_class_probability(p, original_class=2), [0.1, 0.1, 0.7])
    np.testing.assert_allclose(A.top_class_probability(p), [0.6, 0.5, 0.7])


def test_probability_functions_reject_logits_and_nan() -> None:
    with pytest.raises(ValueError, match="probs"):
        A.top_class_probability(np.array([[2.0, -1.0, 0.5]]))
    with pytest.raises(ValueError, match="NaN"):
        A.top_class_probability(np.array([[0.5, np.nan]]))
    with pytest.raises(ValueError, match="scores"):
        A.prediction_changes(np.zeros((3,)))
    with pytest.raises(ValueError, match="original_class"):
        A.original_class_probability(np.array([[0.5, 0.5]]), original_class=2)


# ------------------------------------------------------------------ volume


def _box_grid(sides: tuple[float, ...], per_side: int = 5) -> np.ndarray:
    """Regular grid filling an axis-aligned box centred at 0: (per_side**m, m)."""
    axes = [np.linspace(-s / 2, s / 2, per_side) for s in sides]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, len(sides))


def _embed(cloud: np.ndarray, d: int, rng: np.random.Generator) -> np.ndarray:
    """Rotate an (T, m) cloud into R^d by a random orthonormal frame and translate it."""
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    return cloud @ q[:, : cloud.shape[1]].T + rng.normal(size=d) * 3.0


def test_explored_volume_of_a_box_is_known_analytically() -> None:
    rng = np.random.default_rng(3)
    d = 8
    # token 0: box 4 x 2 x 1 -> variances 16 : 4 : 1 (shares 0.762, 0.952, 1)
    # token 1: box 3 x 1.5 -> variances 4 : 1 (shares 0.8, 1); distinct variances, so
    #          the principal axes are the box's axes (a square's would be arbitrary)
    # token 2: masked out (garbage)
    box0 = _box_grid((4.0, 2.0, 1.0))  # 125 points
    box1 = _box_grid((3.0, 1.5, 0.0))  # 125 points, third side flat
    t = box0.shape[0]
    pts = np.empty((t, 3, d))
    pts[:, 0] = _embed(box0, d, rng)
    pts[:, 1] = _embed(box1[:, :2], d, rng)
    pts[:, 2] = rng.normal(size=(t, d)) * 100
    mask = np.array([True, True, False])

    v90 = A.explored_volume(pts, mask, variance=0.9)
    np.testing.assert_array_equal(v90.tokens, [0, 1])
    np.testing.assert_array_equal(v90.n_components, [2, 2])
    np.testing.assert_allclose(v90.delta, [math.sqrt(4 * 2), math.sqrt(4.5)], rtol=1e-10)
    np.testing.assert_allclose(v90.volume, math.sqrt(8) * math.sqrt(4.5), rtol=1e-10)

    v99 = A.explored_volume(pts, mask, variance=0.99)
    np.testing.assert_array_equal(v99.n_components, [3, 2])
    np.testing.assert_allclose(v99.delta, [2.0, math.sqrt(4.5)], rtol=1e-10)  # (4*2*1)^(1/3) = 2

    # a fraction reached exactly (16/21 + 4/21 = 20/21) keeps 2, not 3, components
    v_exact = A.explored_volume(pts[:, :1], None, variance=20 / 21)
    assert v_exact.n_components.tolist() == [2]


def test_explored_volume_of_a_still_token_is_zero() -> None:
    pts = np.zeros((10, 2, 4))
    pts[:, 1, 0] = np.linspace(0, 2, 10)  # token 1 moves along a line of length 2
    vol = A.explored_volume(pts)
    np.testing.assert_array_equal(vol.n_components, [0, 1])
    assert vol.log_delta[0] == -np.inf
    assert vol.delta[1] == pytest.approx(2.0)
    assert vol.volume == 0.0
    assert A.explored_volume(pts, [False, True]).volume == pytest.approx(2.0)


def test_explored_volume_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="token_mask"):
        A.explored_volume(np.zeros((5, 3, 2)), np.zeros(3, dtype=bool))
    with pytest.raises(ValueError, match="token_mask"):
        A.explored_volume(np.zeros((5, 3, 2)), np.ones(4, dtype=bool))
    with pytest.raises(ValueError, match="points"):
        A.explored_volume(np.zeros((5, 3)))
    with pytest.raises(ValueError, match="variance"):
        A.explored_volume(np.zeros((5, 3, 2)), variance=1.5)
    bad = np.zeros((5, 3, 2))
    bad[2, 1, 0] = np.nan
    with pytest.raises(ValueError, match=r"points.*NaN"):
        A.explored_volume(bad)


def test_volume_ratio_of_nested_boxes() -> None:
    rng = np.random.default_rng(4)
    d = 6
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    centre = rng.normal(size=d)
    small = _box_grid((2.0, 1.0)) @ q[:, :2].T + centre
    large = _box_grid((10.0, 4.0)) @ q[:, :2].T + centre
    rv = A.volume_ratio(large[:, None, :], small[:, None, :], variance=0.999)
    # pooled PCA keeps both axes; ratio of box areas = (10*4) / (2*1) = 20
    assert rv.n_components.tolist() == [2]
    assert rv.rho_v == pytest.approx(20.0, rel=1e-10)
    assert rv.per_token_log_ratio.tolist() == pytest.approx([math.log(20.0)], rel=1e-10)


def test_rho_v_is_the_mean_of_per_patch_ratios_not_their_product() -> None:
    """Three patches whose SiMExp boxes are 2 x 3, 4 x 2 and 10 x 5 times SiMEC's along the
    same (randomly rotated) axes: per-patch ratios 6, 8 and 50 exactly (pooled PCA keeps both
    axes at variance 0.999, and the extents of a regular grid are its sides). The paper's
    rho_V is their mean, 64 / 3; the product over patches, 2400, is only kept under its own
    name. Tolerance 1e-10 relative: the SVD and the extents are float64 on O(10) numbers."""
    rng = np.random.default_rng(6)
    d = 7
    small_sides = ((2.0, 1.0), (3.0, 1.5), (1.0, 0.4))
    factors = ((2.0, 3.0), (4.0, 2.0), (10.0, 5.0))
    t = _box_grid((1.0, 1.0)).shape[0]
    simec, simexp = np.empty((t, 3, d)), np.empty((t, 3, d))
    for i, (sides, f) in enumerate(zip(small_sides, factors, strict=True)):
        q, _ = np.linalg.qr(rng.normal(size=(d, d)))
        centre = rng.normal(size=d)
        simec[:, i] = _box_grid(sides) @ q[:, :2].T + centre
        simexp[:, i] = _box_grid((sides[0] * f[0], sides[1] * f[1])) @ q[:, :2].T + centre
    rv = A.volume_ratio(simexp, simec, variance=0.999)
    assert rv.n_components.tolist() == [2, 2, 2]
    np.testing.assert_allclose(rv.per_token_ratio, [6.0, 8.0, 50.0], rtol=1e-10)
    assert rv.rho_v == pytest.approx(64.0 / 3.0, rel=1e-10)
    assert rv.geometric_mean == pytest.approx(2400.0 ** (1 / 3), rel=1e-10)
    assert rv.log10_product_over_tokens == pytest.approx(math.log10(2400.0), rel=1e-10)
    # over inputs the patches are pooled: a second input with only the first patch (ratio 6)
    other = A.volume_ratio(simexp[:, :1], simec[:, :1], variance=0.999)
    assert A.mean_rho_v([rv, other]) == pytest.approx((6 + 8 + 50 + 6) / 4, rel=1e-10)
    # a token masked out does not count
    assert A.volume_ratio(simexp, simec, [True, False, True], variance=0.999).rho_v == pytest.approx(28.0, rel=1e-10)


def test_volume_ratio_in_log_space_survives_float64_overflow() -> None:
    rng = np.random.default_rng(5)
    n, d, t = 300, 4, 40
    base = rng.uniform(-0.5, 0.5, size=(t, n, d))
    simec = base * 1e-150
    simexp = base * 1e150
    # same shape, scaled by 1e300 per coordinate: rho_V = 1e300^(n d), far beyond float64
    rv = A.volume_ratio(simexp, simec, variance=0.999999)
    assert np.all(rv.n_components == d)
    expected = n * d * 300 * math.log(10.0)
    assert rv.log_product_over_tokens == pytest.approx(expected, rel=1e-9)
    assert rv.log10_product_over_tokens == pytest.approx(n * d * 300, rel=1e-9)
    # every patch's own ratio is 1e1200, itself beyond float64: its log survives
    assert rv.log_rho_v == pytest.approx(d * 300 * math.log(10.0), rel=1e-9)
    assert rv.rho_v == math.inf
    # the naive product overflows (and the small one underflows) in float64
    with np.errstate(over="ignore", under="ignore"):
        naive_exp = np.prod(np.ptp(simexp, axis=0))
        naive_ec = np.prod(np.ptp(simec, axis=0))
    assert naive_exp == np.inf and naive_ec == 0.0
    # and the reverse direction is the exact negative
    reverse = A.volume_ratio(simec, simexp, variance=0.999999)
    assert reverse.log_product_over_tokens == pytest.approx(-expected, rel=1e-9)


def test_volume_ratio_checks_shapes() -> None:
    with pytest.raises(ValueError, match="points_simec"):
        A.volume_ratio(np.zeros((4, 3, 2)), np.zeros((4, 2, 2)))


# ---------------------------------------------- embedding vs interpretation


def test_total_variation_is_half_l1_and_wasserstein_01() -> None:
    rng = np.random.default_rng(6)
    p = rng.dirichlet(np.ones(5), size=50)
    q = rng.dirichlet(np.ones(5), size=50)
    tv = A.total_variation(p, q)
    half_l1 = np.array([0.5 * np.abs(np.asarray(pr) - np.asarray(qr)).sum() for pr, qr in zip(p, q, strict=True)])
    np.testing.assert_allclose(tv, half_l1, rtol=1e-12)
    # W1 with 0/1 cost = 1 - overlap (mass kept in place)
    np.testing.assert_allclose(A.wasserstein1_01(p, q), 1 - np.minimum(p, q).sum(axis=1), rtol=1e-12)
    assert A.total_variation([1.0, 0.0], [0.0, 1.0]) == 1.0
    assert A.total_variation([0.2, 0.8], [0.2, 0.8]) == 0.0


def test_total_variation_rejects_mismatch() -> None:
    with pytest.raises(ValueError, match="q"):
        A.total_variation([0.5, 0.5], [0.2, 0.3, 0.5])
    with pytest.raises(ValueError, match="p"):
        A.total_variation([2.0, -1.0], [0.5, 0.5])


def test_catch_up_by_construction() -> None:
    emb = np.array([0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 0, 0, 0, 0, 0])
    # follows the first change 2 later, the second at once, never the third (goes to 1)
    itp = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2, 2, 2, 1, 1, 1])
    cu = A.catch_up(emb, itp, window=3)
    assert cu.n_changes == 3 and cu.n_caught_up == 2
    assert cu.fraction == pytest.approx(2 / 3)
    np.testing.assert_array_equal(cu.lags, [2, 0])
    # a window too short for the lag of 2 misses the first one
    assert A.catch_up(emb, itp, window=1).n_caught_up == 1
    # scores are reduced by arg-max
    assert A.catch_up(np.eye(3)[emb], np.eye(3)[itp], window=3).n_caught_up == 2
    assert math.isnan(A.catch_up([1, 1, 1], [1, 0, 1]).fraction)


def test_catch_up_does_not_credit_an_interpretation_that_led() -> None:
    emb = np.array([0, 0, 0, 1, 1])
    itp = np.array([0, 1, 1, 1, 1])  # already at 1 before the embedding changed
    assert A.catch_up(emb, itp, window=5).n_caught_up == 0


def test_pearson_matches_numpy_corrcoef() -> None:
    rng = np.random.default_rng(7)
    a = rng.normal(size=100)
    b = 0.3 * a + rng.normal(size=100)
    assert A.pearson(a, b) == pytest.approx(np.corrcoef(a, b)[0, 1], rel=1e-12)
    pe = rng.dirichlet(np.ones(3), size=60)
    pi = rng.dirichlet(np.ones(3), size=60)
    ref = np.corrcoef(pe.max(axis=1), pi.max(axis=1))[0, 1]
    assert A.top_probability_correlation(pe, pi) == pytest.approx(ref, rel=1e-12)
    assert math.isnan(A.pearson([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
    # a decoded input that never changes has a constant top probability, up to float32 rounding: its
    # correlation with anything is undefined (NaN), not the correlation of the rounding noise
    steady = np.tile([0.97, 0.02, 0.01], (60, 1)) + rng.normal(scale=1e-8, size=(60, 3)) * [1, -1, 0]
    assert A.pearson(pe.max(axis=1), steady.max(axis=1)) != 0  # the noise alone does correlate
    assert math.isnan(A.top_probability_correlation(pe, steady))


def test_time_per_iteration_per_token() -> None:
    assert A.time_per_iteration_per_token(12.0, 100, 6) == pytest.approx(0.02)
    with pytest.raises(ValueError, match="tokens"):
        A.time_per_iteration_per_token(1.0, 10, 0)
    with pytest.raises(ValueError, match="iterations"):
        A.time_per_iteration_per_token(1.0, 0, 3)


# ------------------------------------------------------------------ summary


def test_summarize_is_json_and_consistent() -> None:
    rng = np.random.default_rng(8)
    t, n, d = 12, 4, 5
    logits = rng.normal(size=(t, 3))
    pts = np.cumsum(rng.normal(size=(t, n, d)), axis=0)
    simec = pts * 0.1
    mask = np.array([False, True, True, False])
    itp = logits + rng.normal(size=(t, 3)) * 0.3
    s = A.summarize(
        logits=logits,
        points=pts,
        token_mask=mask,
        points_simec=simec,
        interpretation_logits=itp,
        total_seconds=2.2,
    )
    text = json.dumps(s, allow_nan=False)  # strict JSON
    back = json.loads(text)
    assert back["prediction_changes"] == A.prediction_changes(logits)
    assert back["ranking_inversions_total"] == A.ranking_inversions(logits).total
    assert len(back["ranking_spearman"]) == t - 1
    assert back["explored_volume"]["tokens"] == [1, 2]
    # scaling a run by 0.1 in every coordinate divides each box volume by 10^n_i
    nc = np.array(back["volume_ratio"]["n_components"])
    assert back["volume_ratio"]["log10_product_over_tokens"] == pytest.approx(nc.sum(), rel=1e-9)
    assert back["volume_ratio"]["rho_v"] == pytest.approx(np.mean(10.0**nc), rel=1e-9)
    assert back["timing"]["seconds_per_iteration_per_token"] == pytest.approx(2.2 / (11 * 2))
    p, q = A.softmax(logits), A.softmax(itp)
    assert back["interpretation"]["wasserstein1_01_mean"] == pytest.approx(float(np.mean(A.total_variation(p, q))))
    with pytest.raises(ValueError, match="logits"):
        A.summarize(logits=logits, probs=A.softmax(logits))


def test_stop_sentence_says_where_a_counterfactual_ended() -> None:
    labels = ("sport", "politics", "science")
    assert A.stop_sentence(2, 1, 41, 1, 41, labels) == "input 2 reached class politics at iteration 41"
    assert A.stop_sentence(0, 9, 17, 7, 20) == "input 0 left its class for class 7 (target class 9) at iteration 17"
    assert A.stop_sentence(1, 2, -1, 0, 1000, labels) == "input 1 did not reach class science in 1000 iterations"


def test_a_patch_simexp_left_still_counts_as_a_zero_ratio_after_json() -> None:
    """A token SiMExp never moved (SiMEC did) has rho_V,i = 0: -inf in log10, which strict JSON writes
    as null like a +inf ratio. ``pooled_rho_v`` on the JSON must give the mean with that patch at 0
    (the in-memory ``rho_v``), not an infinite rho_V; a token SiMEC never moved stays +inf."""
    from manifold_jax.report import pooled_rho_v

    rng = np.random.default_rng(3)
    t, n, d = 12, 2, 5
    pts = np.cumsum(rng.normal(size=(t, n, d)), axis=0)
    simec = pts * 0.1
    pts[:, 1] = pts[0, 1]  # SiMExp leaves token 1 where it started
    logits = rng.normal(size=(t, 3))
    back = json.loads(json.dumps(A.summarize(logits=logits, points=pts, points_simec=simec), allow_nan=False))
    ratio = back["volume_ratio"]
    assert ratio["per_token_log10_ratio"][1] is None and ratio["zero_ratio_tokens"] == [1]
    expected = A.volume_ratio(pts, simec).rho_v
    assert expected == pytest.approx(10.0 ** ratio["n_components"][0] / 2, rel=1e-9)
    assert pooled_rho_v([ratio]) == pytest.approx(expected, rel=1e-9)
    # the other way round: SiMEC still on token 1, SiMExp moving it: an infinite ratio
    back = json.loads(json.dumps(A.summarize(logits=logits, points=simec * 10, points_simec=pts), allow_nan=False))
    assert back["volume_ratio"]["zero_ratio_tokens"] == [] and pooled_rho_v([back["volume_ratio"]]) == math.inf
