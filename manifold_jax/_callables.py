"""Callables as pytrees: pass a model's weights to ``jit`` as arguments, not constants.

A function ``f`` handed to the engine may carry arrays: a bound method of a pytree model
(``model.head``), a ``jax.tree_util.Partial`` or any registered pytree with ``__call__``.
Its array leaves become traced arguments of the compiled code (so a 100M-parameter model
is not baked into the program), everything else is static and keys the compile cache.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np


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
