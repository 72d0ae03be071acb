"""Argument checks shared by the analysis modules: arrays of the expected rank, finite, named in errors."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

PROB_ATOL = 1e-4
"""Tolerance on a probability row summing to 1 (float32 softmax outputs pass)."""

VARIANCE_RTOL = 1e-9
"""Slack on the cumulative explained-variance test, so that a fraction reached exactly
in exact arithmetic (e.g. 0.6 + 0.3 = 0.9) is not missed by rounding."""


def as_array(a: npt.ArrayLike, name: str, ndim: int, dtype: Any = np.float64) -> np.ndarray:
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


def as_scores(a: npt.ArrayLike, name: str, min_t: int = 1, min_k: int = 1) -> np.ndarray:
    """Check a (T, k) score array with T >= min_t and k >= min_k."""
    arr = as_array(a, name, 2)
    t, k = arr.shape
    if t < min_t:
        raise ValueError(f"{name}: needs at least {min_t} iterations (rows), got {t}")
    if k < min_k:
        raise ValueError(f"{name}: needs at least {min_k} classes (columns), got {k}")
    return arr


def as_probs(a: npt.ArrayLike, name: str, ndim: int = 2) -> np.ndarray:
    """Check an array of probability rows (last axis sums to 1, entries in [0, 1])."""
    arr = as_array(a, name, ndim)
    if np.any(arr < -PROB_ATOL) or np.any(arr > 1 + PROB_ATOL):
        raise ValueError(f"{name}: probabilities must lie in [0, 1] (pass logits through softmax)")
    sums = arr.sum(axis=-1)
    if np.any(np.abs(sums - 1.0) > PROB_ATOL * max(1, arr.shape[-1])):
        raise ValueError(f"{name}: probability rows must sum to 1 (pass logits through softmax)")
    return arr


def as_labels(a: npt.ArrayLike, name: str) -> np.ndarray:
    """Predicted classes (T,) from either labels (T,) or scores (T, k)."""
    arr = np.asarray(a)
    if arr.ndim == 2:
        return np.argmax(as_scores(arr, name), axis=1).astype(np.int64)  # the predicted class per row
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected labels (T,) or scores (T, k), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name}: is empty")
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ValueError(f"{name}: labels must be integers")
        arr = arr.astype(np.int64)
    return arr.astype(np.int64)
