"""``benchmarks/reproduce_paper.py``: the table it writes from a tiny run, and that a rerun
keeps the hand-written reading of an earlier run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import reproduce_paper
from tests.documents import collapsed

ROOT = Path(__file__).resolve().parents[1]


def _section(text: str, heading: str) -> list[str]:
    """The lines of the section under ``heading``, up to the next heading."""
    return text.split(heading, 1)[1].split("\n## ", 1)[0].splitlines()


@pytest.mark.slow
def test_a_tiny_run_writes_the_side_by_side_tables(tmp_path: Path) -> None:
    """Three steps on two digits, all patches, eta 1 only: SiMEC and SiMExp in embedding space."""
    table = tmp_path / "REPRODUCTION.md"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "reproduce_paper.py"), "--out", str(tmp_path / "runs"),
           "--steps", "3", "--inputs", "2", "--etas", "1", "--selects", "all", "--data", "images", "--no-pixels",
           "--table", str(table)]
    done = subprocess.run(cmd, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    text = table.read_text()
    s1 = [line.split("|")[1:-1] for line in _section(text, "## Supplement Table 1") if line.startswith("| MNIST")]
    assert [(r[1].strip(), r[3].strip()) for r in s1] == [("simec", "all"), ("simexp", "all")]
    simec = s1[0]  # three steps inside the equivalence class: no prediction change; the paper's figure beside it
    assert simec[4].strip() == "0.000" and simec[5].strip() == "0.000 (0.000)", simec
    t6 = [line for line in _section(text, "## Supplement Table 6") if line.startswith("| MNIST")]
    assert len(t6) == 1 and "99.287" in t6[0] and float(t6[0].split("|")[4]) > 0
    assert "## What differs from the paper's setting" in text and "not run" in text  # eta 10 was skipped
    authors = [line.split("|")[1:-1] for line in _section(text, "## The authors' aggregated tables")
               if line.startswith("| MNIST")]
    assert [[c.strip() for c in r[:6]] for r in authors] == [  # three steps in the class: nothing to catch up
        ["MNIST", "simec", "1", "all", "0.0", "0.000"], ["MNIST", "simexp", "1", "all", "0.0", "0.000"]]
    assert authors[0][6].strip() == "0.097 (0.583)" and authors[0][8].strip() == "0.0006 (0.0001)"
    simec_change = float(authors[0][9].split()[0])  # three steps of a 1e-2-scale walk: a small pixel change
    assert 0 <= simec_change < 0.05, authors[0]


@pytest.mark.slow
def test_the_papers_shape_and_threshold_are_run_and_stated(tmp_path: Path) -> None:
    """The paper's own setting: a ViT of its 2x2 shape (here initialised, 0 epochs: the pipeline is
    under test, not the figures, so only the table's shape and its stated setting are checked) and
    the authors' absolute threshold; no pixel-space study (a 2x2 patch has 4 pixels for 10 classes)."""
    from manifold_jax.training import train_mnist_vit_paper

    vit = tmp_path / "vit-paper"
    train_mnist_vit_paper(epochs=0, n_test=10, save=vit, progress=False)
    table = tmp_path / "REPRODUCTION.md"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "reproduce_paper.py"), "--out", str(tmp_path / "runs"),
           "--steps", "2", "--inputs", "2", "--etas", "1", "--selects", "all", "--data", "images",
           "--image-model", str(vit), "--threshold", "reference", "--table", str(table)]
    done = subprocess.run(cmd, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    text = table.read_text()
    s1 = [line.split("|")[1:-1] for line in _section(text, "## Supplement Table 1") if line.startswith("| MNIST")]
    assert [(r[1].strip(), r[3].strip()) for r in s1] == [("simec", "all"), ("simexp", "all")]
    assert all(cell.strip().split(" ")[0].replace(".", "").isdigit() for r in s1 for cell in r[5:9:2]), s1
    assert f"--image-model {vit}" in text and "trained by `manifold-jax train mnist-vit-paper`" in text
    assert "the code's absolute 0.01, as the paper's runs" in text and "MNIST (pixels)" not in text
    assert "2 digits and sentences per configuration" in text

    bad = subprocess.run([*cmd[:-6], "--image-model", str(tmp_path)], env={**os.environ, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2
    assert "--image-model: expected mnist-vit, mnist-vit-paper or the directory of a 2x2-patch" in bad.stderr


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


def test_the_readme_quotes_the_paper_shape_run() -> None:
    """README and REPRODUCTION.md quote REPRODUCTION_PAPER.md's Table 1 (SiMExp, eta 10) and its rho_V."""
    text = (ROOT / "benchmarks" / "REPRODUCTION_PAPER.md").read_text()
    rows = {line.split("|")[1].strip(): line.split("|")[2:4] for line in _section(text, "## Table 1 (main text)")
            if line.startswith("| sim")}
    paper, ours = (float(cell.split()[0]) for cell in rows["simexp eta=10"])
    assert "--image-model mnist-vit-paper" in text and "--threshold reference" in text
    readme, summary = collapsed("README.md"), collapsed("benchmarks/REPRODUCTION.md")
    both = "against the paper's 20.1 in its supplement and 11.9 in its main text)"
    assert f"({ours:.1f} class-ranking changes per 1000 iterations at eta 10 {both}" in readme
    assert f"({ours:.1f} ranking changes per 1000 iterations at eta 10 {both}" in summary
    t6 = [line.split("|") for line in _section(text, "## Supplement Table 6") if line.startswith("| MNIST")]
    geometric = [float(r[5]) for r in t6]
    assert f"geometric mean {geometric[0]:.0f} and {geometric[1]:.0f} at eta 1 and 10" in summary
    assert paper == 11.91  # the main text's figure; 20.1 is the supplement's (PAPER_S1)
