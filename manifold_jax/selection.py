"""Which tokens (positions of x) an exploration moves.

A selection is given by the user as a boolean mask over the n positions, a list of
indices, ``None`` for all positions, or (for a batch) one of those per item. Inside the
engine it becomes a rectangular index array (B, m) plus a validity mask, so that items
with different numbers of selected tokens can run under one ``vmap``: short rows are
padded with unselected positions of the same item, which are never moved.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

Select = Any
"""None | bool mask (n,) | indices (m,) | per-item masks (B, n) | per-item index lists."""


@dataclass(frozen=True)
class TokenSelection:
    """Selected positions per item: ``index`` (B, m) int32 distinct per row, ``valid`` (B, m)."""

    index: np.ndarray
    valid: np.ndarray
    n: int

    @property
    def mask(self) -> np.ndarray:
        """Boolean mask (B, n) of the selected positions."""
        out = np.zeros((self.index.shape[0], self.n), dtype=bool)
        rows = np.repeat(np.arange(self.index.shape[0]), self.index.shape[1])
        out[rows, self.index.ravel()] = self.valid.ravel()
        return out

    @property
    def counts(self) -> np.ndarray:
        """Number of selected positions per item (B,)."""
        return self.valid.sum(axis=1)


def _item_indices(item: Any, n: int, where: str) -> np.ndarray:
    """One item's selection (mask or indices) as sorted distinct indices in [0, n)."""
    arr = np.asarray(item)
    if arr.dtype == bool:
        if arr.shape != (n,):
            raise ValueError(f"select{where} is a boolean mask of shape {arr.shape}; expected ({n},)")
        idx = np.flatnonzero(arr)
    elif np.issubdtype(arr.dtype, np.integer) or arr.size == 0:
        if arr.ndim != 1:
            raise ValueError(f"select{where} must be a 1-D list of indices, got shape {arr.shape}")
        idx = arr.astype(np.int64)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            bad = idx[(idx < -n) | (idx >= n)][0]
            raise ValueError(f"select{where} holds index {int(bad)}, out of range for {n} positions")
        idx = np.where(idx < 0, idx + n, idx)
        if np.unique(idx).size != idx.size:
            raise ValueError(f"select{where} repeats an index: {sorted(idx.tolist())}")
    else:
        raise TypeError(f"select{where} must hold booleans or integers, got dtype {arr.dtype}")
    if idx.size == 0:
        raise ValueError(f"select{where} selects no position; select at least one token")
    return np.sort(idx)


def token_selection(select: Select, n: int, batch: int | None) -> TokenSelection:
    """Normalise a user selection for ``batch`` items (None: a single, unbatched item)."""
    size = 1 if batch is None else batch
    if select is None:
        items = [np.arange(n)] * size
    elif batch is None:
        items = [_item_indices(select, n, "")]
    else:
        rows = list(select) if _is_ragged(select) else np.asarray(select)
        if isinstance(rows, np.ndarray) and rows.ndim == 1:
            items = [_item_indices(rows, n, "")] * size
        elif isinstance(rows, list) or rows.ndim == 2:
            if len(rows) != size:
                raise ValueError(
                    f"select has {len(rows)} rows but x0 has a batch of {size}; "
                    "give one selection per item or one shared 1-D selection"
                )
            items = [_item_indices(r, n, f"[{b}]") for b, r in enumerate(rows)]
        else:
            raise ValueError(
                f"select must be 1-D (shared by the batch) or one selection per item, "
                f"got shape {rows.shape}"
            )
    m = max(len(i) for i in items)
    index = np.zeros((size, m), dtype=np.int32)
    valid = np.zeros((size, m), dtype=bool)
    for b, idx in enumerate(items):
        pad = np.setdiff1d(np.arange(n), idx)[: m - len(idx)]
        index[b] = np.concatenate([idx, pad])
        valid[b, : len(idx)] = True
    return TokenSelection(index=index, valid=valid, n=n)


def _is_ragged(select: Any) -> bool:
    """A sequence of per-item selections of different lengths (not a rectangular array)."""
    if isinstance(select, (np.ndarray, str)) or not isinstance(select, Sequence):
        return False
    shapes = {np.shape(s) for s in select}
    return len(shapes) > 1 and all(len(s) == 1 for s in shapes)
