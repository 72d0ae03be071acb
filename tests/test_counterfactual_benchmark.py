"""The counterfactual benchmark at a quick size (1 digit, 2 pairs): every method runs on the same
pairs and its figures are sane (the full run: ``python benchmarks/counterfactual.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("foolbox")

from benchmarks import counterfactual as bench
from tests.documents import collapsed


@pytest.mark.slow
def test_quick_benchmark_rows_are_complete_and_sane(tmp_path: Path) -> None:
    rows = bench.main(["--quick", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "counterfactual.json").read_text())
    assert saved["digits"] == 1 and [r["pairs"] for r in saved["rows"]] == [2] * len(bench.METHODS)
    assert [r["method"] for r in rows] == list(bench.METHODS)
    for r in rows:
        assert r["pairs"] == 2 and 0 <= r["reached"] <= 1
        assert r["s_per_pair_batched"] > 0 and r["s_per_pair_single"] > 0
        if r["reached"] > 0:
            assert 0 < r["l2_q1"] <= r["l2_median"] <= r["l2_q3"] < 28  # at most the image's diagonal
    ours, walk = rows[0], rows[-1]
    # on 2 pairs some slides stop above tol (a fast-curving boundary), so only what a sample this
    # small shows for sure: a certificate below the attacks' ~0.8-1, and nearer than the old walk
    assert ours["reached"] == 1.0 and ours["kkt_median"] < 0.7
    assert ours["l2_median"] < walk["l2_median"]
    text = bench.markdown(rows, 1)
    assert text.count("\n| ") == len(rows) + 1 and "2 pairs" in text


def test_pairs_are_the_runner_up_and_a_different_random_class() -> None:
    from manifold_jax.models import load

    model = load("mnist-vit").pixel_space()
    x0, _, target, source = bench.pairs(model, 3)
    assert x0.shape[0] == 6 and np.all(target != source)
    assert np.all(target[:3] != target[3:])  # the random class is never the runner-up


ROOT = Path(__file__).resolve().parents[1]


def _recorded(name: str) -> tuple[dict[str, dict], str, int]:
    """The rows of benchmarks/results/``name``.json by method, the README with its whitespace
    collapsed and the number of pairs ours reached; RESULTS must hold ours' table row and the README
    its batched seconds per pair."""
    rows = {r["method"]: r for r in json.loads((ROOT / f"benchmarks/results/{name}.json").read_text())["rows"]}
    readme, results = collapsed("README.md"), collapsed("benchmarks/RESULTS.md")
    ours = rows["ours"]
    reached = round(ours["reached"] * ours["pairs"])
    row = (f"| ours (`mj.counterfactual`) | **{ours['reached']:.0%} ({reached} / {ours['pairs']})** | "
           f"**{ours['l2_median']:.3f}** [{ours['l2_q1']:.3f}, {ours['l2_q3']:.3f}]")
    assert row.replace("100%", "100 %") in results
    assert f"{ours['s_per_pair_batched']:.2f} s per pair batched" in readme
    return rows, readme, reached


def test_the_readme_and_results_quote_the_recorded_run() -> None:
    """The counterfactual figures of the README and RESULTS are those of benchmarks/results/counterfactual.json."""
    rows, readme, reached = _recorded("counterfactual")
    ours, fmn, deepfool = rows["ours"], rows["fmn"], rows["deepfool"]
    assert f"ours reached {reached} of {ours['pairs']}, median L2 **{ours['l2_median']:.3f}**" in readme
    assert f"FMN (L2, targeted) {fmn['l2_median']:.3f}" in readme and f"DeepFool {deepfool['l2_median']:.3f}" in readme


@pytest.mark.slow
def test_the_sentence_run_keeps_the_fixed_tokens_and_stays_in_the_box(full_size: bool) -> None:
    """One held-out sentence (2 pairs) in embedding space: the methods move only the words'
    embeddings and stay in the theoretical box, and ours reaches both targets with a certificate.
    With --full only (about a minute: two more programs of the sentence model to compile; the
    recorded run in benchmarks/results/counterfactual_text.json is the same code at full size)."""
    if not full_size:
        pytest.skip("the sentence counterfactual benchmark at one sentence: with --full")
    whole = bench.task("minilm-topics", 1)
    assert whole.x0.shape[0] == 2 and not whole.tokens.all()  # [CLS] and [SEP] are fixed
    fixed = ~whole.tokens
    runners = {"ours": bench.run_ours, "deepfool": bench.run_deepfool, "fmn": bench.run_fmn}
    found = {name: runner(whole) for name, runner in runners.items()}
    for name, x in found.items():
        np.testing.assert_array_equal(x[fixed], whole.x0[fixed], err_msg=name)
        if name != "fmn":  # FMN's point is clipped to the per-coordinate box by measure
            assert np.all(x >= whole.lo) and np.all(x <= whole.hi), name
    m = bench.measure(whole, found["ours"])
    assert m["reached"].all() and np.all(m["distance"] > 0) and np.median(m["kkt"]) < 0.7


def test_the_readme_and_results_quote_the_recorded_sentence_run() -> None:
    """The sentence figures of the README and RESULTS are those of benchmarks/results/counterfactual_text.json."""
    assert json.loads((ROOT / "benchmarks/results/counterfactual_text.json").read_text())["model"] == "minilm-topics"
    rows, readme, reached = _recorded("counterfactual_text")
    ours, fmn, deepfool = rows["ours"], rows["fmn"], rows["deepfool"]
    assert (f"ours reached {reached} of {ours['pairs']}, median embedding L2 **{ours['l2_median']:.3f}** against "
            f"FMN {fmn['l2_median']:.3f} and DeepFool {deepfool['l2_median']:.3f}") in readme
