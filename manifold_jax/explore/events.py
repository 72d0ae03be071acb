"""Stop events: conditions on the point that freeze an item (any one of them stops it).

Each event owns its condition, ``holds(y, x, anchor, origin, target)``: outputs y (k,) at
the point x (n, d), x0's outputs ``anchor`` (k,) and x0 itself ``origin`` (n, d), the
target class (-1 without one). It is a traced bool.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from manifold_jax._checks import check_optional_count, check_real

STOP_EVENTS: tuple[str, ...] = ("flip",)


@dataclass(frozen=True)
class Flip:
    """Stop when the arg-max class differs from x0's (or, with a target, becomes the target)."""

    def holds(self, y: jax.Array, x: jax.Array, anchor: jax.Array, origin: jax.Array, target: jax.Array) -> jax.Array:
        """Whether the predicted class left x0's (no target, ``target`` -1) or reached ``target``."""
        now = jnp.argmax(y)
        return jnp.where(target >= 0, now == target, now != jnp.argmax(anchor))


@dataclass(frozen=True)
class ProbabilityLevel:
    """Stop when the probability of class ``cls`` (default: x0's class) crosses ``level``.

    ``below=True`` stops when it falls to ``level`` or under, ``False`` when it rises to it.
    """

    level: float
    cls: int | None = None
    below: bool = True

    def __post_init__(self) -> None:
        level = check_real("ProbabilityLevel(level)", self.level, low=0.0, high=1.0)
        object.__setattr__(self, "level", level)
        object.__setattr__(self, "cls", check_optional_count("ProbabilityLevel(cls)", self.cls, minimum=0))
        if not isinstance(self.below, bool):
            raise ValueError(f"ProbabilityLevel(below={self.below!r}) must be True or False")

    def holds(self, y: jax.Array, x: jax.Array, anchor: jax.Array, origin: jax.Array, target: jax.Array) -> jax.Array:
        """Whether p_cls(y) is at or past ``level`` on the side ``below`` names."""
        cls = jnp.argmax(anchor) if self.cls is None else self.cls
        p = jax.nn.softmax(y)[cls]
        return p <= self.level if self.below else p >= self.level


@dataclass(frozen=True)
class Distance:
    """Stop when the point lies at least ``max_distance`` from x0 (Euclidean, all coordinates)."""

    max_distance: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_distance", check_real("Distance(max_distance)", self.max_distance, positive=True))

    def holds(self, y: jax.Array, x: jax.Array, anchor: jax.Array, origin: jax.Array, target: jax.Array) -> jax.Array:
        """Whether |x - x0| >= ``max_distance``."""
        return jnp.linalg.norm(x - origin) >= self.max_distance


Event = Flip | ProbabilityLevel | Distance


def resolve_stop(stop: Any) -> tuple[Event, ...]:
    """Stop events from None, "flip", an event, or a sequence of them (any one stops the item)."""
    if stop is None:
        return ()
    items = stop if isinstance(stop, (tuple, list)) else (stop,)
    out: list[Event] = []
    for item in items:
        if isinstance(item, (Flip, ProbabilityLevel, Distance)):
            out.append(item)
        elif item == "flip":
            out.append(Flip())
        else:
            raise ValueError(
                f"stop={item!r} is not supported; expected 'flip', Flip(), ProbabilityLevel(level), "
                "Distance(max_distance) or a sequence of them"
            )
    return tuple(out)


def any_holds(events: tuple[Event, ...], y: jax.Array, x: jax.Array, anchor: jax.Array, origin: jax.Array,
              target: jax.Array) -> jax.Array:
    """Whether any of ``events`` holds at the point (a traced bool; False without events)."""
    hit = jnp.zeros((), bool)
    for event in events:
        hit = hit | event.holds(y, x, anchor, origin, target)
    return hit


__all__ = ["STOP_EVENTS", "Distance", "Event", "Flip", "ProbabilityLevel", "any_holds", "resolve_stop"]
