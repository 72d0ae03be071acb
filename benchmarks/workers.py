"""The processes behind ``benchmarks/bench.py``: model preparation, our engine, the baseline.

Every measurement runs in a fresh child process that imports only one side:
``ours`` imports JAX and manifold-jax (never torch), ``torch`` imports torch and
transformers (never JAX). That matters for the baseline: the reference loop calls
``gc.collect()`` every iteration, and its cost grows with the number of live Python
objects, so a baseline sharing a process with JAX and flax would be charged for them
(measured here: 0.16 s per collection with torch alone, 0.21 s with JAX loaded).

A *server* loads its model once, answers JSON commands on stdin (one per line) with one
JSON line each, and lets the parent interleave our repeats with the baseline's
(A B A B ...) so that load from other work on the machine hits both sides alike. The
protocol goes over a duplicate of the original stdout; the process's own fd 1 is
redirected to stderr so that library chatter cannot corrupt it.

A *memory worker* is a server driven by a fixed script: load, first call, reset the
peak-RSS counter, steady calls, report (see :func:`rss_report`).

The pieces live beside this module: ``specs`` (configurations, prepared inputs),
``measure`` (memory, timing), ``ours`` and ``theirs`` (the two sides), ``spectra`` and
``precision`` (the backend and float32/float64 tables). This module is the process glue.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.measure import peak_kib, reset_peak, rss_kib
from benchmarks.ours import Ours
from benchmarks.precision import precision
from benchmarks.specs import FULL_SPECS, QUICK_SPECS, SPECS, Spec, prepare
from benchmarks.spectra import spectrum_table
from benchmarks.theirs import Baseline


@contextmanager
def protocol_stream() -> Iterator[Any]:
    """A private duplicate of stdout for the protocol; fd 1 then points at stderr."""
    sys.stdout.flush()
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    try:
        yield proto
    finally:
        proto.close()


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.floating, np.integer, np.bool_)):
        return obj.item()
    return obj


def _make(impl: str, spec: Spec, workdir: Path, threads: int) -> Ours | Baseline:
    if impl == "ours":
        return Ours(spec, workdir)
    if impl == "torch":
        return Baseline(spec, workdir, threads)
    raise ValueError(f"unknown implementation {impl!r}")


def serve(impl: str, spec_name: str, workdir: str, threads: int) -> None:
    """Answer JSON commands {"cmd": method, **kwargs} on stdin until {"cmd": "quit"}."""
    with protocol_stream() as proto:
        def send(msg: dict[str, Any]) -> None:
            proto.write(json.dumps(_jsonable(msg)) + "\n")
            proto.flush()

        try:
            rss0 = rss_kib()
            case = _make(impl, SPECS[spec_name], Path(workdir), threads)
            gc.collect()
            send({"ready": True, "rss_loaded_kib": rss_kib(), "rss_imports_kib": rss0, **case.devices()})
        except Exception:
            send({"error": traceback.format_exc()})
            return
        for line in sys.stdin:
            cmd = json.loads(line)
            name = cmd.pop("cmd")
            if name == "quit":
                break
            try:
                send(getattr(case, name)(**cmd))
            except Exception:
                send({"error": traceback.format_exc()})


def rss_report(impl: str, spec_name: str, workdir: str, threads: int) -> dict[str, Any]:
    """Peak memory of one implementation on one spec, in this (fresh) process (KiB).

    loaded: RSS after imports, model load and inputs; the kernel's peak counter is reset
    there (so transient peaks of loading do not count). first: peak RSS during the first
    call (ours: tracing, XLA compilation and the run; baseline: one iteration) minus
    loaded; retained: RSS after it minus loaded (compiled program, allocator caches).
    Then the counter is reset again and the same call repeated: steady = its peak minus
    loaded; working = its peak minus the RSS just before it (what the run itself adds).
    peak = max(first, steady): the figure the tables compare. Where the counter cannot
    be reset (not Linux), first and steady are lifetime peaks minus loaded.
    """
    spec = SPECS[spec_name]
    rss_imports = rss_kib()
    case = _make(impl, spec, Path(workdir), threads)
    gc.collect()
    loaded = rss_kib()
    resettable = reset_peak()
    if impl == "ours":
        assert isinstance(case, Ours)
        # two chunks: the working set of a step does not depend on how many are taken
        again: Callable[[], Any] = lambda: case.run(chunks=2)  # noqa: E731
        case.first(chunks=2)
    else:
        assert isinstance(case, Baseline)
        again = lambda: case.run(steps=1)  # noqa: E731
        case.run(steps=1)
    first = peak_kib() - loaded
    retained = rss_kib() - loaded
    resettable = reset_peak() and resettable
    before = rss_kib()
    again()
    steady = peak_kib() - loaded
    working = peak_kib() - before
    out = {"impl": impl, "spec": spec_name, "rss_imports_kib": rss_imports, "rss_loaded_kib": loaded,
           "first_kib": first, "retained_kib": retained, "steady_kib": steady, "working_kib": working,
           "peak_kib": max(first, steady), "peak_reset": resettable, **case.devices()}
    if impl == "ours":
        out["program"] = case.program()
    return out


# ------------------------------------------------------------------------ entry point


def main(argv: list[str]) -> None:
    """``worker <serve|memory|prepare|spectrum|precision> ...`` (called by bench.py)."""
    import argparse

    p = argparse.ArgumentParser(prog="bench.py worker", description="internal: one measurement process")
    p.add_argument("what", choices=("serve", "memory", "prepare", "spectrum", "precision"))
    p.add_argument("--impl", choices=("ours", "torch"))
    p.add_argument("--spec", default="")
    p.add_argument("--workdir", default="")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--ds", default="48,384,768")
    p.add_argument("--ks", default="3,10,50")
    p.add_argument("--n", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--budget", type=float, default=20.0)
    a = p.parse_args(argv)
    if a.what == "serve":
        serve(a.impl, a.spec, a.workdir, a.threads)
        return
    with protocol_stream() as proto:
        try:
            if a.what == "memory":
                out: Any = rss_report(a.impl, a.spec, a.workdir, a.threads)
            elif a.what == "prepare":
                out = {"dirs": [str(prepare(SPECS[n], Path(a.workdir))) for n in a.spec.split(",")]}
            elif a.what == "spectrum":
                ints = lambda s: [int(v) for v in s.split(",") if v]  # noqa: E731
                out = spectrum_table(ints(a.ds), ints(a.ks), a.n, a.repeats, a.budget)
            else:
                out = precision(a.spec, a.workdir, a.steps)
            proto.write(json.dumps(_jsonable({"result": out})) + "\n")
        except Exception:
            proto.write(json.dumps({"error": traceback.format_exc()}) + "\n")


__all__ = ["FULL_SPECS", "QUICK_SPECS", "SPECS", "Baseline", "Ours", "Spec", "precision", "prepare", "spectrum_table"]


if __name__ == "__main__":
    main(sys.argv[1:])
