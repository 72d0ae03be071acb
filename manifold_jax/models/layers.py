"""Transformer building blocks shared by the BERT and ViT ports (flax.linen).

Every module works on arrays with any number of leading axes: ``(..., n, d)``. The
exploration engine calls them on ONE item (``(n, d)``) under ``jax.vmap``; the batched
forward passes call them on ``(B, n, d)``. Nothing here is random at apply time
(no dropout): all ports are inference-only functions of their parameters.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

Activation = Callable[[jax.Array], jax.Array]


def _gelu_exact(x: jax.Array) -> jax.Array:
    return jax.nn.gelu(x, approximate=False)


def _gelu_tanh(x: jax.Array) -> jax.Array:
    return jax.nn.gelu(x, approximate=True)


def _quick_gelu(x: jax.Array) -> jax.Array:
    return x * jax.nn.sigmoid(1.702 * x)


ACTIVATIONS: dict[str, Activation] = {
    "gelu": _gelu_exact,  # HF "gelu" is the exact erf form
    "gelu_new": _gelu_tanh,  # HF tanh approximation (GPT-2 / original BERT code)
    "gelu_pytorch_tanh": _gelu_tanh,
    "gelu_fast": _gelu_tanh,
    "gelu_tanh": _gelu_tanh,  # our own name, used by the paper's ViT
    "quick_gelu": _quick_gelu,
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "tanh": jnp.tanh,
}
"""Activation functions by the names that configs use (``hidden_act``)."""


def get_activation(name: str) -> Activation:
    """The activation called ``name`` in a config; a ValueError lists the supported names."""
    try:
        return ACTIVATIONS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unsupported activation {name!r}; supported: {', '.join(sorted(ACTIVATIONS))}"
        ) from None


@dataclass(frozen=True)
class EncoderConfig:
    """Shape and flavour of a Transformer encoder stack.

    ``pre_norm`` selects the block layout: post-LayerNorm (BERT, ``x = LN(x + f(x))``)
    or pre-LayerNorm (ViT, ``x = x + f(LN(x))``).
    """

    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    activation: str = "gelu"
    layer_norm_eps: float = 1e-12
    pre_norm: bool = False
    qkv_bias: bool = True
    init_std: float = 0.02

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not a multiple of num_heads {self.num_heads}"
            )
        get_activation(self.activation)


@jax.custom_jvp
def linear(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """x (..., d_in) @ kernel (d_in, d_out), whose reverse mode multiplies by a stored kernel^T.

    Reverse mode (the k VJPs of a Jacobian) multiplies cotangents by kernel^T. Left alone,
    XLA folds that transpose into the dot; with the compiler options of manifold_jax._xla
    such an "NT" product ran about twice as slow as a plain one on CPU when the kernel is a
    traced argument, as in the engine (MiniLM at 16 tokens, one exploration step: 33 ms
    against 19 ms with the stored copy). An optimisation barrier keeps a row-major copy of
    kernel^T; it is loop-invariant, so XLA computes it once per compiled loop (a single
    jitted Jacobian pays one transpose of every kernel per call). Values are unchanged.
    """
    return x @ kernel


@partial(linear.defjvp, symbolic_zeros=True)
def _linear_jvp(primals: tuple[jax.Array, jax.Array], tangents: tuple[Any, Any]) -> tuple[jax.Array, jax.Array]:
    x, kernel = primals
    dx, dkernel = tangents
    y = x @ kernel
    dy = jnp.zeros_like(y)
    if not isinstance(dx, SymbolicZero):
        # written as dx @ (kernel^T)^T so that its transpose, g @ kernel^T, reads the stored copy
        dy = dy + dx @ jax.lax.optimization_barrier(kernel.T).T
    if not isinstance(dkernel, SymbolicZero):
        dy = dy + x @ dkernel
    return y, dy


def _linear_dot_general(
    lhs: jax.Array, rhs: jax.Array, dimension_numbers: Any, precision: Any = None, **kwargs: Any
) -> jax.Array:
    """flax's ``dot_general`` hook: Dense's contraction (last axis of x with axis 0) via linear."""
    ((lc, rc), (lb, rb)) = dimension_numbers
    if tuple(lc) == (lhs.ndim - 1,) and tuple(rc) == (0,) and not lb and not rb and rhs.ndim == 2 and precision is None:
        return linear(lhs, rhs)
    return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision, **kwargs)


def dense(features: int, std: float, use_bias: bool = True, name: str | None = None) -> nn.Dense:
    """A linear layer ``y = x @ kernel + bias`` (kernel (in, out)) with normal(std) init."""
    return nn.Dense(
        features, use_bias=use_bias, kernel_init=nn.initializers.normal(std), name=name,
        dot_general=_linear_dot_general,
    )


class LayerNorm(nn.Module):
    """LayerNorm over the last axis, two-pass variance (as torch computes it).

    ``y = (x - mean) / sqrt(var + eps) * scale + bias`` with the biased variance.
    flax's own LayerNorm defaults to the one-pass E[x^2] - E[x]^2, which loses digits
    in float32; parity with the PyTorch models wants the two-pass form.
    """

    epsilon: float = 1e-12

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (d,))
        bias = self.param("bias", nn.initializers.zeros, (d,))
        return layer_norm(x, scale, bias, self.epsilon)


def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float) -> jax.Array:
    """The LayerNorm formula on the last axis of x (..., d) with scale, bias (d,)."""
    mean = jnp.mean(x, axis=-1, keepdims=True)
    centred = x - mean
    var = jnp.mean(centred * centred, axis=-1, keepdims=True)
    # x / sqrt, not x * rsqrt: XLA's CPU backend miscompiles the jitted Jacobian of the
    # rsqrt form for large batches of cotangents (benchmarks/repro_xla_layernorm.py)
    return centred / jnp.sqrt(var + eps) * scale + bias


def additive_mask(attention_mask: jax.Array | None, dtype: jnp.dtype) -> jax.Array | None:
    """(..., n) 0/1 key mask to the additive form HF uses: 0 where kept, dtype's min where masked."""
    if attention_mask is None:
        return None
    keep = attention_mask.astype(bool)
    return jnp.where(keep, jnp.zeros((), dtype), jnp.finfo(dtype).min)


class SelfAttention(nn.Module):
    """Multi-head scaled dot-product self-attention with an optional key mask.

    x (..., n, d), attention_mask (..., n) of 0/1 over the keys -> (..., n, d).
    """

    config: EncoderConfig

    def setup(self) -> None:
        c = self.config
        self.query = dense(c.hidden_size, c.init_std, c.qkv_bias)
        self.key = dense(c.hidden_size, c.init_std, c.qkv_bias)
        self.value = dense(c.hidden_size, c.init_std, c.qkv_bias)
        self.out = dense(c.hidden_size, c.init_std)

    def _split(self, t: jax.Array) -> jax.Array:
        h = self.config.num_heads
        return t.reshape(*t.shape[:-1], h, t.shape[-1] // h)

    def __call__(
        self, x: jax.Array, attention_mask: jax.Array | None = None, rows: jax.Array | None = None
    ) -> jax.Array:
        """``rows`` (r,): compute the output of those query positions only, (..., r, d)."""
        queries = x if rows is None else jnp.take(x, rows, axis=-2)
        q, k, v = self._split(self.query(queries)), self._split(self.key(x)), self._split(self.value(x))
        scores = jnp.einsum("...qhe,...khe->...hqk", q, k) / math.sqrt(q.shape[-1])
        bias = additive_mask(attention_mask, scores.dtype)
        if bias is not None:
            scores = scores + bias[..., None, None, :]
        weights = jax.nn.softmax(scores, axis=-1)
        context = jnp.einsum("...hqk,...khe->...qhe", weights, v)
        return self.out(context.reshape(*queries.shape))


class MLP(nn.Module):
    """Position-wise feed-forward: dense(intermediate) -> activation -> dense(hidden)."""

    config: EncoderConfig

    def setup(self) -> None:
        c = self.config
        self.fc1 = dense(c.intermediate_size, c.init_std)
        self.fc2 = dense(c.hidden_size, c.init_std)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(get_activation(self.config.activation)(self.fc1(x)))


class TransformerBlock(nn.Module):
    """One encoder layer, post-LN (BERT) or pre-LN (ViT) as the config says."""

    config: EncoderConfig

    def setup(self) -> None:
        eps = self.config.layer_norm_eps
        self.attention = SelfAttention(self.config)
        self.attention_norm = LayerNorm(eps)
        self.mlp = MLP(self.config)
        self.mlp_norm = LayerNorm(eps)

    def __call__(
        self, x: jax.Array, attention_mask: jax.Array | None = None, rows: jax.Array | None = None
    ) -> jax.Array:
        """``rows`` (r,): only those positions' outputs (..., r, d); every position still
        serves as a key and value, so the rows equal the full layer's rows."""
        kept = x if rows is None else jnp.take(x, rows, axis=-2)
        if self.config.pre_norm:
            x = kept + self.attention(self.attention_norm(x), attention_mask, rows)
            return x + self.mlp(self.mlp_norm(x))
        x = self.attention_norm(kept + self.attention(x, attention_mask, rows))
        return self.mlp_norm(x + self.mlp(x))


class Encoder(nn.Module):
    """A stack of ``num_layers`` TransformerBlocks (params ``layers_0`` ... ``layers_{L-1}``)."""

    config: EncoderConfig

    def setup(self) -> None:
        self.layers = [TransformerBlock(self.config) for _ in range(self.config.num_layers)]

    def __call__(
        self, x: jax.Array, attention_mask: jax.Array | None = None, rows: jax.Array | None = None
    ) -> jax.Array:
        """x (..., n, d) -> hidden (..., n, d); with ``rows`` (r,) the last layer computes only
        those positions, (..., r, d): a head that reads [CLS] (or the masked word) then
        skips the last layer's work on every other position, which also shortens its Jacobian."""
        for i, layer in enumerate(self.layers):
            x = layer(x, attention_mask, rows if i == len(self.layers) - 1 else None)
        return x
