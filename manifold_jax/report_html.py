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

from manifold_jax.study import Study, atomic, load_model, study_root

MAX_FRAMES = 101
"""Saved points shown per run at most: all 101 of the default 1000 steps saved every 10, every 10th of a run
saved at every step (about 2.5 kB per input, run and point for a 28x28 image)."""

DIFFERENCE_LEVELS = 65
"""Colours of the signed difference images: -scale .. 0 .. +scale in 64 equal steps."""

RUN_DESCRIPTIONS = {
    "simec": "SiMEC (Algorithm 1): each step follows a null direction of the pullback metric, so the prediction "
             "should stay put.",
    "simexp": "SiMExp (Algorithm 2): each step follows a direction the metric sees, so the prediction should move.",
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


def flat_scalars(metrics: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The scalar entries of a (nested) metrics dict, nested keys joined with '.'; per-point series and per-token
    lists are left out (the page draws the series)."""
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_scalars(value, name + "."))
        elif isinstance(value, (bool, np.bool_)):
            out[name] = bool(value)
        elif isinstance(value, (int, float, np.integer, np.floating)):
            out[name] = float(value) if np.isfinite(value) else None
        elif isinstance(value, str):
            out[name] = value
    return out


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
    """Every numeric per-point field of a trajectory other than x and y (step sizes, eigenvalues, status, ...):
    (S,) values as they are, (S, ...) ones as their mean over the trailing axes."""
    fields = [f.name for f in dataclasses.fields(traj)] if dataclasses.is_dataclass(traj) else list(vars(traj))
    out = {}
    saved = len(traj.iteration)
    for name in fields:
        if name in _TRAJECTORY_SKIP:
            continue
        value = getattr(traj, name)
        if not isinstance(value, np.ndarray) or value.ndim < 2 or value.shape[1] != saved:
            continue
        if not (np.issubdtype(value.dtype, np.number) or value.dtype == bool):
            continue
        v = value[b, frames].astype(np.float64)
        if v.ndim > 1:
            with np.errstate(all="ignore"):
                finite = np.where(np.isfinite(v), v, np.nan).reshape(len(frames), -1)
                v = np.array([np.nanmean(r) if np.isfinite(r).any() else np.nan for r in finite])
            name = f"{name} (mean)"
        out[name] = _rounded(v, 4)
    return out


def _decoded_for_runs(study: Study, runs: dict[str, Any], frames: dict[str, np.ndarray], model: Any) -> tuple[
        dict[str, Any], str | None]:
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

            interp = interpret(model, runs[name].x[:, f], {k: jnp.asarray(v) for k, v in study.context.items()})
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


def page_data(study: Study, metrics: dict[str, Any], model: Any = None, max_frames: int = MAX_FRAMES) -> dict[str, Any]:
    """The JSON the page renders: study settings, and per input and run the shown frames (see the module doc).

    ``model`` is needed for text studies (its tokenizer names the tokens) and for runs without a saved
    interpretation (they are decoded here); it is loaded from the study's spec when missing.
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
    decoded, note = _decoded_for_runs(study, runs, frames, model)
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
                "metrics": flat_scalars(metrics["inputs"][b].get(name, {})),
            }
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
        "means": {name: flat_scalars(row) for name, row in metrics.get("means", {}).items()},
        "runs": [
            {"name": name, "description": _description(name), "saved": saved[name],
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
                      max_frames: int = MAX_FRAMES) -> Path:
    """Build the page for ``study`` (metrics from :func:`manifold_jax.report.study_metrics`) and write it
    atomically to ``path``."""
    return write_atomically(path, render_page(page_data(study, metrics, model, max_frames)))


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
