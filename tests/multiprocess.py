"""Launch N processes of one program on the loopback address, as JAX's multi-process tests do.

A free port for the coordinator, ``JAX_PLATFORMS=cpu`` and a forced count of CPU devices per
process, collectives through gloo, one log file per process and one timeout for all.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port nobody listens on at the moment (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Finished:
    """What one process left: its exit status and its log (stdout and stderr together)."""

    process: int
    returncode: int | None
    log: str


def launch(command: list[str], processes: int, *, cwd: Path, logs: Path, devices_per_process: int = 1,
           timeout: float = 300, env_extra: dict[str, str] | None = None,
           process_args: bool = False) -> list[Finished]:
    """Run ``command`` in ``processes`` processes (process i gets MJ_PROCESS_ID=i, MJ_PROCESSES,
    MJ_COORDINATOR in its environment, or, with ``process_args``, the CLI flags
    ``--coordinator --num-processes --process-id`` appended); wait for all, killing every one
    still running after ``timeout`` seconds (its returncode is then None)."""
    coordinator = f"127.0.0.1:{free_port()}"
    logs.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT),
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices_per_process}",
               MJ_COORDINATOR=coordinator, MJ_PROCESSES=str(processes), **(env_extra or {}))
    running = []
    for i in range(processes):
        args = [*command, "--coordinator", coordinator, "--num-processes", str(processes),
                "--process-id", str(i)] if process_args else command
        log = open(logs / f"process-{i}.log", "w")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(args, cwd=cwd, env={**env, "MJ_PROCESS_ID": str(i)}, stdout=log,
                                stderr=subprocess.STDOUT)
        running.append((proc, log))
    deadline = time.monotonic() + timeout
    codes: list[int | None] = []
    for proc, _log in running:
        try:
            codes.append(proc.wait(timeout=max(0.1, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            codes.append(None)
    for (proc, log), code in zip(running, codes, strict=True):
        if code is None:
            proc.kill()
            proc.wait()
        log.close()
    return [Finished(i, code, (logs / f"process-{i}.log").read_text()) for i, code in enumerate(codes)]


def failures(finished: list[Finished]) -> str:
    """The tail of every log of a process that did not exit 0 (for an assertion message)."""
    return "\n".join(f"--- process {f.process} (exit {f.returncode}):\n{f.log[-2500:]}"
                     for f in finished if f.returncode != 0)
