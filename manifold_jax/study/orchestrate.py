"""Running a study: validate everything, write the directory, explore with checkpoints, resume.

A study is validated in full (spec, model, inputs, selection, box) before its first file is
written. It then writes spec.json, inputs.npz and, per algorithm, one chunk file and one
checkpoint after every compiled chunk, the whole trajectory, the baseline and the
interpretation. Resuming verifies every file against the manifest, keeps the longest run of
intact chunks from iteration 0, continues from the state saved after the last of them (its
checkpoint, or the copy in the chunk file when the checkpoint is damaged) and recomputes the
rest, saying in one line what it found. The result equals an uninterrupted run bit for bit.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from manifold_jax import atomic
from manifold_jax.analysis import stop_sentence
from manifold_jax.baseline import gradient_baseline
from manifold_jax.explore import ExplorationState, Trajectory
from manifold_jax.interpret import interpret
from manifold_jax.study.checkpoints import (
    Checkpoints,
    checkpoint_steps,
    delete_checkpoint,
    remove_unfinished,
    state_hash,
)
from manifold_jax.study.counterfactual_run import CERTIFICATE, run_counterfactual
from manifold_jax.study.distributed import study_explore
from manifold_jax.study.errors import (
    InputsChangedError,
    NotAStudyError,
    ResumeConflictError,
    StudyDamagedError,
    StudyExistsError,
)
from manifold_jax.study.inputs import Prepared, prepare
from manifold_jax.study.manifest import MANIFEST, Manifest, study_root
from manifold_jax.study.spec import COUNTERFACTUAL, StudySpec
from manifold_jax.study.storage import (
    BASELINE,
    CHECKPOINTS,
    CHUNK_NAME,
    CHUNKS,
    INPUTS,
    INTERPRETATION,
    PROJECTION,
    READ_ERRORS,
    REPORT_FILES,
    SPEC,
    TIMING,
    TRAJECTORY,
    StudyFiles,
    chunk_files,
    chunk_name,
    join,
    read_npz,
    read_spec,
    saved_iterations,
    timing_problem,
    trajectory_arrays,
    trajectory_from_arrays,
    trajectory_problem,
)

Echo = Callable[[str], None]
Algorithm = Literal["simec", "simexp"]


def run_study(
    spec: StudySpec | None,
    out_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    echo: Echo = print,
) -> Path:
    """Run (or, with ``resume``, continue) a study into ``out_dir``; returns its path.

    Refuses a non-empty directory unless ``overwrite`` (which deletes it, once everything
    has been validated) or ``resume`` (which reads spec.json there and continues). A resume
    may be given a ``spec``: it must equal the study's own, except for a larger ``steps``,
    which continues the study to that many steps (the result equals a study run for that
    many steps from the start).
    """
    out = study_root(out_dir)
    if resume:
        if overwrite:
            raise ValueError("overwrite and resume exclude each other")
        return _resume(spec, out, progress, echo)
    if spec is None:
        raise ValueError("spec is required unless resuming")
    _check_output(out, overwrite)
    prepared = _prepared(spec)
    spec = prepared.spec
    files = _create(out, overwrite, spec, prepared)
    _run(prepared, files, progress, echo)
    return out


def _prepared(spec: StudySpec) -> Prepared:
    prepared = prepare(spec)
    if not spec.labels:
        spec = dataclasses.replace(spec, labels=tuple(str(label) for label in prepared.model.labels))
        prepared = dataclasses.replace(prepared, spec=spec)
    return prepared


def _check_output(out: Path, overwrite: bool) -> None:
    """Refuse an output path that is a file, or a non-empty directory without ``overwrite`` (changes nothing)."""
    if out.exists() and not out.is_dir():
        raise NotAStudyError(out, "it is a file, not a directory")
    if out.is_dir() and not overwrite and any(p for p in out.iterdir() if not _debris(p)):
        raise StudyExistsError(out)


def _debris(path: Path) -> bool:
    """What a killed start leaves before spec.json exists: the manifest and temporary files."""
    return path.name == MANIFEST or atomic.is_temporary(path)


def _create(out: Path, overwrite: bool, spec: StudySpec, prepared: Prepared) -> StudyFiles:
    """Write spec.json and inputs.npz into a fresh directory; on failure remove what this run created."""
    existed = out.is_dir()
    try:
        if existed and overwrite:
            shutil.rmtree(out)
            existed = False
        out.mkdir(parents=True, exist_ok=True)
        atomic.remove_temporaries(out)
        files = StudyFiles(out, Manifest(out))
        files.write_text(SPEC, spec.to_json())
        files.write_npz(INPUTS, prepared.arrays)
    except Exception:
        if existed:
            for name in (SPEC, INPUTS, MANIFEST):
                (out / name).unlink(missing_ok=True)
        else:
            shutil.rmtree(out, ignore_errors=True)
        raise
    return files


# --------------------------------------------------------------------------- resuming


def _resume(spec: StudySpec | None, out: Path, progress: bool, echo: Echo) -> Path:
    manifest = Manifest.load(out)
    stored = read_spec(out, manifest)
    target = stored if spec is None else _continued(stored, spec, out)
    prepared = _prepared(target)
    target = prepared.spec
    removed = atomic.remove_temporaries(out)
    if removed:
        echo(f"removed {len(removed)} leftover temporary file(s) of an interrupted write")
    if manifest.damaged:
        echo(f"{manifest.problem}; rebuilt from the files that verify by loading")
        manifest = Manifest(out)
    files = StudyFiles(out, manifest)
    _verify_inputs(files, prepared, echo)
    if target.steps != stored.steps:
        echo(f"continuing the study from {stored.steps} to {target.steps} steps")
        _invalidate_results(files, target)
        files.write_text(SPEC, target.to_json())
    elif files.check(SPEC) == "unrecorded":
        files.manifest.record(files.path(SPEC))
    _run(prepared, files, progress, echo)
    return out


def _continued(stored: StudySpec, given: StudySpec, out: Path) -> StudySpec:
    """The study a resume with ``given`` asks for: the stored one, continued to ``given.steps``."""
    differ = [f.name for f in dataclasses.fields(StudySpec)
              if f.name not in ("steps", "labels") and getattr(stored, f.name) != getattr(given, f.name)]
    if given.labels and given.labels != stored.labels:
        differ.append("labels")
    if differ:
        raise ResumeConflictError(out, differ)
    if given.steps < stored.steps:
        raise ResumeConflictError(out, [f"steps (the study has {stored.steps}; a resume can only add steps)"])
    return dataclasses.replace(stored, steps=given.steps)


def _invalidate_results(files: StudyFiles, spec: StudySpec) -> None:
    """Remove what a longer study recomputes: per algorithm the joined files, and the report."""
    for algorithm in spec.algorithms:
        files.remove(*(f"{algorithm}/{name}" for name in (TRAJECTORY, BASELINE, INTERPRETATION, PROJECTION)))
    files.remove(*REPORT_FILES)
    files.remove(*(p for p in list(files.manifest.files) if p.startswith("figures/")))  # the study's own only


def _verify_inputs(files: StudyFiles, prepared: Prepared, echo: Echo) -> None:
    """Keep inputs.npz if it is intact and equals what the spec rebuilds; rewrite it when lost or damaged."""
    try:
        before = files.read_npz(INPUTS, required=False)
    except StudyDamagedError as exc:
        echo(f"{INPUTS}: {exc.reason}; rebuilt from spec.json")
        before = None
    if before is None:
        files.write_npz(INPUTS, prepared.arrays)
        return
    for name in ("x0", "select"):
        if name not in before or not np.array_equal(before[name], prepared.arrays[name]):
            raise InputsChangedError(files.root, "embeddings" if name == "x0" else "token selection")
    if files.check(INPUTS) == "unrecorded":
        files.manifest.record(files.path(INPUTS))


# --------------------------------------------------------------------------- the explorations


def _run(prepared: Prepared, files: StudyFiles, progress: bool, echo: Echo) -> None:
    spec, model, x0, ctx, select, box = (prepared.spec, prepared.model, prepared.x0, prepared.ctx,
                                         prepared.select, prepared.box)
    key = jax.random.PRNGKey(spec.seed)
    for number, algorithm in enumerate(spec.algorithms):
        iterations = saved_iterations(spec, algorithm)
        echo(f"{algorithm}: {len(spec.inputs)} input(s), {spec.steps} steps, eta={spec.config(algorithm).eta}, "
             f"{int(select.sum())} selected token(s)")
        _check_timing(files, f"{algorithm}/{TIMING}", echo)
        if algorithm == COUNTERFACTUAL:
            traj = _counterfactual(prepared, files, echo)
        else:
            traj = _explore_checkpointed(prepared, algorithm, jax.random.fold_in(key, number), files, progress, echo)
        if algorithm == COUNTERFACTUAL:  # the baseline compares SiMEC and SiMExp with a gradient walk
            for line in _outcomes(traj, prepared.targets, spec.labels):
                echo(f"{algorithm}: {line}")
        elif spec.baseline and _intact(files, f"{algorithm}/{BASELINE}", x0.shape, iterations, echo) is None:
            echo(f"{algorithm}: gradient-plus-noise baseline with the same step sizes")
            steps_taken = np.where(np.isfinite(traj.step), traj.step, 0.0)
            base = gradient_baseline(
                model.head, x0, key=jax.random.fold_in(key, 100 + number), steps=spec.steps,
                step_size=steps_taken.mean(axis=1), direction="stay" if algorithm == "simec" else "leave",
                args=(ctx,), select=select, bounds=box, save_every=spec.save_every,
                progress=progress, label=f"{algorithm} baseline",
            )
            files.write_npz(f"{algorithm}/{BASELINE}", trajectory_arrays(base))
        if not _interpretation_intact(files, f"{algorithm}/{INTERPRETATION}", traj, echo):
            echo(f"{algorithm}: decoding {traj.x.shape[1]} saved points per input (Algorithm 3)")
            interp = interpret(model, traj.x, ctx, progress=progress, label=f"{algorithm} decoding")
            files.write_npz(f"{algorithm}/{INTERPRETATION}", {"inputs": interp.inputs, "logits": interp.logits})


def _counterfactual(prepared: Prepared, files: StudyFiles, echo: Echo) -> Trajectory:
    """The closest counterfactual of each input (``mj.counterfactual``): its path as a trajectory and
    its certificate; one compiled call, computed again when either file is missing or damaged."""
    rel, cert_rel = f"{COUNTERFACTUAL}/{TRAJECTORY}", f"{COUNTERFACTUAL}/{CERTIFICATE}"
    done = _intact(files, rel, prepared.x0.shape, saved_iterations(prepared.spec, COUNTERFACTUAL), echo)
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


def _intact(files: StudyFiles, rel: str, x0_shape: tuple[int, ...], iterations: np.ndarray,
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


def _interpretation_intact(files: StudyFiles, rel: str, traj: Trajectory, echo: Echo) -> bool:
    try:
        arrays = files.read_npz(rel, required=False)
    except StudyDamagedError as exc:
        echo(f"{rel}: {exc.reason}; recomputing it")
        arrays = None
    if arrays is None:
        files.remove(rel)
        return False
    fits = set(arrays) == {"inputs", "logits"} and arrays["logits"].shape == traj.y.shape
    if not fits:
        echo(f"{rel}: does not fit the trajectory; recomputing it")
        files.remove(rel)
        return False
    if files.check(rel) == "unrecorded":
        files.manifest.record(files.path(rel))
    return True


def _explore_checkpointed(
    prepared: Prepared, algorithm: str, key: jax.Array, files: StudyFiles, progress: bool, echo: Echo,
) -> Trajectory:
    """One exploration with a chunk file, a checkpoint and a manifest entry after every chunk."""
    spec = prepared.spec
    rel_dir = algorithm
    iterations = saved_iterations(spec, algorithm)
    done = _intact(files, f"{rel_dir}/{TRAJECTORY}", prepared.x0.shape, iterations, echo)
    if done is not None:
        return done
    chunks_dir = files.path(f"{rel_dir}/{CHUNKS}")
    checkpoints_dir = files.path(f"{rel_dir}/{CHECKPOINTS}")
    chunks_dir.mkdir(parents=True, exist_ok=True)
    remove_unfinished(checkpoints_dir)
    pieces, notes = _intact_chunks(files, rel_dir, spec, algorithm)
    reached = int(pieces[-1].final.iteration) if pieces else 0
    for step in checkpoint_steps(checkpoints_dir):
        if step > reached:
            delete_checkpoint(checkpoints_dir, step)
    # the record of the checkpoint to resume from stays, so that its loss is noticed and said
    files.manifest.forget_checkpoints(algorithm, keep=set(checkpoint_steps(checkpoints_dir)) | {reached})
    checkpoints = Checkpoints(checkpoints_dir)
    try:
        start: Any = jnp.asarray(prepared.x0)
        if pieces:
            start = _restored_state(checkpoints, files, algorithm, pieces[-1].final, notes)
        if notes:
            echo(f"{algorithm}: {'; '.join(notes)}; continuing from iteration {reached}, "
                 f"{spec.steps - reached} step(s) to compute")
        elif reached:
            echo(f"{algorithm}: resuming at iteration {reached} of {spec.steps}")
        clock: dict[str, Any] = {"last": time.perf_counter(), "times": [], "compile": 0.0,
                                 "previous": pieces[-1] if pieces else None}

        def on_compiled() -> None:
            clock["compile"] = time.perf_counter() - clock["last"]
            clock["last"] = time.perf_counter()

        def on_chunk(state: ExplorationState, chunk: Trajectory) -> None:
            now = time.perf_counter()
            steps_in_chunk = int(state.iteration) - int(chunk.iteration[0])
            clock["times"].append((now - clock["last"], steps_in_chunk))
            previous = clock["previous"]
            if previous is not None and int(previous.final.iteration) == int(state.iteration):
                # every item stopped where the previous chunk ended: this chunk only adds that saved
                # point, so it joins the previous chunk's file (named by the same iteration)
                chunk = join(previous, chunk)
                if int(state.iteration) in checkpoints.steps():
                    checkpoints.delete(int(state.iteration))
            files.write_npz(f"{rel_dir}/{CHUNKS}/{chunk_name(int(state.iteration))}", trajectory_arrays(chunk))
            _checkpoint(checkpoints, files, algorithm, state)
            clock["previous"] = chunk
            clock["last"] = time.perf_counter()

        finished = bool(pieces) and bool(np.all(np.asarray(pieces[-1].final.stopped)))
        remaining = 0 if finished else spec.steps - reached
        if remaining > 0:
            # over several processes, every process explores its share (study.distributed)
            rest = study_explore(prepared, algorithm, start, key=None if isinstance(start, ExplorationState) else key,
                                 steps=remaining, progress=progress, on_chunk=on_chunk, on_compiled=on_compiled)
            pieces.append(rest)
    finally:
        checkpoints.close()
    traj = pieces[0]
    for piece in pieces[1:]:
        traj = join(traj, piece)
    problem = trajectory_problem(traj, prepared.x0.shape, iterations)
    if problem is not None:  # a bug, never a user error: refuse to save a trajectory with a gap
        raise RuntimeError(f"{algorithm}: the joined trajectory does not fit the study: {problem}")
    files.write_npz(f"{rel_dir}/{TRAJECTORY}", trajectory_arrays(traj))
    timing = _timing(clock["times"], clock["compile"], prepared.select)
    # a resumed run keeps its first part's timing; one that timed nothing (killed after its last chunk) has none
    if timing is not None and not files.path(f"{rel_dir}/{TIMING}").is_file():
        files.write_json(f"{rel_dir}/{TIMING}", timing)
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


def _check_timing(files: StudyFiles, rel: str, echo: Echo) -> None:
    """Remove a timing.json that a report cannot use (damaged, or a non-finite figure), saying so."""
    if not files.path(rel).is_file():
        return
    status = files.check(rel)
    problem = "the file fails its checksum" if status == "mismatch" else None
    if problem is None:
        try:
            problem = timing_problem(json.loads(files.path(rel).read_text(encoding="utf-8")))
        except (ValueError, UnicodeDecodeError):
            problem = "not valid JSON"
    if problem is not None:
        echo(f"{rel}: {problem}; removed (the report shows no timing for this run)")
        files.remove(rel)
    elif status == "unrecorded":
        files.manifest.record(files.path(rel))


def _outcomes(traj: Trajectory, targets: np.ndarray | None, labels: tuple[str, ...]) -> list[str]:
    """Per input, where its counterfactual walk stopped (or that it did not)."""
    if targets is None:
        return []
    stops = np.asarray(traj.final.stop_iteration)
    return [stop_sentence(b, int(targets[b]), int(stops[b]), int(np.argmax(traj.y[b, -1])),
                          int(traj.iteration[-1]), labels) for b in range(len(stops))]
