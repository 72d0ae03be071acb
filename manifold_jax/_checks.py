"""Argument checks shared by the public entry points: one-line errors that name the argument."""

from __future__ import annotations

import math
import numbers
import os
import sys
import warnings
from collections.abc import Iterable
from types import FrameType
from typing import Any

import jax
import numpy as np


def check_option(name: str, value: Any, allowed: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``allowed``, else raise naming ``name`` and the choices."""
    allowed = tuple(allowed)
    if not isinstance(value, str) or value not in allowed:
        choices = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"{name}={value!r} is not supported; expected one of {choices}")
    return value


def is_concrete(value: Any) -> bool:
    """False for values traced by ``jit``/``vmap``/``grad``: checks that need values skip them."""
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(value))


def check_finite(name: str, value: Any) -> None:
    """Raise if the array ``value`` holds NaN or infinity, saying where the first one is.

    Traced values (inside the caller's ``jit``, ``vmap`` or ``grad``) are not checked.
    """
    if not is_concrete(value):
        return
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


def check_float_array(name: str, value: Any, ndims: Iterable[int]) -> Any:
    """Check that ``value`` is a real array with one of the allowed ranks, from its shape and dtype only.

    Returns a numpy array for concrete inputs and the JAX array itself for traced ones, so
    the public functions work inside the caller's transformations.
    """
    ndims = tuple(ndims)
    if isinstance(value, jax.Array):
        arr: Any = value
    else:
        try:
            arr = np.asarray(value)
        except Exception as exc:  # pragma: no cover - exotic inputs
            raise TypeError(f"{name} must be an array, got {type(value).__name__}") from exc
    dtype = np.dtype(arr.dtype) if not jax.dtypes.issubdtype(arr.dtype, jax.dtypes.prng_key) else None
    if dtype is None or dtype.kind == "O" or not (
        np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)
    ):
        raise TypeError(f"{name} must be a real floating-point array, got dtype {arr.dtype}")
    if arr.ndim not in ndims:
        shapes = " or ".join(f"{d}-D" for d in ndims)
        raise ValueError(f"{name} must be {shapes}, got shape {tuple(arr.shape)}")
    return arr


def check_real(name: str, value: Any, *, positive: bool = False, low: float | None = None,
               high: float | None = None, open_low: bool = False) -> float:
    """``value`` as a float: any finite real number (numpy scalars and 0-d numpy or JAX arrays
    included), never a bool, and within float32's range (the engine computes in float32 or wider).

    ``positive`` requires > 0; ``low``/``high`` bound it (``open_low`` excludes ``low``).
    """
    value = _scalar(value)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"{name} must be a {'positive ' if positive else ''}finite number, got {value!r}")
    if abs(out) > FLOAT32_MAX:
        raise ValueError(f"{name} must lie within float32's range (|{name}| <= {FLOAT32_MAX:.4g}), got {value!r}")
    if positive and out <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    if low is not None and (out < low or (open_low and out == low)):
        raise ValueError(f"{name} must be {'>' if open_low else '>='} {low}, got {value!r}")
    if high is not None and out > high:
        raise ValueError(f"{name} must be <= {high}, got {value!r}")
    return out


FLOAT32_MAX = float(np.finfo(np.float32).max)
"""The largest option value the engine takes: it computes in float32 or wider."""


def _scalar(value: Any) -> Any:
    """A 0-d numpy or JAX array of a real dtype as its Python number; anything else unchanged."""
    if isinstance(value, (np.ndarray, jax.Array)) and value.ndim == 0 and is_concrete(value):
        dtype = np.dtype(value.dtype) if not jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key) else None
        if dtype is not None and dtype.kind in "fiu":
            return np.asarray(value).item()
        if dtype is not None and dtype.kind == "b":
            return bool(value)
    return value


def _count(name: str, value: Any, minimum: int, optional: bool) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or int(value) < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {what}{' or None' if optional else ''}, got {value!r}")
    return int(value)


def check_count(name: str, value: Any, *, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum`` (numpy integers included, bools refused)."""
    return _count(name, value, minimum, optional=False)


def check_optional_count(name: str, value: Any, *, minimum: int = 1) -> int | None:
    """None, or ``value`` as an int >= ``minimum`` (as :func:`check_count`)."""
    return None if value is None else _count(name, value, minimum, optional=True)


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def warn_user(message: str, category: type[Warning] = UserWarning) -> None:
    """Warn with the location of the first caller outside manifold_jax (where the user can act)."""
    level = 1
    frame: FrameType | None = sys._getframe(1)
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE_DIR):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)
