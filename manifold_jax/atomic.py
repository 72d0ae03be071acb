"""Atomic file writes: a reader (or a process killed mid-write) never sees a half-written file.

Every file goes to a temporary sibling first (same directory, so the rename stays on one
file system), is flushed to disk (``fsync``), renamed over its final name (``os.replace``,
atomic on POSIX and Windows) and the directory entry is flushed too. A temporary file is
named ``.<stem>.tmp-<hex><suffix>``: it keeps its suffix (``np.savez`` and matplotlib pick
the format from it) and :func:`is_temporary` tells it from data, so a leftover of a killed
write is never read as data and :func:`remove_temporaries` cleans it up.

A leaf module (the standard library and numpy only), so that every writer can use it: the study
layer, the report, model and training checkpoints, the benchmarks.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

_TEMPORARY = re.compile(r"^\..+\.tmp-[0-9a-f]{12}(\.[^.]+)?$")


def temporary_sibling(path: Path) -> Path:
    """A fresh temporary name beside ``path`` with the same suffix."""
    return path.with_name(f".{path.stem}.tmp-{secrets.token_hex(6)}{path.suffix}")


def is_temporary(path: str | os.PathLike[str]) -> bool:
    """True for the temporary files :func:`atomic_path` writes (never for data)."""
    return bool(_TEMPORARY.match(Path(path).name))


def fsync_directory(directory: Path) -> None:
    """Flush a directory entry (a rename or a new file in it) to disk, where the OS allows."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened; its renames are durable anyway
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def commit(temporary: Path, path: Path) -> None:
    """Flush ``temporary`` to disk, rename it over ``path`` and flush the directory."""
    with open(temporary, "rb") as f:
        os.fsync(f.fileno())
    os.replace(temporary, path)
    fsync_directory(path.parent)


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` atomically.

    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    final = Path(path)
    temporary = temporary_sibling(final)
    try:
        yield temporary
        if not temporary.is_file():
            raise FileNotFoundError(f"{final}: nothing was written to the temporary file {temporary.name}")
        commit(temporary, final)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike[str], value: Any) -> None:
    """Write ``value`` as indented JSON to ``path`` atomically."""
    write_text(path, json.dumps(value, indent=2) + "\n")


def write_npz(path: str | os.PathLike[str], arrays: dict[str, Any]) -> None:
    """Write ``arrays`` as an uncompressed ``.npz`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        np.savez(tmp, **arrays)


def write_with(path: str | os.PathLike[str], writer: Callable[[Path], None]) -> None:
    """Call ``writer(temporary_path)`` and move the result over ``path`` atomically (figures)."""
    with atomic_path(path) as tmp:
        writer(tmp)


def remove_temporaries(directory: str | os.PathLike[str]) -> list[Path]:
    """Delete the leftovers of interrupted atomic writes under ``directory``; return them."""
    removed: list[Path] = []
    root = Path(directory)
    if not root.is_dir():
        return removed
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            if _TEMPORARY.match(name):
                target = Path(dirpath) / name
                target.unlink(missing_ok=True)
                removed.append(target)
    return removed
