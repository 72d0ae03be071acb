"""``report.html``: one self-contained page to scrub through a study in a browser.

The page holds everything it shows (no server, no network): the script and style from
``manifold_jax/assets/report_html/``, the study's data as inline JSON and the images as
PNG data URIs. Per input and per run (every exploration the study holds and every
baseline), at each shown saved point: the decoded image with its signed difference to the
original, or the decoded sentence with the changed words marked; the class probabilities
on the explored embedding and on the re-embedded decoded input; the 2-D projection of the
trajectories (the paper's Figure 1, as :func:`manifold_jax.plots.project_trajectories`);
the run's per-point records; the metrics and the study's settings.

Runs with more than ``max_frames`` saved points are shown at ``max_frames`` evenly spread
points (the first and the last included), and the page says so. The page is written atomically
(:mod:`manifold_jax.atomic`).
"""

from __future__ import annotations

import dataclasses
import html
import io
import json
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from manifold_jax import atomic
from manifold_jax.analysis import softmax
from manifold_jax.plots import distribution_figure, project_trajectories
from manifold_jax.report.figures import summary_panels
from manifold_jax.report.images import data_uri, image_frames, image_levels, png_bytes
from manifold_jax.report.labels import (
    RECORD_LABELS,
    flat_scalars,
    readable_metrics,
    rounded,
    run_description,
    run_title,
    status_names,
)
from manifold_jax.report.summary import summary_rows
from manifold_jax.study import Study, load_model

MAX_FRAMES = 101
"""Saved points shown per run at most: all 101 of the default 1000 steps saved every 10, every 10th of a run
saved at every step (about 2.5 kB per input, run and point for a 28x28 image)."""


_TRAJECTORY_SKIP = ("x", "y", "iteration", "final")


def frame_indices(saved: int, max_frames: int = MAX_FRAMES) -> np.ndarray:
    """Indices of the saved points shown: all of them, or ``max_frames`` evenly spread
    ones with the first and the last included."""
    if max_frames < 2:
        raise ValueError(f"max_frames={max_frames}: show at least 2 points (the start and the end)")
    if saved <= max_frames:
        return np.arange(saved)
    return np.unique(np.round(np.linspace(0, saved - 1, max_frames)).astype(int))


def _runs(study: Study) -> dict[str, Any]:
    """Every run of the study by the name its metrics use: explorations, then their baselines."""
    runs: dict[str, Any] = dict(study.trajectories)
    runs.update({f"baseline_{name}": traj for name, traj in study.baselines.items()})
    return runs


def _per_point_records(traj: Any, b: int, frames: np.ndarray) -> dict[str, list[Any]]:
    """Every per-point record of a trajectory other than x and y under its readable name (RECORD_LABELS): (S,)
    values as they are, (S, ...) ones as their mean over the trailing axes ("(mean over blocks)"), the status
    bits named; records that are nowhere finite (what a run does not compute) are left out."""
    fields = [f.name for f in dataclasses.fields(traj)] if dataclasses.is_dataclass(traj) else list(vars(traj))
    out: dict[str, list[Any]] = {}
    saved = len(traj.iteration)
    for name in fields:
        if name in _TRAJECTORY_SKIP:
            continue
        value = getattr(traj, name)
        if not isinstance(value, np.ndarray) or value.ndim < 2 or value.shape[1] != saved:
            continue
        if not (np.issubdtype(value.dtype, np.number) or value.dtype == bool):
            continue
        label = RECORD_LABELS.get(name, name.replace("_", " "))
        if name == "status":
            out[label] = [status_names(int(v)) for v in value[b, frames]]
            continue
        v = value[b, frames].astype(np.float64)
        if v.ndim > 1:
            with np.errstate(all="ignore"):
                finite = np.where(np.isfinite(v), v, np.nan).reshape(len(frames), -1)
                v = np.array([np.nanmean(r) if np.isfinite(r).any() else np.nan for r in finite])
            label += " (mean over blocks)"
        if np.isfinite(v).any():
            out[label] = rounded(v, 4)
    return out


def verified_sentences(record: dict[str, Any], labels: list[str]) -> list[dict[str, Any]]:
    """The rows the page shows for one input's projection record (:func:`manifold_jax.report.study_projections`):
    per projected point its iteration, the verified sentence's words with the changed ones flagged and its own
    probabilities, or (none found) the decoded sentence's, flagged unverified; SiMExp's sentence in another class
    last."""
    rows = []
    for point in [*record.get("points", []), *([record["away"]] if "away" in record else [])]:
        verified, decoded = point["verified"], point["decoded"]
        shown = verified if verified["found"] else decoded
        probs = np.asarray(shown["probs"], np.float64)
        top = int(np.argmax(probs))
        rows.append({
            "iteration": int(point["iteration"]),
            "goal": point["goal"],
            "found": bool(verified["found"]),
            "words": [[str(w), bool(c)] for w, c in shown["words"]],
            "top": labels[top] if top < len(labels) else str(top),
            "p": float(f"{probs[top]:.4g}"),
            "embedding_top": labels[int(np.argmax(point["embedding_probs"]))],
            "changes": int(verified.get("changes", 0)),
            "tried": int(verified.get("sentences_tried", 0)),
        })
    return rows


def _decoded_for_runs(study: Study, runs: dict[str, Any], frames: dict[str, np.ndarray], model: Any,
                      shown: np.ndarray, progress: bool = False) -> tuple[dict[str, Any], str | None]:
    """Decoded inputs and their logits (len(shown), F, ...) of the inputs ``shown`` at the shown frames of every
    run: the study's interpretation where it has one, else decoded now with the model (Algorithm 3). Also a note
    when the model is unavailable."""
    decoded: dict[str, Any] = {}
    missing = [name for name in runs if name not in study.interpretations]
    note = None
    if missing and model is None:
        try:
            model = load_model(study.spec)
        except (FileNotFoundError, OSError, ValueError) as err:
            note = f"runs {', '.join(missing)} are not decoded: the model could not be loaded ({err})"
    for name in runs:
        f = frames[name]
        if name in study.interpretations:
            interp = study.interpretations[name]
            decoded[name] = (interp.inputs[shown][:, f], interp.logits[shown][:, f])
        elif model is not None:
            from manifold_jax.interpret import interpret

            context = {k: jnp.asarray(np.asarray(v)[shown]) for k, v in study.context.items()}
            interp = interpret(model, runs[name].x[shown][:, f], context,
                               progress=progress, label=f"{run_title(name)}: decoding")
            decoded[name] = (interp.inputs, interp.logits)
    return decoded, note


class _Vocabulary:
    """The token ids a text page shows, with their tokenizer names (the page's ``vocabulary``)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.names: dict[int, str] = {}

    def __call__(self, ids: np.ndarray) -> list[int]:
        listed = [int(i) for i in ids]
        for i, t in zip(listed, self.tokenizer.convert_ids_to_tokens(listed), strict=True):
            self.names.setdefault(i, t)
        return listed


def _input_entry(study: Study, b: int, vocabulary: _Vocabulary | None) -> tuple[dict[str, Any], list[int]]:
    """Input b's part of the page without its runs, and (text) the positions shown: the attended tokens
    that are not special."""
    select, ctx = study.inputs["select"], study.context
    entry: dict[str, Any] = {"name": str(study.spec.inputs[b]), "explored": int(select[b].sum()),
                             "tokens": int(np.asarray(ctx["token_mask"][b]).sum()), "runs": {}}
    if vocabulary is None:  # an image study
        entry["original"] = data_uri(png_bytes(image_levels(study.inputs["raw"][b])))
        return entry, []
    tokenizer = vocabulary.tokenizer
    special = set(getattr(tokenizer, "all_special_tokens", ()))
    original_ids = np.asarray(ctx["input_ids"][b])
    keep = np.asarray(ctx["attention_mask"][b]).astype(bool)
    named = tokenizer.convert_ids_to_tokens(original_ids.tolist())
    positions = [int(i) for i in np.flatnonzero(keep) if named[i] not in special]
    entry["positions"] = positions
    entry["original"] = vocabulary(original_ids[positions])
    entry["select"] = [bool(select[b, i]) for i in positions]
    return entry, positions


def _run_entry(study: Study, name: str, traj: Any, b: int, f: np.ndarray, *, xy: np.ndarray, labels: list[str],
               decoded: dict[str, Any], row: int, projections: dict[str, list[dict[str, Any]]] | None,
               metrics: dict[str, Any], positions: list[int], vocabulary: _Vocabulary | None) -> dict[str, Any]:
    """Run ``name`` of input b at its shown frames ``f``: probabilities, projected path, records, metrics,
    verified sentences and the decoded inputs (row ``row`` of ``decoded``)."""
    run: dict[str, Any] = {
        "probabilities": rounded(softmax(traj.y[b, f])),
        "xy": rounded(xy, 5),
        "records": _per_point_records(traj, b, f),
        "metrics": readable_metrics(flat_scalars(metrics["inputs"][b].get(name, {})), labels),
    }
    if projections and name in projections:
        run["verified"] = verified_sentences(projections[name][b], labels)
    if name in decoded:
        images_or_ids, logits = decoded[name][0][row], decoded[name][1][row]
        run["decoded_probabilities"] = rounded(softmax(logits))
        if vocabulary is None:  # an image study
            run.update(image_frames(images_or_ids, study.inputs["raw"][b]))
        else:
            run["decoded"] = [vocabulary(ids[positions]) for ids in np.asarray(images_or_ids)]
    return run


def page_data(study: Study, metrics: dict[str, Any], model: Any = None, max_frames: int = MAX_FRAMES, *,
              projections: dict[str, list[dict[str, Any]]] | None = None, progress: bool = False,
              summary: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON the page renders: study settings, and per input and run the shown frames (see the module doc).

    ``model`` is needed for text studies (its tokenizer names the tokens) and for runs without a saved
    interpretation (they are decoded here, with a progress bar when ``progress``); it is loaded from the
    study's spec when missing. ``projections``: a text study's verified sentences per run and input
    (:func:`manifold_jax.report.study_projections`), shown beside the decoding. ``summary``: a large study's
    (:func:`manifold_jax.report.summary.study_summary`): the page shows its distributions and table, and only
    its inputs at the extremes.
    """
    spec = study.spec
    runs = _runs(study)
    if not runs:
        raise ValueError(f"{study.path}: no finished exploration to show")
    modality = "image" if study.inputs.get("raw") is not None else "text"
    if modality == "text" and model is None:
        model = load_model(spec)
    frames = {name: frame_indices(len(traj.iteration), max_frames) for name, traj in runs.items()}
    shown = np.arange(len(spec.inputs)) if summary is None else np.asarray(summary["shown"], dtype=int)
    decoded, note = _decoded_for_runs(study, runs, frames, model, shown, progress)
    k = next(iter(runs.values())).y.shape[-1]
    labels = list(spec.labels) if len(spec.labels) == k else [str(c) for c in range(k)]
    vocabulary = _Vocabulary(model.tokenizer) if modality == "text" else None
    inputs = []
    for row, b in enumerate(int(i) for i in shown):
        entry, positions = _input_entry(study, b, vocabulary)
        entry["index"] = b
        projected = project_trajectories({name: traj.x[b, frames[name]] for name, traj in runs.items()},
                                         study.inputs["select"][b])
        for name, traj in runs.items():
            entry["runs"][name] = _run_entry(study, name, traj, b, frames[name], xy=projected[name], labels=labels,
                                             decoded=decoded, row=row, projections=projections, metrics=metrics,
                                             positions=positions, vocabulary=vocabulary)
        inputs.append(entry)
    return {
        "title": f"Study: {spec.model}",
        "modality": modality,
        "labels": labels,
        "spec": spec.settings(),
        "timing": study.timing,
        "means": {name: readable_metrics(flat_scalars(row), labels) for name, row in metrics.get("means", {}).items()},
        "runs": [
            {"name": name, "title": run_title(name), "description": run_description(name),
             "saved": len(traj.iteration), "iterations": [int(i) for i in traj.iteration[frames[name]]]}
            for name, traj in runs.items()
        ],
        "max_frames": max_frames,
        "vocabulary": {str(i): t for i, t in (vocabulary.names.items() if vocabulary is not None else [])},
        "note": note,
        "inputs": inputs,
        "summary": None if summary is None else _page_summary(metrics, summary, list(runs), labels),
    }


def _page_summary(metrics: dict[str, Any], summary: dict[str, Any], runs: list[str],
                  labels: list[str]) -> dict[str, Any]:
    """A large study's summary as the page shows it: the histograms (a PNG data URI), each measure's range,
    the inputs at the extremes and a table of every input."""
    buffer = io.BytesIO()
    distribution_figure(buffer, title=f"{summary['inputs']} inputs: distributions", panels=summary_panels(summary))
    measures = summary["measures"]

    def name(b: int) -> str:
        return f"{b}: {metrics['inputs'][b]['input']}"

    def classes(pair: list[int] | None) -> str:
        return "" if pair is None else f"{labels[pair[0]]} → {labels[pair[1]]}"

    return {
        "inputs": summary["inputs"],
        "histogram": data_uri(buffer.getvalue()),
        "extremes": [{"label": r["label"], **{end: [[name(b), measures[r["measure"]]["values"][b]] for b in r[end]]
                                              for end in ("largest", "smallest")}}
                     for r in summary["extremes"]],
        "columns": ["input", *(f"{run_title(r)}: class" for r in runs), *(m["label"] for m in measures.values())],
        "rows": [[name(row["index"]), *(classes(row.get(r)) for r in runs), *(row[m] for m in measures)]
                 for row in summary_rows(metrics, summary, runs)],
    }


def _asset(name: str) -> str:
    return resources.files("manifold_jax").joinpath("assets", "report_html", name).read_text(encoding="utf-8")


def render_page(data: dict[str, Any]) -> str:
    """The HTML page: template, inline style and script, and ``data`` as inline JSON."""
    payload = json.dumps(data, separators=(",", ":"), allow_nan=False)
    # inside <script> only "</" can end the element and "<!--" could start a comment
    payload = payload.replace("</", "<\\/").replace("<!--", "<\\u0021--")
    values = {"TITLE": html.escape(data["title"]), "STYLE": _asset("report.css"), "SCRIPT": _asset("report.js"),
              "DATA": payload}
    # one pass: nothing inserted is scanned for placeholders again
    return re.sub(r"@@([A-Z]+)@@", lambda m: values[m.group(1)], _asset("template.html"))


def write_report_html(study: Study, metrics: dict[str, Any], path: str | os.PathLike[str], *, model: Any = None,
                      max_frames: int = MAX_FRAMES, projections: dict[str, list[dict[str, Any]]] | None = None,
                      progress: bool = False, summary: dict[str, Any] | None = None) -> Path:
    """Build the page for ``study`` (metrics from :func:`manifold_jax.report.study_metrics`, a text study's
    verified sentences from :func:`manifold_jax.report.study_projections`) and write it atomically to ``path``."""
    data = page_data(study, metrics, model, max_frames, projections=projections, progress=progress, summary=summary)
    atomic.write_text(path, render_page(data))
    return Path(path)
