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
points (the first and the last included), and the page says so.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import os
import re
import struct
import sys
import zlib
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from manifold_jax.explore.iteration import NONFINITE, REJECTED, STALLED, STOPPED, UNCONVERGED
from manifold_jax.study import Study, atomic, load_model, study_root

MAX_FRAMES = 101
"""Saved points shown per run at most: all 101 of the default 1000 steps saved every 10, every 10th of a run
saved at every step (about 2.5 kB per input, run and point for a 28x28 image)."""

DIFFERENCE_LEVELS = 65
"""Colours of the signed difference images: -scale .. 0 .. +scale in 64 equal steps."""

RUN_TITLES = {"simec": "SiMEC", "simexp": "SiMExp", "counterfactual": "counterfactual"}
"""How the page names the runs (baselines: "baseline of <title>")."""

STATUS_BITS = (("stalled", STALLED), ("not finite", NONFINITE), ("unconverged", UNCONVERGED),
               ("rejected", REJECTED), ("stopped", STOPPED))
"""The status bits of a step (manifold_jax.explore.iteration) as the page names them."""

RECORD_LABELS = {
    "step": "step size",
    "eigenvalue": "metric along the step's direction",
    "status": "step status",
    "stalls": "steps that stood still so far",
    "h": "step length",
    "drift": "change of the outputs from the input's (max |Δ|)",
    "error": "step error estimate",
    "corrections": "corrector iterations",
    "rejected": "rejected steps so far",
    "distance": "distance from the input |x − x0|",
    "arc_length": "distance walked",
    "goal_distance": "distance to the goal",
}
"""Readable names of a trajectory's per-point records (the field names of manifold_jax.explore.Trajectory)."""

METRIC_LABELS = {
    "iterations_saved": "saved points",
    "classes": "classes",
    "original_class": "class at the start",
    "final_class": "class at the end",
    "prediction_changes": "prediction changes",
    "original_class_probability": "probability of the start's class",
    "top_class_probability": "probability of the top class",
    "ranking_inversions_total": "class-ranking changes",
    "ranking_spearman_mean": "mean Spearman correlation of the class ranking with the start's",
    "explored_volume.variance": "explored volume: variance kept",
    "explored_volume.log_volume": "explored volume: log volume",
    "explored_volume.volume": "explored volume",
    "volume_ratio.rho_v": "ρ_V, volume ratio SiMExp / SiMEC",
    "volume_ratio.log10_rho_v": "log10 ρ_V",
    "volume_ratio.geometric_mean": "volume ratio: geometric mean over tokens",
    "volume_ratio.log10_product_over_tokens": "volume ratio: log10 of the product over tokens",
    "interpretation.wasserstein1_01_mean": "decoded input: mean W1 distance of its prediction to the embedding's",
    "interpretation.prediction_agreement": "decoded input: agreement with the embedding's class",
    "interpretation.prediction_changes": "decoded input: prediction changes",
    "interpretation.catch_up.window": "decoded input: catch-up window (saved points)",
    "interpretation.catch_up.n_changes": "decoded input: embedding class changes to catch up with",
    "interpretation.catch_up.n_caught_up": "decoded input: class changes caught up",
    "interpretation.catch_up.fraction": "decoded input: fraction caught up",
    "interpretation.top_probability_pearson": "decoded input: correlation of its confidence with the embedding's",
    "timing.total_seconds": "time of the iterations (s, compilation apart)",
    "timing.iterations": "iterations run",
    "timing.tokens": "explored tokens",
    "timing.seconds_per_iteration_per_token": "seconds per iteration and token",
    "path.distance_walked": "distance walked",
    "path.distance_from_x0": "distance from the input at the end",
    "path.max_drift": "largest change of the outputs from the input's",
    "path.accepted_steps": "accepted steps",
    "path.rejected_steps": "rejected steps",
    "path.unconverged_points": "saved points above the corrector's tolerance",
    "path.stop_iteration": "stopped at iteration",
    "path.stop_distance_from_x0": "distance from the input where it stopped",
    "path.stop_class": "class where it stopped",
    "path.target": "target class",
    "path.reached_target": "reached the target",
    "projection.points": "verified sentences: points searched",
    "projection.decoded_agreement": "decoded sentence: agreement with the embedding's class",
    "projection.verified_agreement": "verified sentence: agreement with the embedding's class",
    "projection.decoded_wasserstein1_01_mean": "decoded sentence: mean W1 distance to the embedding's prediction",
    "projection.verified_wasserstein1_01_mean": "verified sentence: mean W1 distance to the embedding's prediction",
    "projection.largest_probability_change_from_start": "verified sentences: largest probability change",
    "projection.away.found": "a verified sentence in another class",
    "projection.away.class": "its class",
    "rho_v": "ρ_V, volume ratio SiMExp / SiMEC",
    "interpretation_agreement": "decoded input: agreement with the embedding's class",
    "wasserstein1_01_mean": "decoded input: mean W1 distance of its prediction to the embedding's",
    "inputs_keeping_prediction": "inputs keeping their prediction",
    "inputs_changing_ranking": "inputs changing a class ranking",
}
"""Readable names of the metrics (the keys of metrics.json, nested ones joined with '.'); a key not listed is
shown with its underscores and dots as spaces."""

CLASS_METRICS = ("original_class", "final_class", "path.stop_class", "path.target", "projection.away.class")
"""Metrics whose value is a class index: the page shows the class's label."""

RUN_DESCRIPTIONS = {
    "simec": "SiMEC (Algorithm 1): each step follows a null direction of the pullback metric, so the prediction "
             "should stay put.",
    "simexp": "SiMExp (Algorithm 2): each step follows a direction the metric sees, so the prediction should move.",
    "counterfactual": "Counterfactual: SiMExp toward a chosen class along the smallest input change, stopped where "
                      "the prediction changes.",
}
_TRAJECTORY_SKIP = ("x", "y", "iteration", "final")


# --------------------------------------------------------------------------- PNG


def png_bytes(pixels: np.ndarray, palette: np.ndarray | None = None) -> bytes:
    """An 8-bit PNG of ``pixels``: uint8 (H, W) grey levels, (H, W, 3) RGB, or (H, W)
    indices into ``palette`` (P, 3) uint8. No filter, deflate level 9."""
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    if pixels.ndim == 2:
        colour_type = 0 if palette is None else 3
    elif pixels.ndim == 3 and pixels.shape[2] == 3 and palette is None:
        colour_type = 2
    else:
        raise ValueError(f"pixels must be (H, W) or (H, W, 3) uint8 (palette only with (H, W)), got {pixels.shape}")
    height, width = pixels.shape[:2]

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + row.tobytes() for row in pixels)
    parts = [b"\x89PNG\r\n\x1a\n", chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0))]
    if palette is not None:
        parts.append(chunk(b"PLTE", np.ascontiguousarray(palette, dtype=np.uint8).tobytes()))
    parts += [chunk(b"IDAT", zlib.compress(raw, 9)), chunk(b"IEND", b"")]
    return b"".join(parts)


def data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` for PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def image_levels(image: np.ndarray) -> np.ndarray:
    """An image (H, W, C) in [0, 1] as uint8 levels round(255 clip(v, 0, 1)): (H, W) for C = 1, else (H, W, 3)."""
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ValueError(f"image must be (H, W, 1) or (H, W, 3), got shape {image.shape}")
    levels = np.round(255.0 * np.clip(image, 0.0, 1.0)).astype(np.uint8)
    return levels[..., 0] if levels.shape[2] == 1 else levels


def difference_palette() -> np.ndarray:
    """(DIFFERENCE_LEVELS, 3) uint8: blue (negative) through white (zero) to red (positive)."""
    t = np.linspace(-1.0, 1.0, DIFFERENCE_LEVELS)[:, None]
    white, blue, red = np.array([255.0, 255.0, 255.0]), np.array([33.0, 102.0, 172.0]), np.array([178.0, 24.0, 43.0])
    colours = np.where(t < 0, white + (-t) * (blue - white), white + t * (red - white))
    return np.round(colours).astype(np.uint8)


def difference_indices(difference: np.ndarray, scale: float) -> np.ndarray:
    """Palette indices (H, W) of a signed difference (H, W, C), averaged over channels:
    round(m + m d / scale) clipped to 0..2m, with m = (DIFFERENCE_LEVELS - 1) / 2."""
    mid = (DIFFERENCE_LEVELS - 1) / 2
    d = np.asarray(difference, dtype=np.float64).mean(axis=-1)
    return np.clip(np.round(mid + mid * d / scale), 0, DIFFERENCE_LEVELS - 1).astype(np.uint8)


# --------------------------------------------------------------------------- data


def frame_indices(saved: int, max_frames: int = MAX_FRAMES) -> np.ndarray:
    """Indices of the saved points shown: all of them, or ``max_frames`` evenly spread
    ones with the first and the last included."""
    if max_frames < 2:
        raise ValueError(f"max_frames={max_frames}: show at least 2 points (the start and the end)")
    if saved <= max_frames:
        return np.arange(saved)
    return np.unique(np.round(np.linspace(0, saved - 1, max_frames)).astype(int))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, in float64."""
    y = np.asarray(logits, dtype=np.float64)
    e = np.exp(y - y.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _rounded(values: Any, digits: int = 6) -> Any:
    """Nested lists of floats at ``digits`` significant digits (non-finite -> None), for compact JSON."""
    array = np.asarray(values, dtype=np.float64)
    out = np.vectorize(lambda v: float(f"{v:.{digits}g}"), otypes=[float])(array) if array.size else array
    listed = out.tolist()

    def clean(v: Any) -> Any:
        if isinstance(v, list):
            return [clean(u) for u in v]
        return v if np.isfinite(v) else None

    return clean(listed)


def flat_scalars(metrics: dict[str, Any], prefix: str = "", max_text: int = 40) -> dict[str, Any]:
    """The scalar entries of a (nested) metrics dict, nested keys joined with '.'; per-point series, per-token
    lists and texts longer than ``max_text`` characters (sentences: the page shows them elsewhere) are left out."""
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_scalars(value, name + ".", max_text))
        elif isinstance(value, (bool, np.bool_)):
            out[name] = bool(value)
        elif isinstance(value, (int, float, np.integer, np.floating)):
            out[name] = float(value) if np.isfinite(value) else None
        elif isinstance(value, str) and len(value) <= max_text:
            out[name] = value
    return out


def readable_metrics(flat: dict[str, Any], labels: list[str]) -> dict[str, Any]:
    """Flat metrics (:func:`flat_scalars`) under readable names (METRIC_LABELS), class indices as their labels."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        if key in CLASS_METRICS and isinstance(value, float) and value.is_integer() and 0 <= value < len(labels):
            value = labels[int(value)]
        elif key == "path.stop_iteration" and value == -1:
            value = "did not stop"
        out[METRIC_LABELS.get(key, key.replace("_", " ").replace(".", ": "))] = value
    return out


def status_names(status: int) -> str:
    """A step's status bits in words ("ok" for none): "stopped", "rejected, unconverged", ..."""
    named = [name for name, bit in STATUS_BITS if status & bit]
    return ", ".join(named) if named else "ok"


def run_title(name: str) -> str:
    """The page's name of a run: "SiMEC", "counterfactual", "baseline of SiMExp"."""
    if name.startswith("baseline_"):
        return "baseline of " + run_title(name[len("baseline_"):])
    return RUN_TITLES.get(name, name)


def _runs(study: Study) -> dict[str, Any]:
    """Every run of the study by the name its metrics use: explorations, then their baselines."""
    runs: dict[str, Any] = dict(study.trajectories)
    runs.update({f"baseline_{name}": traj for name, traj in study.baselines.items()})
    return runs


def _description(name: str) -> str:
    if name in RUN_DESCRIPTIONS:
        return RUN_DESCRIPTIONS[name]
    if name.startswith("baseline_"):
        of = name[len("baseline_"):]
        sign = "+" if of == "simec" else "-"
        return (f"Baseline: steps of {sign}grad p(original class) plus Gaussian noise orthogonal to it, with the "
                f"step sizes of {of}.")
    return ""


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
            out[label] = _rounded(v, 4)
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
                      progress: bool = False) -> tuple[dict[str, Any], str | None]:
    """Decoded inputs and their logits (B, F, ...) at the shown frames of every run: the study's interpretation
    where it has one, else decoded now with the model (Algorithm 3). Also a note when the model is unavailable."""
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
            decoded[name] = (interp.inputs[:, f], interp.logits[:, f])
        elif model is not None:
            from manifold_jax.interpret import interpret

            interp = interpret(model, runs[name].x[:, f], {k: jnp.asarray(v) for k, v in study.context.items()},
                               progress=progress, label=f"{run_title(name)}: decoding")
            decoded[name] = (interp.inputs, interp.logits)
    return decoded, note


def image_frames(decoded: np.ndarray, original: np.ndarray) -> dict[str, Any]:
    """Decoded images (F, H, W, C) as PNG data URIs, and their signed differences to the original (H, W, C) on
    one colour scale for the run: +-scale, scale the largest channel-mean |difference| over the frames."""
    difference = decoded.astype(np.float64) - original[None].astype(np.float64)
    change = np.abs(difference.mean(axis=-1)).reshape(len(decoded), -1).max(axis=1)
    scale = float(change.max()) if change.max() > 0 else 1.0
    palette = difference_palette()
    return {
        "images": [data_uri(png_bytes(image_levels(image))) for image in decoded],
        "differences": [data_uri(png_bytes(difference_indices(d, scale), palette)) for d in difference],
        "difference_scale": float(f"{scale:.4g}"),
        "largest_change": _rounded(change, 4),
    }


def page_data(study: Study, metrics: dict[str, Any], model: Any = None, max_frames: int = MAX_FRAMES, *,
              projections: dict[str, list[dict[str, Any]]] | None = None, progress: bool = False) -> dict[str, Any]:
    """The JSON the page renders: study settings, and per input and run the shown frames (see the module doc).

    ``model`` is needed for text studies (its tokenizer names the tokens) and for runs without a saved
    interpretation (they are decoded here, with a progress bar when ``progress``); it is loaded from the
    study's spec when missing. ``projections``: a text study's verified sentences per run and input
    (:func:`manifold_jax.report.study_projections`), shown beside the decoding.
    """
    from manifold_jax.plots import project_trajectories

    spec = study.spec
    runs = _runs(study)
    if not runs:
        raise ValueError(f"{study.path}: no finished exploration to show")
    raw = study.inputs.get("raw")
    modality = "image" if raw is not None else "text"
    if modality == "text" and model is None:
        model = load_model(spec)
    frames = {name: frame_indices(len(traj.iteration), max_frames) for name, traj in runs.items()}
    decoded, note = _decoded_for_runs(study, runs, frames, model, progress)
    k = next(iter(runs.values())).y.shape[-1]
    labels = list(spec.labels) if len(spec.labels) == k else [str(c) for c in range(k)]
    select = study.inputs["select"]
    ctx = study.context
    vocabulary: dict[int, str] = {}
    special = set(getattr(model.tokenizer, "all_special_tokens", ())) if modality == "text" else set()

    def tokens(ids: np.ndarray) -> list[int]:
        listed = [int(i) for i in ids]
        for i, t in zip(listed, model.tokenizer.convert_ids_to_tokens(listed), strict=True):
            vocabulary.setdefault(i, t)
        return listed

    inputs = []
    for b, source in enumerate(spec.inputs):
        entry: dict[str, Any] = {"name": str(source), "explored": int(select[b].sum()),
                                 "tokens": int(np.asarray(ctx["token_mask"][b]).sum()), "runs": {}}
        if raw is not None:  # an image study
            entry["original"] = data_uri(png_bytes(image_levels(raw[b])))
        else:
            original_ids = np.asarray(ctx["input_ids"][b])
            keep = np.asarray(ctx["attention_mask"][b]).astype(bool)
            named = model.tokenizer.convert_ids_to_tokens(original_ids.tolist())
            positions = [i for i in np.flatnonzero(keep) if named[i] not in special]
            entry["positions"] = [int(i) for i in positions]
            entry["original"] = tokens(original_ids[positions])
            entry["select"] = [bool(select[b, i]) for i in positions]
        projected = project_trajectories({name: traj.x[b, frames[name]] for name, traj in runs.items()}, select[b])
        for name, traj in runs.items():
            f = frames[name]
            run: dict[str, Any] = {
                "probabilities": _rounded(softmax(traj.y[b, f])),
                "xy": _rounded(projected[name], 5),
                "records": _per_point_records(traj, b, f),
                "metrics": readable_metrics(flat_scalars(metrics["inputs"][b].get(name, {})), labels),
            }
            if projections and name in projections:
                run["verified"] = verified_sentences(projections[name][b], labels)
            if name in decoded:
                images_or_ids, logits = decoded[name]
                run["decoded_probabilities"] = _rounded(softmax(logits[b]))
                if raw is not None:  # an image study
                    run.update(image_frames(images_or_ids[b], raw[b]))
                else:
                    run["decoded"] = [tokens(ids[positions]) for ids in np.asarray(images_or_ids[b])]
            entry["runs"][name] = run
        inputs.append(entry)

    saved = {name: len(traj.iteration) for name, traj in runs.items()}
    return {
        "title": f"Study: {spec.model}",
        "modality": modality,
        "labels": labels,
        "spec": spec.settings(),
        "timing": study.timing,
        "means": {name: readable_metrics(flat_scalars(row), labels) for name, row in metrics.get("means", {}).items()},
        "runs": [
            {"name": name, "title": run_title(name), "description": _description(name), "saved": saved[name],
             "iterations": [int(i) for i in traj.iteration[frames[name]]]}
            for name, traj in runs.items()
        ],
        "max_frames": max_frames,
        "vocabulary": {str(i): t for i, t in vocabulary.items()},
        "note": note,
        "inputs": inputs,
    }


# --------------------------------------------------------------------------- page


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


def write_atomically(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` through the study's atomic writer (a temporary file in the same directory,
    fsync, rename), so that a reader never sees a partial file."""
    atomic.write_text(path, text)
    return Path(path)


def write_report_html(study: Study, metrics: dict[str, Any], path: str | os.PathLike[str], *, model: Any = None,
                      max_frames: int = MAX_FRAMES, projections: dict[str, list[dict[str, Any]]] | None = None,
                      progress: bool = False) -> Path:
    """Build the page for ``study`` (metrics from :func:`manifold_jax.report.study_metrics`, a text study's
    verified sentences from :func:`manifold_jax.report.study_projections`) and write it atomically to ``path``."""
    data = page_data(study, metrics, model, max_frames, projections=projections, progress=progress)
    return write_atomically(path, render_page(data))


# --------------------------------------------------------------------------- view


def has_display() -> bool:
    """Whether a graphical browser can open here: always on macOS and Windows, elsewhere when an X or Wayland
    display is set."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def view(path: str | os.PathLike[str], *, rebuild: bool = False, echo: Callable[[str], None] = print,
         opener: Callable[[str], bool] | None = None) -> Path:
    """Open the study's report.html in the default browser, building the report first when it is missing (or
    ``rebuild``); print its path, and only the path where no browser can be opened. Returns the page's path."""
    import webbrowser

    from manifold_jax.report import build_report

    study_dir = study_root(path)
    if not (study_dir / "spec.json").is_file():
        raise FileNotFoundError(f"{study_dir} is not a study directory (spec.json is missing)")
    page = study_dir / "report.html"
    if rebuild or not page.is_file():
        build_report(study_dir, echo=echo)
    if opener is None and has_display():
        try:
            opener = webbrowser.get().open
        except webbrowser.Error:
            opener = None
    if opener is not None and opener(page.as_uri()):
        echo(f"opened {page}")
    else:
        echo(f"no browser to open here; the report is {page}")
    return page
