"""BERT split at its input embeddings: encoder classifier, masked-LM and bare encoder.

``embed`` runs the tokenizer and the embedding module (word + token type + position,
then the embedding LayerNorm; no dropout); ``head`` runs the post-LN encoder and the
task head on ONE item. Weights come from HF checkpoints (``BertModel``,
``BertForSequenceClassification``, ``BertForMaskedLM``; names with or without the
``bert.`` prefix).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from manifold_jax._xla import jit

from .base import Context, Task
from .bert_modules import BERT_NAMES, MLM_TOP_K, TASKS, BertConfig, BertModule
from .bert_vocab import chunk_size, nearest_tokens, vocab_box
from .errors import UnsupportedModelError
from .port import TextPort
from .port_spec import Checkpoint, PortSpec
from .registry import HEAD_OPTIONS
from .text import load_tokenizer

__all__ = [
    "BERT", "BERT_NAMES", "MLM_TOP_K", "TASKS", "TEXT_OPTIONS", "Bert", "BertConfig", "BertModule", "bert_inputs",
    "bert_port", "check_tied_decoder", "load_bert",
]


@dataclass(frozen=True, eq=False)
class Bert(TextPort):
    """A BERT port split at the input embeddings (a pytree: its leaves are ``params``).

    ``task``: "classification" (head = logits (num_labels,)), "mlm" (head = the logits
    at the [MASK] position restricted to the top-5 tokens frozen at x0) or "encoder"
    (head = last hidden state (n, d), for parity only). ``max_length``: pad every
    batch to this length instead of the longest text.
    """

    params: dict[str, Any]
    config: BertConfig = field(metadata={"static": True})
    task: Task = field(default="classification", metadata={"static": True})
    tokenizer: Any = field(default=None, metadata={"static": True})
    max_length: int | None = field(default=None, metadata={"static": True})
    top_k: int = field(default=MLM_TOP_K, metadata={"static": True})

    modality: ClassVar[str] = "text"

    # ------------------------------------------------------------------ plumbing
    @property
    def module(self) -> BertModule:
        return BertModule(self.config, self.task)

    @property
    def positions(self) -> int:
        return self.config.max_length

    @property
    def labels(self) -> tuple[str, ...]:
        """Class names (classification). For MLM the k outputs are per-item tokens, frozen
        by ``embed``: this gives generic names ``top1..top5``; see :meth:`topk_tokens`."""
        if self.task == "classification":
            return self.config.id2label
        if self.task == "mlm":
            return tuple(f"top{i + 1}" for i in range(self.top_k))
        return ()

    # ------------------------------------------------------------------ embed
    def tokenize(self, texts: str | list[str], max_length: int | None = None) -> dict[str, np.ndarray]:
        """Texts to padded numpy ids: input_ids, token_type_ids, attention_mask, special_tokens_mask (B, n).

        Pads to the longest text, or to ``max_length`` (argument, else the model's)."""
        self._need_tokenizer()
        texts = [texts] if isinstance(texts, str) else list(texts)
        length = max_length if max_length is not None else self.max_length
        enc = self.tokenizer(
            texts,
            padding="max_length" if length is not None else "longest",
            truncation=True,
            max_length=length if length is not None else self.config.max_length,
            return_special_tokens_mask=True,
            return_token_type_ids=True,
            return_attention_mask=True,
            return_tensors="np",
        )
        return {k: np.asarray(enc[k]) for k in ("input_ids", "token_type_ids", "attention_mask", "special_tokens_mask")}

    def embed(self, inputs: str | list[str], max_length: int | None = None) -> tuple[jax.Array, Context]:
        """Texts to x0 (B, n, d) and ctx (batch first).

        ctx: ``input_ids``, ``token_type_ids``, ``attention_mask`` (B, n) int32,
        ``token_mask`` (B, n) bool = real tokens that are not [CLS]/[SEP]/[PAD] (nor
        [MASK]); for MLM also ``mask_position`` (B,) and ``topk`` (B, 5), the ids of the
        5 largest logits at the mask computed at x0 and then frozen. Each MLM text must
        hold exactly one mask token.
        """
        enc = self.tokenize(inputs, max_length)
        special = enc["special_tokens_mask"].astype(bool)
        return self.embed_ids(enc["input_ids"], enc["token_type_ids"], enc["attention_mask"], ~special)

    def embed_ids(
        self,
        input_ids: Any,
        token_type_ids: Any = None,
        attention_mask: Any = None,
        token_mask: Any = None,
    ) -> tuple[jax.Array, Context]:
        """Token ids (B, n) to x0 and ctx, as :meth:`embed` (no tokenizer needed).

        Defaults: token types 0, attention mask = ids != pad, token_mask = attention
        mask without the first and last real token ([CLS], [SEP])."""
        ids = np.asarray(input_ids, dtype=np.int32)
        if ids.ndim != 2:
            raise ValueError(f"input_ids must be (B, n), got shape {ids.shape}")
        types = np.zeros_like(ids) if token_type_ids is None else np.asarray(token_type_ids, np.int32)
        att = (ids != self.config.pad_token_id) if attention_mask is None else np.asarray(attention_mask)
        att = att.astype(np.int32)
        if token_mask is None:
            token_mask = att.astype(bool)
            lengths = att.sum(1)
            token_mask[:, 0] = False
            token_mask[np.arange(len(ids)), np.maximum(lengths - 1, 0)] = False
        token_mask = np.asarray(token_mask, bool) & att.astype(bool)
        if ids.shape[1] > self.config.max_length:
            raise ValueError(
                f"sequence length {ids.shape[1]} exceeds the {self.config.max_length} positions of the model "
                f"(max_position_embeddings {self.config.max_position_embeddings})"
            )
        x0 = _embed_jit(self, jnp.asarray(ids), jnp.asarray(types))
        ctx: Context = {
            "input_ids": jnp.asarray(ids),
            "token_type_ids": jnp.asarray(types),
            "attention_mask": jnp.asarray(att),
        }
        if self.task == "mlm":
            position = self._mask_positions(ids)
            token_mask[np.arange(len(ids)), position] = False
            ctx["mask_position"] = jnp.asarray(position, jnp.int32)
            ctx["topk"] = _topk_jit(self, x0, ctx["attention_mask"], ctx["mask_position"])
        ctx["token_mask"] = jnp.asarray(token_mask)
        return x0, ctx

    def _mask_positions(self, ids: np.ndarray) -> np.ndarray:
        self._need_tokenizer()
        mask_id = self.tokenizer.mask_token_id
        if mask_id is None:
            raise ValueError("the tokenizer has no mask token; MLM needs one")
        counts = (ids == mask_id).sum(1)
        bad = [(i, int(c)) for i, c in enumerate(counts) if c != 1]
        if bad:
            token = self.tokenizer.mask_token
            detail = ", ".join(f"text {i} has {c}" for i, c in bad)
            raise ValueError(f"each MLM text needs exactly one {token} token: {detail}")
        return np.argmax(ids == mask_id, axis=1).astype(np.int32)

    # ------------------------------------------------------------------ head
    def head(self, x: jax.Array, ctx: Context) -> jax.Array:
        """ONE item's embeddings x (n, d) -> output (k,): a pure function of (params, x, ctx).

        classification: logits (num_labels,); mlm: logits at ``ctx["mask_position"]``
        restricted to ``ctx["topk"]`` (5,); encoder: last hidden state (n, d)."""
        if self.task == "mlm":
            return self._apply(x, ctx["attention_mask"], ctx["mask_position"], ctx["topk"], method="head")
        return self._apply(x, ctx["attention_mask"], method="head")

    def forward(self, x: jax.Array, ctx: Context) -> jax.Array:
        """The full model on a batch of embeddings (B, n, d): logits (B, L), MLM logits over
        the whole vocabulary (B, n, V), or hidden states (B, n, d)."""
        return self._apply(x, ctx["attention_mask"], method="forward")

    # ------------------------------------------------------------------ decode
    def decode(
        self, x: jax.Array, ctx: Context, method: str = "auto", mlm: Bert | None = None, vocabulary: str = "words"
    ) -> np.ndarray:
        """Explored embeddings (B, n, d) -> token ids (B, n) (Algorithm 3).

        ``method="mlm"``: arg-max token per position of a masked-LM model of the same
        shape (this model when its task is "mlm", else ``mlm``); ``"nearest"``: for each
        position i the vocabulary entry v whose embedding-module output
        LayerNorm(W_v + T_type_i + P_i) is nearest in L2 to x_i, computed exactly in
        vocabulary chunks; ``"auto"``: mlm when one is available, else nearest. Only the
        explored positions (``token_mask``) are replaced; special tokens and padding
        keep their original ids.
        """
        x = jnp.asarray(x)
        if method == "auto":
            method = "mlm" if (self.task == "mlm" or mlm is not None) else "nearest"
        if method == "mlm":
            decoder = self if mlm is None else mlm
            if decoder.task != "mlm":
                raise ValueError("decode(method='mlm') needs a model with task='mlm' (pass mlm=...)")
            if decoder.config.hidden_size != self.config.hidden_size:
                raise ValueError(
                    f"the MLM decoder has hidden size {decoder.config.hidden_size}, "
                    f"this model {self.config.hidden_size}"
                )
            found = _mlm_argmax_jit(decoder, x, ctx["attention_mask"])
        elif method == "nearest":
            n = x.shape[-2]
            per_entry = max(self.config.type_vocab_size, 1) * n * (x.shape[-1] + x.shape[0])
            chunk = chunk_size(self.config.vocab_size, per_entry)
            found = nearest_tokens(self, x, ctx["token_type_ids"], self._allowed(vocabulary), chunk)
        else:
            raise ValueError(f"unknown decode method {method!r}; use 'auto', 'mlm' or 'nearest'")
        return np.where(np.asarray(ctx["token_mask"]), np.asarray(found), np.asarray(ctx["input_ids"]))

    def _allowed(self, vocabulary: str) -> jax.Array:
        """Boolean (V,) mask of the vocabulary entries the nearest-token decoder may return."""
        allowed = np.ones(self.config.vocab_size, bool)
        if vocabulary == "all":
            return jnp.asarray(allowed)
        if vocabulary != "words":
            raise ValueError(f"vocabulary={vocabulary!r}: use 'words' or 'all'")
        if self.tokenizer is not None:
            special = [i for i in self.tokenizer.all_special_ids if 0 <= i < len(allowed)]
            allowed[special] = False
            vocab = self.tokenizer.get_vocab()
            unused = [i for t, i in vocab.items() if t.startswith("[unused") and 0 <= i < len(allowed)]
            allowed[unused] = False
        allowed[self.config.pad_token_id] = False
        return jnp.asarray(allowed)

    def vocabulary_mask(self, vocabulary: str = "words") -> jax.Array:
        """Boolean (V,) mask of the real word pieces: "words" drops the special tokens, the
        ``[unused*]`` entries and padding (what the nearest-token decoder may return); "all" keeps all."""
        return self._allowed(vocabulary)

    def token_embeddings(self, vocab_ids: jax.Array, n: int) -> jax.Array:
        """Embedding-module outputs (T, C, n, d) of the tokens ``vocab_ids`` (C,) at every position
        0..n-1 under every token type: entry [t, c, i] = LayerNorm(W[v_c] + T[t] + P[i]), exactly what
        ``embed`` gives token v_c at position i with type t. Pure (usable under jit)."""
        return self._apply(vocab_ids, n, method="candidates")

    # ------------------------------------------------------------------ bounds
    def position_box(self, n: int) -> tuple[jax.Array, jax.Array]:
        """The theoretical box of :meth:`bounds` ("theoretical", each (n, d)): LayerNorm is not linear,
        so the paper's linear-embedding box does not apply; instead the exact box over the
        vocabulary: per position i, the element-wise min/max of LayerNorm(W_v + T_t + P_i) over every
        vocabulary entry v and every token type t (computed in chunks). Every embedding any token
        sequence can have lies in it. n = the padded length of ``embed(data)`` when data are texts,
        ``data`` itself when an int, else the model's ``max_length`` or ``max_position_embeddings``
        (slice ``[:n]``: rows do not depend on n). "measured": element-wise min/max over the
        embeddings of ``data`` (texts), per position, padding positions included."""
        d = self.config.hidden_size
        chunk = chunk_size(self.config.vocab_size, max(self.config.type_vocab_size, 1) * n * d)
        return vocab_box(self, n, chunk)


# ------------------------------------------------------------------ jitted internals


@jit
def _embed_jit(model: Bert, ids: jax.Array, types: jax.Array) -> jax.Array:
    return model._apply(ids, types, method="embed")


@jit
def _topk_jit(model: Bert, x0: jax.Array, mask: jax.Array, position: jax.Array) -> jax.Array:
    def one(x: jax.Array, m: jax.Array, p: jax.Array) -> jax.Array:
        hidden = model._apply(x, m, method="encode")
        return jax.lax.top_k(model._apply(hidden[p], method="mlm_logits"), model.top_k)[1]

    return jax.vmap(one)(x0, mask, position)


@jit
def _mlm_argmax_jit(model: Bert, x: jax.Array, mask: jax.Array) -> jax.Array:
    return jax.lax.map(lambda a: jnp.argmax(model.forward(a[0], {"attention_mask": a[1]}), -1), (x, mask))


jax.tree_util.register_dataclass(Bert)


# ------------------------------------------------------------------------- loading


TEXT_OPTIONS = frozenset(HEAD_OPTIONS | {"max_length", "tokenizer"})
"""The loader options of the BERT-family specs."""


def bert_inputs(_config: BertConfig) -> tuple[jax.Array, ...]:
    """Dummy ids and token types (1, 2) that run every parameter of a :class:`BertModule`."""
    return jnp.zeros((1, 2), jnp.int32), jnp.zeros((1, 2), jnp.int32)


def bert_port(params: dict[str, Any], config: BertConfig, task: Task, checkpoint: Checkpoint) -> Bert:
    """The :class:`Bert` of loaded params, with the tokenizer stored beside the weights unless the
    ``tokenizer`` option gives one (or None)."""
    tokenizer = checkpoint.options.get("tokenizer", "auto")
    if tokenizer == "auto":
        tokenizer = load_tokenizer(checkpoint.directory)
    return Bert(params, config, task, tokenizer, checkpoint.option("max_length"))


def check_tied_decoder(weights: Mapping[str, np.ndarray], decoder_name: str, word_names: tuple[str, ...]) -> None:
    """Our MLM decoder is tied to the word embeddings: refuse a checkpoint whose decoder differs."""
    decoder = weights.get(decoder_name)
    if decoder is None:
        return
    word = next((weights[n] for n in word_names if n in weights), None)
    if word is not None and (decoder.shape != word.shape or not np.array_equal(decoder, word)):
        raise UnsupportedModelError(
            f"{decoder_name} differs from {word_names[0]}: untied MLM decoders are not supported"
        )


def tied_decoder(decoder_name: str, prefix: str) -> Callable[[Mapping[str, np.ndarray]], None]:
    """The ``check_weights`` of a BERT-family spec: the decoder ``decoder_name`` must equal the
    word table (``<prefix>embeddings.word_embeddings.weight``, with or without the prefix)."""
    word = "embeddings.word_embeddings.weight"
    return functools.partial(check_tied_decoder, decoder_name=decoder_name, word_names=(prefix + word, word))


BERT: PortSpec[BertConfig, Bert] = PortSpec(
    name="BERT",
    tasks=TASKS,
    config=lambda c: BertConfig.from_hf(c.hf, c.option("num_labels")),
    names=BERT_NAMES,
    module=BertModule,
    init_inputs=bert_inputs,
    build=bert_port,
    options=TEXT_OPTIONS,
    check_weights=tied_decoder("cls.predictions.decoder.weight", "bert."),
)
"""HF BERT checkpoints (``BertModel``, ``BertForSequenceClassification``, ``BertForMaskedLM``)."""


def load_bert(directory: str, hf_config: Any, task: Task = "classification", **options: Any) -> Bert:
    """A :class:`Bert` from an HF BERT checkpoint directory (options: :func:`manifold_jax.models.load`'s,
    and ``tokenizer``)."""
    return BERT.load(directory, hf_config, task, **options)
