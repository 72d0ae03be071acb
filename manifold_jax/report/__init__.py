"""Metrics, figures and a readable summary for a finished study directory.

:func:`build_report` writes ``metrics.json`` (every metric of docs/method.md section 9 per input and
algorithm, the gradient baseline's, and their means; :mod:`.metrics`), ``figures/*.png``
(:mod:`.figures`, drawn by :mod:`manifold_jax.plots`), ``report.md`` (:mod:`.markdown`: a table of the
paper's Table-1 metrics; for image models the decoded images and what changed; for text models every
decoded sentence with its own re-prediction beside a verified real sentence found by
:mod:`manifold_jax.text_projection`, cached in ``<algorithm>/projection.json`` by :mod:`.projections`)
and ``report.html`` (:mod:`.html`, the interactive page). Every file is written atomically
(:mod:`manifold_jax.atomic`) and recorded in the study's manifest.
"""

from manifold_jax.report.build import build_report
from manifold_jax.report.html import MAX_FRAMES, frame_indices, page_data, render_page, write_report_html
from manifold_jax.report.metrics import (
    HEADLINE,
    counterfactual_certificate,
    per_patch_log10_ratios,
    pooled_rho_v,
    study_metrics,
)
from manifold_jax.report.projections import projection_summary, report_points, study_projections
from manifold_jax.report.text import describe_input, markdown_text

__all__ = [
    "HEADLINE",
    "MAX_FRAMES",
    "build_report",
    "counterfactual_certificate",
    "describe_input",
    "frame_indices",
    "markdown_text",
    "page_data",
    "per_patch_log10_ratios",
    "pooled_rho_v",
    "projection_summary",
    "render_page",
    "report_points",
    "study_metrics",
    "study_projections",
    "write_report_html",
]
