"""DistilBERT on the BERT port: no token types, ReLU ``pre_classifier``, the same post-LN encoder.

HF's DistilBERT embeds word + position (no token types), LayerNorm; each layer is
``sa_layer_norm(x + attention(x))`` then ``output_layer_norm(x + ffn(x))``, BERT's post-LN
block under other names; classification is ``pre_classifier`` -> ReLU -> ``classifier`` on
[CLS]; the MLM head is ``vocab_transform`` -> activation -> ``vocab_layer_norm`` ->
``vocab_projector`` tied to the word table, BERT's MLM head.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .base import Task
from .bert import BERT, Bert, tied_decoder
from .bert_modules import BertConfig
from .layers import EncoderConfig
from .port_spec import PortSpec
from .weights import NameTable, Rule, dense_rules, norm_rules

MODEL_TYPE = "distilbert"

_LAYER = "transformer.layer.{i}"
_FLAX = "encoder/layers_{i}"

DISTILBERT_NAMES = NameTable(
    rules=(
        Rule("embeddings.word_embeddings.weight", "embeddings/word/embedding"),
        Rule("embeddings.position_embeddings.weight", "embeddings/position/embedding"),
        *norm_rules("embeddings.LayerNorm", "embeddings/norm"),
        *dense_rules(f"{_LAYER}.attention.q_lin", f"{_FLAX}/attention/query"),
        *dense_rules(f"{_LAYER}.attention.k_lin", f"{_FLAX}/attention/key"),
        *dense_rules(f"{_LAYER}.attention.v_lin", f"{_FLAX}/attention/value"),
        *dense_rules(f"{_LAYER}.attention.out_lin", f"{_FLAX}/attention/out"),
        *norm_rules(f"{_LAYER}.sa_layer_norm", f"{_FLAX}/attention_norm"),
        *dense_rules(f"{_LAYER}.ffn.lin1", f"{_FLAX}/mlp/fc1"),
        *dense_rules(f"{_LAYER}.ffn.lin2", f"{_FLAX}/mlp/fc2"),
        *norm_rules(f"{_LAYER}.output_layer_norm", f"{_FLAX}/mlp_norm"),
        *dense_rules("pre_classifier", "pooler"),
        *dense_rules("classifier", "classifier"),
        *dense_rules("vocab_transform", "mlm/transform"),
        *norm_rules("vocab_layer_norm", "mlm/norm"),
        Rule("vocab_projector.bias", "mlm/bias"),
    ),
    prefixes=("distilbert.",),
    ignore=(r"embeddings\.position_ids", r"vocab_projector\.weight"),
    heads=frozenset({"pooler", "classifier", "mlm"}),
)
"""HF DistilBERT parameter names -> flax paths of :class:`~manifold_jax.models.bert_modules.BertModule`."""


def distilbert_config(hf: Any, num_labels: int | None = None) -> BertConfig:
    """Our :class:`BertConfig` of a ``transformers.DistilBertConfig`` (no token types, ReLU pre-classifier)."""
    encoder = EncoderConfig(
        hidden_size=hf.dim,
        num_layers=hf.n_layers,
        num_heads=hf.n_heads,
        intermediate_size=hf.hidden_dim,
        activation=hf.activation,
        layer_norm_eps=1e-12,  # hard-coded in HF's DistilBERT
        pre_norm=False,
        init_std=hf.initializer_range,
    )
    k = hf.num_labels if num_labels is None else num_labels
    names = dict(getattr(hf, "id2label", None) or {})
    return BertConfig(
        vocab_size=hf.vocab_size,
        max_position_embeddings=hf.max_position_embeddings,
        type_vocab_size=0,
        encoder=encoder,
        num_labels=k,
        id2label=tuple(str(names.get(i, names.get(str(i), f"LABEL_{i}"))) for i in range(k)),
        pad_token_id=hf.pad_token_id if hf.pad_token_id is not None else 0,
        pooler_activation="relu",
    )


DISTILBERT: PortSpec[BertConfig, Bert] = dataclasses.replace(
    BERT,
    name="DistilBERT",
    config=lambda c: distilbert_config(c.hf, c.option("num_labels")),
    names=DISTILBERT_NAMES,
    check_weights=tied_decoder("vocab_projector.weight", "distilbert."),
)
"""HF DistilBERT checkpoints on the BERT port: BERT's spec with its own config, names and tied decoder."""


def load_distilbert(directory: str, hf_config: Any, task: Task = "classification", **options: Any) -> Bert:
    """A :class:`~manifold_jax.models.Bert` from an HF DistilBERT checkpoint directory (options: see
    :func:`~manifold_jax.models.bert.load_bert`)."""
    return DISTILBERT.load(directory, hf_config, task, **options)
