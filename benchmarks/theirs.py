"""The reference side of a benchmark: the faithful PyTorch loop on one spec (imports torch, never JAX)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.specs import ETA, REFERENCE_THRESHOLD, SEED, Spec, spec_dir


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
        for head, x0 in zip(self.heads, self.x0s, strict=True):
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

    def run(self, steps: int | None = None, collect_garbage: bool = True) -> dict[str, Any]:
        """``steps`` reference iterations from x0; per-iteration times summed over the batch.
        ``collect_garbage=False`` skips the reference's per-iteration ``gc.collect()``."""
        from benchmarks.torch_reference import run_reference_batch

        steps = self.spec.ref_iters if steps is None else steps
        runs = run_reference_batch(
            self.heads, self.x0s, steps=steps, eta=ETA, threshold=REFERENCE_THRESHOLD,
            algorithm="simec", select=None if self.tokens is None else [self.tokens] * len(self.heads),
            seed=SEED, collect_garbage=collect_garbage,
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
