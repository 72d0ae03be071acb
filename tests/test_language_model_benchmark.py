"""``benchmarks/language_model.py`` at its tiny size, so that it does not rot.

The checks are the benchmark's own claims at a size CI affords: every cell ran (or said why
not), the numbers are finite and positive, and the top eigenvalues of the two paths agree to
``EIG_RTOL`` = 1e-4 of the largest (both float32: the dense Gram matrix of k = V rows carries
~k eps lambda_max at worst, measured ~1e-6; LOBPCG converges to eps-level residuals, whose
eigenvalue error is second order).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from benchmarks import language_model as bench

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("benchmarks")]


def test_quick_run_writes_every_table(tmp_path: Path) -> None:
    # every subcommand at CI size: the memory sweep, the agreement and the time table (every cell a
    # process that compiles a GPT-2)
    results = bench.run(["all", "--quick", "--out", str(tmp_path)])
    assert (tmp_path / "language_model.md").is_file() and (tmp_path / "language_model.json").is_file()
    memory = results["memory"]
    assert [(r["shape"]["vocab_size"], r["method"]) for r in memory] == [(200, "dense"), (200, "matfree")]
    timed = [r for r in results.get("time", []) if r["kind"] == "iterate"]
    for row in memory + timed:
        assert "error" not in row, row
        assert row["status_ok"]
        assert math.isfinite(row["first_call_s"]) and row["first_call_s"] > 0, row
        # a difference of two timed calls (s and 2 s steps): noise may make it ~0 at this size, never NaN
        assert math.isfinite(row["seconds_per_iteration"]) and row["seconds_per_iteration"] >= 0, row
    assert results["agreement"]
    for row in results["agreement"]:
        assert row["ok"], row
    analysed = [r for r in results["time"] if r["kind"] == "analyse"]
    assert timed and analysed and all(r["temp_gb"] > 0 and r["jacobian_gb"] > 0 for r in analysed)
