"""Predictions, class-ranking changes and class probabilities along one run's saved outputs (T, k)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from manifold_jax.analysis.checks import as_probs, as_scores


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
    s = as_scores(scores, "scores")
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
    s = as_scores(scores, "scores", min_t=2)
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
    s = as_scores(scores, "scores", min_t=2, min_k=2)
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
    p = as_probs(probs, "probs")
    c = int(np.argmax(p[0])) if original_class is None else int(original_class)
    if not 0 <= c < p.shape[1]:
        raise ValueError(f"original_class: {c} is outside 0..{p.shape[1] - 1}")
    return p[:, c].copy()


def top_class_probability(probs: npt.ArrayLike) -> np.ndarray:
    """Probability of the currently top class at each iteration, (T,): the model's confidence."""
    p = as_probs(probs, "probs")
    return p.max(axis=1)
