"""``metrics.json``: every metric of docs/method.md section 9 per input and run, and their means."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from manifold_jax import analysis
from manifold_jax.study import COUNTERFACTUAL, Study, StudyDamagedError
from manifold_jax.study.counterfactual_run import CERTIFICATE
from manifold_jax.study.storage import StudyFiles

HEADLINE = (
    ("prediction_changes", "prediction changes"),
    ("ranking_inversions_total", "class-ranking changes"),
    ("ranking_spearman_mean", "mean Spearman"),
)


def study_metrics(study: Study) -> dict[str, Any]:
    """Every metric for every input of a study, plus means over inputs (JSON-ready)."""
    select = study.inputs["select"]
    certificate = counterfactual_certificate(study)
    per_input = []
    for b, source in enumerate(study.spec.inputs):
        entry: dict[str, Any] = {"input": str(source)}
        for algorithm, traj in study.trajectories.items():
            seconds, run_iterations = _time_run(study.timing.get(algorithm, {}), study.spec.steps)
            interp = study.interpretations.get(algorithm)
            simec = study.trajectories.get("simec") if algorithm == "simexp" else None
            entry[algorithm] = analysis.summarize(
                logits=traj.y[b], points=traj.x[b], token_mask=select[b],
                points_simec=None if simec is None else simec.x[b],
                interpretation_logits=None if interp is None else interp.logits[b],
                total_seconds=seconds, iterations=run_iterations,
            )
            targets = study.inputs.get("target")
            entry[algorithm]["path"] = analysis.path_summary(
                logits=traj.y[b], distance=traj.distance[b], arc_length=traj.arc_length[b], drift=traj.drift[b],
                rejected=traj.rejected[b], status=traj.status[b], iterations=traj.iteration,
                stop_iteration=int(np.asarray(traj.final.stop_iteration)[b]),
                target=int(targets[b]) if algorithm == COUNTERFACTUAL and targets is not None else None,
            )
            if algorithm == COUNTERFACTUAL and certificate is not None:
                entry[algorithm]["path"]["certificate"] = {k: v[b] for k, v in certificate.items()}
            if algorithm in study.baselines:
                entry[f"baseline_{algorithm}"] = analysis.summarize(
                    logits=study.baselines[algorithm].y[b], points=study.baselines[algorithm].x[b],
                    token_mask=select[b],
                )
        per_input.append(entry)
    return {"spec": json.loads(study.spec.to_json()), "inputs": per_input, "means": _means(per_input)}


def _time_run(timing: dict[str, Any], steps: int) -> tuple[float | None, int]:
    """Seconds and iterations of a run's timing.json, compilation apart: the iterations it ran (a walk
    stopped early ran fewer than the study's steps); files without them give seconds per iteration x steps."""
    seconds, iterations = timing.get("seconds"), timing.get("iterations")
    if isinstance(seconds, (int, float)) and isinstance(iterations, int) and iterations > 0 and math.isfinite(seconds):
        return float(seconds), iterations
    per_iteration = timing.get("seconds_per_iteration")
    if not isinstance(per_iteration, (int, float)) or not math.isfinite(per_iteration):
        return None, steps
    return float(per_iteration) * steps, steps


def counterfactual_certificate(study: Study) -> dict[str, list[Any]] | None:
    """The counterfactual run's certificate (per input: reached, converged, distance, margin, kkt), if stored."""
    files = StudyFiles(study.path)
    rel = f"{COUNTERFACTUAL}/{CERTIFICATE}"
    if files.check(rel) == "missing":
        return None
    if files.check(rel) == "mismatch":
        raise StudyDamagedError(files.path(rel), "the file fails its checksum (it changed after it was written)")
    return json.loads(files.path(rel).read_text())


def _means(per_input: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean of the headline metrics and of log10 rho_V over inputs, per run kind."""
    kinds = [k for k in per_input[0] if k != "input"]
    out: dict[str, dict[str, float]] = {}
    for kind in kinds:
        row = {}
        for key, _ in HEADLINE:
            values = [e[kind].get(key) for e in per_input]
            values = [v for v in values if v is not None]
            row[key] = float(np.mean(values)) if values else float("nan")
        if any("volume_ratio" in e[kind] for e in per_input):
            row["rho_v"] = pooled_rho_v([e[kind]["volume_ratio"] for e in per_input if "volume_ratio" in e[kind]])
        agreement = [e[kind].get("interpretation", {}).get("prediction_agreement") for e in per_input]
        if any(a is not None for a in agreement):
            row["interpretation_agreement"] = float(np.mean([a for a in agreement if a is not None]))
            row["wasserstein1_01_mean"] = float(np.mean([e[kind]["interpretation"]["wasserstein1_01_mean"]
                                                         for e in per_input if "interpretation" in e[kind]]))
        final_same = [e[kind]["final_class"] == e[kind]["original_class"] for e in per_input]
        row["inputs_keeping_prediction"] = float(np.mean(final_same))
        changing = [e[kind].get("ranking_inversions_total", 0) > 0 for e in per_input]
        row["inputs_changing_ranking"] = float(np.mean(changing))
        out[kind] = row
    return out


def per_patch_log10_ratios(ratios: list[dict[str, Any]]) -> list[float]:
    """The log10 rho_V,i of every explored patch of every input, read back from metrics.json: a
    None there is +inf, or -inf (a zero ratio: SiMExp did not move that patch) at the positions
    listed in ``zero_ratio_tokens`` (JSON writes both infinities as null)."""
    logs: list[float] = []
    for r in ratios:
        zeros = set(r.get("zero_ratio_tokens", ()))
        logs += [(-math.inf if i in zeros else math.inf) if v is None else float(v)
                 for i, v in enumerate(r.get("per_token_log10_ratio", []))]
    return logs


def pooled_rho_v(ratios: list[dict[str, Any]]) -> float:
    """The paper's rho_V over inputs: the mean of the per-patch ratios of every input, pooled
    (:func:`per_patch_log10_ratios`)."""
    logs = per_patch_log10_ratios(ratios)
    if not logs:
        return float("nan")
    top = max(logs)
    if not math.isfinite(top):
        return top if top > 0 else 0.0
    return float(10.0 ** (top + math.log10(np.mean([10.0 ** (v - top) for v in logs]))))
