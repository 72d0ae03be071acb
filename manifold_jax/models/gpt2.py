"""GPT-2 (``GPT2LMHeadModel``) split at its input embeddings: a causal LM's next-token logits.

``embed`` tokenizes (right padding, so positions stay 0..n-1 as in HF) and returns
x = wte[ids] + wpe[0..n-1] (dropout off); ``head`` runs the pre-LN decoder stack with its
causal mask, the final LayerNorm and the LM head (tied to wte) on ONE item, and returns the
next-token logits at the last real position: over the whole vocabulary (k = V = 50,257 for
GPT-2, the default: explore it with ``spectrum="matfree"``, which never forms the V-row
Jacobian) or over ``top_k`` tokens fixed at x0 (like the masked-LM top-5 of our BERT).

Decoding (Algorithm 3) is the nearest token in the embedding table (which is also the
tied LM head's): x_i - wpe[i] is compared with every row of wte, exactly, in chunks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from manifold_jax._xla import jit

from .base import Context, Task
from .errors import UnsupportedModelError
from .gpt2_modules import GPT2_NAMES, GPT2Config, GPT2Module
from .port import TextPort
from .port_spec import Checkpoint, PortSpec
from .text import load_tokenizer
from .vocab import chunk_rows, nearest_rows, table_box

__all__ = [
    "GPT2", "GPT2_NAMES", "GPT2_SPEC", "MODEL_TYPE", "TASKS", "GPT2Config", "GPT2Module", "gpt2_params", "load_gpt2",
]

MODEL_TYPE = "gpt2"
TASKS: tuple[Task, ...] = ("lm", "lm-top5")
"""``"lm"``: next-token logits over the full vocabulary (or ``top_k``); ``"lm-top5"``: a frozen
top-5 head, the task studies use (their ranking metrics are O(k^2) per pair of points)."""
STUDY_TOP_K = 5


# ------------------------------------------------------------------------- the model


@dataclass(frozen=True, eq=False)
class GPT2(TextPort):
    """A GPT-2 LM split at the input embeddings (a pytree: its leaves are ``params``).

    ``head(x, ctx)`` is the next-token logits at the last real position: (V,) when
    ``top_k`` is None (the default), else (top_k,) at the ``top_k`` tokens that are most
    likely at x0, frozen in ``ctx["topk"]`` (use that for studies: the report's ranking
    metrics are O(k^2)). ``max_length``: pad every batch to this length.
    """

    params: dict[str, Any]
    config: GPT2Config = field(metadata={"static": True})
    tokenizer: Any = field(default=None, metadata={"static": True})
    max_length: int | None = field(default=None, metadata={"static": True})
    top_k: int | None = field(default=None, metadata={"static": True})

    task: ClassVar[Task] = "lm"
    modality: ClassVar[str] = "text"

    def __post_init__(self) -> None:
        top_k = self.top_k
        if top_k is not None and (
            not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= self.config.vocab_size
        ):
            raise ValueError(f"top_k must be None or an integer in 1..{self.config.vocab_size}, got {self.top_k!r}")

    # ------------------------------------------------------------------ plumbing
    @property
    def module(self) -> GPT2Module:
        return GPT2Module(self.config)

    @property
    def positions(self) -> int:
        return self.config.n_positions

    @property
    def dtype(self) -> Any:
        return self.params["wte"]["embedding"].dtype

    @property
    def labels(self) -> tuple[str, ...]:
        """The k outputs: every vocabulary token (full vocabulary; their strings when a tokenizer
        is loaded), or ``top1..topk`` for a frozen top-k head (see :meth:`topk_tokens`)."""
        if self.top_k is not None:
            return tuple(f"top{i + 1}" for i in range(self.top_k))
        if self.tokenizer is not None:
            return tuple(self.tokenizer.convert_ids_to_tokens(list(range(self.config.vocab_size))))
        return tuple(str(i) for i in range(self.config.vocab_size))

    # ------------------------------------------------------------------ embed
    def tokenize(self, texts: str | list[str], max_length: int | None = None) -> dict[str, np.ndarray]:
        """Texts to right-padded numpy ``input_ids`` and ``attention_mask`` (B, n).

        Pads (with the end-of-text id) to the longest text or to ``max_length`` (argument, else
        the model's); a text longer than that, or than the model's positions, raises."""
        self._need_tokenizer()
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts or any(not isinstance(t, str) or not t for t in texts):
            raise ValueError("texts must be a non-empty list of non-empty strings")
        rows = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        length = max_length if max_length is not None else self.max_length
        longest = max(len(r) for r in rows)
        n = longest if length is None else length
        limit = min(n, self.config.n_positions)
        too_long = [i for i, r in enumerate(rows) if len(r) > limit]
        if too_long:
            raise ValueError(
                f"text {too_long[0]} has {len(rows[too_long[0]])} tokens, more than the {limit} allowed "
                f"(max_length {length}, positions {self.config.n_positions})"
            )
        ids = np.full((len(rows), n), self.config.eos_token_id, np.int32)
        mask = np.zeros((len(rows), n), np.int32)
        for b, r in enumerate(rows):
            ids[b, : len(r)] = r
            mask[b, : len(r)] = 1
        return {"input_ids": ids, "attention_mask": mask}

    def embed(self, inputs: str | list[str], max_length: int | None = None) -> tuple[jax.Array, Context]:
        """Texts to x0 (B, n, d) and ctx (batch first): see :meth:`embed_ids`."""
        enc = self.tokenize(inputs, max_length)
        return self.embed_ids(enc["input_ids"], None, enc["attention_mask"])

    def embed_ids(
        self, input_ids: Any, token_type_ids: Any = None, attention_mask: Any = None, token_mask: Any = None
    ) -> tuple[jax.Array, Context]:
        """Token ids (B, n) to x0 and ctx, as :meth:`embed` (no tokenizer needed).

        ctx: ``input_ids``, ``attention_mask`` (default all ones), ``token_type_ids`` (zeros: GPT-2
        has none, kept for the text-model contract), ``token_mask`` (default: the real tokens),
        ``last_position`` (B,) the last real token, whose next-token logits ``head`` returns, and
        with ``top_k`` also ``topk`` (B, top_k), the most likely next tokens at x0, frozen.
        Right padding is required: every real token precedes every padding position.
        """
        ids = np.asarray(input_ids, dtype=np.int32)
        if ids.ndim != 2 or 0 in ids.shape:
            raise ValueError(f"input_ids must be a non-empty (B, n) array, got shape {ids.shape}")
        if ids.shape[1] > self.config.n_positions:
            raise ValueError(f"sequence length {ids.shape[1]} exceeds n_positions {self.config.n_positions}")
        if ids.min() < 0 or ids.max() >= self.config.vocab_size:
            raise ValueError(f"input_ids must lie in 0..{self.config.vocab_size - 1}")
        att = np.ones_like(ids) if attention_mask is None else np.asarray(attention_mask).astype(np.int32)
        lengths = att.sum(1)
        prefix = (np.arange(ids.shape[1]) < lengths[:, None]).astype(np.int32)
        if (lengths == 0).any() or not np.array_equal(att, prefix):
            raise ValueError("attention_mask must mark a non-empty prefix of every row (right padding)")
        mask = att.astype(bool) if token_mask is None else np.asarray(token_mask, bool) & att.astype(bool)
        types = np.zeros_like(ids) if token_type_ids is None else np.asarray(token_type_ids, np.int32)
        x0 = _embed_jit(self, jnp.asarray(ids))
        ctx: Context = {
            "input_ids": jnp.asarray(ids),
            "token_type_ids": jnp.asarray(types),
            "attention_mask": jnp.asarray(att),
            "last_position": jnp.asarray(lengths - 1, jnp.int32),
        }
        if self.top_k is not None:
            ctx["topk"] = _topk_jit(self, x0, ctx["attention_mask"], ctx["last_position"])
        ctx["token_mask"] = jnp.asarray(mask)
        return x0, ctx

    # ------------------------------------------------------------------ head
    def head(self, x: jax.Array, ctx: Context) -> jax.Array:
        """ONE item's embeddings x (n, d) -> next-token logits (V,) or (top_k,): a pure function."""
        return self._apply(x, ctx["attention_mask"], ctx["last_position"], ctx.get("topk"), method="head")

    def forward(self, x: jax.Array, ctx: Context) -> jax.Array:
        """The full model on a batch of embeddings (B, n, d): logits at every position (B, n, V)."""
        return _forward_jit(self, x, ctx["attention_mask"])

    def next_token_probabilities(self, x: jax.Array, ctx: Context) -> jax.Array:
        """softmax of the full-vocabulary next-token logits of a batch (B, n, d): (B, V), top-k or not."""
        return _next_probs_jit(self, x, ctx["attention_mask"], ctx["last_position"])

    # ------------------------------------------------------------------ decode
    def decode(self, x: jax.Array, ctx: Context, method: str = "nearest") -> np.ndarray:
        """Explored embeddings (B, n, d) -> token ids (B, n) (Algorithm 3).

        For each explored position i (``token_mask``) the token v whose embedding
        wte[v] + wpe[i] is nearest in L2 to x_i, exactly (the tied LM head is the same table);
        other positions keep their ids. ``method`` accepts only "nearest" (or "auto")."""
        if method not in ("auto", "nearest"):
            raise ValueError(f"unknown decode method {method!r} for GPT-2; use 'nearest'")
        x = jnp.asarray(x, self.dtype)
        b, n, d = x.shape
        table = self.params["wte"]["embedding"]
        queries = (x - self.params["wpe"]["embedding"][:n]).reshape(b * n, d)
        allowed = jnp.ones((self.config.vocab_size,), bool)
        found = nearest_rows(queries, table, allowed, chunk_rows(self.config.vocab_size, b * n + d))
        found = np.asarray(found).reshape(b, n)
        return np.where(np.asarray(ctx["token_mask"]), found, np.asarray(ctx["input_ids"]))

    def vocabulary_mask(self, vocabulary: str = "words") -> jax.Array:
        """Boolean (V,) mask of the tokens a sentence may hold: "words" drops the special tokens
        (end of text), "all" keeps every entry (the verified-sentence search's candidates)."""
        if vocabulary not in ("words", "all"):
            raise ValueError(f"vocabulary={vocabulary!r}: use 'words' or 'all'")
        allowed = np.ones(self.config.vocab_size, bool)
        if vocabulary == "words" and self.tokenizer is not None:
            special = [i for i in self.tokenizer.all_special_ids if 0 <= i < allowed.size]
            allowed[special] = False
        return jnp.asarray(allowed)

    def token_embeddings(self, vocab_ids: jax.Array, n: int) -> jax.Array:
        """Embeddings (1, C, n, d) of the tokens ``vocab_ids`` (C,) at every position 0..n-1:
        wte[v_c] + wpe[i], exactly what ``embed`` gives token v_c at position i (one token type).
        Pure (usable under jit)."""
        wte, wpe = self.params["wte"]["embedding"], self.params["wpe"]["embedding"][:n]
        return (wte[vocab_ids][:, None, :] + wpe[None, :, :])[None]

    # ------------------------------------------------------------------ bounds
    def position_box(self, n: int) -> tuple[jax.Array, jax.Array]:
        """The theoretical box of :meth:`bounds` (each (n, d)): the embedding is linear and separable,
        so the exact box of every embedding any token sequence can have is min_v wte[v] + wpe[i] (and
        max), per position i. n = ``data`` when an int, the padded length of ``embed(data)`` for
        texts, else the model's ``max_length`` or ``n_positions``."""
        return table_box(self.params["wte"]["embedding"], self.params["wpe"]["embedding"][:n])


@jit
def _embed_jit(model: GPT2, ids: jax.Array) -> jax.Array:
    return model._apply(ids, method="embed")


@jit
def _forward_jit(model: GPT2, x: jax.Array, mask: jax.Array) -> jax.Array:
    return model._apply(x, mask, method="forward")


@jit
def _next_probs_jit(model: GPT2, x: jax.Array, mask: jax.Array, last: jax.Array) -> jax.Array:
    full = jax.vmap(lambda a, m, p: model._apply(a, m, p, None, method="head"))(x, mask, last)
    return jax.nn.softmax(full, axis=-1)


@jit
def _topk_jit(model: GPT2, x0: jax.Array, mask: jax.Array, last: jax.Array) -> jax.Array:
    def one(x: jax.Array, m: jax.Array, p: jax.Array) -> jax.Array:
        assert model.top_k is not None  # a frozen head is built only for a top-k model
        return jax.lax.top_k(model._apply(x, m, p, None, method="head"), model.top_k)[1]

    return jax.vmap(one)(x0, mask, last)


jax.tree_util.register_dataclass(GPT2)


# ------------------------------------------------------------------------- loading


def check_tied_head(weights: Mapping[str, np.ndarray]) -> None:
    """The LM head must be tied to wte (``lm_head.weight``, when present, equal to it)."""
    head = weights.get("lm_head.weight")
    wte = weights.get("transformer.wte.weight", weights.get("wte.weight"))
    if head is not None and wte is not None and (head.shape != wte.shape or not np.array_equal(head, wte)):
        raise UnsupportedModelError(
            "lm_head.weight differs from transformer.wte.weight: untied LM heads are not supported"
        )


def gpt2_config(checkpoint: Checkpoint) -> GPT2Config:
    """The :class:`GPT2Config` of a checkpoint; task "lm-top5" refuses another ``top_k``."""
    top_k = checkpoint.option("top_k")
    if checkpoint.task == "lm-top5" and top_k not in (None, STUDY_TOP_K):
        raise ValueError(f"task 'lm-top5' fixes top_k at {STUDY_TOP_K}; pass task='lm' with top_k={top_k}")
    return GPT2Config.from_hf(checkpoint.hf)


def gpt2_port(params: dict[str, Any], config: GPT2Config, task: Task, checkpoint: Checkpoint) -> GPT2:
    """The :class:`GPT2` of loaded params (top-5 frozen for "lm-top5"), with the tokenizer stored
    beside the weights unless the ``tokenizer`` option gives one (or None)."""
    tokenizer = checkpoint.options.get("tokenizer", "auto")
    if tokenizer == "auto":
        tokenizer = load_tokenizer(checkpoint.directory)
    top_k = STUDY_TOP_K if task == "lm-top5" else checkpoint.option("top_k")
    return GPT2(params, config, tokenizer, checkpoint.option("max_length"), top_k)


GPT2_SPEC: PortSpec[GPT2Config, GPT2] = PortSpec(
    name="GPT-2",
    tasks=TASKS,
    config=gpt2_config,
    names=GPT2_NAMES,
    module=lambda config, _task: GPT2Module(config),
    init_inputs=lambda _config: (jnp.zeros((1, 2), jnp.int32),),
    build=gpt2_port,
    options=frozenset({"max_length", "top_k", "tokenizer"}),
    check_weights=check_tied_head,
)
"""HF ``GPT2LMHeadModel`` checkpoints (every task has the same parameters: the LM head is tied)."""


def gpt2_params(weights: dict[str, np.ndarray], config: GPT2Config, *, dtype: Any = jnp.float32) -> dict[str, Any]:
    """Flax params of :class:`GPT2Module` from HF GPT-2 weights ``{name: array}`` (names checked;
    the LM head must be tied to wte)."""
    return GPT2_SPEC.params(weights, config, "lm", dtype=dtype)


def load_gpt2(directory: str, hf_config: Any, task: Task = "lm", **options: Any) -> GPT2:
    """A :class:`GPT2` from an HF GPT-2 checkpoint directory (options: ``max_length``, ``top_k``,
    ``tokenizer``; see :func:`manifold_jax.models.load`)."""
    return GPT2_SPEC.load(directory, hf_config, task, **options)
