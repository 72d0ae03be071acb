"""The contract between a Transformer port and the exploration engine.

A model is split at its input embeddings: ``embed`` maps raw inputs to points ``x``
of shape (n, d) per item, ``head`` maps one point back to the output vector the
engine pulls the metric back through, ``decode`` turns explored points back into
inputs (Algorithm 3), and ``bounds`` gives the feasible box the exploration is
projected into.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol, runtime_checkable

import jax
import numpy as np

Context = dict[str, jax.Array]
"""What ``head`` and ``decode`` need beside the embeddings: a flat dict of arrays.

From ``embed`` every entry carries the batch axis first; ``head`` receives one item
(the batch axis removed), exactly as ``jax.vmap`` hands it over. The key
``"token_mask"`` (bool, (n,)) marks the positions worth exploring (real tokens or
patches, not [CLS], [SEP], padding).
"""

Task = Literal["classification", "mlm", "encoder", "lm", "lm-top5"]
BoundsKind = Literal["theoretical", "measured"]


@runtime_checkable
class ExplorableModel(Protocol):
    """What the engine, the interpretation code and the CLI rely on.

    Implementations are pytrees whose leaves are the parameter arrays, so that
    ``jax.jit`` traces weights as arguments instead of baking them in as constants.
    """

    task: Task
    modality: Literal["image", "text"]

    @property
    def labels(self) -> tuple[str, ...]:
        """Names of the k outputs of ``head`` (class names, or the frozen MLM tokens)."""
        ...

    def embed(self, inputs: Any) -> tuple[jax.Array, Context]:
        """Raw inputs (images (B, H, W, C) in [0, 1], or a list of B texts) to
        embeddings x0 (B, n, d) and the batched context."""
        ...

    def head(self, x: jax.Array, ctx: Context) -> jax.Array:
        """One item's embeddings (n, d) to its output vector (k,): a pure function."""
        ...

    def decode(self, x: jax.Array, ctx: Context) -> np.ndarray:
        """Embeddings (B, n, d) back to inputs: images (B, H, W, C) or token ids (B, n)."""
        ...

    def bounds(
        self, kind: BoundsKind = "theoretical", data: Any = None
    ) -> tuple[jax.Array, jax.Array]:
        """Feasible box (lo, hi), each of shape (n, d), for the embeddings."""
        ...


@runtime_checkable
class TextModel(ExplorableModel, Protocol):
    """What the text code (interpretation, reports, the CLI) relies on beyond :class:`ExplorableModel`.

    BERT, RoBERTa, DistilBERT, GPT-2 and the sentence classifier implement it. ``embed_ids``
    re-embeds decoded token ids with the original context (types, attention mask, explored
    positions), ``detokenize`` turns ids back into strings.
    """

    @property
    def tokenizer(self) -> Any:
        """The HF tokenizer (None when the checkpoint shipped none: ``embed_ids`` still works)."""
        ...

    def embed_ids(
        self, input_ids: Any, token_type_ids: Any = None, attention_mask: Any = None, token_mask: Any = None
    ) -> tuple[jax.Array, Context]:
        """Token ids (B, n) to x0 (B, n, d) and the batched context, without a tokenizer."""
        ...

    def detokenize(self, ids: Any, skip_special_tokens: bool = True) -> list[str]:
        """Token ids (B, n) back to B strings."""
        ...
