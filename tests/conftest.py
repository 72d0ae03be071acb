"""Shared test configuration: float64 on demand, reduced sizes for heavy checks."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")


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
