"""What the training runs share: the progress bar, the versions and command they record, the record file."""

from __future__ import annotations

import json
import os
import platform
from typing import Any

import jax
import numpy as np
import optax

from manifold_jax.models.vit_modules import ViTConfig

TRAINING_FILE = "training.json"
"""Name of the file beside a saved model that records its metrics and hyper-parameters."""


def progress_bar(total: int, desc: str, enabled: bool) -> Any:
    """A tqdm bar over ``total`` items (disabled unless ``enabled``)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, dynamic_ncols=True)


def versions() -> dict[str, str]:
    """The versions of the libraries (and the backend) a run used, for its record."""
    import flax

    return {
        "jax": jax.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": jax.default_backend(),
    }


def command(function: str, *args: Any, **kwargs: Any) -> str:
    """A shell command that repeats a training call: ``python -c "from ... import f; f(...)"``."""
    parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
    imports = "from manifold_jax.models import ViTConfig; " if any(isinstance(a, ViTConfig) for a in args) else ""
    code = f"{imports}from manifold_jax.training import {function}; {function}({', '.join(parts)})"
    return f'python -c "{code}"'


def write_training_json(directory: str | os.PathLike[str], record: dict[str, Any]) -> None:
    """Write ``record`` to ``training.json`` in ``directory`` (created when missing)."""
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, TRAINING_FILE), "w") as f:
        json.dump(record, f, indent=2)
        f.write("\n")
