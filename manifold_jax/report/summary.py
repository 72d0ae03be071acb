"""A large study's report summarised: distributions over inputs, the inputs at the extremes, one table.

Above :data:`SUMMARY_ABOVE` inputs one section and a set of figures per input stop being readable;
the report then shows, from ``metrics.json``, the distributions of a few per-input measures (the size
of each input's equivalence class as SiMEC explored it, how far SiMExp went, how far the closest
counterfactual lies), the inputs with the largest and smallest of them (these alone keep their own
section, figures and page), and a table with one row per input.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

SUMMARY_ABOVE = 12
"""Studies with more inputs than this are summarised (``build_report(summary_above=...)``)."""

EXTREMES = 3
"""Inputs listed at each end of a ranked measure."""


def _volume(entry: dict[str, Any]) -> Any:
    return entry.get("simec", {}).get("explored_volume", {}).get("log_volume")


def _simec_distance(entry: dict[str, Any]) -> Any:
    return entry.get("simec", {}).get("path", {}).get("distance_from_x0")


def _simexp_distance(entry: dict[str, Any]) -> Any:
    return entry.get("simexp", {}).get("path", {}).get("distance_from_x0")


def _counterfactual_distance(entry: dict[str, Any]) -> Any:
    """The closest counterfactual's distance (its certificate's where stored), None where the target was not
    reached."""
    path = entry.get("counterfactual", {}).get("path")
    if path is None:
        return None
    certificate = path.get("certificate")
    if certificate is not None:
        return certificate["distance"] if certificate["reached"] else None
    return path.get("stop_distance_from_x0") if path.get("reached_target") else None


MEASURES: dict[str, tuple[str, Callable[[dict[str, Any]], Any], bool]] = {
    "simec_log_volume": ("SiMEC: explored log-volume of the equivalence class", _volume, True),
    "simec_distance": ("SiMEC: distance from the input at the end", _simec_distance, False),
    "simexp_distance": ("SiMExp: distance from the input at the end", _simexp_distance, False),
    "counterfactual_distance": ("counterfactual: distance to the closest point of the target class",
                                _counterfactual_distance, True),
}
"""Per-input measures of a summary: name -> (label, value from one input's metrics, ranked at both ends)."""


def _finite(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def study_summary(metrics: dict[str, Any], extremes: int = EXTREMES, above: int = SUMMARY_ABOVE) -> dict[str, Any]:
    """The summary of a study's metrics (:func:`manifold_jax.report.study_metrics`), JSON-ready.

    ``measures``: name -> label and per-input values (None where the run is missing or, for the
    counterfactual, the target was not reached), for the measures some input has; ``extremes``: per
    ranked measure the indices of the ``extremes`` inputs with the largest and the smallest value;
    ``shown``: those inputs, in order (the ones that keep their own section and figures); ``above``: the
    threshold the study passed.
    """
    entries = metrics["inputs"]
    measures: dict[str, Any] = {}
    ranked: list[dict[str, Any]] = []
    for name, (label, value, rank) in MEASURES.items():
        values = [_finite(value(entry)) for entry in entries]
        if all(v is None for v in values):
            continue
        measures[name] = {"label": label, "values": values}
        if rank:
            present: dict[int, float] = {i: v for i, v in enumerate(values) if v is not None}
            order = sorted(present, key=lambda i: (present[i], i))
            ranked.append({"measure": name, "label": label, "largest": order[::-1][:extremes],
                           "smallest": order[:extremes]})
    shown = sorted({int(i) for r in ranked for i in (*r["largest"], *r["smallest"])})
    return {"inputs": len(entries), "above": above, "measures": measures, "extremes": ranked, "shown": shown}


def summary_rows(metrics: dict[str, Any], summary: dict[str, Any], runs: list[str]) -> list[dict[str, Any]]:
    """One row per input: its name, each run's class at the start and the end, and the summary's measures."""
    rows = []
    for b, entry in enumerate(metrics["inputs"]):
        row: dict[str, Any] = {"index": b, "input": entry["input"]}
        for run in runs:
            if run in entry:
                row[run] = [entry[run]["original_class"], entry[run]["final_class"]]
        row.update({name: m["values"][b] for name, m in summary["measures"].items()})
        rows.append(row)
    return rows
