"""One prepared problem for every consumer: f split into weights and code, k, batched args, selection, box.

:func:`prepare` checks and normalises what a user hands to an exploration (a point or a
batch, a key or a state to resume, per-item arguments, a token selection, a feasible box,
a target or a goal) into a :class:`Problem` and the :class:`ExplorationState` to start
from. The exploration loop, the gradient baseline and the attribution all take it, so
each input is validated in one place.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from manifold_jax._callables import StaticPart, filter_jit, merge_callable, split_callable
from manifold_jax._checks import check_finite, check_float_array, is_concrete, warn_user
from manifold_jax.explore.guides import Goal, Guide, NoGuide, Target
from manifold_jax.geometry import output_size
from manifold_jax.selection import Select, TokenSelection, token_selection


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class ExplorationState:
    """Where an exploration stands: everything needed to continue it exactly.

    Shapes for one item (a batch puts B first on every field but ``iteration``):
    x (n, d) the point; key (2,) raw PRNG key; iteration () steps taken so far;
    stalls () steps that stood still (STALLED / NONFINITE); origin (n, d) x0; anchor (k,)
    f(x0), the level the corrector keeps; tangent (n, d) the last direction moved along
    (the coherent rule transports it); h () the step size of the step controller (NaN
    until the first step); rejected () rejected steps so far; arc_length () distance
    walked along the path; stopped () whether a stop event fired, at ``stop_iteration``
    (-1 while running); closest () the smallest distance to the goal so far (inf without
    a goal), reached at ``closest_iteration`` with point ``closest_x`` (n, d).
    """

    x: jax.Array
    key: jax.Array
    iteration: jax.Array
    stalls: jax.Array
    origin: jax.Array
    anchor: jax.Array
    tangent: jax.Array
    h: jax.Array
    rejected: jax.Array
    arc_length: jax.Array
    stopped: jax.Array
    stop_iteration: jax.Array
    closest: jax.Array
    closest_iteration: jax.Array
    closest_x: jax.Array

    @property
    def batched(self) -> bool:
        return self.x.ndim == 3


def _raw_key(key: Any) -> jax.Array:
    if key is None:
        raise ValueError("key is required: every random choice flows from an explicit jax.random key")
    arr = jnp.asarray(key)
    if jnp.issubdtype(arr.dtype, jax.dtypes.prng_key):
        impl = str(jax.random.key_impl(arr))
        if "threefry" not in impl:
            raise TypeError(f"key must be a threefry key (jax.random.key(seed) or PRNGKey(seed)): the state stores "
                            f"raw threefry keys, got a typed {impl!r} key")
        raw = jax.random.key_data(arr)
    else:
        raw = arr
    if raw.dtype != jnp.uint32 or raw.shape[-1:] != (2,):
        raise TypeError(f"key must be a jax.random key, got dtype {raw.dtype} and shape {raw.shape}")
    return raw


def init_state(x0: Any, key: Any, *, f: Callable[..., jax.Array] | None = None, args: Any = ()) -> ExplorationState:
    """The state at iteration 0 for x0 (n, d) or a batch (B, n, d).

    A batch with one key splits it into B item keys: item b of a batched run equals a
    single run of x0[b] with key ``jax.random.split(key, B)[b]``. B keys may be given.
    ``f`` and its ``args`` (batched like x0) give the anchor f(x0) the corrector keeps;
    without them the anchor is empty and :func:`~manifold_jax.explore.explore` fills it.
    Works on traced x0 (inside the caller's ``jit``/``vmap``); values are checked where
    x0 is concrete.
    """
    arr = check_float_array("x0", x0, (2, 3))
    if arr.dtype not in (np.float32, np.float64):
        raise TypeError(f"x0 must be a floating-point array of float32 or float64 (the step sizes and spectra need "
                        f"their range), got dtype {arr.dtype}")
    check_finite("x0", arr)
    if 0 in arr.shape:
        raise ValueError(f"x0 must be non-empty, got shape {tuple(arr.shape)}")
    raw = _raw_key(key)
    x = jnp.asarray(arr)
    if x.ndim == 3:
        batch = x.shape[0]
        if raw.ndim == 1:
            raw = jax.random.split(raw, batch)
        elif raw.shape[0] != batch:
            raise ValueError(f"key holds {raw.shape[0]} keys but x0 has a batch of {batch}")
        lead: tuple[int, ...] = (batch,)
    else:
        if raw.ndim != 1:
            raise ValueError(f"an unbatched x0 takes one key, got keys of shape {raw.shape}")
        lead = ()
    if f is None:
        anchor = jnp.zeros((*lead, 0), x.dtype)
    else:
        args_b = batch_args(args, x.shape[0], True) if x.ndim == 3 else (args if isinstance(args, tuple) else (args,))
        anchor = jnp.asarray(_outputs(f, x, args_b), x.dtype)
    zeros_i = jnp.zeros(lead, jnp.int32)
    return ExplorationState(
        x=x, key=raw, iteration=jnp.zeros((), jnp.int32), stalls=zeros_i, origin=x, anchor=anchor,
        tangent=jnp.zeros_like(x), h=jnp.full(lead, jnp.nan, x.dtype), rejected=zeros_i,
        arc_length=jnp.zeros(lead, x.dtype), stopped=jnp.zeros(lead, bool), stop_iteration=zeros_i - 1,
        closest=jnp.full(lead, jnp.inf, x.dtype), closest_iteration=zeros_i - 1, closest_x=x,
    )


@filter_jit
def _outputs(f: Callable[..., jax.Array], x: jax.Array, args: tuple[Any, ...]) -> jax.Array:
    """f(x0) compiled, (k,) or (B, k) for a batch (B, n, d) with batched args: one program, where
    evaluating a model primitive by primitive takes seconds."""
    if x.ndim == 3:
        return jax.vmap(lambda xi, ai: f(xi, *ai))(x, args)
    return f(x, *args)


def batch_args(args: Any, batch: int, batched: bool) -> tuple[Any, ...]:
    """args as a tuple of arrays with a leading batch axis (added when x0 is unbatched)."""
    if not isinstance(args, tuple):
        args = (args,)
    treedef = jax.tree_util.tree_structure(args)
    out = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(args)[0]:
        arr = jnp.asarray(leaf)
        name = "args" + jax.tree_util.keystr(path)
        if batched:
            if arr.ndim == 0 or arr.shape[0] != batch:
                raise ValueError(
                    f"{name} has shape {arr.shape}; with x0 batched ({batch} items) every "
                    f"argument needs the batch axis first"
                )
        else:
            arr = arr[None]
        out.append(arr)
    return jax.tree_util.tree_unflatten(treedef, out)


def box(bounds: Any, x: jax.Array, sel: TokenSelection, batched: bool) -> tuple[jax.Array, jax.Array]:
    """(lo, hi) broadcast to the batched shape (B, n, d); checks order, range and x0's position."""
    if bounds is None:
        inf = jnp.full(x.shape, jnp.inf, x.dtype)
        return -inf, inf
    try:
        lo, hi = bounds
    except (TypeError, ValueError):
        raise ValueError("bounds must be a pair (lo, hi) of arrays broadcastable to x0") from None
    if not is_concrete((lo, hi)):  # traced inside the caller's jit or vmap: shapes only
        shape = x.shape if batched else x.shape[1:]
        return tuple(jnp.broadcast_to(jnp.asarray(b, x.dtype), shape).reshape(x.shape) for b in (lo, hi))  # type: ignore[return-value]
    out = []
    shape = x.shape if batched else x.shape[1:]
    for name, value in (("lo", lo), ("hi", hi)):
        arr = np.asarray(value, dtype=np.float64)
        if np.isnan(arr).any():
            raise ValueError(f"bounds {name} holds NaN")
        try:
            arr = np.broadcast_to(arr, shape)
        except ValueError:
            raise ValueError(f"bounds {name} of shape {arr.shape} does not broadcast to x0 {shape}") from None
        out.append(arr if batched else arr[None])
    lo_np, hi_np = out
    if np.isposinf(lo_np).any() or np.isneginf(hi_np).any():
        raise ValueError("bounds: lo holds +inf or hi holds -inf, which leaves no feasible point")
    if (lo_np > hi_np).any():
        raise ValueError("bounds: lo exceeds hi at some position")
    selected = sel.mask[:, :, None]
    pinned = selected[..., 0] & (lo_np == hi_np).all(axis=2)
    if pinned.any():
        b, i = (int(v) for v in np.argwhere(pinned)[0])
        raise ValueError(
            f"bounds: lo == hi at every coordinate of selected token {i}"
            f"{f' (batch item {b})' if batched else ''}, which cannot move; leave it out of select"
        )
    if not is_concrete(x):
        return jnp.asarray(lo_np, x.dtype), jnp.asarray(hi_np, x.dtype)
    xs = np.asarray(x)
    outside = selected & ((xs < lo_np - 1e-6 * (1 + np.abs(lo_np))) | (xs > hi_np + 1e-6 * (1 + np.abs(hi_np))))
    if outside.any():
        warn_user(
            f"x0 lies outside the bounds at {int(outside.sum())} selected coordinate(s); "
            "the first step clips them into the box"
        )
    return jnp.asarray(lo_np, x.dtype), jnp.asarray(hi_np, x.dtype)


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class ItemInputs:
    """What the step of one item takes beside its state (a batch puts B first on every leaf).

    args: f's extra arguments; index (m,) / valid (m,): the selected tokens; lo, hi (n, d):
    the box; guide: :class:`~manifold_jax.explore.guides.NoGuide`, a ``Target`` or a ``Goal``.
    """

    args: tuple[Any, ...]
    index: jax.Array
    valid: jax.Array
    lo: jax.Array
    hi: jax.Array
    guide: Guide


@dataclass(frozen=True)
class Problem:
    """A checked, batched exploration problem (B items, n tokens of d dimensions, k outputs).

    dynamic / static: f split into its array leaves (traced) and code (static);
    args: f's extra arguments, batch axis first; index (B, m) / valid (B, m): the selected
    tokens; lo, hi (B, n, d): the box; target (B,) int32 class to reach (-1: none) or
    target_output (B, k); goal (B, n, d) an input to approach, or None; batched: whether
    the caller gave a batch (results drop the batch axis otherwise).
    """

    dynamic: list[Any]
    static: StaticPart
    args: tuple[Any, ...]
    index: jax.Array
    valid: jax.Array
    lo: jax.Array
    hi: jax.Array
    k: int
    batched: bool
    selection: TokenSelection
    target: jax.Array | None = None
    target_output: jax.Array | None = None
    goal: jax.Array | None = None

    @property
    def f(self) -> Callable[..., jax.Array]:
        return merge_callable(self.dynamic, self.static)

    @property
    def batch(self) -> int:
        return int(self.index.shape[0])

    @property
    def guide(self) -> str:
        """"target", "goal" or "none": what steers the direction beside the spectrum."""
        if self.target is not None or self.target_output is not None:
            return "target"
        return "goal" if self.goal is not None else "none"

    def item_inputs(self) -> ItemInputs:
        """The per-item inputs the compiled step maps over, batch axis first."""
        batch = self.lo.shape[0]
        guide: Guide = NoGuide()
        if self.target is not None or self.target_output is not None:
            cls = self.target if self.target is not None else jnp.full((batch,), -1, jnp.int32)
            output = self.target_output if self.target_output is not None else jnp.zeros((batch, 0), self.lo.dtype)
            guide = Target(cls=cls, output=output)
        elif self.goal is not None:
            guide = Goal(point=self.goal)
        return ItemInputs(args=self.args, index=self.index, valid=self.valid, lo=self.lo, hi=self.hi, guide=guide)


def _targets(
    target: Any, batch: int, k: int, anchor: jax.Array, dtype: Any
) -> tuple[jax.Array | None, jax.Array | None]:
    """Class indices (B,) or output vectors (B, k) from a user target; refuses the current class."""
    if target is None:
        return None, None
    if not is_concrete(target):  # traced inside the caller's jit or vmap: shapes only
        t = jnp.asarray(target)
        if jnp.issubdtype(t.dtype, jnp.integer):
            return jnp.broadcast_to(t.astype(jnp.int32), (batch,)), None
        return None, jnp.broadcast_to(t.astype(dtype), (batch, k))
    arr = np.asarray(target)
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(f"target must be a class index, per-item class indices or output vectors, got {target!r}")
    if np.issubdtype(arr.dtype, np.integer):
        classes = np.broadcast_to(arr, (batch,)) if arr.ndim == 0 else arr
        if classes.shape != (batch,):
            raise ValueError(f"target holds {classes.shape} class indices; expected one, or one per item ({batch})")
        if (classes < 0).any() or (classes >= k).any():
            bad = int(classes[(classes < 0) | (classes >= k)][0])
            raise ValueError(f"target class {bad} is out of range: f has {k} outputs (0..{k - 1})")
        same = classes == np.asarray(jnp.argmax(anchor, axis=-1)) if is_concrete(anchor) else np.zeros(batch, bool)
        if same.any():
            b = int(np.argmax(same))
            raise ValueError(
                f"target class {int(classes[b])} is already the predicted class of item {b}; "
                "choose another class (or stop='flip' to leave the current one)"
            )
        return jnp.asarray(classes, jnp.int32), None
    if arr.ndim not in (1, 2) or arr.shape[-1] != k:
        raise ValueError(f"target output of shape {arr.shape}; f has {k} outputs, so expected ({k},) or ({batch}, {k})")
    outputs = np.broadcast_to(arr, (batch, k)) if arr.ndim == 1 else arr
    if outputs.shape != (batch, k):
        raise ValueError(f"target output of shape {arr.shape}; expected ({k},) or ({batch}, {k})")
    check_finite("target", outputs)
    return None, jnp.asarray(outputs, dtype)


def prepare_problem(
    f: Callable[..., jax.Array],
    x: Any,
    *,
    args: Any = (),
    select: Select = None,
    bounds: tuple[Any, Any] | None = None,
    batched: bool = True,
) -> Problem:
    """The :class:`Problem` of f at points x (B, n, d) (``batched``) or (n, d): no state, no guide.

    The consumers that need no random state (attribution) call this; :func:`prepare`
    adds the start state, a target and a goal.
    """
    arr = check_float_array("x0", x, (3,) if batched else (2,))
    xb = jnp.asarray(arr) if batched else jnp.asarray(arr)[None]
    batch, n, _ = xb.shape
    args_b = batch_args(args, batch, batched)
    if select is None or is_concrete(select):
        sel = token_selection(select, n, batch if batched else None)
        index, valid = jnp.asarray(sel.index), jnp.asarray(sel.valid)
    else:  # a mask traced inside the caller's jit or vmap: a block per position, the unselected ones null
        mask = jnp.asarray(select)
        if mask.dtype != jnp.bool_ or mask.shape not in ((n,), (batch, n)):
            raise ValueError(f"select as a traced mask must be boolean of shape ({n},), got {mask.dtype} "
                             f"{tuple(mask.shape)}; indices must be known outside jit/vmap")
        sel = token_selection(None, n, batch if batched else None)
        index, valid = jnp.asarray(sel.index), jnp.broadcast_to(mask, (batch, n))
    lo, hi = box(bounds, xb, sel, batched)
    k = output_size(f, xb[0], jax.tree.map(lambda a: a[0], args_b))
    dynamic, static = split_callable(f)
    return Problem(
        dynamic=dynamic, static=static, args=args_b, index=index, valid=valid,
        lo=lo, hi=hi, k=k, batched=batched, selection=sel,
    )


def prepare(
    f: Callable[..., jax.Array],
    start: Any,
    *,
    key: Any = None,
    args: Any = (),
    select: Select = None,
    bounds: tuple[Any, Any] | None = None,
    target: Any = None,
    goal: Any = None,
) -> tuple[Problem, ExplorationState]:
    """Check and batch everything an exploration needs: the :class:`Problem` and the start state.

    ``start`` is x0 (n, d) / (B, n, d) with a ``key``, or an :class:`ExplorationState` to
    resume (no key: the state carries its keys). The state comes back batched (B first).
    Raises a one-line error naming the argument for every bad input.
    """
    if isinstance(start, ExplorationState):
        if key is not None:
            raise ValueError("key must not be given when resuming: the state carries its keys")
        state = start
    else:
        state = init_state(start, key)
    batched = state.batched
    if not batched:
        state = add_batch_axis(state)
    problem = prepare_problem(f, state.x if batched else state.x[0], args=args, select=select, bounds=bounds,
                              batched=batched)
    x = state.x
    k = problem.k
    if state.anchor.shape[-1] == 0:
        merged = problem.f
        anchor = jax.vmap(lambda xi, ai: merged(xi, *ai))(state.origin, problem.args)
        state = replace_state(state, anchor=jnp.asarray(anchor, x.dtype))
    elif state.anchor.shape[-1] != k:
        raise ValueError(f"the state's anchor has {state.anchor.shape[-1]} outputs but f returns {k}")
    target_cls, target_out = _targets(target, problem.batch, k, state.anchor, x.dtype)
    goal_b = None
    if goal is not None:
        g = check_float_array("goal", goal, (2, 3))
        check_finite("goal", g)
        item_shape = tuple(x.shape[1:])
        if tuple(g.shape) not in (item_shape, tuple(x.shape) if batched else item_shape):
            expected = f"{item_shape}" + (f" or {tuple(x.shape)}" if batched else "")
            raise ValueError(f"goal has shape {tuple(g.shape)}; expected x0's shape {expected}")
        goal_b = jnp.broadcast_to(jnp.asarray(g, x.dtype), x.shape)
        _check_goal(goal_b, state.origin, problem.selection.mask)
    return dataclasses.replace(problem, target=target_cls, target_output=target_out, goal=goal_b), state


def _check_goal(goal: jax.Array, origin: jax.Array, selected: np.ndarray) -> None:
    """Refuse a goal (B, n, d) that x0 already is on the selected tokens, or too far for x0's dtype to measure."""
    if not is_concrete((goal, origin)):
        return
    gap = np.asarray(goal, np.float64) - np.asarray(origin, np.float64)
    gap = np.where(np.asarray(selected)[:, :, None], gap, 0.0)
    distance = np.sqrt((gap**2).sum(axis=(1, 2)))
    same = distance == 0
    if same.any():
        raise ValueError(f"goal equals x0 on the selected tokens (item {int(np.argmax(same))}): there is nothing to "
                         "approach; give another input")
    reach = float(np.sqrt(np.finfo(np.dtype(goal.dtype)).max))
    far = ~(distance < reach)
    if far.any():
        b = int(np.argmax(far))
        raise ValueError(f"goal lies {distance[b]:.3g} from x0 (item {b}); distances beyond {reach:.3g} overflow "
                         f"{np.dtype(goal.dtype).name}: give a goal within that range")


def replace_state(state: ExplorationState, **changes: Any) -> ExplorationState:
    """``state`` with some fields replaced."""
    fields = {name: getattr(state, name) for name in state.__dataclass_fields__}
    fields.update(changes)
    return ExplorationState(**fields)


def add_batch_axis(state: ExplorationState) -> ExplorationState:
    """One item's state as a batch of one (the iteration stays shared and scalar)."""
    return replace_state(jax.tree.map(lambda a: a[None], state), iteration=state.iteration)


def drop_batch_axis(state: ExplorationState) -> ExplorationState:
    """Item 0 of a batched state: the inverse of :func:`add_batch_axis`."""
    return replace_state(jax.tree.map(lambda a: a[0], replace_state(state, iteration=state.iteration[None])),
                         iteration=state.iteration)


__all__ = ["ExplorationState", "ItemInputs", "Problem", "add_batch_axis", "batch_args", "box", "drop_batch_axis",
           "init_state", "prepare", "prepare_problem", "replace_state"]
