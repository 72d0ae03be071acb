"""The paper's comparison baseline: a gradient step on the original class plus Gaussian noise.

Each selected token moves by x_i <- clip(x_i +/- delta_i g_i/|g_i| + delta_i z_i), with g_i
the gradient of the original class probability p_c w.r.t. token i and z_i a unit
Gaussian direction orthogonal to g_i: "+" tries to stay in the class, "-" to leave it.
delta_i is given per token, typically the mean step of the SiMEC / SiMExp run it is
compared with, so that both walks cover similar distances.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from manifold_jax._callables import filter_jit
from manifold_jax._checks import check_count
from manifold_jax.explore import NONFINITE, RECORD_FIELDS, Trajectory, prepare
from manifold_jax.explore.problem import drop_batch_axis, replace_state
from manifold_jax.selection import Select

_CHUNK_BLOCKS = 20
"""Saved blocks per compiled chunk at most (the largest divisor of the walk's blocks up to it: one program)."""


def _baseline_step(
    f: Callable[..., jax.Array], sign: jax.Array, x: jax.Array, key: jax.Array, target: jax.Array,
    delta: jax.Array, args: tuple[Any, ...], index: jax.Array, valid: jax.Array, lo: jax.Array, hi: jax.Array,
) -> tuple[jax.Array, jax.Array, dict[str, jax.Array]]:
    """One item: x (n, d) -> next x, next key, record (y, step, eigenvalue=|g|^2, status)."""
    next_key, step_key = jax.random.split(key)
    y, pullback = jax.vjp(lambda z: f(z, *args), x)
    p_target = jax.nn.softmax(y)[target]
    # d p_c / d y = p_c (e_c - p): one VJP gives the gradient w.r.t. every token
    (grad,) = pullback(p_target * (jax.nn.one_hot(target, y.shape[0], dtype=y.dtype) - jax.nn.softmax(y)))
    g = grad[index]
    g_norm = jnp.linalg.norm(g, axis=1, keepdims=True)
    g_unit = g / jnp.where(g_norm > 0, g_norm, 1.0)
    keys = jax.vmap(jax.random.fold_in, (None, 0))(step_key, index)
    z = jax.vmap(lambda kk: jax.random.normal(kk, (x.shape[1],), x.dtype))(keys)
    z = z - jnp.sum(z * g_unit, axis=1, keepdims=True) * g_unit
    z = z / jnp.linalg.norm(z, axis=1, keepdims=True)
    move = delta[:, None] * (sign * g_unit + z) * valid[:, None]
    current = x[index]
    moved = jnp.where(valid[:, None], jnp.clip(current + move, lo[index], hi[index]), current)
    finite = jnp.isfinite(y).all() & jnp.isfinite(grad).all()
    moved = jnp.where(finite, moved, current)
    record = {
        "y": y,
        "step": delta * valid,
        "eigenvalue": (g_norm[:, 0] ** 2) * valid,
        "status": jnp.where(finite, 0, NONFINITE).astype(jnp.int32),
    }
    return x.at[index].set(moved), next_key, record


@filter_jit(static_argnames=("steps", "save_every"))
def _run(
    f: Callable[..., jax.Array], x: jax.Array, keys: jax.Array, stalls: jax.Array, target: jax.Array,
    delta: jax.Array, inputs: tuple[Any, ...], sign: jax.Array, *, steps: int, save_every: int,
) -> tuple[tuple[jax.Array, ...], dict[str, jax.Array]]:
    step = jax.vmap(partial(_baseline_step, f, sign))

    def one(c: tuple[jax.Array, ...], _: Any) -> tuple[tuple[jax.Array, ...], dict[str, jax.Array]]:
        x_next, k_next, rec = step(c[0], c[1], target, delta, *inputs)
        return (x_next, k_next, c[2] + (rec["status"] != 0)), {"x": c[0], "stalls": c[2], **rec}

    def block(c: tuple[jax.Array, ...], _: Any) -> tuple[tuple[jax.Array, ...], dict[str, jax.Array]]:
        c_next, recs = jax.lax.scan(one, c, None, length=save_every)
        return c_next, jax.tree.map(lambda r: r[0], recs)

    start: tuple[jax.Array, ...] = (x, keys, stalls)
    carry, saved = jax.lax.scan(block, start, None, length=steps // save_every)
    _, last = one(carry, None)
    return carry, jax.tree.map(lambda a, b: jnp.concatenate([a, b[None]]), saved, last)


def gradient_baseline(
    f: Callable[..., jax.Array],
    x0: Any,
    *,
    key: Any,
    steps: int,
    step_size: Any,
    direction: Literal["stay", "leave"],
    args: Any = (),
    select: Select = None,
    bounds: tuple[Any, Any] | None = None,
    save_every: int = 1,
    progress: bool = False,
    label: str = "baseline",
) -> Trajectory:
    """Gradient-plus-noise walk from x0 (n, d) or (B, n, d); returns a Trajectory.

    ``step_size``: delta per selected token, a scalar or an array broadcastable to (B, m)
    (m selected tokens per item, in increasing position order). ``direction``: "stay"
    climbs the original class probability, "leave" descends it. The walk runs in a few equal
    compiled chunks, so that ``progress`` can show a bar named ``label``.
    """
    if direction not in ("stay", "leave"):
        raise ValueError(f"direction={direction!r} is not supported; expected 'stay' or 'leave'")
    steps = check_count("steps", steps)
    save_every = check_count("save_every", save_every)
    if steps % save_every:
        raise ValueError(f"steps must be a positive multiple of save_every ({save_every}), got {steps!r}")
    problem, state = prepare(f, x0, key=key, args=args, select=select, bounds=bounds)
    x = state.x
    delta = np.broadcast_to(np.asarray(step_size, np.float64), problem.index.shape)
    if not (np.isfinite(delta).all() and (delta >= 0).all()):
        raise ValueError("step_size must be finite and non-negative")
    target = jnp.argmax(state.anchor, axis=1)
    inputs = (problem.args, problem.index, problem.valid, problem.lo, problem.hi)
    blocks = steps // save_every
    per_chunk = max(d for d in range(1, min(blocks, _CHUNK_BLOCKS) + 1) if blocks % d == 0)
    carry: tuple[jax.Array, ...] = (x, state.key, jnp.zeros(x.shape[:1], jnp.int32))
    pieces = []
    with tqdm(total=steps, disable=not progress, unit="it", desc=label, leave=False, postfix="compiling") as bar:
        for done in range(0, blocks, per_chunk):
            carry, saved = _run(
                problem.f, *carry, target, jnp.asarray(delta, x.dtype), inputs,
                jnp.asarray(1.0 if direction == "stay" else -1.0, x.dtype),
                steps=per_chunk * save_every, save_every=save_every,
            )
            last = done + per_chunk == blocks
            # each chunk also records its end point, which the next chunk records as its start
            pieces.append({k: np.asarray(v if last else v[:-1]) for k, v in saved.items()})
            if done == 0:
                bar.set_postfix_str("", refresh=False)
            bar.update(per_chunk * save_every)
    x_end, keys_end, stalls_end = carry
    fields = {k: np.moveaxis(np.concatenate([p[k] for p in pieces]), 0, 1) for k in pieces[0]}
    # the baseline has no step controller, corrector or goal: those records are blank
    saved_points = fields["y"].shape[1]
    blank = {"h": np.nan, "drift": np.nan, "error": np.nan, "corrections": 0, "rejected": 0, "arc_length": np.nan,
             "goal_distance": np.nan}
    for name, value in blank.items():
        fields[name] = np.full((problem.batch, saved_points), value, np.int32 if isinstance(value, int) else x.dtype)
    offsets = (fields["x"] - np.asarray(x)[:, None]).reshape(problem.batch, saved_points, -1)
    fields["distance"] = np.linalg.norm(offsets, axis=-1).astype(x.dtype)
    final = replace_state(state, x=x_end, key=keys_end, iteration=jnp.asarray(steps, jnp.int32), stalls=stalls_end)
    if not problem.batched:
        fields = {k: v[0] for k, v in fields.items()}
        final = drop_batch_axis(final)
    return Trajectory(**{name: fields[name] for name in RECORD_FIELDS},
                      iteration=np.arange(0, steps + 1, save_every), final=final)
