"""Running a study: validate everything, write the directory, explore with checkpoints, resume.

A study is validated in full (spec, model, inputs, selection, box) before its first file is
written. It then writes spec.json, inputs.npz and, per run, its trajectory (an exploration in
checkpointed chunks, :mod:`~manifold_jax.study.exploration_run`; the counterfactual in one call,
:mod:`~manifold_jax.study.counterfactual_run`), the baseline and the interpretation. Resuming
verifies every file against the manifest, keeps what is intact and recomputes the rest, saying
in one line what it found. The result equals an uninterrupted run bit for bit.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np

from manifold_jax import atomic
from manifold_jax.analysis import stop_sentence
from manifold_jax.baseline import gradient_baseline
from manifold_jax.explore import Trajectory
from manifold_jax.interpret import interpret
from manifold_jax.study.counterfactual_run import counterfactual_study_run
from manifold_jax.study.errors import (
    InputsChangedError,
    NotAStudyError,
    ResumeConflictError,
    StudyDamagedError,
    StudyExistsError,
)
from manifold_jax.study.exploration_run import explore_checkpointed, intact_trajectory
from manifold_jax.study.inputs import Prepared, prepare
from manifold_jax.study.manifest import MANIFEST, Manifest, study_root
from manifold_jax.study.spec import COUNTERFACTUAL, StudySpec
from manifold_jax.study.storage import (
    BASELINE,
    INPUTS,
    INTERPRETATION,
    PROJECTION,
    REPORT_FILES,
    SPEC,
    TIMING,
    TRAJECTORY,
    StudyFiles,
    read_spec,
    saved_iterations,
    timing_problem,
    trajectory_arrays,
)

Echo = Callable[[str], None]


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
    differ = [f.name for f in dataclasses.fields(StudySpec) if f.compare
              and f.name not in ("steps", "labels", "engine") and getattr(stored, f.name) != getattr(given, f.name)]
    differ += [f"the options of {run}" for run in stored.runs
               if run in given.runs and stored.engine[run] != given.engine[run]]
    if given.labels and given.labels != stored.labels:
        differ.append("labels")
    if differ:
        raise ResumeConflictError(out, differ)
    if given.steps < stored.steps:
        raise ResumeConflictError(out, [f"steps (the study has {stored.steps}; a resume can only add steps)"])
    return dataclasses.replace(stored, steps=given.steps)


def _invalidate_results(files: StudyFiles, spec: StudySpec) -> None:
    """Remove what a longer study recomputes: per algorithm the joined files, and the report."""
    for algorithm in spec.runs:
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
    for number, algorithm in enumerate(spec.runs):
        iterations = saved_iterations(spec, algorithm)
        echo(f"{algorithm}: {len(spec.inputs)} input(s), {spec.steps} steps, eta={spec.config(algorithm).eta}, "
             f"{int(select.sum())} selected token(s)")
        _check_timing(files, f"{algorithm}/{TIMING}", echo)
        if algorithm == COUNTERFACTUAL:
            traj = counterfactual_study_run(prepared, files, echo)
        else:
            traj = explore_checkpointed(prepared, algorithm, jax.random.fold_in(key, number), files, progress, echo)
        if algorithm == COUNTERFACTUAL:  # the baseline compares SiMEC and SiMExp with a gradient walk
            for line in _outcomes(traj, prepared.targets, spec.labels):
                echo(f"{algorithm}: {line}")
        elif spec.baseline and intact_trajectory(files, f"{algorithm}/{BASELINE}", x0.shape, iterations, echo) is None:
            echo(f"{algorithm}: gradient-plus-noise baseline with the same step sizes")
            steps_taken = np.where(np.isfinite(traj.step), traj.step, 0.0)
            base = gradient_baseline(
                model.head, x0, key=jax.random.fold_in(key, 100 + number), steps=spec.steps,
                step_size=steps_taken.mean(axis=1), direction="stay" if algorithm == "simec" else "leave",
                args=(ctx,), select=select, bounds=box, save_every=spec.config(algorithm).save_every,
                progress=progress, label=f"{algorithm} baseline",
            )
            files.write_npz(f"{algorithm}/{BASELINE}", trajectory_arrays(base))
        if not _interpretation_intact(files, f"{algorithm}/{INTERPRETATION}", traj, echo):
            echo(f"{algorithm}: decoding {traj.x.shape[1]} saved points per input (Algorithm 3)")
            interp = interpret(model, traj.x, ctx, progress=progress, label=f"{algorithm} decoding")
            files.write_npz(f"{algorithm}/{INTERPRETATION}", {"inputs": interp.inputs, "logits": interp.logits})


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
