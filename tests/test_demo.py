"""The README's main job, at reduced size: SiMEC keeps every prediction, SiMExp changes rankings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from manifold_jax.cli import main


@pytest.mark.slow
def test_demo_keeps_predictions_with_simec_and_changes_rankings_with_simexp(tmp_path: Path, full_size: bool) -> None:
    # CI size: an eighth of the iterations with a step three times longer (the demo's eta is 10)
    steps, eta = (1000, 10) if full_size else (125, 30)
    # (and no baseline: tests/test_study.py checks it)
    main(["demo", "--out", str(tmp_path), "--steps", str(steps), "--eta", str(eta), "--quiet",
          *([] if full_size else ["--no-baseline"])])
    for study in ("images", "text"):
        metrics = json.loads((tmp_path / study / "metrics.json").read_text())
        inputs = metrics["inputs"]
        assert len(inputs) == 3
        for entry in inputs:
            simec = entry["simec"]
            assert simec["prediction_changes"] == 0, (study, entry["input"], simec["prediction_change_steps"])
            assert simec["final_class"] == simec["original_class"]
        changed = [e["simexp"]["ranking_inversions_total"] > 0 for e in inputs]
        assert sum(changed) >= 2, (study, changed)
        assert (tmp_path / study / "report.md").is_file()
        # every input walked to its runner-up class, and the walk stopped where it got there
        for entry in inputs:
            path = entry["counterfactual"]["path"]
            assert path["reached_target"] and path["stop_iteration"] >= 0, (study, entry["input"], path)
            assert entry["counterfactual"]["final_class"] == path["target"], (study, entry["input"])
        # exploration and importance figures; images: the counterfactual, text: the verified sentences
        assert len(list((tmp_path / study / "figures").glob("*.png"))) == 9
    # the digits are explored in pixel space: every decoded image re-predicts as explored
    images = json.loads((tmp_path / "images" / "metrics.json").read_text())
    assert json.loads((tmp_path / "images" / "spec.json").read_text())["space"] == "pixels"
    agreement = [e[a]["interpretation"]["prediction_agreement"] for e in images["inputs"]
                 for a in ("simec", "simexp", "counterfactual")]
    assert all(a == 1.0 for a in agreement)
    text = json.loads((tmp_path / "text" / "metrics.json").read_text())
    assert all("verified_agreement" in e["simexp"]["projection"] for e in text["inputs"])
    assert "verified:" in (tmp_path / "text" / "report.md").read_text()
