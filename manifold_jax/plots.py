"""Figures in the paper's style (its Figure 1), drawn with matplotlib's Agg backend.

* :func:`exploration_figure`: for one input, the original and decoded inputs at chosen
  iterations (images, each with its signed difference from the original), the trajectories
  projected on their first two singular vectors with the predicted class as marker, and the
  class probabilities over iterations for SiMEC and SiMExp.
* :func:`importance_figure`: the token importance (largest pullback eigenvalue) as a heat
  map over the image patches or over the sentence's tokens.
* :func:`sentence_figure`: sentences one per row, changed words highlighted, each beside
  its class probabilities (the verified real sentences of a text report).
* :func:`distribution_figure`: histograms of per-input values (a large study's report).
* :func:`counterfactual_figure`: an image beside its counterfactual (the end of a targeted
  SiMExp path), their signed difference, and both predicted distributions.
"""

from __future__ import annotations

import os
import textwrap
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, BinaryIO

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import ListedColormap, Normalize
from matplotlib.ticker import MaxNLocator

from manifold_jax.analysis import softmax

_MARKERS = "o^sDv<>pP*Xh"
_COLOURS = plt.get_cmap("tab10")(np.arange(10))


def snapshot_indices(saved: int, count: int = 4) -> list[int]:
    """``count`` saved-point indices spread over a run of ``saved`` points, the last included."""
    return sorted({int(np.rint(i)) for i in np.linspace(0, saved - 1, count + 1)[1:]})


def project_trajectories(runs: dict[str, np.ndarray], select: np.ndarray) -> dict[str, np.ndarray]:
    """Selected-token trajectories (S, n, d) projected on the top two right singular vectors
    of all runs' displacements from the start, stacked."""
    flat = {name: x[:, select].reshape(x.shape[0], -1) for name, x in runs.items()}
    origin = next(iter(flat.values()))[0]
    stacked = np.concatenate([v - origin for v in flat.values()])
    _, _, vt = np.linalg.svd(stacked, full_matrices=False)
    axes = vt[:2] if vt.shape[0] >= 2 else np.vstack([vt, np.zeros_like(vt)])
    return {name: (v - origin) @ axes.T for name, v in flat.items()}


def exploration_figure(
    path: str | os.PathLike[str],
    *,
    title: str,
    labels: Sequence[str],
    logits: dict[str, np.ndarray],
    points: dict[str, np.ndarray],
    select: np.ndarray,
    iterations: np.ndarray,
    original_image: np.ndarray | None = None,
    decoded_images: dict[str, np.ndarray] | None = None,
) -> None:
    """One input's exploration figure, saved as PNG.

    logits / points: per algorithm, (S, k) and (S, n, d); select (n,) the explored tokens;
    decoded_images: per algorithm (S, H, W, C), for image models.
    """
    algorithms = list(logits)
    snaps = snapshot_indices(len(iterations))
    image_rows = 2 if original_image is not None and decoded_images else 0
    fig = plt.figure(figsize=(3.2 * max(len(snaps) + 1, 3), 3.0 * (2 + image_rows * len(algorithms)) + 0.5))
    grid = fig.add_gridspec(2 + image_rows * len(algorithms), max(len(snaps) + 1, 2))
    row = 0
    if original_image is not None and decoded_images:
        for algorithm in algorithms:
            probs = softmax(logits[algorithm])
            ax = fig.add_subplot(grid[row, 0])
            _show_image(ax, original_image, f"original\n{labels[int(np.argmax(probs[0]))]} ({probs[0].max():.2f})")
            ax = fig.add_subplot(grid[row + 1, 0])
            ax.axis("off")
            ax.text(0.5, 0.5, f"{algorithm}:\nimage - original\n(red brighter,\nblue darker)", ha="center",
                    va="center", fontsize=9, transform=ax.transAxes)
            for col, s in enumerate(snaps, start=1):
                ax = fig.add_subplot(grid[row, col])
                top = int(np.argmax(probs[s]))
                caption = f"{algorithm} t={iterations[s]}\n{labels[top]} ({probs[s, top]:.2f})"
                _show_image(ax, decoded_images[algorithm][s], caption)
                diff_ax = fig.add_subplot(grid[row + 1, col])
                shown = _show_difference(diff_ax, decoded_images[algorithm][s], original_image)
            fig.colorbar(shown, ax=diff_ax, fraction=0.046, pad=0.04)
            row += 2
    _trajectory_panel(fig.add_subplot(grid[row, :]), points, select, logits, labels)
    _probability_panels(fig, grid, row + 1, logits, labels, iterations)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _trajectory_panel(ax: Any, points: dict[str, np.ndarray], select: np.ndarray, logits: dict[str, np.ndarray],
                      labels: Sequence[str]) -> None:
    """Every run's explored tokens projected on the top two singular directions, marked by predicted class."""
    algorithms = list(logits)
    projected = project_trajectories(points, select)
    for n_alg, algorithm in enumerate(algorithms):
        xy = projected[algorithm]
        pred = np.argmax(logits[algorithm], axis=1)
        ax.plot(xy[:, 0], xy[:, 1], color=_COLOURS[n_alg], alpha=0.4, lw=1)
        for c in np.unique(pred):
            sel = pred == c
            ax.scatter(xy[sel, 0], xy[sel, 1], marker=_MARKERS[c % len(_MARKERS)], color=_COLOURS[n_alg],
                       s=18, label=f"{algorithm}: {labels[c]}")
    ax.scatter([0], [0], marker="*", s=160, color="black", label="x0", zorder=5)
    ax.set_xlabel("singular direction 1")
    ax.set_ylabel("singular direction 2")
    ax.set_title("trajectories of the explored tokens (marker: predicted class)")
    ax.legend(fontsize=7, ncol=3, loc="best")


def _probability_panels(fig: Any, grid: Any, row: int, logits: dict[str, np.ndarray], labels: Sequence[str],
                        iterations: np.ndarray) -> None:
    """One panel per run: the class probabilities along the iterations."""
    algorithms = list(logits)
    # when the prediction never wavers a linear axis shows flat lines: what moves is the
    # ranking of the unlikely classes, which a log axis shows
    confident = min(float(softmax(v).max(axis=1).min()) for v in logits.values()) > 0.99
    for n_alg, algorithm in enumerate(algorithms):
        width = grid.ncols // len(algorithms)
        ax = fig.add_subplot(grid[row, n_alg * width : (n_alg + 1) * width])
        probs = softmax(logits[algorithm])
        for c in range(probs.shape[1]):
            ax.plot(iterations, probs[:, c], color=_COLOURS[c % 10], lw=1.2, label=labels[c])
        if confident:
            ax.set_yscale("log")
            ax.set_ylim(max(float(probs.min()) / 2, 1e-12), 1.5)
        else:
            ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("iteration")
        ax.set_ylabel("probability" + (" (log scale)" if confident else ""))
        ax.set_title(f"{algorithm}: class probabilities")
        if probs.shape[1] <= 10:
            ax.legend(fontsize=7, ncol=2)


def counterfactual_figure(
    path: str | os.PathLike[str],
    *,
    title: str,
    labels: Sequence[str],
    original_image: np.ndarray,
    counterfactual_image: np.ndarray,
    original_logits: np.ndarray,
    counterfactual_logits: np.ndarray,
    target: int,
    caption: str,
) -> None:
    """One input's counterfactual, saved as PNG: the original (H, W, C) and the image at the
    path's end, their signed difference, and the two predicted distributions (logits (k,))."""
    p0, p1 = softmax(original_logits), softmax(counterfactual_logits)
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.4), gridspec_kw={"width_ratios": [1, 1, 1.15, 1.6]})
    c0, c1 = int(np.argmax(p0)), int(np.argmax(p1))
    _show_image(axes[0], original_image, f"original\n{labels[c0]} ({p0[c0]:.2f})")
    _show_image(axes[1], counterfactual_image, f"counterfactual (target {labels[target]})\n{labels[c1]} ({p1[c1]:.2f})")
    shown = _show_difference(axes[2], counterfactual_image, original_image)
    fig.colorbar(shown, ax=axes[2], fraction=0.046, pad=0.04)
    ax = axes[3]
    positions = np.arange(len(p0))
    ax.bar(positions - 0.2, p0, width=0.4, color="0.6", label="original")
    ax.bar(positions + 0.2, p1, width=0.4, color=_COLOURS[3], label="counterfactual")
    ax.set_xticks(positions, [str(label) for label in labels], fontsize=7, rotation=0 if len(p0) <= 10 else 90)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("probability")
    ax.legend(fontsize=7)
    ax.set_title(caption, fontsize=8)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _show_difference(ax: Any, image: np.ndarray, original: np.ndarray) -> Any:
    """Signed pixel difference image - original (channel mean), red where brighter, blue where darker."""
    diff = (np.asarray(image, np.float64) - np.asarray(original, np.float64)).mean(axis=-1)
    shown = ax.imshow(diff, cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_title(f"max |change| {np.abs(diff).max():.2f}, {int((np.abs(diff) > 1e-3).sum())} px", fontsize=8)
    ax.axis("off")
    return shown


def _show_image(ax: Any, image: np.ndarray, title: str) -> None:
    img = np.asarray(image)
    ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def importance_figure(
    path: str | os.PathLike[str],
    *,
    title: str,
    importance: np.ndarray,
    token_mask: np.ndarray,
    select: np.ndarray,
    image: np.ndarray | None = None,
    tokens: Sequence[str] | None = None,
) -> None:
    """Heat map of the token importance (n,) over an image's patches or a sentence's tokens.

    Explored tokens are outlined in red.
    """
    imp = np.where(token_mask, importance, np.nan)
    if image is not None:
        patches = np.flatnonzero(token_mask)  # every patch: all positions in pixel space, all but CLS otherwise
        grid = int(np.rint(np.sqrt(patches.size)))
        heat = imp[patches].reshape(grid, grid)
        fig, axes = plt.subplots(1, 2, figsize=(7, 3.4))
        _show_image(axes[0], image, "input")
        scale = image.shape[0] / grid
        axes[1].imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1)
        shown = axes[1].imshow(heat, cmap="inferno", alpha=0.6, extent=(0, image.shape[1], image.shape[0], 0))
        for r, c in np.argwhere(np.asarray(select)[patches].reshape(grid, grid)):
            axes[1].add_patch(plt.Rectangle((c * scale, r * scale), scale, scale, fill=False, color="red", lw=0.8))
        axes[1].set_title("largest pullback eigenvalue per patch", fontsize=8)
        axes[1].axis("off")
        fig.colorbar(shown, ax=axes[1], fraction=0.046)
    else:
        words = list(tokens or [])
        values = imp[: len(words)]
        finite = values[np.isfinite(values)]
        top = finite.max() if finite.size else 1.0
        fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(words)), 1.6))
        cmap = plt.get_cmap("inferno")
        x = 0.0
        for i, word in enumerate(words):
            v = values[i]
            colour = cmap(0.85 * v / top) if np.isfinite(v) else (0.9, 0.9, 0.9, 1.0)
            dark = np.isfinite(v) and v / top < 0.6  # inferno is dark at the low end
            ax.text(x, 0.5, word, fontsize=11, va="center", color="white" if dark else "black",
                    bbox=dict(facecolor=colour, edgecolor="red" if select[i] else "none", boxstyle="round,pad=0.3"))
            x += 0.12 + 0.085 * len(word)
        ax.set_xlim(-0.1, x)
        ax.set_ylim(0, 1)
        ax.axis("off")
        ax.set_title("largest pullback eigenvalue per token (grey: not explorable, red: explored)", fontsize=8)
        # the words are coloured along the first 85 % of inferno (its top is too light for white text)
        shown_cmap = ListedColormap(cmap(np.linspace(0.0, 0.85, 256)))
        bar = fig.colorbar(ScalarMappable(Normalize(0.0, float(top)), shown_cmap), ax=ax, fraction=0.03, pad=0.02)
        bar.ax.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def sentence_figure(
    path: str | os.PathLike[str],
    *,
    title: str,
    labels: Sequence[str],
    rows: Sequence[dict[str, Any]],
) -> None:
    """Sentences with their changed words highlighted and the class probabilities of each.

    rows: dicts with ``caption`` (str, left of the sentence), ``words`` (a list of
    (word, changed) pairs), ``probs`` ((k,) the model's own prediction on that sentence,
    or None) and optionally ``note`` (str, right of the bar). Changed words are drawn on
    yellow; the bar on the right splits [0, 1] into the class probabilities.
    """
    k = len(labels)
    height = 0.5 * len(rows) + 1.2
    longest = max((sum(len(w) + 2 for w, _ in r["words"]) for r in rows), default=10)
    caption_w, text_w, bar_w, note_w = 2.7, 0.075 * longest + 0.3, 3.0, 1.7  # inches
    total = caption_w + text_w + bar_w + note_w
    fig = plt.figure(figsize=(total, height))
    text_ax = fig.add_axes((0.0, 0.08, (caption_w + text_w) / total, 0.80))
    bar_ax = fig.add_axes(((caption_w + text_w) / total, 0.08, bar_w / total, 0.80))
    text_ax.set_xlim(0, 1)
    text_ax.set_ylim(len(rows) - 0.5, -0.5)
    text_ax.axis("off")
    canvas = fig.canvas
    assert isinstance(canvas, FigureCanvasAgg)  # the module's backend: it measures the words
    renderer = canvas.get_renderer()
    for r, row in enumerate(rows):
        text_ax.text(0.0, r, row["caption"], fontsize=8, va="center", ha="left", color="0.3")
        x = caption_w / (caption_w + text_w)
        for word, changed in row["words"]:
            t = text_ax.text(x, r, word, fontsize=9, va="center", ha="left",
                             bbox=dict(facecolor="#ffe066", edgecolor="none", pad=1.0) if changed else None)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Glyph .* missing from font")
                box = t.get_window_extent(renderer=renderer).transformed(text_ax.transData.inverted())
            x = box.x1 + 0.008
        probs = row.get("probs")
        if probs is not None:
            left = 0.0
            for c in range(k):
                bar_ax.barh(r, probs[c], left=left, color=_COLOURS[c % 10], height=0.6,
                            label=labels[c] if r == 0 else None)
                if probs[c] > 0.12:
                    bar_ax.text(left + probs[c] / 2, r, f"{probs[c]:.2f}", ha="center", va="center", fontsize=7,
                                color="white")
                left += probs[c]
        if row.get("note"):
            bar_ax.text(1.01, r, row["note"], fontsize=7, va="center", ha="left", clip_on=False)
    bar_ax.set_xlim(0, 1)
    bar_ax.set_ylim(len(rows) - 0.5, -0.5)
    bar_ax.set_yticks([])
    bar_ax.set_xlabel("class probabilities (the model's own prediction on that sentence)", fontsize=7)
    bar_ax.legend(fontsize=7, ncol=k, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    fig.suptitle(title, fontsize=10, x=0.01, ha="left")
    with warnings.catch_warnings():  # a decoded word piece in a script the font lacks is drawn as a box
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)


def distribution_figure(
    path: str | os.PathLike[str] | BinaryIO,
    *,
    title: str,
    panels: Mapping[str, Sequence[float | None]],
) -> None:
    """Histograms of per-input values, one panel each (label -> values; None, a missing value, is left out and
    counted in the panel's title), saved as PNG (to a path or a binary file)."""
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(3.6 * max(len(panels), 1), 3.0), squeeze=False)
    for ax, (label, values) in zip(axes[0], panels.items(), strict=False):
        finite = np.array([v for v in values if v is not None and np.isfinite(v)], np.float64)
        missing = len(values) - finite.size
        if finite.size:
            ax.hist(finite, bins=min(30, max(5, int(np.sqrt(finite.size)) + 1)), color=_COLOURS[0], alpha=0.8)
        ax.set_title(textwrap.fill(label, 40) + (f"\n({missing} input(s) without a value)" if missing else ""),
                     fontsize=8)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("value", fontsize=8)
        ax.set_ylabel("inputs", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90, format="png")
    plt.close(fig)
