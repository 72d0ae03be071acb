"""Orbax checkpoints of the engine state after each chunk, verified before and after they are restored.

A checkpoint is only handed to orbax for restoring when the digest of its files matches the
manifest (a truncated or bit-flipped checkpoint is never parsed), and the restored state must
have the content hash the manifest recorded.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from manifold_jax.explore import ExplorationState
from manifold_jax.study.manifest import contained, directory_digest, state_digest

KEEP = 2
"""Checkpoints kept per exploration (the newest ones)."""

UNFINISHED = re.compile(r"^\d+\.orbax-checkpoint-tmp")
"""What orbax names a checkpoint it is still writing (``<step>.orbax-checkpoint-tmp-<time>``)."""


def state_arrays(state: ExplorationState) -> dict[str, np.ndarray]:
    """The engine state as named host arrays (what a checkpoint and a chunk file hold)."""
    return {k: np.asarray(v) for k, v in dataclasses.asdict(state).items()}


def state_hash(state: ExplorationState) -> str:
    """Content hash of an engine state (see :func:`~manifold_jax.study.manifest.state_digest`)."""
    return state_digest(state_arrays(state))


def checkpoint_steps(directory: Path) -> list[int]:
    """Iterations of the finished checkpoints in ``directory`` (orbax names each by its step)."""
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.is_dir() and p.name.isdigit())


def remove_unfinished(directory: Path) -> list[Path]:
    """Delete what a killed save left in ``directory`` (orbax's temporary directories); return it.

    Every entry must stay inside ``directory`` (OutsideStudyError for a symbolic link that leads
    out), so that orbax, which deletes old checkpoints itself, only ever deletes the study's own;
    anything that is neither a checkpoint nor orbax's temporary is left alone.
    """
    if not directory.is_dir():
        return []
    entries = [contained(directory, p) for p in directory.iterdir()]
    leftovers = [p for p in entries if UNFINISHED.match(p.name)]
    for path in leftovers:
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    return leftovers


def delete_checkpoint(directory: Path, step: int) -> None:
    """Remove the checkpoint of iteration ``step`` (if any; never through a link out of ``directory``)."""
    target = contained(directory, directory / str(step))
    if target.is_dir():
        shutil.rmtree(target)


class Checkpoints:
    """The checkpoints of one exploration: save after a chunk, restore with verification."""

    def __init__(self, directory: Path) -> None:
        import orbax.checkpoint as ocp

        self.directory = directory.absolute()
        remove_unfinished(self.directory)  # refuses a link out of the study before orbax touches anything
        self._ocp = ocp
        several: dict[str, object] = {}
        if jax.process_count() > 1:  # only this process (process 0, study.distributed) writes the study
            self.directory.mkdir(parents=True, exist_ok=True)
            several = {"create": False, "multiprocessing_options": ocp.options.MultiprocessingOptions(
                primary_host=jax.process_index(), active_processes={jax.process_index()})}
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=KEEP, enable_async_checkpointing=False,
                                                 **several),
        )

    def save(self, state: ExplorationState) -> str:
        """Checkpoint ``state`` under its iteration (the oldest beyond KEEP are removed); its files' digest."""
        step = int(state.iteration)
        # host arrays: over several processes orbax refuses a process's own jax.Arrays
        self._manager.save(step, args=self._ocp.args.StandardSave(state_arrays(state)), force=True)
        self._manager.wait_until_finished()
        return directory_digest(self.directory / str(step))

    def steps(self) -> list[int]:
        return checkpoint_steps(self.directory)

    def restore(self, step: int, like: ExplorationState, files: str, state: str) -> ExplorationState | None:
        """The checkpoint of ``step`` if its files have the digest ``files`` and its state the hash ``state``."""
        if directory_digest(self.directory / str(step)) != files:
            return None
        abstract = {k: np.zeros(v.shape, v.dtype) for k, v in state_arrays(like).items()}
        try:
            restored = self._manager.restore(step, args=self._ocp.args.StandardRestore(abstract))
        except Exception:  # the files passed their digest; a failure here is orbax's own
            return None
        restored_state = ExplorationState(**{k: jnp.asarray(v) for k, v in restored.items()})
        return restored_state if state_hash(restored_state) == state else None

    def delete(self, step: int) -> None:
        """Remove the checkpoint of iteration ``step``."""
        contained(self.directory, self.directory / str(step))
        self._manager.delete(step)

    def close(self) -> None:
        self._manager.close()

