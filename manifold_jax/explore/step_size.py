"""Step-size rules: how long a move is and whether the step is kept (an exploration's step controller).

:class:`Reference` and :class:`Paper` size each metric block's move from its spectrum (eta
is a multiplier); :class:`Fixed` and :class:`Adaptive` give the joint move an arc length h
(eta is a length). Each rule owns its initial size (``init``), the size of a block's move
(``block_size``) and what it makes of a step's error (``adapt``: the next h, whether the
step is accepted, whether it is left unconverged).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import jax
import jax.numpy as jnp

from manifold_jax._checks import check_option, check_real
from manifold_jax.geometry import numerical_floor

MEASURES: tuple[str, ...] = ("auto", "logits", "probabilities")

REFERENCE_EPS = 1e-6
"""The absolute constant in the reference code's step rule, delta = eta sqrt((min + 1e-6) / max)."""

GROWTH_SAFETY = 0.9
"""Safety factor of the error-based step-size update, h * 0.9 sqrt(tol / error)."""

MAX_HALVINGS = 4
"""Times an uncorrectable Fixed step is retried at half the length before it is given up."""

Attempt = tuple[jax.Array, jax.Array, jax.Array]
"""What a corrected step comes to: the selected tokens (m, d), its error, the corrections used."""


def check_tolerance(name: str, tol: Any) -> float:
    """A positive finite tolerance within float32's range, or a one-line error naming ``name``."""
    try:
        return check_real(name, tol, positive=True)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={tol!r}: the tolerance must be a positive finite number within float32's range "
                         "(at most 3.4e38)") from None


class _Rule:
    """What every rule shares: h starts at eta, a block's size is the reference one, every step is kept."""

    arc_length: ClassVar[bool] = False
    """Whether eta is the length of the joint move (True) or a multiplier of per-block sizes."""

    def init(self, h: jax.Array, eta: float) -> jax.Array:
        """The step size to take now: the state's h, or eta before the first step (h is NaN)."""
        return jnp.where(jnp.isnan(h), jnp.asarray(eta, h.dtype), h)

    def block_size(self, eta: float, lam: jax.Array, nonnull: jax.Array, full: bool) -> jax.Array:
        """The reference code's delta = eta sqrt((lambda_min + 1e-6) / lambda_max) for one block.

        lam (p,) descending eigenvalues, nonnull (p,) the visible ones, ``full`` whether the
        spectrum is complete (p == D; otherwise lambda_min is 0, the null space being unseen).
        """
        dtype = lam.dtype
        lam_max = jnp.maximum(lam[0], 0.0)
        safe_max = jnp.where(lam_max > 0, lam_max, 1.0)
        numerically_zero = lam <= numerical_floor(dtype) * lam_max
        lam_min = jnp.min(jnp.where(numerically_zero, 0.0, jnp.abs(lam)))
        lam_min = lam_min if full else jnp.zeros((), dtype)
        return eta * jnp.sqrt((lam_min + REFERENCE_EPS) / safe_max)

    def adapt(self, h: jax.Array, error: jax.Array, tol: jax.Array, corrections: jax.Array,
              eta: float, by_corrections: bool) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(next h, accepted, unconverged) after a step of error ``error``: kept, flagged above ``tol``."""
        return h, jnp.ones((), bool), ~(error <= tol)


@dataclass(frozen=True)
class Reference(_Rule):
    """The authors' code: delta = eta sqrt((lambda_min + 1e-6) / lambda_max) per block (about eta 1e-3 /
    sqrt(lambda_max) on real models). Named ``"reference"``."""

    name: ClassVar[str] = "reference"


@dataclass(frozen=True)
class Paper(_Rule):
    """The paper: delta = eta sqrt(lambda_min_nonnull / lambda_max) per block. Named ``"paper"``."""

    name: ClassVar[str] = "paper"

    def block_size(self, eta: float, lam: jax.Array, nonnull: jax.Array, full: bool) -> jax.Array:
        """eta sqrt(smallest visible eigenvalue / largest) for one block (0 when none is visible)."""
        lam_max = jnp.maximum(lam[0], 0.0)
        safe_max = jnp.where(lam_max > 0, lam_max, 1.0)
        lam_min = jnp.min(jnp.where(nonnull, lam, jnp.inf))
        return eta * jnp.sqrt(jnp.where(nonnull.any(), lam_min, 0.0) / safe_max)


@dataclass(frozen=True)
class Fixed(_Rule):
    """Every move has arc length eta: the norm of the step over all explored coordinates.

    With a corrector, a step it cannot bring back to the tolerance is retried at eta / 2,
    ..., eta / 16, then given up in place (see :class:`~manifold_jax.explore.options.Newton`).
    """

    arc_length: ClassVar[bool] = True

    @staticmethod
    def retry(attempt: Callable[[jax.Array], Attempt], first: Attempt, tol: jax.Array) -> tuple[jax.Array, ...]:
        """A step whose error stays above ``tol`` tried again with its move halved, MAX_HALVINGS times at most.

        ``attempt`` maps the move's scale to (tokens, error, corrections), ``first`` is the
        attempt at scale 1; returns those of the last attempt and its scale.
        """
        Retry = tuple[jax.Array, jax.Array, jax.Array, jax.Array]

        def cond(c: Retry) -> jax.Array:
            return ~(c[1] <= tol) & (c[3] > 0.5**MAX_HALVINGS)

        def body(c: Retry) -> Retry:
            scale = c[3] * 0.5
            return (*attempt(scale), scale)

        moved, error, corrections = first
        return jax.lax.while_loop(cond, body, (moved, error, corrections, jnp.ones((), error.dtype)))


@dataclass(frozen=True)
class Adaptive(_Rule):
    """Accept a step when its error is at most ``tol``, else reject it and retry with h * shrink.

    The error of a SiMEC step is max |phi(y) - phi(y0)| after the corrector (how far the
    accepted point's outputs lie from f(x0)); of a SiMExp step, the error of the linear
    model, max |phi(y(x + dx)) - phi(y(x)) - dphi J dx|. An accepted step that needed at
    most one corrector iteration grows h by ``grow`` (up to ``max_step``); a rejection at
    ``min_step`` is flagged UNCONVERGED and the point stays. Bounds default to eta / 1000
    and 1000 eta. ``on``: what phi measures, as :class:`~manifold_jax.explore.options.Newton`'s
    (a corrector's own ``on`` wins): "probabilities" suits a walk toward a class, whose
    logits may move far.
    """

    arc_length: ClassVar[bool] = True

    tol: float = 1e-6
    grow: float = 1.5
    shrink: float = 0.5
    min_step: float | None = None
    max_step: float | None = None
    on: Literal["auto", "logits", "probabilities"] = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "tol", check_tolerance("Adaptive(tol)", self.tol))
        grow = check_real("Adaptive(grow)", self.grow, low=1.0)
        shrink = check_real("Adaptive(shrink)", self.shrink, low=0.0, high=1.0, open_low=True)
        if shrink == 1.0:
            raise ValueError("Adaptive(shrink=1.0): a rejected step must shrink, shrink must lie in (0, 1)")
        object.__setattr__(self, "grow", grow)
        object.__setattr__(self, "shrink", shrink)
        for name in ("min_step", "max_step"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, check_real(f"Adaptive({name})", value, positive=True))
        check_option("Adaptive(on)", self.on, MEASURES)
        if self.min_step is not None and self.max_step is not None and self.min_step > self.max_step:
            raise ValueError(
                f"Adaptive(min_step={self.min_step}, max_step={self.max_step}): no admissible step size, "
                "min_step exceeds max_step"
            )

    def limits(self, eta: float) -> tuple[float, float]:
        """(smallest, largest) step size for an initial step eta; refuses eta outside them."""
        lo = self.min_step if self.min_step is not None else eta * 1e-3
        hi = self.max_step if self.max_step is not None else eta * 1e3
        if lo > hi or not lo <= eta <= hi:
            raise ValueError(
                f"adaptive step: eta={eta} lies outside [min_step, max_step] = [{lo}, {hi}]: no admissible "
                "initial step size"
            )
        return lo, hi

    def adapt(self, h: jax.Array, error: jax.Array, tol: jax.Array, corrections: jax.Array,
              eta: float, by_corrections: bool) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Accept at error <= tol and grow h, else shrink it; unconverged when rejected at the smallest h.

        ``by_corrections``: grow by ``grow`` when at most one corrector iteration was needed
        (SiMEC with a corrector), else by the error, h * 0.9 sqrt(tol / error), within
        [shrink, grow].
        """
        dtype = h.dtype
        h_min, h_max = self.limits(eta)
        accepted = error <= tol
        if by_corrections:
            grown = jnp.where(corrections <= 1, h * self.grow, h)
        else:
            factor = GROWTH_SAFETY * jnp.sqrt(tol / jnp.maximum(error, numerical_floor(dtype) * tol))
            grown = h * jnp.clip(factor, self.shrink, self.grow)
        at_min = h <= h_min * (1 + 1e-6)
        h_next = jnp.clip(jnp.where(accepted, grown, h * self.shrink), h_min, h_max).astype(dtype)
        return h_next, accepted, ~accepted & at_min


StepRule = Literal["reference", "paper"] | Fixed | Adaptive
"""What ExploreConfig.step_rule holds: a per-block rule by its name, or an arc-length rule object."""

STEP_RULES: tuple[str, ...] = ("reference", "paper", "fixed", "adaptive")


def rule_object(step_rule: StepRule) -> Reference | Paper | Fixed | Adaptive:
    """The rule object behind a configured step rule (its name for the per-block rules)."""
    if step_rule == "paper":
        return Paper()
    if step_rule == "reference":
        return Reference()
    assert isinstance(step_rule, (Fixed, Adaptive))
    return step_rule


__all__ = [
    "GROWTH_SAFETY", "MAX_HALVINGS", "REFERENCE_EPS", "STEP_RULES", "Adaptive", "Fixed", "Paper", "Reference",
    "StepRule", "check_tolerance", "rule_object",
]
