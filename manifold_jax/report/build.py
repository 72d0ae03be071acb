"""Build a study's report: metrics, the projection cache, figures, report.md and report.html."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from manifold_jax import analysis
from manifold_jax.atomic import remove_temporaries
from manifold_jax.report.figures import draw_figures
from manifold_jax.report.html import write_report_html
from manifold_jax.report.markdown import report_markdown
from manifold_jax.report.metrics import study_metrics
from manifold_jax.report.projections import cached_projections, projection_summary
from manifold_jax.report.summary import EXTREMES, SUMMARY_ABOVE, study_summary
from manifold_jax.study import StudyIncompleteError, load_model, load_study, study_root
from manifold_jax.study.storage import StudyFiles


def build_report(
    path: str | Path, *, figures: bool = True, partial: bool = False, echo: Callable[[str], None] = print,
    progress: bool = False, summary_above: int = SUMMARY_ABOVE, extremes: int = EXTREMES,
) -> dict[str, Any]:
    """Compute metrics, draw figures and write report.md and report.html for the study at ``path``.

    A study with an unfinished exploration raises StudyIncompleteError naming it, unless
    ``partial``, which reports the finished ones and says which are missing. For text models
    the decoded sentences at the snapshot iterations are projected onto verified real
    sentences first (``<algorithm>/projection.json``, computed once). Every file is written
    atomically and recorded in the study's manifest. ``progress`` shows bars for the sentence search
    and the decoding of the baselines. A study of more than ``summary_above`` inputs is summarised
    (:mod:`manifold_jax.report.summary`: distributions, the inputs at the extremes, one table; ``summary``
    in metrics.json; ``extremes`` inputs at each end of a ranked measure) instead of one section and set of
    figures per input.
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
    projections = cached_projections(study, model, files, echo, progress) if model is not None else {}
    for algorithm, per_input in projections.items():
        for entry, record in zip(metrics["inputs"], per_input, strict=True):
            entry[algorithm]["projection"] = projection_summary(record)
    summary = study_summary(metrics, extremes, summary_above) if len(study.spec.inputs) > summary_above else None
    if summary is not None:
        metrics["summary"] = summary
    files.write_text("metrics.json", json.dumps(analysis.json_ready(metrics), indent=2, allow_nan=False))
    if figures:
        draw_figures(study, model, files, projections, summary)
    files.write_text("report.md", report_markdown(study, metrics, projections, summary, figures=figures))
    write_report_html(study, metrics, files.path("report.html"), model=model, projections=projections,
                      progress=progress, summary=summary)
    files.manifest.record(files.path("report.html"))
    echo(f"report: {out / 'report.md'}, {out / 'report.html'} ({len(study.spec.inputs)} inputs, "
         f"{', '.join(study.trajectories)})")
    return metrics
