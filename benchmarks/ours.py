"""Our side of a benchmark: the manifold-jax engine on one spec (imports JAX, never torch).

JAX and manifold-jax are imported inside the methods, so that the torch side can import
this module's names through ``benchmarks.workers`` without loading JAX.
"""

from __future__ import annotations

import contextlib
import functools
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.measure import timed
from benchmarks.specs import ETA, SEED, Spec, spec_dir


class Ours:
    """Our engine on one spec: float32, the default spectrum ("gram"), per-token blocks."""

    def __init__(self, spec: Spec, workdir: Path) -> None:
        import jax
        import jax.numpy as jnp

        from manifold_jax.models import load

        self.jax, self.jnp = jax, jnp
        self.spec = spec
        directory = spec_dir(workdir, spec)
        self.directory = directory
        inputs = np.load(directory / "inputs.npz")
        self.model = load(str(directory))
        if spec.kind == "bert":
            x0, ctx = self.model.embed_ids(inputs["input_ids"])
            args: dict[str, Any] = {"attention_mask": ctx["attention_mask"]}
            self.select = None  # every token, [CLS] and [SEP] included (as the baseline)
            self.tokens = np.arange(x0.shape[1])
        else:
            x0, ctx = self.model.embed(inputs["images"])
            args = {}
            self.select = np.asarray(ctx["token_mask"][0])  # all patches, not CLS
            self.tokens = np.flatnonzero(self.select)
        self.x0 = x0.block_until_ready()
        self.args = args
        self.f = self.model.head
        self.batched = spec.batch > 1
        # what explore() gets: an unbatched item for batch 1 (the everyday call)
        self.start = x0 if self.batched else x0[0]
        self.call_args = (args,) if self.batched else (jax.tree.map(lambda a: a[0], args),)
        self._floor: dict[str, Any] = {}
        self._floor_ready: set[str] = set()
        self.first_record: dict[str, np.ndarray] = {}

    # -- the timed exploration -------------------------------------------------------
    def _explore(self, spectrum: str = "gram", chunks: int | None = None) -> dict[str, Any]:
        from manifold_jax import simec

        spec = self.spec
        chunks = spec.chunks if chunks is None else chunks
        marks: list[float] = []
        start = time.perf_counter()
        traj = simec(
            self.f, self.start, args=self.call_args, select=self.select,
            steps=spec.chunk * chunks, chunk_size=spec.chunk, eta=ETA,
            key=self.jax.random.key(SEED), spectrum=spectrum,
            on_chunk=lambda *_: marks.append(time.perf_counter()),
        )
        total = time.perf_counter() - start
        gaps = np.diff([start, *marks])
        steps = spec.chunk * chunks
        return {
            "total": total,
            # chunks 2 .. chunks-1 of the call: exactly `chunk` scanned steps each
            "per_step": (gaps[1:-1] / spec.chunk).tolist(),
            # the whole call: steps + 1 start check + 1 final record, driver overhead included
            "per_step_call": total / (steps + 2),
            "traj": traj,
        }

    def first(self, chunks: int | None = None) -> dict[str, Any]:
        """The first exploration in the process: tracing and compiling included."""
        out = self._explore(chunks=chunks)
        traj = out.pop("traj")
        self.first_record = {"step": np.asarray(traj.step), "y": np.asarray(traj.y)}
        return {k: v for k, v in out.items()}

    def run(self, chunks: int | None = None) -> dict[str, Any]:
        out = self._explore(chunks=chunks)
        traj = out.pop("traj")
        status = np.asarray(traj.status)
        out["finite"] = bool(np.isfinite(np.asarray(traj.x)).all())
        out["nonzero_status"] = int((status != 0).sum())
        return out

    # -- the floor ----------------------------------------------------------------------
    def _floor_fns(self) -> dict[str, Any]:
        if not self._floor:
            jax, jnp = self.jax, self.jnp
            jac = jax.jacrev(self.f)
            fwd = self.f
            if self.batched:
                jac, fwd = jax.vmap(jac), jax.vmap(fwd)
            length = self.spec.chunk

            def scanned(x: Any, *args: Any) -> Any:
                # the Jacobian inside lax.scan, as our loop runs it: each step feeds the next
                # (all k rows are used, so none can be dropped as dead code)
                def body(c: Any, _: Any) -> tuple[Any, None]:
                    return c + 1e-30 * jnp.sum(jac(c, *args), axis=-3), None

                return jax.lax.scan(body, x, None, length=length)[0]

            # compiled with the options our own programs get (manifold_jax._xla): the floor is
            # the best this jaxlib does for the Jacobian, not a handicapped one
            from manifold_jax._xla import jit

            self._floor = {"jacrev": jit(jac), "forward": jit(fwd), "jacrev_scan": jit(scanned)}
        return self._floor

    def floor(self, repeats: int = 3) -> dict[str, Any]:
        """Forward alone and forward + k VJPs (``jax.jacrev`` of the head), jitted: one call
        per evaluation, and ``chunk`` evaluations inside one ``lax.scan`` (per evaluation)."""
        fns = self._floor_fns()
        out: dict[str, Any] = {}
        for name, fn in fns.items():
            call = functools.partial(self._block, fn)
            per = self.spec.chunk if name == "jacrev_scan" else 1
            compile_s = None
            if name not in self._floor_ready:
                compile_s = timed(call)
                self._floor_ready.add(name)
            out[name] = [timed(call) / per for _ in range(repeats)]
            if compile_s is not None:
                out[f"{name}_first"] = compile_s
        return out

    def _block(self, fn: Any) -> Any:
        """One call of ``fn`` at the start point, waited for."""
        return self.jax.block_until_ready(fn(self.start, *self.call_args))

    # -- checks -----------------------------------------------------------------------
    def spectrum0(self, path: str) -> dict[str, Any]:
        """Eigenvalues (B, m, p) of every explored token's metric at x0 (default "gram") and
        the first step sizes (B, m) of the first exploration; saved to ``path`` (npz)."""
        from manifold_jax.geometry import spectrum

        x0 = np.asarray(self.x0)
        vals = []
        for b in range(x0.shape[0]):
            args_b = self.jax.tree.map(functools.partial(_item, b=b), self.args)
            spec = spectrum(self.f, x0[b], args_b, select=self.tokens)
            vals.append(np.asarray(spec.eigenvalues))
        step = self.first_record.get("step")
        first_step = None if step is None else (step[:, 0] if self.batched else step[None, 0])
        np.savez(path, eigenvalues=np.stack(vals), x0=x0,
                 **({} if first_step is None else {"first_step": first_step}))
        return {"path": path}

    def program(self, spectrum: str = "gram") -> dict[str, Any]:
        """The compiled chunk program of our loop: its largest arrays, and whether any holds a
        d x d matrix per explored token (shape (..., >= m, d, d)); XLA's buffer sizes."""
        import importlib

        # the compiled chunk program lives in the exploration loop's module
        engine = importlib.import_module("manifold_jax.explore.loop")
        original = engine._advance
        captured: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

        def spy(*a: Any, **kw: Any) -> Any:
            captured.append((a, kw))
            return original(*a, **kw)

        engine._advance = spy
        try:
            from manifold_jax import simec

            simec(self.f, self.start, args=self.call_args, select=self.select, steps=1,
                  chunk_size=self.spec.chunk, eta=ETA, key=self.jax.random.key(SEED), spectrum=spectrum)
        finally:
            engine._advance = original
        a, kw = captured[-1]
        compiled = original.lower(*a, **kw).compile()
        return program_shapes(compiled, m=len(self.tokens), d=int(self.x0.shape[-1]))

    def devices(self) -> dict[str, Any]:
        import jax

        dev = jax.devices()[0]
        stats = {}
        with contextlib.suppress(Exception):  # backends without memory statistics raise
            stats = dev.memory_stats() or {}
        return {"platform": dev.platform, "device": str(dev), "jax": jax.__version__,
                "peak_bytes_in_use": stats.get("peak_bytes_in_use")}


def _item(a: Any, b: int) -> Any:
    return a[b]


def program_shapes(compiled: Any, m: int, d: int) -> dict[str, Any]:
    """Scan an XLA executable's HLO text for array shapes.

    Flags every array of rank >= 3 whose last two axes are (d, d) and whose leading axes
    hold at least m entries: a d x d matrix per explored token (the dense path has
    (m, d, d)); weight matrices (d, d) and a few stacked ones do not qualify.
    """
    import re

    text = compiled.as_text()
    shapes = set()
    for dtype, dims in re.findall(r"\b(pred|s8|u8|s32|u32|s64|u64|bf16|f16|f32|f64)\[([0-9,]*)\]", text):
        shape = tuple(int(v) for v in dims.split(",") if v)
        shapes.add((dtype, shape))
    size = {"pred": 1, "s8": 1, "u8": 1, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8,
            "f64": 8}

    def nbytes(item: tuple[str, tuple[int, ...]]) -> int:
        return size[item[0]] * int(np.prod(item[1], dtype=np.int64))

    per_token_dd = sorted(
        f"{t}{list(s)}" for t, s in shapes if len(s) >= 3 and s[-2:] == (d, d) and np.prod(s[:-2]) >= m
    )
    largest = sorted(shapes, key=nbytes, reverse=True)[:3]
    out: dict[str, Any] = {
        "per_token_dxd": per_token_dd,
        "largest": [f"{t}{list(s)} ({nbytes((t, s)) / 2**20:.1f} MiB)" for t, s in largest],
        "dxd_per_token_bytes_f32": m * d * d * 4,
    }
    try:
        mem = compiled.memory_analysis()
        out["xla_temp_bytes"] = int(mem.temp_size_in_bytes)
        out["xla_argument_bytes"] = int(mem.argument_size_in_bytes)
        out["xla_output_bytes"] = int(mem.output_size_in_bytes)
    except Exception:  # not every backend reports it
        pass
    return out
