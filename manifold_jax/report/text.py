"""How the report words things: user text made inert in Markdown, input titles, numbers, certificates."""

from __future__ import annotations

import html
import re
from typing import Any

import numpy as np

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


def certificate_text(c: dict[str, Any], sep: str = ", ") -> str:
    """The closest counterfactual's figures: L2 distance, margin, KKT residual (0 at the closest point).

    ``sep`` goes between the distance and the certificate ("\n" for a figure title that must
    fit a narrow panel)."""
    if not c["reached"]:
        return f"closest counterfactual not reached within the box and the step budget (L2 {c['distance']:.3g})"
    return (f"closest counterfactual: L2 {c['distance']:.3g}{sep}margin {c['margin']:.2g}, KKT residual {c['kkt']:.3g}"
            f"{'' if c['converged'] else ' (above tol)'}")


def fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def percent(fraction: Any) -> str:
    """A fraction in [0, 1] as "87 %" ("n/a" when missing)."""
    if fraction is None or not np.isfinite(fraction):
        return "n/a"
    return f"{100 * float(fraction):.0f} %"


def class_label(labels: tuple[str, ...], c: int) -> str:
    return labels[c] if labels else str(c)
