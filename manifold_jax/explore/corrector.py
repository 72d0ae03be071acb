"""The corrector: minimum-norm Gauss-Newton back onto x0's level set, for the loop and for callers.

:class:`Newton` is the option and owns the mathematics: :meth:`Newton.correction` is the
one Gauss-Newton step, -(dphi J)^+ (phi(y) - level), used fused with the predictor by the
exploration step and alone by :func:`newton_correction`; :meth:`Newton.chords` repeats it
with a fixed (chord) Jacobian, one forward pass each.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import jax
import jax.numpy as jnp

from manifold_jax._callables import filter_jit
from manifold_jax._checks import check_count, check_option
from manifold_jax.explore.step_size import MEASURES, check_tolerance
from manifold_jax.geometry import (
    MODES,
    Mode,
    jacobian,
    measure_jacobian,
    measured_outputs,
    min_norm_solve,
    output_size,
    prepare_point,
)
from manifold_jax.selection import Select

CORRECTORS: tuple[str, ...] = ("newton",)


@dataclass(frozen=True)
class Newton:
    """Minimum-norm Gauss-Newton back onto x0's level set: x <- x - (dphi J)^+ (phi(y(x)) - phi(y0)).

    The iteration's own Jacobian gives one correction for free, fused with the predictor
    (it lies in the row space, the predictor in the null space). ``max_iters`` extra chord
    corrections with the same Jacobian follow the predictor, one forward pass each, until
    max |phi(y) - phi(y0)| <= ``tol``. In an active box every correction is the smallest
    change inside the box (coordinates at a bound move inward only when they must). A step
    left above ``tol`` is rejected by :class:`~manifold_jax.explore.options.Adaptive`; a
    :class:`~manifold_jax.explore.options.Fixed` step is retried at half the length up to 4
    times, then given up (the point stays, flagged UNCONVERGED, the coherent tangent
    dropped); other rules keep it, flagged UNCONVERGED.
    ``on`` is what is kept: "logits" (phi = identity), "probabilities" (phi = softmax),
    or "auto": probabilities for the softmax and Fisher-Rao output metrics, which cannot
    see a shift of all logits, logits otherwise.
    """

    tol: float = 1e-6
    max_iters: int = 3
    on: Literal["auto", "logits", "probabilities"] = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "tol", check_tolerance("Newton(tol)", self.tol))
        object.__setattr__(self, "max_iters", check_count("Newton(max_iters)", self.max_iters, minimum=0))
        check_option("Newton(on)", self.on, MEASURES)

    @staticmethod
    def solve(a: jax.Array, residual: jax.Array, m: int, d: int) -> jax.Array:
        """The least-norm correction -a^+ residual as tokens (m, d), for a = dphi J (k, m d)."""
        return -min_norm_solve(a, residual).reshape(m, d)

    @staticmethod
    def correction(y: jax.Array, jac: jax.Array, level: jax.Array, on: str) -> jax.Array:
        """The Gauss-Newton step -(dphi J)^+ (phi(y) - level), (m, d), for outputs y (k,) and J (k, m, d)."""
        k, m, d = jac.shape
        residual = measured_outputs(y, on) - level
        return Newton.solve(measure_jacobian(y, jac, on).reshape(k, m * d), residual, m, d)

    @staticmethod
    def chords(
        outputs_at: Callable[[jax.Array], jax.Array], correction_at: Callable[[jax.Array, jax.Array], jax.Array],
        start: jax.Array, level: jax.Array, tol: jax.Array, max_iters: int, token_valid: jax.Array,
        lo: jax.Array, hi: jax.Array,
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Chord corrections from the selected tokens ``start`` (m, d) until max |phi(y) - level| <= tol.

        ``outputs_at`` gives phi(y) at some tokens, ``correction_at`` the correction for a
        residual there. One forward pass each, at most ``max_iters``; returns the corrected
        tokens, the error at them and the corrections used.
        """
        Chord = tuple[jax.Array, jax.Array, jax.Array, jax.Array]

        def cond(c: Chord) -> jax.Array:
            return ~c[3]

        def body(c: Chord) -> Chord:
            sel, _, j, _ = c
            residual = outputs_at(sel) - level
            err = jnp.max(jnp.abs(residual))
            # stop when converged, out of corrections, or not finite (NaN compares False)
            done = ~(err > tol) | (j == max_iters)
            corrected = jnp.where(token_valid, jnp.clip(sel + correction_at(sel, residual), lo, hi), sel)
            return jnp.where(done, sel, corrected), err, j + jnp.where(done, 0, 1), done

        dtype = start.dtype
        moved, error, corrections, _ = jax.lax.while_loop(
            cond, body, (start, jnp.asarray(jnp.inf, dtype), jnp.zeros((), jnp.int32), jnp.zeros((), bool))
        )
        return moved, error, corrections


@filter_jit(static_argnames=("on", "mode"))
def _newton_at(
    f: Callable[..., jax.Array], x: jax.Array, anchor: jax.Array, args: tuple[Any, ...], index: jax.Array,
    valid: jax.Array, *, on: str, mode: str,
) -> jax.Array:
    y, jac = jacobian(f, x, args, index, valid, mode)
    step = Newton.correction(y, jac, measured_outputs(anchor, on), on)
    return x.at[index].add(step * valid[:, None].astype(x.dtype))


def newton_correction(
    f: Callable[..., jax.Array],
    x: Any,
    anchor: Any,
    *args: Any,
    select: Select = None,
    on: Literal["logits", "probabilities"] = "logits",
    mode: Mode = "auto",
) -> jax.Array:
    """One minimum-norm Gauss-Newton step from x (n, d) toward the level set phi(f(x)) = phi(anchor).

    x - (dphi J)^+ (phi(f(x)) - phi(anchor)), J on the selected tokens, phi the identity
    ("logits") or softmax ("probabilities"). Repeated, it converges quadratically for an
    underdetermined system (the residual roughly squares each time). A pure function.
    """
    xj, index, valid = prepare_point(x, select, "joint", None)
    k = output_size(f, xj, args)
    anchor_j = jnp.asarray(anchor, xj.dtype)
    if anchor_j.shape != (k,):
        raise ValueError(f"anchor must have f's output shape ({k},), got {tuple(anchor_j.shape)}")
    check_option("on", on, ("logits", "probabilities"))
    return _newton_at(f, xj, anchor_j, args, index, valid, on=on, mode=check_option("mode", mode, MODES))


__all__ = ["CORRECTORS", "Newton", "newton_correction"]
