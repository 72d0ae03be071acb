"""The project's documents as one line each, so that a test can look for a quoted sentence
whatever the line breaks of the page."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def collapsed(relative: str) -> str:
    """The text of ``ROOT / relative`` with every run of whitespace one space."""
    return " ".join((ROOT / relative).read_text().split())
