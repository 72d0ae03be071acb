"""The README's main job, exactly as a user runs it: ``manifold-jax demo`` at full size, from a new
working directory, into the default relative folder ``manifold-jax-demo``.

The installed console script runs in a subprocess (what the README's first command calls). The
run is checked for what the README says of it, and the README's demo paragraph is held to this
run's ``metrics.json`` (``benchmarks/demo_summary.py``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO_TIMEOUT = 40 * 60
"""Seconds: the demo takes about 7 minutes on a 2-core CPU; past this something hangs."""


def run_the_demo(user: Path) -> Path:
    """The demo's output folder after ``manifold-jax demo`` ran, unchanged, in the fresh directory ``user``."""
    script = Path(sys.executable).parent / "manifold-jax"
    assert script.is_file(), f"the console script is installed beside {sys.executable}"
    done = subprocess.run([str(script), "demo"], cwd=user, capture_output=True, text=True, timeout=DEMO_TIMEOUT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "demo written to manifold-jax-demo/" in done.stdout, done.stdout[-2000:]
    return user / "manifold-jax-demo"


def _metrics(demo: Path, study: str) -> dict:
    return json.loads((demo / study / "metrics.json").read_text())


def check_reports_and_simec(demo: Path, study: str) -> None:
    folder = demo / study
    for name in ("report.html", "report.md", "metrics.json", "spec.json", "manifest.json"):
        assert (folder / name).is_file(), name
    inputs = _metrics(demo, study)["inputs"]
    assert len(inputs) == 3
    for entry in inputs:
        simec = entry["simec"]
        assert simec["prediction_changes"] == 0, (study, entry["input"], simec["prediction_change_steps"])
        assert simec["final_class"] == simec["original_class"]
        assert "simexp" in entry and "counterfactual" in entry
    # exploration and importance figures; images: the counterfactual, text: the verified sentences
    assert len(list((folder / "figures").glob("*.png"))) == 9


def check_pixel_space(demo: Path) -> None:
    assert json.loads((demo / "images" / "spec.json").read_text())["space"] == "pixels"
    agreement = [e[a]["interpretation"]["prediction_agreement"] for e in _metrics(demo, "images")["inputs"]
                 for a in ("simec", "simexp", "counterfactual")]
    assert all(a == 1.0 for a in agreement), agreement


def check_verified_sentences(demo: Path) -> None:
    text = _metrics(demo, "text")
    assert all("verified_agreement" in e["simexp"]["projection"] for e in text["inputs"])
    assert "verified:" in (demo / "text" / "report.md").read_text()


def check_readme_paragraph(demo: Path) -> None:
    """The README's demo paragraph is what benchmarks/demo_summary.py writes from this run's metrics:
    the same words, and every number within the spread expected between machines."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import demo_summary
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    written = demo_summary.readme_paragraph((ROOT / "README.md").read_text())
    fresh = demo_summary.paragraph(demo)
    problems = demo_summary.disagreements(written, fresh)
    assert not problems, "\n".join(problems)


def test_the_readme_demo_as_a_user_runs_it(tmp_path: Path) -> None:
    """One test (one run of the demo, about 7 minutes): both reports, SiMEC's kept predictions, the
    pixel-space digits, the verified sentences, and the README's paragraph held to this run."""
    demo = run_the_demo(tmp_path)
    for study in ("images", "text"):
        check_reports_and_simec(demo, study)
    check_pixel_space(demo)
    check_verified_sentences(demo)
    check_readme_paragraph(demo)
