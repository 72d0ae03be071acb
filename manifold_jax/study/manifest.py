"""The study's manifest: a checksum per file and a content hash per saved engine state.

``manifest.json`` (written atomically after every file it records) maps each file's path
relative to the study to the SHA-256 of its bytes, and each exploration's checkpoints (by
iteration) to the SHA-256 of their files and of the engine state they hold. Reading a file
back compares its checksum: a file the manifest lists that is missing or differs is damaged.
A file it does not list was written just before a crash (it is whole: every write is atomic)
or by an older version; its contents are then checked by loading it. The manifest checksums
itself too (``self``: the SHA-256 of its canonical content): a damaged manifest is detected,
set aside, and rebuilt by a resume from the files that verify by loading.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from manifold_jax import atomic
from manifold_jax.study.errors import OutsideStudyError

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1

Check = Literal["ok", "unrecorded", "missing", "mismatch"]


def study_root(path: str | os.PathLike[str]) -> Path:
    """A study directory as one absolute path, from whatever working directory it was named in.

    Every entry point (the study API, the report, the CLI) passes user paths through this once;
    inside a study every path is this root joined with a path relative to it. Symbolic links
    are not resolved here (a study's own files are checked for them where they are written).
    """
    text = os.fspath(path)
    if not str(text).strip():
        raise ValueError("a study directory must be a non-empty path")
    return Path(os.path.abspath(text))


def contained(root: str | os.PathLike[str], path: str | os.PathLike[str]) -> Path:
    """``path`` itself when, symbolic links resolved, it stays inside ``root``; else OutsideStudyError.

    Every write and every deletion inside a study passes through this first: a folder of a
    study replaced by a link to elsewhere never receives the study's files nor loses its own.
    """
    base = Path(root).resolve()
    target = Path(path).resolve()
    if target != base and base not in target.parents:
        raise OutsideStudyError(Path(path), Path(root), target)
    return Path(path)


def file_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def directory_digest(directory: str | os.PathLike[str]) -> str:
    """SHA-256 over every file under ``directory`` (relative names and bytes, in name order)."""
    root = Path(directory)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(root).as_posix()}:{file_digest(path)};".encode())
    return digest.hexdigest()


def state_digest(arrays: Mapping[str, Any]) -> str:
    """SHA-256 of named arrays (name, dtype, shape and bytes, in name order): an engine state's identity."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        arr = np.ascontiguousarray(np.asarray(arrays[name]))
        digest.update(f"{name}:{arr.dtype.str}:{arr.shape};".encode())
        digest.update(arr.tobytes())
    return digest.hexdigest()


def _self_digest(data: Mapping[str, Any]) -> str:
    """SHA-256 of a manifest's content without its own digest (canonical JSON: sorted keys, no spaces)."""
    content = {k: v for k, v in data.items() if k != "self"}
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass
class Manifest:
    """The checksums of one study directory (``root``); ``found`` says whether the file existed."""

    root: Path
    files: dict[str, str] = field(default_factory=dict)
    checkpoints: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)
    found: bool = False
    damaged: bool = False
    problem: str = ""

    @classmethod
    def load(cls, root: str | os.PathLike[str]) -> Manifest:
        """The manifest of ``root`` (empty when there is none; ``damaged`` when it cannot be read)."""
        root = study_root(root)
        path = root / MANIFEST
        if not path.is_file():
            return cls(root)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            files = {str(k): str(v) for k, v in data["files"].items()}
            checkpoints = {str(a): {str(s): {"files": str(h["files"]), "state": str(h["state"])} for s, h in v.items()}
                           for a, v in data["checkpoints"].items()}
            recorded = data.get("self")
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
            return cls(root, found=True, damaged=True, problem=f"{MANIFEST} cannot be read")
        if recorded is not None and recorded != _self_digest(data):
            return cls(root, found=True, damaged=True,
                       problem=f"{MANIFEST} fails its own checksum (it changed after it was written)")
        return cls(root, files, checkpoints, found=True)

    def save(self) -> None:
        """Write the manifest atomically, with the checksum of its own content."""
        data: dict[str, Any] = {"format": MANIFEST_FORMAT, "files": dict(sorted(self.files.items())),
                                "checkpoints": self.checkpoints}
        data["self"] = _self_digest(data)
        atomic.write_json(self.root / MANIFEST, data)
        self.found = True

    def __post_init__(self) -> None:
        self.root = study_root(self.root)

    def relative(self, path: str | os.PathLike[str]) -> str:
        """``path`` relative to the study: an absolute path inside it, or a path already relative to it."""
        p = Path(path)
        if not p.is_absolute():
            return p.as_posix()
        try:
            return p.relative_to(self.root).as_posix()
        except ValueError:
            raise ValueError(f"{p} is not inside the study {self.root}") from None

    # ------------------------------------------------------------------ files

    def record(self, path: str | os.PathLike[str], *, save: bool = True) -> None:
        """Record the checksum of the file at ``path`` (inside the study)."""
        full = self.root / self.relative(path)
        self.files[self.relative(path)] = file_digest(full)
        if save:
            self.save()

    def forget(self, *paths: str | os.PathLike[str], save: bool = True) -> None:
        """Drop files from the manifest (they were removed or are to be rebuilt)."""
        for path in paths:
            self.files.pop(self.relative(path), None)
        if save:
            self.save()

    def check(self, path: str | os.PathLike[str]) -> Check:
        """"ok", "unrecorded" (present, not listed), "missing" (listed, absent) or "mismatch"."""
        rel = self.relative(path)
        full = self.root / rel
        expected = self.files.get(rel)
        if expected is None:
            return "unrecorded" if full.is_file() else "missing"
        if not full.is_file():
            return "missing"
        return "ok" if file_digest(full) == expected else "mismatch"

    # ------------------------------------------------------------------ checkpoints

    def record_checkpoint(self, algorithm: str, iteration: int, files: str, state: str, *, save: bool = True) -> None:
        """Record a checkpoint's files digest and its state's content hash."""
        self.checkpoints.setdefault(algorithm, {})[str(iteration)] = {"files": files, "state": state}
        if save:
            self.save()

    def checkpoint(self, algorithm: str, iteration: int) -> dict[str, str] | None:
        """The recorded digests ("files", "state") of a checkpoint, or None."""
        return self.checkpoints.get(algorithm, {}).get(str(iteration))

    def forget_checkpoints(self, algorithm: str, keep: set[int] | None = None, *, save: bool = True) -> None:
        """Drop the records of ``algorithm``'s checkpoints except those at iterations ``keep``."""
        records = self.checkpoints.get(algorithm, {})
        for step in list(records):
            if keep is None or int(step) not in keep:
                del records[step]
        if save:
            self.save()
