"""The saved points of an exploration (:class:`Trajectory`), how they are stacked, joined and combined.

A trajectory holds host numpy arrays, batch axis first on every record field; the loop
builds it from its chunks' records (:func:`from_records`), a resumed run continues it
(:meth:`Trajectory.extend`), a study joins its chunk files (:meth:`Trajectory.join`) and a
multi-process run combines its processes' parts (:func:`combine`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from manifold_jax.explore.problem import ExplorationState, drop_batch_axis

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
        return self.join(continuation)

    def join(self, rest: Trajectory) -> Trajectory:
        """This trajectory's saved points followed by those of ``rest``, which starts where it ends or later.

        A point saved in both (``rest`` starts at this trajectory's last iteration) is taken
        from ``rest``; the final state is ``rest``'s.
        """
        keep = len(self.iteration) - int(self.iteration[-1] == rest.iteration[0])
        axis = 1 if self.final.x.ndim == 3 else 0
        parts = {}
        for f in fields(self):
            if f.name == "final":
                continue
            ax = 0 if f.name == "iteration" else axis
            mine = np.take(getattr(self, f.name), np.arange(keep), axis=ax)
            parts[f.name] = np.concatenate([mine, getattr(rest, f.name)], axis=ax)
        return Trajectory(**parts, final=rest.final)

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



# --------------------------------------------------------------------------- stacking and combining


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


def user_state(state: ExplorationState, batched: bool) -> ExplorationState:
    return state if batched else drop_batch_axis(state)


def from_records(pieces: list[dict[str, np.ndarray]], state: ExplorationState, batched: bool) -> Trajectory:
    """Stack chunk records (S, B, ...) into a Trajectory, batch axis first (or removed)."""
    cat = {k: np.concatenate([p[k] for p in pieces]) for k in pieces[0]}
    fields_ = {}
    for name in RECORD_FIELDS:
        arr = np.moveaxis(cat[name], 1, 0)
        fields_[name] = arr if batched else arr[0]
    return Trajectory(**fields_, iteration=cat["iteration"], final=user_state(state, batched))


__all__ = ["RECORD_FIELDS", "Trajectory", "combine", "from_records", "user_state"]
