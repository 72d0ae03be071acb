"""float32 against float64 trajectories of our engine, with a control for chaotic amplification."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.specs import ETA, SEED, SPECS, spec_dir


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


def run_differences(a: Any, b: Any) -> dict[str, float]:
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

    from manifold_jax import explore, init_state
    from manifold_jax.explore.problem import replace_state
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
            main = run_differences(a, b)
            row.update(main)
            row["y_moved_f32"], row["y_moved_f64"] = main["y_moved_a"], main["y_moved_b"]
            control = run_differences(c, b)
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
                state = {dt: replace_state(init_state(jnp.asarray(xt, dt), keys[t]), iteration=jnp.int32(t))
                         for dt in (jnp.float32, jnp.float64)}
                s32 = go(m32, state[jnp.float32], algorithm, 1)
                s64 = go(m64, state[jnp.float64], algorithm, 1)
                x32, x64 = np.asarray(s32.x[-1], np.float64), np.asarray(s64.x[-1])
                length = float(np.abs(x64 - xt).max())
                worst = max(worst, float(np.abs(x32 - x64).max()) / max(length, 1e-300))
            row["one_step_rel_err"] = worst
            rows.append(row)
    return rows
