"""The embedding's prediction against its decoded input's: distances, catch-up and correlation."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from manifold_jax.analysis.checks import as_array, as_labels, as_probs


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
    pa = as_probs(pa, "p", pa.ndim)
    qa = as_probs(qa, "q", qa.ndim)
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
    pe = as_labels(pred_embedding, "pred_embedding")
    pi = as_labels(pred_interpretation, "pred_interpretation")
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
    x = as_array(a, "a", 1)
    y = as_array(b, "b", 1)
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
    model is along the run, not only its decision. NaN when either series is constant to
    within CONSTANT_SPREAD (float32 rounding of a probability): a correlation of rounding
    noise would be a number without meaning.
    """
    pe = as_probs(probs_embedding, "probs_embedding")
    pi = as_probs(probs_interpretation, "probs_interpretation")
    if pe.shape != pi.shape:
        raise ValueError(f"probs_interpretation: shape {pi.shape} differs from probs_embedding's {pe.shape}")
    top_e, top_i = pe.max(axis=1), pi.max(axis=1)
    if np.ptp(top_e) <= CONSTANT_SPREAD or np.ptp(top_i) <= CONSTANT_SPREAD:
        return float("nan")
    return pearson(top_e, top_i)


CONSTANT_SPREAD = 1e-6
"""A top-probability series whose max - min is at most this is constant (float32 resolution of p near 1:
6e-8, with room for the softmax's own rounding)."""
