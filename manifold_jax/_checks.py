"""Argument checks shared by the public entry points: one-line errors that name the argument."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np


def check_option(name: str, value: Any, allowed: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``allowed``, else raise naming ``name`` and the choices."""
    allowed = tuple(allowed)
    if not isinstance(value, str) or value not in allowed:
        choices = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"{name}={value!r} is not supported; expected one of {choices}")
    return value


def check_finite(name: str, value: Any) -> None:
    """Raise if the array ``value`` holds NaN or infinity, saying where the first one is."""
    arr = np.asarray(value)
    if not np.issubdtype(arr.dtype, np.inexact):
        return
    bad = ~np.isfinite(arr)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{name} must be finite, but holds {int(bad.sum())} NaN/inf value(s) "
            f"(first at index {where})"
        )


def check_float_array(name: str, value: Any, ndims: Iterable[int]) -> np.ndarray:
    """Check that ``value`` is a floating array with one of the allowed ranks; return it as numpy."""
    ndims = tuple(ndims)
    try:
        arr = np.asarray(value)
    except Exception as exc:  # pragma: no cover - exotic inputs
        raise TypeError(f"{name} must be an array, got {type(value).__name__}") from exc
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise TypeError(f"{name} must be a real floating-point array, got dtype {arr.dtype}")
    if arr.ndim not in ndims:
        shapes = " or ".join(f"{d}-D" for d in ndims)
        raise ValueError(f"{name} must be {shapes}, got shape {arr.shape}")
    return arr
