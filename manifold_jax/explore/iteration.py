"""One exploration step of one item: the state at x in, the state at the next point and a record out.

The paper's step (Algorithms 1 and 2, as the authors' code runs them): the pullback
spectrum per block, a random null (SiMEC) or visible (SiMExp) direction per block, a step
size per block from the spectrum, a clip into the box.

A continuation step (docs/method.md, section 6), when the options ask for one:

* predictor: a unit tangent T (random, the previous tangent transported onto the new
  subspace, toward a goal inside the level set, or the minimum-norm change toward a
  target output J^+ dy), moved by the step controller's h;
* corrector (SiMEC): the minimum-norm Gauss-Newton correction c = -(dphi J)^+ F(x) with the
  iteration's own Jacobian, fused with the predictor (c lies in the row space, T in the
  null space), then up to ``max_iters`` chord corrections with the same Jacobian;
* box as an active set: coordinates at a bound that the move would push outward are
  frozen and T is recomputed on the free ones; the predicted point is clipped into the
  box and every correction is the bound-constrained least-norm one
  (:mod:`manifold_jax.box_solve`), which may release a bound coordinate inward;
* step control: accept or reject on the step's error, grow or shrink h (Adaptive); a Fixed
  step the corrector cannot bring back is retried at half the length, MAX_HALVINGS times,
  then given up in place;
* events: an item whose point satisfies a stop event freezes.

Everything is a pure function of arrays: the compiled loop vmaps :func:`item_step` over a
batch, and :func:`step` exposes it to callers' own ``jit``, ``vmap``, ``grad`` and ``scan``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from manifold_jax._checks import check_finite, is_concrete
from manifold_jax.box_solve import box_min_norm_correction
from manifold_jax.explore.options import (
    Adaptive,
    Distance,
    Event,
    ExploreConfig,
    Fixed,
    Flip,
    ProbabilityLevel,
)
from manifold_jax.explore.problem import ExplorationState, replace_state
from manifold_jax.geometry import (
    REDUCED_SPECTRA,
    Spectrum,
    block_spectrum,
    factor_blocks,
    jacobian,
    measure_jacobian,
    measured_outputs,
    min_norm_solve,
    numerical_floor,
    output_size,
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

REFERENCE_EPS = 1e-6
"""The absolute constant in the reference code's step rule, delta = eta sqrt((min + 1e-6) / max)."""

GROWTH_SAFETY = 0.9
"""Safety factor of the error-based step-size update, h * 0.9 sqrt(tol / error)."""

Record = dict[str, jax.Array]
"""What one step reports about the point it leaves (see Trajectory for the fields)."""


# --------------------------------------------------------------------------- directions per block


def canonical_sign(v: jax.Array) -> jax.Array:
    """Eigenvectors are defined up to sign; fix it so the largest component is positive."""
    pivot = v[jnp.argmax(jnp.abs(v))]
    return v * jnp.where(pivot < 0, -1.0, 1.0).astype(v.dtype)


def pick_index(key: jax.Array, allowed: jax.Array) -> jax.Array:
    """A uniformly random index among the True entries of ``allowed`` (p,)."""
    logits = jnp.where(allowed, 0.0, -jnp.inf)
    return jax.random.categorical(key, jnp.where(allowed.any(), logits, 0.0))


def _project_off(rows: jax.Array, v: jax.Array) -> jax.Array:
    """v minus its projection on the (near-orthonormal) rows; twice is enough for rounding."""
    v = v - rows.T @ (rows @ v)
    return v - rows.T @ (rows @ v)


def _unit(v: jax.Array) -> tuple[jax.Array, jax.Array]:
    norm = jnp.linalg.norm(v)
    return v / jnp.where(norm > 0, norm, 1.0), norm


def visible_mask(cfg: ExploreConfig, lam: jax.Array, dtype: Any) -> jax.Array:
    """Which eigenvalues (p,) of a block (descending) the threshold calls visible (non-null)."""
    return lam > cfg.threshold.cutoff(jnp.maximum(lam[0], 0.0), dtype)


def block_move(
    cfg: ExploreConfig,
    simexp: Any,
    lam: jax.Array,
    vecs: jax.Array,
    noise: jax.Array,
    key: jax.Array,
    previous: jax.Array,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Unit direction (D,), step size, v^T g v and whether a move exists, for one block.

    lam (p,) descending and vecs (p, D) are the block's eigenpairs; noise (D,) a Gaussian
    draw used by the projected null direction; key picks eigenvectors; previous (D,) the
    last tangent of this block (used by the coherent rule); simexp (a bool, traced in the
    paper's shared program) chooses SiMExp's visible direction over SiMEC's null one.
    """
    dtype = vecs.dtype
    p, dim = vecs.shape
    lam_max = jnp.maximum(lam[0], 0.0)
    scale_ok = lam_max > 0
    safe_max = jnp.where(scale_ok, lam_max, 1.0)
    nonnull = visible_mask(cfg, lam, dtype)
    null = ~nonnull
    visible = jnp.where(nonnull[:, None], vecs, 0.0)
    visible_dir = canonical_sign(vecs[pick_index(key, nonnull)])
    if cfg.null_direction == "eigenvector":
        null_dir = canonical_sign(vecs[pick_index(key, null)])
        null_exists = null.any()
    else:
        null_dir, _ = _unit(_project_off(visible, noise))
        null_exists = (dim - nonnull.sum()) > 0
    if cfg.direction != "random":
        # transport the previous tangent; draw afresh where the subspace turned away from it
        keep = cfg.direction.restart * jnp.linalg.norm(previous)
        carried_null, null_norm = _unit(_project_off(visible, previous))
        carried_visible, visible_norm = _unit(visible.T @ (visible @ previous))
        null_dir = jnp.where(null_norm > keep, carried_null, null_dir)
        visible_dir = jnp.where(visible_norm > keep, carried_visible, visible_dir)
    v = jnp.where(simexp, visible_dir, null_dir)
    exists = jnp.where(simexp, nonnull.any(), null_exists)
    ok = exists & scale_ok
    if cfg.step_rule == "paper":
        lam_min = jnp.min(jnp.where(nonnull, lam, jnp.inf))
        delta = cfg.eta * jnp.sqrt(jnp.where(nonnull.any(), lam_min, 0.0) / safe_max)
    else:  # the reference rule (arc-length rules scale the joint tangent later)
        numerically_zero = lam <= numerical_floor(dtype) * lam_max
        lam_min = jnp.min(jnp.where(numerically_zero, 0.0, jnp.abs(lam)))
        lam_min = lam_min if p == dim else jnp.zeros((), dtype)
        delta = cfg.eta * jnp.sqrt((lam_min + REFERENCE_EPS) / safe_max)
    quad = jnp.sum(jnp.maximum(lam, 0.0) * (vecs @ v) ** 2)
    delta = jnp.where(ok, delta, 0.0).astype(dtype)
    return jnp.where(ok, v, 0.0), delta, quad.astype(dtype), ok


# --------------------------------------------------------------------------- the pieces of a step


def _blocks_of(values: jax.Array, blocks: str) -> jax.Array:
    """(m, d) -> (nb, D): a row per token block, or one joint row."""
    return values if blocks == "token" else values.reshape(1, -1)


def _tokens_of(values: jax.Array, m: int, d: int) -> jax.Array:
    """(nb, D) -> (m, d), the inverse of :func:`_blocks_of`."""
    return values.reshape(m, d)


def _events(events: tuple[Event, ...], y: jax.Array, anchor: jax.Array, x: jax.Array, origin: jax.Array,
            target: jax.Array) -> jax.Array:
    """Whether any stop event holds at the point x with outputs y (a traced bool)."""
    hit = jnp.zeros((), bool)
    original = jnp.argmax(anchor)
    for event in events:
        if isinstance(event, Flip):
            now = jnp.argmax(y)
            hit = hit | jnp.where(target >= 0, now == target, now != original)
        elif isinstance(event, ProbabilityLevel):
            cls = original if event.cls is None else event.cls
            p = jax.nn.softmax(y)[cls]
            hit = hit | (p <= event.level if event.below else p >= event.level)
        elif isinstance(event, Distance):
            hit = hit | (jnp.linalg.norm(x - origin) >= event.max_distance)
    return hit


def _target_change(y: jax.Array, target: jax.Array, target_output: jax.Array) -> jax.Array:
    """dy toward the target: e_c - p for a class (the logit gradient of log p_c), y* - y for an output."""
    if target_output.shape[0]:
        return target_output - y
    return jax.nn.one_hot(target, y.shape[0], dtype=y.dtype) - jax.nn.softmax(y)


def _draw_noise(step_key: jax.Array, index: jax.Array, d: int, dtype: Any) -> tuple[jax.Array, jax.Array]:
    """A Gaussian vector per selected token (m, d), drawn in float32 so that every precision
    takes the same random directions, and the token keys it came from."""
    token_keys = jax.vmap(jax.random.fold_in, (None, 0))(step_key, index)
    noise = jax.vmap(lambda kk: jax.random.normal(kk, (d,), jnp.float32))(token_keys)
    return noise.astype(dtype), token_keys


# --------------------------------------------------------------------------- the step


def item_step(
    f: Callable[..., jax.Array],
    cfg: ExploreConfig,
    guide: str,
    simexp: Any,
    state: ExplorationState,
    args: tuple[Any, ...],
    index: jax.Array,
    valid: jax.Array,
    lo: jax.Array,
    hi: jax.Array,
    target: jax.Array,
    target_output: jax.Array,
    goal: jax.Array,
) -> tuple[ExplorationState, Record]:
    """One iteration for one item (unbatched state, x (n, d)): the next state and the step's record.

    ``guide`` is "none", "target" (SiMExp toward ``target`` (class, -1 for none) or
    ``target_output`` (k,) / (0,)) or "goal" (SiMEC toward ``goal`` (n, d)); index (m,) and
    valid (m,) the selected tokens; lo, hi (n, d) the box.
    """
    x = state.x
    next_key, step_key = jax.random.split(state.key)
    n, d = x.shape
    m = index.shape[0]
    metric = resolve_output_metric(cfg.output_metric)
    jac = None
    if cfg.spectrum == "matfree":
        y, spec = block_spectrum(
            f, x, args, index, valid, metric=metric, blocks=cfg.blocks, method="matfree",
            mode=cfg.mode, rank=cfg.rank, key=jax.random.fold_in(step_key, n + 1), iters=cfg.matfree_iters,
        )
        factor = None
    else:
        y, jac = jacobian(f, x, args, index, valid, cfg.mode)
        factor = metric(y)
        spec = REDUCED_SPECTRA[cfg.spectrum](factor_blocks(jac, factor, cfg.blocks))
    noise, token_keys = _draw_noise(step_key, index, d, x.dtype)
    noise = noise * valid[:, None].astype(x.dtype)
    if cfg.blocks == "token":
        block_valid = valid
        pick_keys = jax.vmap(jax.random.fold_in, (0, None))(token_keys, 1)
    else:
        block_valid = valid.any()[None]
        pick_keys = jax.random.fold_in(step_key, n)[None]
    noise_b = _blocks_of(noise, cfg.blocks)
    current = x[index]
    previous = _blocks_of(state.tangent[index], cfg.blocks)
    finite_y = jnp.isfinite(y).all()
    anchor = state.anchor
    phi_anchor = measured_outputs(anchor, cfg.measure)
    drift = jnp.max(jnp.abs(measured_outputs(y, cfg.measure) - phi_anchor))
    base_record = dict(
        y=y,
        drift=drift,
        distance=jnp.linalg.norm(x - state.origin),
        arc_length=state.arc_length,
        goal_distance=jnp.linalg.norm(x - goal) if guide == "goal" else jnp.full((), jnp.nan, x.dtype),
        rejected=state.rejected,
    )

    def finite_spectrum(sp: Spectrum) -> jax.Array:
        return jnp.all(jnp.where(block_valid[:, None], jnp.isfinite(sp.eigenvalues), True)) & jnp.all(
            jnp.where(block_valid[:, None, None], jnp.isfinite(sp.eigenvectors), True)
        )

    if not cfg.continuation and guide == "none":
        # the paper's algorithm, exactly as the authors' code runs it
        dirs, delta, quad, ok = jax.vmap(partial(block_move, cfg, simexp))(
            spec.eigenvalues, spec.eigenvectors, noise_b, pick_keys, previous
        )
        finite = finite_y & finite_spectrum(spec)
        ok = ok & block_valid & finite
        delta = jnp.where(ok, delta, 0.0)
        move = (delta[:, None] * jnp.where(ok[:, None], dirs, 0.0)).reshape(m, d)
        moved = jnp.clip(current + move, lo[index], hi[index])
        moved = jnp.where(valid[:, None] & finite, moved, current)
        status = jnp.where(jnp.any(block_valid & ~ok & finite), STALLED, 0) | jnp.where(finite, 0, NONFINITE)
        x_next = x.at[index].set(moved)
        record = dict(
            base_record, step=delta, eigenvalue=jnp.where(ok, quad, 0.0), status=status.astype(jnp.int32),
            stalls=state.stalls, h=jnp.linalg.norm(moved - current), error=jnp.full((), jnp.nan, x.dtype),
            corrections=jnp.zeros((), jnp.int32),
        )
        new_state = replace_state(
            state, x=x_next, key=next_key, iteration=state.iteration + 1,
            stalls=state.stalls + (status != 0), arc_length=state.arc_length + jnp.linalg.norm(moved - current),
        )
        return new_state, record
    return _continuation_step(
        f, cfg, guide, simexp, state, args, index, valid, lo, hi, target, target_output, goal,
        y=y, jac=jac, factor=factor, spec=spec, noise_b=noise_b, pick_keys=pick_keys, block_valid=block_valid,
        previous=previous, next_key=next_key, base_record=base_record, finite_spectrum=finite_spectrum,
    )


def _continuation_step(
    f: Callable[..., jax.Array], cfg: ExploreConfig, guide: str, simexp: Any, state: ExplorationState,
    args: tuple[Any, ...], index: jax.Array, valid: jax.Array, lo: jax.Array, hi: jax.Array, target: jax.Array,
    target_output: jax.Array, goal: jax.Array, *, y: jax.Array, jac: jax.Array | None, factor: jax.Array | None,
    spec: Spectrum, noise_b: jax.Array, pick_keys: jax.Array, block_valid: jax.Array, previous: jax.Array,
    next_key: jax.Array, base_record: Record, finite_spectrum: Callable[[Spectrum], jax.Array],
) -> tuple[ExplorationState, Record]:
    """The continuation step (see the module docstring): predictor, corrector, active set, control, events."""
    x = state.x
    dtype = x.dtype
    n, d = x.shape
    m = index.shape[0]
    current = x[index]
    lo_s, hi_s = lo[index], hi[index]
    k = y.shape[0]
    on = cfg.measure
    phi_anchor = measured_outputs(state.anchor, on)
    simexp_static = cfg.algorithm == "simexp"
    arc = cfg.arc_length_steps
    eta = jnp.asarray(cfg.eta, dtype)
    h = jnp.where(jnp.isnan(state.h), eta, state.h)
    token_valid = jnp.broadcast_to(valid[:, None], (m, d))

    def spectrum_on(free: jax.Array) -> Spectrum:
        if jac is None or factor is None:  # matfree: no active set, no correction (refused at configuration)
            return spec
        return REDUCED_SPECTRA[cfg.spectrum](factor_blocks(jac * free[None].astype(dtype), factor, cfg.blocks))

    def propose(free: jax.Array) -> dict[str, Any]:
        """The move (m, d) and what it is made of, with the coordinates outside ``free`` frozen."""
        sp = spectrum_on(free)
        freef = free.astype(dtype)
        dirs, delta, quad, ok = jax.vmap(partial(block_move, cfg, simexp))(
            sp.eigenvalues, sp.eigenvectors, _blocks_of(_tokens_of(noise_b, m, d) * freef, cfg.blocks), pick_keys,
            previous * _blocks_of(freef, cfg.blocks),
        )
        ok = ok & block_valid
        if guide == "target":
            assert jac is not None  # targets need the Jacobian (refused with matfree)
            jac_f = (jac * freef[None]).reshape(k, m * d)
            tangent, length = _unit(min_norm_solve(jac_f, _target_change(y, target, target_output)))
            tangent = tangent.reshape(m, d)
            ok = jnp.broadcast_to(length > 0, ok.shape) & block_valid
            quad = jnp.zeros_like(quad)
            reach = jnp.asarray(jnp.inf, dtype)
        elif guide == "goal":
            toward = _blocks_of((goal[index] - current) * freef, cfg.blocks)
            nonnull = jax.vmap(partial(visible_mask, cfg, dtype=dtype))(sp.eigenvalues)
            along = jax.vmap(_project_off)(jnp.where(nonnull[..., None], sp.eigenvectors, 0.0), toward)
            tangent, reach = _unit(_tokens_of(along, m, d))
            reachable = reach > numerical_floor(dtype) * (1 + jnp.linalg.norm(toward))
            ok = jnp.broadcast_to(reachable, ok.shape) & block_valid
            quad = jnp.zeros_like(quad)
        else:
            per_block = jnp.where(ok[:, None], dirs, 0.0)
            tangent = _tokens_of(per_block, m, d)
            reach = jnp.asarray(jnp.inf, dtype)
        if arc:
            unit, norm = _unit(tangent)
            length = jnp.minimum(h, reach)
            move = jnp.where(norm > 0, length, 0.0) * unit
            step_sizes = jnp.linalg.norm(_blocks_of(move, cfg.blocks), axis=1)
        else:
            move = _tokens_of(jnp.where(ok[:, None], delta[:, None] * dirs, 0.0), m, d)
            step_sizes = jnp.where(ok, delta, 0.0)
        correction = jnp.zeros_like(move)
        if cfg.corrector is not None:
            assert jac is not None  # the corrector needs the Jacobian (refused with matfree)
            a = measure_jacobian(y, jac * freef[None], on).reshape(k, m * d)
            residual = measured_outputs(y, on) - phi_anchor
            correction = -min_norm_solve(a, residual).reshape(m, d)
        move = move * token_valid
        correction = correction * token_valid
        return dict(move=move, correction=correction, tangent=tangent, step=step_sizes, quad=quad, ok=ok, spec=sp)

    free = token_valid
    proposal = propose(free)
    if cfg.box == "active":
        push = proposal["move"] + proposal["correction"]
        outward = ((current <= lo_s) & (push < 0)) | ((current >= hi_s) & (push > 0))
        free = free & ~outward
        proposal = propose(free)
    ok = proposal["ok"]
    finite = jnp.isfinite(y).all() & finite_spectrum(proposal["spec"])
    # the corrector in an active box solves the bound-constrained least-norm problem: its
    # correction may also move a coordinate at a bound inward (see manifold_jax.box_solve)
    bounded = cfg.corrector is not None and cfg.box == "active"
    # an uncorrectable Fixed step is retried shorter (SiMEC with chord corrections)
    retry = isinstance(cfg.step_rule, Fixed) and cfg.corrector is not None

    def start_at(scale: jax.Array | None) -> jax.Array:
        """The predicted and first-corrected selected tokens (m, d), the move scaled by ``scale``."""
        move = proposal["move"] if scale is None else proposal["move"] * scale
        if not bounded:
            moved = jnp.clip(current + move + proposal["correction"], lo_s, hi_s)
            return jnp.where(token_valid, moved, current)
        assert jac is not None  # the corrector needs the Jacobian (refused with matfree)
        start = jnp.where(token_valid, jnp.clip(current + move, lo_s, hi_s), current)
        a = measure_jacobian(y, jac, on)
        residual = measured_outputs(y, on) - phi_anchor + a.reshape(k, m * d) @ (start - current).reshape(-1)
        fix = box_min_norm_correction(a, residual, start, lo_s, hi_s, token_valid)
        return jnp.where(token_valid, jnp.clip(start + fix, lo_s, hi_s), current)

    moved = start_at(None)

    # ---- error of the step and chord corrections (one forward pass each)
    evaluate = isinstance(cfg.step_rule, Adaptive) or (cfg.corrector is not None and cfg.corrector.max_iters > 0)
    error = jnp.full((), jnp.nan, dtype)
    corrections = jnp.zeros((), jnp.int32)
    scale = jnp.ones((), dtype)
    # the corrector iterates to its own tolerance; an adaptive step is accepted at the controller's
    corrector_tol = cfg.corrector.tol if cfg.corrector is not None else jnp.inf
    tol = jnp.asarray(cfg.step_rule.tol if isinstance(cfg.step_rule, Adaptive) else corrector_tol, dtype)
    chord_tol = jnp.asarray(corrector_tol, dtype) if cfg.corrector is not None else tol
    if evaluate:
        assert jac is not None  # evaluated steps need the Jacobian (refused with matfree)
        freef = free.astype(dtype)

        def outputs_at(sel: jax.Array) -> jax.Array:
            return measured_outputs(f(x.at[index].set(sel), *args), on)

        if simexp_static:
            predicted = measured_outputs(y, on) + (
                measure_jacobian(y, jac, on).reshape(k, m * d) @ (moved - current).reshape(-1)
            )
            error = jnp.max(jnp.abs(outputs_at(moved) - predicted))
        else:
            # in an active box the chord sees every coordinate and the bounds decide which move
            chord = measure_jacobian(y, jac if bounded else jac * freef[None], on).reshape(k, m * d)
            max_iters = cfg.corrector.max_iters if cfg.corrector is not None else 0
            # with a corrector the error is the distance from x0's level; without one, the
            # change of this step alone (the drift of the accepted steps adds up)
            level = phi_anchor if cfg.corrector is not None else measured_outputs(y, on)

            def correction_at(sel: jax.Array, residual: jax.Array) -> jax.Array:
                """The chord correction: least-norm, and inside the box when it is an active set."""
                if bounded:
                    return box_min_norm_correction(chord.reshape(k, m, d), residual, sel, lo_s, hi_s, token_valid)
                return -min_norm_solve(chord, residual).reshape(m, d) * token_valid

            moved, error, corrections = _chord_corrections(
                outputs_at, correction_at, moved, level, chord_tol, max_iters, token_valid, lo_s, hi_s
            )
            if retry:
                moved, error, corrections, scale = _retry_shorter(
                    lambda s: _chord_corrections(
                        outputs_at, correction_at, start_at(s), level, chord_tol, max_iters, token_valid, lo_s, hi_s
                    ),
                    moved, error, corrections, tol,
                )
        finite = finite & jnp.isfinite(error)
    within = error <= tol
    accepted = jnp.ones((), bool)
    h_next = h
    status = jnp.zeros((), jnp.int32)
    if isinstance(cfg.step_rule, Adaptive):
        rule = cfg.step_rule
        h_min, h_max = rule.limits(cfg.eta)
        accepted = within
        if cfg.corrector is not None and not simexp_static:
            grown = jnp.where(corrections <= 1, h * rule.grow, h)
        else:
            factor = GROWTH_SAFETY * jnp.sqrt(tol / jnp.maximum(error, numerical_floor(dtype) * tol))
            grown = h * jnp.clip(factor, rule.shrink, rule.grow)
        at_min = h <= h_min * (1 + 1e-6)
        h_next = jnp.clip(jnp.where(accepted, grown, h * rule.shrink), h_min, h_max).astype(dtype)
        status = status | jnp.where(accepted, 0, REJECTED) | jnp.where(~accepted & at_min, UNCONVERGED, 0)
    elif evaluate:
        status = status | jnp.where(within, 0, UNCONVERGED)
    # a Fixed step still uncorrectable at 1/2^MAX_HALVINGS of its length is given up: the point stays
    given_up = (~within & finite) if (retry and evaluate and not simexp_static) else jnp.zeros((), bool)

    # ---- events, stalls, what actually happens
    stop_now = _events(cfg.stop, y, state.anchor, x, state.origin, target) if cfg.stop else jnp.zeros((), bool)
    stopped = state.stopped | stop_now
    stalled = jnp.any(block_valid & ~ok & finite)
    go = finite & accepted & ~given_up & ~stopped
    moved = jnp.where(go, moved, current)
    x_next = x.at[index].set(moved)
    status = (
        status
        | jnp.where(stalled & ~stopped, STALLED, 0)
        | jnp.where(finite, 0, NONFINITE)
        | jnp.where(stopped, STOPPED, 0)
    )
    status = jnp.where(stopped, STOPPED, status)
    step_length = jnp.linalg.norm(moved - current)
    tangent_next = jnp.where(go & jnp.any(ok), proposal["tangent"], state.tangent[index])
    if retry:  # after a given-up step a coherent walk draws a fresh direction
        tangent_next = jnp.where(given_up & ~stopped, 0.0, tangent_next)
    closest, closest_iteration, closest_x = state.closest, state.closest_iteration, state.closest_x
    if guide == "goal":
        for point, when in ((x, state.iteration), (x_next, state.iteration + 1)):
            dist = jnp.linalg.norm(point - goal)
            better = dist < closest
            closest = jnp.where(better, dist, closest)
            closest_iteration = jnp.where(better, when, closest_iteration)
            closest_x = jnp.where(better, point, closest_x)
    record = dict(
        base_record,
        step=jnp.where(go, proposal["step"] * scale if retry else proposal["step"], 0.0).astype(dtype),
        eigenvalue=jnp.where(ok, proposal["quad"], 0.0).astype(dtype),
        status=status.astype(jnp.int32),
        stalls=state.stalls,
        h=(h * scale if retry else h) if arc else step_length,
        error=error,
        corrections=corrections,
    )
    counted = (status & (STALLED | NONFINITE)) != 0
    new_state = replace_state(
        state,
        x=x_next,
        key=jnp.where(stopped, state.key, next_key),  # a stopped item is frozen, its key too
        iteration=state.iteration + 1,
        stalls=state.stalls + counted,
        tangent=state.tangent.at[index].set(tangent_next),
        h=jnp.where(stopped, h, h_next).astype(dtype),
        rejected=state.rejected + (~accepted & finite & ~stopped),
        arc_length=state.arc_length + step_length,
        stopped=stopped,
        stop_iteration=jnp.where(stop_now & ~state.stopped, state.iteration, state.stop_iteration),
        closest=closest,
        closest_iteration=closest_iteration,
        closest_x=closest_x,
    )
    return new_state, record

# --------------------------------------------------------------------------- the corrector


MAX_HALVINGS = 4
"""Times an uncorrectable Fixed step is retried at half the length before it is given up."""


def _chord_corrections(
    outputs_at: Callable[[jax.Array], jax.Array], correction_at: Callable[[jax.Array, jax.Array], jax.Array],
    start: jax.Array, level: jax.Array, tol: jax.Array, max_iters: int, token_valid: jax.Array, lo: jax.Array,
    hi: jax.Array,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Chord corrections from the selected tokens ``start`` (m, d) until max |phi(y) - level| <= tol.

    One forward pass each, at most ``max_iters``; returns the corrected tokens, the error at
    them and the corrections used.
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


def _retry_shorter(
    attempt: Callable[[jax.Array], tuple[jax.Array, jax.Array, jax.Array]], moved: jax.Array, error: jax.Array,
    corrections: jax.Array, tol: jax.Array,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """A step whose error stays above ``tol`` tried again with its move halved, MAX_HALVINGS times at most.

    ``attempt`` maps the move's scale to (tokens, error, corrections); returns those of the
    last attempt and its scale (1 when the first one converged).
    """
    Retry = tuple[jax.Array, jax.Array, jax.Array, jax.Array]

    def cond(c: Retry) -> jax.Array:
        return ~(c[1] <= tol) & (c[3] > 0.5**MAX_HALVINGS)

    def body(c: Retry) -> Retry:
        scale = c[3] * 0.5
        return (*attempt(scale), scale)

    return jax.lax.while_loop(cond, body, (moved, error, corrections, jnp.ones((), error.dtype)))



# --------------------------------------------------------------------------- the public step


def _check_step_inputs(f: Callable[..., jax.Array], state: ExplorationState, args: tuple[Any, ...],
                       bounds: tuple[Any, Any] | None, target: Any) -> None:
    """One-line errors naming the argument for what :func:`step` cannot take (values only where concrete)."""
    if state.x.dtype not in (jnp.float32, jnp.float64):
        raise TypeError(f"state.x must be a float32 or float64 array, got dtype {state.x.dtype}")
    k = output_size(f, state.x, args)
    if state.anchor.shape != (k,):
        raise ValueError(f"state.anchor has shape {tuple(state.anchor.shape)} but f returns {k} outputs: build the "
                         "state with init_state(x0, key, f=f, args=args)")
    check_finite("state.anchor", state.anchor)
    if target is not None:
        t = jnp.asarray(target)
        if jnp.issubdtype(t.dtype, jnp.integer):
            if t.shape != ():
                raise ValueError(f"target as a class must be one index, got shape {tuple(t.shape)}")
            if is_concrete((t, state.anchor)):
                cls = int(t)
                if not 0 <= cls < k:
                    raise ValueError(f"target class {cls} is out of range: f has {k} outputs (0..{k - 1})")
                if cls == int(jnp.argmax(state.anchor)):
                    raise ValueError(f"target class {cls} is already the predicted class at x0; choose another class")
        elif jnp.issubdtype(t.dtype, jnp.floating):
            if t.shape != (k,):
                raise ValueError(f"target as outputs must have shape ({k},), got {tuple(t.shape)}")
            check_finite("target", t)
        else:
            raise TypeError(f"target must be a class index or an output vector ({k},), got dtype {t.dtype}")
    if bounds is not None and is_concrete(bounds):
        try:
            lo, hi = (np.asarray(b, np.float64) for b in bounds)
            lo, hi = np.broadcast_to(lo, state.x.shape), np.broadcast_to(hi, state.x.shape)
        except (TypeError, ValueError):
            raise ValueError(f"bounds must be a pair (lo, hi) broadcastable to x {tuple(state.x.shape)}") from None
        if np.isnan(lo).any() or np.isnan(hi).any():
            raise ValueError("bounds hold NaN")
        if (lo > hi).any():
            raise ValueError("bounds: lo exceeds hi at some position")


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
    (SiMExp), ``goal`` an input (n, d) (SiMEC). Only shapes are checked here; the loop
    (:func:`~manifold_jax.explore.explore`) checks values too.
    """
    if not isinstance(config, ExploreConfig):
        raise TypeError(f"config must be an ExploreConfig, got {type(config).__name__}")
    if state.x.ndim != 2:
        raise ValueError(
            f"step takes one item's state, x (n, d); got x of shape {tuple(state.x.shape)} (vmap it for a batch)"
        )
    if state.anchor.shape[-1] == 0:
        raise ValueError("the state has no anchor f(x0): build it with init_state(x0, key, f=f, args=args)")
    x = state.x
    n, d = x.shape
    dtype = x.dtype
    args = args if isinstance(args, tuple) else (args,)
    _check_step_inputs(f, state, args, bounds, target)
    if select is None:
        index, valid = jnp.arange(n, dtype=jnp.int32), jnp.ones((n,), bool)
    elif isinstance(select, jax.core.Tracer) or (hasattr(select, "dtype") and jnp.asarray(select).dtype == jnp.bool_):
        valid = jnp.asarray(select, bool)
        if valid.shape != (n,):
            raise ValueError(f"select as a mask must have shape ({n},), got {tuple(valid.shape)}")
        index = jnp.arange(n, dtype=jnp.int32)
    else:
        from manifold_jax.selection import token_selection

        sel = token_selection(select, n, None)
        index, valid = jnp.asarray(sel.index[0]), jnp.asarray(sel.valid[0])
    if bounds is None:
        lo, hi = jnp.full((n, d), -jnp.inf, dtype), jnp.full((n, d), jnp.inf, dtype)
    else:
        lo, hi = (jnp.broadcast_to(jnp.asarray(b, dtype), (n, d)) for b in bounds)
    guide = "none"
    target_cls, target_out, goal_arr = jnp.asarray(-1, jnp.int32), jnp.zeros((0,), dtype), jnp.zeros((0, d), dtype)
    if target is not None:
        guide = "target"
        t = jnp.asarray(target)
        if jnp.issubdtype(t.dtype, jnp.integer):
            target_cls = t.astype(jnp.int32).reshape(())
        else:
            target_out = t.astype(dtype).reshape(state.anchor.shape)
    if goal is not None:
        guide = "goal"
        goal_arr = jnp.asarray(goal, dtype)
        if goal_arr.shape != (n, d):
            raise ValueError(f"goal must have x's shape ({n}, {d}), got {tuple(goal_arr.shape)}")
    simexp = config.algorithm == "simexp"
    return item_step(f, config, guide, simexp, state, args, index, valid, lo, hi, target_cls, target_out, goal_arr)


__all__ = [
    "NONFINITE",
    "REJECTED",
    "STALLED",
    "STOPPED",
    "UNCONVERGED",
    "block_move",
    "canonical_sign",
    "visible_mask",
    "item_step",
    "pick_index",
    "step",
]
