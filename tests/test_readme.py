"""The README's Python tour runs as written (at a tenth of its steps) and its comments hold."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def test_the_python_tour_runs_and_its_shape_comments_are_right() -> None:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    assert len(blocks) == 3, "the tour has a geometry block, an exploration block and a continuation block"
    code = "\n".join(blocks)
    # a tenth of the steps: the shapes below scale with them
    for full, small in (("steps=1000", "steps=100"), ("steps=500", "steps=50"), ("progress=True", "progress=False")):
        code = code.replace(full, small)
    namespace: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), namespace)
    ns = namespace
    assert ns["x0"].shape == (4, 50, 48)
    assert ns["spec"].eigenvalues.shape == (49, 10)
    assert np.all(np.diff(np.asarray(ns["spec"].eigenvalues), axis=-1) <= 0), "eigenvalues descend"
    assert ns["g"].shape == (1, 48, 48)
    stay, leave, full = ns["stay"], ns["leave"], ns["full"]
    assert stay.x.shape == (4, 11, 50, 48) and stay.y.shape == (4, 11, 10)
    assert full.x.shape == (4, 16, 50, 48)
    np.testing.assert_array_equal(full.iteration, np.arange(0, 151, 10))
    # SiMEC keeps every prediction along the way; SiMExp moves the logits further
    assert (stay.y.argmax(-1) == stay.y[:, :1].argmax(-1)).all()
    moved = lambda t: np.abs(t.y[:, -1] - t.y[:, 0]).max()  # noqa: E731
    assert moved(leave) > 10 * moved(stay)
    # the continuation block: the level set kept to its tolerance, the runner-up class reached
    far, cf, runner_up = ns["far"], ns["cf"], np.asarray(ns["runner_up"])
    # each accepted point passed the corrector's test at tol 1e-4; the record re-evaluates it with
    # the Jacobian's program, which differs by the float32 rounding of logits ~10 (~1e-6)
    assert far.drift.max() <= 1e-4 + 1e-5 and (far.distance[:, -1] > 1.0).all()
    assert (cf.stop_iteration >= 0).all()
    np.testing.assert_array_equal(cf.y[np.arange(4), cf.stop_iteration].argmax(-1), runner_up)


def test_the_performance_table_quotes_the_committed_benchmark_report() -> None:
    """README's speed-ups, floor ratios and speed-ups against the reference's Jacobian + eigh alone
    are those of benchmarks/results/report.json."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Performance", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "x |" in line]
    speed = json.loads((ROOT / "benchmarks" / "results" / "report.json").read_text())["speed"]
    order = ("minilm-16", "minilm-64", "minilm-128", "vit-mnist-b1", "vit-mnist-b16", "bert-base-128")
    assert len(rows) == len(order), rows
    by_spec = {r["spec"]: r for r in speed}
    for line, spec in zip(rows, order, strict=True):
        cells = [c.strip() for c in line.strip("|").split("|")]
        measured = by_spec[spec]
        assert float(cells[3].rstrip("x")) == round(measured["speedup"], 1), (spec, cells)
        assert float(cells[4]) == round(measured["ours_over_floor"], 2), (spec, cells)
        core = (measured["ref_jacobian_s"] + measured["ref_eigh_s"]) / measured["ours_s"]
        assert float(cells[5].rstrip("x")) == round(core, 1), (spec, cells)
