"""``load(path_or_id, task=...)``: any supported checkpoint directory to a model port.

``path_or_id`` may also be the name of an embedded model (``"mnist-vit"``,
``"minilm-topics"``: :mod:`manifold_jax.models.embedded`), which loads from the package
without touching the network. The architecture is read from ``config.json``: our own
ViT (``model_type`` "manifold_vit") through :class:`~manifold_jax.models.vit.ViTConfig`,
our sentence classifier ("manifold_sentence_classifier") through
:func:`~manifold_jax.models.sentence.load_sentence_classifier`, everything else
through ``transformers.AutoConfig.from_pretrained(directory)``. Weights come from
``model.safetensors`` (or ``pytorch_model.bin`` when torch is importable) and are
mapped onto the flax params by each port's declarative name table.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from .base import Task
from .bert import Bert, load_bert
from .embedded import embedded_path, is_embedded, unknown_name_message
from .errors import UnsupportedModelError
from .hf_vit import load_hf_vit
from .sentence import MODEL_TYPE as MANIFOLD_SENTENCE
from .sentence import SentenceClassifier, load_sentence_classifier
from .vit import MODEL_TYPE as MANIFOLD_VIT
from .vit import ViT, load_manifold_vit

Model = Bert | ViT | SentenceClassifier


def _bert(directory: str, cfg: Any, task: Task, opts: dict[str, Any]) -> Model:
    return load_bert(directory, cfg, task, max_length=opts.pop("max_length"), **_common(opts))


def _hf_vit(directory: str, cfg: Any, task: Task, opts: dict[str, Any]) -> Model:
    return load_hf_vit(
        directory, cfg, task, image_mean=opts.pop("image_mean"), image_std=opts.pop("image_std"), **_common(opts)
    )


def _common(opts: dict[str, Any]) -> dict[str, Any]:
    keys = ("dtype", "init_missing_head", "num_labels", "key")
    return {k: opts[k] for k in keys}


LOADERS: dict[str, Callable[[str, Any, Task, dict[str, Any]], Model]] = {
    "bert": _bert,
    "vit": _hf_vit,
}
"""transformers ``model_type`` -> loader. Our own ViT ("manifold_vit") is handled apart."""

SUPPORTED_MODEL_TYPES: tuple[str, ...] = (*LOADERS, MANIFOLD_VIT, MANIFOLD_SENTENCE)


def resolve(path_or_id: str | os.PathLike[str], revision: str | None = None) -> str:
    """A local checkpoint directory: the package's directory of an embedded model name,
    ``path_or_id`` itself when it is a directory (never touching the network), else a hub
    snapshot downloaded by ``huggingface_hub`` (needs a reachable hub). Embedded names win
    over a local directory of the same name (write ``./mnist-vit`` for that one)."""
    if is_embedded(path_or_id):
        return str(embedded_path(os.fspath(path_or_id)))
    path = os.fspath(path_or_id)
    if os.path.isdir(path):
        return path
    if os.path.exists(path) or path.startswith((".", "/", "~")) or path.count("/") > 1:
        raise FileNotFoundError(f"{path!r} is not a checkpoint directory; {unknown_name_message(path)}")
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(
            path,
            revision=revision,
            allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "pytorch_model.bin"],
        )
    except Exception as err:  # network errors, unknown repos, missing huggingface_hub
        raise FileNotFoundError(
            f"{path!r} is neither an embedded model, nor a local directory, nor a model that could be "
            f"fetched from the hub ({err}); {unknown_name_message(path)}"
        ) from err


def load(
    path_or_id: str | os.PathLike[str],
    task: Task = "classification",
    *,
    dtype: Any = jnp.float32,
    init_missing_head: bool = False,
    num_labels: int | None = None,
    key: jax.Array | None = None,
    max_length: int | None = None,
    image_mean: Sequence[float] | None = None,
    image_std: Sequence[float] | None = None,
    revision: str | None = None,
) -> Model:
    """Load a checkpoint as an explorable model (:class:`Bert`, :class:`ViT` or :class:`SentenceClassifier`).

    Args:
        path_or_id: an embedded model name ("mnist-vit", "minilm-topics"), a local
            directory (config.json + weights [+ tokenizer]) or a hub id.
        task: "classification", "mlm" (BERT) or "encoder".
        dtype: parameter dtype (float64 needs ``jax_enable_x64``).
        init_missing_head: initialise a task head the checkpoint lacks (e.g. a classifier
            on an encoder-only checkpoint) at random, with a warning naming the weights;
            needs ``key`` (and ``num_labels``, else the config's). Otherwise it raises.
        num_labels: number of classes of the classification head (default: the config's).
        key: ``jax.random`` key for ``init_missing_head``.
        max_length: BERT, sentence classifier: pad every batch to this length (default: the longest text).
        image_mean, image_std: HF ViT: the normalisation applied to [0, 1] pixels
            (default: the checkpoint's preprocessor_config.json, else 0.5 / 0.5).
        revision: hub revision (hub ids only).

    Raises:
        UnsupportedModelError: unknown model_type or task (the message lists the supported ones).
        UnexpectedWeightsError, MissingWeightsError, MissingHeadError, ShapeMismatchError:
            the weights do not fit the config (the message names them).
    """
    directory = resolve(path_or_id, revision)
    config_path = os.path.join(directory, "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"no config.json in {directory}")
    with open(config_path) as f:
        model_type = json.load(f).get("model_type")
    common = dict(dtype=dtype, init_missing_head=init_missing_head, num_labels=num_labels, key=key)
    if model_type == MANIFOLD_VIT:
        return load_manifold_vit(directory, task, **common)
    if model_type == MANIFOLD_SENTENCE:
        if task != "classification":
            raise UnsupportedModelError(
                f"unknown task {task!r} for a sentence classifier; supported: classification"
            )
        return load_sentence_classifier(directory, dtype=dtype, max_length=max_length)
    loader = LOADERS.get(model_type)
    if loader is None:
        raise UnsupportedModelError(
            f"unsupported model_type {model_type!r} in {config_path}; supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    from transformers import AutoConfig

    hf_config = AutoConfig.from_pretrained(directory)
    opts = dict(common, max_length=max_length, image_mean=image_mean, image_std=image_std)
    return loader(directory, hf_config, task, opts)
