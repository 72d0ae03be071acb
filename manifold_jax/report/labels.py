"""What the page calls things: runs, step statuses, per-point records and metrics, in readable words."""

from __future__ import annotations

from typing import Any

import numpy as np

from manifold_jax.explore.iteration import NONFINITE, REJECTED, STALLED, STOPPED, UNCONVERGED

RUN_TITLES = {"simec": "SiMEC", "simexp": "SiMExp", "counterfactual": "counterfactual"}
"""How the page names the runs (baselines: "baseline of <title>")."""


STATUS_BITS = (("stalled", STALLED), ("not finite", NONFINITE), ("unconverged", UNCONVERGED),
               ("rejected", REJECTED), ("stopped", STOPPED))
"""The status bits of a step (manifold_jax.explore.iteration) as the page names them."""


RECORD_LABELS = {
    "step": "step size",
    "eigenvalue": "metric along the step's direction",
    "status": "step status",
    "stalls": "steps that stood still so far",
    "h": "step length",
    "drift": "change of the outputs from the input's (max |Δ|)",
    "error": "step error estimate",
    "corrections": "corrector iterations",
    "rejected": "rejected steps so far",
    "distance": "distance from the input |x − x0|",
    "arc_length": "distance walked",
    "goal_distance": "distance to the goal",
}
"""Readable names of a trajectory's per-point records (the field names of manifold_jax.explore.Trajectory)."""


METRIC_LABELS = {
    "iterations_saved": "saved points",
    "classes": "classes",
    "original_class": "class at the start",
    "final_class": "class at the end",
    "prediction_changes": "prediction changes",
    "original_class_probability": "probability of the start's class",
    "top_class_probability": "probability of the top class",
    "ranking_inversions_total": "class-ranking changes",
    "ranking_spearman_mean": "mean Spearman correlation of the class ranking with the start's",
    "explored_volume.variance": "explored volume: variance kept",
    "explored_volume.log_volume": "explored volume: log volume",
    "explored_volume.volume": "explored volume",
    "volume_ratio.rho_v": "ρ_V, volume ratio SiMExp / SiMEC",
    "volume_ratio.log10_rho_v": "log10 ρ_V",
    "volume_ratio.geometric_mean": "volume ratio: geometric mean over tokens",
    "volume_ratio.log10_product_over_tokens": "volume ratio: log10 of the product over tokens",
    "interpretation.wasserstein1_01_mean": "decoded input: mean W1 distance of its prediction to the embedding's",
    "interpretation.prediction_agreement": "decoded input: agreement with the embedding's class",
    "interpretation.prediction_changes": "decoded input: prediction changes",
    "interpretation.catch_up.window": "decoded input: catch-up window (saved points)",
    "interpretation.catch_up.n_changes": "decoded input: embedding class changes to catch up with",
    "interpretation.catch_up.n_caught_up": "decoded input: class changes caught up",
    "interpretation.catch_up.fraction": "decoded input: fraction caught up",
    "interpretation.top_probability_pearson": "decoded input: correlation of its confidence with the embedding's",
    "timing.total_seconds": "time of the iterations (s, compilation apart)",
    "timing.iterations": "iterations run",
    "timing.tokens": "explored tokens",
    "timing.seconds_per_iteration_per_token": "seconds per iteration and token",
    "path.distance_walked": "distance walked",
    "path.distance_from_x0": "distance from the input at the end",
    "path.max_drift": "largest change of the outputs from the input's",
    "path.accepted_steps": "accepted steps",
    "path.rejected_steps": "rejected steps",
    "path.unconverged_points": "saved points above the corrector's tolerance",
    "path.stop_iteration": "stopped at iteration",
    "path.stop_distance_from_x0": "distance from the input where it stopped",
    "path.stop_class": "class where it stopped",
    "path.target": "target class",
    "path.reached_target": "reached the target",
    "projection.points": "verified sentences: points searched",
    "projection.decoded_agreement": "decoded sentence: agreement with the embedding's class",
    "projection.verified_agreement": "verified sentence: agreement with the embedding's class",
    "projection.decoded_wasserstein1_01_mean": "decoded sentence: mean W1 distance to the embedding's prediction",
    "projection.verified_wasserstein1_01_mean": "verified sentence: mean W1 distance to the embedding's prediction",
    "projection.largest_probability_change_from_start": "verified sentences: largest probability change",
    "projection.away.found": "a verified sentence in another class",
    "projection.away.class": "its class",
    "rho_v": "ρ_V, volume ratio SiMExp / SiMEC",
    "interpretation_agreement": "decoded input: agreement with the embedding's class",
    "wasserstein1_01_mean": "decoded input: mean W1 distance of its prediction to the embedding's",
    "inputs_keeping_prediction": "inputs keeping their prediction",
    "inputs_changing_ranking": "inputs changing a class ranking",
}
"""Readable names of the metrics (the keys of metrics.json, nested ones joined with '.'); a key not listed is
shown with its underscores and dots as spaces."""


CLASS_METRICS = ("original_class", "final_class", "path.stop_class", "path.target", "projection.away.class")
"""Metrics whose value is a class index: the page shows the class's label."""


RUN_DESCRIPTIONS = {
    "simec": "SiMEC (Algorithm 1): each step follows a null direction of the pullback metric, so the prediction "
             "should stay put.",
    "simexp": "SiMExp (Algorithm 2): each step follows a direction the metric sees, so the prediction should move.",
    "counterfactual": "Counterfactual: SiMExp toward a chosen class along the smallest input change, stopped where "
                      "the prediction changes.",
}


def rounded(values: Any, digits: int = 6) -> Any:
    """Nested lists of floats at ``digits`` significant digits (non-finite -> None), for compact JSON."""
    array = np.asarray(values, dtype=np.float64)
    out = np.vectorize(lambda v: float(f"{v:.{digits}g}"), otypes=[float])(array) if array.size else array
    listed = out.tolist()

    def clean(v: Any) -> Any:
        if isinstance(v, list):
            return [clean(u) for u in v]
        return v if np.isfinite(v) else None

    return clean(listed)


def flat_scalars(metrics: dict[str, Any], prefix: str = "", max_text: int = 40) -> dict[str, Any]:
    """The scalar entries of a (nested) metrics dict, nested keys joined with '.'; per-point series, per-token
    lists and texts longer than ``max_text`` characters (sentences: the page shows them elsewhere) are left out."""
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_scalars(value, name + ".", max_text))
        elif isinstance(value, (bool, np.bool_)):
            out[name] = bool(value)
        elif isinstance(value, (int, float, np.integer, np.floating)):
            out[name] = float(value) if np.isfinite(value) else None
        elif isinstance(value, str) and len(value) <= max_text:
            out[name] = value
    return out


def readable_metrics(flat: dict[str, Any], labels: list[str]) -> dict[str, Any]:
    """Flat metrics (:func:`flat_scalars`) under readable names (METRIC_LABELS), class indices as their labels."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        if key in CLASS_METRICS and isinstance(value, float) and value.is_integer() and 0 <= value < len(labels):
            value = labels[int(value)]
        elif key == "path.stop_iteration" and value == -1:
            value = "did not stop"
        out[METRIC_LABELS.get(key, key.replace("_", " ").replace(".", ": "))] = value
    return out


def status_names(status: int) -> str:
    """A step's status bits in words ("ok" for none): "stopped", "rejected, unconverged", ..."""
    named = [name for name, bit in STATUS_BITS if status & bit]
    return ", ".join(named) if named else "ok"


def run_title(name: str) -> str:
    """The page's name of a run: "SiMEC", "counterfactual", "baseline of SiMExp"."""
    if name.startswith("baseline_"):
        return "baseline of " + run_title(name[len("baseline_"):])
    return RUN_TITLES.get(name, name)


def run_description(name: str) -> str:
    if name in RUN_DESCRIPTIONS:
        return RUN_DESCRIPTIONS[name]
    if name.startswith("baseline_"):
        of = name[len("baseline_"):]
        sign = "+" if of == "simec" else "-"
        return (f"Baseline: steps of {sign}grad p(original class) plus Gaussian noise orthogonal to it, with the "
                f"step sizes of {of}.")
    return ""
