"""A study: SiMEC / SiMExp explorations of a real model on real inputs, kept in a directory.

A study directory is written step by step and can be continued after an interruption:

    spec.json                  what was asked (model, inputs, options, seed): see StudySpec
    inputs.npz                 raw inputs, x0, context, token importance, selection, bounds
    <algorithm>/chunks/*.npz   trajectory records, one file per compiled chunk
    <algorithm>/checkpoints/   orbax checkpoints of the engine state after each chunk
    <algorithm>/trajectory.npz the whole trajectory, once the exploration is complete
    <algorithm>/timing.json    seconds per iteration (compile excluded) and per token
    <algorithm>/baseline.npz   the gradient-plus-noise baseline with the same step sizes
    <algorithm>/interpretation.npz  decoded inputs and their re-predictions (Algorithm 3)

``load_study`` reads it back. Resuming restores the last checkpoint and continues with
the same compiled chunks, so the trajectory equals an uninterrupted run bit for bit.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from manifold_jax.attribution import SELECTIONS, select_tokens, token_importance
from manifold_jax.baseline import gradient_baseline
from manifold_jax.explore import (
    ALGORITHMS,
    RECORD_FIELDS,
    STEP_RULES,
    Absolute,
    ExplorationState,
    Relative,
    Trajectory,
    explore,
    init_state,
)
from manifold_jax.geometry import BLOCKS, METHODS
from manifold_jax.interpret import Interpretation, interpret

BOUNDS: tuple[str, ...] = ("theoretical", "measured", "none")
MEASURED_IMAGES = 1000
"""Training images the measured box of an image model is taken over."""



@dataclass(frozen=True)
class StudySpec:
    """Everything a study needs, validated when built, saved as spec.json.

    model: an embedded name ("mnist-vit", "minilm-topics"), a local directory or a hub
    id. inputs: texts for a text model; "mnist:<index>" or image file paths for an image
    model. select: "all", "one", "q1", "q2", "q3" or explicit positions. bounds:
    "theoretical", "measured" or "none". threshold: relative level (float) or "reference"
    (the authors' absolute 0.01). output_metric: "euclidean" (on the logits, the
    reference), "softmax" or "fisher_rao". The other fields are the engine's options.
    """

    model: str
    inputs: tuple[str, ...]
    task: str = "classification"
    algorithms: tuple[str, ...] = ("simec", "simexp")
    steps: int = 1000
    eta: float = 1.0
    select: str | tuple[int, ...] = "all"
    bounds: str = "theoretical"
    seed: int = 0
    save_every: int = 10
    spectrum: str = "gram"
    threshold: float | str = 1e-4
    step_rule: str = "reference"
    blocks: str = "token"
    output_metric: str = "euclidean"
    chunk_size: int = 100
    baseline: bool = True
    labels: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "algorithms", tuple(self.algorithms))
        object.__setattr__(self, "labels", tuple(self.labels))
        if not isinstance(self.select, str):
            object.__setattr__(self, "select", tuple(int(i) for i in self.select))
        if not self.inputs:
            raise ValueError("inputs: give at least one input")
        for i, text in enumerate(self.inputs):
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"input {i} is empty; every input must be a non-empty text, image path or mnist:<index>")
        if not self.algorithms or any(a not in ALGORITHMS for a in self.algorithms):
            raise ValueError(f"algorithms={self.algorithms!r}: choose from {', '.join(ALGORITHMS)}")
        if isinstance(self.select, str) and self.select not in (*SELECTIONS, "mask"):
            raise ValueError(
                f"select={self.select!r} is not supported; expected one of {', '.join(SELECTIONS)}, mask or positions"
            )
        if self.bounds not in BOUNDS:
            raise ValueError(f"bounds={self.bounds!r} is not supported; expected one of {', '.join(BOUNDS)}")
        if self.spectrum not in METHODS or self.blocks not in BLOCKS or self.step_rule not in STEP_RULES:
            raise ValueError(f"unsupported spectrum/blocks/step_rule: {self.spectrum!r}, {self.blocks!r}, {self.step_rule!r}")
        for name in ("steps", "save_every", "chunk_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.steps % self.save_every:
            raise ValueError(f"steps ({self.steps}) must be a multiple of save_every ({self.save_every})")
        self.explore_options()  # validates eta and threshold through the engine's own config

    def explore_options(self) -> dict[str, Any]:
        """The keyword options of :func:`manifold_jax.explore` for this study."""
        from manifold_jax.explore import ExploreConfig

        if self.threshold == "reference":
            threshold: Any = Absolute()
        elif isinstance(self.threshold, (int, float)) and not isinstance(self.threshold, bool):
            threshold = Relative(float(self.threshold))
        else:
            raise ValueError(f"threshold={self.threshold!r}: give a relative level in (0, 1) or 'reference'")
        options = dict(
            eta=float(self.eta), threshold=threshold, step_rule=self.step_rule, spectrum=self.spectrum,
            blocks=self.blocks, output_metric=self.output_metric, save_every=self.save_every,
            chunk_size=self.chunk_size,
        )
        ExploreConfig(algorithm="simec", **options)
        return options

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> StudySpec:
        data = json.loads(text)
        if isinstance(data.get("select"), list):
            data["select"] = tuple(data["select"])
        return cls(**data)


@dataclass(frozen=True)
class Study:
    """A study read back from its directory (see the module docstring)."""

    path: Path
    spec: StudySpec
    inputs: dict[str, np.ndarray]
    trajectories: dict[str, Trajectory]
    baselines: dict[str, Trajectory]
    interpretations: dict[str, Interpretation]
    timing: dict[str, dict[str, float]]

    @property
    def context(self) -> dict[str, np.ndarray]:
        """The batched model context saved with the inputs."""
        return {k[4:]: v for k, v in self.inputs.items() if k.startswith("ctx_")}


# --------------------------------------------------------------------------- inputs


def load_model(spec: StudySpec) -> Any:
    """The model a study names (embedded name, local directory or hub id)."""
    from manifold_jax.models import load

    return load(spec.model, task=spec.task)


def load_inputs(model: Any, spec: StudySpec) -> tuple[np.ndarray | list[str], jax.Array, dict[str, jax.Array]]:
    """Raw inputs, their embeddings x0 (B, n, d) and the batched context."""
    if model.modality == "image":
        images = np.stack([_read_image_input(s, model) for s in spec.inputs])
        x0, ctx = model.embed(images)
        return images, x0, ctx
    texts = list(spec.inputs)
    x0, ctx = model.embed(texts)
    return texts, x0, ctx


def _read_image_input(source: str, model: Any) -> np.ndarray:
    from manifold_jax.data import mnist_images
    from manifold_jax.data.images import read_image

    cfg = model.config
    if source.startswith("mnist:"):
        try:
            index = int(source.split(":", 1)[1])
        except ValueError:
            raise ValueError(f"input {source!r}: expected mnist:<index> with an integer index") from None
        if not 0 <= index < 5000:
            raise ValueError(f"input {source!r}: the MNIST subset has images 0..4999")
        if (cfg.image_size, cfg.num_channels) != (28, 1):
            raise ValueError(f"input {source!r}: the model expects {cfg.image_size}x{cfg.image_size}x{cfg.num_channels} images, MNIST is 28x28x1")
        return mnist_images([index])[0][0][..., None].astype(np.float32)
    return read_image(source, cfg.image_size, cfg.num_channels)


def study_bounds(model: Any, spec: StudySpec, x0: jax.Array) -> tuple[np.ndarray, np.ndarray] | None:
    """The feasible box (n, d) the study projects into, or None for "none"."""
    n = x0.shape[1]
    if spec.bounds == "none":
        return None
    if spec.bounds == "theoretical":
        if model.modality == "text":
            lo, hi = model.bounds("theoretical", n)
        else:
            lo, hi = model.bounds("theoretical")
    elif model.modality == "image":
        from manifold_jax.data import mnist_split

        if (model.config.image_size, model.config.num_channels) != (28, 1):
            raise ValueError("measured bounds are available for MNIST-shaped image models; use --bounds theoretical")
        lo, hi = model.bounds("measured", mnist_split(seed=0).train_images[:MEASURED_IMAGES])
    else:
        from manifold_jax.data import load_sentences

        texts, _, _ = load_sentences()
        x_ref, _ = model.embed(texts, max_length=n)
        lo, hi = jnp.min(x_ref, axis=0), jnp.max(x_ref, axis=0)
    lo = np.minimum(np.asarray(lo), np.asarray(x0).min(axis=0))
    hi = np.maximum(np.asarray(hi), np.asarray(x0).max(axis=0))
    return lo, hi


def _selection(spec: StudySpec, importance: np.ndarray, mask: np.ndarray, ctx: dict[str, jax.Array]) -> np.ndarray:
    """The explored tokens (B, n): a named selection, positions, or the MLM mask token."""
    if spec.select != "mask":
        return select_tokens(importance, mask, spec.select if isinstance(spec.select, str) else list(spec.select))
    if "mask_position" not in ctx:
        raise ValueError("select='mask' explores the masked word: it needs task='mlm' and texts with a mask token")
    out = np.zeros_like(mask)
    out[np.arange(len(out)), np.asarray(ctx["mask_position"])] = True
    return out


# --------------------------------------------------------------------------- the study


def _prepare_directory(out: Path, resume: bool, overwrite: bool) -> None:
    if resume:
        if not (out / "spec.json").is_file():
            raise FileNotFoundError(f"--resume {out}: no study there (spec.json is missing)")
        return
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"output directory {out} is not empty; pass --overwrite to replace it or --resume to continue it"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def run_study(
    spec: StudySpec | None,
    out_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> Path:
    """Run (or, with ``resume``, continue) a study into ``out_dir``; returns its path.

    Refuses a non-empty directory unless ``overwrite`` (which deletes it first) or
    ``resume`` (which reads spec.json there and continues from the last checkpoint).
    """
    out = Path(out_dir)
    _prepare_directory(out, resume, overwrite)
    if resume:
        spec = StudySpec.from_json((out / "spec.json").read_text())
    elif spec is None:
        raise ValueError("spec is required unless resuming")
    model = load_model(spec)
    raw, x0, ctx = load_inputs(model, spec)
    if not spec.labels:
        spec = dataclasses.replace(spec, labels=tuple(str(label) for label in model.labels))
    if not resume:
        (out / "spec.json").write_text(spec.to_json())
    mask = np.asarray(ctx["token_mask"])
    importance = token_importance(model.head, x0, (ctx,), spec.output_metric)
    select = _selection(spec, importance, mask, ctx)
    box = study_bounds(model, spec, x0)
    inputs_file = out / "inputs.npz"
    arrays: dict[str, Any] = {
        "x0": np.asarray(x0), "importance": importance, "select": select,
        **{f"ctx_{k}": np.asarray(v) for k, v in ctx.items()},
    }
    if box is not None:
        arrays["lo"], arrays["hi"] = box
    if model.modality == "image":
        arrays["raw"] = np.asarray(raw)
    if inputs_file.exists():
        before = np.load(inputs_file)
        if not np.array_equal(before["x0"], arrays["x0"]) or not np.array_equal(before["select"], select):
            raise ValueError(f"{out}: the inputs rebuilt from spec.json differ from inputs.npz; start a new study")
    else:
        np.savez(inputs_file, **arrays)

    key = jax.random.PRNGKey(spec.seed)
    options = spec.explore_options()
    for number, algorithm in enumerate(spec.algorithms):
        alg_dir = out / algorithm
        echo(f"{algorithm}: {len(spec.inputs)} input(s), {spec.steps} steps, eta={spec.eta}, "
             f"{int(select.sum())} selected token(s)")
        traj = _explore_checkpointed(
            model, x0, ctx, select, box, algorithm, jax.random.fold_in(key, number), spec, options, alg_dir, progress,
        )
        if spec.baseline and not (alg_dir / "baseline.npz").exists():
            echo(f"{algorithm}: gradient-plus-noise baseline with the same step sizes")
            steps_taken = np.where(np.isfinite(traj.step), traj.step, 0.0)
            base = gradient_baseline(
                model.head, x0, key=jax.random.fold_in(key, 100 + number), steps=spec.steps,
                step_size=steps_taken.mean(axis=1), direction="stay" if algorithm == "simec" else "leave",
                args=(ctx,), select=select, bounds=box, save_every=spec.save_every,
            )
            save_trajectory(alg_dir / "baseline.npz", base)
        if not (alg_dir / "interpretation.npz").exists():
            echo(f"{algorithm}: decoding {traj.x.shape[1]} saved points per input (Algorithm 3)")
            interp = interpret(model, traj.x, ctx)
            np.savez(alg_dir / "interpretation.npz", inputs=interp.inputs, logits=interp.logits)
    return out


def _explore_checkpointed(
    model: Any, x0: jax.Array, ctx: dict[str, jax.Array], select: np.ndarray, box: Any, algorithm: str,
    key: jax.Array, spec: StudySpec, options: dict[str, Any], alg_dir: Path, progress: bool,
) -> Trajectory:
    """One exploration with a chunk file and an orbax checkpoint after every chunk."""
    import orbax.checkpoint as ocp

    done = alg_dir / "trajectory.npz"
    if done.exists():
        return load_trajectory(done)
    chunks = alg_dir / "chunks"
    chunks.mkdir(parents=True, exist_ok=True)
    manager = ocp.CheckpointManager(
        (alg_dir / "checkpoints").absolute(),
        options=ocp.CheckpointManagerOptions(max_to_keep=2, enable_async_checkpointing=False),
    )
    start: Any = jnp.asarray(x0)
    pieces: list[Trajectory] = []
    latest = manager.latest_step()
    if latest is not None:
        # the checkpoint holds a state shaped like the one this exploration starts from
        abstract = dataclasses.asdict(init_state(x0, key, f=model.head, args=(ctx,)))
        restored = manager.restore(latest, args=ocp.args.StandardRestore(abstract))
        start = ExplorationState(**{k: jnp.asarray(v) for k, v in restored.items()})
        for path in sorted(chunks.glob("*.npz")):
            if int(path.stem) <= latest:
                pieces.append(load_trajectory(path))
            else:
                path.unlink()  # written after the last checkpoint: recomputed below
    clock = {"last": time.perf_counter(), "times": []}

    def on_chunk(state: ExplorationState, chunk: Trajectory) -> None:
        now = time.perf_counter()
        steps_in_chunk = int(state.iteration) - int(chunk.iteration[0])
        clock["times"].append((now - clock["last"], steps_in_chunk))
        save_trajectory(chunks / f"{int(state.iteration):08d}.npz", chunk)
        manager.save(int(state.iteration), args=ocp.args.StandardSave(dataclasses.asdict(state)), force=True)
        manager.wait_until_finished()
        clock["last"] = time.perf_counter()

    remaining = spec.steps - (int(start.iteration) if isinstance(start, ExplorationState) else 0)
    if remaining > 0:
        rest = explore(
            model.head, start, algorithm=algorithm, steps=remaining,
            key=None if isinstance(start, ExplorationState) else key,
            args=(ctx,), select=select, bounds=box, progress=progress, on_chunk=on_chunk, **options,
        )
        pieces.append(rest)
    manager.close()
    traj = pieces[0]
    for piece in pieces[1:]:
        traj = _join(traj, piece)
    save_trajectory(done, traj)
    _write_timing(alg_dir / "timing.json", clock["times"], select)
    return traj


def _join(first: Trajectory, rest: Trajectory) -> Trajectory:
    """Records of consecutive chunks (the first ends just before the second starts)."""
    parts = {f: np.concatenate([getattr(first, f), getattr(rest, f)], axis=1) for f in RECORD_FIELDS}
    return Trajectory(**parts, iteration=np.concatenate([first.iteration, rest.iteration]), final=rest.final)


def _write_timing(path: Path, times: list[tuple[float, int]], select: np.ndarray) -> None:
    """Seconds per iteration from the chunk times, the first chunk (compilation) excluded."""
    steady = times[1:] if len(times) > 1 else times
    per_iteration = float(np.median([t / max(s, 1) for t, s in steady])) if steady else float("nan")
    tokens = int(select.sum())
    info = {
        "seconds_per_iteration": per_iteration,
        "seconds_per_iteration_per_token": per_iteration / max(tokens, 1),
        "selected_tokens": tokens,
        "compile_included": len(times) <= 1,
        "chunks": [{"seconds": t, "steps": s} for t, s in times],
    }
    if not path.exists():  # a resumed run keeps the timing of its first, uninterrupted part
        path.write_text(json.dumps(info, indent=2))


# --------------------------------------------------------------------------- files


def save_trajectory(path: Path, traj: Trajectory) -> None:
    """A Trajectory as an .npz (final state included, as ``final_*``)."""
    arrays = traj.to_arrays()
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def load_trajectory(path: str | os.PathLike[str]) -> Trajectory:
    """Inverse of :func:`save_trajectory`."""
    with np.load(path) as data:
        return Trajectory.from_arrays(data)


def load_study(path: str | os.PathLike[str]) -> Study:
    """Read a study directory written by :func:`run_study`."""
    out = Path(path)
    if not (out / "spec.json").is_file():
        raise FileNotFoundError(f"{out} is not a study directory (spec.json is missing)")
    spec = StudySpec.from_json((out / "spec.json").read_text())
    with np.load(out / "inputs.npz") as data:
        inputs = {k: data[k] for k in data.files}
    trajectories, baselines, interpretations, timing = {}, {}, {}, {}
    for algorithm in spec.algorithms:
        alg_dir = out / algorithm
        if not (alg_dir / "trajectory.npz").exists():
            continue
        trajectories[algorithm] = load_trajectory(alg_dir / "trajectory.npz")
        if (alg_dir / "baseline.npz").exists():
            baselines[algorithm] = load_trajectory(alg_dir / "baseline.npz")
        if (alg_dir / "interpretation.npz").exists():
            with np.load(alg_dir / "interpretation.npz") as data:
                interpretations[algorithm] = Interpretation(inputs=data["inputs"], logits=data["logits"])
        if (alg_dir / "timing.json").exists():
            timing[algorithm] = json.loads((alg_dir / "timing.json").read_text())
    return Study(out, spec, inputs, trajectories, baselines, interpretations, timing)
