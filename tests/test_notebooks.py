"""Every notebook runs end to end (at a reduced number of iterations) and is up to date."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_there_are_four_notebooks_built_from_their_sources() -> None:
    import notebooks.build_notebooks as build

    assert [p.stem for p in NOTEBOOKS] == ["01_images", "02_text", "03_feature_importance", "04_language_model"]
    makers = (build.images, build.text, build.importance, build.language_model)
    for path, make in zip(NOTEBOOKS, makers, strict=True):
        committed = nbformat.read(path, as_version=4)
        assert [c.source for c in committed.cells] == [c.source for c in make().cells], f"rebuild {path.name}"
        assert all(not c.get("outputs") for c in committed.cells if c.cell_type == "code"), "commit notebooks clean"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path: Path, full_size: bool) -> None:
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    steps = "1000" if full_size else "20"
    env_cell = nbformat.v4.new_code_cell(
        f"import os; os.environ['MANIFOLD_JAX_NOTEBOOK_STEPS'] = '{steps}'; os.chdir({str(ROOT)!r})"
    )
    nb.cells.insert(0, env_cell)
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    expected = {"01_images": "SiMEC keeps the prediction: True", "02_text": "== SiMExp",
                "03_feature_importance": "SiMExp on the most important patch",
                "04_language_model": "SiMEC keeps the next-token distribution: True"}[path.stem]
    assert expected in text, text[-2000:]
