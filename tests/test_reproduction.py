"""``benchmarks/reproduce_paper.py``: the table it writes from a tiny run, and that a rerun
keeps the hand-written reading of an earlier run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import reproduce_paper

ROOT = Path(__file__).resolve().parents[1]
RUNS = ("simec", "baseline_simec", "simexp", "baseline_simexp")


@pytest.mark.slow
def test_a_tiny_run_writes_one_row_per_run(tmp_path: Path) -> None:
    table = tmp_path / "REPRODUCTION.md"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "reproduce_paper.py"), "--out", str(tmp_path / "runs"),
           "--steps", "3", "--inputs", "2", "--etas", "1", "--data", "images", "--table", str(table)]
    done = subprocess.run(cmd, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    text = table.read_text()
    rows = [line.split("|")[1:-1] for line in text.splitlines() if line.startswith("| images")]
    assert [r[3].strip() for r in rows] == list(RUNS)
    simec = rows[0]  # three steps inside the equivalence class: no prediction changes, all inputs keep theirs
    assert float(simec[4]) == 0 and float(simec[7]) == 1, simec
    assert "## What differs from the paper's setting" in text


def test_a_rerun_keeps_the_hand_written_reading(tmp_path: Path) -> None:
    table = tmp_path / "REPRODUCTION.md"
    reproduce_paper.write_table(table, ["# first run", "| a |"])
    table.write_text(table.read_text() + "\n\n## Reading of the run\n\nSiMEC held every prediction.\n")
    text = reproduce_paper.write_table(table, ["# second run", "| b |"])
    assert text.startswith("# second run\n| b |\n## Reading of the run")
    assert text.count("## Reading of the run") == 1 and "| a |" not in text
    assert table.read_text() == text
    fresh = reproduce_paper.write_table(tmp_path / "new.md", ["# only"])
    assert fresh == "# only"
