"""A study's exploration run: SiMEC or SiMExp in compiled chunks, each saved with a checkpoint.

After every chunk the run writes the chunk file, a checkpoint of the state and their manifest
records. Continuing, it keeps the longest run of intact chunks from iteration 0, restores the
state saved after the last of them (its checkpoint, or the copy in the chunk file when the
checkpoint is damaged) and computes the rest; the joined trajectory equals an uninterrupted run's.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from manifold_jax.explore import ExplorationState, Trajectory
from manifold_jax.study.checkpoints import (
    Checkpoints,
    checkpoint_steps,
    delete_checkpoint,
    remove_unfinished,
    state_hash,
)
from manifold_jax.study.distributed import study_explore
from manifold_jax.study.errors import StudyDamagedError
from manifold_jax.study.inputs import Prepared
from manifold_jax.study.spec import StudySpec
from manifold_jax.study.storage import (
    CHECKPOINTS,
    CHUNK_NAME,
    CHUNKS,
    READ_ERRORS,
    TIMING,
    TRAJECTORY,
    StudyFiles,
    chunk_files,
    chunk_name,
    join,
    read_npz,
    saved_iterations,
    timing_problem,
    trajectory_arrays,
    trajectory_from_arrays,
    trajectory_problem,
)

Echo = Callable[[str], None]


def intact_trajectory(files: StudyFiles, rel: str, x0_shape: tuple[int, ...], iterations: np.ndarray,
            echo: Echo) -> Trajectory | None:
    """A trajectory file that is intact and fits the study (recorded if it was not), else None (removed)."""
    try:
        traj = files.read_trajectory(rel, x0_shape, iterations)
    except StudyDamagedError as exc:
        echo(f"{rel}: {exc.reason}; rebuilding it")
        files.remove(rel)
        return None
    if traj is not None and files.check(rel) == "unrecorded":
        files.manifest.record(files.path(rel))
    return traj



def explore_checkpointed(
    prepared: Prepared, algorithm: str, key: jax.Array, files: StudyFiles, progress: bool, echo: Echo,
) -> Trajectory:
    """One exploration with a chunk file, a checkpoint and a manifest entry after every chunk."""
    spec = prepared.spec
    iterations = saved_iterations(spec, algorithm)
    done = intact_trajectory(files, f"{algorithm}/{TRAJECTORY}", prepared.x0.shape, iterations, echo)
    if done is not None:
        return done
    pieces, notes = _resume_point(files, spec, algorithm)
    reached = int(pieces[-1].final.iteration) if pieces else 0
    checkpoints = Checkpoints(files.path(f"{algorithm}/{CHECKPOINTS}"))
    try:
        start: Any = jnp.asarray(prepared.x0)
        if pieces:
            start = _restored_state(checkpoints, files, algorithm, pieces[-1].final, notes)
        if notes:
            echo(f"{algorithm}: {'; '.join(notes)}; continuing from iteration {reached}, "
                 f"{spec.steps - reached} step(s) to compute")
        elif reached:
            echo(f"{algorithm}: resuming at iteration {reached} of {spec.steps}")
        writer = _ChunkWriter(files, algorithm, checkpoints, pieces[-1] if pieces else None)
        finished = bool(pieces) and bool(np.all(np.asarray(pieces[-1].final.stopped)))
        remaining = 0 if finished else spec.steps - reached
        if remaining > 0:
            # over several processes, every process explores its share (study.distributed)
            rest = study_explore(prepared, algorithm, start, key=None if isinstance(start, ExplorationState) else key,
                                 steps=remaining, progress=progress, on_chunk=writer.on_chunk,
                                 on_compiled=writer.on_compiled)
            pieces.append(rest)
    finally:
        checkpoints.close()
    return _save_joined(files, algorithm, pieces, prepared, iterations, writer)


def _resume_point(files: StudyFiles, spec: StudySpec, algorithm: str) -> tuple[list[Trajectory], list[str]]:
    """The intact chunks to resume from and what was repaired; checkpoints past them deleted."""
    chunks_dir = files.path(f"{algorithm}/{CHUNKS}")
    checkpoints_dir = files.path(f"{algorithm}/{CHECKPOINTS}")
    chunks_dir.mkdir(parents=True, exist_ok=True)
    remove_unfinished(checkpoints_dir)
    pieces, notes = _intact_chunks(files, algorithm, spec, algorithm)
    reached = int(pieces[-1].final.iteration) if pieces else 0
    for step in checkpoint_steps(checkpoints_dir):
        if step > reached:
            delete_checkpoint(checkpoints_dir, step)
    # the record of the checkpoint to resume from stays, so that its loss is noticed and said
    files.manifest.forget_checkpoints(algorithm, keep=set(checkpoint_steps(checkpoints_dir)) | {reached})
    return pieces, notes


class _ChunkWriter:
    """The exploration's callbacks: each chunk written with a checkpoint, and the time each took."""

    def __init__(self, files: StudyFiles, algorithm: str, checkpoints: Checkpoints,
                 previous: Trajectory | None) -> None:
        self.files, self.algorithm, self.checkpoints, self.previous = files, algorithm, checkpoints, previous
        self.last, self.compile = time.perf_counter(), 0.0
        self.times: list[tuple[float, int]] = []

    def on_compiled(self) -> None:
        self.compile = time.perf_counter() - self.last
        self.last = time.perf_counter()

    def on_chunk(self, state: ExplorationState, chunk: Trajectory) -> None:
        now = time.perf_counter()
        self.times.append((now - self.last, int(state.iteration) - int(chunk.iteration[0])))
        previous = self.previous
        if previous is not None and int(previous.final.iteration) == int(state.iteration):
            # every item stopped where the previous chunk ended: this chunk only adds that saved
            # point, so it joins the previous chunk's file (named by the same iteration)
            chunk = join(previous, chunk)
            if int(state.iteration) in self.checkpoints.steps():
                self.checkpoints.delete(int(state.iteration))
        self.files.write_npz(f"{self.algorithm}/{CHUNKS}/{chunk_name(int(state.iteration))}",
                             trajectory_arrays(chunk))
        _checkpoint(self.checkpoints, self.files, self.algorithm, state)
        self.previous = chunk
        self.last = time.perf_counter()


def _save_joined(files: StudyFiles, algorithm: str, pieces: list[Trajectory], prepared: Prepared,
                 iterations: np.ndarray, writer: _ChunkWriter) -> Trajectory:
    """The pieces joined into the run's trajectory, checked against the study, written with its timing."""
    traj = pieces[0]
    for piece in pieces[1:]:
        traj = join(traj, piece)
    problem = trajectory_problem(traj, prepared.x0.shape, iterations)
    if problem is not None:  # a bug, never a user error: refuse to save a trajectory with a gap
        raise RuntimeError(f"{algorithm}: the joined trajectory does not fit the study: {problem}")
    files.write_npz(f"{algorithm}/{TRAJECTORY}", trajectory_arrays(traj))
    timing = _timing(writer.times, writer.compile, prepared.select)
    # a resumed run keeps its first part's timing; one that timed nothing (killed after its last chunk) has none
    if timing is not None and not files.path(f"{algorithm}/{TIMING}").is_file():
        files.write_json(f"{algorithm}/{TIMING}", timing)
    return traj


def _intact_chunks(files: StudyFiles, rel_dir: str, spec: StudySpec,
                   run: str) -> tuple[list[Trajectory], list[str]]:
    """The longest run of intact, consecutive chunks from iteration 0; the chunks after it are deleted.

    A chunk is intact when it passes its checksum (or, not yet recorded, when it loads) and
    holds the records from where the previous one ended; a chunk the manifest lists but the
    disk lacks ends the run. Returns the chunks and what was wrong, one phrase per problem.
    """
    chunks = f"{rel_dir}/{CHUNKS}"
    on_disk = dict(chunk_files(files.path(chunks)))
    listed = {int(m.group(1)) for rel in files.manifest.files
              if rel.startswith(f"{chunks}/") and (m := CHUNK_NAME.match(Path(rel).name))}
    pieces: list[Trajectory] = []
    notes: list[str] = []
    reached = 0
    ends = sorted(set(on_disk) | listed)
    for position, end in enumerate(ends):
        rel = f"{chunks}/{chunk_name(end)}"
        piece, problem = (None, f"chunk {chunk_name(end)} is missing") if end not in on_disk else _read_chunk(
            files, rel, reached, spec.steps, spec.config(run).save_every)
        if piece is None:
            notes.append(problem)
            for later in ends[position:]:
                files.path(f"{chunks}/{chunk_name(later)}").unlink(missing_ok=True)
                files.manifest.forget(files.path(f"{chunks}/{chunk_name(later)}"), save=False)
            break
        pieces.append(piece)
        if files.check(rel) == "unrecorded":
            files.manifest.record(on_disk[end], save=False)
        reached = end
    files.manifest.save()
    return pieces, notes


def _read_chunk(files: StudyFiles, rel: str, start: int, steps: int, save_every: int) -> tuple[Trajectory | None, str]:
    """The chunk ``rel`` if it is intact and continues a run that reached ``start``, else why not.

    ``save_every`` is the run's own (the counterfactual saves every step), ``steps`` the study's.
    """
    name = Path(rel).name
    if files.check(rel) == "mismatch":
        return None, f"chunk {name} fails its checksum"
    try:
        traj = trajectory_from_arrays(read_npz(files.path(rel)))
    except READ_ERRORS as exc:
        return None, f"chunk {name} cannot be read ({type(exc).__name__})"
    end = int(name[:8])
    its = traj.iteration
    if len(its) == 0 or int(its[0]) != start or int(traj.final.iteration) != end or end > steps:
        return None, f"chunk {name} does not continue iteration {start}"
    if np.any(np.diff(its) != save_every) or int(its[-1]) not in (end, end - save_every):
        return None, f"chunk {name} does not hold every saved iteration"
    return traj, ""


def _checkpoint(checkpoints: Checkpoints, files: StudyFiles, algorithm: str, state: ExplorationState) -> None:
    """Save a checkpoint of ``state`` and record it (orbax drops the oldest: their records go too)."""
    digest = checkpoints.save(state)
    files.manifest.forget_checkpoints(algorithm, keep=set(checkpoints.steps()), save=False)
    files.manifest.record_checkpoint(algorithm, int(state.iteration), digest, state_hash(state))


def _restored_state(
    checkpoints: Checkpoints, files: StudyFiles, algorithm: str, saved: ExplorationState, notes: list[str],
) -> ExplorationState:
    """The state after the last intact chunk: its checkpoint when that is intact, else the chunk's own copy."""
    step = int(saved.iteration)
    record = files.manifest.checkpoint(algorithm, step)
    if step in checkpoints.steps():
        if record is not None:
            restored = checkpoints.restore(step, saved, record["files"], record["state"])
            if restored is not None and state_hash(restored) == state_hash(saved):
                return restored
            notes.append(f"checkpoint {step} is damaged, so the copy of its state saved with chunk "
                         f"{chunk_name(step)} is used")
        checkpoints.delete(step)  # damaged, or never recorded (a crash came before its record)
    elif record is not None:
        notes.append(f"checkpoint {step} is missing, so the copy of its state saved with chunk {chunk_name(step)} "
                     "is used")
    state = ExplorationState(**{k: jnp.asarray(v) for k, v in dataclasses.asdict(saved).items()})
    _checkpoint(checkpoints, files, algorithm, state)
    return state


def _timing(times: list[tuple[float, int]], compile_seconds: float, select: np.ndarray) -> dict[str, Any] | None:
    """Seconds per iteration over the iterations run (a walk stopped early counts its own), compilation apart.

    None when nothing was timed (no iteration computed in this run, as after a kill between the last
    chunk and the trajectory): a timing is never a guess, and never a non-finite figure.
    """
    seconds, iterations = float(sum(t for t, _ in times)), int(sum(s for _, s in times))
    if iterations <= 0:
        return None
    per_iteration = seconds / iterations
    tokens = int(select.sum())
    timing = {
        "seconds_per_iteration": per_iteration,
        "seconds_per_iteration_per_token": per_iteration / max(tokens, 1),
        "selected_tokens": tokens,
        "iterations": iterations,
        "seconds": seconds,
        "compile_seconds": float(compile_seconds),
        "chunks": [{"seconds": t, "steps": s} for t, s in times],
    }
    return timing if timing_problem(timing) is None else None
