"""Metrics on the output space, as factors L with G = L L^T (k x r).

The engine pulls G back through the Jacobian J (k outputs): g = J^T G J = (L^T J)^T (L^T J),
so only the small factor L is ever needed. Each metric is a function of the output y (k,)
so that metrics that depend on the prediction (softmax, Fisher-Rao) follow the trajectory.
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
