"""Figures: what a reader needs to read them (a colour scale for every heat map)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.figure import Figure

from manifold_jax.plots import importance_figure


@pytest.mark.parametrize("modality", ["image", "text"])
def test_the_importance_figure_has_a_colour_bar_up_to_the_largest_importance(
    modality: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    bars: list[Any] = []
    colorbar = Figure.colorbar

    def spy(self: Figure, mappable: Any, *args: Any, **kwargs: Any) -> Any:
        bars.append(mappable)
        return colorbar(self, mappable, *args, **kwargs)

    monkeypatch.setattr(Figure, "colorbar", spy)
    rng = np.random.default_rng(0)
    if modality == "image":
        importance = rng.uniform(0, 5, 16)
        kw: dict[str, Any] = dict(image=rng.uniform(0, 1, (8, 8, 1)), token_mask=np.ones(16, bool))
    else:
        importance = np.array([0.0, 3.0, 1.0, 2.0, 0.5, 0.0])
        kw = dict(tokens=["[CLS]", "the", "striker", "scored", "twice", "[SEP]"],
                  token_mask=np.array([0, 1, 1, 1, 1, 0], bool))
    importance_figure(tmp_path / "f.png", title="t", importance=importance, select=np.zeros(importance.size, bool),
                      **kw)
    assert (tmp_path / "f.png").stat().st_size > 1000
    assert len(bars) == 1
    low, high = bars[0].get_clim()
    assert high == pytest.approx(importance[kw["token_mask"]].max(), rel=1e-6) and low <= importance.min()
