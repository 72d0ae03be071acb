"""Metrics over one exploration run (DESIGN section 6).

Every function here is pure numpy over per-iteration arrays of one run, so it works on
what the engine saves (numpy or JAX arrays alike) and needs no model. Conventions:

* ``T`` is the number of saved iterations (the starting point included), ``k`` the
  number of classes (outputs of ``head``), ``n`` the number of token/patch positions and
  ``d`` the embedding width.
* ``scores`` means logits *or* probabilities, shape (T, k): the arg-max and the class
  ranking are the same for both because softmax is strictly increasing. ``probs`` means
  probabilities (rows in [0, 1] summing to 1); use :func:`softmax` on logits first.
* Bad input (wrong rank, empty arrays, NaN/inf, a probability row that does not sum to
  one) raises ``ValueError`` naming the argument.

Interpretations of DESIGN section 6 that the brief leaves open, made here once:

* **Ties.** A class pair counts as an inversion between two iterations only when the
  pair is strictly ordered in both and the order flips; a tie at either iteration is not
  an inversion. Spearman uses average ranks for ties (as ``scipy.stats.spearmanr``).
* **Explored volume.** For explored token i, the T vectors x_i(t) (d,) are centred and
  reduced by PCA to the smallest number n_i of principal components whose explained
  variance reaches the requested fraction (90 %). With r_ij = max_t y_ij(t) - min_t
  y_ij(t) the extent of the projected cloud along component j, the DESIGN's
  ``Delta_i = (max_t x_i - min_t x_i)^(1/n)`` is read as the geometric mean of those
  extents, ``Delta_i = (prod_j r_ij)^(1/n_i)``: the edge of the n_i-dimensional cube
  with the same volume as the token's bounding box in PCA coordinates, so that tokens
  with different n_i contribute comparable lengths. The run's volume is
  ``prod_i Delta_i`` over the explored tokens.
* **Volume ratio, per patch (the paper's rho_V).** For patch/token i,
  ``rho_V,i = (Delta_i^SiMExp / Delta_i^SiMEC)^n_i`` undoes the 1/n root: it is the
  ratio of the two runs' bounding-box volumes in PCA coordinates. That ratio needs both
  runs measured along the same axes with the same n_i, so for each token one PCA is
  fitted on the pooled points of both runs and both are measured along its n_i
  components: ``log rho_V,i = sum_j (log r_ij^SiMExp - log r_ij^SiMEC)``. The paper's
  figure ("in the order of tens", MNIST 99.3 at eta 1) is the **mean of rho_V,i over
  the explored patches** (and then over inputs), :attr:`VolumeRatio.rho_v`. The product
  of the per-patch ratios over all patches of an input is a different quantity (1e19
  to 1e107 on our runs): it is kept, in log space, only as
  :attr:`VolumeRatio.log_product_over_tokens`.
* **Embedding vs interpretation distance.** Wasserstein-1 between two class
  distributions with the 0/1 ground distance (classes are unordered: moving mass
  between any two different classes costs 1) equals the total variation distance,
  half the L1 distance. That is what :func:`wasserstein1_01` computes.
* **Catch-up.** See :func:`catch_up`: an embedding prediction change at saved
  iteration t (to class c) is *caught up* when the interpretation's prediction changes
  to c at some saved iteration s with t <= s <= t + window.
* **Top-class probability correlation.** Pearson correlation between the two runs'
  own top-class probability series (max_c p_t[c]): how well the interpretation's
  confidence tracks the embedding's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

__all__ = [
    "softmax",
    "predictions",
    "prediction_change_steps",
    "prediction_changes",
    "Inversions",
    "ranking_inversions",
    "ranking_spearman",
    "original_class_probability",
    "top_class_probability",
    "ExploredVolume",
    "explored_volume",
    "VolumeRatio",
    "volume_ratio",
    "mean_rho_v",
    "total_variation",
    "wasserstein1_01",
    "CatchUp",
    "catch_up",
    "pearson",
    "top_probability_correlation",
    "time_per_iteration_per_token",
    "summarize",
    "json_ready",
]

_PROB_ATOL = 1e-4
"""Tolerance on a probability row summing to 1 (float32 softmax outputs pass)."""

_VARIANCE_RTOL = 1e-9
"""Slack on the cumulative explained-variance test, so that a fraction reached exactly
in exact arithmetic (e.g. 0.6 + 0.3 = 0.9) is not missed by rounding."""


# --------------------------------------------------------------------------- checks


def _array(a: npt.ArrayLike, name: str, ndim: int, dtype: Any = np.float64) -> np.ndarray:
    """``a`` as a numpy array of rank ``ndim``, non-empty and finite, else ValueError."""
    try:
        arr = np.asarray(a, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: cannot be read as a numeric array ({exc})") from exc
    if arr.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-d array, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name}: is empty (shape {arr.shape})")
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: contains NaN or infinite values")
    return arr


def _scores(a: npt.ArrayLike, name: str, min_t: int = 1, min_k: int = 1) -> np.ndarray:
    """Check a (T, k) score array with T >= min_t and k >= min_k."""
    arr = _array(a, name, 2)
    t, k = arr.shape
    if t < min_t:
        raise ValueError(f"{name}: needs at least {min_t} iterations (rows), got {t}")
    if k < min_k:
        raise ValueError(f"{name}: needs at least {min_k} classes (columns), got {k}")
    return arr


def _probs(a: npt.ArrayLike, name: str, ndim: int = 2) -> np.ndarray:
    """Check an array of probability rows (last axis sums to 1, entries in [0, 1])."""
    arr = _array(a, name, ndim)
    if np.any(arr < -_PROB_ATOL) or np.any(arr > 1 + _PROB_ATOL):
        raise ValueError(f"{name}: probabilities must lie in [0, 1] (pass logits through softmax)")
    sums = arr.sum(axis=-1)
    if np.any(np.abs(sums - 1.0) > _PROB_ATOL * max(1, arr.shape[-1])):
        raise ValueError(f"{name}: probability rows must sum to 1 (pass logits through softmax)")
    return arr


def _labels(a: npt.ArrayLike, name: str) -> np.ndarray:
    """Predicted classes (T,) from either labels (T,) or scores (T, k)."""
    arr = np.asarray(a)
    if arr.ndim == 2:
        return predictions(_scores(arr, name))
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected labels (T,) or scores (T, k), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name}: is empty")
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ValueError(f"{name}: labels must be integers")
        arr = arr.astype(np.int64)
    return arr.astype(np.int64)


# ----------------------------------------------------------------- classification


def softmax(logits: npt.ArrayLike, axis: int = -1) -> np.ndarray:
    """Probabilities from logits along ``axis`` (any shape), computed stably in float64."""
    z = np.asarray(logits, dtype=np.float64)
    if z.size == 0:
        raise ValueError("logits: is empty")
    if not np.all(np.isfinite(z)):
        raise ValueError("logits: contains NaN or infinite values")
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def predictions(scores: npt.ArrayLike) -> np.ndarray:
    """Arg-max class per iteration, (T,) int64, from scores (T, k)."""
    s = _scores(scores, "scores")
    return np.argmax(s, axis=1).astype(np.int64)


def prediction_change_steps(scores: npt.ArrayLike) -> np.ndarray:
    """Iterations t >= 1 whose arg-max class differs from iteration t - 1's, (C,) int64.

    Where an exploration flips the model's decision; SiMEC should give none.
    """
    pred = predictions(scores)
    return (np.flatnonzero(pred[1:] != pred[:-1]) + 1).astype(np.int64)


def prediction_changes(scores: npt.ArrayLike) -> int:
    """Number of iterations whose arg-max class differs from the previous iteration's.

    ``scores``: (T, k) logits or probabilities. Counts every flip, so A -> B -> A is 2:
    it measures how often the run crosses a decision boundary, not how far it ends up.
    """
    return int(prediction_change_steps(scores).size)


class Inversions(NamedTuple):
    """Class-ranking inversions between consecutive iterations."""

    per_step: np.ndarray
    """(T-1,) int64: inversions between iteration t and t + 1."""
    total: int
    """Sum of ``per_step`` over the run."""


def ranking_inversions(scores: npt.ArrayLike, chunk_bytes: int = 64 << 20) -> Inversions:
    """Pairwise inversions between the class rankings of consecutive iterations.

    ``scores``: (T, k) logits or probabilities. For each step t -> t + 1 it counts the
    class pairs (a, b), a < b, ordered strictly at both iterations and in opposite
    orders (the Kendall tau distance; pairs tied at either iteration do not count).
    Unlike :func:`prediction_changes` this sees reorderings below the top class, i.e.
    how much the whole output, not only the decision, is perturbed. Vectorised over
    (steps, k, k) in chunks of about ``chunk_bytes`` bytes.
    """
    s = _scores(scores, "scores", min_t=2)
    t, k = s.shape
    out = np.zeros(t - 1, dtype=np.int64)
    if k < 2:
        return Inversions(out, 0)
    upper = np.triu(np.ones((k, k), dtype=bool), 1)
    step = max(1, int(chunk_bytes // max(1, 8 * k * k)))
    for start in range(0, t - 1, step):
        stop = min(t - 1, start + step)
        a = s[start:stop]
        b = s[start + 1 : stop + 1]
        sa = np.sign(a[:, :, None] - a[:, None, :])
        sb = np.sign(b[:, :, None] - b[:, None, :])
        out[start:stop] = ((sa * sb < 0) & upper).sum(axis=(1, 2))
    return Inversions(out, int(out.sum()))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..k along the last axis of (T, k), ties sharing their average rank."""
    t, k = x.shape
    order = np.argsort(x, axis=1, kind="stable")
    sorted_x = np.take_along_axis(x, order, axis=1)
    ranks_sorted = np.empty((t, k), dtype=np.float64)
    for row in range(t):
        v = sorted_x[row]
        # boundaries of tie groups in the sorted row
        new_group = np.concatenate(([True], v[1:] != v[:-1]))
        starts = np.flatnonzero(new_group)
        ends = np.concatenate((starts[1:], [k]))
        avg = (starts + ends + 1) / 2.0  # mean of 1-based positions start+1 .. end
        ranks_sorted[row] = np.repeat(avg, ends - starts)
    ranks = np.empty_like(ranks_sorted)
    np.put_along_axis(ranks, order, ranks_sorted, axis=1)
    return ranks


def ranking_spearman(scores: npt.ArrayLike) -> np.ndarray:
    """Spearman correlation between the class rankings of consecutive iterations, (T-1,).

    ``scores``: (T, k), k >= 2, logits or probabilities. 1 means the ranking did not
    move; lower values mean a reshuffled output. Ties get average ranks; a step where
    either ranking is constant (all classes tied) gives NaN, as ``scipy.stats.spearmanr``.
    """
    s = _scores(scores, "scores", min_t=2, min_k=2)
    r = _average_ranks(s)
    r = r - r.mean(axis=1, keepdims=True)
    a, b = r[:-1], r[1:]
    num = (a * b).sum(axis=1)
    den = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    return np.clip(rho, -1.0, 1.0)


def original_class_probability(probs: npt.ArrayLike, original_class: int | None = None) -> np.ndarray:
    """Probability of the original class over the run, (T,).

    ``probs``: (T, k) probabilities. The original class is the arg-max at iteration 0
    unless given. SiMEC should keep it flat; SiMExp should make it fall.
    """
    p = _probs(probs, "probs")
    c = int(np.argmax(p[0])) if original_class is None else int(original_class)
    if not 0 <= c < p.shape[1]:
        raise ValueError(f"original_class: {c} is outside 0..{p.shape[1] - 1}")
    return p[:, c].copy()


def top_class_probability(probs: npt.ArrayLike) -> np.ndarray:
    """Probability of the currently top class at each iteration, (T,): the model's confidence."""
    p = _probs(probs, "probs")
    return p.max(axis=1)


# --------------------------------------------------------------------- volume


@dataclass(frozen=True)
class ExploredVolume:
    """Explored volume of one run (see the module docstring for the definition)."""

    tokens: np.ndarray
    """(m,) int64: the explored token positions measured, in order."""
    n_components: np.ndarray
    """(m,) int64: PCA components kept per token (0 when the token never moved)."""
    log_delta: np.ndarray
    """(m,) float64: log Delta_i, -inf for a token with zero extent."""
    log_volume: float
    """sum_i log Delta_i (natural log), -inf when some token has zero extent."""

    @property
    def delta(self) -> np.ndarray:
        """(m,) Delta_i = (prod_j r_ij)^(1/n_i)."""
        return np.exp(self.log_delta)

    @property
    def volume(self) -> float:
        """prod_i Delta_i (``inf``/``0.0`` where it leaves float64 range; use ``log_volume``)."""
        with np.errstate(over="ignore", under="ignore"):
            return float(np.exp(self.log_volume))


def _points(points: npt.ArrayLike, name: str, token_mask: npt.ArrayLike | None) -> tuple[np.ndarray, np.ndarray]:
    """Check points (T, n, d) with T >= 2 and return them with the selected token indices."""
    x = _array(points, name, 3)
    t, n, _ = x.shape
    if t < 2:
        raise ValueError(f"{name}: needs at least 2 iterations to measure an extent, got {t}")
    if token_mask is None:
        return x, np.arange(n, dtype=np.int64)
    m = np.asarray(token_mask)
    if m.shape != (n,):
        raise ValueError(f"token_mask: expected shape ({n},) to match {name}, got {m.shape}")
    if m.dtype != bool:
        if not np.all(np.isin(m, (0, 1))):
            raise ValueError("token_mask: must be boolean (or 0/1)")
        m = m.astype(bool)
    idx = np.flatnonzero(m).astype(np.int64)
    if idx.size == 0:
        raise ValueError("token_mask: selects no token")
    return x, idx


def _check_variance(variance: float) -> float:
    v = float(variance)
    if not (0.0 < v <= 1.0) or math.isnan(v):
        raise ValueError(f"variance: must be a fraction in (0, 1], got {variance}")
    return v


def _pca(clouds: np.ndarray, variance: float) -> tuple[np.ndarray, np.ndarray]:
    """PCA of a stack of point clouds (m, T, d).

    Returns the principal axes (m, d, r) with r = min(T, d) (columns sorted by explained
    variance) and the number of components (m,) that reach ``variance`` of the total
    variance of each cloud (0 for a cloud with no variance).
    """
    centred = clouds - clouds.mean(axis=1, keepdims=True)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    var = s**2
    total = var.sum(axis=1)
    n_comp = np.zeros(clouds.shape[0], dtype=np.int64)
    for i in range(clouds.shape[0]):
        if total[i] <= 0.0:
            continue
        frac = np.cumsum(var[i]) / total[i]
        m = int(np.searchsorted(frac, variance - _VARIANCE_RTOL, side="left")) + 1
        n_comp[i] = min(m, int(np.count_nonzero(var[i] > 0)))
    return np.swapaxes(vt, 1, 2), n_comp


def _log_extents(cloud: np.ndarray, axes: np.ndarray) -> np.ndarray:
    """log of max_t - min_t of ``cloud`` (T, d) projected on ``axes`` (d, m), (m,)."""
    proj = cloud @ axes
    ext = proj.max(axis=0) - proj.min(axis=0)
    with np.errstate(divide="ignore"):
        return np.log(ext)


def explored_volume(
    points: npt.ArrayLike, token_mask: npt.ArrayLike | None = None, variance: float = 0.9
) -> ExploredVolume:
    """Volume of the region one run explored, per DESIGN section 6.

    ``points``: (T, n, d) explored embeddings over the run; ``token_mask``: (n,) bool,
    the explored tokens (all when None); ``variance``: fraction of each token's variance
    the kept PCA components must explain. For every selected token i it fits a PCA on
    x_i(0..T-1), keeps the n_i leading components, measures the extents r_ij of the
    projected cloud and sets ``Delta_i = (prod_j r_ij)^(1/n_i)`` (geometric-mean edge);
    the volume is ``prod_i Delta_i``, returned also as its log. It measures how far an
    exploration travelled within the directions it actually used, ignoring the
    (d - n_i) directions it barely touched, which would otherwise zero the volume.
    Caveat: where kept components have equal variances the principal axes are not
    unique (any rotation within the tied subspace is a valid PCA) and the extents,
    hence Delta_i, depend on the axes the SVD returns.
    """
    x, idx = _points(points, "points", token_mask)
    v = _check_variance(variance)
    clouds = np.ascontiguousarray(np.swapaxes(x[:, idx, :], 0, 1))  # (m, T, d)
    axes, n_comp = _pca(clouds, v)
    log_delta = np.full(idx.size, -np.inf)
    for i in range(idx.size):
        if n_comp[i] == 0:
            continue
        log_delta[i] = _log_extents(clouds[i], axes[i, :, : n_comp[i]]).mean()
    return ExploredVolume(idx, n_comp, log_delta, float(log_delta.sum()))


@dataclass(frozen=True)
class VolumeRatio:
    """rho_V between a SiMExp and a SiMEC run, per explored patch/token (see the module docstring)."""

    tokens: np.ndarray
    """(m,) int64: token positions compared."""
    n_components: np.ndarray
    """(m,) int64: components of the pooled PCA kept per token."""
    per_token_log_ratio: np.ndarray
    """(m,) float64: log rho_V,i = n_i (log Delta_i^SiMExp - log Delta_i^SiMEC), natural log."""

    @property
    def per_token_ratio(self) -> np.ndarray:
        """(m,) rho_V,i: the paper's volume ratio of each patch/token (``inf`` beyond float64)."""
        with np.errstate(over="ignore", under="ignore"):
            return np.exp(self.per_token_log_ratio)

    @property
    def log_rho_v(self) -> float:
        """log of :attr:`rho_v`, computed as a log-mean-exp (finite where rho_v overflows)."""
        logs = self.per_token_log_ratio
        top = float(np.max(logs))
        if not math.isfinite(top):
            return top
        return top + math.log(float(np.mean(np.exp(logs - top))))

    @property
    def rho_v(self) -> float:
        """The paper's rho_V for this input: the mean of the per-patch ratios over the explored patches."""
        with np.errstate(over="ignore", under="ignore"):
            return float(np.exp(self.log_rho_v))

    @property
    def geometric_mean(self) -> float:
        """exp(mean_i log rho_V,i): the per-patch ratio of a typical patch, robust to one outlier."""
        with np.errstate(over="ignore", under="ignore"):
            return float(np.exp(np.mean(self.per_token_log_ratio)))

    @property
    def log_product_over_tokens(self) -> float:
        """sum_i log rho_V,i: the log of the product of the per-patch ratios over all explored
        patches (the ratio of the whole input's box volumes; not the paper's rho_V)."""
        return float(np.sum(self.per_token_log_ratio))

    @property
    def log10_product_over_tokens(self) -> float:
        """:attr:`log_product_over_tokens` in base 10, the readable order of magnitude."""
        return self.log_product_over_tokens / math.log(10.0)


def volume_ratio(
    points_simexp: npt.ArrayLike,
    points_simec: npt.ArrayLike,
    token_mask: npt.ArrayLike | None = None,
    variance: float = 0.9,
) -> VolumeRatio:
    """rho_V,i = (Delta_i^SiMExp / Delta_i^SiMEC)^n_i per explored token, computed in log space.

    ``points_simexp``: (T1, n, d), ``points_simec``: (T2, n, d), two runs from the same
    start; ``token_mask``: (n,) bool. Per token, one PCA is fitted on the pooled points
    of both runs (so both are measured along the same n_i axes), and the token's log
    ratio is ``sum_j log(r_ij^SiMExp / r_ij^SiMEC)``: the log ratio of the two
    bounding-box volumes. How much more room leaving the class explores than staying in
    it, patch by patch; :attr:`VolumeRatio.rho_v` averages it over the patches as the
    paper does. A token where neither run moved has ratio 1; one where only SiMEC has
    zero extent has ratio +inf.
    """
    xe, idx = _points(points_simexp, "points_simexp", token_mask)
    xc, _ = _points(points_simec, "points_simec", token_mask)
    if xe.shape[1:] != xc.shape[1:]:
        raise ValueError(
            f"points_simec: token/width shape {xc.shape[1:]} differs from points_simexp's {xe.shape[1:]}"
        )
    v = _check_variance(variance)
    te = xe.shape[0]
    pooled = np.ascontiguousarray(np.swapaxes(np.concatenate([xe[:, idx], xc[:, idx]], axis=0), 0, 1))
    axes, n_comp = _pca(pooled, v)
    per_token = np.zeros(idx.size)
    for i in range(idx.size):
        if n_comp[i] == 0:
            continue
        a = axes[i, :, : n_comp[i]]
        le = _log_extents(pooled[i, :te], a)
        lc = _log_extents(pooled[i, te:], a)
        with np.errstate(invalid="ignore"):
            diff = le - lc
        # both zero along a component: neither run moved there, ratio 1
        diff = np.where(np.isneginf(le) & np.isneginf(lc), 0.0, diff)
        per_token[i] = diff.sum()
    return VolumeRatio(idx, n_comp, per_token)


def mean_rho_v(ratios: list[VolumeRatio] | tuple[VolumeRatio, ...]) -> float:
    """The paper's rho_V over several inputs: the mean of rho_V,i over every explored
    patch of every input (patches pooled, so each patch weighs the same)."""
    if not ratios:
        raise ValueError("ratios: give at least one VolumeRatio")
    logs = np.concatenate([r.per_token_log_ratio for r in ratios])
    return VolumeRatio(np.arange(logs.size), np.zeros(logs.size, np.int64), logs).rho_v


# ------------------------------------------------- embedding vs interpretation


def total_variation(p: npt.ArrayLike, q: npt.ArrayLike) -> np.ndarray | float:
    """Total variation distance between class distributions: 0.5 * sum_c |p_c - q_c|.

    ``p``, ``q``: (..., k) probabilities of the same shape; returns (...) (a float for
    1-d inputs). In [0, 1]: the largest difference in probability the two assign to any
    set of classes. Equals :func:`wasserstein1_01`.
    """
    pa = np.asarray(p)
    qa = np.asarray(q)
    if pa.ndim == 0 or qa.ndim == 0:
        raise ValueError("p: p and q need a class axis (shape (..., k))")
    pa = _probs(pa, "p", pa.ndim)
    qa = _probs(qa, "q", qa.ndim)
    if pa.shape != qa.shape:
        raise ValueError(f"q: shape {qa.shape} differs from p's {pa.shape}")
    tv = 0.5 * np.abs(pa - qa).sum(axis=-1)
    return float(tv) if tv.ndim == 0 else tv


def wasserstein1_01(p: npt.ArrayLike, q: npt.ArrayLike) -> np.ndarray | float:
    """Wasserstein-1 distance between class distributions under the 0/1 ground distance.

    Classes have no order, so the ground cost of moving probability mass between two
    different classes is 1 (and 0 to stay). The optimal plan keeps min(p_c, q_c) in place
    and moves the rest, so W1 = 1 - sum_c min(p_c, q_c) = 0.5 * ||p - q||_1, the total
    variation. The paper's own implementation is not public; this is the documented
    choice. Shapes as :func:`total_variation`.
    """
    return total_variation(p, q)


class CatchUp(NamedTuple):
    """Catch-up of the interpretation's prediction on the embedding's."""

    n_changes: int
    """Prediction changes of the embedding."""
    n_caught_up: int
    """Of those, how many the interpretation followed within the window."""
    fraction: float
    """n_caught_up / n_changes (NaN when the embedding never changed prediction)."""
    lags: np.ndarray
    """(n_caught_up,) int64: saved iterations between each change and its follower."""


def catch_up(
    pred_embedding: npt.ArrayLike, pred_interpretation: npt.ArrayLike, window: int = 10
) -> CatchUp:
    """How often the interpretation's prediction change follows the embedding's.

    ``pred_embedding``, ``pred_interpretation``: (T,) predicted classes per saved
    iteration (or (T, k) scores, reduced by arg-max), for the explored embedding and for
    its decoded input re-predicted. Definition: every t >= 1 with
    ``pred_embedding[t] != pred_embedding[t-1]`` is an embedding change to class
    c = pred_embedding[t]; it is *caught up* when some s with t <= s <= t + window
    (s < T) has ``pred_interpretation[s] != pred_interpretation[s-1]`` and
    ``pred_interpretation[s] == c``. The lag is the first such s - t. An interpretation
    that was already at c before t does not count (it led rather than followed). The
    paper's catch-up effect: decoding lags behind the embedding, then flips the same way.
    """
    pe = _labels(pred_embedding, "pred_embedding")
    pi = _labels(pred_interpretation, "pred_interpretation")
    if pe.shape != pi.shape:
        raise ValueError(f"pred_interpretation: length {pi.shape[0]} differs from pred_embedding's {pe.shape[0]}")
    if int(window) != window or window < 0:
        raise ValueError(f"window: must be a non-negative integer, got {window}")
    w = int(window)
    t_len = pe.shape[0]
    changes_e = np.flatnonzero(pe[1:] != pe[:-1]) + 1
    changed_i = np.zeros(t_len, dtype=bool)
    changed_i[1:] = pi[1:] != pi[:-1]
    lags: list[int] = []
    for t in changes_e:
        c = pe[t]
        for s in range(t, min(t_len, t + w + 1)):
            if changed_i[s] and pi[s] == c:
                lags.append(int(s - t))
                break
    n = int(changes_e.size)
    frac = float(len(lags) / n) if n else float("nan")
    return CatchUp(n, len(lags), frac, np.asarray(lags, dtype=np.int64))


def pearson(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    """Pearson correlation of two equally long 1-d series (NaN if either is constant)."""
    x = _array(a, "a", 1)
    y = _array(b, "b", 1)
    if x.shape != y.shape:
        raise ValueError(f"b: length {y.shape[0]} differs from a's {x.shape[0]}")
    if x.size < 2:
        raise ValueError("a: needs at least 2 values for a correlation")
    x = x - x.mean()
    y = y - y.mean()
    den = math.sqrt(float((x * x).sum()) * float((y * y).sum()))
    if den == 0.0:
        return float("nan")
    return float(np.clip((x * y).sum() / den, -1.0, 1.0))


def top_probability_correlation(probs_embedding: npt.ArrayLike, probs_interpretation: npt.ArrayLike) -> float:
    """Pearson correlation of the top-class probability series of embedding and interpretation.

    ``probs_*``: (T, k) probabilities. Each series is its own max_c p_t[c] (the model's
    confidence on that input); a value near 1 means decoding preserves how sure the
    model is along the run, not only its decision.
    """
    pe = _probs(probs_embedding, "probs_embedding")
    pi = _probs(probs_interpretation, "probs_interpretation")
    if pe.shape != pi.shape:
        raise ValueError(f"probs_interpretation: shape {pi.shape} differs from probs_embedding's {pe.shape}")
    return pearson(pe.max(axis=1), pi.max(axis=1))


# ------------------------------------------------------------------- timing


def time_per_iteration_per_token(total_seconds: float, iterations: int, tokens: int) -> float:
    """Seconds per iteration per explored token: total_seconds / (iterations * tokens).

    ``tokens`` counts explored tokens over the whole batch. The paper's cost unit
    (Table 7), which makes runs with different token counts and batches comparable.
    """
    ts = float(total_seconds)
    if not math.isfinite(ts) or ts < 0:
        raise ValueError(f"total_seconds: must be finite and >= 0, got {total_seconds}")
    if int(iterations) != iterations or iterations < 1:
        raise ValueError(f"iterations: must be a positive integer, got {iterations}")
    if int(tokens) != tokens or tokens < 1:
        raise ValueError(f"tokens: must be a positive integer, got {tokens}")
    return ts / (int(iterations) * int(tokens))


# ---------------------------------------------------------------- summary


def json_ready(v: Any) -> Any:
    """numpy scalars/arrays to Python; non-finite floats to None (strict JSON)."""
    if isinstance(v, dict):
        return {k: json_ready(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_ready(x) for x in v]
    if isinstance(v, np.ndarray):
        return json_ready(v.tolist())
    if isinstance(v, (np.integer, bool, np.bool_)):
        return v.item() if isinstance(v, np.generic) else v
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return f if math.isfinite(f) else None
    return v


def summarize(
    *,
    logits: npt.ArrayLike | None = None,
    probs: npt.ArrayLike | None = None,
    points: npt.ArrayLike | None = None,
    token_mask: npt.ArrayLike | None = None,
    points_simec: npt.ArrayLike | None = None,
    interpretation_logits: npt.ArrayLike | None = None,
    interpretation_probs: npt.ArrayLike | None = None,
    total_seconds: float | None = None,
    iterations: int | None = None,
    variance: float = 0.9,
    window: int = 10,
) -> dict[str, Any]:
    """All metrics of one run as a JSON-serialisable dict (NaN/inf become ``None``).

    Give exactly one of ``logits``/``probs`` ((T, k), the head's output along the run).
    Optional: ``points`` (T, n, d) and ``token_mask`` (n,) for the explored volume;
    ``points_simec`` (T', n, d), a SiMEC run from the same start, for rho_V (``points``
    then being the SiMExp run); one of ``interpretation_logits``/``interpretation_probs``
    (T, k) for the embedding-vs-interpretation metrics; ``total_seconds`` and
    ``iterations`` (default T - 1) for the time per iteration per explored token (the
    token count is ``token_mask.sum()``, else n, else 1 when no points are given).
    """
    if (logits is None) == (probs is None):
        raise ValueError("logits: give exactly one of logits or probs")
    if logits is not None:
        p = softmax(_scores(logits, "logits"))
    else:
        assert probs is not None  # exactly one of the two, checked above
        p = _probs(probs, "probs")
    t, k = p.shape
    pred = predictions(p)
    out: dict[str, Any] = {
        "iterations_saved": t,
        "classes": k,
        "original_class": int(pred[0]),
        "final_class": int(pred[-1]),
        "prediction_changes": prediction_changes(p),
        "prediction_change_steps": prediction_change_steps(p),
        "original_class_probability": original_class_probability(p),
        "top_class_probability": top_class_probability(p),
    }
    if t >= 2:
        inv = ranking_inversions(p)
        out["ranking_inversions"] = inv.per_step
        out["ranking_inversions_total"] = inv.total
        if k >= 2:
            sp = ranking_spearman(p)
            out["ranking_spearman"] = sp
            out["ranking_spearman_mean"] = float(np.nanmean(sp)) if np.any(np.isfinite(sp)) else float("nan")
    n_tokens = 1
    if points is not None:
        vol = explored_volume(points, token_mask, variance)
        n_tokens = int(vol.tokens.size)
        out["explored_volume"] = {
            "variance": variance,
            "tokens": vol.tokens,
            "n_components": vol.n_components,
            "log_delta": vol.log_delta,
            "log_volume": vol.log_volume,
            "volume": vol.volume,
        }
        if points_simec is not None:
            rv = volume_ratio(points, points_simec, token_mask, variance)
            out["volume_ratio"] = {
                "rho_v": rv.rho_v,
                "log10_rho_v": rv.log_rho_v / math.log(10.0),
                "per_token_log10_ratio": rv.per_token_log_ratio / math.log(10.0),
                "geometric_mean": rv.geometric_mean,
                "log10_product_over_tokens": rv.log10_product_over_tokens,
                "n_components": rv.n_components,
            }
    elif points_simec is not None:
        raise ValueError("points_simec: needs points (the SiMExp run) as well")
    if (interpretation_logits is not None) and (interpretation_probs is not None):
        raise ValueError("interpretation_logits: give at most one of interpretation_logits/_probs")
    q = None
    if interpretation_logits is not None:
        q = softmax(_scores(interpretation_logits, "interpretation_logits"))
    elif interpretation_probs is not None:
        q = _probs(interpretation_probs, "interpretation_probs")
    if q is not None:
        if q.shape != p.shape:
            raise ValueError(f"interpretation_probs: shape {q.shape} differs from the run's {p.shape}")
        tv = total_variation(p, q)
        cu = catch_up(pred, predictions(q), window)
        out["interpretation"] = {
            "wasserstein1_01": tv,
            "wasserstein1_01_mean": float(np.mean(tv)),
            "prediction_agreement": float(np.mean(pred == predictions(q))),
            "prediction_changes": prediction_changes(q),
            "catch_up": {
                "window": window,
                "n_changes": cu.n_changes,
                "n_caught_up": cu.n_caught_up,
                "fraction": cu.fraction,
                "lags": cu.lags,
            },
            "top_probability_pearson": top_probability_correlation(p, q) if t >= 2 else float("nan"),
        }
    if total_seconds is not None:
        its = t - 1 if iterations is None else iterations
        out["timing"] = {
            "total_seconds": float(total_seconds),
            "iterations": its,
            "tokens": n_tokens,
            "seconds_per_iteration_per_token": time_per_iteration_per_token(total_seconds, its, n_tokens),
        }
    return json_ready(out)


# --------------------------------------------------------------------------- continuation paths


def path_summary(
    logits: npt.ArrayLike,
    distance: npt.ArrayLike,
    arc_length: npt.ArrayLike,
    drift: npt.ArrayLike,
    rejected: npt.ArrayLike,
    status: npt.ArrayLike,
    iterations: npt.ArrayLike,
    stop_iteration: int = -1,
    target: int | None = None,
) -> dict[str, Any]:
    """What a walk did, from one item's saved records (S,): how far it went and how well it kept its level.

    distance walked (arc length) and reached (|x - x0|) at the last saved point, the largest
    drift of the kept outputs, accepted and rejected steps, steps the corrector left above
    its tolerance (status bit 4); with a stop event, the iteration it fired at, and with a
    target, the counterfactual's distance from x0 and its probabilities there.
    """
    logits = _scores(logits, "logits")
    dist = _array(distance, "distance", 1)
    its = _array(iterations, "iterations", 1, np.int64)
    status_arr = _array(status, "status", 1, np.int64)
    steps_taken = int(its[-1])
    rejected_total = int(_array(rejected, "rejected", 1, np.int64)[-1])
    out: dict[str, Any] = {
        "distance_walked": float(_array(arc_length, "arc_length", 1)[-1]),
        "distance_from_x0": float(dist[-1]),
        "max_drift": float(np.nanmax(_array(drift, "drift", 1))),
        "accepted_steps": steps_taken - rejected_total,
        "rejected_steps": rejected_total,
        "unconverged_points": int(((status_arr & 4) != 0).sum()),
        "stop_iteration": int(stop_iteration),
    }
    if stop_iteration >= 0:
        at = int(np.searchsorted(its, stop_iteration))
        at = min(at, len(its) - 1)
        probs = softmax(logits[at])
        out["stop_distance_from_x0"] = float(dist[at])
        out["stop_class"] = int(np.argmax(logits[at]))
        out["stop_probabilities"] = [float(p) for p in probs]
    if target is not None:
        out["target"] = int(target)
        out["reached_target"] = bool(stop_iteration >= 0 and out.get("stop_class") == int(target))
    return out
