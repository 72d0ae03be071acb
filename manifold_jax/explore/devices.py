"""A batch of explorations sharded over devices: a mesh over the batch axis.

The vmapped step is the same program on every item, so under ``jit`` it partitions over a
batch sharded on a one-axis mesh with nothing to communicate but the "every item has
stopped" test. The model's weights are replicated. A batch that does not divide by the
device count is padded with copies of item 0, whose results are dropped.

Several processes (one or more per host): call ``jax.distributed.initialize(...)`` in
every process first, then run the same ``explore`` call in every process (same arguments,
the whole batch in each) with ``devices=jax.devices()`` (or "all", or a ``Mesh`` over
them). The mesh spans every process's devices; each process computes the items on its own
devices (a contiguous block, :func:`process_items`). With ``gather=True`` (the default)
the results are gathered back to every process (``multihost_utils.process_allgather``);
with ``gather=False`` each process keeps its own block, and :func:`combine` joins the
blocks of every process, in process order, into the whole result.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

Devices = None | str | int | Mesh | Sequence[Any]
"""None (no sharding), "all" (jax.devices()), a device count, a list of devices or a Mesh."""


def _listed(devices: Devices, available: list[Any]) -> list[Any]:
    """The devices that ``devices`` names, in its order."""
    if isinstance(devices, Mesh):
        return list(devices.devices.flat)
    if isinstance(devices, str):
        if devices != "all":
            raise ValueError(f"devices={devices!r} is not supported; expected 'all', a count or a list of devices")
        return list(available)
    if isinstance(devices, (int, np.integer)) and not isinstance(devices, bool):
        if not 1 <= int(devices) <= len(available):
            raise ValueError(f"devices={devices}: between 1 and the {len(available)} available device(s)")
        return list(available[: int(devices)])
    chosen = list(cast(Sequence[Any], devices))
    if not chosen:
        raise ValueError("devices: give at least one device")
    return chosen


def resolve_devices(devices: Devices) -> list[Any] | None:
    """The devices a batch is sharded over, or None for the default single-device run."""
    if devices is None:
        return None
    chosen = _listed(devices, jax.devices())
    if len({d.id for d in chosen}) != len(chosen):
        raise ValueError("devices: a device is listed twice")
    if jax.process_count() > 1 and len(chosen) > 1:
        mine = [d.process_index == jax.process_index() for d in chosen]
        if not any(mine):
            raise ValueError(f"devices: none is a device of this process ({jax.process_index()})")
        # each process's devices must form one block so that its items are one contiguous range
        chosen = sorted(chosen, key=lambda d: (d.process_index, chosen.index(d)))
    return chosen if len(chosen) > 1 else None


def padded_size(batch: int, devices: list[Any] | None) -> int:
    """The batch rounded up to a whole number of items per device."""
    if devices is None:
        return batch
    return -(-batch // len(devices)) * len(devices)


def process_items(batch: int, devices: Devices) -> range:
    """The items of a batch of ``batch`` whose exploration this process computes (and keeps with
    ``gather=False``): all of them without a mesh, else those sharded onto this process's devices."""
    chosen = resolve_devices(devices)
    if chosen is None:
        return range(batch)
    per_device = padded_size(batch, chosen) // len(chosen)
    mine = [i for i, d in enumerate(chosen) if d.process_index == jax.process_index()]
    return range(min(batch, mine[0] * per_device), min(batch, (mine[-1] + 1) * per_device))


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
    """Put ``tree`` on the mesh: sharded over its leading batch axis, or replicated.

    Over several processes every process holds the whole value; each process builds the
    shards of its own devices from it (no transfer, and no equality check between processes,
    which ``device_put`` would make and which NaN entries fail).
    """
    if devices is None:
        return tree
    mesh = Mesh(np.asarray(devices), ("batch",))
    spec = PartitionSpec("batch") if batched else PartitionSpec()
    sharding = NamedSharding(mesh, spec)

    def put(a: Any) -> Any:
        if not hasattr(a, "shape") or (batched and not a.ndim):
            return a
        if sharding.is_fully_addressable:
            return jax.device_put(a, sharding)
        host = np.asarray(a)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(put, tree)


def to_host(tree: Any) -> Any:
    """Arrays as numpy, gathered from every process where they span several."""

    def gather(a: Any) -> Any:
        if isinstance(a, jax.Array) and not a.is_fully_addressable:
            from jax.experimental import multihost_utils

            return np.asarray(multihost_utils.process_allgather(a, tiled=True))
        return np.asarray(a)

    return jax.tree.map(gather, tree)


def local_items(tree: Any, devices: list[Any], batch: int, axis: int) -> Any:
    """This process's items (:func:`process_items`) along ``axis`` of every array with that axis,
    read from its own shards; arrays without the axis (scalars) from any local copy.

    Where the compiler laid an array out so that some device lacks its own items (the same
    answer in every process, from the global sharding), every process gathers it instead.
    """
    items = process_items(batch, devices)
    per_device = padded_size(batch, devices) // len(devices)
    picked = np.arange(items.start, items.stop)

    def owns(a: jax.Array) -> bool:
        index = a.sharding.devices_indices_map(a.shape)
        for position, device in enumerate(devices):
            lo, hi, _ = index[device][axis].indices(a.shape[axis])
            if lo > position * per_device or hi < (position + 1) * per_device:
                return False
        return True

    def take(a: Any) -> np.ndarray:
        if not isinstance(a, jax.Array) or a.is_fully_addressable:
            host = np.asarray(a)
            return host if host.ndim <= axis else np.take(host, picked, axis=axis)
        if a.ndim <= axis:
            return np.asarray(a.addressable_data(0))
        if not owns(a):
            return np.take(to_host(a), picked, axis=axis)
        out = np.empty((*a.shape[:axis], len(items), *a.shape[axis + 1:]), a.dtype)
        for shard in a.addressable_shards:
            lo, hi, _ = shard.index[axis].indices(a.shape[axis])
            overlap = range(max(lo, items.start), min(hi, items.stop))
            if len(overlap):
                source = [slice(None)] * a.ndim
                source[axis] = slice(overlap.start - lo, overlap.stop - lo)
                dest = [slice(None)] * a.ndim
                dest[axis] = slice(overlap.start - items.start, overlap.stop - items.start)
                out[tuple(dest)] = np.asarray(shard.data)[tuple(source)]
        return out

    return jax.tree.map(take, tree)


__all__ = ["Devices", "local_items", "pad_batch", "padded_size", "place", "process_items", "resolve_devices",
           "to_host"]
