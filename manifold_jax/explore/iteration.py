"""One exploration step of one item: the state at x in, the state at the next point and a record out.

The paper's step (Algorithms 1 and 2, as the authors' code runs them): the pullback
spectrum per block, a random null (SiMEC) or visible (SiMExp) direction per block, a step
size per block from the spectrum, a clip into the box.

A continuation step (docs/method.md, section 6), when the options ask for one, runs four
short functions, each delegating to the option that owns the behaviour:

* :func:`_predict`: a unit tangent T (the direction rule's, or the guide's: toward a goal
  inside the level set, or the minimum-norm change toward a target output J^+ dy), moved
  by the step rule's h; with the box as an active set, coordinates at a bound that the
  move would push outward are frozen and T is recomputed on the free ones. With a
  corrector (SiMEC) the minimum-norm Gauss-Newton correction c = -(dphi J)^+ F(x) with the
  iteration's own Jacobian is fused with the predictor (c in the row space, T in the null
  space);
* :func:`_correct`: the predicted point clipped into the box (in an active box the first
  correction is the bound-constrained least-norm one, :mod:`manifold_jax.box_solve`),
  then up to ``max_iters`` chord corrections with the same Jacobian (``Newton.chords``); a
  Fixed step the corrector cannot bring back is retried shorter (``Fixed.retry``);
* :func:`_control`: the step rule's ``adapt`` accepts or rejects the step on its error and
  sets the next h;
* :func:`_finish`: the stop events (each ``holds``), stalls, the next state and the record.

Everything is a pure function of arrays: the compiled loop vmaps :func:`item_step` over a
batch, and :func:`step` exposes it to callers' own ``jit``, ``vmap``, ``grad`` and ``scan``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from manifold_jax.box_solve import box_min_norm_correction
from manifold_jax.explore.corrector import Newton
from manifold_jax.explore.directions import (
    block_move,
    blocks_of,
    canonical_sign,
    pick_index,
    tokens_of,
    unit,
    visible_mask,
)
from manifold_jax.explore.events import any_holds
from manifold_jax.explore.guides import At, Goal, NoGuide
from manifold_jax.explore.options import Adaptive, ExploreConfig, Fixed
from manifold_jax.explore.problem import ExplorationState, ItemInputs, replace_state
from manifold_jax.explore.step_inputs import check_step_inputs, step_inputs
from manifold_jax.geometry import (
    REDUCED_SPECTRA,
    Spectrum,
    block_spectrum,
    factor_blocks,
    jacobian,
    measure_jacobian,
    measured_outputs,
)
from manifold_jax.output_metrics import resolve_output_metric

STALLED = 1
"""Status bit: a selected block had no admissible direction (or a zero metric) and stood still."""
NONFINITE = 2
"""Status bit: the output or its derivatives were not finite; the step was skipped."""
UNCONVERGED = 4
"""Status bit: the corrector left the step's error above the tolerance (a Fixed step after its
halvings: the point stays; an Adaptive one at the smallest step size; other rules keep the step)."""
REJECTED = 8
"""Status bit: the step controller rejected the step; the point stayed and h shrank."""
STOPPED = 16
"""Status bit: a stop event holds at this point; the item is frozen."""

Record = dict[str, jax.Array]
"""What one step reports about the point it leaves (see Trajectory for the fields)."""


class Look(NamedTuple):
    """What a step computes at the point before it moves (one item, m selected tokens, nb blocks).

    y (k,) the outputs; jac (k, m, d) and factor (k, r) their Jacobian on the selected
    tokens and the output metric's factor (None with the matrix-free spectrum); spec the
    spectrum per block; noise (nb, D) and pick_keys (nb, 2) the block's random draws;
    block_valid (nb,); previous (nb, D) the last tangent per block; next_key the state's next key.
    """

    y: jax.Array
    jac: jax.Array | None
    factor: jax.Array | None
    spec: Spectrum
    noise: jax.Array
    pick_keys: jax.Array
    block_valid: jax.Array
    previous: jax.Array
    next_key: jax.Array


def _look(f: Callable[..., jax.Array], cfg: ExploreConfig, state: ExplorationState, inputs: ItemInputs) -> Look:
    """The outputs, Jacobian and spectrum at the state's point, and the step's random draws."""
    x, index, valid = state.x, inputs.index, inputs.valid
    next_key, step_key = jax.random.split(state.key)
    n, d = x.shape
    metric = resolve_output_metric(cfg.output_metric)
    jac = factor = None
    if cfg.spectrum == "matfree":
        y, spec = block_spectrum(
            f, x, inputs.args, index, valid, metric=metric, blocks=cfg.blocks, method="matfree",
            mode=cfg.mode, rank=cfg.rank, key=jax.random.fold_in(step_key, n + 1), iters=cfg.matfree_iters,
        )
    else:
        y, jac = jacobian(f, x, inputs.args, index, valid, cfg.mode)
        factor = metric(y)
        spec = REDUCED_SPECTRA[cfg.spectrum](factor_blocks(jac, factor, cfg.blocks))
    # a Gaussian vector per selected token, drawn in float32 so that every precision takes the same directions
    token_keys = jax.vmap(jax.random.fold_in, (None, 0))(step_key, index)
    noise = jax.vmap(lambda kk: jax.random.normal(kk, (d,), jnp.float32))(token_keys).astype(x.dtype)
    noise = noise * valid[:, None].astype(x.dtype)
    if cfg.blocks == "token":
        block_valid = valid
        pick_keys = jax.vmap(jax.random.fold_in, (0, None))(token_keys, 1)
    else:
        block_valid = valid.any()[None]
        pick_keys = jax.random.fold_in(step_key, n)[None]
    previous = blocks_of(state.tangent[index], cfg.blocks)
    return Look(y, jac, factor, spec, blocks_of(noise, cfg.blocks), pick_keys, block_valid, previous, next_key)


def _finite_spectrum(sp: Spectrum, block_valid: jax.Array) -> jax.Array:
    """Whether the spectrum of every existing block is finite."""
    return jnp.all(jnp.where(block_valid[:, None], jnp.isfinite(sp.eigenvalues), True)) & jnp.all(
        jnp.where(block_valid[:, None, None], jnp.isfinite(sp.eigenvectors), True)
    )


def item_step(
    f: Callable[..., jax.Array], cfg: ExploreConfig, simexp: Any, state: ExplorationState, inputs: ItemInputs,
) -> tuple[ExplorationState, Record]:
    """One iteration for one item (unbatched state, x (n, d)): the next state and the step's record.

    ``simexp`` (a bool, traced in the paper's program shared by both algorithms) chooses
    SiMExp's visible directions; ``inputs`` holds the item's arguments, selection, box and guide.
    """
    x = state.x
    look = _look(f, cfg, state, inputs)
    drift = jnp.max(jnp.abs(measured_outputs(look.y, cfg.measure) - measured_outputs(state.anchor, cfg.measure)))
    base_record = dict(
        y=look.y, drift=drift, distance=jnp.linalg.norm(x - state.origin), arc_length=state.arc_length,
        goal_distance=inputs.guide.distance(x), rejected=state.rejected,
    )
    if not cfg.continuation and isinstance(inputs.guide, NoGuide):
        return _paper_step(cfg, simexp, state, inputs, look, base_record)
    return _continuation_step(f, cfg, simexp, state, inputs, look, base_record)


def _paper_step(cfg: ExploreConfig, simexp: Any, state: ExplorationState, inputs: ItemInputs, look: Look,
                base_record: Record) -> tuple[ExplorationState, Record]:
    """The paper's algorithm, exactly as the authors' code runs it."""
    x, index, valid = state.x, inputs.index, inputs.valid
    m, d = index.shape[0], x.shape[1]
    current = x[index]
    dirs, delta, quad, ok = jax.vmap(partial(block_move, cfg, simexp))(
        look.spec.eigenvalues, look.spec.eigenvectors, look.noise, look.pick_keys, look.previous
    )
    finite = jnp.isfinite(look.y).all() & _finite_spectrum(look.spec, look.block_valid)
    ok = ok & look.block_valid & finite
    delta = jnp.where(ok, delta, 0.0)
    move = (delta[:, None] * jnp.where(ok[:, None], dirs, 0.0)).reshape(m, d)
    moved = jnp.clip(current + move, inputs.lo[index], inputs.hi[index])
    moved = jnp.where(valid[:, None] & finite, moved, current)
    status = jnp.where(jnp.any(look.block_valid & ~ok & finite), STALLED, 0) | jnp.where(finite, 0, NONFINITE)
    record = dict(
        base_record, step=delta, eigenvalue=jnp.where(ok, quad, 0.0), status=status.astype(jnp.int32),
        stalls=state.stalls, h=jnp.linalg.norm(moved - current), error=jnp.full((), jnp.nan, x.dtype),
        corrections=jnp.zeros((), jnp.int32),
    )
    new_state = replace_state(
        state, x=x.at[index].set(moved), key=look.next_key, iteration=state.iteration + 1,
        stalls=state.stalls + (status != 0), arc_length=state.arc_length + jnp.linalg.norm(moved - current),
    )
    return new_state, record


# --------------------------------------------------------------------------- the continuation step


class Proposal(NamedTuple):
    """A predicted move of the selected tokens (m, d): the move, the fused correction, the unit tangent, the
    size per block (nb,), v^T g v per block (nb,), which blocks move (nb,), the spectrum used, the free coordinates."""

    move: jax.Array
    correction: jax.Array
    tangent: jax.Array
    step: jax.Array
    quad: jax.Array
    ok: jax.Array
    spec: Spectrum
    free: jax.Array


class Corrected(NamedTuple):
    """The corrected selected tokens (m, d), the step's error (NaN when none is computed), the chord
    corrections used, and the scale the move was taken at (1 unless a Fixed step was retried shorter)."""

    moved: jax.Array
    error: jax.Array
    corrections: jax.Array
    scale: jax.Array


def _propose(cfg: ExploreConfig, simexp: Any, state: ExplorationState, inputs: ItemInputs, look: Look,
             h: jax.Array, free: jax.Array) -> Proposal:
    """The move (m, d) and what it is made of, with the coordinates outside ``free`` (m, d) frozen."""
    x, index = state.x, inputs.index
    dtype = x.dtype
    m, d = index.shape[0], x.shape[1]
    freef = free.astype(dtype)
    sp = look.spec
    if look.jac is not None and look.factor is not None:  # matfree: no active set (refused at configuration)
        sp = REDUCED_SPECTRA[cfg.spectrum](factor_blocks(look.jac * freef[None], look.factor, cfg.blocks))
    dirs, delta, quad, ok = jax.vmap(partial(block_move, cfg, simexp))(
        sp.eigenvalues, sp.eigenvectors, blocks_of(tokens_of(look.noise, m, d) * freef, cfg.blocks), look.pick_keys,
        look.previous * blocks_of(freef, cfg.blocks),
    )
    ok = ok & look.block_valid
    visible = jax.vmap(partial(visible_mask, cfg, dtype=dtype))(sp.eigenvalues)
    at = At(look.y, look.jac, x[index], index, freef, sp.eigenvectors, visible, look.block_valid, cfg.blocks)
    tangent, ok, quad, reach = inputs.guide.tangent(at, dirs, ok, quad)
    if cfg.arc_length_steps:
        direction, norm = unit(tangent)
        move = jnp.where(norm > 0, jnp.minimum(h, reach), 0.0) * direction
        step_sizes = jnp.linalg.norm(blocks_of(move, cfg.blocks), axis=1)
    else:
        move = tokens_of(jnp.where(ok[:, None], delta[:, None] * dirs, 0.0), m, d)
        step_sizes = jnp.where(ok, delta, 0.0)
    correction = jnp.zeros_like(move)
    if cfg.corrector is not None:
        assert look.jac is not None  # the corrector needs the Jacobian (refused with matfree)
        correction = Newton.correction(look.y, look.jac * freef[None], measured_outputs(state.anchor, cfg.measure),
                                       cfg.measure)
    token_valid = jnp.broadcast_to(inputs.valid[:, None], (m, d))
    return Proposal(move * token_valid, correction * token_valid, tangent, step_sizes, quad, ok, sp, free)


def _predict(cfg: ExploreConfig, simexp: Any, state: ExplorationState, inputs: ItemInputs, look: Look,
             h: jax.Array) -> Proposal:
    """The proposal on every selected coordinate; in an active box, again with the outward-pushed ones frozen."""
    index = inputs.index
    m, d = index.shape[0], state.x.shape[1]
    free = jnp.broadcast_to(inputs.valid[:, None], (m, d))
    proposal = _propose(cfg, simexp, state, inputs, look, h, free)
    if cfg.box == "active":
        current, lo, hi = state.x[index], inputs.lo[index], inputs.hi[index]
        push = proposal.move + proposal.correction
        outward = ((current <= lo) & (push < 0)) | ((current >= hi) & (push > 0))
        proposal = _propose(cfg, simexp, state, inputs, look, h, free & ~outward)
    return proposal


def _tolerances(cfg: ExploreConfig, dtype: Any) -> tuple[jax.Array, jax.Array]:
    """(the step's tolerance, the chord corrections' one): the corrector iterates to its own
    tolerance; an adaptive step is accepted at the controller's."""
    corrector_tol = cfg.corrector.tol if cfg.corrector is not None else jnp.inf
    tol = jnp.asarray(cfg.step_rule.tol if isinstance(cfg.step_rule, Adaptive) else corrector_tol, dtype)
    return tol, (jnp.asarray(corrector_tol, dtype) if cfg.corrector is not None else tol)


def _evaluated(cfg: ExploreConfig) -> bool:
    """Whether a step's error is computed (Adaptive steps, correctors with chord corrections)."""
    return isinstance(cfg.step_rule, Adaptive) or (cfg.corrector is not None and cfg.corrector.max_iters > 0)


def _retries(cfg: ExploreConfig) -> bool:
    """Whether an uncorrectable step is retried shorter (a Fixed SiMEC step with a corrector)."""
    return isinstance(cfg.step_rule, Fixed) and cfg.corrector is not None


def _correct(f: Callable[..., jax.Array], cfg: ExploreConfig, state: ExplorationState, inputs: ItemInputs,
             look: Look, proposal: Proposal) -> Corrected:
    """The predicted point in the box, corrected; the step's error."""
    x, index, y, jac, on = state.x, inputs.index, look.y, look.jac, cfg.measure
    dtype = x.dtype
    k, (m, d) = y.shape[0], (index.shape[0], x.shape[1])
    current, lo, hi = x[index], inputs.lo[index], inputs.hi[index]
    token_valid = jnp.broadcast_to(inputs.valid[:, None], (m, d))
    phi_anchor = measured_outputs(state.anchor, on)
    # the corrector in an active box solves the bound-constrained least-norm problem: its
    # correction may also move a coordinate at a bound inward (see manifold_jax.box_solve)
    bounded = cfg.corrector is not None and cfg.box == "active"

    def start_at(scale: jax.Array | None) -> jax.Array:
        """The predicted and first-corrected selected tokens (m, d), the move scaled by ``scale``."""
        move = proposal.move if scale is None else proposal.move * scale
        if not bounded:
            return jnp.where(token_valid, jnp.clip(current + move + proposal.correction, lo, hi), current)
        assert jac is not None  # the corrector needs the Jacobian (refused with matfree)
        start = jnp.where(token_valid, jnp.clip(current + move, lo, hi), current)
        a = measure_jacobian(y, jac, on)
        residual = measured_outputs(y, on) - phi_anchor + a.reshape(k, m * d) @ (start - current).reshape(-1)
        fix = box_min_norm_correction(a, residual, start, lo, hi, token_valid)
        return jnp.where(token_valid, jnp.clip(start + fix, lo, hi), current)

    moved = start_at(None)
    none = Corrected(moved, jnp.full((), jnp.nan, dtype), jnp.zeros((), jnp.int32), jnp.ones((), dtype))
    if not _evaluated(cfg):
        return none
    assert jac is not None  # evaluated steps need the Jacobian (refused with matfree)

    def outputs_at(sel: jax.Array) -> jax.Array:
        return measured_outputs(f(x.at[index].set(sel), *inputs.args), on)

    if cfg.algorithm == "simexp":
        predicted = measured_outputs(y, on) + (
            measure_jacobian(y, jac, on).reshape(k, m * d) @ (moved - current).reshape(-1)
        )
        return none._replace(error=jnp.max(jnp.abs(outputs_at(moved) - predicted)))
    # in an active box the chord sees every coordinate and the bounds decide which move
    chord = measure_jacobian(y, jac if bounded else jac * proposal.free.astype(dtype)[None], on).reshape(k, m * d)
    tol, chord_tol = _tolerances(cfg, dtype)
    max_iters = cfg.corrector.max_iters if cfg.corrector is not None else 0
    # with a corrector the error is the distance from x0's level; without one, the change of
    # this step alone (the drift of the accepted steps adds up)
    level = phi_anchor if cfg.corrector is not None else measured_outputs(y, on)

    def correction_at(sel: jax.Array, residual: jax.Array) -> jax.Array:
        """The chord correction: least-norm, and inside the box when it is an active set."""
        if bounded:
            return box_min_norm_correction(chord.reshape(k, m, d), residual, sel, lo, hi, token_valid)
        return Newton.solve(chord, residual, m, d) * token_valid

    def attempt(start: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        return Newton.chords(outputs_at, correction_at, start, level, chord_tol, max_iters, token_valid, lo, hi)

    first = attempt(moved)
    if not _retries(cfg):
        return Corrected(*first, none.scale)
    return Corrected(*Fixed.retry(lambda s: attempt(start_at(s)), first, tol))


def _control(cfg: ExploreConfig, h: jax.Array, corrected: Corrected, finite: jax.Array
             ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """The step rule's verdict: (next h, accepted, status bits REJECTED / UNCONVERGED, given up)."""
    tol, _ = _tolerances(cfg, h.dtype)
    error = corrected.error
    by_corrections = cfg.corrector is not None and cfg.algorithm != "simexp"
    h_next, accepted, unconverged = cfg.rule.adapt(h, error, tol, corrected.corrections, cfg.eta, by_corrections)
    status = jnp.where(accepted, 0, REJECTED)
    if _evaluated(cfg):
        status = status | jnp.where(unconverged, UNCONVERGED, 0)
    # a Fixed step still uncorrectable at 1/2^MAX_HALVINGS of its length is given up: the point stays
    retried = _retries(cfg) and _evaluated(cfg) and cfg.algorithm != "simexp"
    given_up = (~(error <= tol) & finite) if retried else jnp.zeros((), bool)
    return h_next, accepted, status, given_up


def _continuation_step(f: Callable[..., jax.Array], cfg: ExploreConfig, simexp: Any, state: ExplorationState,
                       inputs: ItemInputs, look: Look, base_record: Record) -> tuple[ExplorationState, Record]:
    """The continuation step (see the module docstring): predict, correct, control, finish."""
    h = cfg.rule.init(state.h, cfg.eta)
    proposal = _predict(cfg, simexp, state, inputs, look, h)
    finite = jnp.isfinite(look.y).all() & _finite_spectrum(proposal.spec, look.block_valid)
    corrected = _correct(f, cfg, state, inputs, look, proposal)
    if _evaluated(cfg):
        finite = finite & jnp.isfinite(corrected.error)
    h_next, accepted, status, given_up = _control(cfg, h, corrected, finite)
    return _finish(cfg, state, inputs, look, proposal, corrected, base_record,
                   h=h, h_next=h_next, accepted=accepted, status=status, given_up=given_up, finite=finite)


def _finish(cfg: ExploreConfig, state: ExplorationState, inputs: ItemInputs, look: Look, proposal: Proposal,
            corrected: Corrected, base_record: Record, *, h: jax.Array, h_next: jax.Array, accepted: jax.Array,
            status: jax.Array, given_up: jax.Array, finite: jax.Array) -> tuple[ExplorationState, Record]:
    """Events, stalls, what actually happens: the next state and the step's record."""
    x, index, guide = state.x, inputs.index, inputs.guide
    current = x[index]
    retry = _retries(cfg)
    ok = proposal.ok
    stop_now = any_holds(cfg.stop, look.y, x, state.anchor, state.origin, guide.target_class)
    stopped = state.stopped | stop_now
    stalled = jnp.any(look.block_valid & ~ok & finite)
    go = finite & accepted & ~given_up & ~stopped
    moved = jnp.where(go, corrected.moved, current)
    x_next = x.at[index].set(moved)
    status = (
        status
        | jnp.where(stalled & ~stopped, STALLED, 0)
        | jnp.where(finite, 0, NONFINITE)
        | jnp.where(stopped, STOPPED, 0)
    )
    status = jnp.where(stopped, STOPPED, status)
    step_length = jnp.linalg.norm(moved - current)
    tangent_next = jnp.where(go & jnp.any(ok), proposal.tangent, state.tangent[index])
    if retry:  # after a given-up step a coherent walk draws a fresh direction
        tangent_next = jnp.where(given_up & ~stopped, 0.0, tangent_next)
    closest = (state.closest, state.closest_iteration, state.closest_x)
    if isinstance(guide, Goal):
        closest = guide.closest(closest, ((x, state.iteration), (x_next, state.iteration + 1)))
    scale = corrected.scale
    record = dict(
        base_record,
        step=jnp.where(go, proposal.step * scale if retry else proposal.step, 0.0).astype(x.dtype),
        eigenvalue=jnp.where(ok, proposal.quad, 0.0).astype(x.dtype),
        status=status.astype(jnp.int32),
        stalls=state.stalls,
        h=(h * scale if retry else h) if cfg.arc_length_steps else step_length,
        error=corrected.error,
        corrections=corrected.corrections,
    )
    new_state = replace_state(
        state,
        x=x_next,
        key=jnp.where(stopped, state.key, look.next_key),  # a stopped item is frozen, its key too
        iteration=state.iteration + 1,
        stalls=state.stalls + ((status & (STALLED | NONFINITE)) != 0),
        tangent=state.tangent.at[index].set(tangent_next),
        h=jnp.where(stopped, h, h_next).astype(x.dtype),
        rejected=state.rejected + (~accepted & finite & ~stopped),
        arc_length=state.arc_length + step_length,
        stopped=stopped,
        stop_iteration=jnp.where(stop_now & ~state.stopped, state.iteration, state.stop_iteration),
        closest=closest[0],
        closest_iteration=closest[1],
        closest_x=closest[2],
    )
    return new_state, record


# --------------------------------------------------------------------------- the public step


def step(
    f: Callable[..., jax.Array],
    state: ExplorationState,
    config: ExploreConfig,
    *,
    args: Any = (),
    select: Any = None,
    bounds: tuple[Any, Any] | None = None,
    target: Any = None,
    goal: Any = None,
) -> tuple[ExplorationState, Record]:
    """One exploration step of one item: ``state`` (x (n, d)) -> (next state, the step's record).

    A pure function for the caller's own ``jit``, ``vmap``, ``grad`` and ``lax.scan``: the
    state comes from :func:`~manifold_jax.explore.init_state` with ``f`` (so that it holds
    the anchor f(x0)); ``select`` is a concrete mask or index list, or a traced boolean mask;
    ``bounds`` a pair broadcastable to (n, d); ``target`` a class index or output vector
    (SiMExp), ``goal`` an input (n, d) (SiMEC). They are normalised by the loop's own
    :func:`~manifold_jax.explore.prepare`; values are checked only where they are concrete.
    """
    args = args if isinstance(args, tuple) else (args,)
    check_step_inputs(f, state, config, args, bounds, target)
    inputs = step_inputs(f, state, args=args, select=select, bounds=bounds, target=target, goal=goal)
    return item_step(f, config, config.algorithm == "simexp", state, inputs)


__all__ = [
    "NONFINITE",
    "REJECTED",
    "STALLED",
    "STOPPED",
    "UNCONVERGED",
    "Record",
    "block_move",
    "canonical_sign",
    "item_step",
    "pick_index",
    "step",
    "visible_mask",
]
