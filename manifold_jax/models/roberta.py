"""RoBERTa on the BERT port: the same post-LN encoder, positions counted from padding_idx + 1.

HF's RoBERTa numbers real tokens padding_idx + 1, padding_idx + 2, ... (``position_offset``);
its classification head is ``classifier.dense`` -> tanh -> ``classifier.out_proj`` on <s>,
which is the shape of BERT's pooler + classifier (mapped onto them), and its ``lm_head``
(dense, GELU, LayerNorm, decoder tied to the word table + bias) is BERT's MLM head.
``RobertaModel``'s own pooler is not used by either task and is skipped.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .base import Task
from .bert import BERT, Bert, tied_decoder
from .bert_modules import BertConfig
from .port_spec import PortSpec
from .weights import NameTable, Rule, dense_rules, norm_rules

MODEL_TYPE = "roberta"

_LAYER = "encoder.layer.{i}"
_FLAX = "encoder/layers_{i}"

ROBERTA_NAMES = NameTable(
    rules=(
        Rule("embeddings.word_embeddings.weight", "embeddings/word/embedding"),
        Rule("embeddings.position_embeddings.weight", "embeddings/position/embedding"),
        Rule("embeddings.token_type_embeddings.weight", "embeddings/token_type/embedding"),
        *norm_rules("embeddings.LayerNorm", "embeddings/norm"),
        *dense_rules(f"{_LAYER}.attention.self.query", f"{_FLAX}/attention/query"),
        *dense_rules(f"{_LAYER}.attention.self.key", f"{_FLAX}/attention/key"),
        *dense_rules(f"{_LAYER}.attention.self.value", f"{_FLAX}/attention/value"),
        *dense_rules(f"{_LAYER}.attention.output.dense", f"{_FLAX}/attention/out"),
        *norm_rules(f"{_LAYER}.attention.output.LayerNorm", f"{_FLAX}/attention_norm"),
        *dense_rules(f"{_LAYER}.intermediate.dense", f"{_FLAX}/mlp/fc1"),
        *dense_rules(f"{_LAYER}.output.dense", f"{_FLAX}/mlp/fc2"),
        *norm_rules(f"{_LAYER}.output.LayerNorm", f"{_FLAX}/mlp_norm"),
        *dense_rules("classifier.dense", "pooler"),
        *dense_rules("classifier.out_proj", "classifier"),
        *dense_rules("lm_head.dense", "mlm/transform"),
        *norm_rules("lm_head.layer_norm", "mlm/norm"),
        Rule(("lm_head.bias", "lm_head.decoder.bias"), "mlm/bias"),
    ),
    prefixes=("roberta.",),
    ignore=(r"embeddings\.position_ids", r"embeddings\.token_type_ids", r"lm_head\.decoder\.weight", r"pooler\..*"),
    heads=frozenset({"pooler", "classifier", "mlm"}),
)
"""HF RoBERTa parameter names -> flax paths of :class:`~manifold_jax.models.bert_modules.BertModule`."""


def roberta_config(hf: Any, num_labels: int | None = None) -> BertConfig:
    """Our :class:`BertConfig` of a ``transformers.RobertaConfig`` (positions offset by padding_idx + 1)."""
    base = BertConfig.from_hf(hf, num_labels)
    pad = hf.pad_token_id if hf.pad_token_id is not None else 1
    return BertConfig(
        vocab_size=base.vocab_size, max_position_embeddings=base.max_position_embeddings,
        type_vocab_size=base.type_vocab_size, encoder=base.encoder, num_labels=base.num_labels,
        id2label=base.id2label, pad_token_id=pad, position_offset=pad + 1,
    )


ROBERTA: PortSpec[BertConfig, Bert] = dataclasses.replace(
    BERT,
    name="RoBERTa",
    config=lambda c: roberta_config(c.hf, c.option("num_labels")),
    names=ROBERTA_NAMES,
    check_weights=tied_decoder("lm_head.decoder.weight", "roberta."),
)
"""HF RoBERTa checkpoints on the BERT port: BERT's spec with its own config, names and tied decoder."""


def load_roberta(directory: str, hf_config: Any, task: Task = "classification", **options: Any) -> Bert:
    """A :class:`~manifold_jax.models.Bert` from an HF RoBERTa checkpoint directory (options: see
    :func:`~manifold_jax.models.bert.load_bert`)."""
    return ROBERTA.load(directory, hf_config, task, **options)
