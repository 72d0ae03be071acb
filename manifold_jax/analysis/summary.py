"""Every metric of one run of one input as one JSON-ready dict."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from manifold_jax.analysis.checks import as_probs, as_scores
from manifold_jax.analysis.classification import (
    original_class_probability,
    prediction_change_steps,
    prediction_changes,
    predictions,
    ranking_inversions,
    ranking_spearman,
    softmax,
    top_class_probability,
)
from manifold_jax.analysis.interpretation import catch_up, top_probability_correlation, total_variation
from manifold_jax.analysis.timing import time_per_iteration_per_token
from manifold_jax.analysis.volume import explored_volume, volume_ratio


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
    p = _probabilities(logits, probs, "logits", "probs")
    out = _classification(p)
    vol, n_tokens = _volumes(points, token_mask, points_simec, variance)
    out.update(vol)
    if (interpretation_logits is not None) and (interpretation_probs is not None):
        raise ValueError("interpretation_logits: give at most one of interpretation_logits/as_probs")
    if interpretation_logits is not None or interpretation_probs is not None:
        q = _probabilities(interpretation_logits, interpretation_probs, "interpretation_logits", "interpretation_probs")
        out["interpretation"] = _interpretation(p, q, window)
    if total_seconds is not None:
        its = p.shape[0] - 1 if iterations is None else iterations
        out["timing"] = {
            "total_seconds": float(total_seconds),
            "iterations": its,
            "tokens": n_tokens,
            "seconds_per_iteration_per_token": time_per_iteration_per_token(total_seconds, its, n_tokens),
        }
    return json_ready(out)


def _probabilities(logits: npt.ArrayLike | None, probs: npt.ArrayLike | None, logits_name: str,
                   probs_name: str) -> np.ndarray:
    """(T, k) probabilities from whichever of ``logits`` / ``probs`` is given (checked, named in errors)."""
    if logits is not None:
        return softmax(as_scores(logits, logits_name))
    assert probs is not None  # one of the two, checked by the caller
    return as_probs(probs, probs_name)


def _classification(p: np.ndarray) -> dict[str, Any]:
    """The predictions, their changes, class probabilities and ranking changes along a run (T, k)."""
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
    return out


def _volumes(points: npt.ArrayLike | None, token_mask: npt.ArrayLike | None, points_simec: npt.ArrayLike | None,
             variance: float) -> tuple[dict[str, Any], int]:
    """The explored volume and (with a SiMEC run) the volume ratio, and the number of explored tokens
    (1 without points)."""
    if points is None:
        if points_simec is not None:
            raise ValueError("points_simec: needs points (the SiMExp run) as well")
        return {}, 1
    vol = explored_volume(points, token_mask, variance)
    out: dict[str, Any] = {
        "explored_volume": {
            "variance": variance,
            "tokens": vol.tokens,
            "n_components": vol.n_components,
            "log_delta": vol.log_delta,
            "log_volume": vol.log_volume,
            "volume": vol.volume,
        }
    }
    if points_simec is not None:
        rv = volume_ratio(points, points_simec, token_mask, variance)
        out["volume_ratio"] = {
            "rho_v": rv.rho_v,
            "log10_rho_v": rv.log_rho_v / math.log(10.0),
            "per_token_log10_ratio": rv.per_token_log_ratio / math.log(10.0),
            # JSON writes both infinities as null: these positions are the zero ratios (-inf)
            "zero_ratio_tokens": np.flatnonzero(np.isneginf(rv.per_token_log_ratio)),
            "geometric_mean": rv.geometric_mean,
            "log10_product_over_tokens": rv.log10_product_over_tokens,
            "n_components": rv.n_components,
        }
    return out, int(vol.tokens.size)


def _interpretation(p: np.ndarray, q: np.ndarray, window: int) -> dict[str, Any]:
    """The embedding's predictions ``p`` against the decoded input's ``q`` (both (T, k) probabilities)."""
    if q.shape != p.shape:
        raise ValueError(f"interpretation_probs: shape {q.shape} differs from the run's {p.shape}")
    pred = predictions(p)
    tv = total_variation(p, q)
    cu = catch_up(pred, predictions(q), window)
    return {
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
        "top_probability_pearson": top_probability_correlation(p, q) if p.shape[0] >= 2 else float("nan"),
    }
