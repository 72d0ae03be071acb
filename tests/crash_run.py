"""Run the ``manifold-jax`` command line and die like ``kill -9`` at a chosen write.

    python tests/crash_run.py WHAT N -- explore ...

WHAT is a glob on the written file's path inside the study (``simec/chunks/*``,
``inputs.npz``, ``report.md``), ``checkpoint``, or ``any`` (every file write and every
checkpoint, counted together: the N-th is a moment of the run). At the N-th matching write the process
leaves the file torn and exits at once with status 137 (``os._exit``: no cleanup, no
``finally``, no atexit), as a killed process would:

* a file: its temporary sibling is cut to half its size and never renamed;
* ``checkpoint``: orbax's checkpoint is written, then one of its data files is cut in
  half, and the process dies before the manifest records it.

The product code holds no hook for this: the script patches the atomic writer's
``commit`` and ``Checkpoints.save`` from outside.
"""

from __future__ import annotations

import fnmatch
import os
import sys
from pathlib import Path

KILLED = 137


def _die_torn(path: Path) -> None:
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    os._exit(KILLED)


def main(argv: list[str]) -> None:
    what, count, sep, *cli = argv
    assert sep == "--", "usage: crash_run.py WHAT N -- ARGS..."
    target, seen = int(count), 0

    from manifold_jax import atomic
    from manifold_jax.study.checkpoints import Checkpoints

    def tick() -> bool:
        nonlocal seen
        seen += 1
        return seen == target

    if what in ("checkpoint", "any"):
        save = Checkpoints.save

        def crashing_save(self: Checkpoints, state: object) -> str:
            digest = save(self, state)  # type: ignore[arg-type]
            if tick():
                step = self.directory / str(int(state.iteration))  # type: ignore[attr-defined]
                data = max((p for p in step.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
                _die_torn(data)
            return digest

        Checkpoints.save = crashing_save  # type: ignore[method-assign]
    if what != "checkpoint":
        commit = atomic.commit

        def crashing_commit(temporary: Path, path: Path) -> None:
            if (what == "any" or fnmatch.fnmatch(Path(path).as_posix(), f"*/{what}")) and tick():
                _die_torn(temporary)
            commit(temporary, path)

        atomic.commit = crashing_commit

    from manifold_jax.cli import main as cli_main

    cli_main(cli)


if __name__ == "__main__":
    main(sys.argv[1:])
