"""Callables as pytrees: pass a model's weights to ``jit`` as arguments, not constants.

A function ``f`` handed to the engine may carry arrays: a bound method of a pytree model
(``model.head``), a ``jax.tree_util.Partial`` or any registered pytree with ``__call__``.
Its array leaves become traced arguments of the compiled code (so a 100M-parameter model
is not baked into the program), everything else is static and keys the compile cache.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from manifold_jax._xla import jit


@dataclass(frozen=True, eq=False)
class StaticPart:
    """The non-array part of a callable: its tree structure and its static leaves."""

    treedef: Any
    leaves: tuple[Any, ...]

    def _key(self) -> tuple[Any, ...]:
        return (self.treedef, tuple(_Ident(leaf) for leaf in self.leaves))

    def __hash__(self) -> int:
        return hash(self._key())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StaticPart) and self._key() == other._key()


class _Ident:
    """Compare by value where the leaf is hashable, by identity otherwise."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __hash__(self) -> int:
        try:
            return hash(self.value)
        except TypeError:
            return id(self.value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _Ident):
            return NotImplemented
        try:
            return bool(self.value == other.value) and type(self.value) is type(other.value)
        except Exception:
            return self.value is other.value


def _is_array(leaf: Any) -> bool:
    return isinstance(leaf, (jax.Array, np.ndarray))


def split_callable(f: Callable[..., Any]) -> tuple[list[Any], StaticPart]:
    """Split ``f`` into its array leaves (traced) and a hashable static part."""
    if not callable(f):
        raise TypeError(f"f must be callable, got {type(f).__name__}")
    if inspect.ismethod(f):
        f = jax.tree_util.Partial(f.__func__, f.__self__)
    leaves, treedef = jax.tree_util.tree_flatten(f)
    dynamic = [leaf if _is_array(leaf) else None for leaf in leaves]
    static = tuple(None if _is_array(leaf) else leaf for leaf in leaves)
    return dynamic, StaticPart(treedef, static)


def merge_callable(dynamic: list[Any], static: StaticPart) -> Callable[..., Any]:
    """Inverse of :func:`split_callable`, used inside traced code."""
    leaves = [d if s is None else s for d, s in zip(dynamic, static.leaves, strict=True)]
    return jax.tree_util.tree_unflatten(static.treedef, leaves)


class _FilterJitted:
    """``fun(f, *args, **kwargs)`` compiled with f split: its arrays traced, its code static."""

    def __init__(self, fun: Callable[..., Any], static_argnames: tuple[str, ...]) -> None:
        def merged(dynamic: list[Any], *args: Any, static: StaticPart, **kwargs: Any) -> Any:
            return fun(merge_callable(dynamic, static), *args, **kwargs)

        self._jitted = jit(merged, static_argnames=("static", *static_argnames))
        functools.update_wrapper(self, fun)

    def __call__(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        dynamic, static = split_callable(f)
        return self._jitted(dynamic, *args, static=static, **kwargs)

    def lower(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """The program for these arguments, ready to compile (``jax.jit(...).lower``)."""
        dynamic, static = split_callable(f)
        return self._jitted.lower(dynamic, *args, static=static, **kwargs)


def filter_jit(
    fun: Callable[..., Any] | None = None, *, static_argnames: tuple[str, ...] = ()
) -> Any:
    """``jit`` for functions whose first argument is a callable that may carry arrays (a model's head).

    The callable's array leaves become traced arguments and its code a static one (so the
    weights are not baked into the program and two heads of one model share it); the
    keyword arguments named in ``static_argnames`` are static too. Usable as
    ``@filter_jit`` or ``@filter_jit(static_argnames=(...))``.
    """
    if fun is None:
        return lambda g: _FilterJitted(g, tuple(static_argnames))
    return _FilterJitted(fun, tuple(static_argnames))
