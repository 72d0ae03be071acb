"""``manifold-jax view``: open a study's report.html in the browser, building the report first when needed.

The command line's layer above the report (only :mod:`manifold_jax.cli` imports it): the page
module itself never builds a report.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

from manifold_jax.report import build_report
from manifold_jax.study import study_root


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
