"""BERT split at its input embeddings: encoder classifier, masked-LM and bare encoder.

``embed`` runs the tokenizer and the embedding module (word + token type + position,
then the embedding LayerNorm; no dropout); ``head`` runs the post-LN encoder and the
task head on ONE item. Weights come from HF checkpoints (``BertModel``,
``BertForSequenceClassification``, ``BertForMaskedLM``; names with or without the
``bert.`` prefix).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, cast

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from manifold_jax._xla import jit

from .base import BoundsKind, Context, Task
from .common import measured_box
from .errors import UnsupportedModelError
from .layers import Encoder, EncoderConfig, LayerNorm, dense, get_activation
from .weights import (
    NameTable,
    Rule,
    dense_rules,
    load_params,
    norm_rules,
    read_checkpoint,
)

TASKS: tuple[Task, ...] = ("classification", "mlm", "encoder")
MLM_TOP_K = 5
"""Number of masked-LM logits the head keeps (the top-k at x0, frozen; DESIGN section 1)."""

_VOCAB_CHUNK_ELEMENTS = 1 << 23
"""Memory budget (array elements) of one vocabulary chunk in the exact vocabulary scans."""


# ------------------------------------------------------------------------------ config


@dataclass(frozen=True)
class BertConfig:
    """The hashable shape of a BERT port (built from a transformers ``BertConfig``)."""

    vocab_size: int
    max_position_embeddings: int
    type_vocab_size: int
    encoder: EncoderConfig
    num_labels: int = 2
    id2label: tuple[str, ...] = ()
    pad_token_id: int = 0

    @property
    def hidden_size(self) -> int:
        return self.encoder.hidden_size

    @classmethod
    def from_hf(cls, hf: Any, num_labels: int | None = None) -> BertConfig:
        """From a ``transformers.BertConfig``; ``num_labels`` overrides the config's."""
        if getattr(hf, "position_embedding_type", "absolute") != "absolute":
            raise UnsupportedModelError(
                f"position_embedding_type {hf.position_embedding_type!r} is not ported "
                "(supported: 'absolute')"
            )
        if getattr(hf, "is_decoder", False):
            raise UnsupportedModelError("decoder (causal) BERT configs are not ported")
        encoder = EncoderConfig(
            hidden_size=hf.hidden_size,
            num_layers=hf.num_hidden_layers,
            num_heads=hf.num_attention_heads,
            intermediate_size=hf.intermediate_size,
            activation=hf.hidden_act,
            layer_norm_eps=hf.layer_norm_eps,
            pre_norm=False,
            init_std=hf.initializer_range,
        )
        k = hf.num_labels if num_labels is None else num_labels
        names = dict(getattr(hf, "id2label", None) or {})
        labels = tuple(str(names.get(i, names.get(str(i), f"LABEL_{i}"))) for i in range(k))
        return cls(
            vocab_size=hf.vocab_size,
            max_position_embeddings=hf.max_position_embeddings,
            type_vocab_size=hf.type_vocab_size,
            encoder=encoder,
            num_labels=k,
            id2label=labels,
            pad_token_id=hf.pad_token_id if hf.pad_token_id is not None else 0,
        )


# ------------------------------------------------------------------------- flax modules


class BertEmbeddings(nn.Module):
    """word + token type + position embeddings, then LayerNorm (dropout off)."""

    config: BertConfig

    def setup(self) -> None:
        c = self.config
        init = nn.initializers.normal(c.encoder.init_std)
        d = c.hidden_size
        self.word = nn.Embed(c.vocab_size, d, embedding_init=init)
        self.position = nn.Embed(c.max_position_embeddings, d, embedding_init=init)
        self.token_type = nn.Embed(c.type_vocab_size, d, embedding_init=init)
        self.norm = LayerNorm(c.encoder.layer_norm_eps)

    def __call__(self, input_ids: jax.Array, token_type_ids: jax.Array) -> jax.Array:
        """ids, types (..., n) -> x (..., n, d); positions are 0..n-1, as in HF."""
        n = input_ids.shape[-1]
        summed = self.word(input_ids) + self.token_type(token_type_ids)
        return self.norm(summed + self.position.embedding[:n])

    def candidates(self, vocab_ids: jax.Array, n: int) -> jax.Array:
        """Every embedding-module output a token could have: (T, C, n, d).

        Entry [t, c, i] = LayerNorm(W[vocab_ids[c]] + T[t] + P[i]), same order of sums
        as ``__call__``, so an unmodified embedding equals one candidate.
        """
        words = self.word.embedding[vocab_ids]  # (C, d)
        types = self.token_type.embedding  # (T, d)
        summed = words[None, :, None, :] + types[:, None, None, :]
        return self.norm(summed + self.position.embedding[:n][None, None])


class MLMHead(nn.Module):
    """BERT masked-LM head: dense + activation + LayerNorm, decoder tied to the word table + bias."""

    config: BertConfig

    def setup(self) -> None:
        c = self.config
        self.transform = dense(c.hidden_size, c.encoder.init_std)
        self.norm = LayerNorm(c.encoder.layer_norm_eps)
        self.bias = self.param("bias", nn.initializers.zeros, (c.vocab_size,))

    def __call__(self, h: jax.Array, table: jax.Array, vocab_ids: jax.Array | None = None) -> jax.Array:
        """h (..., d) -> logits (..., V), or (..., k) restricted to ``vocab_ids`` (..., k)."""
        act = get_activation(self.config.encoder.activation)
        t = self.norm(act(self.transform(h)))
        if vocab_ids is None:
            return t @ table.T + self.bias
        return jnp.einsum("...d,...kd->...k", t, table[vocab_ids]) + self.bias[vocab_ids]


class BertModule(nn.Module):
    """The whole BERT of one task, with one method per stage of the split."""

    config: BertConfig
    task: Task = "classification"

    def setup(self) -> None:
        c = self.config
        self.embeddings = BertEmbeddings(c)
        self.encoder = Encoder(c.encoder)
        if self.task == "classification":
            self.pooler = dense(c.hidden_size, c.encoder.init_std)
            self.classifier = dense(c.num_labels, c.encoder.init_std)
        elif self.task == "mlm":
            self.mlm = MLMHead(c)

    def embed(self, input_ids: jax.Array, token_type_ids: jax.Array) -> jax.Array:
        return self.embeddings(input_ids, token_type_ids)

    def candidates(self, vocab_ids: jax.Array, n: int) -> jax.Array:
        return self.embeddings.candidates(vocab_ids, n)

    def encode(self, x: jax.Array, attention_mask: jax.Array, rows: jax.Array | None = None) -> jax.Array:
        return self.encoder(x, attention_mask, rows)

    def classify(self, hidden: jax.Array) -> jax.Array:
        """hidden (..., n, d) -> logits (..., num_labels): tanh pooler on [CLS], then linear."""
        return self.classifier(jnp.tanh(self.pooler(hidden[..., 0, :])))

    def mlm_logits(self, hidden: jax.Array, vocab_ids: jax.Array | None = None) -> jax.Array:
        return self.mlm(hidden, self.embeddings.word.embedding, vocab_ids)

    def forward(self, x: jax.Array, attention_mask: jax.Array) -> jax.Array:
        """The full output on embeddings: logits (..., L), MLM logits (..., n, V) or hidden (..., n, d)."""
        hidden = self.encode(x, attention_mask)
        if self.task == "classification":
            return self.classify(hidden)
        if self.task == "mlm":
            return self.mlm_logits(hidden)
        return hidden

    def head(self, x: jax.Array, attention_mask: jax.Array, mask_position: Any = None, topk: Any = None) -> jax.Array:
        """One item (n, d) to the explored output (see :meth:`Bert.head`)."""
        if self.task == "classification":  # the pooler reads [CLS] only
            return self.classify(self.encode(x, attention_mask, jnp.zeros((1,), jnp.int32)))
        if self.task == "mlm":  # only the masked word's row is read
            rows = jnp.reshape(jnp.asarray(mask_position, jnp.int32), (1,))
            return self.mlm_logits(self.encode(x, attention_mask, rows)[0], topk)
        return self.encode(x, attention_mask)

    def init_all(self, input_ids: jax.Array, token_type_ids: jax.Array) -> jax.Array:
        return self.forward(self.embed(input_ids, token_type_ids), jnp.ones_like(input_ids))


# --------------------------------------------------------------------------- HF names


_LAYER = "encoder.layer.{i}"
_FLAX_LAYER = "encoder/layers_{i}"

BERT_NAMES = NameTable(
    rules=(
        Rule("embeddings.word_embeddings.weight", "embeddings/word/embedding"),
        Rule("embeddings.position_embeddings.weight", "embeddings/position/embedding"),
        Rule("embeddings.token_type_embeddings.weight", "embeddings/token_type/embedding"),
        *norm_rules("embeddings.LayerNorm", "embeddings/norm"),
        *dense_rules(f"{_LAYER}.attention.self.query", f"{_FLAX_LAYER}/attention/query"),
        *dense_rules(f"{_LAYER}.attention.self.key", f"{_FLAX_LAYER}/attention/key"),
        *dense_rules(f"{_LAYER}.attention.self.value", f"{_FLAX_LAYER}/attention/value"),
        *dense_rules(f"{_LAYER}.attention.output.dense", f"{_FLAX_LAYER}/attention/out"),
        *norm_rules(f"{_LAYER}.attention.output.LayerNorm", f"{_FLAX_LAYER}/attention_norm"),
        *dense_rules(f"{_LAYER}.intermediate.dense", f"{_FLAX_LAYER}/mlp/fc1"),
        *dense_rules(f"{_LAYER}.output.dense", f"{_FLAX_LAYER}/mlp/fc2"),
        *norm_rules(f"{_LAYER}.output.LayerNorm", f"{_FLAX_LAYER}/mlp_norm"),
        *dense_rules("pooler.dense", "pooler"),
        *dense_rules("classifier", "classifier"),
        *dense_rules("cls.predictions.transform.dense", "mlm/transform"),
        *norm_rules("cls.predictions.transform.LayerNorm", "mlm/norm"),
        Rule(("cls.predictions.bias", "cls.predictions.decoder.bias"), "mlm/bias"),
    ),
    prefixes=("bert.",),
    # position_ids: a buffer; decoder.weight: the tied copy of the word embeddings
    # (checked for equality by load_bert); seq_relationship: the NSP head, not ported.
    ignore=(r"embeddings\.position_ids", r"cls\.predictions\.decoder\.weight", r"cls\.seq_relationship\..*"),
    heads=frozenset({"pooler", "classifier", "mlm"}),
)
"""HF BERT parameter names -> flax paths of :class:`BertModule`."""


# ------------------------------------------------------------------------- the model


def _chunk_size(vocab: int, per_entry: int, budget: int = _VOCAB_CHUNK_ELEMENTS) -> int:
    return int(max(1, min(vocab, budget // max(per_entry, 1))))


@dataclass(frozen=True, eq=False)
class Bert:
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

    def _apply(self, *args: Any, method: str) -> jax.Array:
        return cast(jax.Array, self.module.apply({"params": self.params}, *args, method=getattr(BertModule, method)))

    @property
    def labels(self) -> tuple[str, ...]:
        """Class names (classification). For MLM the k outputs are per-item tokens, frozen
        by ``embed``: this gives generic names ``top1..top5``; see :meth:`topk_tokens`."""
        if self.task == "classification":
            return self.config.id2label
        if self.task == "mlm":
            return tuple(f"top{i + 1}" for i in range(self.top_k))
        return ()

    def topk_tokens(self, ctx: Context) -> list[tuple[str, ...]]:
        """The decoded frozen top-k MLM tokens of every item of a batched ctx: B tuples of k."""
        self._need_tokenizer()
        return [tuple(self.tokenizer.convert_ids_to_tokens(row)) for row in np.asarray(ctx["topk"]).tolist()]

    def _need_tokenizer(self) -> None:
        if self.tokenizer is None:
            raise ValueError("this model was loaded without a tokenizer; use embed_ids instead of embed")

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
            max_length=length if length is not None else self.config.max_position_embeddings,
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
        if ids.shape[1] > self.config.max_position_embeddings:
            raise ValueError(
                f"sequence length {ids.shape[1]} exceeds max_position_embeddings "
                f"{self.config.max_position_embeddings}"
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

    def __call__(self, inputs: str | list[str]) -> jax.Array:
        """``forward(*embed(inputs))``."""
        return self.forward(*self.embed(inputs))

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
            chunk = _chunk_size(self.config.vocab_size, self.config.type_vocab_size * n * (x.shape[-1] + x.shape[0]))
            found = _nearest_jit(self, x, ctx["token_type_ids"], self._allowed(vocabulary), chunk)
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

    def detokenize(self, ids: Any, skip_special_tokens: bool = True) -> list[str]:
        """Token ids (B, n) back to B strings through the tokenizer."""
        self._need_tokenizer()
        return self.tokenizer.batch_decode(np.asarray(ids).tolist(), skip_special_tokens=skip_special_tokens)

    # ------------------------------------------------------------------ bounds
    def bounds(self, kind: BoundsKind = "theoretical", data: Any = None) -> tuple[jax.Array, jax.Array]:
        """Feasible box (lo, hi), each (n, d).

        "theoretical": LayerNorm is not linear, so the paper's linear-embedding box does
        not apply; instead the exact box over the vocabulary: per position i, the
        element-wise min/max of LayerNorm(W_v + T_t + P_i) over every vocabulary entry v
        and every token type t (computed in chunks). Every embedding any token sequence
        can have lies in it. n = the padded length of ``embed(data)`` when data are
        texts, ``data`` itself when an int, else the model's ``max_length`` or
        ``max_position_embeddings`` (slice ``[:n]``: rows do not depend on n).
        "measured": element-wise min/max over the embeddings of ``data`` (texts), per
        position, padding positions included (n = their padded length).
        """
        if kind == "measured":
            if data is None:
                raise ValueError("bounds('measured') needs data: the texts to measure the box on")
            return measured_box(self.embed(data)[0])
        if kind != "theoretical":
            raise ValueError(f"unknown bounds kind {kind!r}; use 'theoretical' or 'measured'")
        if isinstance(data, int):
            n = data
        elif data is not None:
            n = int(self.embed(data)[0].shape[1])
        else:
            n = self.max_length or self.config.max_position_embeddings
        if not 0 < n <= self.config.max_position_embeddings:
            raise ValueError(f"bounds for n = {n} positions; this model has 1..{self.config.max_position_embeddings}")
        d = self.config.hidden_size
        chunk = _chunk_size(self.config.vocab_size, self.config.type_vocab_size * n * d)
        return _vocab_box_jit(self, n, chunk)


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


def _vocab_chunks(vocab: int, chunk: int) -> jax.Array:
    """Start index of every vocabulary chunk; ids past the end are clipped to V-1 by the
    callers, which only duplicates a real entry (harmless for min, max and argmin)."""
    return jnp.arange(math.ceil(vocab / chunk), dtype=jnp.int32) * chunk


def _chunk_ids(start: jax.Array, chunk: int, vocab: int) -> jax.Array:
    return jnp.minimum(start + jnp.arange(chunk, dtype=jnp.int32), vocab - 1)


@jit(static_argnums=(1, 2))
def _vocab_box_jit(model: Bert, n: int, chunk: int) -> tuple[jax.Array, jax.Array]:
    vocab = model.config.vocab_size

    def step(carry: tuple[jax.Array, jax.Array], start: jax.Array) -> tuple[tuple[jax.Array, jax.Array], None]:
        cand = model._apply(_chunk_ids(start, chunk, vocab), n, method="candidates")  # (T, C, n, d)
        lo, hi = carry
        return (jnp.minimum(lo, cand.min((0, 1))), jnp.maximum(hi, cand.max((0, 1)))), None

    d = model.config.hidden_size
    dtype = model.params["embeddings"]["word"]["embedding"].dtype
    init = (jnp.full((n, d), jnp.inf, dtype), jnp.full((n, d), -jnp.inf, dtype))
    return jax.lax.scan(step, init, _vocab_chunks(vocab, chunk))[0]


@jit(static_argnums=(4,))
def _nearest_jit(model: Bert, x: jax.Array, types: jax.Array, allowed: jax.Array, chunk: int) -> jax.Array:
    vocab = model.config.vocab_size
    n = x.shape[-2]

    def step(carry: tuple[jax.Array, jax.Array], start: jax.Array) -> tuple[tuple[jax.Array, jax.Array], None]:
        best, arg = carry
        ids = _chunk_ids(start, chunk, vocab)
        cand = model._apply(ids, n, method="candidates")  # (T, C, n, d)
        dots = jnp.einsum("bid,tcid->tbci", x, cand, precision=jax.lax.Precision.HIGHEST)
        # ||x - c||^2 - ||x||^2 for every type, then keep each position's own type.
        score = jnp.sum(cand * cand, -1)[:, None] - 2 * dots  # (T, B, C, n)
        score = jnp.take_along_axis(score, types[None, :, None, :], axis=0)[0]  # (B, C, n)
        score = jnp.where(allowed[ids][None, :, None], score, jnp.inf)
        low, where = score.min(1), ids[score.argmin(1)]
        better = low < best
        return (jnp.where(better, low, best), jnp.where(better, where, arg)), None

    init = (jnp.full(x.shape[:2], jnp.inf, x.dtype), jnp.zeros(x.shape[:2], jnp.int32))
    return jax.lax.scan(step, init, _vocab_chunks(vocab, chunk))[0][1]


jax.tree_util.register_dataclass(Bert)


# ------------------------------------------------------------------------- loading


def load_bert(
    directory: str,
    hf_config: Any,
    task: Task = "classification",
    *,
    dtype: Any = jnp.float32,
    init_missing_head: bool = False,
    num_labels: int | None = None,
    key: jax.Array | None = None,
    max_length: int | None = None,
    tokenizer: Any = "auto",
) -> Bert:
    """A :class:`Bert` from an HF BERT checkpoint directory (see :func:`manifold_jax.models.load`)."""
    if task not in TASKS:
        raise UnsupportedModelError(f"unknown task {task!r} for BERT; supported: {', '.join(TASKS)}")
    config = BertConfig.from_hf(hf_config, num_labels)
    module = BertModule(config, task)
    dummy = (jnp.zeros((1, 2), jnp.int32), jnp.zeros((1, 2), jnp.int32))

    def init(k: jax.Array) -> dict[str, Any]:
        return module.init(k, *dummy, method=BertModule.init_all)["params"]

    weights = read_checkpoint(directory)
    _check_tied_decoder(weights)
    params = load_params(
        weights, BERT_NAMES, init, key=key, init_missing_head=init_missing_head, dtype=dtype, what=f"BERT ({task})"
    )
    if tokenizer == "auto":
        tokenizer = _load_tokenizer(directory)
    return Bert(params, config, task, tokenizer, max_length)


def _check_tied_decoder(weights: dict[str, np.ndarray]) -> None:
    """Our MLM decoder is tied to the word embeddings: refuse an untied checkpoint."""
    decoder = weights.get("cls.predictions.decoder.weight")
    if decoder is None:
        return
    word = weights.get("bert.embeddings.word_embeddings.weight", weights.get("embeddings.word_embeddings.weight"))
    if word is not None and (decoder.shape != word.shape or not np.array_equal(decoder, word)):
        raise UnsupportedModelError(
            "cls.predictions.decoder.weight differs from bert.embeddings.word_embeddings.weight: "
            "untied MLM decoders are not supported"
        )


def _load_tokenizer(directory: str) -> Any:
    """The tokenizer stored beside the weights, or None when the directory has none."""
    import os

    from transformers import AutoTokenizer

    names = ("tokenizer.json", "vocab.txt", "tokenizer_config.json")
    if not any(os.path.isfile(os.path.join(directory, n)) for n in names):
        return None
    return AutoTokenizer.from_pretrained(directory)

