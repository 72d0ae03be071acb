"""The bounded yardsticks (``benchmarks/yardsticks.py``): their measures on walks whose answers are
known, both subcommands run once at their ``--quick`` size (output checked for shape and sanity,
not speed), and the README and RESULTS held to the recorded runs."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks import yardsticks
from manifold_jax.report.text import markdown_text
from tests.documents import ROOT, collapsed

COMPARISONS = [
    ("ours", "equal iterations = equal wall time"),
    *[(f"reference eta {eta}", comparison) for eta in ("1", "10") for comparison in (
        "equal iterations", "equal wall time", "equal wall time, reference without gc.collect()")],
]
"""The rows of either yardstick's table, in order."""


def _finite(*values: Any) -> None:
    assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in values), values


def test_the_pixel_yardstick_takes_the_farthest_image_inside_the_budget() -> None:
    points = np.zeros((5, 2, 2))
    points[1, 0, 0] = 0.5 / 255  # below one grey level
    points[2] = [[0.3, 0.0], [0.4, 0.0]]  # L2 0.5, two pixels changed
    points[3] = [[0.1, 0.0], [0.0, 0.0]]
    points[4] = 1.0  # the farthest, but outside the budget
    probs = np.array([[0.5, 0.5]] * 5)
    probs[4] = [0.6, 0.4]
    out = yardsticks.within_budget(points, probs, np.arange(0, 50, 10), budget=1e-3)
    assert out == {"iterations": 40, "drift": pytest.approx(0.1), "budget_iterations": 30,
                   "max_l2": pytest.approx(0.5), "max_l2_iteration": 20, "pixels_changed": 2}
    # at equal wall time only the first iterations count
    early = yardsticks.within_budget(points, probs, np.arange(0, 50, 10), budget=1e-3, upto=10)
    assert early["iterations"] == 10 and early["pixels_changed"] == 0 and early["drift"] == 0.0


def _sentence_walk() -> dict[str, Any]:
    """Six saved points of one sentence's walk: the farthest (point 5) lies outside the budget."""
    probs = np.array([[0.8, 0.2]] * 6)
    probs[5] = [0.7, 0.3]
    # point 1's sentence keeps the class but not the probabilities; point 3's keeps both
    verified = np.array([[0.8, 0.2], [0.6, 0.4], [0.3, 0.7], [0.78, 0.22], [0.3, 0.7], [0.1, 0.9]])
    return {"iterations": [0, 10, 20, 30, 40, 50], "distance": [0.0, 1.0, 2.0, 4.0, 3.0, 9.0], "probs": probs,
            "texts": ["a b c", "a b d", "a x c", "a y c", "a x c", "z z z"], "changed": [0, 1, 1, 1, 1, 3],
            "verified": verified, "diagonal": 8.0}


def test_the_text_yardstick_decodes_the_farthest_point_inside_the_budget() -> None:
    out = yardsticks.sentence_within_budget(_sentence_walk(), budget=1e-3)
    # point 3 (distance 4) is the farthest of points 0..4; its sentence keeps class 0, 0.02 from the start
    assert out == {"iterations": 50, "drift": pytest.approx(0.1), "budget_iterations": 40,
                   "max_l2": 4.0, "relative_l2": 0.5, "max_l2_iteration": 30, "words_changed": 1,
                   "verified_same_class": True, "verified_drift": pytest.approx(0.02), "sentences": 3,
                   "sentences_same_class": 2, "sentences_close": 1, "kept_words": 1, "kept_drift": pytest.approx(0.02),
                   "text": "a y c",
                   "verified_class": 0, "kept_text": "a y c"}
    # "a x c" (points 2 and 4) counts once, as a sentence that leaves the class
    early = yardsticks.sentence_within_budget(_sentence_walk(), budget=1e-3, upto=20)
    assert early["max_l2_iteration"] == 20 and not early["verified_same_class"]
    assert (early["sentences"], early["sentences_same_class"], early["sentences_close"]) == (2, 1, 0)
    # no changed sentence is treated alike yet: the sentence itself, nothing changed
    assert (early["kept_words"], early["kept_text"], early["kept_drift"]) == (0, "a b c", 0.0)


def _recorded_yardsticks(stem: str) -> tuple[dict[str, Any], dict[tuple[str, str], dict[str, Any]]]:
    """benchmarks/results/``stem``.json and its rows by (walk, comparison); RESULTS.md must hold
    every row of the recorded page's tables."""
    result = json.loads((ROOT / f"benchmarks/results/{stem}.json").read_text())
    results = (ROOT / "benchmarks/RESULTS.md").read_text()
    page = (ROOT / f"benchmarks/results/{stem}.md").read_text().splitlines()
    missing = [line for line in page if line.startswith(("| ours", "| reference")) and line not in results]
    assert not missing, f"RESULTS.md lacks rows of {stem}.md: {missing[:2]}"
    return result, {(r["walk"], r["comparison"]): r for r in result["rows"]}


def test_the_readme_and_results_quote_the_yardstick_runs() -> None:
    """The yardstick figures of the README and RESULTS are those of benchmarks/results/yardsticks*.json."""
    readme = collapsed("README.md")
    equal = "equal iterations"
    pixels, rows = _recorded_yardsticks("yardsticks")
    ours, eta1, eta10 = rows[COMPARISONS[0]], rows[("reference eta 1", equal)], rows[("reference eta 10", equal)]
    assert (f"our walk reached images a median pixel L2 of {ours['max_l2']:.1f} from the digit, the reference's "
            f"{eta1['max_l2']:.2f} at eta = 1 and {eta10['max_l2']:.2f} at eta = 10") in readme
    ours_s = ours["seconds_per_iteration"]
    faster = sorted(pixels["torch"][f"eta {e}, gc on"] / ours_s for e in ("1", "10"))
    slower = sorted(ours_s / pixels["torch"][f"eta {e}, gc off"] for e in ("1", "10"))
    assert (f"Per iteration there, ours is {faster[0]:.1f}x to {faster[1]:.1f}x faster than the authors' loop as "
            f"written and {slower[0]:.1f}x to {slower[1]:.1f}x slower than it without") in readme
    text, rows = _recorded_yardsticks("yardsticks_text")
    ours, eta1, eta10 = rows[COMPARISONS[0]], rows[("reference eta 1", equal)], rows[("reference eta 10", equal)]
    assert (f"{len(text['ours']['texts'])} held-out sentences, {text['ours']['steps']} iterations, the same budget): "
            f"our walk went a median L2 of {ours['max_l2']:.0f} from x0 ({ours['relative_l2']:.2f} of the box's "
            f"diagonal over the explored words), the reference's {eta1['max_l2']:.2f} at eta = 1 and "
            f"{eta10['max_l2']:.2f} at eta = 10 ({max(eta1['relative_l2'], eta10['relative_l2']):.1g})") in readme
    assert eta1["sentences"] == eta10["sentences"] == 0  # "the reference's points are all the sentence itself"
    assert (f"ours passed through {ours['sentences']:.0f} distinct sentences (median), {ours['sentences_close']:.0f} "
            "of which the model gives the sentence's class") in readme
    assert f"word salad that the model scores {ours['verified_drift']:.2f} away from the sentence" in readme
    tolerance = re.escape(f"{yardsticks.VERIFIED_TOLERANCE:g}")
    (example,) = re.findall(rf'within {tolerance} \(such as "([^"]+)"\)', readme)
    assert example in [d["kept_text"].removesuffix(" .") for d in ours["per_item"]]


# ------------------------------------------------------------------ the quick runs


@pytest.mark.slow
def test_quick_yardsticks_table(tmp_path: Path) -> None:
    result = yardsticks.main(["pixels", "--quick", "--out", str(tmp_path), "--workdir", str(tmp_path / "work")])
    rows = result["rows"]
    assert [(r["walk"], r["comparison"]) for r in rows] == COMPARISONS
    budget = result["ours"]["budget"]
    ours = rows[0]
    # ours keeps every accepted point within tol = budget / 2 (float32 record rounding: ~1e-7)
    assert ours["max_drift"] <= budget / 2 + 1e-6 and ours["budget_iterations"] == ours["iterations"] == 10
    for r in rows:
        assert 0 <= r["pixels_changed"] <= 784 and r["max_l2"] >= 0
        assert 0 <= r["budget_iterations"] <= r["iterations"] <= 10
        _finite(r["seconds_per_iteration"], r["max_l2_per_second"], r["max_drift"])
    assert set(result["torch"]) == {f"eta {e}, gc {g}" for e in ("1", "10") for g in ("on", "off")}
    assert all(v > 0 for v in result["torch"].values())
    assert "| ours |" in (tmp_path / "yardsticks.md").read_text()


@pytest.mark.slow
def test_quick_text_yardsticks_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the paths a user would type: relative to where the command runs
    result = yardsticks.main(["text", "--quick", "--out", "out", "--workdir", "work"])
    rows, ours = result["rows"], result["ours"]
    assert [(r["walk"], r["comparison"]) for r in rows] == COMPARISONS
    (walk,) = ours["walks"]["ours"]["items"]
    words = ours["tokens"][0]
    # x0 decodes to the sentence itself, which the model then predicts as at x0 (the start of every walk)
    assert walk["changed"][0] == 0 and walk["iterations"][0] == 0
    np.testing.assert_allclose(walk["verified"][0], walk["probs"][0], rtol=0, atol=1e-5)
    budget = ours["budget"]
    assert rows[0]["max_drift"] <= budget / 2 + 1e-6 and rows[0]["budget_iterations"] == rows[0]["iterations"] == 6
    for r in rows:
        # x and x0 both lie in the box, so |x - x0| is at most its diagonal
        assert r["max_l2"] >= 0 and 0 <= r["relative_l2"] <= 1
        assert 0 <= r["words_changed"] <= words and 0 <= r["sentences_same_class"] <= r["sentences"]
        assert 0 <= r["sentences_close"] <= r["sentences_same_class"] and 0 <= r["kept_words"] <= words
        assert r["verified_same_class"] in (0, 1) and 0 <= r["budget_iterations"] <= r["iterations"] <= 6
        _finite(r["seconds_per_iteration"], r["max_l2_per_second"], r["max_drift"], r["verified_drift"])
    assert set(result["torch"]) == {f"eta {e}, gc {g}" for e in ("1", "10") for g in ("on", "off")}
    assert all(v > 0 for v in result["torch"].values())
    # the PyTorch twin that timed the reference computes our head (float32 through six layers)
    assert result["twin_max_abs_logit_diff"] <= 1e-4 * max(1.0, float(np.abs(ours["logits_x0"]).max()))
    page = (tmp_path / "out" / "yardsticks_text.md").read_text()
    assert markdown_text(ours["texts"][0]) in page and "| ours | equal iterations = equal wall time |" in page
    # every row of the sentence table keeps its six cells, whatever word pieces the walk decoded to
    sentence_rows = [line for line in page.splitlines() if line.startswith(f"| {markdown_text(ours['texts'][0])}")]
    assert len(sentence_rows) == 3 and all(len(re.split(r"(?<!\\)\|", line)) == 8 for line in sentence_rows)
