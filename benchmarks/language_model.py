"""SiMEC on a causal LM's full next-token distribution: matrix-free against the dense Jacobian.

Every measurement runs in a fresh process (``_worker``), so that peak memory belongs to that one
configuration: the peak RSS of the timed call above the RSS before it (the peak is reset after
the compiling call through /proc/self/clear_refs, so the compiler's own memory is not counted;
the model, its inputs and the compiled program are already resident). Random
GPT-2 weights of the given shape are built in the worker by flax's initialiser (no torch, no
download); the head is the next-token logits over the whole vocabulary, the metric Fisher-Rao,
one joint block over the prompt's tokens. Only public names are used.

* ``memory``  the V sweep on a smaller GPT-2 (``--sweep-shape``): peak memory of one SiMEC
              iteration, dense ("gram": the k = V row Jacobian, then its Gram matrix) against
              matrix-free ("matfree": jvp + vjp products, LOBPCG, never J nor G); plus the
              dense path's compiled temporaries from XLA's memory analysis (no run needed).
* ``time``    seconds per iteration at GPT-2-small shape (V 50,257, d 768, 12 layers) at 16 and
              64 prompt tokens, matrix-free; the dense path's size at that shape from XLA's memory
              analysis of its compiled step (it does not fit: the Jacobian alone is V n d floats).
* ``agreement`` top eigenvalues, matrix-free against dense, where both run (the V sweep).
* ``all``     the three, then ``<out>/language_model.md``.

``--quick`` runs a 2-layer hidden-32 model at V 200 (sweep) and 400 (time), 4 tokens, one step:
every table, in a couple of minutes (tests/test_language_model_benchmark.py). Full figures::

    python benchmarks/language_model.py all --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RANK = 8
"""Top eigenpairs of the matrix-free solver per iteration."""
EIG_RTOL = 1e-4
"""Agreement of the top eigenvalues relative to the largest: both float32; the dense Gram matrix of
k = V rows carries ~k eps lambda_max at worst (measured ~1e-6), LOBPCG converges to eps-level residuals."""

SMALL = {"n_embd": 768, "n_layer": 12, "n_head": 12, "vocab_size": 50257, "n_positions": 1024}
SWEEP = {"n_embd": 128, "n_layer": 2, "n_head": 4, "n_positions": 128}
QUICK = {"n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 64}


# ------------------------------------------------------------------------------ worker


def _build(shape: dict[str, int], tokens: int, seed: int = 0) -> tuple[Any, Any, Any]:
    import jax
    import jax.numpy as jnp
    import numpy as np

    import manifold_jax.models as mm

    config = mm.GPT2Config(
        vocab_size=shape["vocab_size"], n_positions=shape["n_positions"], hidden_size=shape["n_embd"],
        num_layers=shape["n_layer"], num_heads=shape["n_head"], intermediate_size=4 * shape["n_embd"],
    )
    params = mm.GPT2Module(config).init(
        jax.random.key(seed), jnp.zeros((1, 2), jnp.int32), method=mm.GPT2Module.init_all
    )["params"]
    model = mm.GPT2(params, config)
    ids = np.random.default_rng(seed).integers(0, config.vocab_size, size=(1, tokens))
    x0, ctx = model.embed_ids(ids)
    return model, x0[0], {k: v[0] for k, v in ctx.items()}


def _status_mb(field: str) -> float:
    """A memory line of /proc/self/status in MB (VmRSS: now, VmHWM: the peak since the last reset)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> None:
    """Reset the peak RSS to the current RSS (Linux clear_refs "5"), so that compiling is not counted."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def worker(job: dict[str, Any]) -> dict[str, Any]:
    """One measurement: ``kind`` "iterate" (time and peak memory of SiMEC iterations), "spectrum"
    (top eigenvalues of one backend) or "analyse" (XLA's memory analysis of the dense step)."""
    import jax
    import numpy as np

    import manifold_jax as mj

    model, x0, ctx = _build(job["shape"], job["tokens"])
    jax.block_until_ready(x0)
    method = job["method"]
    extra = {"rank": RANK, "key": jax.random.key(1)} if method == "matfree" else {}
    out: dict[str, Any] = dict(job)
    if job["kind"] == "spectrum":
        def spectrum(key: Any) -> Any:
            opts = dict(extra, key=key) if extra else {}
            return jax.block_until_ready(
                mj.spectrum(model.head, x0, ctx, blocks="joint", output_metric="fisher_rao", method=method, **opts)
            )

        start = time.perf_counter()
        spec = spectrum(jax.random.key(1))
        out["first_call_s"] = time.perf_counter() - start
        _reset_peak()
        base = _status_mb("VmRSS")
        start = time.perf_counter()
        spectrum(jax.random.key(2))
        out["seconds_per_spectrum"] = time.perf_counter() - start
        out["peak_mb_above_model"] = _status_mb("VmHWM") - base
        out["eigenvalues"] = np.asarray(spec.eigenvalues)[0, :RANK].tolist()
        return out
    if job["kind"] == "analyse":
        from manifold_jax.geometry import block_spectrum

        n = x0.shape[0]

        def step(x: Any) -> Any:
            return block_spectrum(
                model.head, x, (ctx,), jax.numpy.arange(n), jax.numpy.ones((n,), bool),
                metric=mj.fisher_rao, blocks="joint", method=method, **extra,
            )[1].eigenvalues

        analysis = jax.jit(step).lower(x0).compile().memory_analysis()
        out["temp_gb"] = analysis.temp_size_in_bytes / 1e9
        out["jacobian_gb"] = job["shape"]["vocab_size"] * x0.size * 4 / 1e9
        return out
    options = dict(
        args=(ctx,), spectrum="gram" if method == "dense" else "matfree", output_metric="fisher_rao",
        blocks="joint", chunk_size=job["steps"], save_every=job["steps"],
        **({"rank": RANK} if method == "matfree" else {}),
    )
    start = time.perf_counter()
    mj.simec(model.head, x0, steps=job["steps"], key=jax.random.key(2), **options)  # compiles
    out["first_call_s"] = time.perf_counter() - start
    _reset_peak()
    base = _status_mb("VmRSS")
    # a call of s steps evaluates s + 2 iterations: the start check at x0, the s steps, and the end
    # record (the step a continuation takes); each is a whole iteration (spectrum and move)
    start = time.perf_counter()
    traj = mj.simec(model.head, x0, steps=job["steps"], key=jax.random.key(3), **options)
    out["seconds_per_iteration"] = (time.perf_counter() - start) / (job["steps"] + 2)
    out["peak_mb_above_model"] = _status_mb("VmHWM") - base
    out["peak_mb_with_compile"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["status_ok"] = bool(not np.asarray(traj.status).any())
    return out


def _in_process(job: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run one job in a fresh python process; a crash or an out-of-memory kill is reported, not raised."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, str(Path(__file__).resolve()), "_worker", json.dumps(job)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired:
        return dict(job, error=f"timed out after {timeout:.0f} s")
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["killed"])[-1]
        return dict(job, error=f"exit {done.returncode}: {tail[:200]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------ tables


def memory_sweep(
    vocabs: Sequence[int], dense_limit: int, shape: dict[str, int], tokens: int, steps: int, timeout: float
) -> list[dict]:
    """Run both paths up to V = dense_limit; above it the dense path is compiled, not run (its Fisher
    factor and Gram matrix are V x V each, and its eigh O(V^3)), and XLA's memory analysis says its size."""
    rows = []
    for vocab in vocabs:
        for method in ("dense", "matfree"):
            big = method == "dense" and vocab > dense_limit
            job = {"kind": "analyse" if big else "iterate", "method": "gram" if big else method,
                   "shape": dict(shape, vocab_size=vocab), "tokens": tokens, "steps": steps}
            rows.append(_in_process(job, timeout))
            print(json.dumps(rows[-1]), flush=True)
    return rows


def agreement(vocabs: Sequence[int], shape: dict[str, int], tokens: int, timeout: float) -> list[dict]:
    rows = []
    for vocab in vocabs:
        got = {m: _in_process({"kind": "spectrum", "method": m, "shape": dict(shape, vocab_size=vocab),
                               "tokens": tokens}, timeout) for m in ("gram", "matfree")}
        if any("error" in g for g in got.values()):
            rows.append({"vocab": vocab, "error": "; ".join(g.get("error", "") for g in got.values())})
            continue
        dense, free = got["gram"]["eigenvalues"], got["matfree"]["eigenvalues"]
        rel = max(abs(a - b) for a, b in zip(dense, free, strict=True)) / dense[0]
        rows.append({"vocab": vocab, "tokens": tokens, "max_rel_diff": rel, "ok": rel <= EIG_RTOL,
                     "top": dense[:3]})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def timing(token_counts: Sequence[int], shape: dict[str, int], steps: int, timeout: float, kind: str) -> list[dict]:
    """kind "iterate": SiMEC iterations; "spectrum": one matrix-free spectrum, the iteration's whole cost but
    an O(n d) update (a cheaper measurement: no start check nor end record around it)."""
    rows = []
    for tokens in token_counts:
        job = {"kind": kind, "method": "matfree", "shape": shape, "tokens": tokens, "steps": steps}
        rows.append(_in_process(job, timeout))
        print(json.dumps(rows[-1]), flush=True)
        job = {"kind": "analyse", "method": "gram", "shape": shape, "tokens": tokens}
        rows.append(_in_process(job, timeout))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def render(results: dict[str, Any]) -> str:
    lines = ["# SiMEC on a full next-token distribution (Fisher-Rao, joint block, float32)", ""]
    if "memory" in results:
        lines += ["## Peak memory and time per iteration against V (fresh process per cell)", "",
                  "| V | path | s / iteration | peak MB of the run (above the loaded model and program) |",
                  "|---|---|---|---|"]
        for r in results["memory"]:
            v = r["shape"]["vocab_size"]
            if "error" in r:
                lines.append(f"| {v} | {r['method']} | {r['error']} | |")
            elif r["kind"] == "analyse":
                lines.append(f"| {v} | dense (compiled, not run) | | XLA temporaries {r['temp_gb'] * 1e3:.0f} |")
            else:
                lines.append(f"| {v} | {r['method']} | {r['seconds_per_iteration']:.3g} | "
                             f"{r['peak_mb_above_model']:.0f} |")
        lines.append("")
    if "agreement" in results:
        lines += ["## Top eigenvalues, matrix-free against dense", "",
                  f"| V | tokens | max relative difference (of lambda_max) | within {EIG_RTOL:g} |",
                  "|---|---|---|---|"]
        for r in results["agreement"]:
            if "error" in r:
                lines.append(f"| {r['vocab']} | | {r['error']} | |")
            else:
                lines.append(f"| {r['vocab']} | {r['tokens']} | {r['max_rel_diff']:.2g} | {r['ok']} |")
        lines.append("")
    if "time" in results:
        header = ("| tokens | path | s / iteration | peak MB of the run | dense step's XLA temporaries (GB) | "
                  "dense Jacobian alone (GB) |")
        lines += ["## GPT-2-small shape, V = 50,257", "", header, "|---|---|---|---|---|---|"]
        for r in results["time"]:
            if "error" in r:
                lines.append(f"| {r['tokens']} | {r['method']} | {r['error']} | | | |")
            elif r["kind"] == "iterate":
                lines.append(f"| {r['tokens']} | matfree, SiMEC iteration | {r['seconds_per_iteration']:.3g} | "
                             f"{r['peak_mb_above_model']:.0f} | | |")
            elif r["kind"] == "spectrum":
                lines.append(f"| {r['tokens']} | matfree, one spectrum | {r['seconds_per_spectrum']:.3g} | "
                             f"{r['peak_mb_above_model']:.0f} | | |")
            else:
                lines.append(f"| {r['tokens']} | dense (compiled, not run) | | | {r['temp_gb']:.1f} | "
                             f"{r['jacobian_gb']:.1f} |")
        lines.append("")
    return "\n".join(lines)


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("memory", "time", "agreement", "all"))
    parser.add_argument("--out", default=None, help="write language_model.json / .md there")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (the test suite's)")
    parser.add_argument("--steps", type=int, default=None, help="timed SiMEC iterations per cell")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per cell")
    parser.add_argument("--time-kind", choices=("iterate", "spectrum"), default="iterate",
                        help="time: whole SiMEC iterations (default) or one matrix-free spectrum (cheaper)")
    args = parser.parse_args(argv)
    if args.quick:
        shape, vocabs, limit, tokens = QUICK, (200,), 200, 4
        big, counts, steps = dict(QUICK, vocab_size=400), (4,), 1
    else:
        shape, vocabs, limit, tokens = SWEEP, (1000, 2000, 8000, 50257), 2000, 16
        big, counts, steps = SMALL, (16, 64), 2
    steps = args.steps or steps
    results: dict[str, Any] = {"quick": args.quick, "rank": RANK, "sweep_shape": shape, "date": time.strftime("%F")}
    if args.what in ("memory", "all"):
        results["memory"] = memory_sweep(vocabs, limit, shape, tokens, steps, args.timeout)
    if args.what in ("agreement", "all"):
        results["agreement"] = agreement([v for v in vocabs if v <= limit], shape, tokens, args.timeout)
    if args.what in ("time", "all"):
        results["time"] = timing(counts, big, steps, args.timeout, args.time_kind)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        from manifold_jax.atomic import write_text  # a killed run keeps the previous files

        write_text(out / "language_model.json", json.dumps(results, indent=2))
        write_text(out / "language_model.md", render(results))
    print(render(results))
    return results


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "_worker":
        sys.path.insert(0, str(ROOT))
        print(json.dumps(worker(json.loads(sys.argv[2]))))
    else:
        run()
