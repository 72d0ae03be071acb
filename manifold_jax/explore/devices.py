"""A batch of explorations sharded over devices: a mesh over the batch axis.

The vmapped step is the same program on every item, so under ``jit`` it partitions over a
batch sharded on a one-axis mesh with nothing to communicate but the "every item has
stopped" test. The model's weights are replicated. A batch that does not divide by the
device count is padded with copies of item 0, whose results are dropped.

Several hosts: call ``jax.distributed.initialize()`` in every process first (same
arguments, same inputs on every host), then pass ``devices="all"``: the mesh spans
``jax.devices()``, every process drives its local devices, and the results are gathered
back to every host (``multihost_utils.process_allgather``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

Devices = None | str | int | Sequence[Any]
"""None (no sharding), "all" (jax.devices()), a device count, or a list of devices."""


def resolve_devices(devices: Devices) -> list[Any] | None:
    """The devices a batch is sharded over, or None for the default single-device run."""
    if devices is None:
        return None
    available = jax.devices()
    if isinstance(devices, str):
        if devices != "all":
            raise ValueError(f"devices={devices!r} is not supported; expected 'all', a count or a list of devices")
        chosen = list(available)
    elif isinstance(devices, (int, np.integer)) and not isinstance(devices, bool):
        if not 1 <= int(devices) <= len(available):
            raise ValueError(f"devices={devices}: between 1 and the {len(available)} available device(s)")
        chosen = list(available[: int(devices)])
    else:
        chosen = list(cast(Sequence[Any], devices))
        if not chosen:
            raise ValueError("devices: give at least one device")
    return chosen if len(chosen) > 1 else None


def padded_size(batch: int, devices: list[Any] | None) -> int:
    """The batch rounded up to a whole number of items per device."""
    if devices is None:
        return batch
    return -(-batch // len(devices)) * len(devices)


def pad_batch(tree: Any, size: int, shared: Any = None) -> Any:
    """Every leaf with a batch axis padded to ``size`` items with copies of item 0 (``shared``
    leaves, by identity, are left alone)."""

    def pad(a: Any) -> Any:
        if a is shared or not hasattr(a, "shape") or a.ndim == 0 or a.shape[0] == size:
            return a
        extra = jnp.repeat(jnp.asarray(a)[:1], size - a.shape[0], axis=0)
        return jnp.concatenate([jnp.asarray(a), extra])

    return jax.tree.map(pad, tree)


def place(tree: Any, devices: list[Any] | None, batched: bool) -> Any:
    """Put ``tree`` on the mesh: sharded over its leading batch axis, or replicated."""
    if devices is None:
        return tree
    mesh = Mesh(np.asarray(devices), ("batch",))
    spec = PartitionSpec("batch") if batched else PartitionSpec()
    sharding = NamedSharding(mesh, spec)
    return jax.tree.map(lambda a: jax.device_put(a, sharding) if hasattr(a, "shape") and (not batched or a.ndim) else a,
                        tree)


def to_host(tree: Any) -> Any:
    """Arrays as numpy, gathered from every process where they span several hosts."""

    def gather(a: Any) -> Any:
        if isinstance(a, jax.Array) and not a.is_fully_addressable:
            from jax.experimental import multihost_utils

            return np.asarray(multihost_utils.process_allgather(a, tiled=True))
        return np.asarray(a)

    return jax.tree.map(gather, tree)


__all__ = ["Devices", "pad_batch", "padded_size", "place", "resolve_devices", "to_host"]
