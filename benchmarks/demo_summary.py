"""The README's demo paragraph, written from a demo run's ``metrics.json``, and the check that holds it there.

    python benchmarks/demo_summary.py manifold-jax-demo            # print the paragraph
    python benchmarks/demo_summary.py manifold-jax-demo --write    # replace it in README.md

The paragraph states only what reproduces across machines: SiMEC's kept predictions, each
counterfactual's target (exact), its distance and certificate (measured: within a spread that
float rounding on another CPU stays inside). SiMExp's random walk is chaotic in floating point,
so its single-run figures stay in the reports. ``tests/test_demo.py`` runs the demo and compares.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- demo-summary: written by benchmarks/demo_summary.py -->", "<!-- /demo-summary -->"


@dataclass(frozen=True)
class Measured:
    """A number that may differ a little between machines: printed with ``digits`` decimals, compared within
    ``rel`` relative or ``abs_`` absolute."""

    value: float
    digits: int = 0
    rel: float = 0.1
    abs_: float = 2.0

    def text(self) -> str:
        return f"{self.value:.{self.digits}f}"

    def agrees(self, other: float) -> bool:
        return abs(other - self.value) <= max(self.rel * abs(self.value), self.abs_)


Part = str | Measured


def _metrics(demo: Path, study: str) -> dict[str, Any]:
    return json.loads((demo / study / "metrics.json").read_text())


def _names(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _joined(parts: list[list[Part]]) -> list[Part]:
    out: list[Part] = []
    for i, p in enumerate(parts):
        out += p
        if i < len(parts) - 2:
            out.append(", ")
        elif i == len(parts) - 2:
            out.append(" and ")
    return out


def _counterfactuals(metrics: dict[str, Any], what: str, unit: str) -> list[Part]:
    """Each input's closest counterfactual: its target (exact), the L2 distance and the KKT residual (measured)."""
    labels = metrics["spec"]["labels"]
    entries = metrics["inputs"]
    paths = [e["counterfactual"]["path"] for e in entries]
    certificates = [p["certificate"] for p in paths]
    reached = sum(bool(c["reached"]) for c in certificates)
    moves = [[f"{labels[e['simec']['original_class']]} as {labels[p['target']]} at {unit} ", Measured(c["distance"], 2,
              rel=0.1, abs_=0.05)] for e, p, c in zip(entries, paths, certificates, strict=True)]
    worst = max(c["kkt"] for c in certificates if c["kkt"] is not None)
    return [f"{reached} of {len(paths)} {what} reached their target class, the closest points found: ",
            *_joined(moves), ", with KKT residuals (0 at a closest point) of at most ",
            Measured(worst, 3, rel=0.5, abs_=0.01)]


def paragraph(demo: Path) -> list[Part]:
    """The paragraph as literal text and measured numbers, from the demo folder's two studies."""
    images, text = _metrics(demo, "images"), _metrics(demo, "text")
    entries = images["inputs"] + text["inputs"]
    kept = sum(e["simec"]["prediction_changes"] == 0 for e in entries)
    steps = images["spec"]["steps"]
    return [
        "In the demo's run (this paragraph is written from its `metrics.json` by `benchmarks/demo_summary.py`, "
        "and CI holds it to its own run of the demo), SiMEC kept the predicted class of ",
        f"{kept} of {len(entries)} inputs at every saved point of its {steps} iterations. ",
        "The counterfactual run (`mj.counterfactual`) looks for the closest input of each input's runner-up "
        "class: ",
        *_counterfactuals(images, "digits", "pixel L2"), "; ",
        *_counterfactuals(text, "sentences", "embedding L2"), ". ",
        "SiMExp's random walk is chaotic in floating point: which inputs it moves to another class and how far "
        "it moves their probabilities differ from machine to machine, so its single-run figures stay in the "
        "reports.",
    ]


def render(parts: list[Part]) -> str:
    return "".join(p if isinstance(p, str) else p.text() for p in parts)


def readme_paragraph(readme: str) -> str:
    """The paragraph between the README's markers."""
    if START not in readme or END not in readme:
        raise ValueError(f"README.md has no demo paragraph between {START!r} and {END!r}")
    return readme.split(START, 1)[1].split(END, 1)[0].strip()


def disagreements(written: str, fresh: list[Part]) -> list[str]:
    """How the README's paragraph differs from a run's: other words, or a number outside its spread."""
    pattern = "".join(re.escape(p) if isinstance(p, str) else r"(-?[0-9]+(?:\.[0-9]+)?)" for p in fresh)
    found = re.fullmatch(pattern, " ".join(written.split()), flags=re.S)
    if found is None:
        return [f"the README's paragraph:\n{written}\ndiffers in its words from this run's:\n{render(fresh)}"]
    measured = [p for p in fresh if isinstance(p, Measured)]
    return [f"the README says {said}, this run {m.text()} (allowed: within {m.rel:.0%} or {m.abs_:g})"
            for said, m in zip(found.groups(), measured, strict=True) if not m.agrees(float(said))]


def write_readme(text: str, readme: Path = ROOT / "README.md") -> None:
    source = readme.read_text()
    before, rest = source.split(START, 1)
    after = rest.split(END, 1)[1]
    from manifold_jax.atomic import write_text  # a killed run never leaves half a README

    write_text(readme, f"{before}{START}\n{text}\n{END}{after}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("demo", type=Path, help="the demo's output folder (manifold-jax-demo)")
    parser.add_argument("--write", action="store_true", help="replace the paragraph in README.md")
    args = parser.parse_args(argv)
    text = render(paragraph(args.demo))
    if args.write:
        write_readme(text)
    print(text)


if __name__ == "__main__":
    sys.exit(main())
