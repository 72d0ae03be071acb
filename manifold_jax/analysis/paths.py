"""What a continuation walk did: distances, drift, accepted and rejected steps, where it stopped."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from manifold_jax.analysis.checks import as_array, as_scores
from manifold_jax.analysis.classification import softmax


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
    logits = as_scores(logits, "logits")
    dist = as_array(distance, "distance", 1)
    its = as_array(iterations, "iterations", 1, np.int64)
    status_arr = as_array(status, "status", 1, np.int64)
    # a stopped item freezes: the iterations after its stop are no steps of its own
    steps_taken = int(stop_iteration) if stop_iteration >= 0 else int(its[-1])
    rejected_total = int(as_array(rejected, "rejected", 1, np.int64)[-1])
    out: dict[str, Any] = {
        "distance_walked": float(as_array(arc_length, "arc_length", 1)[-1]),
        "distance_from_x0": float(dist[-1]),
        "max_drift": float(np.nanmax(as_array(drift, "drift", 1))),
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


def stop_sentence(index: int, target: int, stop_iteration: int, stop_class: int, iterations: int,
                  labels: tuple[str, ...] = ()) -> str:
    """Where one counterfactual walk ended, in words: "input 2 reached class 9 at iteration 41",
    "input 2 left its class for 7 (target 9) at iteration 41" or "input 2 did not reach class 9 in
    1000 iterations". ``stop_iteration`` -1: no stop event fired; ``iterations``: the steps run."""

    def name(c: int) -> str:
        return f"class {labels[c]}" if c < len(labels) and labels[c] != str(c) else f"class {c}"

    if stop_iteration < 0:
        return f"input {index} did not reach {name(target)} in {iterations} iterations"
    if stop_class == target:
        return f"input {index} reached {name(target)} at iteration {stop_iteration}"
    return f"input {index} left its class for {name(stop_class)} (target {name(target)}) at iteration {stop_iteration}"
