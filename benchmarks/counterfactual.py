"""Minimal counterfactuals against minimal-norm attacks on the same model and inputs.

The shipped MNIST ViT (``mnist-vit``) in pixel space, the [0, 1] box, held-out digits of
``mnist_split(seed=0)``; per digit two targets: its runner-up class and a random other class
(seeded). Methods, side by side in one process:

* ``ours``        ``mj.counterfactual`` (margin "other", overshoot 1e-3 logits, tol 1e-2);
* ``fmn``         foolbox's fast minimum-norm attack, L2, targeted (``L2FMNAttack``, its defaults:
                  100 steps), on the same JAX function through eagerpy;
* ``deepfool``    targeted DeepFool: linearise f_t - f_s, jump to the linear boundary with 2 %
                  overshoot, clip to [0, 1], repeat (at most 50 steps). foolbox's DeepFool has no
                  targeted mode, so this is the 25-line version;
* ``flip-walk``   our previous counterfactual run: targeted SiMExp, adaptive step (tol 1e-2 on the
                  probabilities), ``stop="flip"``, active box, 200 steps, eta 0.5.

Per method: the fraction of pairs reached (the clipped point predicted as the target), the
median and quartiles of the L2 distance (pixels, over reached pairs), the median KKT residual
at the returned point (the same certificate for all: ``kkt_residual`` with the margin's
competing classes), seconds per pair batched (all pairs in one call, after a warm-up call that
compiles) and one pair at a time (the first ``--single`` pairs, warm). ``--quick``: 1 digit.

    python benchmarks/counterfactual.py --digits 30 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
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
from manifold_jax.data import mnist_split  # noqa: E402
from manifold_jax.explore.counterfactuals import kkt_residual  # noqa: E402
from manifold_jax.models import load  # noqa: E402

METHODS = ("ours", "fmn", "deepfool", "flip-walk")


def pairs(model: Any, digits: int, seed: int = 0) -> tuple[np.ndarray, Any, np.ndarray, np.ndarray]:
    """x0 (2N, n, d), the per-item context, targets (2N,) and sources (2N,): runner-up and a random other class."""
    images = mnist_split(seed=seed).test_images[:digits, ..., None]
    x0, ctx = model.embed(images)
    logits = np.asarray(jax.vmap(model.head)(x0, ctx))
    order = np.argsort(logits, axis=1)
    rng = np.random.default_rng(seed)
    source = order[:, -1]
    random = np.array([rng.choice([c for c in range(logits.shape[1]) if c not in (s, r)])
                       for s, r in zip(source, order[:, -2], strict=True)])
    both = lambda a: np.concatenate([a, a])  # noqa: E731
    ctx2 = jax.tree.map(lambda a: jnp.concatenate([a, a]), ctx)
    return np.asarray(both(np.asarray(x0))), ctx2, np.concatenate([order[:, -2], random]), both(source)


def run_ours(model: Any, x0: np.ndarray, ctx: Any, target: np.ndarray) -> np.ndarray:
    out = mj.counterfactual(model.head, x0, target, args=(ctx,), select=ctx["token_mask"], bounds=model.bounds())
    return np.asarray(out.x)


def run_flip_walk(model: Any, x0: np.ndarray, ctx: Any, target: np.ndarray) -> np.ndarray:
    traj = mj.simexp(model.head, x0, key=jax.random.key(3), steps=200, eta=0.5, target=target, args=(ctx,),
                     select=ctx["token_mask"], bounds=model.bounds(), step_rule="adaptive", tol=1e-2,
                     on="probabilities", stop="flip", box="active", save_every=200, progress=False)
    return np.asarray(traj.final.x)


def _batched_logits(model: Any, ctx: Any) -> Callable[[jax.Array], jax.Array]:
    one = jax.tree.map(lambda a: a[0], ctx)  # every digit has the same context (all 49 patches)
    return jax.jit(jax.vmap(lambda x: model.head(x, one)))


def run_fmn(model: Any, x0: np.ndarray, ctx: Any, target: np.ndarray) -> np.ndarray:
    import foolbox as fb

    fmodel = fb.JAXModel(_batched_logits(model, ctx), bounds=(0.0, 1.0))
    criterion = fb.criteria.TargetedMisclassification(jnp.asarray(target))
    _, clipped, _ = fb.attacks.L2FMNAttack()(fmodel, jnp.asarray(x0), criterion, epsilons=None)
    return np.asarray(clipped)


def run_deepfool(model: Any, x0: np.ndarray, ctx: Any, target: np.ndarray, source: np.ndarray,
                 steps: int = 50, overshoot: float = 0.02) -> np.ndarray:
    """Targeted DeepFool on f_t - f_s: the linear boundary's closest point, 2 % past it, clipped, repeated."""
    logits = _batched_logits(model, ctx)

    @jax.jit
    def step(x: jax.Array, t: jax.Array, s: jax.Array, x_start: jax.Array) -> tuple[jax.Array, jax.Array]:
        def m(z: jax.Array) -> jax.Array:
            y = logits(z)
            return jnp.sum(jnp.take_along_axis(y, t[:, None], 1) - jnp.take_along_axis(y, s[:, None], 1))
        y = logits(x)
        value = jnp.take_along_axis(y, t[:, None], 1)[:, 0] - jnp.take_along_axis(y, s[:, None], 1)[:, 0]
        g = jax.grad(m)(x)
        gg = jnp.sum(g * g, axis=(1, 2))
        r = (-value / jnp.maximum(gg, 1e-20))[:, None, None] * g
        total = x - x_start + r
        done = value > 0
        return jnp.where(done[:, None, None], x, jnp.clip(x_start + (1 + overshoot) * total, 0, 1)), jnp.all(done)

    x = jnp.asarray(x0)
    t, s = jnp.asarray(target), jnp.asarray(source)
    for _ in range(steps):
        x, done = step(x, t, s, jnp.asarray(x0))
        if bool(done):
            break
    return np.asarray(x)


def measure(model: Any, x0: np.ndarray, ctx: Any, target: np.ndarray, x: np.ndarray) -> dict[str, np.ndarray]:
    """Reached, L2 distance and the KKT residual (margin "other", the two best other classes) per pair."""
    lo, hi = (jnp.broadcast_to(b, x0.shape[1:]) for b in model.bounds())
    x = np.clip(x, 0.0, 1.0).astype(x0.dtype)

    def one(xi: jax.Array, x0i: jax.Array, t: jax.Array, c: Any) -> tuple[jax.Array, jax.Array]:
        y = model.head(xi, c)
        others = jnp.where(jnp.arange(y.shape[0]) == t, -jnp.inf, y)
        js = jax.lax.top_k(others, 2)[1]
        grads = jax.vmap(lambda j: jax.grad(lambda z: model.head(z, c)[t] - model.head(z, c)[j])(xi))(js)
        cs = y[t] - y[js]
        movable = jnp.ones_like(xi, bool)
        return jnp.argmax(y) == t, kkt_residual(xi, x0i, grads, cs <= cs[0] + 5e-4, lo=lo, hi=hi, movable=movable)

    hit, kkt = jax.jit(jax.vmap(one))(jnp.asarray(x), jnp.asarray(x0), jnp.asarray(target), ctx)
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


def run(digits: int, single: int, methods: tuple[str, ...] = METHODS) -> list[dict[str, Any]]:
    model = load("mnist-vit").pixel_space()
    x0, ctx, target, source = pairs(model, digits)
    rows = []
    for name in methods:
        def call(sl: slice, name: str = name) -> np.ndarray:
            c = jax.tree.map(lambda a: a[sl], ctx)
            if name == "deepfool":
                return run_deepfool(model, x0[sl], c, target[sl], source[sl])
            fn = {"ours": run_ours, "fmn": run_fmn, "flip-walk": run_flip_walk}[name]
            return fn(model, x0[sl], c, target[sl])
        call(slice(0, len(x0)))  # warm-up: compiles the batched program
        x, batched = timed(lambda: call(slice(0, len(x0))))
        call(slice(0, 1))  # warm-up of the one-pair program
        single_s = float(np.mean([timed(lambda i=i: call(slice(i, i + 1)))[1] for i in range(single)]))
        rows.append(summary(name, measure(model, x0, ctx, target, x), batched / len(x0), single_s))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def markdown(rows: list[dict[str, Any]], digits: int) -> str:
    lines = [f"{digits} held-out digits x (runner-up, a random other class) = {2 * digits} pairs, pixel space, [0, 1]:",
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
    parser.add_argument("--digits", type=int, default=100)
    parser.add_argument("--single", type=int, default=3, help="pairs timed one at a time")
    parser.add_argument("--quick", action="store_true", help="1 digit (2 pairs), 1 pair timed alone (the tests' size)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    digits, single = (1, 1) if args.quick else (args.digits, args.single)
    rows = run(digits, single, tuple(args.methods.split(",")))
    text = markdown(rows, digits)
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        write_text(args.out / "counterfactual.json", json.dumps({"digits": digits, "rows": rows}, indent=1))
        write_text(args.out / "counterfactual.md", text)
    return rows


if __name__ == "__main__":
    main()
