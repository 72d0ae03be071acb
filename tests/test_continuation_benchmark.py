"""The continuation benchmark's own measures, on inputs whose answers are known (the full
benchmark runs for tens of minutes: ``python benchmarks/continuation.py all``)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import continuation as bench


def test_token_angles_see_turns_and_not_scale() -> None:
    x0 = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    # token 0 turned by 90 degrees, token 1 only scaled (a LayerNorm on the embeddings cannot see it)
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
