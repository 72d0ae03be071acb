"""Process measurements shared by both sides: resident memory and wall-clock timing."""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from typing import Any

import numpy as np


def rss_kib() -> int:
    """Current resident set size (KiB) from /proc/self/status (0 where unavailable)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def peak_kib() -> int:
    """Peak resident set size (KiB) since the process started or :func:`reset_peak`."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def reset_peak() -> bool:
    """Reset the kernel's peak-RSS counter (Linux >= 4.0, /proc/self/clear_refs = 5)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def timed(fn: Callable[[], Any]) -> float:
    """Seconds one call of ``fn`` takes."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median_time(fn: Callable[[], Any], repeats: int) -> float:
    """Median seconds of ``repeats`` calls of ``fn``."""
    return float(np.median([timed(fn) for _ in range(repeats)]))
