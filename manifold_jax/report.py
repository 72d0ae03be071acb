"""Metrics, figures and a readable summary for a finished study directory.

Writes ``metrics.json`` (every metric of DESIGN section 6 per input and algorithm, the
gradient baseline's, and their means), ``figures/*.png`` and ``report.md`` (a table of
the paper's Table-1 metrics and, for text models, the decoded sentences with the
changed tokens marked) and ``report.html`` (the interactive page of
:mod:`manifold_jax.report_html`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from manifold_jax import analysis
from manifold_jax.report_html import write_report_html
from manifold_jax.study import COUNTERFACTUAL, Study, StudyIncompleteError, load_model, load_study
from manifold_jax.study.atomic import remove_temporaries
from manifold_jax.study.storage import StudyFiles

HEADLINE = (
    ("prediction_changes", "prediction changes"),
    ("ranking_inversions_total", "class-ranking changes"),
    ("ranking_spearman_mean", "mean Spearman"),
)


def _input_name(spec_input: str, index: int, limit: int = 60) -> str:
    text = spec_input if len(spec_input) <= limit else spec_input[: limit - 3] + "..."
    return f"{index}: {text}"


def study_metrics(study: Study) -> dict[str, Any]:
    """Every metric for every input of a study, plus means over inputs (JSON-ready)."""
    select = study.inputs["select"]
    per_input = []
    for b, source in enumerate(study.spec.inputs):
        entry: dict[str, Any] = {"input": str(source)}
        for algorithm, traj in study.trajectories.items():
            timing = study.timing.get(algorithm, {})
            seconds = timing.get("seconds_per_iteration")
            interp = study.interpretations.get(algorithm)
            simec = study.trajectories.get("simec") if algorithm == "simexp" else None
            entry[algorithm] = analysis.summarize(
                logits=traj.y[b], points=traj.x[b], token_mask=select[b],
                points_simec=None if simec is None else simec.x[b],
                interpretation_logits=None if interp is None else interp.logits[b],
                total_seconds=None if seconds is None else seconds * study.spec.steps,
                iterations=study.spec.steps,
            )
            targets = study.inputs.get("target")
            entry[algorithm]["path"] = analysis.path_summary(
                logits=traj.y[b], distance=traj.distance[b], arc_length=traj.arc_length[b], drift=traj.drift[b],
                rejected=traj.rejected[b], status=traj.status[b], iterations=traj.iteration,
                stop_iteration=int(np.asarray(traj.final.stop_iteration)[b]),
                target=int(targets[b]) if algorithm == COUNTERFACTUAL and targets is not None else None,
            )
            if algorithm in study.baselines:
                entry[f"baseline_{algorithm}"] = analysis.summarize(
                    logits=study.baselines[algorithm].y[b], points=study.baselines[algorithm].x[b],
                    token_mask=select[b],
                )
        per_input.append(entry)
    return {"spec": json.loads(study.spec.to_json()), "inputs": per_input, "means": _means(per_input)}


def _path_line(path: dict[str, Any], labels: tuple[str, ...]) -> str:
    """One line on what a walk did: distances, drift, steps, and where it stopped."""
    text = (f"walked {_fmt(path['distance_walked'])}, ended {_fmt(path['distance_from_x0'])} from x0; "
            f"max drift {_fmt(path['max_drift'])}; {path['accepted_steps']} accepted / {path['rejected_steps']} "
            f"rejected steps")
    if path["unconverged_points"]:
        text += f"; {path['unconverged_points']} saved point(s) left above the corrector's tolerance"
    if path["stop_iteration"] >= 0:
        probs = path["stop_probabilities"]
        text += (f"; stopped at iteration {path['stop_iteration']} as {_label(labels, path['stop_class'])} "
                 f"(p = {probs[path['stop_class']]:.3f}), {_fmt(path['stop_distance_from_x0'])} from x0")
    if "target" in path:
        text += f"; target {_label(labels, path['target'])} {'reached' if path['reached_target'] else 'not reached'}"
    return text


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
        ratios = [e[kind].get("volume_ratio", {}).get("log10_ratio") for e in per_input]
        ratios = [r for r in ratios if r is not None]
        if ratios:
            row["log10_volume_ratio"] = float(np.mean(ratios))
        final_same = [e[kind]["final_class"] == e[kind]["original_class"] for e in per_input]
        row["inputs_keeping_prediction"] = float(np.mean(final_same))
        changing = [e[kind].get("ranking_inversions_total", 0) > 0 for e in per_input]
        row["inputs_changing_ranking"] = float(np.mean(changing))
        out[kind] = row
    return out


def build_report(
    path: str | Path, *, figures: bool = True, partial: bool = False, echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Compute metrics, draw figures and write report.md and report.html for the study at ``path``.

    A study with an unfinished exploration raises StudyIncompleteError naming it, unless
    ``partial``, which reports the finished ones and says which are missing. Every file is
    written atomically and recorded in the study's manifest.
    """
    study = load_study(path)
    missing = ", ".join(f"{a} ({done} of {study.spec.steps} steps)" for a, done in study.unfinished.items())
    if study.unfinished and (not partial or not study.trajectories):
        raise StudyIncompleteError(Path(path), study.unfinished, study.spec.steps)
    if missing:
        echo(f"report: unfinished, left out: {missing}")
    metrics = study_metrics(study)
    out = Path(path)
    remove_temporaries(out)  # leftovers of a report that was killed while writing
    files = StudyFiles(out)
    files.write_text("metrics.json", json.dumps(metrics, indent=2))
    model = load_model(study.spec) if study.inputs.get("raw") is None else None
    sentences = _sentences(study, model) if model is not None else {}
    if figures:
        _draw(study, model, files)
    files.write_text("report.md", _markdown(study, metrics, sentences))
    write_report_html(study, metrics, out / "report.html", model=model)
    files.manifest.record(out / "report.html")
    echo(f"report: {out / 'report.md'}, {out / 'report.html'} ({len(study.spec.inputs)} inputs, "
         f"{', '.join(study.trajectories)})")
    return metrics


def _sentences(study: Study, model: Any) -> dict[str, list[list[tuple[int, str]]]]:
    """Decoded sentences at a few iterations per algorithm and input, changed tokens marked."""
    from manifold_jax.interpret import decoded_sentences
    from manifold_jax.plots import snapshot_indices

    ctx = study.context
    out: dict[str, list[list[tuple[int, str]]]] = {}
    for algorithm, interp in study.interpretations.items():
        iterations = study.trajectories[algorithm].iteration
        rows = []
        for b in range(len(study.spec.inputs)):
            chosen = [0, *snapshot_indices(len(iterations))]
            texts = decoded_sentences(
                model, interp.inputs[b, chosen], np.repeat(ctx["input_ids"][b : b + 1], len(chosen), 0),
                np.repeat(ctx["attention_mask"][b : b + 1], len(chosen), 0),
            )
            rows.append([(int(iterations[s]), t) for s, t in zip(chosen, texts, strict=True)])
        out[algorithm] = rows
    return out


def _draw(study: Study, model: Any, files: StudyFiles) -> None:
    from manifold_jax.plots import exploration_figure, importance_figure

    files.path("figures").mkdir(parents=True, exist_ok=True)
    ctx = study.context
    outputs = next(iter(study.trajectories.values())).y.shape[-1]
    labels = study.spec.labels or tuple(str(i) for i in range(outputs))
    raw = study.inputs.get("raw")
    # the figure sets runs over one time axis: the counterfactual, which ends at its flip, is drawn apart
    walks = {a: t for a, t in study.trajectories.items() if a != COUNTERFACTUAL}
    for b, source in enumerate(study.spec.inputs):
        name = _input_name(str(source), b)
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
        tokens = None
        if model is not None:
            tokens = model.tokenizer.convert_ids_to_tokens(ctx["input_ids"][b].tolist())
        files.write_with(f"figures/input{b:02d}_importance.png", functools.partial(
            importance_figure, title=name, importance=study.inputs["importance"][b],
            token_mask=ctx["token_mask"][b], select=study.inputs["select"][b],
            image=None if raw is None else raw[b], tokens=tokens,
        ))


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _percent(fraction: Any) -> str:
    """A fraction in [0, 1] as "87 %" ("n/a" when missing)."""
    if fraction is None or not np.isfinite(fraction):
        return "n/a"
    return f"{100 * float(fraction):.0f} %"


def _label(labels: tuple[str, ...], c: int) -> str:
    return labels[c] if labels else str(c)


def _markdown(study: Study, metrics: dict[str, Any], sentences: dict[str, list[list[tuple[int, str]]]]) -> str:
    spec = study.spec
    lines = [
        f"# Study: {spec.model}",
        "",
        f"{len(spec.inputs)} input(s); {spec.steps} steps; eta = {spec.eta}; select = {spec.select}; "
        f"bounds = {spec.bounds}; threshold = {spec.threshold}; step rule = {spec.step_rule}; "
        f"output metric = {spec.output_metric}; seed = {spec.seed}.",
        "",
        "## Means over inputs",
        "",
        "| run | prediction changes | class-ranking changes | mean Spearman | log10 volume ratio "
        "| inputs keeping their prediction | inputs changing a ranking |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind, row in metrics["means"].items():
        lines.append(
            f"| {kind} | {_fmt(row['prediction_changes'])} | {_fmt(row['ranking_inversions_total'])} | "
            f"{_fmt(row['ranking_spearman_mean'])} | {_fmt(row.get('log10_volume_ratio'))} | "
            f"{_fmt(row['inputs_keeping_prediction'])} | {_fmt(row['inputs_changing_ranking'])} |"
        )
    if study.unfinished:
        missing = ", ".join(f"{a} ({done} of {spec.steps} steps)" for a, done in study.unfinished.items())
        lines += ["", f"Unfinished and left out of this report: {missing}."]
    lines += ["", "## Per input", ""]
    labels = spec.labels
    for b, entry in enumerate(metrics["inputs"]):
        lines.append(f"### {_input_name(entry['input'], b, 120)}")
        lines.append("")
        for algorithm in study.trajectories:
            m = entry[algorithm]
            interp = m.get("interpretation", {})
            lines.append(
                f"- **{algorithm}**: class {_label(labels, m['original_class'])} -> "
                f"{_label(labels, m['final_class'])}; "
                f"prediction changes {m['prediction_changes']}, ranking changes {m.get('ranking_inversions_total')}, "
                f"interpretation agrees with the embedding's prediction at "
                f"{_percent(interp.get('prediction_agreement'))} of the saved points"
            )
            lines.append("    - " + _path_line(m["path"], labels))
            for iteration, text in sentences.get(algorithm, [[]] * (b + 1))[b]:
                lines.append(f"    - t={iteration}: {text}")
        lines.append("")
    timing = {a: t.get("seconds_per_iteration") for a, t in study.timing.items()}
    batch = len(spec.inputs)
    lines += ["## Timing", "", *(f"- {a}: {_fmt(s)} s per iteration (batch of {batch})" for a, s in timing.items()), ""]
    lines += ["Changed tokens are marked *like this*. Figures: `figures/`.", ""]
    return "\n".join(lines)
