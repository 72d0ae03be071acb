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
    if logits is not None:
        p = softmax(as_scores(logits, "logits"))
    else:
        assert probs is not None  # exactly one of the two, checked above
        p = as_probs(probs, "probs")
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
        raise ValueError("interpretation_logits: give at most one of interpretation_logits/as_probs")
    q = None
    if interpretation_logits is not None:
        q = softmax(as_scores(interpretation_logits, "interpretation_logits"))
    elif interpretation_probs is not None:
        q = as_probs(interpretation_probs, "interpretation_probs")
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
