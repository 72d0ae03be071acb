"""Time per iteration and token, the paper's speed figure."""

from __future__ import annotations

import math


def time_per_iteration_per_token(total_seconds: float, iterations: int, tokens: int) -> float:
    """Seconds per iteration per explored token: total_seconds / (iterations * tokens).

    ``tokens`` counts explored tokens over the whole batch. The paper's cost unit
    (Table 7), which makes runs with different token counts and batches comparable.
    """
    ts = float(total_seconds)
    if not math.isfinite(ts) or ts < 0:
        raise ValueError(f"total_seconds: must be finite and >= 0, got {total_seconds}")
    if int(iterations) != iterations or iterations < 1:
        raise ValueError(f"iterations: must be a positive integer, got {iterations}")
    if int(tokens) != tokens or tokens < 1:
        raise ValueError(f"tokens: must be a positive integer, got {tokens}")
    return ts / (int(iterations) * int(tokens))
