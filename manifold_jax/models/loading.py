"""``load(path_or_id, task=...)``: any supported checkpoint directory to a model port.

``path_or_id`` may also be the name of an embedded model (``"mnist-vit"``,
``"minilm-topics"``: :mod:`manifold_jax.models.embedded`), which loads from the package
without touching the network. The architecture is read from ``config.json``'s
``model_type`` and dispatched through the registry (:mod:`manifold_jax.models.registry`):
BERT, RoBERTa, DistilBERT, GPT-2, HF ViT and DeiT through
``transformers.AutoConfig.from_pretrained(directory)``, our own ViT ("manifold_vit") and
sentence classifier ("manifold_sentence_classifier") from their own configs. Weights come
from ``model.safetensors`` (or ``pytorch_model.bin`` when torch is importable) and are
mapped onto the flax params by each port's declarative name table.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import socket
import urllib.parse
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from .bert import BERT, Bert
from .distilbert import DISTILBERT
from .distilbert import MODEL_TYPE as DISTILBERT_TYPE
from .embedded import EMBEDDED, embedded_path, is_embedded, unknown_name_message
from .errors import UnsupportedModelError
from .gpt2 import GPT2, GPT2_SPEC
from .gpt2 import MODEL_TYPE as GPT2_TYPE
from .hf_vit import DEIT, DEIT_MODEL_TYPE, HF_VIT
from .port_spec import PortSpec
from .registry import FAMILIES, OPTIONS, Family, family, register
from .roberta import MODEL_TYPE as ROBERTA_TYPE
from .roberta import ROBERTA
from .sentence import MODEL_TYPE as MANIFOLD_SENTENCE
from .sentence import SentenceClassifier, load_sentence_classifier
from .vit import MANIFOLD_VIT, ViT
from .vit_modules import MODEL_TYPE as MANIFOLD_VIT_TYPE

Model = Bert | ViT | SentenceClassifier | GPT2


def _hf(directory: str) -> Any:
    """The transformers config of ``directory``; a field of the wrong type is named in one line."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(directory)
    except Exception as exc:
        if type(exc).__name__.startswith("StrictDataclass"):  # huggingface_hub's field validation
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            reason = lines[-1] if lines else type(exc).__name__
            raise UnsupportedModelError(f"{os.path.join(directory, 'config.json')}: {reason}") from None
        raise


def _sentence(directory: str, _task: str, opts: dict[str, Any]) -> Model:
    def load_encoder(path: str) -> Bert:
        model = load(path, task="encoder", dtype=opts["dtype"], max_length=opts.get("max_length"))
        if not isinstance(model, Bert):
            raise TypeError(f"the encoder of a sentence classifier must be a BERT-family model, {path} is not")
        return model

    return load_sentence_classifier(
        directory, dtype=opts["dtype"], max_length=opts.get("max_length"), load_encoder=load_encoder
    )


def _family(model_type: str, spec: PortSpec[Any, Any], modality: str, name: str | None = None,
            hf_config: bool = True, study_task: str | None = None) -> Family:
    """The registry entry of a port spec: its tasks, the ``load`` options it takes, its loader."""

    def loader(directory: str, task: Any, options: dict[str, Any]) -> Any:
        return spec.load(directory, _hf(directory) if hf_config else None, task, **options)

    return Family(model_type, name or spec.name, modality, spec.tasks, spec.options & frozenset(OPTIONS), loader,
                  hf_config=hf_config, study_task=study_task)


for _family_entry in (
    _family("bert", BERT, "text"),
    _family(ROBERTA_TYPE, ROBERTA, "text"),
    _family(DISTILBERT_TYPE, DISTILBERT, "text"),
    _family(GPT2_TYPE, GPT2_SPEC, "text", study_task="lm-top5"),
    _family("vit", HF_VIT, "image"),
    _family(DEIT_MODEL_TYPE, DEIT, "image"),
    _family(MANIFOLD_VIT_TYPE, MANIFOLD_VIT, "image", name="manifold-jax ViT", hf_config=False),
    Family(MANIFOLD_SENTENCE, "sentence classifier", "text", ("classification",), frozenset({"max_length"}),
           _sentence, hf_config=False),
):
    register(_family_entry)

SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(FAMILIES)
"""Every model_type ``load`` dispatches on."""


HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?$")
"""What a hub id looks like: ``name`` or ``owner/name``, letters, digits, '.', '_' and '-'."""


def resolve(path_or_id: str | os.PathLike[str], revision: str | None = None) -> str:
    """A local checkpoint directory: the package's directory of an embedded model name,
    ``path_or_id`` itself when it is a directory (never touching the network), else a hub
    snapshot downloaded by ``huggingface_hub``. Embedded names win over a local directory of
    the same name (write ``./mnist-vit`` for that one). A name that is no hub id, or a near
    miss of an embedded name (``mnist_vit``), is refused without asking the hub; when the hub
    cannot be reached (or ``HF_HUB_OFFLINE`` is set) only the local hub cache is looked at."""
    if is_embedded(path_or_id):
        return str(embedded_path(os.fspath(path_or_id)))
    path = os.fspath(path_or_id)
    if os.path.isdir(path):
        return path
    if os.path.exists(path) or path.startswith((".", "/", "~")) or not HUB_ID.match(path):
        raise FileNotFoundError(f"{path!r} is not a checkpoint directory; {unknown_name_message(path)}")
    if "/" not in path and difflib.get_close_matches(path.lower().replace("_", "-"), list(EMBEDDED), n=1,
                                                     cutoff=0.8):
        raise FileNotFoundError(f"{path!r} is not a model name; {unknown_name_message(path)}")
    offline = not _hub_reachable()
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(
            path,
            revision=revision,
            allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "pytorch_model.bin"],
            local_files_only=offline,
        )
    except Exception as err:  # network errors, unknown repos, missing huggingface_hub
        why = "the hub cannot be reached and it is not in the local hub cache" if offline else (
            f"the hub refused it: {type(err).__name__}: {' '.join(str(err).split())[:160]}")
        raise FileNotFoundError(
            f"{path!r} is neither an embedded model nor a local directory, and {why}; {unknown_name_message(path)}"
        ) from err


def _hub_reachable(timeout: float = 2.0) -> bool:
    """Whether the Hugging Face hub answers a TCP connection within ``timeout`` seconds (False when
    ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` is set)."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0") or os.environ.get("TRANSFORMERS_OFFLINE", "0") not in (
            "", "0"):
        return False
    host = urllib.parse.urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def read_model_type(directory: str) -> str:
    """config.json's ``model_type`` in ``directory`` (errors name the file)."""
    config_path = os.path.join(directory, "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"no config.json in {directory}")
    try:
        with open(config_path) as f:
            config = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{config_path}: not valid JSON ({err.msg}, line {err.lineno} column {err.colno})") from None
    except (OSError, ValueError) as err:
        raise ValueError(f"{config_path}: not readable ({err})") from None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type is None:
        raise UnsupportedModelError(
            f"{config_path} names no model_type; supported: {', '.join(FAMILIES)}"
        )
    return model_type


def family_of(path_or_id: str | os.PathLike[str], revision: str | None = None) -> Family:
    """The registered :class:`~manifold_jax.models.registry.Family` of a checkpoint (its config.json only)."""
    directory = resolve(path_or_id, revision)
    return family(read_model_type(directory), os.path.join(directory, "config.json"))


def load(
    path_or_id: str | os.PathLike[str],
    task: str | None = None,
    *,
    dtype: Any = jnp.float32,
    init_missing_head: bool = False,
    num_labels: int | None = None,
    key: jax.Array | None = None,
    max_length: int | None = None,
    image_mean: Sequence[float] | None = None,
    image_std: Sequence[float] | None = None,
    top_k: int | None = None,
    revision: str | None = None,
) -> Model:
    """Load a checkpoint as an explorable model (:class:`Bert`, :class:`GPT2`, :class:`ViT` or
    :class:`SentenceClassifier`).

    Args:
        path_or_id: an embedded model name ("mnist-vit", "minilm-topics"), a local
            directory (config.json + weights [+ tokenizer]) or a hub id.
        task: the family's default when None ("classification"; "lm" for GPT-2), or
            "classification", "mlm" (BERT family), "encoder", "lm" (GPT-2: next-token logits),
            "lm-top5" (GPT-2 with a frozen top-5 head, what studies use).
        dtype: parameter dtype (float64 needs ``jax_enable_x64``).
        init_missing_head: initialise a task head the checkpoint lacks (e.g. a classifier
            on an encoder-only checkpoint) at random, with a warning naming the weights;
            needs ``key`` (and ``num_labels``, else the config's). Otherwise it raises.
        num_labels: number of classes of the classification head (default: the config's).
        key: ``jax.random`` key for ``init_missing_head``.
        max_length: text models: pad every batch to this length (default: the longest text).
        image_mean, image_std: HF ViT / DeiT: the normalisation applied to [0, 1] pixels
            (default: the checkpoint's preprocessor_config.json, else 0.5 / 0.5).
        top_k: GPT-2: keep the logits of the k most likely next tokens at x0, frozen
            (default: the full vocabulary).
        revision: hub revision (hub ids only).

    Raises:
        UnsupportedModelError: unknown model_type or task (the message lists the supported
            ones), or an option the family does not take (the message names both).
        UnexpectedWeightsError, MissingWeightsError, MissingHeadError, ShapeMismatchError:
            the weights do not fit the config (the message names them).
    """
    directory = resolve(path_or_id, revision)
    fam = family(read_model_type(directory), os.path.join(directory, "config.json"))
    given = {
        name: value
        for name, value in (
            ("init_missing_head", init_missing_head or None), ("num_labels", num_labels), ("key", key),
            ("max_length", max_length), ("image_mean", image_mean), ("image_std", image_std), ("top_k", top_k),
        )
        if value is not None
    }
    task = fam.default_task if task is None else task
    fam.check(task, given)
    options = {name: given.get(name, False if name == "init_missing_head" else None) for name in fam.options}
    return fam.loader(directory, task, {"dtype": dtype, **options})
