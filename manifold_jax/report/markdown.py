"""``report.md``: the settings, the means over inputs, and per input each run's outcome and path."""

from __future__ import annotations

from typing import Any

import numpy as np

from manifold_jax.report.figures import SUMMARY_FIGURE
from manifold_jax.report.summary import summary_rows
from manifold_jax.report.text import certificate_text, class_label, describe_input, fmt, markdown_text, percent
from manifold_jax.study import Study


def _path_line(path: dict[str, Any], labels: tuple[str, ...]) -> str:
    """One line on what a walk did: distances, drift, steps, and where it stopped."""
    text = (f"walked {fmt(path['distance_walked'])}, ended {fmt(path['distance_from_x0'])} from x0; "
            f"max drift {fmt(path['max_drift'])}; {path['accepted_steps']} accepted / {path['rejected_steps']} "
            f"rejected steps")
    if path["unconverged_points"]:
        text += f"; {path['unconverged_points']} saved point(s) left above the corrector's tolerance"
    if path["stop_iteration"] >= 0:
        probs = path["stop_probabilities"]
        text += (f"; stopped at iteration {path['stop_iteration']} as {class_label(labels, path['stop_class'])} "
                 f"(p = {probs[path['stop_class']]:.3f}), {fmt(path['stop_distance_from_x0'])} from x0")
    if "target" in path:
        reached = "reached" if path["reached_target"] else "not reached"
        text += f"; target {class_label(labels, path['target'])} {reached}"
    if "certificate" in path:
        text += "; " + certificate_text(path["certificate"])
    return text


def _marked(words: list[list[Any]]) -> str:
    """Words as text, changed ones in bold."""
    return " ".join(f"**{markdown_text(w)}**" if changed else markdown_text(w) for w, changed in words)


def _probs(probs: list[float], labels: tuple[str, ...]) -> str:
    order = np.argsort(probs)[::-1]
    return ", ".join(f"{labels[c] if labels else c} {probs[c]:.2f}" for c in order)


def report_markdown(study: Study, metrics: dict[str, Any], projections: dict[str, list[dict[str, Any]]],
                    summary: dict[str, Any] | None = None, *, figures: bool = True) -> str:
    """report.md: the settings, the means over inputs, and per input each run's outcome, its path and,
    for text models, the decoded and verified sentences at the report's saved points. With a ``summary``
    (:func:`manifold_jax.report.summary.study_summary`): its distributions, its inputs at the extremes
    (these alone with their own section) and a table of every input instead."""
    spec = study.spec
    labels = tuple(markdown_text(label) for label in spec.labels)
    lines = _header(study, metrics)
    if summary is None:
        lines += ["", "## Per input", ""]
        for b in range(len(metrics["inputs"])):
            lines += _input_section(study, metrics, projections, b, labels)
    else:
        lines += _summary_section(metrics, summary, figures)
        lines += ["", "## The inputs at the extremes", ""]
        for b in summary["shown"]:
            lines += _input_section(study, metrics, projections, b, labels)
        lines += _summary_table(study, metrics, summary, labels)
    timing = {a: t.get("seconds_per_iteration") for a, t in study.timing.items()}
    batch = len(spec.inputs)
    lines += ["## Timing", "", *(f"- {a}: {fmt(s)} s per iteration (batch of {batch})" for a, s in timing.items()), ""]
    if projections:
        lines += [
            "Sentences: *decoded* is the nearest-token decoding of the explored embedding (Algorithm 3) with the "
            "model's own prediction on it; *verified* is a real sentence found near it by a metric-guided beam "
            "search over word substitutions (`manifold_jax.text_projection`), re-tokenised and re-predicted: the "
            "probabilities shown are that prediction. Words that differ from the original are in **bold**. "
            "Figures: `figures/` (`*_sentences.png` highlights the changed words).",
            "",
        ]
    else:
        lines += ["Figures: `figures/` (the exploration figures show each decoded image and its signed difference "
                  "from the original).", ""]
    return "\n".join(lines)


def _header(study: Study, metrics: dict[str, Any]) -> list[str]:
    """The title, the settings, the means over inputs and what was left unfinished."""
    spec, shown = study.spec, study.spec.settings()
    lines = [
        f"# Study: {markdown_text(spec.model)}",
        "",
        f"{len(spec.inputs)} input(s); {spec.steps} steps; eta = {shown['eta']}; select = {spec.select}; "
        f"space = {spec.space}; bounds = {spec.bounds}; threshold = {shown['threshold']}; step rule = "
        f"{shown['step_rule']}; output metric = {shown['output_metric']}; seed = {spec.seed}.",
        "",
        "## Means over inputs",
        "",
        "rho_V: the paper's explored-volume ratio SiMExp / SiMEC, per patch or token, averaged over the explored "
        "patches of every input. Interpretation: the decoded input's own prediction against the embedding's, at "
        "every saved point (arg-max agreement, and Wasserstein-1 with the 0/1 ground distance).",
        "",
        "| run | prediction changes | class-ranking changes | mean Spearman | rho_V | inputs keeping their "
        "prediction | inputs changing a ranking | interpretation agreement | interpretation W1 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for kind, row in metrics["means"].items():
        lines.append(
            f"| {kind} | {fmt(row['prediction_changes'])} | {fmt(row['ranking_inversions_total'])} | "
            f"{fmt(row['ranking_spearman_mean'])} | {fmt(row.get('rho_v'))} | "
            f"{fmt(row['inputs_keeping_prediction'])} | {fmt(row['inputs_changing_ranking'])} | "
            f"{percent(row.get('interpretation_agreement'))} | {fmt(row.get('wasserstein1_01_mean'))} |"
        )
    if study.unfinished:
        missing = ", ".join(f"{a} ({done} of {spec.steps} steps)" for a, done in study.unfinished.items())
        lines += ["", f"Unfinished and left out of this report: {missing}."]
    return lines


def _input_section(study: Study, metrics: dict[str, Any], projections: dict[str, list[dict[str, Any]]], b: int,
                   labels: tuple[str, ...]) -> list[str]:
    """Input b's section: per run its classes, changes, agreement, path and (text) sentences."""
    entry = metrics["inputs"][b]
    lines = [f"### {markdown_text(describe_input(entry['input'], b, 120))}", ""]
    for algorithm in study.trajectories:
        m = entry[algorithm]
        interp = m.get("interpretation", {})
        lines.append(
            f"- **{algorithm}**: class {class_label(labels, m['original_class'])} -> "
            f"{class_label(labels, m['final_class'])}; "
            f"prediction changes {m['prediction_changes']}, ranking changes {m.get('ranking_inversions_total')}, "
            f"the decoded input agrees with the embedding's prediction at "
            f"{percent(interp.get('prediction_agreement'))} of the saved points"
        )
        lines.append("  - " + _path_line(m["path"], labels))
        if algorithm in projections:
            lines += _projection_lines(projections[algorithm][b], m["projection"], labels)
    lines.append("")
    return lines


def _summary_section(metrics: dict[str, Any], summary: dict[str, Any], figures: bool) -> list[str]:
    """The distributions of the summary's measures and the inputs at both ends of each ranked one."""
    lines = ["", f"## Summary of {summary['inputs']} inputs", "",
             f"A study of more than {summary['above']} inputs is summarised: the distributions of a few measures over "
             "the inputs, the inputs with the largest and the smallest of them (only these keep their own section "
             "and figures), and one row per input at the end.", ""]
    if figures:
        lines += [f"![distributions over the inputs]({SUMMARY_FIGURE})", ""]
    lines += ["| measure | inputs with a value | smallest | median | largest |", "|---|---|---|---|---|"]
    for m in summary["measures"].values():
        values = [v for v in m["values"] if v is not None]
        row = [fmt(min(values)), fmt(float(np.median(values))), fmt(max(values))] if values else ["n/a"] * 3
        lines.append(f"| {m['label']} | {len(values)} of {summary['inputs']} | {' | '.join(row)} |")
    lines.append("")
    for ranked in summary["extremes"]:
        values = summary["measures"][ranked["measure"]]["values"]
        for end in ("largest", "smallest"):
            named = "; ".join(f"{markdown_text(describe_input(metrics['inputs'][b]['input'], b, 60))} "
                              f"({fmt(values[b])})" for b in ranked[end])
            lines.append(f"- **{end} {ranked['label']}**: {named}")
    return lines


def _summary_table(study: Study, metrics: dict[str, Any], summary: dict[str, Any],
                   labels: tuple[str, ...]) -> list[str]:
    """One row per input: each run's class at the start and the end, and the summary's measures."""
    runs = list(study.trajectories)
    measures = summary["measures"]
    lines = ["## Every input", "",
             "| input | " + " | ".join(f"{r}: class" for r in runs) + " | "
             + " | ".join(m["label"] for m in measures.values()) + " |",
             "|" + "---|" * (1 + len(runs) + len(measures))]
    for row in summary_rows(metrics, summary, runs):
        classes = [f"{class_label(labels, row[r][0])} -> {class_label(labels, row[r][1])}" if r in row else "n/a"
                   for r in runs]
        lines.append(f"| {markdown_text(describe_input(row['input'], row['index'], 60))} | {' | '.join(classes)} | "
                     + " | ".join(fmt(row[name]) for name in measures) + " |")
    lines.append("")
    return lines


def _projection_lines(record: dict[str, Any], summary: dict[str, Any], labels: tuple[str, ...]) -> list[str]:
    out = [
        f"  - at the {summary['points']} points below the decoded sentence agrees with the embedding's class at "
        f"{percent(summary['decoded_agreement'])}, the verified sentence at {percent(summary['verified_agreement'])} "
        f"(mean W1 to the embedding's probabilities {fmt(summary['decoded_wasserstein1_01_mean'])} -> "
        f"{fmt(summary['verified_wasserstein1_01_mean'])})"
        + (f"; largest probability change of a verified sentence from the start "
           f"{fmt(summary['largest_probability_change_from_start'])}" if "away" not in record else ""),
    ]
    for p in record["points"]:
        v, d = p["verified"], p["decoded"]
        out.append(f"  - t={p['iteration']}: embedding {_probs(p['embedding_probs'], labels)}")
        out.append(f"    - decoded: {_marked(d['words'])} ({_probs(d['probs'], labels)})")
        if v["found"]:
            same = v["words"] == d["words"]
            out.append(f"    - verified: {'the decoded sentence' if same else _marked(v['words'])} "
                       f"({_probs(v['probs'], labels)}; {v['changes']} substitution(s))")
        else:
            out.append(f"    - verified: none found within the search ({v['sentences_tried']} sentences tried)")
    if "away" in record:
        v = record["away"]["verified"]
        if v["found"]:
            out.append(f"  - a real sentence in another class, from the last point: {_marked(v['words'])} "
                       f"({_probs(v['probs'], labels)})")
        else:
            out.append(f"  - no real sentence in another class was verified near the last point "
                       f"({v['sentences_tried']} sentences tried)")
    return out
