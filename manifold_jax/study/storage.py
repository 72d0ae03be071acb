"""A study directory on disk: atomic writes recorded in the manifest, and verified reads.

    spec.json                  what was asked (see StudySpec)
    manifest.json              checksums of the files below and hashes of the checkpointed states
    inputs.npz                 raw inputs, x0, context, token importance, selection, bounds
    <algorithm>/chunks/*.npz   trajectory records, one file per compiled chunk (it also holds the state after it)
    <algorithm>/checkpoints/   orbax checkpoints of the engine state after the newest chunks
    <algorithm>/trajectory.npz the whole trajectory, once the exploration is complete
    <algorithm>/timing.json    seconds per iteration (compile excluded) and per token
    <algorithm>/baseline.npz   the gradient-plus-noise baseline with the same step sizes
    <algorithm>/interpretation.npz  decoded inputs and their re-predictions (Algorithm 3)

Every file goes through :mod:`manifold_jax.atomic` and is recorded in the manifest;
every read checks the checksum and the shapes the spec implies.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from manifold_jax import atomic
from manifold_jax.explore import RECORD_FIELDS, Trajectory
from manifold_jax.interpret import Interpretation
from manifold_jax.study.errors import NotAStudyError, StudyDamagedError
from manifold_jax.study.manifest import MANIFEST, Manifest, contained, study_root
from manifold_jax.study.spec import StudySpec

SPEC = "spec.json"
INPUTS = "inputs.npz"
TRAJECTORY = "trajectory.npz"
BASELINE = "baseline.npz"
INTERPRETATION = "interpretation.npz"
PROJECTION = "projection.json"
"""A text study's verified real sentences at the report's saved points (per algorithm, written by the report)."""
TIMING = "timing.json"
CHUNKS = "chunks"
CHECKPOINTS = "checkpoints"
REPORT_FILES = ("metrics.json", "report.md", "report.html")
"""What ``report`` writes beside the study (stale once the study changes)."""

TRAJECTORY_FIELDS = RECORD_FIELDS
CHUNK_NAME = re.compile(r"^(\d{8})\.npz$")
READ_ERRORS = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)


# --------------------------------------------------------------------------- trajectories


def trajectory_arrays(traj: Trajectory) -> dict[str, np.ndarray]:
    """A Trajectory as named arrays (its final state as ``final_*``)."""
    return traj.to_arrays()


def trajectory_from_arrays(arrays: dict[str, np.ndarray]) -> Trajectory:
    """Inverse of :func:`trajectory_arrays` (ValueError when a field is missing)."""
    return Trajectory.from_arrays(arrays)


def save_trajectory(path: str | os.PathLike[str], traj: Trajectory) -> None:
    """A Trajectory as an .npz (final state included, as ``final_*``), written atomically."""
    atomic.write_npz(path, trajectory_arrays(traj))


def read_npz(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Every array of an .npz file (raises on a truncated or foreign file)."""
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def load_trajectory(path: str | os.PathLike[str]) -> Trajectory:
    """Inverse of :func:`save_trajectory`."""
    return trajectory_from_arrays(read_npz(path))


def join(first: Trajectory, rest: Trajectory) -> Trajectory:
    """Records of consecutive pieces; a record at the iteration where ``rest`` starts is taken from ``rest``."""
    return first.join(rest)


def trajectory_problem(traj: Trajectory, x0_shape: tuple[int, ...], iterations: np.ndarray) -> str | None:
    """Why ``traj`` does not fit its study (B, n, d and the saved iterations), or None when it does."""
    batch, n, d = x0_shape
    if np.all(np.asarray(traj.final.stopped)) and 0 < len(traj.iteration) <= len(iterations):
        # every item stopped early (a stop event): the trajectory ends at the last stop
        iterations = iterations[: len(traj.iteration)]
    shapes = _shape_problem(traj, (batch, len(iterations), n, d))
    if shapes is not None:
        return shapes
    if not np.array_equal(traj.iteration, iterations):
        return f"its iterations run {_span(traj.iteration)}, expected {_span(iterations)}"
    if traj.final.x.shape != (batch, n, d) or int(traj.final.iteration) != int(iterations[-1]):
        return "its final state does not match its last iteration"
    return None


def _shape_problem(traj: Trajectory, shape: tuple[int, int, int, int]) -> str | None:
    """Why a field of ``traj`` does not have its shape for (B, S, n, d) = ``shape``, or None."""
    batch, points, n, d = shape
    if traj.x.shape != (batch, points, n, d):
        return f"x has shape {traj.x.shape}, expected {(batch, points, n, d)}"
    if traj.y.ndim != 3 or traj.y.shape[:2] != (batch, points):
        return f"y has shape {traj.y.shape}, expected ({batch}, {points}, k)"
    for name in ("status", "stalls", "h", "drift", "error", "corrections", "rejected", "distance", "arc_length",
                 "goal_distance"):
        if getattr(traj, name).shape != (batch, points):
            return f"{name} has shape {getattr(traj, name).shape}, expected {(batch, points)}"
    for name in ("step", "eigenvalue"):
        if getattr(traj, name).shape[:2] != (batch, points):
            return f"{name} has shape {getattr(traj, name).shape}, expected ({batch}, {points}, blocks)"
    return None


def _span(iterations: np.ndarray) -> str:
    return f"{int(iterations[0])}..{int(iterations[-1])} ({len(iterations)} points)" if len(iterations) else "nowhere"


def chunk_files(directory: Path) -> list[tuple[int, Path]]:
    """The chunk files of an exploration by the iteration they end at (temporaries and strays ignored)."""
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := CHUNK_NAME.match(p.name))]
    return sorted(found)


def chunk_name(iteration: int) -> str:
    return f"{iteration:08d}.npz"


# --------------------------------------------------------------------------- the directory


class StudyFiles:
    """Writes into a study directory, atomically and recorded in its manifest; verified reads."""

    def __init__(self, root: str | os.PathLike[str], manifest: Manifest | None = None) -> None:
        self.root = study_root(root)
        self.manifest = manifest if manifest is not None else Manifest.load(self.root)

    def path(self, rel: str) -> Path:
        """The file ``rel`` of the study; OutsideStudyError when a symbolic link leads it out of the study."""
        return contained(self.root, self.root / rel)

    def write_npz(self, rel: str, arrays: dict[str, Any]) -> None:
        atomic.write_npz(self.path(rel), arrays)
        self.manifest.record(self.path(rel))

    def write_json(self, rel: str, value: Any) -> None:
        atomic.write_json(self.path(rel), value)
        self.manifest.record(self.path(rel))

    def write_text(self, rel: str, text: str) -> None:
        atomic.write_text(self.path(rel), text)
        self.manifest.record(self.path(rel))

    def write_with(self, rel: str, writer: Callable[[Path], None]) -> None:
        atomic.write_with(self.path(rel), writer)
        self.manifest.record(self.path(rel))

    def remove(self, *rels: str) -> None:
        """Delete files (and forget them)."""
        for rel in rels:
            self.path(rel).unlink(missing_ok=True)
        self.manifest.forget(*(self.path(r) for r in rels))

    def check(self, rel: str) -> str:
        return self.manifest.check(self.path(rel))

    def read_npz(self, rel: str, *, required: bool = True) -> dict[str, np.ndarray] | None:
        """The arrays of ``rel`` after checking its checksum; None when absent and not ``required``.

        Raises StudyDamagedError when the file fails its checksum or cannot be read.
        """
        status = self.check(rel)
        if status == "missing":
            if required or rel in self.manifest.files:
                raise StudyDamagedError(self.path(rel), "the file is missing")
            return None
        if status == "mismatch":
            raise StudyDamagedError(self.path(rel), "the file fails its checksum (it changed after it was written)")
        try:
            return read_npz(self.path(rel))
        except READ_ERRORS as exc:
            raise StudyDamagedError(self.path(rel), f"the file cannot be read ({type(exc).__name__})") from None

    def read_trajectory(self, rel: str, x0_shape: tuple[int, ...], iterations: np.ndarray) -> Trajectory | None:
        """A verified trajectory file that fits its study; None when absent (StudyDamagedError otherwise)."""
        arrays = self.read_npz(rel, required=False)
        if arrays is None:
            return None
        try:
            traj = trajectory_from_arrays(arrays)
        except (KeyError, ValueError) as exc:
            raise StudyDamagedError(self.path(rel), f"the file is not a trajectory ({exc})") from None
        problem = trajectory_problem(traj, x0_shape, iterations)
        if problem is not None:
            raise StudyDamagedError(self.path(rel), f"the trajectory does not fit the study: {problem}")
        return traj


def read_spec(root: str | os.PathLike[str], manifest: Manifest | None = None) -> StudySpec:
    """The spec of the study at ``root``, checked against the manifest."""
    root = study_root(root)
    path = root / SPEC
    if root.exists() and not root.is_dir():
        raise NotAStudyError(root, "it is a file, not a directory")
    if not path.is_file():
        raise NotAStudyError(root)
    manifest = manifest if manifest is not None else Manifest.load(root)
    if manifest.check(path) == "mismatch":
        raise StudyDamagedError(path, "the file fails its checksum; the study cannot be continued", recoverable=False)
    try:
        return StudySpec.from_json(path.read_text(encoding="utf-8"))
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        reason = f"not a valid study spec ({str(exc).splitlines()[0]})"
        raise StudyDamagedError(path, reason, recoverable=False) from None


# --------------------------------------------------------------------------- reading a study back


@dataclass(frozen=True)
class Study:
    """A study read back from its directory (see the module docstring).

    unfinished: the runs of the spec whose exploration has not finished, with the
    iterations their chunks reach.
    """

    path: Path
    spec: StudySpec
    inputs: dict[str, np.ndarray]
    trajectories: dict[str, Trajectory]
    baselines: dict[str, Trajectory]
    interpretations: dict[str, Interpretation]
    timing: dict[str, dict[str, float]]
    unfinished: dict[str, int] = field(default_factory=dict)

    @property
    def context(self) -> dict[str, np.ndarray]:
        """The batched model context saved with the inputs."""
        return {k[4:]: v for k, v in self.inputs.items() if k.startswith("ctx_")}


def saved_iterations(spec: StudySpec, run: str) -> np.ndarray:
    """The iterations a finished run of ``spec`` keeps: 0, save_every, ..., steps (the run's own saving)."""
    return np.arange(0, spec.steps + 1, spec.config(run).save_every)


def inputs_problem(inputs: dict[str, np.ndarray], spec: StudySpec) -> str | None:
    """Why inputs.npz does not fit its spec, or None when it does."""
    for name in ("x0", "select", "importance", "ctx_token_mask"):
        if name not in inputs:
            return f"it lacks {name!r}"
    x0 = inputs["x0"]
    if x0.ndim != 3 or x0.shape[0] != len(spec.inputs):
        return f"x0 has shape {x0.shape}, expected ({len(spec.inputs)}, n, d)"
    for name in ("select", "importance", "ctx_token_mask"):
        if inputs[name].shape != x0.shape[:2]:
            return f"{name} has shape {inputs[name].shape}, expected {x0.shape[:2]}"
    return None


def load_study(path: str | os.PathLike[str]) -> Study:
    """Read a study directory written by :func:`~manifold_jax.study.run_study`, verifying what it reads.

    Raises NotAStudyError for a directory without spec.json and StudyDamagedError for a file
    that fails its checksum or does not fit the study.
    """
    root = study_root(path)
    files = StudyFiles(root)
    spec = read_spec(root, files.manifest)
    if files.manifest.damaged:
        raise StudyDamagedError(root / MANIFEST, files.manifest.problem.removeprefix(f"{MANIFEST} "))
    inputs = files.read_npz(INPUTS, required=True)
    assert inputs is not None
    problem = inputs_problem(inputs, spec)
    if problem is not None:
        raise StudyDamagedError(files.path(INPUTS), f"the inputs do not fit spec.json: {problem}")
    x0_shape = inputs["x0"].shape
    trajectories, baselines, interpretations, timing, unfinished = {}, {}, {}, {}, {}
    for algorithm in spec.runs:
        iterations = saved_iterations(spec, algorithm)
        traj = files.read_trajectory(f"{algorithm}/{TRAJECTORY}", x0_shape, iterations)
        if traj is None:
            reached = chunk_files(root / algorithm / CHUNKS)
            unfinished[algorithm] = reached[-1][0] if reached else 0
            continue
        trajectories[algorithm] = traj
        base = files.read_trajectory(f"{algorithm}/{BASELINE}", x0_shape, iterations)
        if base is not None:
            baselines[algorithm] = base
        interp = files.read_npz(f"{algorithm}/{INTERPRETATION}", required=False)
        if interp is not None:
            interpretations[algorithm] = _interpretation(interp, files.path(f"{algorithm}/{INTERPRETATION}"),
                                                         traj)
        if files.path(f"{algorithm}/{TIMING}").is_file():
            timing[algorithm] = _timing(files, f"{algorithm}/{TIMING}")
    return Study(root, spec, inputs, trajectories, baselines, interpretations, timing, unfinished)


def _interpretation(arrays: dict[str, np.ndarray], path: Path, traj: Trajectory) -> Interpretation:
    if set(arrays) != {"inputs", "logits"}:
        raise StudyDamagedError(path, f"expected the arrays inputs and logits, found {', '.join(sorted(arrays))}")
    if arrays["logits"].shape != traj.y.shape or arrays["inputs"].shape[:2] != traj.y.shape[:2]:
        raise StudyDamagedError(path, f"logits {arrays['logits'].shape} / inputs {arrays['inputs'].shape} do not fit "
                                      f"the trajectory's outputs {traj.y.shape}")
    return Interpretation(inputs=arrays["inputs"], logits=arrays["logits"])


def _timing(files: StudyFiles, rel: str) -> dict[str, float]:
    status = files.check(rel)
    if status == "mismatch":
        raise StudyDamagedError(files.path(rel), "the file fails its checksum (it changed after it was written)")
    try:
        value = json.loads(files.path(rel).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise StudyDamagedError(files.path(rel), "not valid JSON") from None
    problem = timing_problem(value)
    if problem is not None:
        raise StudyDamagedError(files.path(rel), problem)
    return value


def timing_problem(value: Any) -> str | None:
    """Why a timing.json value is not a report's timing (an object of finite, non-negative figures), or None."""
    if not isinstance(value, dict):
        return "expected a JSON object"
    for name in ("seconds_per_iteration", "seconds_per_iteration_per_token"):
        figure = value.get(name)
        if isinstance(figure, bool) or not isinstance(figure, (int, float)) or not np.isfinite(figure) or figure < 0:
            return f"{name} must be a finite number >= 0, got {figure!r}"
    return None
