"""Studies over several processes (one or more per host) on JAX's distributed runtime.

Every process runs the same command. Process 0 runs the study as one process does: it
validates it, reads and writes the one study directory, checkpoints, resumes, reports.
Before each exploration it sends the others what to explore (the spec, the run, the start
state and the arrays the model is evaluated with), then every process explores its share of
the batch on a mesh over every process's devices and the results are gathered to process
0, which writes them. The other processes write nothing and need no study directory (nor
the input files: the inputs come from process 0); they only load the model. When process
0 is done (or fails) it says so and the others end, with its outcome.

A killed process ends the run in every process (JAX's coordination service reports the
loss); the study directory holds process 0's checkpoints, and running every process again
with ``--resume`` continues from them.
"""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Callable
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np

from manifold_jax.explore import ExplorationState, Trajectory, explore
from manifold_jax.study.inputs import Prepared, load_model
from manifold_jax.study.spec import COUNTERFACTUAL, StudySpec

OnChunk = Callable[[ExplorationState, Trajectory], None]


class LeaderFailedError(RuntimeError):
    """Process 0 ended the study with an error (it reported it); the other processes stop too."""


def initialize(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None,
               *, cluster: bool = False) -> bool:
    """Join JAX's distributed runtime before any computation; True when this run spans processes.

    With none of the three given and not ``cluster``, nothing happens (one process). Missing
    values are left to JAX, which reads ``JAX_COORDINATOR_ADDRESS`` and detects SLURM, Open
    MPI and Kubernetes jobs. Collectives between CPU processes go through gloo.
    """
    if coordinator is None and num_processes is None and process_id is None and not cluster:
        return False
    if num_processes is not None and num_processes < 1:
        raise ValueError(f"--num-processes {num_processes}: expected a positive count")
    if process_id is not None and num_processes is not None and not 0 <= process_id < num_processes:
        raise ValueError(f"--process-id {process_id}: expected 0 to {num_processes - 1} (--num-processes)")
    if coordinator is not None and not _host_port(coordinator):
        raise ValueError(f"--coordinator {coordinator!r}: expected HOST:PORT, e.g. 10.0.0.1:1234")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if not jax.distributed.is_initialized():
        try:
            jax.distributed.initialize(coordinator, num_processes, process_id)
        except ValueError as exc:  # what neither the flags nor JAX's detection gave
            raise ValueError(f"the distributed runtime: {str(exc).strip()} (give --coordinator, --num-processes "
                             "and --process-id, or run inside a SLURM, Open MPI or Kubernetes job)") from None
    return jax.process_count() > 1


def _host_port(text: str) -> bool:
    host, sep, port = text.rpartition(":")
    return bool(sep and host and port.isdigit() and 0 < int(port) < 65536)


def leads() -> bool:
    """True in the process that runs the study and writes its directory (process 0)."""
    return jax.process_index() == 0


# --------------------------------------------------------------------------- messages from process 0


def _broadcast(payload: bytes | None) -> bytes:
    """``payload`` of process 0 in every process (the others pass None)."""
    from jax.experimental import multihost_utils

    size = np.asarray([len(payload) if payload is not None else 0], np.int32)
    size = multihost_utils.broadcast_one_to_all(size)
    n = int(np.asarray(size)[0])
    buffer = np.frombuffer(payload, np.uint8) if payload is not None else np.zeros(n, np.uint8)
    return bytes(np.asarray(multihost_utils.broadcast_one_to_all(buffer), np.uint8).tobytes()) if n else b""


def _encode(header: dict[str, Any], arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    named: dict[str, Any] = {"header": np.frombuffer(json.dumps(header).encode("utf-8"), np.uint8), **arrays}
    np.savez(buffer, **named)
    return buffer.getvalue()


def _decode(payload: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    with np.load(io.BytesIO(payload), allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    return json.loads(arrays.pop("header").tobytes().decode("utf-8")), arrays


_EXPLORING = {"now": False}
"""True while process 0 is inside an exploration the others take part in."""


def finish(ok: bool) -> None:
    """Process 0: tell the others the study is done (``ok``) or failed, so that they end.

    A failure inside an exploration sends nothing: the others are inside it too, waiting for
    its next collective, and end with an error once this process has exited.
    """
    if jax.process_count() > 1 and not _EXPLORING["now"]:
        _broadcast(_encode({"kind": "done" if ok else "failed"}, {}))


# --------------------------------------------------------------------------- one exploration of a study


def study_explore(prepared: Prepared, run: str, start: Any, *, key: Any, steps: int, progress: bool,
                  on_chunk: OnChunk | None, on_compiled: Callable[[], None] | None = None) -> Trajectory:
    """One run of a study from ``start`` (x0 or a resumed state) for ``steps``: the library's
    ``explore`` (its progress bar named after the run), over every process's devices when the study
    spans several processes."""
    if jax.process_count() == 1:
        return _explore(prepared, run, start, key, steps, progress, on_chunk, devices=None, on_compiled=on_compiled)
    arrays = {f"ctx_{k}": np.asarray(v) for k, v in prepared.ctx.items()}
    arrays["select"] = np.asarray(prepared.select)
    if prepared.box is not None:
        arrays["lo"], arrays["hi"] = (np.asarray(b) for b in prepared.box)
    if prepared.targets is not None:
        arrays["target"] = np.asarray(prepared.targets)
    if isinstance(start, ExplorationState):
        arrays.update({f"state_{f.name}": np.asarray(getattr(start, f.name)) for f in dataclasses.fields(start)})
    else:
        arrays["x0"] = np.asarray(start)
    if key is not None:
        arrays["key"] = np.asarray(key)
    header = {"kind": "explore", "spec": prepared.spec.to_json(), "run": run, "steps": steps}
    _broadcast(_encode(header, arrays))
    _EXPLORING["now"] = True
    trajectory = _explore(prepared, run, start, key, steps, progress, on_chunk, devices=jax.devices(),
                          on_compiled=on_compiled)
    _EXPLORING["now"] = False  # left True by an error: the others are still inside the exploration
    return trajectory


def _explore(prepared: Prepared, run: str, start: Any, key: Any, steps: int, progress: bool,
             on_chunk: OnChunk | None, devices: Any, on_compiled: Callable[[], None] | None = None) -> Trajectory:
    spec = prepared.spec
    return explore(
        prepared.model.head, start, algorithm=cast(Any, spec.algorithm_of(run)), steps=steps, key=key,
        args=(prepared.ctx,), select=prepared.select, bounds=prepared.box, progress=progress, on_chunk=on_chunk,
        target=prepared.targets if run == COUNTERFACTUAL else None, devices=devices, label=run,
        on_compiled=on_compiled, **spec.run_keywords(run),
    )


def follow() -> None:
    """Every process but 0: join each exploration process 0 announces until it is done.

    Raises LeaderFailedError when process 0 failed.
    """
    models: dict[tuple[str, str, str], Any] = {}
    while True:
        header, arrays = _decode(_broadcast(None))
        if header["kind"] == "done":
            return
        if header["kind"] == "failed":
            raise LeaderFailedError("process 0 stopped the study with an error (see its output)")
        spec = StudySpec.from_json(header["spec"])
        ident = (spec.model, spec.task, spec.space)
        if ident not in models:
            models[ident] = load_model(spec)
        prepared = _prepared(models[ident], spec, arrays)
        start: Any
        if "x0" in arrays:
            start = jnp.asarray(arrays["x0"])
        else:
            start = ExplorationState(**{k[6:]: jnp.asarray(v) for k, v in arrays.items() if k.startswith("state_")})
        key = jnp.asarray(arrays["key"]) if "key" in arrays else None
        _explore(prepared, header["run"], start, key, int(header["steps"]), False, None, devices=jax.devices())


def _prepared(model: Any, spec: StudySpec, arrays: dict[str, np.ndarray]) -> Prepared:
    """What a follower explores with: process 0's arrays (the inputs need not exist here)."""
    ctx = {k[4:]: jnp.asarray(v) for k, v in arrays.items() if k.startswith("ctx_")}
    box = (arrays["lo"], arrays["hi"]) if "lo" in arrays else None
    kept = {k: v for k, v in arrays.items() if k in ("target", "select")}
    x0 = jnp.asarray(arrays["x0"]) if "x0" in arrays else jnp.asarray(arrays["state_x"])
    return Prepared(model, spec, x0, ctx, arrays["select"], box, kept)


__all__ = ["LeaderFailedError", "finish", "follow", "initialize", "leads", "study_explore"]
