"""``figures/*.png``: per input the exploration, counterfactual, importance and sentence figures."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from manifold_jax.plots import (
    counterfactual_figure,
    distribution_figure,
    exploration_figure,
    importance_figure,
    sentence_figure,
)
from manifold_jax.report.metrics import counterfactual_certificate
from manifold_jax.report.text import certificate_text, describe_input
from manifold_jax.study import COUNTERFACTUAL, Study
from manifold_jax.study.storage import StudyFiles

SUMMARY_FIGURE = "figures/summary_distributions.png"
"""A summarised study's histograms (:mod:`manifold_jax.report.summary`)."""


def summary_panels(summary: dict[str, Any]) -> dict[str, list[float | None]]:
    """The summary's measures as the distribution figure's panels: label -> per-input values."""
    return {m["label"]: m["values"] for m in summary["measures"].values()}


def draw_figures(study: Study, model: Any, files: StudyFiles, projections: dict[str, list[dict[str, Any]]],
                 summary: dict[str, Any] | None = None) -> None:
    """The figures of every input, or of a summarised study its histograms and the figures of the inputs it
    shows, into ``figures/``, each written atomically and recorded in the manifest."""
    files.path("figures").mkdir(parents=True, exist_ok=True)
    ctx = study.context
    outputs = next(iter(study.trajectories.values())).y.shape[-1]
    labels = study.spec.labels or tuple(str(i) for i in range(outputs))
    raw = study.inputs.get("raw")
    # the figure sets runs over one time axis: the counterfactual, which ends at its flip, is drawn apart
    walks = {a: t for a, t in study.trajectories.items() if a != COUNTERFACTUAL}
    counterfactual = study.trajectories.get(COUNTERFACTUAL)
    decoded = study.interpretations.get(COUNTERFACTUAL)
    certificate = counterfactual_certificate(study)
    if summary is not None:
        files.write_with(SUMMARY_FIGURE, functools.partial(
            distribution_figure, title=f"{summary['inputs']} inputs: distributions", panels=summary_panels(summary)))
    for b in range(len(study.spec.inputs)) if summary is None else summary["shown"]:
        name = describe_input(str(study.spec.inputs[b]), b)
        if walks:
            files.write_with(f"figures/input{b:02d}_exploration.png", functools.partial(
                exploration_figure,
                title=name, labels=labels,
                logits={a: t.y[b] for a, t in walks.items()},
                points={a: t.x[b] for a, t in walks.items()},
                select=study.inputs["select"][b], iterations=next(iter(walks.values())).iteration,
                original_image=None if raw is None else raw[b],
                decoded_images=None if raw is None else {
                    a: i.inputs[b] for a, i in study.interpretations.items() if a in walks},
            ))
        if counterfactual is not None and decoded is not None and raw is not None:
            files.write_with(f"figures/input{b:02d}_counterfactual.png", functools.partial(
                counterfactual_figure, title=f"{name}: counterfactual", labels=labels, original_image=raw[b],
                # the path's last saved point is where it stopped (a stopped item freezes); the
                # probabilities shown are the model's own on the decoded image
                counterfactual_image=decoded.inputs[b][-1], original_logits=counterfactual.y[b][0],
                counterfactual_logits=decoded.logits[b][-1], target=int(study.inputs["target"][b]),
                caption=_counterfactual_caption(counterfactual, b, certificate),
            ))
        tokens = None
        if model is not None:
            tokens = model.tokenizer.convert_ids_to_tokens(ctx["input_ids"][b].tolist())
        files.write_with(f"figures/input{b:02d}_importance.png", functools.partial(
            importance_figure, title=name, importance=study.inputs["importance"][b],
            token_mask=ctx["token_mask"][b], select=study.inputs["select"][b],
            image=None if raw is None else raw[b], tokens=tokens,
        ))
        if projections:
            files.write_with(f"figures/input{b:02d}_sentences.png", functools.partial(
                sentence_figure, title=f"Verified real sentences near {name}", labels=labels,
                rows=_sentence_rows(projections, b, labels),
            ))


def _counterfactual_caption(traj: Any, b: int, certificate: dict[str, list[Any]] | None = None) -> str:
    """Where item b's counterfactual path stopped, and how far it moved the input (with its certificate)."""
    if certificate is not None:
        return certificate_text({k: v[b] for k, v in certificate.items()}, sep="\n")
    stop = int(np.asarray(traj.final.stop_iteration)[b])
    moved = f"|x - x0| = {float(traj.distance[b][-1]):.3g}"
    if stop < 0:
        return f"no class change within {int(traj.iteration[-1])} iterations; {moved}"
    return f"class changed at iteration {stop}; {moved}"


def _sentence_rows(
    projections: dict[str, list[dict[str, Any]]], b: int, labels: tuple[str, ...]
) -> list[dict[str, Any]]:
    """Rows of the sentence figure of input b: the original, then per algorithm and snapshot the
    verified sentence (or the decoded one, labelled unverified, when none was found)."""
    first = next(iter(projections.values()))[b]["points"][0]
    rows = [{"caption": "original", "words": [(w, False) for w, _ in first["decoded"]["words"]],
             "probs": first["decoded"]["probs"]}]
    for algorithm, per_input in projections.items():
        entry = per_input[b]
        for p in [*entry["points"][1:], *([entry["away"]] if "away" in entry else [])]:
            v = p["verified"]
            label = f"{algorithm} t={p['iteration']}" + (" (other class)" if p["goal"] == "away" else "")
            emb = p["embedding_probs"]
            note = f"embedding: {_top(emb, labels)}" if p["goal"] == "match" else ""
            if v["found"]:
                rows.append({"caption": label, "words": v["words"], "probs": v["probs"], "note": note})
            else:
                rows.append({"caption": f"{label}: decoded, none verified", "words": p["decoded"]["words"],
                             "probs": p["decoded"]["probs"], "note": note})
    return rows


def _top(probs: list[float], labels: tuple[str, ...] = ()) -> str:
    c = int(np.argmax(probs))
    return f"{labels[c] if labels else c} {probs[c]:.2f}"
