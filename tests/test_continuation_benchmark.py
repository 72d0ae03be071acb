"""The continuation benchmark (``benchmarks/continuation.py``): its measures on inputs whose answers
are known, and every subcommand run once at its ``--quick`` size (one module-scoped run), its
output checked for shape and sanity, not speed (the full runs take tens of minutes)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks import continuation as bench


def test_token_angles_see_turns_and_not_scale() -> None:
    x0 = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    # token 0 turned by 90 degrees, token 1 only scaled
    x = np.array([[0.0, 5.0, 0.0], [0.0, 7.0, 0.0]])
    assert bench.token_angles(x0, x) == pytest.approx(45.0)
    assert bench.token_angles(x0, x, np.array([1])) == pytest.approx(0.0, abs=1e-6)
    assert bench.token_angles(x0, -x0) == pytest.approx(180.0)


def test_the_walk_within_the_budget_ends_before_the_first_drift_above_it() -> None:
    budget = bench.DRIFT_BUDGET
    p = np.array([[0.9, 0.1]] * 5)
    p[3:, 0] += 10 * budget  # leaves the budget at saved point 3: points 0..2 count
    p[3:, 1] -= 10 * budget
    points = np.arange(5, dtype=float)[:, None] * np.array([[3.0, 4.0]])  # 5 per step
    out = bench.within_budget(p, points, seconds_per_iteration=0.5)
    assert out["budget_iterations"] == 2
    assert out["budget_distance"] == pytest.approx(10.0)
    assert out["budget_distance_per_s"] == pytest.approx(10.0)
    # a walk that never leaves it counts whole; one that leaves at its first step counts nothing
    assert bench.within_budget(p[:3], points[:3], 0.5)["budget_iterations"] == 2
    first = bench.within_budget(p[[0, 3, 4]], points[:3], 0.5)
    assert first["budget_iterations"] == 0 and first["budget_distance_per_s"] == 0.0


# ------------------------------------------------------------------ the quick runs



@pytest.fixture(scope="module")
def continuation_quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("continuation")
    return bench.main(["all", "--quick", "--out", str(out), "--workdir", str(out / "work")]), out


def _finite(*values: Any) -> None:
    for v in values:
        assert isinstance(v, (int, float)) and math.isfinite(v), v


@pytest.mark.slow
@pytest.mark.xdist_group("benchmarks")
def test_quick_walk_stays_in_its_tolerance_and_the_reference_walks(continuation_quick: tuple) -> None:
    results, out = continuation_quick
    (row,) = results["walk"]
    ours, ref = row["ours"], row["ref"]
    assert row["spec"] == "tiny-bert-8" and ours["steps"] == 20 and ref["steps"] == 3
    # every accepted point passed the corrector's test at WALK_TOL (float64: no rounding slack needed
    # beyond the record's re-evaluation, ~1e-15)
    assert ours["max_dp"] <= bench.WALK_TOL * (1 + 1e-6)
    assert ours["distance"] > 0 and ours["arc_length"] >= ours["distance"] * (1 - 1e-9)
    assert ref["distance"] > 0 and ref["arc_length"] >= ref["distance"] * (1 - 1e-9)
    _finite(ours["seconds"], ref["seconds"], row["ratio"], ours["angle_degrees"], ref["angle_degrees"])
    assert 0 <= ref["budget_iterations"] <= ref["steps"]
    assert row["drift_ratio"] == pytest.approx(ref["max_dp"] / ours["max_dp"])
    page = (out / "continuation.md").read_text()
    assert "| tiny-bert-8 |" in page and "## SiMEC drift with the corrector" in page


@pytest.mark.slow
@pytest.mark.xdist_group("benchmarks")
def test_quick_drift_rows_cover_both_dtypes_and_step_lengths(continuation_quick: tuple) -> None:
    rows = continuation_quick[0]["drift"]
    cells = {(r["dtype"], r["fraction_of_reference_step"]) for r in rows}
    # quick: the reference's step only (the full run adds a quarter of it)
    assert cells == {(d, bench.DRIFT_STEP_FRACTIONS[0]) for d in ("float64", "float32")}
    for r in rows:
        assert r["steps"] == 20 and r["arc_length_per_step"] > 0
        _finite(r["max_dp"], r["max_dlogit"], r["corrections_mean"])
        # a fixed arc length per step: |x_K - x0| cannot exceed K h
        assert r["distance"] <= r["steps"] * r["arc_length_per_step"] * (1 + 1e-5)
        assert 0 <= r["unconverged"] <= r["steps"]


@pytest.mark.slow
@pytest.mark.xdist_group("benchmarks")
def test_quick_counterfactuals_reach_their_target_or_say_not(continuation_quick: tuple) -> None:
    blocks = {b["model"]: b for b in continuation_quick[0]["counterfactual"]}
    assert set(blocks) == {"mnist-vit"}  # quick: the digits (the full run adds the sentences)
    for block in blocks.values():
        targeted = block["ours"]["targeted"]
        assert len(targeted) == 4  # 2 inputs x (runner-up, least likely)
        for r in targeted:
            if r["reached"]:
                assert 0 <= r["iterations"] <= 20 and r["final_class"] == r["target"]
        rand = block["ours"]["random"]
        assert rand["inputs"] == 2 and 0 <= rand["flipped"] <= 2
        (ref,) = block["reference"]
        assert ref["steps"] == 3 and -1 <= ref["first_change"] <= 3 and ref["seconds_per_iteration"] > 0
    page = (continuation_quick[1] / "continuation.md").read_text()
    assert "### mnist-vit" in page


@pytest.mark.slow
@pytest.mark.xdist_group("benchmarks")
def test_render_rebuilds_the_page_from_the_json(continuation_quick: tuple, tmp_path: Path) -> None:
    out = continuation_quick[1]
    for name in ("walk", "drift", "counterfactual"):
        (tmp_path / f"continuation_{name}.json").write_text((out / f"continuation_{name}.json").read_text())
    bench.main(["render", "--out", str(tmp_path), "--workdir", str(tmp_path / "work")])
    page = (tmp_path / "continuation.md").read_text()
    assert page == (out / "continuation.md").read_text()
    assert "## Drift of an unbounded walk" in page and "distance/s" not in page
