"""GPT-2's pieces: the config, the flax modules of each stage of the split, the HF parameter names."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from .errors import UnsupportedModelError
from .layers import LayerNorm, dense, get_activation
from .weights import NameTable, Rule, norm_rules


@dataclass(frozen=True)
class GPT2Config:
    """The hashable shape of a GPT-2 port (built from a transformers ``GPT2Config``)."""

    vocab_size: int
    n_positions: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    activation: str = "gelu_new"
    layer_norm_eps: float = 1e-5
    init_std: float = 0.02
    eos_token_id: int = 50256

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of num_heads {self.num_heads}")
        get_activation(self.activation)

    @classmethod
    def from_hf(cls, hf: Any) -> GPT2Config:
        """From a ``transformers.GPT2Config``; options that change the maths and are not ported raise."""
        for name in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn", "add_cross_attention"):
            if getattr(hf, name, False):
                raise UnsupportedModelError(f"GPT-2 option {name}=True is not ported")
        if not getattr(hf, "scale_attn_weights", True):
            raise UnsupportedModelError("GPT-2 option scale_attn_weights=False is not ported")
        for name in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head"):
            value = getattr(hf, name, None)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UnsupportedModelError(f"config.json: {name} must be a positive integer, got {value!r}")
        eos = hf.eos_token_id if getattr(hf, "eos_token_id", None) is not None else hf.vocab_size - 1
        return cls(
            vocab_size=hf.vocab_size,
            n_positions=hf.n_positions,
            hidden_size=hf.n_embd,
            num_layers=hf.n_layer,
            num_heads=hf.n_head,
            intermediate_size=hf.n_inner if hf.n_inner is not None else 4 * hf.n_embd,
            activation=hf.activation_function,
            layer_norm_eps=hf.layer_norm_epsilon,
            init_std=hf.initializer_range,
            eos_token_id=int(eos),
        )


# ------------------------------------------------------------------------- flax modules


class CausalSelfAttention(nn.Module):
    """GPT-2 attention: fused q/k/v projection ``c_attn`` (d -> 3d), causal + key mask, ``c_proj``."""

    config: GPT2Config

    def setup(self) -> None:
        c = self.config
        self.c_attn = dense(3 * c.hidden_size, c.init_std)
        self.c_proj = dense(c.hidden_size, c.init_std)

    def __call__(self, x: jax.Array, attention_mask: jax.Array, rows: jax.Array | None = None) -> jax.Array:
        """x (..., n, d), key mask (..., n) -> (..., n, d), or only the query positions ``rows`` (r,)."""
        c = self.config
        n, d = x.shape[-2], c.hidden_size
        heads = c.num_heads
        q, k, v = jnp.split(self.c_attn(x), 3, axis=-1)
        queries = jnp.arange(n) if rows is None else rows
        if rows is not None:
            q = jnp.take(q, rows, axis=-2)

        def split(t: jax.Array) -> jax.Array:
            return t.reshape(*t.shape[:-1], heads, d // heads)

        q, k, v = split(q), split(k), split(v)
        scores = jnp.einsum("...qhe,...khe->...hqk", q, k) / math.sqrt(d // heads)
        allowed = (jnp.arange(n)[None, :] <= queries[:, None]) & attention_mask.astype(bool)[..., None, None, :]
        scores = jnp.where(allowed, scores, jnp.finfo(scores.dtype).min)
        context = jnp.einsum("...hqk,...khe->...qhe", jax.nn.softmax(scores, axis=-1), v)
        return self.c_proj(context.reshape(*context.shape[:-2], d))


class GPT2Block(nn.Module):
    """Pre-LN decoder layer: x + attn(ln_1 x), then + mlp(ln_2 x) with c_fc -> activation -> c_proj."""

    config: GPT2Config

    def setup(self) -> None:
        c = self.config
        self.ln_1 = LayerNorm(c.layer_norm_eps)
        self.attn = CausalSelfAttention(c)
        self.ln_2 = LayerNorm(c.layer_norm_eps)
        self.c_fc = dense(c.intermediate_size, c.init_std)
        self.c_proj = dense(c.hidden_size, c.init_std)

    def __call__(self, x: jax.Array, attention_mask: jax.Array, rows: jax.Array | None = None) -> jax.Array:
        kept = x if rows is None else jnp.take(x, rows, axis=-2)
        x = kept + self.attn(self.ln_1(x), attention_mask, rows)
        act = get_activation(self.config.activation)
        return x + self.c_proj(act(self.c_fc(self.ln_2(x))))


class GPT2Module(nn.Module):
    """The whole GPT-2 LM, one method per stage of the split (params ``wte``, ``wpe``, ``h_i``, ``ln_f``)."""

    config: GPT2Config

    def setup(self) -> None:
        c = self.config
        init = nn.initializers.normal(c.init_std)
        self.wte = nn.Embed(c.vocab_size, c.hidden_size, embedding_init=init)
        self.wpe = nn.Embed(c.n_positions, c.hidden_size, embedding_init=init)
        self.h = [GPT2Block(c) for _ in range(c.num_layers)]
        self.ln_f = LayerNorm(c.layer_norm_eps)

    def embed(self, input_ids: jax.Array) -> jax.Array:
        """ids (..., n) -> x (..., n, d) = wte[ids] + wpe[0..n-1]."""
        return self.wte(input_ids) + self.wpe.embedding[: input_ids.shape[-1]]

    def encode(self, x: jax.Array, attention_mask: jax.Array, rows: jax.Array | None = None) -> jax.Array:
        """x (..., n, d) -> final hidden states after ln_f (..., n, d); with ``rows`` (r,) the last
        layer computes only those positions (..., r, d)."""
        for i, block in enumerate(self.h):
            x = block(x, attention_mask, rows if i == len(self.h) - 1 else None)
        return self.ln_f(x)

    def logits(self, hidden: jax.Array, vocab_ids: jax.Array | None = None) -> jax.Array:
        """hidden (..., d) -> logits (..., V) through the tied LM head, or (..., k) at ``vocab_ids`` (k,)."""
        table = self.wte.embedding
        if vocab_ids is None:
            return hidden @ table.T
        return hidden @ table[vocab_ids].T

    def forward(self, x: jax.Array, attention_mask: jax.Array) -> jax.Array:
        """Logits at every position (..., n, V)."""
        return self.logits(self.encode(x, attention_mask))

    def head(self, x: jax.Array, attention_mask: jax.Array, last: jax.Array, topk: Any = None) -> jax.Array:
        """One item (n, d) -> next-token logits at position ``last``: (V,) or (k,) at ``topk``."""
        rows = jnp.reshape(jnp.asarray(last, jnp.int32), (1,))
        return self.logits(self.encode(x, attention_mask, rows)[0], topk)

    def init_all(self, input_ids: jax.Array) -> jax.Array:
        return self.forward(self.embed(input_ids), jnp.ones_like(input_ids))


# --------------------------------------------------------------------------- HF names

_LAYER = "h.{i}"
_FLAX = "h_{i}"

GPT2_NAMES = NameTable(
    rules=(
        Rule("wte.weight", "wte/embedding"),
        Rule("wpe.weight", "wpe/embedding"),
        *norm_rules(f"{_LAYER}.ln_1", f"{_FLAX}/ln_1"),
        *norm_rules(f"{_LAYER}.ln_2", f"{_FLAX}/ln_2"),
        # HF's Conv1D stores its weight as (in, out): the flax kernel layout, no transpose
        Rule(f"{_LAYER}.attn.c_attn.weight", f"{_FLAX}/attn/c_attn/kernel"),
        Rule(f"{_LAYER}.attn.c_attn.bias", f"{_FLAX}/attn/c_attn/bias"),
        Rule(f"{_LAYER}.attn.c_proj.weight", f"{_FLAX}/attn/c_proj/kernel"),
        Rule(f"{_LAYER}.attn.c_proj.bias", f"{_FLAX}/attn/c_proj/bias"),
        Rule(f"{_LAYER}.mlp.c_fc.weight", f"{_FLAX}/c_fc/kernel"),
        Rule(f"{_LAYER}.mlp.c_fc.bias", f"{_FLAX}/c_fc/bias"),
        Rule(f"{_LAYER}.mlp.c_proj.weight", f"{_FLAX}/c_proj/kernel"),
        Rule(f"{_LAYER}.mlp.c_proj.bias", f"{_FLAX}/c_proj/bias"),
        *norm_rules("ln_f", "ln_f"),
    ),
    prefixes=("transformer.",),
    # attn.bias / attn.masked_bias: the causal-mask buffers of old checkpoints; lm_head.weight:
    # the tied copy of wte (checked for equality by load_gpt2)
    ignore=(r"h\.\d+\.attn\.bias", r"h\.\d+\.attn\.masked_bias", r"lm_head\.weight"),
)
"""HF GPT-2 parameter names -> flax paths of :class:`GPT2Module`."""
