"""Metrics on the output space, as factors L with G = L L^T (k x r), and as products G w.

The engine pulls G back through the Jacobian J (k outputs): g = J^T G J = (L^T J)^T (L^T J),
so only the small factor L is ever needed. Each metric is a function of the output y (k,)
so that metrics that depend on the prediction (softmax, Fisher-Rao) follow the trajectory.

With a full vocabulary (k = 50,257) even L (k x k) is out of reach (10 GB in float32):
:func:`metric_product` gives G w in O(k) for the built-in metrics without forming L or G,
and falls back to L (L^T w) for a custom factor; :func:`metric_rank` gives L's column count
from its abstract shape, without computing it.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

OutputMetric = Callable[[jax.Array], jax.Array]
"""y (k,) -> L (k, r) with the output metric G = L @ L.T."""


def euclidean(y: jax.Array) -> jax.Array:
    """Identity metric on the outputs (logits): the reference's choice. L = I (k, k)."""
    return jnp.eye(y.shape[-1], dtype=y.dtype)


def softmax_euclidean(y: jax.Array) -> jax.Array:
    """Euclidean metric on the softmax probabilities p, pulled back to the logits.

    G = S^T S with S = dp/dy = diag(p) - p p^T, which is symmetric, so L = S (k, k).
    """
    p = jax.nn.softmax(y)
    return jnp.diag(p) - jnp.outer(p, p)


def fisher_rao(y: jax.Array) -> jax.Array:
    """Fisher information of the categorical distribution softmax(y) on the logits.

    G = diag(p) - p p^T = M diag(p) M^T with M = I - p 1^T, so L = diag(sqrt p) - p sqrt(p)^T.
    """
    p = jax.nn.softmax(y)
    sp = jnp.sqrt(p)
    return jnp.diag(sp) - jnp.outer(p, sp)


def _euclidean_product(_y: jax.Array, w: jax.Array) -> jax.Array:
    return w


def _softmax_jacobian_product(p: jax.Array, w: jax.Array) -> jax.Array:
    """S w with S = diag(p) - p p^T (symmetric): p * w - p (p . w), O(k)."""
    return p * w - p * jnp.dot(p, w)


def _softmax_product(y: jax.Array, w: jax.Array) -> jax.Array:
    p = jax.nn.softmax(y)
    return _softmax_jacobian_product(p, _softmax_jacobian_product(p, w))


def _fisher_rao_product(y: jax.Array, w: jax.Array) -> jax.Array:
    return _softmax_jacobian_product(jax.nn.softmax(y), w)


_PRODUCTS: dict[OutputMetric, Callable[[jax.Array, jax.Array], jax.Array]] = {
    euclidean: _euclidean_product,
    softmax_euclidean: _softmax_product,
    fisher_rao: _fisher_rao_product,
}
"""Matrix-free G w of the built-in metrics, keyed by the factor function itself."""


def metric_product(metric: OutputMetric, y: jax.Array, w: jax.Array) -> jax.Array:
    """G(y) w for w (k,): O(k) and never forming L for the built-in metrics, L (L^T w) otherwise."""
    product = _PRODUCTS.get(metric)
    if product is not None:
        return product(y, w)
    factor = metric(y)
    return factor @ (factor.T @ w)


def metric_rank(metric: OutputMetric, y: jax.Array) -> int:
    """r, the number of columns of the factor L (k, r) at y: from its abstract shape, nothing computed."""
    shape = jax.eval_shape(metric, y).shape
    if len(shape) != 2 or shape[0] != y.shape[-1]:
        raise ValueError(f"an output metric must return a factor L of shape ({y.shape[-1]}, r), got {shape}")
    return int(shape[1])


OUTPUT_METRICS: dict[str, OutputMetric] = {
    "euclidean": euclidean,
    "softmax": softmax_euclidean,
    "fisher_rao": fisher_rao,
}


def resolve_output_metric(metric: str | OutputMetric) -> OutputMetric:
    """Turn a metric name or a callable y -> L into the callable."""
    if callable(metric):
        return metric
    if metric not in OUTPUT_METRICS:
        choices = ", ".join(repr(m) for m in OUTPUT_METRICS)
        raise ValueError(
            f"output_metric={metric!r} is not supported; expected one of {choices} "
            "or a callable y -> L with G = L @ L.T"
        )
    return OUTPUT_METRICS[metric]


def metric_tensor(metric: str | OutputMetric, y: jax.Array) -> jax.Array:
    """The dense output metric G = L L^T (k, k) at y, for validation."""
    factor = resolve_output_metric(metric)(y)
    return factor @ factor.T
