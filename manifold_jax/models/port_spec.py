"""One declarative loader per family: a :class:`PortSpec` says how a checkpoint becomes a port.

Every loader does the same five things: refuse an unknown task, build the family's config
from the checkpoint, check the weights (a tied decoder), map the checkpoint's names onto the
flax module's parameters (:func:`~manifold_jax.models.weights.load_params`), and build the
model object. A spec names only what differs (config, names, module, model); a new family is
a spec, not a copy of a loader.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from .base import Task
from .errors import UnsupportedModelError
from .weights import NameTable, load_params, read_checkpoint

ConfigT = TypeVar("ConfigT")
ModelT = TypeVar("ModelT")

class Checkpoint:
    """What a spec's functions read: the directory, its transformers config (None for our own
    formats), the task, the family options given to the loader, and the weights (read once)."""

    def __init__(self, directory: str, hf: Any, task: Task, options: Mapping[str, Any]) -> None:
        self.directory = directory
        self.hf = hf
        self.task = task
        self.options = dict(options)

    def option(self, name: str, default: Any = None) -> Any:
        """The option ``name`` as given, or ``default`` when absent or None."""
        value = self.options.get(name)
        return default if value is None else value

    @functools.cached_property
    def weights(self) -> dict[str, np.ndarray]:
        """``{name: array}`` of the checkpoint's weights file."""
        return read_checkpoint(self.directory)


@dataclass(frozen=True)
class PortSpec(Generic[ConfigT, ModelT]):
    """How one family's checkpoint becomes a port.

    ``name``: the family in messages ("BERT (mlm)"); ``tasks``: the first is the default;
    ``config(checkpoint)``: the family's config (and refusal of options that contradict it);
    ``names``: the checkpoint names -> flax paths (or a function of the config);
    ``module(config, task)``: the flax module, whose ``init_all`` runs every parameter on
    ``init_inputs(config)``; ``build(params, config, task, checkpoint)``: the model object;
    ``options``: the loader options the family takes besides ``dtype``;
    ``check_weights(weights)``: refuse weights the port cannot run (an untied decoder).
    """

    name: str
    tasks: tuple[Task, ...]
    config: Callable[[Checkpoint], ConfigT]
    names: NameTable | Callable[[ConfigT], NameTable]
    module: Callable[[ConfigT, Task], nn.Module]
    init_inputs: Callable[[ConfigT], tuple[jax.Array, ...]]
    build: Callable[[dict[str, Any], ConfigT, Task, Checkpoint], ModelT]
    options: frozenset[str] = frozenset()
    check_weights: Callable[[Mapping[str, np.ndarray]], None] | None = None

    def check_task(self, task: str) -> None:
        """Refuse a task this family does not have, listing the ones it does."""
        if task not in self.tasks:
            raise UnsupportedModelError(f"unknown task {task!r} for {self.name}; supported: {', '.join(self.tasks)}")

    def init(self, config: ConfigT, task: Task) -> Callable[[jax.Array], Any]:
        """``init(key) -> params`` of the flax module of this config and task."""
        module = self.module(config, task)
        inputs = self.init_inputs(config)

        def init(key: jax.Array) -> Any:
            return module.init(key, *inputs, method=type(module).init_all)["params"]  # type: ignore[attr-defined]

        return init

    def name_table(self, config: ConfigT) -> NameTable:
        return self.names if isinstance(self.names, NameTable) else self.names(config)

    def params(
        self,
        weights: Mapping[str, np.ndarray],
        config: ConfigT,
        task: Task,
        *,
        dtype: Any = jnp.float32,
        key: jax.Array | None = None,
        init_missing_head: bool = False,
    ) -> dict[str, Any]:
        """Checked weights ``{name: array}`` -> the nested flax params of (config, task)."""
        if self.check_weights is not None:
            self.check_weights(weights)
        return load_params(
            weights, self.name_table(config), self.init(config, task), key=key,
            init_missing_head=init_missing_head, dtype=dtype, what=f"{self.name} ({task})",
        )

    def load(
        self, directory: str, hf_config: Any = None, task: Task | None = None, *, dtype: Any = jnp.float32,
        **options: Any,
    ) -> ModelT:
        """The port of the checkpoint in ``directory`` (see :func:`manifold_jax.models.load` for the
        options; ``tokenizer``, text families: a tokenizer, None, or "auto" to read the directory's)."""
        task = self.tasks[0] if task is None else task
        self.check_task(task)
        unknown = sorted(set(options) - self.options)
        if unknown:
            raise TypeError(f"{self.name} loader got unexpected option(s) {', '.join(unknown)}")
        checkpoint = Checkpoint(directory, hf_config, task, options)
        config = self.config(checkpoint)
        params = self.params(
            checkpoint.weights, config, task, dtype=dtype, key=checkpoint.option("key"),
            init_missing_head=bool(checkpoint.option("init_missing_head", False)),
        )
        return self.build(params, config, task, checkpoint)
