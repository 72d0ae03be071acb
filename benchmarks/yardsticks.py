"""Bounded exploration yardsticks: how different the images are that the model still treats as
the same, per second, measured in pixels inside the feasible [0, 1] box.

``pixels`` (the one subcommand): the shipped MNIST ViT (``--model``, default ``mnist-vit``) in
pixel space (``model.pixel_space()``, box [0, 1]), on the first ``--inputs`` held-out digits of
:func:`manifold_jax.data.mnist_split`, all patches explored, float32, ``--steps`` iterations,
every point saved. Side by side, on the same digits:

* **ours**: the recommended SiMEC (Newton corrector on the probabilities, coherent direction,
  adaptive step, active box, joint block), tolerance half the drift budget;
* **the reference algorithm** at eta = 1 and eta = 10: our engine's paper path (the authors'
  step rule, absolute threshold 0.01, per-patch blocks, the point clipped to the box), i.e.
  their algorithm with JAX's random draws; its seconds per iteration also as measured on the
  authors' loop in PyTorch (``benchmarks/torch_reference.py``, in its own process, with and
  without its per-iteration ``gc.collect()``).

For each walk: the *drift* (max |p - p0| over the class probabilities, at the end) and, over
the points before the drift first exceeds ``--budget``, the farthest image from x0: its pixel
L2 distance and how many of its 784 pixels changed by more than 1/255. At *equal iterations*
every walk runs ``--steps``; at *equal wall time* the reference gets the iterations the
PyTorch loop completes in our walk's time, with and without its per-iteration
``gc.collect()`` (its figures are read off the paper path's trajectory at that iteration,
capped at ``--steps``).

    python benchmarks/yardsticks.py pixels --out benchmarks/results            # RESULTS.md's table
    python benchmarks/yardsticks.py pixels --quick --out /tmp/y                 # CI size
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PIXEL_CHANGE = 1.0 / 255.0
"""A pixel counts as changed when it moved by more than one grey level."""
REFERENCE_ETAS = (1.0, 10.0)
TORCH_STEPS = 6
"""Iterations of the PyTorch loop timed per input (the first is dropped: it warms torch up)."""


def within_budget(points: np.ndarray, probs: np.ndarray, iterations: np.ndarray, budget: float,
                  upto: int | None = None) -> dict[str, Any]:
    """The farthest point of a walk before its drift first exceeds ``budget``.

    points (S, ...) saved inputs in pixels, probs (S, k) class probabilities, iterations (S,)
    their iteration numbers (0 first); ``upto``: only points at iterations <= upto count.
    Returns the drift at the last counted point, the iterations inside the budget, the
    largest pixel L2 distance from points[0] inside it, the iteration where it was reached
    and the number of coordinates changed by more than 1/255 there."""
    points = np.asarray(points, np.float64).reshape(len(points), -1)
    probs = np.asarray(probs, np.float64)
    iterations = np.asarray(iterations)
    keep = iterations <= (iterations[-1] if upto is None else upto)
    points, probs, iterations = points[keep], probs[keep], iterations[keep]
    drift = np.abs(probs - probs[0]).max(axis=1)
    out = np.flatnonzero(drift > budget)
    inside = len(points) if out.size == 0 else int(out[0])
    l2 = np.linalg.norm(points[:inside] - points[0], axis=1)
    best = int(np.argmax(l2))
    return {
        "iterations": int(iterations[-1]),
        "drift": float(drift[-1]),
        "budget_iterations": int(iterations[inside - 1]),
        "max_l2": float(l2[best]),
        "max_l2_iteration": int(iterations[best]),
        "pixels_changed": int(np.sum(np.abs(points[best] - points[0]) > PIXEL_CHANGE)),
    }


# ----------------------------------------------------------------------------- JAX side


def _digits(count: int) -> tuple[np.ndarray, np.ndarray]:
    from manifold_jax.data import mnist_split

    split = mnist_split(0)
    return split.test_images[:count, ..., None].astype(np.float32), split.test_labels[:count]


def _ours(model_name: str, count: int, steps: int, budget: float) -> dict[str, Any]:
    """Every JAX walk on the same digits: ours and the paper path at each reference eta."""
    import jax

    import manifold_jax as mj
    from manifold_jax.models import load

    pixels = load(model_name).pixel_space()
    images, labels = _digits(count)
    x0, ctx = pixels.embed(images)
    common = dict(args=(dict(ctx),), select=ctx["token_mask"], bounds=pixels.bounds("theoretical"), save_every=1,
                  chunk_size=min(50, steps))
    tol = budget / 2
    walks = {
        "ours": dict(eta=0.05, corrector=mj.Newton(tol=tol, max_iters=4, on="probabilities"), direction="coherent",
                     step_rule=mj.Adaptive(tol=tol, max_step=2.0, on="probabilities"), box="active", blocks="joint"),
        **{f"reference eta {eta:g}": dict(eta=eta, threshold=mj.Absolute(0.01), step_rule="reference")
           for eta in REFERENCE_ETAS},
    }
    rows = {}
    for name, options in walks.items():
        run = dict(common, **options)
        mj.simec(pixels.head, x0, key=jax.random.key(0), steps=run["chunk_size"], **run)  # compile
        t0 = time.perf_counter()
        traj = mj.simec(pixels.head, x0, key=jax.random.key(1), steps=steps, **run)
        seconds = (time.perf_counter() - t0) / count  # per digit: the batch shares the wall time
        probs = np.asarray(jax.nn.softmax(np.asarray(traj.y, np.float64), axis=-1))
        rows[name] = {
            "seconds_per_iteration": seconds / steps,
            "rejected": int(np.asarray(traj.rejected)[:, -1].sum()),
            "unconverged": int(((np.asarray(traj.status) & mj.UNCONVERGED) != 0).sum()),
            "points": np.asarray(traj.x).tolist(), "probs": probs.tolist(),
            "iterations": np.asarray(traj.iteration).tolist(),
        }
    return {"model": model_name, "labels": labels.tolist(), "steps": steps, "budget": budget,
            "patch_dim": int(x0.shape[-1]), "patches": int(x0.shape[1]), "walks": rows}


# ----------------------------------------------------------------------------- PyTorch side


def _torch(model_name: str, count: int, steps: int) -> dict[str, Any]:
    """Seconds per iteration of the authors' loop in pixel space (eta 1 and 10), with and
    without its per-iteration gc.collect()."""
    import torch

    from benchmarks.torch_embedded import mnist_vit_pixel_head
    from benchmarks.torch_reference import run_reference_batch

    torch.manual_seed(0)
    head, patches = mnist_vit_pixel_head(model_name)
    images, _ = _digits(count)
    x0s = [patches(img) for img in images]
    out: dict[str, Any] = {}
    for eta in REFERENCE_ETAS:
        for gc in (True, False):
            runs = run_reference_batch([head] * count, x0s, steps=steps, eta=eta, threshold=0.01, algorithm="simec",
                                       lo=0.0, hi=1.0, seed=0, save_each=steps, collect_garbage=gc)
            per_iteration = float(np.median([np.median(r.seconds[1:]) for r in runs]))
            out[f"eta {eta:g}, gc {'on' if gc else 'off'}"] = per_iteration
    return out


# ----------------------------------------------------------------------------- orchestration


def _worker(task: str, args: dict[str, Any], out: Path) -> None:
    result = {"ours": _ours, "torch": _torch}[task](**args)
    out.write_text(json.dumps(result))


def _run_worker(task: str, args: dict[str, Any], workdir: Path) -> Any:
    out = workdir / f"yardsticks-{task}.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, str(Path(__file__).resolve()), "_worker", task, json.dumps(args), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"yardsticks {task} failed:\n{proc.stderr[-4000:]}")
    return json.loads(out.read_text())


def summarise(ours: dict[str, Any], torch_seconds: dict[str, float]) -> list[dict[str, Any]]:
    """One row per (walk, comparison): medians over the digits of :func:`within_budget`."""
    walks, budget = ours["walks"], ours["budget"]
    ours_spi = walks["ours"]["seconds_per_iteration"]
    wall = ours_spi * ours["steps"]
    rows = []

    def row(name: str, comparison: str, spi: float, upto: int | None, spi_source: str) -> dict[str, Any]:
        w = walks[name]
        per_digit = [within_budget(np.asarray(w["points"])[b], np.asarray(w["probs"])[b], np.asarray(w["iterations"]),
                                   budget, upto) for b in range(len(ours["labels"]))]
        med = {k: float(np.median([d[k] for d in per_digit])) for k in per_digit[0]}
        seconds = med["max_l2_iteration"] * spi
        return {"walk": name, "comparison": comparison, "seconds_per_iteration": spi, "seconds_source": spi_source,
                **med, "max_drift": float(np.max([d["drift"] for d in per_digit])),
                "max_l2_per_second": med["max_l2"] / seconds if seconds > 0 else 0.0,
                "rejected": w["rejected"] / len(per_digit), "unconverged": w["unconverged"] / len(per_digit)}

    rows.append(row("ours", "equal iterations = equal wall time", ours_spi, None, "ours (JAX)"))
    for eta in REFERENCE_ETAS:
        name = f"reference eta {eta:g}"
        spi = torch_seconds[f"eta {eta:g}, gc on"]
        rows.append(row(name, "equal iterations", spi, None, "authors' loop (PyTorch)"))
        rows.append(row(name, "equal wall time", spi, min(int(wall / spi), ours["steps"]), "authors' loop (PyTorch)"))
        spi = torch_seconds[f"eta {eta:g}, gc off"]
        rows.append(row(name, "equal wall time, reference without gc.collect()", spi,
                        min(int(wall / spi), ours["steps"]), "authors' loop without gc.collect() (PyTorch)"))
    return rows


def render(result: dict[str, Any]) -> str:
    ours, rows, torch_seconds = result["ours"], result["rows"], result["torch"]
    lines = [
        "# Bounded exploration yardsticks (pixel space, [0, 1] box)", "",
        f"Model `{ours['model']}` in pixel space ({ours['patches']} patches of {ours['patch_dim']} pixels), "
        f"{len(ours['labels'])} held-out digits, {ours['steps']} iterations, float32, drift budget "
        f"max |dp| <= {ours['budget']:g}. Medians over the digits (max drift: the largest).", "",
        "| walk | comparison | iterations | s/it | drift at the end | iterations within the budget | "
        "largest pixel L2 within it | pixels changed (> 1/255) there | pixel L2 per second | "
        "rejected steps per digit | unconverged steps per digit |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['walk']} | {r['comparison']} | {r['iterations']:.0f} | {r['seconds_per_iteration']:.3g} | "
            f"{r['max_drift']:.2g} | {r['budget_iterations']:.0f} | {r['max_l2']:.3g} | {r['pixels_changed']:.0f} | "
            f"{r['max_l2_per_second']:.3g} | {r['rejected']:.3g} | {r['unconverged']:.3g} |"
        )
    lines += ["", "Seconds per iteration of the authors' loop in PyTorch, pixel space (per digit): "
              + ", ".join(f"{k}: {v:.3g} s" for k, v in torch_seconds.items())
              + "; our engine's paper path (JAX): "
              + ", ".join(f"eta {eta:g}: {ours['walks'][f'reference eta {eta:g}']['seconds_per_iteration']:.3g} s"
                          for eta in REFERENCE_ETAS), ""]
    return "\n".join(lines)


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_worker":
        _worker(argv[1], json.loads(argv[2]), Path(argv[3]))
        return {}
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("command", choices=("pixels",))
    p.add_argument("--model", default="mnist-vit",
                   help="mnist-vit (default) or the directory of a saved MNIST ViT of ours")
    p.add_argument("--inputs", type=int, default=4, help="held-out digits (default 4)")
    p.add_argument("--steps", type=int, default=200, help="iterations of every JAX walk (default 200)")
    p.add_argument("--budget", type=float, default=1e-4, help="drift budget on the probabilities (default 1e-4)")
    p.add_argument("--out", default="benchmarks/results", help="folder for yardsticks.json and yardsticks.md")
    p.add_argument("--workdir", default="/tmp/manifold-jax-bench", help="scratch folder of the worker processes")
    p.add_argument("--quick", action="store_true", help="tiny sizes, for the test suite")
    args = p.parse_args(argv)
    if args.inputs < 1 or args.steps < 2 or not 0 < args.budget < 1:
        p.error(f"--inputs >= 1, --steps >= 2 and 0 < --budget < 1 expected, got {args.inputs}, {args.steps}, "
                f"{args.budget}")
    count, steps = (2, 10) if args.quick else (args.inputs, args.steps)
    out, workdir = Path(args.out), Path(args.workdir)
    out.mkdir(parents=True, exist_ok=True)
    workdir.mkdir(parents=True, exist_ok=True)
    ours = _run_worker("ours", {"model_name": args.model, "count": count, "steps": steps, "budget": args.budget},
                       workdir)
    torch_seconds = _run_worker("torch", {"model_name": args.model, "count": 1,
                                          "steps": 3 if args.quick else TORCH_STEPS}, workdir)
    result = {"ours": ours, "torch": torch_seconds, "rows": summarise(ours, torch_seconds)}
    compact = {**result, "ours": {k: v for k, v in ours.items() if k != "walks"}}
    _write(out / "yardsticks.json", json.dumps(compact, indent=1))
    page = render(result)
    _write(out / "yardsticks.md", page)
    print(page)
    return result


if __name__ == "__main__":
    main()
