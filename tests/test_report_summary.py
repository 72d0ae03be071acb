"""A large study's report summarises (distributions, the inputs at the extremes, one table) instead of one
section and set of figures per input: checked on a small study with the threshold lowered."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from manifold_jax.report import build_report
from manifold_jax.report.summary import MEASURES
from manifold_jax.study import MnistImage, StudySpec, run_study
from tests.models_helpers import save_random_hf_vit

INPUTS = (0, 1, 2, 3, 1000, 1001)


@pytest.fixture(scope="module")
def summarised(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A random ViT (as the page tests'), six MNIST digits, SiMEC and the counterfactual, reported with the
    summary threshold at 3 inputs and one input at each end of a ranked measure."""
    root = tmp_path_factory.mktemp("summary")
    save_random_hf_vit(root / "model", image_size=28, patch_size=4, num_channels=1, hidden_size=16,
                       num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, num_labels=4)
    spec = StudySpec(model=str(root / "model"), inputs=tuple(MnistImage(i) for i in INPUTS),
                     runs=("simec", "counterfactual"), steps=8, baseline=False,
                     options={"save_every": 2, "chunk_size": 8, "eta": 50.0})
    out = run_study(spec, root / "study", progress=False, echo=lambda s: None)
    metrics = build_report(out, echo=lambda s: None, summary_above=3, extremes=1)
    return out, metrics


def _page_data(study: Path) -> dict[str, Any]:
    page = (study / "report.html").read_text()
    found = re.search(r'<script id="study-data" type="application/json">(.*?)</script>', page, re.S)
    assert found is not None
    return json.loads(found.group(1).replace("<\\/", "</"))


def test_the_summary_ranks_the_inputs_by_the_stored_metrics(summarised: tuple[Path, dict[str, Any]]) -> None:
    study, metrics = summarised
    summary = json.loads((study / "metrics.json").read_text())["summary"]
    assert summary["inputs"] == len(INPUTS)
    volumes = [e["simec"]["explored_volume"]["log_volume"] for e in metrics["inputs"]]
    assert summary["measures"]["simec_log_volume"]["values"] == pytest.approx(volumes)
    ranked = {r["measure"]: r for r in summary["extremes"]}
    present = [b for b, v in enumerate(volumes) if v is not None]
    assert ranked["simec_log_volume"]["largest"] == [max(present, key=lambda b: volumes[b])]
    assert ranked["simec_log_volume"]["smallest"] == [min(present, key=lambda b: volumes[b])]
    for name, r in ranked.items():
        values = summary["measures"][name]["values"]
        assert all(values[b] is not None for b in (*r["largest"], *r["smallest"]))
    # the counterfactual's distance is its certificate's, for the inputs that reached their target
    certificates = [e["counterfactual"]["path"]["certificate"] for e in metrics["inputs"]]
    expected = [c["distance"] if c["reached"] else None for c in certificates]
    assert summary["measures"].get("counterfactual_distance", {"values": expected})["values"] == expected
    shown = sorted({b for r in summary["extremes"] for b in (*r["largest"], *r["smallest"])})
    assert summary["shown"] == shown and len(shown) < len(INPUTS)


def test_only_the_inputs_at_the_extremes_keep_their_figures_and_sections(
    summarised: tuple[Path, dict[str, Any]],
) -> None:
    study, metrics = summarised
    shown = metrics["summary"]["shown"]
    figures = {int(m.group(1)) for p in (study / "figures").iterdir() if (m := re.match(r"input(\d+)_", p.name))}
    assert figures == set(shown)
    assert (study / "figures" / "summary_distributions.png").stat().st_size > 0
    report = (study / "report.md").read_text()
    assert f"## Summary of {len(INPUTS)} inputs" in report and "more than 3 inputs" in report
    assert "figures/summary_distributions.png" in report
    sections = [int(b) for b in re.findall(r"^### input (\d+):", report, re.M)]
    assert sections == shown
    table = report.split("## Every input", 1)[1].split("## Timing", 1)[0]
    rows = [int(b) for b in re.findall(r"^\| input (\d+):", table, re.M)]
    assert rows == list(range(len(INPUTS)))
    assert all(MEASURES[name][0] in report for name in metrics["summary"]["measures"])


def test_the_page_holds_the_summary_and_only_the_inputs_at_the_extremes(
    summarised: tuple[Path, dict[str, Any]],
) -> None:
    study, metrics = summarised
    data = _page_data(study)
    assert [entry["index"] for entry in data["inputs"]] == metrics["summary"]["shown"]
    page_summary = data["summary"]
    assert page_summary["inputs"] == len(INPUTS) and page_summary["histogram"].startswith("data:image/png;base64,")
    assert [row[0] for row in page_summary["rows"]] == [f"{b}: {e['input']}" for b, e in enumerate(metrics["inputs"])]
    volume_column = page_summary["columns"].index(MEASURES["simec_log_volume"][0])
    assert [row[volume_column] for row in page_summary["rows"]] == pytest.approx(
        metrics["summary"]["measures"]["simec_log_volume"]["values"])
