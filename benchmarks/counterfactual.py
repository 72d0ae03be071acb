"""Minimal counterfactuals against minimal-norm attacks on the same model and inputs.

``--model mnist-vit`` (the default): the shipped MNIST ViT in pixel space, the [0, 1] box,
held-out digits of ``mnist_split(seed=0)``. ``--model minilm-topics``: the shipped topic
classifier in embedding space, the held-out sentences of ``sentence_split(0)`` (the 54 its
head never saw), the words' embeddings explored ([CLS], [SEP] and padding fixed), inside the
theoretical embedding box; distances in embedding units. Per input two targets: its
runner-up class and a random other class (seeded). Methods, side by side in one process:

* ``ours``        ``mj.counterfactual`` (margin "other", overshoot 1e-3 logits, tol 1e-2);
* ``fmn``         foolbox's fast minimum-norm attack, L2, targeted (``L2FMNAttack``, its defaults:
                  100 steps), on the same JAX function through eagerpy. foolbox takes one scalar
                  box: for text it gets the embedding box's overall [min, max], its result is
                  clipped to the per-coordinate box, and the fixed tokens are kept fixed by
                  attacking x0 + m * (z - x0), m the explorable tokens;
* ``deepfool``    targeted DeepFool: linearise f_t - f_s, jump to the linear boundary with 2 %
                  overshoot, clip to the box, repeat (at most 50 steps). foolbox's DeepFool has no
                  targeted mode, so this is the 25-line version;
* ``flip-walk``   our previous counterfactual run: targeted SiMExp, adaptive step (tol 1e-2 on the
                  probabilities), ``stop="flip"``, active box, 200 steps, eta 0.5.

Per method: the fraction of pairs reached (the clipped point predicted as the target), the
median and quartiles of the L2 distance (pixels or embedding units, over reached pairs), the median KKT residual
at the returned point (the same certificate for all: ``kkt_residual`` with the margin's
competing classes), seconds per pair batched (all pairs in one call, after a warm-up call that
compiles) and one pair at a time (the first ``--single`` pairs, warm). ``--quick``: 1 input.

    python benchmarks/counterfactual.py --digits 30 --out benchmarks/results
    python benchmarks/counterfactual.py --model minilm-topics --digits 30 --single 2 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import manifold_jax as mj  # noqa: E402
from manifold_jax.atomic import write_text  # noqa: E402
from manifold_jax.data import mnist_split, sentence_split  # noqa: E402
from manifold_jax.explore.counterfactuals import kkt_residual  # noqa: E402
from manifold_jax.models import load  # noqa: E402

METHODS = ("ours", "fmn", "deepfool", "flip-walk")
MODELS = ("mnist-vit", "minilm-topics")
RESULT_FILES = {"mnist-vit": "counterfactual", "minilm-topics": "counterfactual_text"}
"""The JSON / markdown file name of each model's run in ``--out``."""


@dataclass(frozen=True)
class Task:
    """The model and its pairs: x0 (P, n, d), ctx batched like x0, targets and sources (P,), the box
    (lo, hi), each (n, d), and the explorable tokens (P, n)."""

    model: Any
    x0: np.ndarray
    ctx: Any
    target: np.ndarray
    source: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    tokens: np.ndarray

    def part(self, sl: slice) -> Task:
        """The pairs of ``sl``."""
        return dataclasses.replace(self, x0=self.x0[sl], ctx=jax.tree.map(lambda a: a[sl], self.ctx),
                                   target=self.target[sl], source=self.source[sl], tokens=self.tokens[sl])

    @property
    def movable(self) -> np.ndarray:
        """(P, n, 1) float: 1 on the explorable tokens."""
        return self.tokens[:, :, None].astype(self.x0.dtype)


def pairs(model: Any, digits: int, seed: int = 0) -> tuple[np.ndarray, Any, np.ndarray, np.ndarray]:
    """x0 (2N, n, d), the per-item context, targets (2N,) and sources (2N,): runner-up and a random other class."""
    images = mnist_split(seed=seed).test_images[:digits, ..., None]
    x0, ctx = model.embed(images)
    return pairs_of(model, x0, ctx, seed)


def sentence_pairs(model: Any, count: int, seed: int = 0) -> tuple[np.ndarray, Any, np.ndarray, np.ndarray]:
    """:func:`pairs` for the first ``count`` held-out sentences, padded to the longest."""
    texts = sentence_split(seed).test_texts[:count]
    longest = max(len(model.tokenizer(t)["input_ids"]) for t in texts)
    x0, ctx = model.embed(texts, max_length=longest)
    return pairs_of(model, x0, ctx, seed)


def pairs_of(model: Any, x0: jax.Array, ctx: Any, seed: int) -> tuple[np.ndarray, Any, np.ndarray, np.ndarray]:
    """Each input twice, toward its runner-up class and toward a random other class."""
    logits = np.asarray(jax.vmap(model.head)(x0, ctx))
    order = np.argsort(logits, axis=1)
    rng = np.random.default_rng(seed)
    source = order[:, -1]
    random = np.array([rng.choice([c for c in range(logits.shape[1]) if c not in (s, r)])
                       for s, r in zip(source, order[:, -2], strict=True)])
    both = lambda a: np.concatenate([a, a])  # noqa: E731
    ctx2 = jax.tree.map(lambda a: jnp.concatenate([a, a]), ctx)
    return np.asarray(both(np.asarray(x0))), ctx2, np.concatenate([order[:, -2], random]), both(source)


def run_ours(t: Task) -> np.ndarray:
    out = mj.counterfactual(t.model.head, t.x0, t.target, args=(t.ctx,), select=t.tokens, bounds=(t.lo, t.hi))
    return np.asarray(out.x)


def run_flip_walk(t: Task) -> np.ndarray:
    traj = mj.simexp(t.model.head, t.x0, key=jax.random.key(3), steps=200, eta=0.5, target=t.target, args=(t.ctx,),
                     select=t.tokens, bounds=(t.lo, t.hi), step_rule="adaptive", tol=1e-2,
                     on="probabilities", stop="flip", box="active", save_every=200, progress=False)
    return np.asarray(traj.final.x)


def _batched_logits(t: Task) -> Callable[[jax.Array], jax.Array]:
    """The batch's logits as one function of z (P, n, d); where some tokens are fixed, of x0 + m (z - x0)."""
    if t.tokens.all():  # every digit has the same context (all 49 patches)
        one = jax.tree.map(lambda a: a[0], t.ctx)
        return jax.jit(jax.vmap(lambda x: t.model.head(x, one)))
    x0, m = jnp.asarray(t.x0), jnp.asarray(t.movable)
    return jax.jit(lambda z: jax.vmap(t.model.head)(x0 + m * (z - x0), t.ctx))


def run_fmn(t: Task) -> np.ndarray:
    import foolbox as fb

    fmodel = fb.JAXModel(_batched_logits(t), bounds=(float(t.lo.min()), float(t.hi.max())))
    criterion = fb.criteria.TargetedMisclassification(jnp.asarray(t.target))
    _, clipped, _ = fb.attacks.L2FMNAttack()(fmodel, jnp.asarray(t.x0), criterion, epsilons=None)
    return np.asarray(t.x0 + t.movable * (np.asarray(clipped) - t.x0)) if not t.tokens.all() else np.asarray(clipped)


def run_deepfool(t: Task, steps: int = 50, overshoot: float = 0.02) -> np.ndarray:
    """Targeted DeepFool on f_t - f_s: the linear boundary's closest point, 2 % past it, clipped, repeated."""
    logits = _batched_logits(t)
    lo, hi, m = jnp.asarray(t.lo), jnp.asarray(t.hi), jnp.asarray(t.movable)

    @jax.jit
    def step(x: jax.Array, t: jax.Array, s: jax.Array, x_start: jax.Array) -> tuple[jax.Array, jax.Array]:
        def margin(z: jax.Array) -> jax.Array:
            y = logits(z)
            return jnp.sum(jnp.take_along_axis(y, t[:, None], 1) - jnp.take_along_axis(y, s[:, None], 1))
        y = logits(x)
        value = jnp.take_along_axis(y, t[:, None], 1)[:, 0] - jnp.take_along_axis(y, s[:, None], 1)[:, 0]
        g = jax.grad(margin)(x) * m
        gg = jnp.sum(g * g, axis=(1, 2))
        r = (-value / jnp.maximum(gg, 1e-20))[:, None, None] * g
        total = x - x_start + r
        done = value > 0
        return jnp.where(done[:, None, None], x, jnp.clip(x_start + (1 + overshoot) * total, lo, hi)), jnp.all(done)

    x = jnp.asarray(t.x0)
    target, source = jnp.asarray(t.target), jnp.asarray(t.source)
    for _ in range(steps):
        x, done = step(x, target, source, jnp.asarray(t.x0))
        if bool(done):
            break
    return np.asarray(x)


def measure(task: Task, x: np.ndarray) -> dict[str, np.ndarray]:
    """Reached, L2 distance and the KKT residual (margin "other", the two best other classes) per pair."""
    model, x0, lo, hi = task.model, task.x0, jnp.asarray(task.lo), jnp.asarray(task.hi)
    x = np.clip(x, task.lo, task.hi).astype(x0.dtype)

    def one(xi: jax.Array, x0i: jax.Array, t: jax.Array, c: Any, tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
        y = model.head(xi, c)
        others = jnp.where(jnp.arange(y.shape[0]) == t, -jnp.inf, y)
        js = jax.lax.top_k(others, 2)[1]
        grads = jax.vmap(lambda j: jax.grad(lambda z: model.head(z, c)[t] - model.head(z, c)[j])(xi))(js)
        cs = y[t] - y[js]
        movable = jnp.broadcast_to(tokens[:, None], xi.shape)
        return jnp.argmax(y) == t, kkt_residual(xi, x0i, grads, cs <= cs[0] + 5e-4, lo=lo, hi=hi, movable=movable)

    hit, kkt = jax.jit(jax.vmap(one))(jnp.asarray(x), jnp.asarray(x0), jnp.asarray(task.target), task.ctx,
                                       jnp.asarray(task.tokens))
    return {"reached": np.asarray(hit), "distance": np.linalg.norm((x - x0).reshape(len(x), -1), axis=1),
            "kkt": np.asarray(kkt)}


def summary(name: str, m: dict[str, np.ndarray], batched_s: float, single_s: float) -> dict[str, Any]:
    d = m["distance"][m["reached"]]
    q = np.percentile(d, [25, 50, 75]) if d.size else [float("nan")] * 3
    return {"method": name, "pairs": int(m["reached"].size), "reached": float(m["reached"].mean()),
            "l2_q1": float(q[0]), "l2_median": float(q[1]), "l2_q3": float(q[2]),
            "kkt_median": float(np.median(m["kkt"][m["reached"]])) if d.size else float("nan"),
            "s_per_pair_batched": batched_s, "s_per_pair_single": single_s}


def timed(fn: Callable[[], np.ndarray]) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def task(model_name: str, count: int) -> Task:
    """The pairs of ``count`` held-out inputs of ``model_name`` (see the module's docstring)."""
    if model_name == "mnist-vit":
        model: Any = load("mnist-vit").pixel_space()  # type: ignore[union-attr]
        x0, ctx, target, source = pairs(model, count)
        lo, hi = (np.broadcast_to(np.asarray(b), x0.shape[1:]) for b in model.bounds())
    elif model_name == "minilm-topics":
        model = load("minilm-topics")
        x0, ctx, target, source = sentence_pairs(model, count)
        lo, hi = (np.asarray(b) for b in model.bounds("theoretical", x0.shape[1]))
    else:
        raise ValueError(f"model must be one of {MODELS}, got {model_name!r}")
    return Task(model, x0, ctx, target, source, lo, hi, np.asarray(ctx["token_mask"]))


def run(digits: int, single: int, methods: tuple[str, ...] = METHODS, model: str = "mnist-vit") -> list[dict[str, Any]]:
    whole = task(model, digits)
    runners: dict[str, Callable[[Task], np.ndarray]] = {
        "ours": run_ours, "fmn": run_fmn, "deepfool": run_deepfool, "flip-walk": run_flip_walk}
    rows, n = [], len(whole.x0)
    for name in methods:
        def call(sl: slice, name: str = name) -> np.ndarray:
            return runners[name](whole.part(sl))
        call(slice(0, n))  # warm-up: compiles the batched program
        x, batched = timed(lambda: call(slice(0, n)))
        call(slice(0, 1))  # warm-up of the one-pair program
        single_s = float(np.mean([timed(lambda i=i: call(slice(i, i + 1)))[1] for i in range(single)]))
        rows.append(summary(name, measure(whole, x), batched / n, single_s))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def markdown(rows: list[dict[str, Any]], digits: int, model: str = "mnist-vit") -> str:
    where = ("held-out digits", "pixel space, [0, 1]") if model == "mnist-vit" else (
        "held-out sentences", "embedding space (the words' embeddings), the theoretical embedding box")
    lines = [f"{digits} {where[0]} x (runner-up, a random other class) = {2 * digits} pairs, {where[1]}:",
             "", "| method | reached | L2 median [q1, q3] | median KKT residual | s / pair, batched "
             "| s / pair, one at a time |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {100 * r['reached']:.0f} % | {r['l2_median']:.3f} [{r['l2_q1']:.3f}, "
                     f"{r['l2_q3']:.3f}] | {r['kkt_median']:.2g} | {r['s_per_pair_batched']:.3f} | "
                     f"{r['s_per_pair_single']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=MODELS, default="mnist-vit")
    parser.add_argument("--digits", type=int, default=100, help="held-out inputs (digits or sentences)")
    parser.add_argument("--single", type=int, default=3, help="pairs timed one at a time")
    parser.add_argument("--quick", action="store_true", help="1 digit (2 pairs), 1 pair timed alone (the tests' size)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    digits, single = (1, 1) if args.quick else (args.digits, args.single)
    rows = run(digits, single, tuple(args.methods.split(",")), args.model)
    text = markdown(rows, digits, args.model)
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        name = RESULT_FILES[args.model]
        write_text(args.out / f"{name}.json", json.dumps({"model": args.model, "digits": digits, "rows": rows},
                                                          indent=1))
        write_text(args.out / f"{name}.md", text)
    return rows


if __name__ == "__main__":
    main()
