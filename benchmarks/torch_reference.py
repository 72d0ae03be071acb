"""A faithful PyTorch re-implementation of the reference SiMEC / SiMExp loop.

Written from docs/method.md section 11 (the authors' code, ``transformers_equivalence_classes`` /
package ``simec``, is not copied); it is the baseline our JAX engine is validated and
timed against. What it reproduces, per iteration and per sample:

1. **Jacobian per sample.** ``torch.func.jacrev`` of ``head`` (embeddings x (n, d) of
   ONE sample -> logits (k,)) at the current point: J (k, n, d), in the model's dtype.
   The logits come back as the auxiliary output (no extra forward pass).
2. **Per-token dense metric in float64.** For each explored token i: J_i = J[:, i, :]
   cast to float64, g_i = J_i^T G J_i (d x d), G = identity by default (the reference's
   choice) or a given k x k matrix.
3. **Dense eigh in float64**: ``torch.linalg.eigh(g_i)`` per token, one call per token
   (an O(n d^3) cost per step).
4. **Eigenvalue choice**: null means |lambda| < ``threshold`` (absolute, 0.01 by
   default as in the paper's runs). SiMEC picks a uniformly random index among the null
   eigenvalues, SiMExp among the non-null ones. The index is drawn from the list of
   qualifying indices itself, so the reference's off-by-one (which can pick the first
   non-null eigenvector in SiMEC and double-weights the top one in SiMExp) is NOT
   reproduced. A token with no qualifying eigenvalue, or whose metric is exactly zero
   (the output ignores it, e.g. a padded position), does not move that iteration
   (recorded as index -1, delta 0) instead of producing a division by zero.
5. **Step rule of the code** (``step_rule="reference"``): delta_i = eta * sqrt((min_j
   |lambda_j| + 1e-6) / max_j |lambda_j|) with the minimum over ALL eigenvalues of g_i,
   null ones included, so delta_i ~= eta * 1e-3 / sqrt(lambda_max,i). The paper's rule
   (``step_rule="paper"``: minimum over the non-null eigenvalues, no 1e-6) is available
   for comparison. Each explored token moves by delta_i along its own unit eigenvector
   (with the sign ``eigh`` returns), all tokens at once.
6. **Projection**: clip to the box [lo, hi] (scalars or arrays broadcastable to (n, d)).
7. **Python loop**, one iteration and one sample at a time, with the device-to-host
   copy (``.cpu().numpy()``) of the point every iteration, a ``gc.collect()`` every
   iteration, and the point appended to the trajectory list every ``save_each``
   iterations, each saved point also written to its own ``.npz`` file when ``out_dir``
   is given (so a run can be continued from its last saved iteration).

Not reproduced: degrowth (off in the paper's runs), multi-GPU placement, the
interpretation step. Model splitting for ``BertForSequenceClassification`` and
ViT-style image classifiers uses only public ``transformers`` APIs present in 5.23
(``model.bert.embeddings``/``encoder``/``pooler``, ``model.vit.embeddings``/``layers``,
``transformers.masking_utils.create_bidirectional_mask``).

Run as a script for a quick timing of the reference on a random or local BERT:
``python benchmarks/torch_reference.py --tokens 16 --steps 5 [--model DIR]``.
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import torch

Head = Callable[[torch.Tensor], torch.Tensor]
"""One sample's embeddings x (n, d) -> logits (k,)."""

Algorithm = Literal["simec", "simexp"]
StepRule = Literal["reference", "paper"]

STEP_EPS = 1e-6
"""The constant the reference code adds to the smallest eigenvalue in its step rule."""

__all__ = [
    "ReferenceRun",
    "ReferenceStep",
    "reference_step",
    "run_reference",
    "run_reference_batch",
    "split_bert",
    "split_vit",
    "token_metric_spectrum",
]


# ------------------------------------------------------------ model splitting


def split_bert(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    token_type_ids: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
) -> tuple[Head, torch.Tensor]:
    """Split a ``BertForSequenceClassification`` at its embeddings for ONE sentence.

    ``input_ids``, ``token_type_ids``, ``attention_mask``: (n,) int tensors (no batch
    axis). Puts the model in eval mode (dropout off) and returns ``(head, x0)``:
    x0 (n, d) = ``model.bert.embeddings(input_ids, token_type_ids)`` (word + position +
    type embeddings after LayerNorm), and ``head(x)`` = classifier(pooler(encoder(x,
    extended attention mask))) -> logits (k,). The 4-d mask is built once here with
    ``create_bidirectional_mask`` for the model's attention implementation.
    """
    from transformers.masking_utils import create_bidirectional_mask

    if input_ids.ndim != 1:
        raise ValueError(f"input_ids: expected shape (n,) for one sentence, got {tuple(input_ids.shape)}")
    n = input_ids.shape[0]
    if token_type_ids is None:
        token_type_ids = torch.zeros_like(input_ids)
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    for name, t in (("token_type_ids", token_type_ids), ("attention_mask", attention_mask)):
        if tuple(t.shape) != (n,):
            raise ValueError(f"{name}: expected shape ({n},), got {tuple(t.shape)}")
    model.eval()
    bert = model.bert
    with torch.no_grad():
        x0 = bert.embeddings(input_ids=input_ids[None], token_type_ids=token_type_ids[None])[0]
    mask4d = create_bidirectional_mask(
        config=bert.config, inputs_embeds=x0[None], attention_mask=attention_mask[None]
    )

    def head(x: torch.Tensor) -> torch.Tensor:
        hidden = bert.encoder(x[None], attention_mask=mask4d).last_hidden_state
        pooled = bert.pooler(hidden)
        return model.classifier(model.dropout(pooled))[0]

    return head, x0.detach().clone()


def split_vit(model: torch.nn.Module, pixel_values: torch.Tensor) -> tuple[Head, torch.Tensor]:
    """Split a ViT-style image classifier (``ViTForImageClassification``) at its embeddings.

    ``pixel_values``: (C, H, W) for ONE image. Returns ``(head, x0)`` with x0 (n, d) =
    ``model.vit.embeddings(pixel_values)`` (CLS + patch projections + position
    embeddings) and ``head(x)`` = classifier(final LayerNorm(layers(x))[CLS]) -> (k,).
    Works with the transformers 5 layout (``vit.layers``) and the 4.x one
    (``vit.encoder.layer``). Eval mode.
    """
    if pixel_values.ndim != 3:
        raise ValueError(f"pixel_values: expected (C, H, W) for one image, got {tuple(pixel_values.shape)}")
    model.eval()
    vit = model.vit
    layers = getattr(vit, "layers", None)
    if layers is None:
        layers = vit.encoder.layer
    with torch.no_grad():
        x0 = vit.embeddings(pixel_values[None].to(vit.embeddings.patch_embeddings.projection.weight.dtype))[0]

    def head(x: torch.Tensor) -> torch.Tensor:
        hidden = x[None]
        for layer in layers:
            out = layer(hidden)
            hidden = out[0] if isinstance(out, tuple) else out
        hidden = vit.layernorm(hidden)
        return model.classifier(hidden[:, 0, :])[0]

    return head, x0.detach().clone()


# -------------------------------------------------------------- one iteration


def _jacobian(head: Head, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """J (k, n, d) and logits (k,) of ``head`` at x (n, d), by ``torch.func.jacrev``."""

    def with_aux(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = head(z)
        return y, y

    jac, logits = torch.func.jacrev(with_aux, has_aux=True)(x)
    return jac.detach(), logits.detach()


def token_metric_spectrum(
    jac: torch.Tensor, tokens: Sequence[int], metric: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token dense metric spectra in float64: eigenvalues (m, d), eigenvectors (m, d, d).

    ``jac``: (k, n, d). For each token i in ``tokens``, g_i = J_i^T G J_i with J_i =
    jac[:, i, :] in float64, then ``torch.linalg.eigh(g_i)`` (ascending eigenvalues,
    eigenvectors in the columns), one call per token as in the reference.
    """
    vals, vecs = [], []
    for i in tokens:
        ji = jac[:, i, :].to(torch.float64)
        g = ji.T @ ji if metric is None else ji.T @ metric.to(torch.float64) @ ji
        lam, v = torch.linalg.eigh(g)
        vals.append(lam)
        vecs.append(v)
    return torch.stack(vals), torch.stack(vecs)


@dataclass
class ReferenceStep:
    """What one reference iteration did (for one sample). m = explored tokens."""

    x: torch.Tensor
    """(n, d) the new point, after the clip, in x's dtype and device."""
    logits: np.ndarray
    """(k,) logits at the point the step started from."""
    tokens: np.ndarray
    """(m,) explored token indices."""
    eigenvalues: np.ndarray
    """(m, d) float64, ascending, eigenvalues of each g_i."""
    chosen: np.ndarray
    """(m,) index of the eigenvector each token moved along (-1: did not move)."""
    deltas: np.ndarray
    """(m,) float64 step sizes delta_i (0 where the token did not move)."""
    directions: np.ndarray
    """(m, d) float64 unit directions moved along (zeros where it did not move)."""
    seconds_jacobian: float
    seconds_eigh: float


def _tokens(select: npt.ArrayLike | Sequence[int] | None, n: int) -> np.ndarray:
    """Explored token indices (m,) from None (all), a bool mask (n,) or indices."""
    if select is None:
        return np.arange(n)
    sel = np.asarray(select)
    if sel.dtype == bool:
        if sel.shape != (n,):
            raise ValueError(f"select: a boolean mask must have shape ({n},), got {sel.shape}")
        idx = np.flatnonzero(sel)
    else:
        if sel.ndim != 1 or not np.issubdtype(sel.dtype, np.integer):
            raise ValueError("select: expected token indices (1-d ints) or a boolean mask")
        if sel.size and (sel.min() < 0 or sel.max() >= n):
            raise ValueError(f"select: token index out of range 0..{n - 1}")
        if np.unique(sel).size != sel.size:
            raise ValueError("select: repeated token index")
        idx = sel.astype(np.int64)
    if idx.size == 0:
        raise ValueError("select: selects no token")
    return idx


def _bound(b: float | npt.ArrayLike | torch.Tensor | None, name: str, x: torch.Tensor) -> torch.Tensor | None:
    if b is None:
        return None
    t = torch.as_tensor(np.asarray(b.cpu() if isinstance(b, torch.Tensor) else b), dtype=x.dtype, device=x.device)
    try:
        t = torch.broadcast_to(t, x.shape)
    except RuntimeError as exc:
        raise ValueError(f"{name}: cannot broadcast shape {tuple(t.shape)} to {tuple(x.shape)}") from exc
    if torch.isnan(t).any():
        raise ValueError(f"{name}: contains NaN")
    return t


def reference_step(
    head: Head,
    x: torch.Tensor,
    *,
    eta: float,
    threshold: float = 0.01,
    algorithm: Algorithm = "simec",
    tokens: np.ndarray,
    lo: torch.Tensor | None = None,
    hi: torch.Tensor | None = None,
    rng: np.random.Generator,
    metric: torch.Tensor | None = None,
    step_rule: StepRule = "reference",
) -> ReferenceStep:
    """One reference iteration for one sample (items 1-6 of the module docstring).

    ``x``: (n, d) current point; ``tokens``: (m,) explored indices; ``lo``/``hi``:
    tensors of x's shape or None; ``rng``: draws the eigenvector indices.
    """
    t0 = time.perf_counter()
    jac, logits = _jacobian(head, x)
    t1 = time.perf_counter()
    lam, vecs = token_metric_spectrum(jac, tokens, metric)
    t2 = time.perf_counter()
    abs_lam = lam.abs()
    m, d = lam.shape
    chosen = np.full(m, -1, dtype=np.int64)
    deltas = np.zeros(m)
    dirs = torch.zeros((m, d), dtype=torch.float64, device=lam.device)
    null = (abs_lam < threshold).cpu().numpy()
    abs_np = abs_lam.cpu().numpy()
    for r in range(m):
        candidates = np.flatnonzero(null[r] if algorithm == "simec" else ~null[r])
        if candidates.size == 0:
            continue
        j = int(candidates[rng.integers(candidates.size)])
        lam_max = abs_np[r].max()
        if lam_max <= 0.0:  # the output ignores this token (e.g. padding): no step defined
            continue
        if step_rule == "reference":
            delta = eta * np.sqrt((abs_np[r].min() + STEP_EPS) / lam_max)
        else:
            nonnull = abs_np[r][~null[r]]
            if nonnull.size == 0:
                continue
            delta = eta * np.sqrt(nonnull.min() / lam_max)
        chosen[r] = j
        deltas[r] = delta
        dirs[r] = vecs[r, :, j]
    step = torch.zeros_like(x, dtype=torch.float64)
    step[torch.as_tensor(tokens, device=x.device)] = dirs * torch.as_tensor(deltas, device=x.device)[:, None]
    x_new = (x.detach().to(torch.float64) + step).to(x.dtype)
    if lo is not None or hi is not None:
        x_new = torch.clamp(x_new, min=lo, max=hi)
    return ReferenceStep(
        x=x_new,
        logits=logits.detach().cpu().numpy(),
        tokens=np.asarray(tokens),
        eigenvalues=lam.cpu().numpy(),
        chosen=chosen,
        deltas=deltas,
        directions=dirs.cpu().numpy(),
        seconds_jacobian=t1 - t0,
        seconds_eigh=t2 - t1,
    )


# ----------------------------------------------------------------- the loop


@dataclass
class ReferenceRun:
    """Trajectory and timings of one reference run (one sample). S = saved points."""

    trajectory: np.ndarray
    """(S, n, d) saved points; row 0 is x0, then every ``save_each`` iterations."""
    saved_iterations: np.ndarray
    """(S,) iteration number of each saved point (0 = start)."""
    logits: np.ndarray
    """(S, k) logits at each saved point."""
    deltas: np.ndarray
    """(steps, m) step sizes per iteration and explored token."""
    chosen: np.ndarray
    """(steps, m) eigenvector index chosen per iteration and token (-1: no move)."""
    seconds: np.ndarray
    """(steps,) wall time of each iteration (all of it: step, copies, gc, saving)."""
    seconds_jacobian: np.ndarray
    """(steps,) of which the Jacobian."""
    seconds_eigh: np.ndarray
    """(steps,) of which the per-token metrics and eigendecompositions."""
    tokens: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    """(m,) explored token indices."""


def _check_common(x0: torch.Tensor, steps: int, eta: float, threshold: float, algorithm: str,
                  save_each: int, step_rule: str) -> None:
    if not isinstance(x0, torch.Tensor) or x0.ndim != 2:
        raise ValueError(f"x0: expected a (n, d) tensor for one sample, got {getattr(x0, 'shape', type(x0))}")
    if not torch.isfinite(x0).all():
        raise ValueError("x0: contains NaN or infinite values")
    if int(steps) != steps or steps < 0:
        raise ValueError(f"steps: must be a non-negative integer, got {steps}")
    if not np.isfinite(eta) or eta <= 0:
        raise ValueError(f"eta: must be positive and finite, got {eta}")
    if not np.isfinite(threshold) or threshold <= 0:
        raise ValueError(f"threshold: must be positive and finite, got {threshold}")
    if algorithm not in ("simec", "simexp"):
        raise ValueError(f"algorithm: must be 'simec' or 'simexp', got {algorithm!r}")
    if step_rule not in ("reference", "paper"):
        raise ValueError(f"step_rule: must be 'reference' or 'paper', got {step_rule!r}")
    if int(save_each) != save_each or save_each < 1:
        raise ValueError(f"save_each: must be a positive integer, got {save_each}")


def _save(out_dir: Path | None, sample: int | None, it: int, x: np.ndarray, logits: np.ndarray) -> None:
    if out_dir is None:
        return
    name = f"iter_{it:07d}.npz" if sample is None else f"sample_{sample:04d}_iter_{it:07d}.npz"
    np.savez(out_dir / name, embedding=x, logits=logits, iteration=it)


def run_reference_batch(
    heads: Sequence[Head],
    x0s: Sequence[torch.Tensor],
    *,
    steps: int,
    eta: float,
    threshold: float = 0.01,
    algorithm: Algorithm = "simec",
    select: Sequence[npt.ArrayLike | Sequence[int] | None] | None = None,
    lo: float | npt.ArrayLike | torch.Tensor | None = None,
    hi: float | npt.ArrayLike | torch.Tensor | None = None,
    seed: int = 0,
    save_each: int = 1,
    out_dir: str | Path | None = None,
    metric: torch.Tensor | None = None,
    step_rule: StepRule = "reference",
    collect_garbage: bool = True,
) -> list[ReferenceRun]:
    """The reference loop over a batch: each iteration visits the samples one at a time.

    ``heads``/``x0s``: one head and one (n_b, d) start per sample; ``select``: per
    sample explored tokens (None: all). Other arguments as :func:`run_reference`;
    ``lo``/``hi`` are shared (scalars or broadcastable to each sample's (n_b, d)).
    The per-iteration timing of each sample includes its share of the loop only; the
    iteration's gc and copies are charged to the sample they follow.
    """
    if len(heads) != len(x0s) or len(heads) == 0:
        raise ValueError(f"heads: need one head per x0 and at least one sample, got {len(heads)} and {len(x0s)}")
    sels = [None] * len(x0s) if select is None else list(select)
    if len(sels) != len(x0s):
        raise ValueError(f"select: need one selection per sample, got {len(sels)}")
    rng = np.random.default_rng(seed)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    states = []
    for b, (head, x0) in enumerate(zip(heads, x0s, strict=True)):
        _check_common(x0, steps, eta, threshold, algorithm, save_each, step_rule)
        tokens = _tokens(sels[b], x0.shape[0])
        with torch.no_grad():
            logits0 = head(x0).detach().cpu().numpy()
        x_host = x0.detach().cpu().numpy()
        _save(out, b if len(x0s) > 1 else None, 0, x_host, logits0)
        states.append(
            dict(x=x0.detach().clone(), tokens=tokens, lo=_bound(lo, "lo", x0), hi=_bound(hi, "hi", x0),
                 traj=[x_host], its=[0], logits=[logits0], deltas=[], chosen=[], sec=[], sj=[], se=[])
        )
    for it in range(1, int(steps) + 1):
        for b, (head, st) in enumerate(zip(heads, states, strict=True)):
            t0 = time.perf_counter()
            res = reference_step(head, st["x"], eta=eta, threshold=threshold, algorithm=algorithm,
                                 tokens=st["tokens"], lo=st["lo"], hi=st["hi"], rng=rng, metric=metric,
                                 step_rule=step_rule)
            st["x"] = res.x
            x_host = res.x.detach().cpu().numpy()  # device-to-host copy every iteration
            st["deltas"].append(res.deltas)
            st["chosen"].append(res.chosen)
            st["sj"].append(res.seconds_jacobian)
            st["se"].append(res.seconds_eigh)
            if it % save_each == 0:
                with torch.no_grad():
                    logits = head(res.x).detach().cpu().numpy()
                st["traj"].append(x_host)
                st["its"].append(it)
                st["logits"].append(logits)
                _save(out, b if len(x0s) > 1 else None, it, x_host, logits)
            if collect_garbage:
                gc.collect()  # the reference collects every iteration (~0.2 s with torch loaded)
            st["sec"].append(time.perf_counter() - t0)
    runs = []
    for st in states:
        m = st["tokens"].size
        runs.append(
            ReferenceRun(
                trajectory=np.stack(st["traj"]),
                saved_iterations=np.asarray(st["its"], dtype=np.int64),
                logits=np.stack(st["logits"]),
                deltas=np.asarray(st["deltas"], dtype=np.float64).reshape(-1, m),
                chosen=np.asarray(st["chosen"], dtype=np.int64).reshape(-1, m),
                seconds=np.asarray(st["sec"]),
                seconds_jacobian=np.asarray(st["sj"]),
                seconds_eigh=np.asarray(st["se"]),
                tokens=st["tokens"],
            )
        )
    return runs


def run_reference(
    head: Head,
    x0: torch.Tensor,
    *,
    steps: int,
    eta: float,
    threshold: float = 0.01,
    algorithm: Algorithm = "simec",
    select: npt.ArrayLike | Sequence[int] | None = None,
    lo: float | npt.ArrayLike | torch.Tensor | None = None,
    hi: float | npt.ArrayLike | torch.Tensor | None = None,
    seed: int = 0,
    save_each: int = 1,
    out_dir: str | Path | None = None,
    metric: torch.Tensor | None = None,
    step_rule: StepRule = "reference",
    collect_garbage: bool = True,
) -> ReferenceRun:
    """Run the reference SiMEC/SiMExp loop on one sample for ``steps`` iterations.

    ``head``: x (n, d) -> logits (k,); ``x0``: (n, d) start (e.g. from
    :func:`split_bert`); ``eta``: step multiplier; ``threshold``: absolute null
    threshold on |lambda|; ``algorithm``: "simec" (stay in the class) or "simexp"
    (leave it); ``select``: explored tokens (indices or bool mask (n,), None = all);
    ``lo``/``hi``: clip box (scalars or broadcastable to (n, d), None = unbounded);
    ``seed``: seeds the eigenvector choice; ``save_each``: keep every that many
    iterations (x0 always kept); ``out_dir``: also write each saved point to
    ``iter_XXXXXXX.npz`` there; ``metric``: output metric G (k, k), identity if None;
    ``step_rule``: "reference" (code) or "paper"; ``collect_garbage``: run
    ``gc.collect()`` every iteration as the reference does (turn off only for tests of
    the loop's mechanics, never for timings). Returns a :class:`ReferenceRun`; its
    ``seconds`` include the forward pass that logs the logits of each saved point.
    """
    return run_reference_batch(
        [head], [x0], steps=steps, eta=eta, threshold=threshold, algorithm=algorithm,
        select=None if select is None else [select], lo=lo, hi=hi, seed=seed,
        save_each=save_each, out_dir=out_dir, metric=metric, step_rule=step_rule,
        collect_garbage=collect_garbage,
    )[0]


# -------------------------------------------------------------------- script


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    """The script: time the reference loop on a BERT; returns the printed figures."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", help="local BERT directory (e.g. MiniLM-L6); random BERT-mini if omitted")
    p.add_argument("--tokens", type=int, default=16, help="sequence length, all tokens explored")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--eta", type=float, default=1.0)
    p.add_argument("--algorithm", choices=("simec", "simexp"), default="simec")
    p.add_argument("--float64", action="store_true", help="run the model in float64")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--attn", default="eager", help="attention implementation (eager, sdpa)")
    p.add_argument("--no-gc", action="store_true",
                   help="skip the reference's gc.collect() every iteration (its other costs stay)")
    p.add_argument("--quick", action="store_true", help="a 2-layer hidden-32 random BERT (tests)")
    args = p.parse_args(argv)
    from transformers import BertConfig, BertForSequenceClassification

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.model:
        model = BertForSequenceClassification.from_pretrained(args.model, num_labels=3, attn_implementation=args.attn)
    else:
        size = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64) if args.quick \
            else dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
        cfg = BertConfig(**size, num_labels=3, attn_implementation=args.attn)
        model = BertForSequenceClassification(cfg)
    if args.float64:
        model = model.double()
    ids = torch.randint(1000, min(2000, model.config.vocab_size), (args.tokens,))
    head, x0 = split_bert(model, ids)
    run = run_reference(head, x0, steps=args.steps, eta=args.eta, algorithm=args.algorithm,
                        collect_garbage=not args.no_gc)
    sec = run.seconds[1:] if run.seconds.size > 1 else run.seconds
    print(
        f"tokens={args.tokens} d={x0.shape[1]} steps={args.steps}: "
        f"{sec.mean():.3f} s/iteration (jacobian {run.seconds_jacobian.mean():.3f} s, "
        f"metrics+eigh {run.seconds_eigh.mean():.3f} s), {sec.mean() / args.tokens:.4f} s/iteration/token"
    )
    return {"seconds_per_iteration": float(sec.mean()), "jacobian_s": float(run.seconds_jacobian.mean()),
            "eigh_s": float(run.seconds_eigh.mean()), "tokens": int(args.tokens), "d": int(x0.shape[1])}


if __name__ == "__main__":
    main()
