"""Figures in the paper's style (its Figure 1), drawn with matplotlib's Agg backend.

* :func:`exploration_figure`: for one input, the original and decoded inputs at chosen
  iterations (images), the trajectories projected on their first two singular vectors
  with the predicted class as marker, and the class probabilities over iterations for
  SiMEC and SiMExp.
* :func:`importance_figure`: the token importance (largest pullback eigenvalue) as a heat
  map over the image patches or over the sentence's tokens.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

_MARKERS = "o^sDv<>pP*Xh"
_COLOURS = plt.get_cmap("tab10")(np.arange(10))


def _softmax(y: np.ndarray) -> np.ndarray:
    e = np.exp(y - y.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def snapshot_indices(saved: int, count: int = 4) -> list[int]:
    """``count`` saved-point indices spread over a run of ``saved`` points, the last included."""
    return sorted({int(round(i)) for i in np.linspace(0, saved - 1, count + 1)[1:]})


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
    image_rows = 1 if original_image is not None and decoded_images else 0
    fig = plt.figure(figsize=(3.2 * max(len(snaps) + 1, 3), 3.0 * (2 + image_rows * len(algorithms)) + 0.5))
    grid = fig.add_gridspec(2 + image_rows * len(algorithms), max(len(snaps) + 1, 2))
    row = 0
    if original_image is not None and decoded_images:
        for algorithm in algorithms:
            probs = _softmax(logits[algorithm])
            ax = fig.add_subplot(grid[row, 0])
            _show_image(ax, original_image, f"original\n{labels[int(np.argmax(probs[0]))]}")
            for col, s in enumerate(snaps, start=1):
                ax = fig.add_subplot(grid[row, col])
                top = int(np.argmax(probs[s]))
                caption = f"{algorithm} t={iterations[s]}\n{labels[top]} ({probs[s, top]:.2f})"
                _show_image(ax, decoded_images[algorithm][s], caption)
            row += 1
    ax = fig.add_subplot(grid[row, :])
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
    row += 1
    # when the prediction never wavers a linear axis shows flat lines: what moves is the
    # ranking of the unlikely classes, which a log axis shows
    confident = min(float(_softmax(v).max(axis=1).min()) for v in logits.values()) > 0.99
    for n_alg, algorithm in enumerate(algorithms):
        width = grid.ncols // len(algorithms)
        ax = fig.add_subplot(grid[row, n_alg * width : (n_alg + 1) * width])
        probs = _softmax(logits[algorithm])
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
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


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
        grid = int(round(np.sqrt(token_mask.sum())))
        heat = imp[1:].reshape(grid, grid)
        fig, axes = plt.subplots(1, 2, figsize=(7, 3.4))
        _show_image(axes[0], image, "input")
        scale = image.shape[0] / grid
        axes[1].imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1)
        shown = axes[1].imshow(heat, cmap="inferno", alpha=0.6, extent=(0, image.shape[1], image.shape[0], 0))
        for r, c in np.argwhere(select[1:].reshape(grid, grid)):
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
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
