"""Shared test configuration: float64 on demand, reduced sizes for heavy checks."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
# one compilation cache on disk for the whole run, shared by both workers and every process a test
# starts (the CLI, the demo, the benchmarks' workers, the notebooks): they compile the same programs
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:  # set once by the controller; its workers inherit it
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="manifold-jax-test-cache-")
# every program, not only those compiling for over a second (JAX's default): the tests compile thousands
# of small ones, again after each module frees its own (below) and again in every process they start;
# reading one back is cheaper than compiling it (measured: 8 % off a third of the suite's time)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")


HEAVIEST_FIRST = (
    "test_demo.py", "test_continuation_benchmark.py", "test_reliability.py", "test_distributed.py",
    "test_study.py", "test_explore.py", "test_continuation.py", "test_readme_cli.py", "test_notebooks.py",
    "test_benchmarks.py", "test_counterfactual_benchmark.py", "test_counterfactual.py",
    "test_language_model_benchmark.py", "test_yardsticks.py",
)
"""The modules that take longest (``--durations``), longest first: started first, the two workers end
together (pytest-xdist otherwise starts the modules with the most tests first, and the one-test demo,
the longest of all, would start last and run alone)."""


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config.option, "loadscopereorder"):  # pytest-xdist: keep the order set below
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Longest modules first (a stable sort: the others keep their order)."""
    rank = {name: i for i, name in enumerate(HEAVIEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--full",
        action="store_true",
        default=False,
        help="run the heavy (slow-marked) checks at their full size instead of the CI size",
    )


@pytest.fixture(scope="session")
def full_size(request: pytest.FixtureRequest) -> bool:
    """True when the heavy checks should run at full size (``pytest --full``)."""
    return bool(request.config.getoption("--full"))


@pytest.fixture(autouse=True, scope="module")
def _compiled_programs_freed() -> Iterator[None]:
    """Each test module's compiled programs freed after it: a worker runs many modules, and its memory
    would otherwise hold every program compiled since it started."""
    yield
    import jax

    jax.clear_caches()


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh temporary working directory, made the current one: CLI tests name their studies with
    relative paths inside it, as a user does (``--out runs/x``), never with absolute temporary paths."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
