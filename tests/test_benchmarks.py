"""The benchmark scripts at a tiny size, so that they do not rot.

``benchmarks/bench.py`` runs a 2-layer hidden-32 BERT at 8 tokens (3-step chunks) and a
tiny ViT at batch 2 through every table; the checks are on the shape of the output (the
expected rows, finite positive numbers) and on the issue's check of the baseline: with
the same weights and input, its first-iteration eigenvalues match ours.

Tolerance of that check (``bench.EIG_RTOL`` = 1e-4 of each token's largest eigenvalue):
both Jacobians are float32 (torch's by ``torch.func.jacrev``, ours by ``jax.jacrev``),
so their entries agree to ~1e-6 relative after a few layers of rounding; an eigenvalue
is a squared singular value, which doubles the relative error; our Gram eigh in float32
adds ~k eps lambda_max, the baseline's float64 eigh nothing. ~1e-5 at worst: a margin
of 10. (Measured on these models: ~1e-5 or below.)
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from benchmarks import bench

# one process runs the whole module, so the costly report (a session fixture) is built once
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("benchmarks")]


def _positive(row: dict[str, Any], *keys: str) -> None:
    for key in keys:
        value = row[key]
        assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, (key, value)


@pytest.fixture(scope="session")
def report(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> tuple[dict[str, Any], Path]:
    """The quick report, built once per test session: the first process to take the lock
    runs it; any other xdist worker waits for it (pytest-xdist may spread this module's
    tests over both workers)."""
    base = tmp_path_factory.getbasetemp()
    root = base if worker_id == "master" else base.parent  # the parent is shared by this session's workers
    out, ready = root / "bench-quick", root / "bench-quick.ready"
    try:
        (root / "bench-quick.lock").mkdir()
    except FileExistsError:
        deadline = time.monotonic() + 1800
        while not ready.exists():
            if time.monotonic() > deadline:
                pytest.fail("the quick benchmark report of another worker never finished")
            time.sleep(2)
    else:
        out.mkdir()
        try:
            bench.run(["all", "--quick", "--specs", "tiny-bert-8", "--threads", "1", "--out", str(out)])
        finally:
            ready.write_text("")  # also on failure: the waiting worker then fails on the missing report
    return json.loads((out / "report.json").read_text()), out


def test_speed_table_rows_and_numbers(report: tuple[dict[str, Any], Path]) -> None:
    results, out = report
    (row,) = results["speed"]
    assert row["spec"] == "tiny-bert-8" and row["tokens_explored"] == 8 and row["d"] == 32
    _positive(row, "ours_s", "ours_s_token", "ref_s", "ref_s_token", "speedup", "floor_s", "forward_s",
              "ours_over_floor", "ceiling", "first_call_s", "ref_jacobian_s", "ref_eigh_s", "ref_s_no_gc",
              "speedup_no_gc")
    assert row["speedup_no_gc"] == pytest.approx(row["ref_s_no_gc"] / row["ours_s"])
    assert row["samples_ours"] >= 2 and row["samples_ref"] >= 2
    assert row["finite"] and row["nonzero_status"] == 0
    assert row["ours_s"] == pytest.approx(row["ours_s_token"] * 8)
    assert row["speedup"] == pytest.approx(row["ref_s"] / row["ours_s"])
    # compile time is the first call minus a steady one: it exists and the first call is the slow one
    assert row["first_call_s"] > row["steady_call_s"]
    text = (out / "report.md").read_text()
    for heading in ("Time per iteration", "Against the floor", "Targets", "Peak memory", "Spectrum backends",
                    "float32 vs float64"):
        assert heading in text
    assert "| tiny-bert-8 |" in text


def test_baseline_first_iteration_eigenvalues_match_ours(report: tuple[dict[str, Any], Path]) -> None:
    (row,) = report[0]["speed"]
    assert row["eig_max_rel"] < bench.EIG_RTOL
    # the code step rule gives the same first step on both sides
    assert row["delta_max_rel"] < bench.EIG_RTOL
    # same weights and same input: the embeddings agree to float32 rounding
    assert row["x0_max_abs_diff"] < 1e-5


def test_default_path_holds_no_dxd_matrix_per_token(report: tuple[dict[str, Any], Path]) -> None:
    (row,) = report[0]["speed"]
    assert row["program_gram"]["per_token_dxd"] == []
    # the check sees one where there is one: the dense path forms (m, d, d)
    assert any("8, 32, 32]" in s for s in row["program_dense"]["per_token_dxd"])


def test_memory_table(report: tuple[dict[str, Any], Path]) -> None:
    (row,) = report[0]["memory"]
    assert row["spec"] == "tiny-bert-8"
    _positive(row, "ours_loaded_mib", "torch_loaded_mib", "ours_peak_mib", "torch_peak_mib", "ratio_peak")
    assert row["program"]["per_token_dxd"] == []


def test_spectrum_table_covers_every_backend(report: tuple[dict[str, Any], Path]) -> None:
    rows = report[0]["spectrum"]
    cells = {(r["d"], r["k"], r["method"]) for r in rows}
    assert cells == {(d, 3, m) for d in (8, 16) for m in ("dense", "gram", "svd", "matfree")}
    for r in rows:
        _positive(r, "seconds")
        # top eigenvalues agree with float64 to float32 accuracy (relative to lambda_max)
        assert r["err_vs_exact"] < 1e-5 and r["err_vs_dense"] < 1e-5, r


def test_precision_table(report: tuple[dict[str, Any], Path]) -> None:
    rows = {r["algorithm"]: r for r in report[0]["precision"]}
    assert set(rows) == {"simec", "simexp"}
    for r in rows.values():
        assert r["steps"] == 10
        assert r["x_diff_rel_scale"] < 1e-5 and r["y_diff_rel_scale"] < 1e-4, r
    # SiMExp moves the logits; float32 follows float64 to a small fraction of the move
    assert rows["simexp"]["y_diff_rel_moved"] < 1e-2
    # one float32 step from a float64 point: its error is a tiny fraction of the step
    for r in rows.values():
        assert r["one_step_rel_err"] < 1e-3, r
        assert math.isfinite(r["control_x_diff_rel_moved"])


def test_vit_speed_and_its_baseline_check(tmp_path: Path) -> None:
    results = bench.run(["speed", "--quick", "--specs", "tiny-vit-b2", "--threads", "1", "--out", str(tmp_path)])
    (row,) = results["speed"]
    assert row["batch"] == 2 and row["tokens_explored"] == 16
    _positive(row, "ours_s", "ref_s", "speedup", "floor_s", "ours_over_floor")
    assert row["eig_max_rel"] < bench.EIG_RTOL
    assert np.isfinite(row["compile_s"])


def test_render_rebuilds_the_page_from_the_json(report: tuple[dict[str, Any], Path], tmp_path: Path) -> None:
    _, out = report
    (tmp_path / "report.json").write_text((out / "report.json").read_text())
    bench.run(["render", "--out", str(tmp_path)])
    text = (tmp_path / "report.md").read_text()
    assert "| tiny-bert-8 |" in text and "baseline without gc.collect() s/it" in text


def test_help_names_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        bench.run(["--help"])
    text = capsys.readouterr().out
    for word in ("speed", "memory", "spectrum", "precision", "all", "render", "--quick", "--threads"):
        assert word in text
