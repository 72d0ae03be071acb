"""A study's counterfactual run: ``mj.counterfactual`` to each input's target, stored as a trajectory.

The path (reach, locate, slide) is kept in the trajectory format every report reads (one saved
point per iteration; drift the largest change of a logit from x0; the loop's records that do not
apply as NaN or 0), and its certificate
(distance, margin, KKT residual, reached, converged per input) in ``counterfactual/certificate.json``.
The run is one compiled call: a study interrupted during it computes it again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from manifold_jax.explore import STOPPED, Counterfactual, ExplorationState, Trajectory, counterfactual
from manifold_jax.study.exploration_run import intact_trajectory
from manifold_jax.study.inputs import Prepared
from manifold_jax.study.run_config import COUNTERFACTUAL
from manifold_jax.study.storage import TIMING, TRAJECTORY, StudyFiles, saved_iterations, trajectory_arrays

Echo = Callable[[str], None]

CERTIFICATE = "certificate.json"
"""The counterfactual's certificate, beside its trajectory."""


def trajectory_of(result: Counterfactual, f: Any, args: tuple[Any, ...]) -> Trajectory:
    """The batched result's path as a Trajectory (points 0..I, I the batch's last iteration)."""
    points = int(np.max(np.asarray(result.iterations))) + 1
    path = np.asarray(result.path)[:, :points]
    batch = path.shape[0]
    y = np.asarray(jax.vmap(lambda xs, a: jax.vmap(lambda x: f(x, *a))(xs))(jnp.asarray(path), args))
    moves = np.linalg.norm((path[:, 1:] - path[:, :-1]).reshape(batch, points - 1, -1), axis=2)
    arc = np.concatenate([np.zeros((batch, 1)), np.cumsum(moves, axis=1)], axis=1).astype(path.dtype)
    target = np.asarray(result.target)
    hits = y.argmax(axis=2) == target[:, None]
    stop = np.where(np.asarray(result.reached), np.argmax(hits, axis=1), -1).astype(np.int32)
    nan = np.full((batch, points), np.nan, path.dtype)
    drift = np.abs(y - y[:, :1]).max(axis=2).astype(path.dtype)  # how far the logits moved (a walk leaves its level)
    zeros = np.zeros((batch, points), np.int32)
    # each item is frozen from its own last iteration on (its search ended there): the status says so
    ended = np.arange(points)[None] >= np.asarray(result.iterations)[:, None]
    status = np.where(ended, STOPPED, 0).astype(np.int32)
    final = ExplorationState(
        x=jnp.asarray(result.x), key=jnp.zeros((batch, 2), jnp.uint32), iteration=jnp.asarray(points - 1, jnp.int32),
        stalls=jnp.zeros(batch, jnp.int32), origin=jnp.asarray(path[:, 0]), anchor=jnp.asarray(y[:, 0]),
        tangent=jnp.zeros_like(jnp.asarray(path[:, 0])), h=jnp.full(batch, jnp.nan, path.dtype),
        rejected=jnp.zeros(batch, jnp.int32), arc_length=jnp.asarray(arc[:, -1]), stopped=jnp.ones(batch, bool),
        stop_iteration=jnp.asarray(stop), closest=jnp.full(batch, jnp.inf, path.dtype),
        closest_iteration=jnp.full(batch, -1, jnp.int32), closest_x=jnp.asarray(result.x))
    return Trajectory(
        x=path, y=y, step=nan[..., None], eigenvalue=nan[..., None], status=status, stalls=zeros, h=nan, drift=drift,
        error=nan, corrections=zeros, rejected=zeros, distance=np.asarray(result.path_distance)[:, :points],
        arc_length=arc, goal_distance=nan, iteration=np.arange(points), final=final)


def certificate(result: Counterfactual) -> dict[str, Any]:
    """Per input: reached, converged, L2 distance, margin and KKT residual (None where not reached)."""
    def values(name: str) -> list[Any]:
        return [None if not np.isfinite(v) else float(v) for v in np.asarray(getattr(result, name), np.float64)]

    return {"reached": np.asarray(result.reached).tolist(), "converged": np.asarray(result.converged).tolist(),
            "distance": values("distance"), "margin": values("margin"), "kkt": values("kkt"),
            "iterations": np.asarray(result.iterations).tolist()}


def run_counterfactual(model: Any, x0: Any, ctx: Any, targets: np.ndarray, select: np.ndarray,
                       box: Any, steps: int) -> tuple[Trajectory, dict[str, Any]]:
    """Each input's closest counterfactual of its target class within ``steps`` iterations."""
    result = counterfactual(model.head, jnp.asarray(x0), np.asarray(targets, np.int64), args=(ctx,), select=select,
                            bounds=box, max_steps=steps)
    return trajectory_of(result, model.head, (ctx,)), certificate(result)


def counterfactual_study_run(prepared: Prepared, files: StudyFiles, echo: Echo) -> Trajectory:
    """The closest counterfactual of each input (``mj.counterfactual``): its path as a trajectory and
    its certificate; one compiled call, computed again when either file is missing or damaged."""
    rel, cert_rel = f"{COUNTERFACTUAL}/{TRAJECTORY}", f"{COUNTERFACTUAL}/{CERTIFICATE}"
    done = intact_trajectory(files, rel, prepared.x0.shape, saved_iterations(prepared.spec, COUNTERFACTUAL), echo)
    if done is not None and files.check(cert_rel) == "ok":
        return done
    assert prepared.targets is not None  # a study with a counterfactual run has a target per input
    files.path(COUNTERFACTUAL).mkdir(parents=True, exist_ok=True)
    echo(f"{COUNTERFACTUAL}: the closest input of each target class, up to {prepared.spec.steps} iterations "
         "(one compiled call)")
    began = time.perf_counter()
    traj, cert = run_counterfactual(prepared.model, prepared.x0, prepared.ctx, prepared.targets, prepared.select,
                                    prepared.box, prepared.spec.steps)
    seconds = time.perf_counter() - began
    files.write_npz(rel, trajectory_arrays(traj))
    files.write_json(cert_rel, cert)
    iterations = int(traj.iteration[-1])
    tokens = int(np.asarray(prepared.select).sum())
    if iterations > 0:  # one call: its seconds include the compilation, and say so
        per_iteration = seconds / iterations
        files.write_json(f"{COUNTERFACTUAL}/{TIMING}", {
            "seconds_per_iteration": per_iteration, "seconds_per_iteration_per_token": per_iteration / max(tokens, 1),
            "selected_tokens": tokens, "iterations": iterations, "seconds": seconds, "compile_included": True})
    return traj


__all__ = ["CERTIFICATE", "certificate", "counterfactual_study_run", "run_counterfactual", "trajectory_of"]
