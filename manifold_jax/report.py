"""Metrics, figures and a readable summary for a finished study directory.

Writes ``metrics.json`` (every metric of docs/method.md section 9 per input and algorithm, the
gradient baseline's, and their means), ``figures/*.png`` and ``report.md`` (a table of
the paper's Table-1 metrics; for image models the decoded images and what changed; for
text models every decoded sentence with its own re-prediction beside a verified real
sentence found by :mod:`manifold_jax.text_projection`, cached in
``<algorithm>/projection.json``) and ``report.html`` (the interactive page of
:mod:`manifold_jax.report_html`).
"""

from __future__ import annotations

import functools
import html
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from manifold_jax import analysis
from manifold_jax.report_html import write_report_html
from manifold_jax.study import (
    COUNTERFACTUAL,
    Study,
    StudyDamagedError,
    StudyIncompleteError,
    load_model,
    load_study,
    study_root,
)
from manifold_jax.study.atomic import remove_temporaries
from manifold_jax.study.counterfactual_run import CERTIFICATE
from manifold_jax.study.storage import PROJECTION, StudyFiles

HEADLINE = (
    ("prediction_changes", "prediction changes"),
    ("ranking_inversions_total", "class-ranking changes"),
    ("ranking_spearman_mean", "mean Spearman"),
)


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]|!#~])")


def markdown_text(text: Any) -> str:
    """User text (an input, a label, a model name, a decoded word) made inert in Markdown.

    HTML is escaped (a renderer would run ``<script>`` or ``<img onerror=...>``), and so are
    the characters Markdown gives a meaning (links, emphasis, code, table cells); newlines
    become spaces, so that the text stays on its line.
    """
    flat = " ".join(str(text).split("\n")).replace("\r", " ")
    return _MARKDOWN_SPECIAL.sub(r"\\\1", html.escape(flat, quote=False))


def describe_input(source: str, index: int, limit: int = 60) -> str:
    """A title for input ``index``: "input 0: MNIST image 3 (true label 0)", a file name, or the
    text (shortened to ``limit`` characters)."""
    if source.startswith("mnist:"):
        from manifold_jax.data import mnist_images

        try:
            number = int(source.split(":", 1)[1])
            label = int(mnist_images([number])[1][0])
            return f"input {index}: MNIST image {number} (true label {label})"
        except (ValueError, OSError):
            pass
    text = source if len(source) <= limit else source[: limit - 3] + "..."
    return f"input {index}: {text}"


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
    if "certificate" in path:
        text += "; " + _certificate_text(path["certificate"])
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


def pooled_rho_v(ratios: list[dict[str, Any]]) -> float:
    """The paper's rho_V over inputs: the mean of the per-patch ratios of every input, pooled
    (from their log10 values in metrics.json; None there is an infinite ratio)."""
    logs = [math.inf if v is None else float(v) for r in ratios for v in r.get("per_token_log10_ratio", [])]
    if not logs:
        return float("nan")
    top = max(logs)
    if not math.isfinite(top):
        return top if top > 0 else 0.0
    return float(10.0 ** (top + math.log10(np.mean([10.0 ** (v - top) for v in logs]))))


def build_report(
    path: str | Path, *, figures: bool = True, partial: bool = False, echo: Callable[[str], None] = print,
    progress: bool = False,
) -> dict[str, Any]:
    """Compute metrics, draw figures and write report.md and report.html for the study at ``path``.

    A study with an unfinished exploration raises StudyIncompleteError naming it, unless
    ``partial``, which reports the finished ones and says which are missing. For text models
    the decoded sentences at the snapshot iterations are projected onto verified real
    sentences first (``<algorithm>/projection.json``, computed once). Every file is written
    atomically and recorded in the study's manifest. ``progress`` shows bars for the sentence search
    and the decoding of the baselines.
    """
    path = study_root(path)
    study = load_study(path)
    missing = ", ".join(f"{a} ({done} of {study.spec.steps} steps)" for a, done in study.unfinished.items())
    if study.unfinished and (not partial or not study.trajectories):
        raise StudyIncompleteError(path, study.unfinished, study.spec.steps)
    if missing:
        echo(f"report: unfinished, left out: {missing}")
    metrics = study_metrics(study)
    out = path
    remove_temporaries(out)  # leftovers of a report that was killed while writing
    files = StudyFiles(out)
    model = load_model(study.spec) if study.inputs.get("raw") is None else None
    projections = _cached_projections(study, model, files, echo, progress) if model is not None else {}
    for algorithm, per_input in projections.items():
        for entry, record in zip(metrics["inputs"], per_input, strict=True):
            entry[algorithm]["projection"] = projection_summary(record)
    files.write_text("metrics.json", json.dumps(analysis.json_ready(metrics), indent=2, allow_nan=False))
    if figures:
        _draw(study, model, files, projections)
    files.write_text("report.md", _markdown(study, metrics, projections))
    write_report_html(study, metrics, files.path("report.html"), model=model, projections=projections,
                      progress=progress)
    files.manifest.record(files.path("report.html"))
    echo(f"report: {out / 'report.md'}, {out / 'report.html'} ({len(study.spec.inputs)} inputs, "
         f"{', '.join(study.trajectories)})")
    return metrics


# --------------------------------------------------------------------------- text projections


def report_points(saved: int) -> list[int]:
    """Saved-point indices the report shows and projects: the start and the figure's snapshots."""
    from manifold_jax.plots import snapshot_indices

    return [0, *snapshot_indices(saved)]


def study_projections(
    study: Study, model: Any, algorithm: str, saved: list[int], config: Any = None, *, progress: bool = False,
) -> list[dict[str, Any]]:
    """Decoded and verified real sentences at the saved points ``saved`` of every input of one
    exploration (JSON-ready): per input a dict with ``points`` (one record per saved point,
    goal "match": the class and probabilities of the explored embedding there) and, for
    SiMExp, ``away`` (goal: any class but the original, from the last saved point). ``progress``
    shows a bar over the points searched."""
    from manifold_jax.text_projection import Goal, project_points

    traj = study.trajectories[algorithm]
    ctx = study.context
    out = []
    inputs = len(study.spec.inputs)
    total = inputs * (len(saved) + (algorithm == "simexp"))
    bar = tqdm(total=total, disable=not progress, unit="point", desc=f"{algorithm} verified sentences", leave=False,
               postfix="compiling")

    def searched() -> None:
        bar.set_postfix_str("", refresh=False)
        bar.update(1)

    for b in range(inputs):
        item = {k: v[b] for k, v in ctx.items()}
        probs = analysis.softmax(traj.y[b])
        goals = [Goal.match(probs[s]) for s in saved]
        chosen = list(saved)
        if algorithm == "simexp":
            goals.append(Goal.away_from(int(np.argmax(probs[0]))))
            chosen.append(len(traj.iteration) - 1)
        interp = study.interpretations.get(algorithm)
        found = project_points(model, traj.x[b, chosen], item, goals, config, positions=study.inputs["select"][b],
                               decoded=None if interp is None else interp.inputs[b, chosen],
                               on_point=searched)

        entry: dict[str, Any] = {
            "points": [_record(model, r, s, traj, probs, item) for r, s in zip(found, saved, strict=False)]
        }
        if algorithm == "simexp":
            entry["away"] = _record(model, found[-1], len(traj.iteration) - 1, traj, probs, item)
        out.append(entry)
    bar.close()
    return out


def _record(model: Any, res: Any, s: int, traj: Any, probs: np.ndarray, item: dict[str, Any]) -> dict[str, Any]:
    """One projected point as JSON: the embedding's probabilities, the decoded and the verified sentence."""
    from manifold_jax.text_projection import changed_words

    def words(ids: np.ndarray) -> list[tuple[str, bool]]:
        return changed_words(model, ids, item["input_ids"], item["attention_mask"])

    return {
        "saved": int(s), "iteration": int(traj.iteration[s]), "goal": res.goal.kind,
        "embedding_probs": probs[s].tolist(),
        "decoded": {"text": _decoded_text(model, res.decoded_ids, item), "probs": res.decoded_probs.tolist(),
                    "words": words(res.decoded_ids)},
        "verified": {"found": res.found, "text": res.text, "probs": res.probs.tolist(), "words": words(res.ids),
                     "changes": len(res.changes), "sentences_tried": res.verified},
    }


def _decoded_text(model: Any, ids: np.ndarray, item: dict[str, Any]) -> str:
    keep = np.asarray(item["attention_mask"]).astype(bool)
    return model.detokenize(np.asarray(ids)[keep][None])[0]


def projection_summary(record: dict[str, Any]) -> dict[str, Any]:
    """Agreement of decoded and verified sentences with the embedding's prediction over the
    projected points of one input, their mean Wasserstein-1 distances (0/1 ground distance)
    to the embedding's probabilities, and the largest probability change of a verified
    sentence from the start (SiMEC's "scored like x0")."""
    points = record["points"]
    emb = np.array([p["embedding_probs"] for p in points])
    dec = np.array([p["decoded"]["probs"] for p in points])
    found = np.array([p["verified"]["found"] for p in points])
    ver = np.array([p["verified"]["probs"] if p["verified"]["found"] else p["decoded"]["probs"] for p in points])
    out: dict[str, Any] = {
        "points": len(points),
        "decoded_agreement": float(np.mean(np.argmax(dec, 1) == np.argmax(emb, 1))),
        "verified_agreement": float(np.mean(found & (np.argmax(ver, 1) == np.argmax(emb, 1)))),
        "decoded_wasserstein1_01_mean": float(np.mean(analysis.total_variation(dec, emb))),
        "verified_wasserstein1_01_mean": float(np.mean(analysis.total_variation(ver, emb))),
        "largest_probability_change_from_start": float(np.abs(ver[found] - emb[0]).max()) if found.any() else None,
    }
    if "away" in record:
        away = record["away"]["verified"]
        found_away = away["found"]
        out["away"] = {"found": found_away, "class": int(np.argmax(away["probs"])) if found_away else None,
                       "probs": away["probs"] if found_away else None, "text": away["text"] if found_away else None}
    return out


def _cached_projections(
    study: Study, model: Any, files: StudyFiles, echo: Callable[[str], None], progress: bool = False,
) -> dict[str, list[dict[str, Any]]]:
    """The projections of every exploration, from ``<algorithm>/projection.json`` when it holds the
    report's saved points (a resume that adds steps removes it), else computed and written."""
    out = {}
    for algorithm, traj in study.trajectories.items():
        rel = f"{algorithm}/{PROJECTION}"
        saved = report_points(len(traj.iteration))
        cached = _read_projection(files.path(rel), saved)
        if cached is not None:
            out[algorithm] = cached
            continue
        echo(f"{algorithm}: verified real sentences at {len(saved)} saved points per input")
        out[algorithm] = study_projections(study, model, algorithm, saved, progress=progress)
        files.write_text(rel, json.dumps({"saved": saved, "inputs": out[algorithm]}, indent=1))
    return out


def _read_projection(path: Path, saved: list[int]) -> list[dict[str, Any]] | None:
    """A cached projection's records if the file is readable and made at ``saved``, else None (recompute)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("saved") != saved or not isinstance(data.get("inputs"), list):
        return None
    return data["inputs"]


def _draw(study: Study, model: Any, files: StudyFiles, projections: dict[str, list[dict[str, Any]]]) -> None:
    from manifold_jax.plots import counterfactual_figure, exploration_figure, importance_figure, sentence_figure

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
    for b, source in enumerate(study.spec.inputs):
        name = describe_input(str(source), b)
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


def _certificate_text(c: dict[str, Any]) -> str:
    """The closest counterfactual's figures: L2 distance, margin, KKT residual (0 at the closest point)."""
    if not c["reached"]:
        return f"closest counterfactual not reached within the box and the step budget (L2 {c['distance']:.3g})"
    return (f"closest counterfactual: L2 {c['distance']:.3g}, margin {c['margin']:.2g}, KKT residual {c['kkt']:.2g}"
            f"{'' if c['converged'] else ' (above tol)'}")


def _counterfactual_caption(traj: Any, b: int, certificate: dict[str, list[Any]] | None = None) -> str:
    """Where item b's counterfactual path stopped, and how far it moved the input (with its certificate)."""
    if certificate is not None:
        return _certificate_text({k: v[b] for k, v in certificate.items()})
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


def _marked(words: list[list[Any]]) -> str:
    """Words as text, changed ones in bold."""
    return " ".join(f"**{markdown_text(w)}**" if changed else markdown_text(w) for w, changed in words)


def _probs(probs: list[float], labels: tuple[str, ...]) -> str:
    order = np.argsort(probs)[::-1]
    return ", ".join(f"{labels[c] if labels else c} {probs[c]:.2f}" for c in order)


def _markdown(study: Study, metrics: dict[str, Any], projections: dict[str, list[dict[str, Any]]]) -> str:
    """report.md: the settings, the means over inputs, and per input each run's outcome, its path and,
    for text models, the decoded and verified sentences at the report's saved points."""
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
            f"| {kind} | {_fmt(row['prediction_changes'])} | {_fmt(row['ranking_inversions_total'])} | "
            f"{_fmt(row['ranking_spearman_mean'])} | {_fmt(row.get('rho_v'))} | "
            f"{_fmt(row['inputs_keeping_prediction'])} | {_fmt(row['inputs_changing_ranking'])} | "
            f"{_percent(row.get('interpretation_agreement'))} | {_fmt(row.get('wasserstein1_01_mean'))} |"
        )
    if study.unfinished:
        missing = ", ".join(f"{a} ({done} of {spec.steps} steps)" for a, done in study.unfinished.items())
        lines += ["", f"Unfinished and left out of this report: {missing}."]
    lines += ["", "## Per input", ""]
    labels = tuple(markdown_text(label) for label in spec.labels)
    for b, entry in enumerate(metrics["inputs"]):
        lines.append(f"### {markdown_text(describe_input(entry['input'], b, 120))}")
        lines.append("")
        for algorithm in study.trajectories:
            m = entry[algorithm]
            interp = m.get("interpretation", {})
            lines.append(
                f"- **{algorithm}**: class {_label(labels, m['original_class'])} -> "
                f"{_label(labels, m['final_class'])}; "
                f"prediction changes {m['prediction_changes']}, ranking changes {m.get('ranking_inversions_total')}, "
                f"the decoded input agrees with the embedding's prediction at "
                f"{_percent(interp.get('prediction_agreement'))} of the saved points"
            )
            lines.append("  - " + _path_line(m["path"], labels))
            if algorithm in projections:
                lines += _projection_lines(projections[algorithm][b], m["projection"], labels)
        lines.append("")
    timing = {a: t.get("seconds_per_iteration") for a, t in study.timing.items()}
    batch = len(spec.inputs)
    lines += ["## Timing", "", *(f"- {a}: {_fmt(s)} s per iteration (batch of {batch})" for a, s in timing.items()), ""]
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


def _projection_lines(record: dict[str, Any], summary: dict[str, Any], labels: tuple[str, ...]) -> list[str]:
    out = [
        f"  - at the {summary['points']} points below the decoded sentence agrees with the embedding's class at "
        f"{_percent(summary['decoded_agreement'])}, the verified sentence at {_percent(summary['verified_agreement'])} "
        f"(mean W1 to the embedding's probabilities {_fmt(summary['decoded_wasserstein1_01_mean'])} -> "
        f"{_fmt(summary['verified_wasserstein1_01_mean'])})"
        + (f"; largest probability change of a verified sentence from the start "
           f"{_fmt(summary['largest_probability_change_from_start'])}" if "away" not in record else ""),
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
