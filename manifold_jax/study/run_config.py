"""A run's engine configuration as JSON: the fields of ExploreConfig, their defaults, the study's presets.

A study stores every option of each of its runs (spec.json's "runs": one JSON object of
ExploreConfig keywords per run), so a study reads back the same whatever the defaults of a later
version. Every other view of a configuration derives from ``dataclasses.fields(ExploreConfig)``
and their metadata: the command line's flags, the report's settings, the defaults below.
"""

from __future__ import annotations

import dataclasses
import json
import numbers
from collections.abc import Mapping
from typing import Any

from manifold_jax.explore import ALGORITHMS, Absolute, ExploreConfig, Relative

ENGINE_FIELDS: tuple[dataclasses.Field[Any], ...] = tuple(
    f for f in dataclasses.fields(ExploreConfig) if f.name != "algorithm")
"""The engine's options: every field of ExploreConfig but the algorithm (a run's own)."""

OPTION_NAMES: tuple[str, ...] = tuple(f.name for f in ENGINE_FIELDS)

COUNTERFACTUAL = "counterfactual"
"""The study's targeted run: the closest input of a class (``StudySpec.target``), by ``mj.counterfactual``."""

RUNS: tuple[str, ...] = (*ALGORITHMS, COUNTERFACTUAL)
"""The runs a study can hold: SiMEC, SiMExp and the counterfactual."""

STUDY_OPTIONS: dict[str, Any] = {"save_every": 10}
"""Engine options a study sets differently from the engine (a saved point every 10 steps)."""

PRESETS: dict[str, dict[str, Any]] = {
    COUNTERFACTUAL: {
        "eta": 0.5, "step_rule": "adaptive", "tol": 1e-2, "on": "probabilities", "stop": "flip", "box": "active",
        "save_every": 1, "direction": "random", "corrector": None, "null_direction": "project",
    },
}
"""The options a run of that name takes from its preset, not from the study (the rest it shares).

The counterfactual: an adaptive walk along J^+ (e_c - p) whose linear model of the probabilities
stays within 1e-2 per step, in the box, to the flip; it is checked by the engine as this SiMExp
run. The study runs it as ``mj.counterfactual`` (reach, locate and slide, ``steps`` iterations at
most), which keeps its whole path: one saved point per iteration, whatever the study's saving."""

MEASURED = ("tol", "on")
"""Options of what measures a step (the adaptive rule, the corrector): a run without either ignores the study's."""


def json_option(name: str, value: Any) -> str | int | float | bool | None:
    """An option value as a JSON scalar (numpy scalars become Python numbers)."""
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    raise TypeError(
        f"options[{name!r}] is a {type(value).__name__}; a study keeps its options in spec.json, "
        "so give a string or a number"
    )


def _default_json(f: dataclasses.Field[Any]) -> Any:
    """A field's default as the JSON value a study writes (a threshold as its relative level)."""
    value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    if isinstance(value, Relative):
        return value.rtol
    if isinstance(value, Absolute):
        return "reference" if value == Absolute() else value.atol
    return None if value == () else json_option(f.name, value)


ENGINE_DEFAULTS: dict[str, Any] = {f.name: _default_json(f) for f in ENGINE_FIELDS}
"""Every engine option's default, as JSON (read off the fields, never from a constructed config)."""

STUDY_DEFAULTS: dict[str, Any] = {**ENGINE_DEFAULTS, **STUDY_OPTIONS}
"""What a study's run takes where neither the study nor the run says otherwise."""


def engine_keywords(options: Mapping[str, Any]) -> dict[str, Any]:
    """ExploreConfig keywords from a run's JSON options (a numeric threshold is a relative level)."""
    out = dict(options)
    threshold = out.get("threshold")
    if isinstance(threshold, (int, float)) and not isinstance(threshold, bool):
        out["threshold"] = Relative(float(threshold))
    return out


def run_json(run: str, algorithm: str, study: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """Every option of one run as JSON: the defaults, the study's options where they apply, the run's preset,
    its own options on top.

    This is the one place the study's options are routed: the corrector is SiMEC's alone (SiMExp
    leaves the level set by design), and ``tol`` / ``on`` go to the runs that measure a step.
    """
    preset = PRESETS.get(run, {})
    shared = {k: v for k, v in study.items() if k not in preset}
    if algorithm != "simec":
        shared.pop("corrector", None)
    out = {**STUDY_DEFAULTS, **shared, **preset, **given}
    if out["step_rule"] != "adaptive" and out["corrector"] is None:
        out.update({name: STUDY_DEFAULTS[name] for name in MEASURED if name in shared and name not in given})
    if run == COUNTERFACTUAL and out["save_every"] != 1:
        raise ValueError(f"run_options['counterfactual']: save_every={out['save_every']!r}: the counterfactual "
                         "keeps its whole path, one saved point per iteration (save_every 1)")
    return out


def unrouted(study: Mapping[str, Any], runs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The study's options (corrector, tol, on) that reach none of its runs."""
    return [name for name in ("corrector", *MEASURED)
            if name in study and study[name] != STUDY_DEFAULTS[name]
            and all(options[name] != study[name] for options in runs.values())]


def shown(runs: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The options of ``runs`` for a reader: one value where the runs agree, else each run's.

    Options with a flag of their own are always shown; the others (and the continuation options)
    where a run sets them away from their default.
    """
    out: dict[str, Any] = {}
    for f in ENGINE_FIELDS:
        values = {run: options[f.name] for run, options in runs.items()}
        always = "help" in f.metadata and not f.metadata.get("continuation")
        if not always and all(v == STUDY_DEFAULTS[f.name] for v in values.values()):
            continue
        distinct = {json.dumps(v) for v in values.values()}
        out[f.name] = (next(iter(values.values())) if len(distinct) == 1
                       else "; ".join(f"{run}: {value}" for run, value in values.items()))
    return out


__all__ = [
    "COUNTERFACTUAL", "ENGINE_DEFAULTS", "ENGINE_FIELDS", "OPTION_NAMES", "PRESETS", "RUNS", "STUDY_DEFAULTS",
    "STUDY_OPTIONS", "engine_keywords", "json_option", "run_json", "shown", "unrouted",
]
