"""The exploration loop: ``lax.scan`` inside ``jit``, vmapped over a batch, run in chunks.

Between compiled chunks a progress bar advances and the caller may checkpoint
(``on_chunk``). The state is explicit, so a run resumed from its state reproduces the
uninterrupted trajectory bit for bit. Items whose stop event fired freeze; the loop ends
early once every item has stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from manifold_jax._callables import filter_jit, merge_callable
from manifold_jax._checks import check_count
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
from manifold_jax.explore.problem import ExplorationState, ItemInputs, Problem, prepare, replace_state
from manifold_jax.explore.trajectory import RECORD_FIELDS, Trajectory, combine, from_records, user_state
from manifold_jax.selection import Select

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


@filter_jit(static_argnames=("cfg",))
def _advance(
    f: Callable[..., jax.Array],
    state: ExplorationState,
    inputs: ItemInputs,
    simexp: jax.Array,
    active: jax.Array,
    want_end: jax.Array,
    *,
    cfg: ExploreConfig,
) -> tuple[ExplorationState, Record]:
    """Run ``active`` (<= cfg.blocks_per_chunk) blocks of ``save_every`` steps on a batched state.

    inputs = Problem.item_inputs(), batch axis first (the guide's kind, its type, is static). Returns the new state and
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
    batched_step = in_slices(jax.vmap(partial(item_step, f, cfg, simexp)), cfg.batch_size)

    def one(st: ExplorationState) -> tuple[ExplorationState, Record]:
        # every leaf gets the batch axis (the shared iteration too) so that slices cut them alike
        spread = replace_state(st, iteration=jnp.broadcast_to(st.iteration, st.stalls.shape))
        new, rec = batched_step(spread, inputs)
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
    run = _Run.start(cfg, problem, state, resolve_devices(devices), gather)
    # the bar is up while the program compiles (seconds to a minute), saying so
    bar = tqdm(total=int(steps), disable=not progress, unit="it", desc=label or cfg.algorithm, leave=False,
               postfix="compiling")
    with _closing_on_error(bar):
        _, first = run.advance(jnp.int32(0), True)
        start_record = to_host({"y": first["y"], "status": first["status"]})
        _check_start(cfg, {k: v[0, :run.batch] for k, v in start_record.items()}, problem.batched)
    bar.set_postfix_str("", refresh=False)
    if on_compiled is not None:
        on_compiled()
    with contextlib.closing(bar):
        return run.chunks(int(steps), bar, on_chunk)


@contextlib.contextmanager
def _closing_on_error(bar: Any) -> Iterator[None]:
    """Close the progress bar when the body raises (and only then)."""
    try:
        yield
    except BaseException:
        bar.close()
        raise


@dataclass
class _Run:
    """One exploration on its way: the compiled chunk with its inputs bound, the state, where results go.

    ``local``: over several processes with ``gather=False``, results keep this process's items only.
    """

    cfg: ExploreConfig
    problem: Problem
    state: ExplorationState
    inputs: ItemInputs
    f: Callable[..., jax.Array]
    mesh_devices: list[Any] | None
    local: bool

    @classmethod
    def start(cls, cfg: ExploreConfig, problem: Problem, state: ExplorationState, mesh_devices: list[Any] | None,
              gather: bool) -> _Run:
        """The run on one device (the batch in slices of ``batch_size``) or on a mesh (a slice per device)."""
        inputs = problem.item_inputs()
        batch = problem.batch
        if mesh_devices is None:
            cfg = dataclasses.replace(cfg, batch_size=slice_size(cfg.batch_size, batch, problem.k * state.x.shape[1]))
        else:  # one vmapped slice per device: the mesh does the slicing
            size = padded_size(batch, mesh_devices)
            cfg = dataclasses.replace(cfg, batch_size=None)
            state = place(pad_batch(state, size), mesh_devices, batched=True)
            state = replace_state(state, iteration=place(state.iteration, mesh_devices, batched=False))
            inputs = place(pad_batch(inputs, size), mesh_devices, batched=True)
        f = merge_callable(place(problem.dynamic, mesh_devices, batched=False), problem.static)
        local = not gather and problem.batched and mesh_devices is not None and jax.process_count() > 1
        return cls(cfg, problem, state, inputs, f, mesh_devices, local)

    @property
    def batch(self) -> int:
        return self.problem.batch

    def advance(self, active: jax.Array, want_end: bool) -> tuple[ExplorationState, Record]:
        """One compiled chunk of ``active`` blocks from the current state (see :func:`_advance`)."""
        return _advance(self.f, self.state, self.inputs, jnp.bool_(self.cfg.algorithm == "simexp"), active,
                        jnp.bool_(want_end), cfg=self.cfg.compiled)

    def host(self, records: Record) -> tuple[ExplorationState, dict[str, np.ndarray]]:
        """Host copies of the state (B, ...) and records (S, B, ...), the padding dropped: every item,
        or with ``local`` this process's items."""
        batch = self.batch
        if self.local:
            assert self.mesh_devices is not None
            recs = local_items(records, self.mesh_devices, batch, axis=1)
            st = local_items(self.state, self.mesh_devices, batch, axis=0)
        else:
            recs = {k: v[:, :batch] for k, v in to_host(records).items()}
            st = jax.tree.map(lambda a: a[:batch] if a.ndim else a, to_host(self.state))
        return jax.tree.map(jnp.asarray, st), recs

    def stops(self) -> tuple[np.ndarray, np.ndarray]:
        """Which items stopped, and where, gathered: every process takes the same decisions."""
        stopped, where = to_host((self.state.stopped, self.state.stop_iteration))
        return np.asarray(stopped)[: self.batch], np.asarray(where)[: self.batch]

    def chunks(self, steps: int, bar: Any, on_chunk: Callable[[ExplorationState, Trajectory], None] | None
               ) -> Trajectory:
        """Every chunk until ``steps`` are taken or every item stopped; the trajectory of the saved points."""
        save_every, batched = self.cfg.save_every, self.problem.batched
        total_blocks = steps // save_every
        done = 0
        pieces: list[dict[str, np.ndarray]] = []
        while done < total_blocks:
            active = min(self.cfg.blocks_per_chunk, total_blocks - done)
            last = done + active == total_blocks
            start_iteration = int(to_host(self.state.iteration))
            self.state, saved_device = self.advance(jnp.int32(active), last)
            now, saved = self.host(saved_device)
            kept = (int(now.iteration) - start_iteration) // save_every + int(last)
            stopped, stopped_at = self.stops()
            finished = bool(np.all(stopped))
            if finished:
                # every item is frozen since its stop: end at the first saved point at or after
                # the last stop (the frozen state is the same there, its iteration aside)
                end = max(start_iteration, -(-int(np.max(stopped_at)) // save_every) * save_every)
                kept = (end - start_iteration) // save_every + 1
                now = replace_state(now, iteration=jnp.asarray(end, jnp.int32))
            chunk = {k: v[:kept] for k, v in saved.items()}
            chunk["iteration"] = start_iteration + save_every * np.arange(kept)
            done += active
            pieces.append(chunk)
            bar.update(active * save_every)
            if on_chunk is not None:
                on_chunk(user_state(now, batched), from_records([chunk], now, batched))
            if finished:
                break
        return from_records(pieces, now, batched)


def _check_start(cfg: ExploreConfig, record: dict[str, jax.Array], batched: bool) -> None:
    """Refuse to start where f(x0) is not finite or SiMEC has no null direction at x0."""
    y = np.asarray(record["y"])
    status = np.asarray(record["status"])
    def where(b: int) -> str:
        return f" (batch item {b})" if batched else ""

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
]  # Trajectory, RECORD_FIELDS and combine live in manifold_jax.explore.trajectory
