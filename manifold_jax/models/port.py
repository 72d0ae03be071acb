"""The part every port shares: the ``bounds`` dispatch, the flax plumbing, the text helpers.

A port (:class:`~manifold_jax.models.Bert`, :class:`~manifold_jax.models.GPT2`,
:class:`~manifold_jax.models.ViT`) is a frozen dataclass registered as a pytree; it inherits
from :class:`Port` (image) or :class:`TextPort` (text) and writes only what is its own:
``module`` (its flax module), ``embed``, ``forward`` and its theoretical box.
"""

from __future__ import annotations

from typing import Any, ClassVar, cast

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from .base import BoundsKind, Context


def measured_box(x0: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Element-wise min and max over the batch of embeddings x0 (B, n, d): two (n, d) arrays."""
    if x0.ndim != 3 or x0.shape[0] == 0:
        raise ValueError(f"measured bounds need a non-empty batch of embeddings (B, n, d), got {x0.shape}")
    return jnp.min(x0, axis=0), jnp.max(x0, axis=0)


class Port:
    """``bounds`` and ``__call__`` of every port, written once.

    ``bounds("measured", data)`` is the element-wise box of ``embed(data)``;
    ``bounds("theoretical", data)`` is the port's own :meth:`theoretical_bounds`.
    """

    measured_inputs: ClassVar[str] = "inputs"
    """What ``bounds('measured')`` measures the box on, for its error message ("images", "texts")."""

    def embed(self, inputs: Any) -> tuple[jax.Array, Context]:
        """Raw inputs to x0 (B, n, d) and the batched context."""
        raise NotImplementedError

    def forward(self, x: jax.Array, ctx: Context) -> jax.Array:
        """The full model on a batch of embeddings (B, n, d)."""
        raise NotImplementedError

    def theoretical_bounds(self, data: Any) -> tuple[jax.Array, jax.Array]:
        """The port's box (lo, hi) of every embedding an input can have (see its ``bounds``)."""
        raise NotImplementedError

    def __call__(self, inputs: Any) -> jax.Array:
        """``forward(*embed(inputs))``."""
        return self.forward(*self.embed(inputs))

    def bounds(self, kind: BoundsKind = "theoretical", data: Any = None) -> tuple[jax.Array, jax.Array]:
        """Feasible box (lo, hi), each (n, d): "theoretical" (:meth:`theoretical_bounds`) or
        "measured" (element-wise min/max over ``embed(data)``, per position)."""
        if kind == "measured":
            if data is None:
                raise ValueError(f"bounds('measured') needs data: the {self.measured_inputs} to measure the box on")
            return measured_box(self.embed(data)[0])
        if kind != "theoretical":
            raise ValueError(f"unknown bounds kind {kind!r}; use 'theoretical' or 'measured'")
        return self.theoretical_bounds(data)


class FlaxPort(Port):
    """A port whose weights ``params`` run through a flax module (``module``), one method per stage."""

    params: dict[str, Any]

    @property
    def module(self) -> nn.Module:
        raise NotImplementedError

    def _apply(self, *args: Any, method: str) -> jax.Array:
        """``module.apply`` of the method ``method`` of the port's flax module on its params."""
        module = self.module
        return cast(jax.Array, module.apply({"params": self.params}, *args, method=getattr(type(module), method)))


class TextPort(FlaxPort):
    """What the text ports share beyond :class:`FlaxPort`: the tokenizer, the frozen top-k tokens
    and a theoretical box per position, for n positions resolved from ``data``."""

    tokenizer: Any
    max_length: int | None
    measured_inputs: ClassVar[str] = "texts"

    @property
    def positions(self) -> int:
        """The most positions the model serves."""
        raise NotImplementedError

    def position_box(self, n: int) -> tuple[jax.Array, jax.Array]:
        """The theoretical box (lo, hi), each (n, d), of the first n positions."""
        raise NotImplementedError

    def theoretical_bounds(self, data: Any) -> tuple[jax.Array, jax.Array]:
        """:meth:`position_box` of n = ``data`` when an int, the padded length of ``embed(data)`` for
        texts, else the model's ``max_length`` or all its positions."""
        if isinstance(data, int):
            n = data
        elif data is not None:
            n = int(self.embed(data)[0].shape[1])
        else:
            n = self.max_length or self.positions
        if not 0 < n <= self.positions:
            raise ValueError(f"bounds for n = {n} positions; this model has 1..{self.positions}")
        return self.position_box(n)

    def _need_tokenizer(self) -> None:
        if self.tokenizer is None:
            raise ValueError("this model was loaded without a tokenizer; use embed_ids instead of embed")

    def topk_tokens(self, ctx: Context) -> list[tuple[str, ...]]:
        """The decoded frozen top-k tokens of every item of a batched ctx: B tuples of k."""
        self._need_tokenizer()
        return [tuple(self.tokenizer.convert_ids_to_tokens(row)) for row in np.asarray(ctx["topk"]).tolist()]

    def detokenize(self, ids: Any, skip_special_tokens: bool = True) -> list[str]:
        """Token ids (B, n) back to B strings through the tokenizer."""
        self._need_tokenizer()
        return cast(list[str], self.tokenizer.batch_decode(np.asarray(ids).tolist(),
                                                          skip_special_tokens=skip_special_tokens))
