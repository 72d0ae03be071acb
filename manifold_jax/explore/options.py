"""What an exploration is asked to do: small frozen option objects and the config they compose.

An exploration integrates x' = h v(x) from x0, and its options split as an ODE solver's do
(diffrax's solver / step-size controller / SaveAt / events):

* the **threshold** that calls an eigenvalue null (:class:`Relative`, :class:`Absolute`);
* the **direction rule** v: ``"random"`` (the reference: a random null direction for SiMEC,
  a random visible eigenvector for SiMExp) or :class:`Coherent` (the previous tangent
  transported onto the new subspace); a ``target`` (SiMExp) or ``goal`` (SiMEC) given to
  :func:`~manifold_jax.explore.explore` guides it instead;
* the **step rule** h: ``"reference"`` and ``"paper"`` (:class:`Reference`, :class:`Paper`:
  per-block step sizes from the spectrum), :class:`Fixed` (eta is the arc length of every move) or :class:`Adaptive`
  (accept or reject each step on its error, grow or shrink h);
* the **corrector** (SiMEC only): :class:`Newton`, minimum-norm Gauss-Newton back onto x0's
  level set;
* the **box policy**: ``"clip"`` (the reference) or ``"active"`` (coordinates at a bound
  that a move would push outward are frozen, and the correction stays in the box);
* the **stop events**: :class:`Flip`, :class:`ProbabilityLevel`, :class:`Distance`.

Every option object validates itself when built, so a bad value fails where it is written,
and owns its behaviour: the step rules (:mod:`~manifold_jax.explore.step_size`) their
initial size, block sizes and step control, :class:`Newton`
(:mod:`~manifold_jax.explore.corrector`) the correction, each event
(:mod:`~manifold_jax.explore.events`) its condition. They are all importable from here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

import jax
import jax.numpy as jnp

from manifold_jax._checks import check_count, check_option, check_optional_count, check_real
from manifold_jax.explore.corrector import CORRECTORS, Newton
from manifold_jax.explore.events import STOP_EVENTS, Distance, Event, Flip, ProbabilityLevel, resolve_stop
from manifold_jax.explore.step_size import (
    MEASURES,
    STEP_RULES,
    Adaptive,
    Fixed,
    Paper,
    Reference,
    StepRule,
    check_tolerance,
    rule_object,
)
from manifold_jax.geometry import BLOCKS, MATFREE_ITERS, METHODS, MODES, numerical_floor
from manifold_jax.output_metrics import OUTPUT_METRICS, OutputMetric, resolve_output_metric

ALGORITHMS: tuple[str, ...] = ("simec", "simexp")
DIRECTIONS: tuple[str, ...] = ("random", "coherent")
NULL_DIRECTIONS: tuple[str, ...] = ("project", "eigenvector")
BOX_POLICIES: tuple[str, ...] = ("clip", "active")

AUTO_BATCH_ROWS = 4096
"""Cotangent rows (items x outputs x tokens) one vmapped Jacobian handles when batch_size is None."""


# --------------------------------------------------------------------------- thresholds


@dataclass(frozen=True)
class Relative:
    """An eigenvalue is null when lambda <= rtol * lambda_max of its block (scale-free default).

    The effective level never drops below the dtype's numerical floor (100 eps), where
    eigenvalues are rounding noise.
    """

    rtol: float = 1e-4

    def __post_init__(self) -> None:
        rtol = check_real("Relative(rtol)", self.rtol)
        if not 0.0 < rtol < 1.0:
            raise ValueError(f"Relative(rtol={self.rtol!r}): rtol must lie in (0, 1)")
        object.__setattr__(self, "rtol", rtol)

    def cutoff(self, lam_max: jax.Array, dtype: Any) -> jax.Array:
        """The eigenvalue level at or below which a direction counts as null."""
        return max(self.rtol, numerical_floor(dtype)) * lam_max


@dataclass(frozen=True)
class Absolute:
    """An eigenvalue is null when lambda < atol: the reference code's rule (atol = 0.01).

    Not scale-free: on real models it can call genuinely visible directions null.
    """

    atol: float = 0.01

    def __post_init__(self) -> None:
        try:
            atol = check_real("Absolute(atol)", self.atol, positive=True)
        except (TypeError, ValueError):
            raise ValueError(f"Absolute(atol={self.atol!r}): atol must be a positive finite number") from None
        object.__setattr__(self, "atol", atol)

    def cutoff(self, lam_max: jax.Array, dtype: Any) -> jax.Array:
        """The eigenvalue level at or below which a direction counts as null."""
        return jnp.maximum(self.atol, numerical_floor(dtype) * lam_max)


Threshold = Relative | Absolute


def resolve_threshold(threshold: Any) -> Threshold:
    """A threshold object from itself or its name ("relative", "reference"/"absolute")."""
    if isinstance(threshold, (Relative, Absolute)):
        return threshold
    if threshold == "relative":
        return Relative()
    if threshold in ("absolute", "reference"):
        return Absolute()
    raise TypeError(
        f"threshold={threshold!r} is not supported; pass Relative(rtol), Absolute(atol), "
        "'relative' (rtol 1e-4) or 'reference' (absolute 0.01)"
    )


# --------------------------------------------------------------------------- direction rules


@dataclass(frozen=True)
class Coherent:
    """The previous tangent projected onto the current subspace (null for SiMEC, visible for SiMExp).

    A geodesic-like path: distance grows like h K instead of the random walk's h sqrt(K).
    When the projection keeps less than ``restart`` of the tangent's length (the subspace
    turned away), or at the first step, a random direction is drawn instead.
    """

    restart: float = 0.1

    def __post_init__(self) -> None:
        restart = check_real("Coherent(restart)", self.restart, low=0.0, high=1.0, open_low=True)
        object.__setattr__(self, "restart", restart)


Direction = Literal["random"] | Coherent


def resolve_direction(direction: Any) -> Direction:
    if isinstance(direction, Coherent):
        return direction
    check_option("direction", direction, DIRECTIONS)
    return Coherent() if direction == "coherent" else "random"


# --------------------------------------------------------------------------- step rules, corrector, events
# (their classes live with their behaviour: step_size, corrector, events)


# --------------------------------------------------------------------------- the configuration


def _by_name(tol: float | None, on: str) -> dict[str, Any]:
    """The keywords an option named by a string takes from the config's ``tol`` and ``on``."""
    return {**({} if tol is None else {"tol": tol}), **({} if on == "auto" else {"on": on})}


def _check_given(option: Adaptive | Newton, tol: float | None, on: str) -> None:
    name = type(option).__name__
    if tol is not None and tol != option.tol:
        raise ValueError(f"tol={tol} conflicts with {name}(tol={option.tol}); give the tolerance once")
    if on != "auto" and on != option.on:
        raise ValueError(f"on={on!r} conflicts with {name}(on={option.on!r}); say it once")


def _resolve_step_rule(step_rule: Any, tol: float | None, on: str) -> StepRule:
    if isinstance(step_rule, (Reference, Paper)):
        return step_rule.name  # type: ignore[return-value]
    if isinstance(step_rule, Adaptive):
        _check_given(step_rule, tol, on)
        return step_rule
    if isinstance(step_rule, Fixed):
        return step_rule
    check_option("step_rule", step_rule, STEP_RULES)
    if step_rule == "fixed":
        return Fixed()
    if step_rule == "adaptive":
        return Adaptive(**_by_name(tol, on))
    return step_rule


def _resolve_corrector(corrector: Any, tol: float | None, on: str) -> Newton | None:
    if corrector is None:
        return None
    if isinstance(corrector, Newton):
        _check_given(corrector, tol, on)
        return corrector
    check_option("corrector", corrector, CORRECTORS)
    return Newton(**_by_name(tol, on))


@dataclass(frozen=True)
class ExploreConfig:
    """Every option of an exploration, validated when built.

    algorithm: "simec" (stay in the class) or "simexp" (leave it).
    eta: the step multiplier of the "reference"/"paper" rules, the arc length of a
    :class:`Fixed` step, the initial step of an :class:`Adaptive` one.
    threshold: Relative (default) or Absolute null level.
    step_rule: "reference" (the authors' code, delta ~ eta 1e-3 / sqrt(lambda_max)),
    "paper" (delta = eta sqrt(lambda_min_nonnull / lambda_max); pair it with
    spectrum="svd", which gets the smallest non-null eigenvalue to ~1e-5 relative where
    "gram" may be off by ~1e-3), "fixed" / :class:`Fixed`, "adaptive" / :class:`Adaptive`.
    tol: the tolerance of "adaptive" and "newton" given by name (one value for both); on:
    what they measure ("auto", "logits", "probabilities"; see :class:`Newton`).
    direction: "random" (the reference) or "coherent" / :class:`Coherent`.
    corrector: None (the reference) or "newton" / :class:`Newton` (SiMEC only).
    box: "clip" (the reference: clip after each step) or "active" (freeze the coordinates
    at a bound that the move would push outward for the tangent; the corrector solves the
    bound-constrained least-norm problem, so the point stays on the level set).
    stop: None, "flip", an event or a sequence of events (any one stops an item).
    spectrum: "gram" (default), "svd", "dense" or "matfree"; blocks: "token" or "joint".
    output_metric: "euclidean", "softmax", "fisher_rao" or a callable y -> L.
    null_direction: SiMEC's random direction, "project" (a Gaussian projected off the
    visible eigenvectors: uniform in the null space) or "eigenvector" (a uniformly random
    null eigenvector, the reference's choice; needs spectrum="dense").
    mode: Jacobian by "rev", "fwd" or "auto". rank / matfree_iters: the "matfree" solver's
    eigenpairs per block and iteration cap. save_every: keep every n-th point.
    chunk_size: steps per compiled call (progress and checkpoints happen between calls).
    batch_size: items of a batch processed at once, under ``vmap``; the slices follow one
    another (``lax.map``). None (default) picks it from the size of the Jacobian: the whole
    batch at once unless it holds more than AUTO_BATCH_ROWS cotangent rows (batch x k x n),
    which bounds the memory and, measured on the MNIST ViT at batch 16, runs 25 % faster.
    Slices are balanced (a batch of 10 with batch_size 8 runs as 2 x 5) and the last one
    is padded with copies of the first item, whose results are dropped.
    """

    # metadata: "help" (and "type", "choices", "words": the words a number may also be) gives an
    # option a flag of its own on the command line; the others are set as KEY=VALUE
    algorithm: Literal["simec", "simexp"]
    eta: float = field(default=1.0, metadata={"help": "step multiplier, 1 or 10 in the paper", "type": float})
    threshold: Threshold = field(default_factory=Relative, metadata={
        "help": "null eigenvalue level relative to each block's largest, or 'reference' for the authors' "
                "absolute 0.01", "type": float, "words": ("reference",)})
    step_rule: StepRule = field(default="reference", metadata={
        "help": "step size rule: reference (the authors' code), paper (its formula), fixed or adaptive",
        "choices": STEP_RULES})
    spectrum: Literal["dense", "gram", "svd", "matfree"] = field(default="gram", metadata={
        "help": "eigen-solver of the pullback metric; dense is the paper's literal O(d^3) one", "choices": METHODS})
    blocks: Literal["token", "joint"] = field(default="token", metadata={
        "help": "one metric per token or one on all selected coordinates", "choices": BLOCKS})
    output_metric: str | OutputMetric = field(default="euclidean", metadata={
        "help": "metric on the outputs: euclidean on the logits (the reference), fisher_rao of the predicted "
                "distribution, softmax on the probabilities", "choices": tuple(OUTPUT_METRICS)})
    null_direction: Literal["project", "eigenvector"] = "project"
    mode: Literal["auto", "rev", "fwd"] = "auto"
    rank: int | None = None
    matfree_iters: int = MATFREE_ITERS
    save_every: int = field(default=1, metadata={"help": "keep every n-th point", "type": int})
    chunk_size: int = field(default=100, metadata={
        "help": "steps per compiled chunk and checkpoint", "type": int})
    batch_size: int | None = None
    direction: Direction = field(default="random", metadata={
        "help": "random (the paper's) or coherent: the previous direction transported onto the new subspace, "
                "a geodesic-like path", "choices": DIRECTIONS, "continuation": True})
    corrector: Newton | None = field(default=None, metadata={
        "help": "SiMEC: pull every step back onto the input's level set (minimum-norm Gauss-Newton)",
        "choices": CORRECTORS, "continuation": True})
    box: Literal["clip", "active"] = field(default="clip", metadata={
        "help": "clip (the paper's) or active: coordinates at a bound that a step pushes outward are frozen, "
                "so the point stays on the level set", "choices": BOX_POLICIES, "continuation": True})
    stop: tuple[Event, ...] = field(default=(), metadata={
        "help": "flip: stop an input's exploration where its predicted class changes", "choices": STOP_EVENTS,
        "continuation": True})
    tol: float | None = field(default=None, metadata={
        "help": "tolerance of the adaptive step rule and of the corrector: how far an accepted point's outputs "
                "may lie from the input's", "type": float, "continuation": True})
    on: Literal["auto", "logits", "probabilities"] = "auto"

    def __post_init__(self) -> None:
        check_option("algorithm", self.algorithm, ALGORITHMS)
        check_option("spectrum", self.spectrum, METHODS)
        check_option("blocks", self.blocks, BLOCKS)
        check_option("null_direction", self.null_direction, NULL_DIRECTIONS)
        check_option("mode", self.mode, MODES)
        check_option("box", self.box, BOX_POLICIES)
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 - frozen dataclass
        set_("threshold", resolve_threshold(self.threshold))
        resolve_output_metric(self.output_metric)
        set_("eta", check_real("eta", self.eta, positive=True))
        tol = None if self.tol is None else check_tolerance("tol", self.tol)
        set_("tol", tol)
        check_option("on", self.on, MEASURES)
        set_("step_rule", _resolve_step_rule(self.step_rule, tol, self.on))
        set_("corrector", _resolve_corrector(self.corrector, tol, self.on))
        measured = isinstance(self.step_rule, Adaptive) or self.corrector is not None
        if (tol is not None or self.on != "auto") and not measured:
            raise ValueError("tol= and on= belong to step_rule='adaptive' or corrector='newton'; give one of them")
        set_("direction", resolve_direction(self.direction))
        set_("stop", resolve_stop(self.stop))
        set_("batch_size", check_optional_count("batch_size", self.batch_size))
        for name in ("save_every", "chunk_size", "matfree_iters"):
            set_(name, check_count(name, getattr(self, name)))
        set_("rank", check_optional_count("rank", self.rank))
        if isinstance(self.step_rule, Adaptive):
            self.step_rule.limits(self.eta)
        if self.algorithm == "simec" and self.null_direction == "eigenvector" and self.spectrum != "dense":
            raise ValueError(
                "null_direction='eigenvector' needs spectrum='dense': the reduced spectra "
                f"({self.spectrum!r}) compute only the visible eigenvectors"
            )
        if self.corrector is not None:
            if self.algorithm == "simexp":
                raise ValueError("corrector= pulls SiMEC back onto x0's level set; SiMExp leaves it by design")
            if self.spectrum == "matfree":
                raise ValueError("corrector= needs the Jacobian: use spectrum='gram', 'svd' or 'dense', not 'matfree'")
        if self.box == "active" and self.spectrum == "matfree":
            raise ValueError(
                "box='active' restricts the Jacobian to the free coordinates: use spectrum='gram', 'svd' or 'dense'"
            )
        if self.continuation and self.spectrum == "matfree" and self.direction != "random":
            raise ValueError("direction='coherent' needs the Jacobian: use spectrum='gram', 'svd' or 'dense'")

    @property
    def continuation(self) -> bool:
        """True when any option beyond the paper's algorithm is on (corrector, coherent
        direction, fixed or adaptive steps, the active-set box, stop events)."""
        return (
            self.corrector is not None
            or self.direction != "random"
            or isinstance(self.step_rule, (Fixed, Adaptive))
            or self.box != "clip"
            or bool(self.stop)
        )

    @property
    def arc_length_steps(self) -> bool:
        """True for step rules whose eta is a length (Fixed, Adaptive), not a multiplier."""
        return self.rule.arc_length

    @property
    def rule(self) -> Reference | Paper | Fixed | Adaptive:
        """The step rule as an object (:class:`Reference` and :class:`Paper` are stored by name)."""
        return rule_object(self.step_rule)

    @property
    def measure(self) -> str:
        """What the corrector and the adaptive error keep: "logits" or "probabilities"."""
        on = self.corrector.on if self.corrector is not None else "auto"
        if on == "auto" and isinstance(self.step_rule, Adaptive):
            on = self.step_rule.on
        if on != "auto":
            return on
        return "probabilities" if self.output_metric in ("softmax", "fisher_rao") else "logits"

    @property
    def compiled(self) -> ExploreConfig:
        """The configuration the compiled loop is keyed on.

        For the paper's algorithm the algorithm is a traced flag inside the loop, so SiMEC
        and SiMExp runs with the same options share one compiled program (the null-direction
        rule is irrelevant to SiMExp and normalised away). Continuation options compile
        each algorithm apart, their steps differ.
        """
        if self.continuation:
            return self
        null = self.null_direction if self.algorithm == "simec" else "project"
        return dataclasses.replace(self, algorithm="simec", null_direction=null)

    @property
    def blocks_per_chunk(self) -> int:
        """Saved points per compiled call."""
        return max(1, self.chunk_size // self.save_every)


__all__ = [
    "ALGORITHMS",
    "AUTO_BATCH_ROWS",
    "BOX_POLICIES",
    "CORRECTORS",
    "DIRECTIONS",
    "MEASURES",
    "NULL_DIRECTIONS",
    "STEP_RULES",
    "STOP_EVENTS",
    "Absolute",
    "Adaptive",
    "Coherent",
    "Distance",
    "Event",
    "ExploreConfig",
    "Fixed",
    "Flip",
    "Newton",
    "Paper",
    "ProbabilityLevel",
    "Reference",
    "Relative",
    "StepRule",
    "resolve_stop",
    "resolve_threshold",
]
