"""Guides: what steers an item's direction beside the spectrum, as per-item pytrees with their tangent.

:class:`NoGuide` keeps the direction rule's per-block directions; :class:`Target` (SiMExp)
walks toward a class or an output vector along the minimum-norm change J^+ dy;
:class:`Goal` (SiMEC) walks toward an input inside x0's level set, along the part of
(goal - x) in the null space. A guide's arrays are leaves (batched and vmapped with the
item), its kind is its type (static in the compiled program).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from manifold_jax.explore.directions import blocks_of, project_off, tokens_of, unit
from manifold_jax.geometry import min_norm_solve, numerical_floor


class At(NamedTuple):
    """What a guide sees at the point, for one item with m selected tokens of d dimensions.

    y (k,) outputs; jac (k, m, d) their Jacobian on the selected tokens (None without one);
    current (m, d) the selected tokens, at positions token_index (m,); free (m, d) 1 where a
    coordinate may move, 0 where the active set froze it; eigenvectors (nb, p, D) and visible
    (nb, p) the spectrum on the free coordinates and its visible eigenpairs; block_valid (nb,)
    the blocks that exist.
    """

    y: jax.Array
    jac: jax.Array | None
    current: jax.Array
    token_index: jax.Array
    free: jax.Array
    eigenvectors: jax.Array
    visible: jax.Array
    block_valid: jax.Array
    blocks: str


Tangent = tuple[jax.Array, jax.Array, jax.Array, jax.Array]
"""A guide's answer: tangent (m, d), which blocks move (nb,), v^T g v per block (nb,), reach (): the
longest useful move (inf, or the distance left to a goal)."""


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class NoGuide:
    """No guide: the direction rule's per-block directions make the tangent."""

    name: ClassVar[str] = "none"

    @property
    def target_class(self) -> jax.Array:
        """The class a Flip event waits for: none (-1)."""
        return jnp.asarray(-1, jnp.int32)

    def tangent(self, at: At, dirs: jax.Array, ok: jax.Array, quad: jax.Array) -> Tangent:
        """The per-block unit directions dirs (nb, D) where a move exists (``ok``), as tokens."""
        m, d = at.current.shape
        return tokens_of(jnp.where(ok[:, None], dirs, 0.0), m, d), ok, quad, jnp.asarray(jnp.inf, at.current.dtype)

    def distance(self, x: jax.Array) -> jax.Array:
        """|x - goal|: NaN, there is no goal."""
        return jnp.full((), jnp.nan, x.dtype)


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class Target:
    """A target for SiMExp: class ``cls`` () (-1 when the target is an output vector) or ``output`` (k,) / (0,)."""

    name: ClassVar[str] = "target"
    cls: jax.Array
    output: jax.Array

    @property
    def target_class(self) -> jax.Array:
        """The class a Flip event waits for (-1 for an output target)."""
        return self.cls

    def change(self, y: jax.Array) -> jax.Array:
        """dy toward the target: e_c - p for a class (the logit gradient of log p_c), y* - y for an output."""
        if self.output.shape[0]:
            return self.output - y
        return jax.nn.one_hot(self.cls, y.shape[0], dtype=y.dtype) - jax.nn.softmax(y)

    def tangent(self, at: At, dirs: jax.Array, ok: jax.Array, quad: jax.Array) -> Tangent:
        """The unit minimum-norm change of the free coordinates toward the target, J^+ dy / |J^+ dy|."""
        assert at.jac is not None  # targets need the Jacobian (refused with matfree)
        k, m, d = at.jac.shape
        jac_f = (at.jac * at.free[None]).reshape(k, m * d)
        tangent, length = unit(min_norm_solve(jac_f, self.change(at.y)))
        moves = jnp.broadcast_to(length > 0, ok.shape) & at.block_valid
        return tangent.reshape(m, d), moves, jnp.zeros_like(quad), jnp.asarray(jnp.inf, at.current.dtype)

    def distance(self, x: jax.Array) -> jax.Array:
        """|x - goal|: NaN, there is no goal."""
        return jnp.full((), jnp.nan, x.dtype)


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class Goal:
    """A goal for SiMEC: an input ``point`` (n, d) to approach inside x0's level set."""

    name: ClassVar[str] = "goal"
    point: jax.Array

    @property
    def target_class(self) -> jax.Array:
        """The class a Flip event waits for: none (-1)."""
        return jnp.asarray(-1, jnp.int32)

    def tangent(self, at: At, dirs: jax.Array, ok: jax.Array, quad: jax.Array) -> Tangent:
        """The unit null-space part of (goal - x) on the free coordinates; its length is the reach."""
        m, d = at.current.shape
        dtype = at.current.dtype
        toward = blocks_of((self.point[at.token_index] - at.current) * at.free, at.blocks)
        along = jax.vmap(project_off)(jnp.where(at.visible[..., None], at.eigenvectors, 0.0), toward)
        tangent, reach = unit(tokens_of(along, m, d))
        reachable = reach > numerical_floor(dtype) * (1 + jnp.linalg.norm(toward))
        moves = jnp.broadcast_to(reachable, ok.shape) & at.block_valid
        return tangent, moves, jnp.zeros_like(quad), reach

    def distance(self, x: jax.Array) -> jax.Array:
        """|x - goal|."""
        return jnp.linalg.norm(x - self.point)

    def closest(self, closest: tuple[jax.Array, jax.Array, jax.Array], points: tuple[tuple[jax.Array, jax.Array], ...]
                ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """The closest approach so far, (distance, iteration, point), updated with (point, iteration) pairs."""
        best, when_best, x_best = closest
        for point, when in points:
            dist = jnp.linalg.norm(point - self.point)
            better = dist < best
            best = jnp.where(better, dist, best)
            when_best = jnp.where(better, when, when_best)
            x_best = jnp.where(better, point, x_best)
        return best, when_best, x_best


Guide = NoGuide | Target | Goal

__all__ = ["At", "Goal", "Guide", "NoGuide", "Target"]
