"""The model families ``load`` knows, keyed by config.json's ``model_type``, with their options.

A :class:`Family` names its tasks (the first is the default), the options of
:func:`manifold_jax.models.load` it takes, and its loader. ``load`` refuses an option a
family does not take with a one-line error naming the option and the family, so that
nothing is silently ignored (before, the sentence classifier ignored ``num_labels``,
``init_missing_head`` and ``key``, and our ViT ignored ``max_length``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import UnsupportedModelError

OPTIONS: tuple[str, ...] = (
    "init_missing_head", "num_labels", "key", "max_length", "image_mean", "image_std", "top_k",
)
"""Every family-specific option of ``load`` (``dtype`` applies to all of them)."""

HEAD_OPTIONS = frozenset({"init_missing_head", "num_labels", "key"})
"""Options of the families whose checkpoints may lack a task head."""


@dataclass(frozen=True)
class Family:
    """One loadable architecture.

    ``loader(directory, task, options)`` receives only the options this family takes (and
    ``dtype``); ``hf_config``: read ``transformers.AutoConfig`` for it (our own formats do not);
    ``study_task``: the task the CLI explores by default (a causal LM's frozen top-k head,
    whose report metrics stay small, rather than its full-vocabulary API default).
    """

    model_type: str
    name: str
    modality: str
    tasks: tuple[str, ...]
    options: frozenset[str]
    loader: Callable[[str, Any, dict[str, Any]], Any]
    hf_config: bool = True
    study_task: str | None = None

    def __post_init__(self) -> None:
        unknown = sorted(self.options - set(OPTIONS))
        if unknown:
            raise ValueError(f"family {self.model_type}: unknown option(s) {', '.join(unknown)}")

    @property
    def default_task(self) -> str:
        return self.tasks[0]

    def check(self, task: str, given: Mapping[str, Any]) -> None:
        """Refuse a task this family does not have or an option it does not take (one line each)."""
        if task not in self.tasks:
            raise UnsupportedModelError(f"unknown task {task!r} for {self.name}; supported: {', '.join(self.tasks)}")
        refused = [name for name in given if name not in self.options]
        if refused:
            takes = ", ".join(sorted(self.options)) or "none"
            raise UnsupportedModelError(
                f"option {refused[0]} does not apply to {self.name} (model_type {self.model_type!r}); "
                f"its options: {takes}"
            )


FAMILIES: dict[str, Family] = {}
"""Registered families by model_type (filled by :mod:`manifold_jax.models.loading`)."""


def register(family: Family) -> Family:
    """Add a family to :data:`FAMILIES` (one per model_type)."""
    if family.model_type in FAMILIES:
        raise ValueError(f"model_type {family.model_type!r} is already registered")
    FAMILIES[family.model_type] = family
    return family


def family(model_type: Any, where: str = "config.json") -> Family:
    """The family of a model_type; an unknown one gets an error listing the supported ones."""
    found = FAMILIES.get(model_type) if isinstance(model_type, str) else None
    if found is None:
        raise UnsupportedModelError(
            f"unsupported model_type {model_type!r} in {where}; supported: {', '.join(FAMILIES)}"
        )
    return found
