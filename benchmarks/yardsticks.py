"""Bounded exploration yardsticks: how different the inputs are that the model still treats as
the same, per second, measured inside the feasible box in the input's own units.

Two subcommands, each a side-by-side run on the same inputs of:

* **ours**: the recommended SiMEC (Newton corrector on the probabilities, coherent direction,
  adaptive step, active box, joint block), tolerance half the drift budget;
* **the reference algorithm** at eta = 1 and eta = 10: our engine's paper path (the authors'
  step rule, absolute threshold 0.01, per-token blocks, the point clipped to the box), i.e.
  their algorithm with JAX's random draws; its seconds per iteration also as measured on the
  authors' loop in PyTorch (``benchmarks/torch_reference.py``, in its own process, with and
  without its per-iteration ``gc.collect()``).

``pixels``: the shipped MNIST ViT (``--model``, default ``mnist-vit``) in pixel space
(``model.pixel_space()``, box [0, 1]), the first ``--inputs`` held-out digits of
:func:`manifold_jax.data.mnist_split`, all patches explored, run as one batch. Measured: the
farthest image's pixel L2 distance from the digit and how many of its 784 pixels changed by
more than 1/255.

``text``: the shipped MiniLM topic classifier ``minilm-topics`` in its embedding space, the
first ``--inputs`` held-out sentences of :func:`manifold_jax.data.sentence_split`, every word
explored, one sentence at a time (the joint block needs one token count per batch), inside the
theoretical embedding box (``model.bounds("theoretical", n)``: per position and coordinate the
min / max of the embedding module's output over the whole vocabulary, so that every sentence's
embedding lies in it). Measured: the farthest point's L2 distance from x0, also relative to the
box's extent (its diagonal over the explored positions), and what it decodes to: the
nearest-token sentence (Algorithm 3), how many words changed, and the model's *verified*
prediction on that real sentence (tokenised and run again), beside the distinct decoded
sentences the walk passed through and how many of them the model still gives the sentence's
class.

For each walk: the *drift* (max |p - p0| over the class probabilities, at the end) and, over
the points before the drift first exceeds ``--budget``, the farthest point from x0. At *equal
iterations* every walk runs ``--steps``; at *equal wall time* the reference gets the iterations
the PyTorch loop completes in our walk's time, with and without its per-iteration
``gc.collect()`` (its figures are read off the paper path's trajectory at that iteration,
capped at ``--steps``).

    python benchmarks/yardsticks.py pixels --out benchmarks/results            # RESULTS.md's tables
    python benchmarks/yardsticks.py text --inputs 6 --steps 300 --out benchmarks/results
    python benchmarks/yardsticks.py text --quick --out /tmp/y                   # CI size
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
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
TEXT_MODEL = "minilm-topics"
VERIFIED_TOLERANCE = 0.05
"""A decoded sentence counts as treated like the original when the model gives it the original's
class and moves no class probability by more than this (on the sentence as text)."""
TEXT_LABELS = ("text", "verified_class", "kept_text")
"""Per-sentence labels of the text yardstick: listed sentence by sentence, never averaged."""
TEXT_KEYS = (*TEXT_LABELS, "verified_drift", "kept_drift")
"""The per-sentence figures the text page lists sentence by sentence."""
OUTPUTS = {"pixels": "yardsticks", "text": "yardsticks_text"}
"""Each subcommand's file stem in ``--out`` (``.json`` and ``.md``)."""


def budget_window(probs: np.ndarray, iterations: np.ndarray, budget: float,
                  upto: int | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """The points of a walk that count: probs (S, k), iterations (S,) (0 first).

    Returns the indices of the points at iterations <= ``upto`` (all when None), their drift
    max |p - p0| (one per index) and how many of them come before the drift first exceeds
    ``budget`` (at least 1: the start)."""
    iterations = np.asarray(iterations)
    counted = np.flatnonzero(iterations <= (iterations[-1] if upto is None else upto))
    probs = np.asarray(probs, np.float64)[counted]
    drift = np.abs(probs - probs[0]).max(axis=1)
    out = np.flatnonzero(drift > budget)
    return counted, drift, len(counted) if out.size == 0 else int(out[0])


def within_budget(points: np.ndarray, probs: np.ndarray, iterations: np.ndarray, budget: float,
                  upto: int | None = None) -> dict[str, Any]:
    """The farthest image of a walk before its drift first exceeds ``budget``.

    points (S, ...) saved inputs in pixels, probs (S, k) class probabilities, iterations (S,)
    their iteration numbers (0 first); ``upto``: only points at iterations <= upto count.
    Returns the drift at the last counted point, the iterations inside the budget, the
    largest pixel L2 distance from points[0] inside it, the iteration where it was reached
    and the number of coordinates changed by more than 1/255 there."""
    counted, drift, inside = budget_window(probs, iterations, budget, upto)
    iterations = np.asarray(iterations)[counted]
    points = np.asarray(points, np.float64).reshape(len(points), -1)[counted]
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


def sentence_within_budget(walk: dict[str, Any], budget: float, upto: int | None = None) -> dict[str, Any]:
    """The farthest point of one sentence's walk before its drift first exceeds ``budget``, and
    what the walk decodes to there.

    ``walk``: per saved point (S of them) its ``iterations``, ``distance`` |x - x0|, class
    ``probs`` (S, k), the nearest-token sentence (``texts``, changed words marked),
    ``changed`` (words changed) and the model's ``verified`` probabilities (S, k) on that
    sentence; ``diagonal``: the box's extent over the explored positions. Returns the counts of
    :func:`within_budget` plus the relative distance, the farthest point's decoded sentence
    with its verified class and drift, the distinct decoded sentences other than the original
    inside the budget with how many of them keep the sentence's class and how many are also
    within :data:`VERIFIED_TOLERANCE` of its probabilities, and the one of the latter with the
    most words changed (``kept_*``; the original sentence when there is none)."""
    counted, drift, inside = budget_window(walk["probs"], walk["iterations"], budget, upto)
    iterations = np.asarray(walk["iterations"])[counted]
    distance = np.asarray(walk["distance"], np.float64)[counted]
    verified = np.asarray(walk["verified"], np.float64)[counted]
    changed = np.asarray(walk["changed"])[counted]
    texts = [walk["texts"][i] for i in counted]
    label = int(np.argmax(np.asarray(walk["probs"])[0]))
    best = int(np.argmax(distance[:inside]))
    same = np.argmax(verified, axis=1) == label
    close = same & (np.abs(verified - verified[0]).max(axis=1) <= VERIFIED_TOLERANCE)
    decoded = {texts[i]: (bool(same[i]), bool(close[i])) for i in range(inside) if changed[i] > 0}
    kept = int(np.argmax(np.where(close[:inside], changed[:inside], -1)))  # the first of the most changed
    return {
        "iterations": int(iterations[-1]),
        "drift": float(drift[-1]),
        "budget_iterations": int(iterations[inside - 1]),
        "max_l2": float(distance[best]),
        "relative_l2": float(distance[best] / walk["diagonal"]),
        "max_l2_iteration": int(iterations[best]),
        "words_changed": int(changed[best]),
        "verified_same_class": bool(np.argmax(verified[best]) == label),
        "verified_drift": float(np.abs(verified[best] - verified[0]).max()),
        "sentences": len(decoded),
        "sentences_same_class": sum(same for same, _ in decoded.values()),
        "sentences_close": sum(close for _, close in decoded.values()),
        "kept_words": int(changed[kept]),
        "kept_drift": float(np.abs(verified[kept] - verified[0]).max()),
        "text": texts[best],
        "verified_class": int(np.argmax(verified[best])),
        "kept_text": texts[kept],
    }


# ----------------------------------------------------------------------------- JAX side


def _digits(count: int) -> tuple[np.ndarray, np.ndarray]:
    from manifold_jax.data import mnist_split

    split = mnist_split(0)
    return split.test_images[:count, ..., None].astype(np.float32), split.test_labels[:count]


def _sentences(count: int) -> tuple[list[str], np.ndarray, tuple[str, ...]]:
    from manifold_jax.data import sentence_split

    split = sentence_split(0)
    return split.test_texts[:count], split.test_labels[:count], split.class_names


def _walk_options(budget: float) -> dict[str, dict[str, Any]]:
    """The options of every walk, by name: ours (tolerance half the budget) and the paper path at
    each reference eta."""
    import manifold_jax as mj

    tol = budget / 2
    return {
        "ours": dict(eta=0.05, corrector=mj.Newton(tol=tol, max_iters=4, on="probabilities"), direction="coherent",
                     step_rule=mj.Adaptive(tol=tol, max_step=2.0, on="probabilities"), box="active", blocks="joint"),
        **{f"reference eta {eta:g}": dict(eta=eta, threshold=mj.Absolute(0.01), step_rule="reference")
           for eta in REFERENCE_ETAS},
    }


def _timed_simec(head: Any, x0: Any, run: dict[str, Any], steps: int) -> tuple[Any, float]:
    """(trajectory, seconds) of a SiMEC run after a one-chunk warm-up that compiles its program."""
    import jax

    import manifold_jax as mj

    jax.block_until_ready(mj.simec(head, x0, key=jax.random.key(0), steps=run["chunk_size"], **run).x)
    t0 = time.perf_counter()
    traj = mj.simec(head, x0, key=jax.random.key(1), steps=steps, **run)
    jax.block_until_ready(traj.x)
    return traj, time.perf_counter() - t0


def _step_counts(traj: Any) -> dict[str, int]:
    import manifold_jax as mj

    return {"rejected": int(np.asarray(traj.rejected)[..., -1].sum()),
            "unconverged": int(((np.asarray(traj.status) & mj.UNCONVERGED) != 0).sum())}


def _ours(model_name: str, count: int, steps: int, budget: float) -> dict[str, Any]:
    """Every JAX walk on the same digits, as one batch: ours and the paper path at each reference eta."""
    import jax

    from manifold_jax.models import load

    pixels = load(model_name).pixel_space()
    images, labels = _digits(count)
    x0, ctx = pixels.embed(images)
    common = dict(args=(dict(ctx),), select=ctx["token_mask"], bounds=pixels.bounds("theoretical"), save_every=1,
                  chunk_size=min(50, steps))
    rows = {}
    for name, options in _walk_options(budget).items():
        traj, seconds = _timed_simec(pixels.head, x0, dict(common, **options), steps)
        probs = np.asarray(jax.nn.softmax(np.asarray(traj.y, np.float64), axis=-1))
        rows[name] = {
            "seconds_per_iteration": seconds / count / steps,  # per digit: the batch shares the wall time
            **_step_counts(traj),
            "points": np.asarray(traj.x).tolist(), "probs": probs.tolist(),
            "iterations": np.asarray(traj.iteration).tolist(),
        }
    return {"model": model_name, "labels": labels.tolist(), "steps": steps, "budget": budget,
            "patch_dim": int(x0.shape[-1]), "patches": int(x0.shape[1]), "walks": rows}


def _decoded_walk(model: Any, points: np.ndarray, one: dict[str, Any]) -> dict[str, Any]:
    """Each saved point (S, n, d) of one sentence decoded to its nearest-token sentence and verified."""
    from manifold_jax.analysis import softmax
    from manifold_jax.interpret import decoded_sentences, interpret

    batch = {k: np.asarray(v)[None] for k, v in one.items()}
    found = interpret(model, points[None], batch)
    ids = found.inputs[0]
    s = len(ids)
    original = np.repeat(batch["input_ids"], s, 0)
    explored = np.asarray(one["token_mask"], bool)
    return {"texts": decoded_sentences(model, ids, original, np.repeat(batch["attention_mask"], s, 0)),
            "changed": ((ids != original) & explored).sum(axis=1).tolist(),
            "verified": softmax(np.asarray(found.logits[0], np.float64)).tolist()}


def _ours_text(count: int, steps: int, budget: float, box: str) -> dict[str, Any]:
    """Every JAX walk on the same sentences, one sentence at a time, each point decoded and verified;
    the box is written to ``box`` (lo, hi stacked: (2, n, d)) for the PyTorch side."""
    import jax

    from manifold_jax.analysis import softmax
    from manifold_jax.models import load

    model = load(TEXT_MODEL)
    texts, labels, names = _sentences(count)
    n = max(len(model.tokenizer(t)["input_ids"]) for t in texts)
    x0, ctx = model.embed(texts, max_length=n)
    lo, hi = model.bounds("theoretical", n)
    np.save(box, np.stack([np.asarray(lo), np.asarray(hi)]))
    select = np.asarray(ctx["token_mask"], bool)
    width = np.asarray(hi, np.float64) - np.asarray(lo, np.float64)
    rows = {}
    for name, options in _walk_options(budget).items():
        items, seconds, counts = [], [], {"rejected": 0, "unconverged": 0}
        for b in range(count):
            one = {k: np.asarray(v)[b] for k, v in ctx.items()}
            run = dict(args=(one,), select=select[b], bounds=(lo, hi), save_every=1, chunk_size=min(50, steps),
                       **options)
            traj, wall = _timed_simec(model.head, x0[b], run, steps)
            seconds.append(wall / steps)
            counts = {k: counts[k] + v for k, v in _step_counts(traj).items()}
            points = np.asarray(traj.x)
            items.append({
                "iterations": np.asarray(traj.iteration).tolist(),
                "distance": np.linalg.norm((points - np.asarray(x0[b])).reshape(len(points), -1), axis=1).tolist(),
                "probs": softmax(np.asarray(traj.y, np.float64)).tolist(),
                "diagonal": float(np.sqrt((width[select[b]] ** 2).sum())),
                **_decoded_walk(model, points, one),
            })
        rows[name] = {"seconds_per_iteration": float(np.median(seconds)), **counts, "items": items}
    y0 = np.asarray(jax.vmap(model.head)(x0, dict(ctx)))
    return {"model": TEXT_MODEL, "texts": texts, "labels": labels.tolist(), "class_names": list(names),
            "steps": steps, "budget": budget, "tokens": select.sum(axis=1).tolist(), "d": int(x0.shape[-1]),
            "logits_x0": y0[0].tolist(), "walks": rows}


# ----------------------------------------------------------------------------- PyTorch side


def _reference_seconds(heads: list[Any], x0s: list[Any], steps: int, **options: Any) -> dict[str, float]:
    """Median seconds per iteration of the authors' loop at each reference eta, with and without its
    per-iteration gc.collect() (the first iteration of each input dropped); ``options``: the box
    and the explored tokens of :func:`~benchmarks.torch_reference.run_reference_batch`."""
    from benchmarks.torch_reference import run_reference_batch

    out: dict[str, float] = {}
    for eta in REFERENCE_ETAS:
        for gc in (True, False):
            runs = run_reference_batch(heads, x0s, steps=steps, eta=eta, threshold=0.01, algorithm="simec", seed=0,
                                       save_each=steps, collect_garbage=gc, **options)
            out[f"eta {eta:g}, gc {'on' if gc else 'off'}"] = float(np.median([np.median(r.seconds[1:]) for r in runs]))
    return out


def _torch(model_name: str, count: int, steps: int) -> dict[str, Any]:
    """Seconds per iteration of the authors' loop in pixel space (eta 1 and 10), with and
    without its per-iteration gc.collect()."""
    import torch

    from benchmarks.torch_embedded import mnist_vit_pixel_head

    torch.manual_seed(0)
    head, patches = mnist_vit_pixel_head(model_name)
    images, _ = _digits(count)
    return _reference_seconds([head] * count, [patches(img) for img in images], steps, lo=0.0, hi=1.0)


def _torch_text(count: int, steps: int, box: str) -> dict[str, Any]:
    """Seconds per iteration of the authors' loop on the first ``count`` sentences in the same
    theoretical box (eta 1 and 10, with and without gc.collect()), the words explored, and the
    PyTorch twin's logits at the first sentence's x0."""
    import torch
    import transformers

    from benchmarks.torch_embedded import minilm_topics_head
    from manifold_jax.models.sentence import minilm_path

    torch.manual_seed(0)
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_path())
    lo, hi = np.load(box)
    seconds: dict[str, list[float]] = {}
    logits = None
    for text in _sentences(count)[0]:
        enc = tokenizer(text)
        head, x0 = minilm_topics_head(np.asarray(enc["input_ids"]), np.asarray(enc["attention_mask"]))
        if logits is None:
            with torch.no_grad():
                logits = head(x0).numpy().tolist()
        n = x0.shape[0]
        # one sentence per call: the box rows are those of its own length
        for k, v in _reference_seconds([head], [x0], steps, lo=lo[:n], hi=hi[:n],
                                       select=[np.arange(1, n - 1)]).items():
            seconds.setdefault(k, []).append(v)
    return {"seconds": {k: float(np.median(v)) for k, v in seconds.items()}, "logits_x0": logits}


# ----------------------------------------------------------------------------- orchestration


def _worker(task: str, args: dict[str, Any], out: Path) -> None:
    result = {"ours": _ours, "torch": _torch, "ours_text": _ours_text, "torch_text": _torch_text}[task](**args)
    out.write_text(json.dumps(result))


def _run_worker(task: str, args: dict[str, Any], workdir: Path) -> Any:
    out = workdir / f"yardsticks-{task}.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, str(Path(__file__).resolve()), "_worker", task, json.dumps(args), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"yardsticks {task} failed:\n{proc.stderr[-4000:]}")
    return json.loads(out.read_text())


Measure = Callable[[str, int, int | None], dict[str, Any]]
"""(walk name, item, upto) -> the item's figures inside the budget."""


def _comparisons(ours: dict[str, Any], torch_seconds: dict[str, float], measure: Measure, items: int,
                 labels: tuple[str, ...] = (), listed: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """One row per (walk, comparison): medians over the items of ``measure``'s numbers (booleans
    counted; ``labels`` neither), and the ``listed`` figures kept item by item (``per_item``)."""
    walks = ours["walks"]
    ours_spi = walks["ours"]["seconds_per_iteration"]
    wall = ours_spi * ours["steps"]

    def row(name: str, comparison: str, spi: float, upto: int | None, spi_source: str) -> dict[str, Any]:
        w = walks[name]
        per_item = [measure(name, b, upto) for b in range(items)]
        numbers = [k for k, v in per_item[0].items()
                   if isinstance(v, int | float) and not isinstance(v, bool) and k not in labels]
        med = {k: float(np.median([d[k] for d in per_item])) for k in numbers}
        counted = {k: sum(d[k] for d in per_item) for k, v in per_item[0].items() if isinstance(v, bool)}
        seconds = med["max_l2_iteration"] * spi
        out = {"walk": name, "comparison": comparison, "seconds_per_iteration": spi, "seconds_source": spi_source,
               **med, **counted, "max_drift": float(np.max([d["drift"] for d in per_item])),
               "max_l2_per_second": med["max_l2"] / seconds if seconds > 0 else 0.0,
               "rejected": w["rejected"] / items, "unconverged": w["unconverged"] / items}
        if listed:
            out["per_item"] = [{k: d[k] for k in listed} for d in per_item]
        return out

    rows = [row("ours", "equal iterations = equal wall time", ours_spi, None, "ours (JAX)")]
    for eta in REFERENCE_ETAS:
        name = f"reference eta {eta:g}"
        spi = torch_seconds[f"eta {eta:g}, gc on"]
        rows.append(row(name, "equal iterations", spi, None, "authors' loop (PyTorch)"))
        rows.append(row(name, "equal wall time", spi, min(int(wall / spi), ours["steps"]), "authors' loop (PyTorch)"))
        spi = torch_seconds[f"eta {eta:g}, gc off"]
        rows.append(row(name, "equal wall time, reference without gc.collect()", spi,
                        min(int(wall / spi), ours["steps"]), "authors' loop without gc.collect() (PyTorch)"))
    return rows


def summarise(ours: dict[str, Any], torch_seconds: dict[str, float]) -> list[dict[str, Any]]:
    """The pixel rows: medians over the digits of :func:`within_budget`."""
    budget = ours["budget"]
    arrays = {name: {k: np.asarray(w[k]) for k in ("points", "probs", "iterations")}
              for name, w in ours["walks"].items()}  # each walk's JSON lists read once, not once per row and digit

    def measure(name: str, b: int, upto: int | None) -> dict[str, Any]:
        a = arrays[name]
        return within_budget(a["points"][b], a["probs"][b], a["iterations"], budget, upto)

    return _comparisons(ours, torch_seconds, measure, len(ours["labels"]))


def summarise_text(ours: dict[str, Any], torch_seconds: dict[str, float]) -> list[dict[str, Any]]:
    """The sentence rows: medians over the sentences of :func:`sentence_within_budget`."""
    def measure(name: str, b: int, upto: int | None) -> dict[str, Any]:
        return sentence_within_budget(ours["walks"][name]["items"][b], ours["budget"], upto)

    return _comparisons(ours, torch_seconds, measure, len(ours["texts"]), TEXT_LABELS, TEXT_KEYS)


def _seconds_line(ours: dict[str, Any], torch_seconds: dict[str, float], lead: str) -> str:
    return (f"Seconds per iteration of the authors' loop in PyTorch{lead}: "
            + ", ".join(f"{k}: {v:.3g} s" for k, v in torch_seconds.items())
            + "; our engine's paper path (JAX): "
            + ", ".join(f"eta {eta:g}: {ours['walks'][f'reference eta {eta:g}']['seconds_per_iteration']:.3g} s"
                        for eta in REFERENCE_ETAS))


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
    lines += ["", _seconds_line(ours, torch_seconds, ", pixel space (per digit)"), ""]
    return "\n".join(lines)


def render_text(result: dict[str, Any]) -> str:
    ours, rows, torch_seconds = result["ours"], result["rows"], result["torch"]
    count = len(ours["texts"])
    names = ours["class_names"]
    lines = [
        "# Bounded exploration yardsticks (text: the theoretical embedding box)", "",
        f"Model `{ours['model']}` in its embedding space (d = {ours['d']}), {count} held-out "
        f"sentence{'s' * (count > 1)} "
        f"({', '.join(str(t) for t in ours['tokens'])} words explored), {ours['steps']} iterations, float32, "
        f"drift budget max |dp| <= {ours['budget']:g}. Medians over the sentences (max drift: the largest; "
        f"same class: how many of the {count} sentences). The PyTorch twin's logits at the first sentence "
        f"differ from ours by at most {result['twin_max_abs_logit_diff']:.2g}.", "",
        "| walk | comparison | iterations | s/it | drift at the end | iterations within the budget | "
        "largest L2 within it | relative to the box's extent | words changed in its decoded sentence | "
        "decoded sentence keeps the class (verified) | its verified drift | distinct decoded sentences "
        f"within the budget | of them keeping the class | and within {VERIFIED_TOLERANCE:g} of its probabilities | "
        "most words changed in one of those | L2 per second | rejected steps per sentence |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['walk']} | {r['comparison']} | {r['iterations']:.0f} | {r['seconds_per_iteration']:.3g} | "
            f"{r['max_drift']:.2g} | {r['budget_iterations']:.0f} | {r['max_l2']:.3g} | {r['relative_l2']:.3g} | "
            f"{r['words_changed']:.0f} | {r['verified_same_class']} of {count} | {r['verified_drift']:.2g} | "
            f"{r['sentences']:.0f} | {r['sentences_same_class']:.0f} | {r['sentences_close']:.0f} | "
            f"{r['kept_words']:.0f} | "
            f"{r['max_l2_per_second']:.3g} | "
            f"{r['rejected']:.3g} |"
        )
    lines += ["", _seconds_line(ours, torch_seconds, " (per sentence)"), "",
              "Sentence by sentence at equal iterations, inside the budget: the farthest point decoded to its "
              "nearest-token sentence (changed words marked *) with the model's prediction on that sentence as "
              "text, and the decoded sentence with the most words changed that the model still gives the "
              f"sentence's class with every probability within {VERIFIED_TOLERANCE:g} (the sentence itself when "
              "there is none).", "",
              "| sentence (class) | walk | farthest point, decoded | its verified class, drift | "
              "most changed sentence treated alike | its verified drift |",
              "|---|---|---|---|---|---|"]
    equal = [r for r in rows if r["comparison"].startswith("equal iterations")]
    from manifold_jax.report.text import markdown_text as cell  # a decoded "|" or "<" stays text

    for b, text in enumerate(ours["texts"]):
        for r in equal:
            d = r["per_item"][b]
            lines.append(f"| {cell(text)} ({cell(names[ours['labels'][b]])}) | {r['walk']} | {cell(d['text'])} | "
                         f"{cell(names[d['verified_class']])}, {d['verified_drift']:.2g} | {cell(d['kept_text'])} | "
                         f"{d['kept_drift']:.2g} |")
    return "\n".join([*lines, ""])


def _pixels(args: argparse.Namespace, count: int, steps: int, workdir: Path) -> tuple[dict[str, Any], str]:
    ours = _run_worker("ours", {"model_name": args.model, "count": count, "steps": steps, "budget": args.budget},
                       workdir)
    torch_seconds = _run_worker("torch", {"model_name": args.model, "count": 1,
                                          "steps": 3 if args.quick else TORCH_STEPS}, workdir)
    result = {"ours": ours, "torch": torch_seconds, "rows": summarise(ours, torch_seconds)}
    compact = {**result, "ours": {k: v for k, v in ours.items() if k != "walks"}}
    return result, json.dumps(compact, indent=1)


def _text(args: argparse.Namespace, count: int, steps: int, workdir: Path) -> tuple[dict[str, Any], str]:
    box = str(workdir / "yardsticks-text-box.npy")
    ours = _run_worker("ours_text", {"count": count, "steps": steps, "budget": args.budget, "box": box}, workdir)
    torch = _run_worker("torch_text", {"count": 1, "steps": 3 if args.quick else TORCH_STEPS, "box": box}, workdir)
    return text_result(ours, torch)


def text_result(ours: dict[str, Any], torch: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The text yardstick's result and its JSON (without the walks' points) from the two workers' outputs."""
    rows = summarise_text(ours, torch["seconds"])
    twin = float(np.max(np.abs(np.asarray(torch["logits_x0"]) - np.asarray(ours["logits_x0"]))))
    result = {"ours": ours, "torch": torch["seconds"], "rows": rows, "twin_max_abs_logit_diff": twin}
    compact = {**result, "ours": {k: v for k, v in ours.items() if k != "walks"}}
    return result, json.dumps(compact, indent=1)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_worker":
        _worker(argv[1], json.loads(argv[2]), Path(argv[3]))
        return {}
    from manifold_jax.atomic import write_text  # a killed run keeps the previous files

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("command", choices=tuple(OUTPUTS))
    p.add_argument("--model", default="mnist-vit",
                   help="pixels: mnist-vit (default) or the directory of a saved MNIST ViT of ours")
    p.add_argument("--inputs", type=int, default=4, help="held-out digits or sentences (default 4)")
    p.add_argument("--steps", type=int, default=200, help="iterations of every JAX walk (default 200)")
    p.add_argument("--budget", type=float, default=1e-4, help="drift budget on the probabilities (default 1e-4)")
    p.add_argument("--out", default="benchmarks/results",
                   help="folder for yardsticks.json/.md (pixels) or yardsticks_text.json/.md (text)")
    p.add_argument("--workdir", default="/tmp/manifold-jax-bench", help="scratch folder of the worker processes")
    p.add_argument("--quick", action="store_true", help="tiny sizes, for the test suite")
    args = p.parse_args(argv)
    if args.inputs < 1 or args.steps < 2 or not 0 < args.budget < 1:
        p.error(f"--inputs >= 1, --steps >= 2 and 0 < --budget < 1 expected, got {args.inputs}, {args.steps}, "
                f"{args.budget}")
    quick = {"pixels": (2, 10), "text": (1, 6)}[args.command]
    count, steps = quick if args.quick else (args.inputs, args.steps)
    out, workdir = Path(args.out), Path(args.workdir)
    out.mkdir(parents=True, exist_ok=True)
    workdir.mkdir(parents=True, exist_ok=True)
    run, page_of = {"pixels": (_pixels, render), "text": (_text, render_text)}[args.command]
    result, compact = run(args, count, steps, workdir)
    stem = OUTPUTS[args.command]
    write_text(out / f"{stem}.json", compact)
    page = page_of(result)
    write_text(out / f"{stem}.md", page)
    print(page)
    return result


if __name__ == "__main__":
    main()
