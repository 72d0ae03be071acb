"""BERT-family building blocks: the config, the flax modules of each stage of the split, HF names.

One :class:`BertModule` serves BERT, RoBERTa and DistilBERT (their encoders are the same
post-LN stack): the config says how positions are numbered (``position_offset``: RoBERTa
counts from padding_idx + 1), whether token types exist (``type_vocab_size`` 0: DistilBERT)
and which activation follows the classification head's first dense layer (tanh for BERT's
pooler and RoBERTa's classifier.dense, ReLU for DistilBERT's pre_classifier).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from .base import Task
from .errors import UnsupportedModelError
from .layers import Encoder, EncoderConfig, LayerNorm, dense, get_activation
from .weights import NameTable, Rule, dense_rules, norm_rules

TASKS: tuple[Task, ...] = ("classification", "mlm", "encoder")
MLM_TOP_K = 5
"""Number of masked-LM logits the head keeps (the top-k at x0, frozen; docs/method.md section 1)."""


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
    position_offset: int = 0
    pooler_activation: str = "tanh"

    def __post_init__(self) -> None:
        get_activation(self.pooler_activation)
        if not 0 <= self.position_offset < self.max_position_embeddings:
            raise ValueError(f"position_offset {self.position_offset} outside 0..{self.max_position_embeddings - 1}")

    @property
    def max_length(self) -> int:
        """The longest sequence the position table serves (RoBERTa: max_position_embeddings - offset)."""
        return self.max_position_embeddings - self.position_offset

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
        if c.type_vocab_size:
            self.token_type = nn.Embed(c.type_vocab_size, d, embedding_init=init)
        self.norm = LayerNorm(c.encoder.layer_norm_eps)

    def positions(self, n: int) -> jax.Array:
        """Position embeddings of positions 0..n-1 (n, d): rows offset..offset+n-1 of the table."""
        offset = self.config.position_offset
        return self.position.embedding[offset : offset + n]

    def types(self) -> jax.Array:
        """The token-type table (T, d); one zero row for families without token types."""
        if self.config.type_vocab_size:
            return self.token_type.embedding
        return jnp.zeros((1, self.config.hidden_size), self.word.embedding.dtype)

    def __call__(self, input_ids: jax.Array, token_type_ids: jax.Array) -> jax.Array:
        """ids, types (..., n) -> x (..., n, d); positions are 0..n-1 (plus the offset), as in HF."""
        n = input_ids.shape[-1]
        summed = self.word(input_ids)
        if self.config.type_vocab_size:
            summed = summed + self.token_type(token_type_ids)
        return self.norm(summed + self.positions(n))

    def candidates(self, vocab_ids: jax.Array, n: int) -> jax.Array:
        """Every embedding-module output a token could have: (T, C, n, d).

        Entry [t, c, i] = LayerNorm(W[vocab_ids[c]] + T[t] + P[i]), same order of sums
        as ``__call__``, so an unmodified embedding equals one candidate.
        """
        words = self.word.embedding[vocab_ids]  # (C, d)
        types = self.types()  # (T, d)
        summed = words[None, :, None, :]
        if self.config.type_vocab_size:
            summed = summed + types[:, None, None, :]
        return self.norm(summed + self.positions(n)[None, None])


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
        """hidden (..., n, d) -> logits (..., num_labels): dense + activation on [CLS] (BERT's tanh
        pooler, RoBERTa's classifier.dense, DistilBERT's ReLU pre_classifier), then linear."""
        act = get_activation(self.config.pooler_activation)
        return self.classifier(act(self.pooler(hidden[..., 0, :])))

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


