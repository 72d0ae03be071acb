"""The exploration loop: ``lax.scan`` inside ``jit``, vmapped over a batch, run in chunks.

Between compiled chunks a progress bar advances and the caller may checkpoint
(``on_chunk``). The state is explicit, so a run resumed from its state reproduces the
uninterrupted trajectory bit for bit. Items whose stop event fired freeze; the loop ends
early once every item has stopped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from functools import partial
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from manifold_jax._callables import StaticPart, merge_callable
from manifold_jax._checks import check_count
from manifold_jax._xla import jit
from manifold_jax.explore.devices import (
    Devices,
    local_items,
    pad_batch,
    padded_size,
    place,
    resolve_devices,
    to_host,
)
from manifold_jax.explore.iteration import NONFINITE, STALLED, Record, item_step
from manifold_jax.explore.options import AUTO_BATCH_ROWS, ExploreConfig, ProbabilityLevel
from manifold_jax.explore.problem import (
    ExplorationState,
    Problem,
    drop_batch_axis,
    prepare,
    replace_state,
)
from manifold_jax.selection import Select

RECORD_FIELDS: tuple[str, ...] = (
    "x", "y", "step", "eigenvalue", "status", "stalls", "h", "drift", "error", "corrections", "rejected",
    "distance", "arc_length", "goal_distance",
)
"""The per-saved-point fields of a Trajectory, in order (``iteration`` and ``final`` aside)."""


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class Trajectory:
    """Saved points of an exploration and what the engine saw at each (host numpy arrays).

    For S saved points (iterations 0, s, 2s, ..., K) and nb metric blocks:
    x (S, n, d); y (S, k) outputs f(x); step (S, nb) the step size (reference and paper
    rules) or length of the move (arc-length rules) per block; eigenvalue (S, nb) the
    quadratic form v^T g v of the chosen unit direction (the chosen eigenvalue for
    eigenvector choices, ~0 for a null direction), both for the step that leaves the point
    (at iteration K: the step a continuation would take); status (S,) bit flags (STALLED,
    NONFINITE, UNCONVERGED, REJECTED, STOPPED) of that step; stalls (S,) steps that stood
    still before the point; h (S,) the step controller's size (arc-length rules; for a
    Fixed step retried shorter, the length it was taken at) or the length of the move
    (reference rules); drift (S,) max |phi(y) - phi(f(x0))|, phi the
    logits or probabilities the corrector keeps; error (S,) the step's error estimate
    (NaN where none is computed); corrections (S,) chord corrections used; rejected (S,)
    rejected steps before the point; distance (S,) |x - x0|; arc_length (S,) distance
    walked before the point; goal_distance (S,) |x - goal| (NaN without a goal);
    iteration (S,). Batched runs put the batch axis first on every field but
    ``iteration``. ``final`` is the state to resume from: it also says where each item
    stopped (``final.stop_iteration``) and its closest approach to a goal.
    """

    x: np.ndarray
    y: np.ndarray
    step: np.ndarray
    eigenvalue: np.ndarray
    status: np.ndarray
    stalls: np.ndarray
    h: np.ndarray
    drift: np.ndarray
    error: np.ndarray
    corrections: np.ndarray
    rejected: np.ndarray
    distance: np.ndarray
    arc_length: np.ndarray
    goal_distance: np.ndarray
    iteration: np.ndarray
    final: ExplorationState

    @property
    def stop_iteration(self) -> np.ndarray:
        """Iteration at which each item's stop event fired, -1 where none did: () or (B,)."""
        return np.asarray(self.final.stop_iteration)

    def extend(self, continuation: Trajectory) -> Trajectory:
        """This trajectory followed by a run resumed from its ``final`` state.

        The continuation's first point is this trajectory's last one; its record is kept
        (it is the one an uninterrupted run would have saved there).
        """
        first, last = int(continuation.iteration[0]), int(self.iteration[-1])
        if first != last:
            raise ValueError(f"the continuation starts at iteration {first}, but this trajectory ends at {last}")
        axis = 1 if self.final.x.ndim == 3 else 0
        parts = {}
        for f in fields(self):
            if f.name == "final":
                continue
            ax = 0 if f.name == "iteration" else axis
            mine = np.take(getattr(self, f.name), np.arange(len(self.iteration) - 1), axis=ax)
            parts[f.name] = np.concatenate([mine, getattr(continuation, f.name)], axis=ax)
        return Trajectory(**parts, final=continuation.final)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Every field as a flat dict of arrays (the final state as ``final_*``), for .npz files."""
        out = {name: np.asarray(getattr(self, name)) for name in (*RECORD_FIELDS, "iteration")}
        out.update({f"final_{k}": np.asarray(v) for k, v in dataclasses.asdict(self.final).items()})
        return out

    @classmethod
    def from_arrays(cls, arrays: Any) -> Trajectory:
        """Inverse of :meth:`to_arrays`; refuses arrays that miss a field."""
        names = (*RECORD_FIELDS, "iteration", *(f"final_{f.name}" for f in fields(ExplorationState)))
        missing = [name for name in names if name not in arrays]
        if missing:
            raise ValueError(f"not a trajectory: missing {', '.join(missing)}")
        final = ExplorationState(**{f.name: jnp.asarray(arrays[f"final_{f.name}"]) for f in fields(ExplorationState)})
        return cls(**{name: np.asarray(arrays[name]) for name in (*RECORD_FIELDS, "iteration")}, final=final)


# --------------------------------------------------------------------------- compiled chunks


def slice_size(batch_size: int | None, batch: int, rows_per_item: int) -> int | None:
    """Items per vmapped slice (None: the whole batch at once), balanced over the slices.

    ``batch_size`` None picks the largest slice within AUTO_BATCH_ROWS cotangent rows.
    """
    wanted = batch_size if batch_size is not None else max(1, AUTO_BATCH_ROWS // rows_per_item)
    if wanted >= batch:
        return None
    slices = -(-batch // wanted)
    return -(-batch // slices)


def in_slices(step: Callable[..., Any], size: int | None) -> Callable[..., Any]:
    """``step`` over a batch (leading axis of every argument) in slices of ``size`` items.

    One vmapped slice inside ``lax.map`` (a single copy of the step in the program); the
    batch is padded to a whole number of slices with copies of item 0, whose results are
    dropped. (``lax.map``'s own remainder handling compiles a second copy of the step;
    with XLA's CPU options of manifold_jax._xla that program was seen to hang.)
    """
    if size is None:
        return step

    def sliced(*args: Any) -> Any:
        batch = jax.tree.leaves(args)[0].shape[0]
        slices = -(-batch // size)
        pad = slices * size - batch

        def split(a: jax.Array) -> jax.Array:
            if pad:
                a = jnp.concatenate([a, jnp.repeat(a[:1], pad, axis=0)])
            return a.reshape(slices, size, *a.shape[1:])

        out = jax.lax.map(lambda t: step(*t), jax.tree.map(split, args))
        return jax.tree.map(lambda a: a.reshape(slices * size, *a.shape[2:])[:batch], out)

    return sliced


@jit(static_argnames=("static", "cfg", "guide"))
def _advance(
    dynamic: list[Any],
    state: ExplorationState,
    inputs: tuple[Any, ...],
    simexp: jax.Array,
    active: jax.Array,
    want_end: jax.Array,
    *,
    static: StaticPart,
    cfg: ExploreConfig,
    guide: str,
) -> tuple[ExplorationState, Record]:
    """Run ``active`` (<= cfg.blocks_per_chunk) blocks of ``save_every`` steps on a batched state.

    inputs = Problem.item_inputs(), batch axis first. Returns the new state and
    blocks_per_chunk + 1 records: the point at the start of each active block and, at
    position ``active`` when ``want_end``, the final point with the step a continuation
    would take (computed, not taken); the records past those are filler. A block that
    starts with every item stopped computes its record and leaves the state as it is, so
    the state ends at the first saved point after the last stop. The step is traced
    once, so the compiled program holds one copy of the model's Jacobian. Each block is a
    loop with a traced trip count (save_every, 1 or 0 steps), not a ``lax.cond`` around
    the step: on XLA's CPU backend a step inside a conditional ran 1.5x to 1.8x slower
    (MiniLM, 16 tokens: 34 ms against 19 ms).
    """
    f = merge_callable(dynamic, static)
    batched_step = in_slices(jax.vmap(partial(item_step, f, cfg, guide, simexp)), cfg.batch_size)

    def one(st: ExplorationState) -> tuple[ExplorationState, Record]:
        # every leaf gets the batch axis (the shared iteration too) so that slices cut them alike
        spread = replace_state(st, iteration=jnp.broadcast_to(st.iteration, st.stalls.shape))
        new, rec = batched_step(spread, *inputs)
        return replace_state(new, iteration=st.iteration + 1), rec

    blank_rec = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(lambda s: one(s)[1], state))

    def block(st: ExplorationState, i: jax.Array) -> tuple[ExplorationState, Record]:
        frozen = jnp.all(st.stopped)
        end = (i == active) & (want_end | frozen)
        steps = jnp.where(i < active, jnp.where(frozen, 1, cfg.save_every), jnp.where(end, 1, 0))

        def step(j: jax.Array, carry: tuple[ExplorationState, Record]) -> tuple[ExplorationState, Record]:
            s, first = carry
            s_next, rec = one(s)
            # keep the record of the block's first step: the one that leaves its start point
            return s_next, jax.tree.map(lambda new, old: jnp.where(j == 0, new, old), rec, first)

        st_end, first = jax.lax.fori_loop(0, steps, step, (st, blank_rec))
        # the end block, and blocks after every item stopped, compute their record only
        moves = (i < active) & ~frozen
        st_out = jax.tree.map(lambda new, old: jnp.where(moves, new, old), st_end, st)
        return st_out, {**first, "x": st.x, "stalls": st.stalls}

    return jax.lax.scan(block, state, jnp.arange(cfg.blocks_per_chunk + 1))


# --------------------------------------------------------------------------- driver


def _check_guides(cfg: ExploreConfig, problem: Problem) -> None:
    """Refuse guides that do not fit the algorithm or the step rule, and stop events out of range."""
    if problem.guide == "target" and cfg.algorithm != "simexp":
        raise ValueError("target= walks out of x0's class toward another output: it is a SiMExp option")
    if problem.guide == "goal" and cfg.algorithm != "simec":
        raise ValueError("goal= walks inside x0's class toward another input: it is a SiMEC option")
    if problem.guide != "none":
        if cfg.spectrum == "matfree":
            raise ValueError(f"{problem.guide}= needs the Jacobian: use spectrum='gram', 'svd' or 'dense'")
        if not cfg.arc_length_steps:
            raise ValueError(
                f"{problem.guide}= moves along one joint direction, which the per-block step rules do not size: "
                "use step_rule='fixed' (eta is the length of each move) or 'adaptive'"
            )
        if cfg.direction != "random":
            raise ValueError(f"{problem.guide}= sets the direction itself; leave direction at 'random'")
    for event in cfg.stop:
        if isinstance(event, ProbabilityLevel) and event.cls is not None and event.cls >= problem.k:
            raise ValueError(f"ProbabilityLevel(cls={event.cls}) is out of range: f has {problem.k} outputs")


def check_exploration(
    f: Callable[..., jax.Array],
    start: Any,
    *,
    algorithm: Literal["simec", "simexp"],
    steps: int,
    key: Any = None,
    args: Any = (),
    select: Select = None,
    bounds: tuple[Any, Any] | None = None,
    target: Any = None,
    goal: Any = None,
    **options: Any,
) -> tuple[ExploreConfig, Problem, ExplorationState]:
    """Every check :func:`explore` makes before it compiles (options, steps, inputs, box, guides),
    as one-line errors naming the argument; returns the configuration, the problem and the start state.

    A caller that writes before it explores (a study) runs it first, so that nothing is written
    for a run that cannot start.
    """
    cfg = ExploreConfig(algorithm=algorithm, **options)
    steps = check_count("steps", steps)
    if steps % cfg.save_every:
        raise ValueError(f"steps ({steps}) must be a multiple of save_every ({cfg.save_every})")
    if steps > np.iinfo(np.int32).max - 1:
        raise ValueError(f"steps must be below 2**31 (the iteration counter is int32), got {steps}")
    problem, state = prepare(f, start, key=key, args=args, select=select, bounds=bounds, target=target, goal=goal)
    _check_guides(cfg, problem)
    if cfg.blocks == "joint" and len(set(problem.selection.counts.tolist())) > 1:
        raise ValueError(
            "blocks='joint' needs the same number of selected tokens in every batch item, "
            f"got {sorted(set(problem.selection.counts.tolist()))}"
        )
    return cfg, problem, state


def explore(
    f: Callable[..., jax.Array],
    start: Any,
    *,
    algorithm: Literal["simec", "simexp"],
    steps: int,
    key: Any = None,
    args: Any = (),
    select: Select = None,
    bounds: tuple[Any, Any] | None = None,
    target: Any = None,
    goal: Any = None,
    devices: Devices = None,
    gather: bool = True,
    progress: bool = False,
    label: str | None = None,
    on_chunk: Callable[[ExplorationState, Trajectory], None] | None = None,
    on_compiled: Callable[[], None] | None = None,
    **options: Any,
) -> Trajectory:
    """Explore from x0 (n, d) / (B, n, d), or continue from an ExplorationState, for ``steps``.

    f(x, *args) -> y (k,) is the model split at its embeddings (a pytree callable such as
    ``model.head`` passes its weights as traced arguments). ``args`` are batched with x0.
    ``target`` (SiMExp): a class index, one per item, or target outputs (k,) / (B, k) to
    walk toward along J^+ dy (a counterfactual path); ``goal`` (SiMEC): an input (n, d) /
    (B, n, d) to approach inside x0's class. ``devices`` ("all", a count, a list or a Mesh)
    shards a batch over a mesh of devices, which may span several processes (see
    :mod:`manifold_jax.explore.devices`); results equal a single-device run's. Over several
    processes ``gather=False`` returns (and hands ``on_chunk``) only this process's items,
    ``process_items(B, devices)``; ``combine`` joins the parts. ``options`` are the fields
    of ExploreConfig.
    ``on_chunk(state, chunk_trajectory)`` runs after every compiled chunk (for checkpoints);
    ``on_compiled()`` runs once the program is compiled and the start checked, before the
    first chunk (so that a caller can time compilation and iterations apart). ``progress``
    shows a progress bar named ``label`` (default: the algorithm). The run ends early when
    every item has stopped.
    """
    cfg, problem, state = check_exploration(f, start, algorithm=algorithm, steps=steps, key=key, args=args,
                                            select=select, bounds=bounds, target=target, goal=goal, **options)
    steps = int(steps)
    n = state.x.shape[1]
    mesh_devices = resolve_devices(devices)
    inputs = problem.item_inputs()
    batch = problem.batch
    if mesh_devices is None:
        cfg = dataclasses.replace(cfg, batch_size=slice_size(cfg.batch_size, batch, problem.k * n))
    else:  # one vmapped slice per device: the mesh does the slicing
        size = padded_size(batch, mesh_devices)
        cfg = dataclasses.replace(cfg, batch_size=None)
        state = place(pad_batch(state, size), mesh_devices, batched=True)
        state = replace_state(state, iteration=place(state.iteration, mesh_devices, batched=False))
        inputs = place(pad_batch(inputs, size), mesh_devices, batched=True)
    dynamic = place(problem.dynamic, mesh_devices, batched=False)
    run = partial(
        _advance, dynamic, inputs=inputs, simexp=jnp.bool_(cfg.algorithm == "simexp"),
        static=problem.static, cfg=cfg.compiled, guide=problem.guide,
    )
    batched = problem.batched

    local = not gather and batched and mesh_devices is not None and jax.process_count() > 1

    def host(chunk_state: ExplorationState, records: Record) -> tuple[ExplorationState, dict[str, np.ndarray]]:
        """Host copies, the padding dropped (records are (S, B, ...), the state (B, ...)): every item,
        or with ``local`` this process's items."""
        if local:
            assert mesh_devices is not None
            recs = local_items(records, mesh_devices, batch, axis=1)
            st = local_items(chunk_state, mesh_devices, batch, axis=0)
        else:
            recs = {k: v[:, :batch] for k, v in to_host(records).items()}
            st = jax.tree.map(lambda a: a[:batch] if a.ndim else a, to_host(chunk_state))
        return jax.tree.map(jnp.asarray, st), recs

    def stops(chunk_state: ExplorationState) -> tuple[np.ndarray, np.ndarray]:
        """Which items stopped, and where, gathered: every process takes the same decisions."""
        stopped, where = to_host((chunk_state.stopped, chunk_state.stop_iteration))
        return np.asarray(stopped)[:batch], np.asarray(where)[:batch]

    # the bar is up while the program compiles (seconds to a minute), saying so
    bar = tqdm(total=steps, disable=not progress, unit="it", desc=label or cfg.algorithm, leave=False,
               postfix="compiling")
    try:
        _, first = run(state, active=jnp.int32(0), want_end=jnp.bool_(True))
        _check_start(cfg, {k: v[0, :batch] for k, v in to_host({"y": first["y"], "status": first["status"]}).items()},
                     batched)
    except BaseException:
        bar.close()
        raise
    bar.set_postfix_str("", refresh=False)
    if on_compiled is not None:
        on_compiled()

    total_blocks = steps // cfg.save_every
    done = 0
    pieces: list[dict[str, np.ndarray]] = []
    try:
        while done < total_blocks:
            active = min(cfg.blocks_per_chunk, total_blocks - done)
            last = done + active == total_blocks
            start_iteration = int(to_host(state.iteration))
            state, saved_device = run(state, active=jnp.int32(active), want_end=jnp.bool_(last))
            user_state, saved = host(state, saved_device)
            ran = (int(user_state.iteration) - start_iteration) // cfg.save_every
            stopped, stopped_at = stops(state)
            finished = bool(np.all(stopped))
            kept = ran + 1 if last else ran
            if finished:
                # every item is frozen since its stop: end at the first saved point at or after
                # the last stop (the frozen state is the same there, its iteration aside)
                last_stop = int(np.max(stopped_at))
                end = max(start_iteration, -(-last_stop // cfg.save_every) * cfg.save_every)
                kept = (end - start_iteration) // cfg.save_every + 1
                user_state = replace_state(user_state, iteration=jnp.asarray(end, jnp.int32))
            chunk = {k: v[:kept] for k, v in saved.items()}
            chunk["iteration"] = start_iteration + cfg.save_every * np.arange(kept)
            done += active
            pieces.append(chunk)
            bar.update(active * cfg.save_every)
            if on_chunk is not None:
                on_chunk(_user_state(user_state, batched), _trajectory([chunk], user_state, batched))
            if finished:
                break
    finally:
        bar.close()
    return _trajectory(pieces, user_state, batched)


def combine(parts: Sequence[Trajectory]) -> Trajectory:
    """The trajectory of a whole batch from the parts that ``explore(..., gather=False)`` left in each
    process (items ``process_items(B, devices)`` each), given in process order.

    Each process saves its part (``to_arrays``, ``np.savez``) and any one of them, or a later
    job, loads them (``Trajectory.from_arrays``) and joins them here.
    """
    if not parts:
        raise ValueError("combine: give at least one part")
    if any(not np.array_equal(p.iteration, parts[0].iteration) for p in parts):
        raise ValueError("combine: the parts saved different iterations (not parts of one exploration)")
    if any(np.asarray(p.final.x).ndim != 3 for p in parts):
        raise ValueError("combine: the parts must be batched trajectories (x0 of shape (B, n, d))")
    fields_ = {name: np.concatenate([getattr(p, name) for p in parts]) for name in RECORD_FIELDS}
    final = jax.tree.map(lambda *a: a[0] if np.ndim(a[0]) == 0 else jnp.concatenate(a),
                         *(p.final for p in parts))
    return Trajectory(**fields_, iteration=parts[0].iteration, final=final)


def _user_state(state: ExplorationState, batched: bool) -> ExplorationState:
    return state if batched else drop_batch_axis(state)


def _trajectory(pieces: list[dict[str, np.ndarray]], state: ExplorationState, batched: bool) -> Trajectory:
    """Stack chunk records (S, B, ...) into a Trajectory, batch axis first (or removed)."""
    cat = {k: np.concatenate([p[k] for p in pieces]) for k in pieces[0]}
    fields_ = {}
    for name in RECORD_FIELDS:
        arr = np.moveaxis(cat[name], 1, 0)
        fields_[name] = arr if batched else arr[0]
    return Trajectory(**fields_, iteration=cat["iteration"], final=_user_state(state, batched))


def _check_start(cfg: ExploreConfig, record: dict[str, jax.Array], batched: bool) -> None:
    """Refuse to start where f(x0) is not finite or SiMEC has no null direction at x0."""
    y = np.asarray(record["y"])
    status = np.asarray(record["status"])
    where = (lambda b: f" (batch item {b})") if batched else (lambda b: "")
    for b in range(y.shape[0]):
        if not np.isfinite(y[b]).all():
            raise ValueError(f"f(x0) is not finite{where(b)}: {y[b]}")
        if status[b] & NONFINITE:
            raise ValueError(f"the Jacobian of f at x0 is not finite{where(b)}")
        if cfg.algorithm == "simec" and status[b] & STALLED:
            raise ValueError(
                f"threshold {cfg.threshold} leaves no null direction at x0{where(b)} in some "
                "selected block (or its metric is zero): raise the threshold, select other "
                "tokens, or use blocks='joint'"
            )


def simec(f: Callable[..., jax.Array], start: Any, **kwargs: Any) -> Trajectory:
    """SiMEC (Algorithm 1): walk along null directions, staying in x0's equivalence class.

    See :func:`explore` for the arguments and :class:`ExploreConfig` for the options.
    """
    return explore(f, start, algorithm="simec", **kwargs)


def simexp(f: Callable[..., jax.Array], start: Any, **kwargs: Any) -> Trajectory:
    """SiMExp (Algorithm 2): walk along visible directions, leaving x0's equivalence class.

    See :func:`explore` for the arguments and :class:`ExploreConfig` for the options.
    """
    return explore(f, start, algorithm="simexp", **kwargs)


__all__ = [
    "RECORD_FIELDS", "Trajectory", "check_exploration", "combine", "explore", "in_slices", "simec", "simexp",
    "slice_size",
]
