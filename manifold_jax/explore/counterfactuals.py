"""Minimal counterfactuals: the closest input the model gives a target class, with a certificate.

Per item, with m the target's logit margin (``margin="other"``: f_t - max_{j != t} f_j;
``"source"``: f_t - f_s, s the class at x0) and delta the ``overshoot``::

    minimise |x - x0|   subject to   m(x) >= delta,   lo <= x <= hi   (explored coordinates only)

The solver runs three phases inside one compiled ``lax.while_loop`` over the batch:

* reach: linearised steps that move the margin only, dx = (aim - m) grad m / |grad m|^2 on the
  free coordinates (DeepFool's step), the box as an active set (a coordinate at a bound that
  the step pushes outward is frozen), a trust radius halved on a step that lowers m;
* locate: once a step crosses m = delta, the crossing is found on that step's segment by a
  safeguarded secant (an event located, not a step past it);
* slide: along the level set {m = delta} toward x0: the tangent P_null(grad m)(x0 - x) on the
  free coordinates, a chord Newton correction back onto the level, accepted when it lands on
  the level within ``level_tol`` and brings x closer to x0 (else the step halves), until the
  KKT residual is under ``tol``.

The certificate ``kkt`` is |r| / |x - x0| with r the residual of the first-order conditions
x - x0 = lambda grad m + mu (lambda >= 0 fitted on the coordinates strictly inside the box,
mu the bound multipliers, of the right sign on the coordinates at a bound): 0 at a KKT point,
the sine of the angle between x - x0 and the boundary's normal without active bounds.

The distance is L2 over the explored coordinates (``select``), the same norm the walk
minimises. Other choices (L-inf, L1, a Mahalanobis or pullback norm) change the projection in
every phase; only L2 is built. The method is deterministic (no random choice) and runs as one
call: there is no state to resume.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from manifold_jax._callables import StaticPart, merge_callable, split_callable
from manifold_jax._checks import check_count, check_finite, check_float_array, check_option, check_real
from manifold_jax._xla import jit
from manifold_jax.explore.counterfactual_inputs import check_source, explored, item_bounds, item_targets
from manifold_jax.explore.problem import batch_args
from manifold_jax.geometry import output_size
from manifold_jax.selection import Select

MARGINS: tuple[str, ...] = ("other", "source")
"""The margin: target against the best other class, or against the class at x0."""

REACH, LOCATE, SLIDE, DONE = 0, 1, 2, 3
"""The phases of one item, as recorded in ``Counterfactual.path_phase``."""

_AIM = 0.05
"""A reach step aims past the level by this fraction of the margin still missing (and at
least delta past it), so that the step crosses the level and the crossing gets located."""


@dataclass(frozen=True)
class Settings:
    """The solver's static options (they key the compiled program)."""

    margin: str
    overshoot: float
    tol: float
    level_tol: float
    max_steps: int
    max_locate: int
    min_step: float
    rows: int
    max_step: float


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class Counterfactual:
    """The result of :func:`counterfactual`; a batch puts B first on every field.

    x (n, d) the counterfactual input; reached () whether f(x) predicts the target; distance ()
    |x - x0| over the explored coordinates; margin () m(x), about ``overshoot`` where reached;
    kkt () the first-order residual (NaN where not reached); converged () kkt <= tol;
    iterations () loop iterations used; target (), source () the target class and the class at
    x0; path (S, n, d) the point after each iteration (the last one repeated after the item
    stopped, S = iterations of the batch + 1); path_margin (S,) m along the path; path_phase (S,)
    REACH, LOCATE, SLIDE or DONE along the path.
    """

    x: jax.Array
    reached: jax.Array
    distance: jax.Array
    margin: jax.Array
    kkt: jax.Array
    converged: jax.Array
    iterations: jax.Array
    target: jax.Array
    source: jax.Array
    path: jax.Array
    path_margin: jax.Array
    path_phase: jax.Array

    @property
    def path_distance(self) -> jax.Array:
        """|x - x0| along the path (S,) / (B, S)."""
        d = self.path - self.path[..., :1, :, :]
        return jnp.sqrt(jnp.sum(d * d, axis=(-2, -1)))


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class _Item:
    """One item's solver state: the point, its margin, the phase, the step sizes and the bracket."""

    x: jax.Array
    m: jax.Array
    phase: jax.Array
    it: jax.Array
    radius: jax.Array
    alpha: jax.Array
    a: jax.Array
    b: jax.Array
    ma: jax.Array
    mb: jax.Array
    tries: jax.Array


class _Box(NamedTuple):
    """The box of one item (or a batch, B first): bounds lo, hi (n, d) and the explored coordinates (n, d) bool."""

    lo: jax.Array
    hi: jax.Array
    movable: jax.Array


class _Task(NamedTuple):
    """One item's problem besides f (or a batch, B first): f's arguments, x0 (n, d), target t and source s ()."""

    args: Any
    x0: jax.Array
    t: jax.Array
    s: jax.Array


# --------------------------------------------------------------------------- the pieces of a step


def margin_of(y: jax.Array, t: jax.Array, s: jax.Array, kind: str) -> jax.Array:
    """The target's margin from outputs y (k,): y_t - y_s or y_t - max_{j != t} y_j."""
    if kind == "source":
        return y[t] - y[s]
    others = jnp.where(jnp.arange(y.shape[0]) == t, jnp.finfo(y.dtype).min, y)
    return y[t] - jnp.max(others)


def _dot(u: jax.Array, v: jax.Array) -> jax.Array:
    return jnp.sum(u * v)


_SNAP = 1e-6
"""Coordinates within this fraction of the box's width from a bound are put on it: the active set
must see a coordinate that a correction lifted off its bound by a rounding error as at the bound."""


def _clip(z: jax.Array, lo: jax.Array, hi: jax.Array) -> jax.Array:
    """z in the box, with the coordinates within _SNAP of a bound put on it."""
    eps = jnp.where(jnp.isfinite(hi - lo), _SNAP * (hi - lo), 0)
    return jnp.where(z <= lo + eps, lo, jnp.where(z >= hi - eps, hi, z))


def _free(x: jax.Array, u: jax.Array, box: _Box) -> jax.Array:
    """Movable coordinates that a move along u does not push out of the box."""
    return _unblocked(box.movable, x, u, box)


def _unblocked(free: jax.Array, x: jax.Array, u: jax.Array, box: _Box) -> jax.Array:
    """The coordinates of ``free`` that a move along u from x does not push out of the box."""
    return free & ~((x <= box.lo) & (u < 0)) & ~((x >= box.hi) & (u > 0))


def _rows(f: Any, task: _Task, x: jax.Array, *, movable: jax.Array,
          cfg: Settings) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Outputs y (k,), the competing classes js (R,), their margins c_j = y_t - y_j (R,, ascending:
    c[0] is the margin) and gradients G (R, n, d) on the explored coordinates."""
    t, s = task.t, task.s
    y, pull = jax.vjp(lambda z: f(z, *task.args), x)
    k = y.shape[0]
    if cfg.margin == "source":
        js = s[None]
    else:
        others = jnp.where(jnp.arange(k) == t, jnp.finfo(y.dtype).min, y)
        js = jax.lax.top_k(others, min(cfg.rows, k - 1))[1]
    cot = jax.nn.one_hot(t, k, dtype=y.dtype)[None] - jax.nn.one_hot(js, k, dtype=y.dtype)
    grads = jax.vmap(lambda c: pull(c)[0])(cot)
    return y, js, y[t] - y[js], grads * movable


def _subsets(rows: int) -> list[tuple[bool, ...]]:
    """Every non-empty subset of ``rows`` rows, as masks."""
    return [tuple(bool(i >> r & 1) for r in range(rows)) for i in range(1, 2 ** rows)]


def _nnls(v: jax.Array, grads: jax.Array, active: jax.Array, free: jax.Array) -> tuple[jax.Array, jax.Array]:
    """min |v - G^T w| over w >= 0 supported on the active rows, on the free coordinates: (w, residual).

    R is small (the competing classes): every support is tried, the best non-negative one kept.
    """
    gf, vf = grads * free, v * free
    gram = jnp.einsum("rnd,snd->rs", gf, gf)
    rhs = jnp.einsum("rnd,nd->r", gf, vf)
    rows = grads.shape[0]
    best_w, best_r = jnp.zeros((rows,), v.dtype), vf
    for subset in _subsets(rows):
        mask = jnp.asarray(subset) & active
        usable = jnp.all(mask == jnp.asarray(subset))
        a = jnp.where(mask[:, None] & mask[None, :], gram, jnp.eye(rows, dtype=v.dtype))
        w = jnp.where(mask, jnp.linalg.solve(a, jnp.where(mask, rhs, 0)), 0)
        r = vf - jnp.einsum("r,rnd->nd", w, gf)
        better = usable & jnp.all(w >= 0) & jnp.all(jnp.isfinite(w)) & (_dot(r, r) < _dot(best_r, best_r))
        best_w, best_r = jnp.where(better, w, best_w), jnp.where(better, r, best_r)
    return best_w, best_r


def kkt_residual(x: jax.Array, x0: jax.Array, grads: jax.Array, active: jax.Array, *, lo: jax.Array,
                 hi: jax.Array, movable: jax.Array) -> jax.Array:
    """|r| / |x - x0|, r the residual of x - x0 = sum_j lambda_j grad c_j + mu (lambda >= 0 on the
    active rows, fitted on the coordinates strictly inside the box; mu the bounds' multipliers,
    of the right sign). x, x0 (n, d); grads (R, n, d) of the margins c_j; active (R,) bool."""
    d = (x - x0) * movable
    at_lo, at_hi = movable & (x <= lo), movable & (x >= hi)
    free = movable & ~at_lo & ~at_hi
    lam, _ = _nnls(d, grads, active, free)
    r = d - jnp.einsum("r,rnd->nd", lam, grads)
    r = jnp.where(free, r, jnp.where(at_lo, jnp.minimum(r, 0), jnp.where(at_hi, jnp.maximum(r, 0), 0)))
    dn = jnp.sqrt(_dot(d, d))
    return jnp.where(dn > 0, jnp.sqrt(_dot(r, r)) / jnp.where(dn > 0, dn, 1), 0)


def _reach(st: _Item, grads: jax.Array, c: jax.Array, *, box: _Box,
           cfg: Settings) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The linearised step that lifts every competing margin below the aim to it (DeepFool's step, on
    several rows where classes tie), capped at the trust radius: (candidate, capped, possible)."""
    aim = cfg.overshoot + jnp.maximum(cfg.overshoot, _AIM * (cfg.overshoot - st.m))
    rows = (c < aim) | (jnp.arange(c.shape[0]) == 0)
    free = _free(st.x, grads[0], box)
    step = _min_norm(grads * free, jnp.where(rows, aim - c, 0), rows)
    free = _free(st.x, step, box)
    step = _min_norm(grads * free, jnp.where(rows, aim - c, 0), rows)
    length = jnp.sqrt(_dot(step, step))
    scale = jnp.minimum(1, st.radius / jnp.where(length > 0, length, 1))
    return _clip(st.x + scale * step, box.lo, box.hi), scale < 1, length > 0


def _secant(st: _Item, cfg: Settings) -> jax.Array:
    """The point of the bracket [a, b] where the margin's chord crosses the level (safeguarded)."""
    s = (cfg.overshoot - st.ma) / jnp.where(st.mb > st.ma, st.mb - st.ma, 1)
    s = jnp.clip(s, 0.01, 0.99)
    return st.a + s * (st.b - st.a)


def _tangent(u: jax.Array, grads: jax.Array, active: jax.Array, free: jax.Array) -> jax.Array:
    """u projected onto the cone {G_active t >= 0} on the free coordinates (Moreau: u minus its polar part)."""
    _, r = _nnls(-u, grads, active, free)
    return -r


def _slide(st: _Item, grads: jax.Array, c: jax.Array, level: Any, x0: jax.Array, *, box: _Box,
           cfg: Settings) -> jax.Array:
    """A step toward x0 that keeps the active margins to first order, then one chord Gauss-Newton
    correction of the margins that the step left below the level (``level(z)``: their values at z)."""
    active = c <= cfg.overshoot + cfg.level_tol
    u = (x0 - st.x) * box.movable
    free = _free(st.x, u, box)
    t = _tangent(u, grads, active, free)
    free = _unblocked(free, st.x, t, box)
    t = _tangent(u, grads, active, free)
    xp = _clip(st.x + st.alpha * t, box.lo, box.hi)
    return _correct(_correct(xp, grads, free, level, box=box, cfg=cfg), grads, free, level, box=box, cfg=cfg)


def _correct(z: jax.Array, grads: jax.Array, free: jax.Array, level: Any, *, box: _Box, cfg: Settings) -> jax.Array:
    """One chord Gauss-Newton step (the gradients of x) of the first margin and of those below the
    level, on the free coordinates that the correction does not push out of the box."""
    cz = level(z)
    low = (cz < cfg.overshoot + cfg.level_tol) | (jnp.arange(cz.shape[0]) == 0)
    dz = _min_norm(grads * free, jnp.where(low, cfg.overshoot - cz, 0), low)
    free = _unblocked(free, z, dz, box)
    return _clip(z + _min_norm(grads * free, jnp.where(low, cfg.overshoot - cz, 0), low), box.lo, box.hi)


def _min_norm(gf: jax.Array, rhs: jax.Array, rows: jax.Array) -> jax.Array:
    """The smallest dz with gf_r . dz = rhs_r on the given rows."""
    gram = jnp.einsum("rnd,snd->rs", gf, gf)
    a = jnp.where(rows[:, None] & rows[None, :], gram, jnp.eye(rows.shape[0], dtype=gf.dtype))
    w = jnp.where(rows, jnp.linalg.solve(a, rhs), 0)
    return jnp.einsum("r,rnd->nd", jnp.where(jnp.isfinite(w), w, 0), gf)


# --------------------------------------------------------------------------- one iteration of one item


def _item_step(f: Any, task: _Task, st: _Item, *, box: _Box, cfg: Settings) -> _Item:
    """One iteration: a candidate from the item's phase, one forward pass at it, the phase's update."""
    _, js, c, grads = _rows(f, task, st.x, movable=box.movable, cfg=cfg)

    def level(z: jax.Array) -> jax.Array:
        y = f(z, *task.args)
        return y[task.t] - y[js]

    reach_x, capped, possible = _reach(st, grads, c, box=box, cfg=cfg)
    cand = jnp.where(st.phase == REACH, reach_x, jnp.where(
        st.phase == LOCATE, _secant(st, cfg), _slide(st, grads, c, level, task.x0, box=box, cfg=cfg)))
    mc = margin_of(f(cand, *task.args), task.t, task.s, cfg.margin)
    kkt = kkt_residual(st.x, task.x0, grads, c <= cfg.overshoot + cfg.level_tol, lo=box.lo, hi=box.hi,
                       movable=box.movable)
    scale = cfg.min_step * (1 + jnp.sqrt(_dot(task.x0 * box.movable, task.x0 * box.movable)))
    reach = _after_reach(st, cand, mc, capped, possible, scale=scale, cfg=cfg)
    locate = _after_locate(st, cand, mc, cfg=cfg)
    slide = _after_slide(st, cand, mc, kkt, x0=task.x0, movable=box.movable, cfg=cfg)
    return jax.tree.map(lambda r, lc, sl: jnp.where(st.phase == REACH, r, jnp.where(st.phase == LOCATE, lc, sl)),
                        reach, locate, slide)


def _after_reach(st: _Item, cand: jax.Array, mc: jax.Array, capped: jax.Array, possible: jax.Array, *,
                 scale: jax.Array, cfg: Settings) -> _Item:
    """Reach: crossed -> locate on [x, cand]; progress -> accept; else halve the radius (done below ``scale``)."""
    length = jnp.sqrt(_dot(cand - st.x, cand - st.x))
    crossed, progress = mc >= cfg.overshoot, (mc > st.m) & jnp.isfinite(mc)
    radius = jnp.where(progress, jnp.where(capped, 2 * st.radius, st.radius), 0.5 * length)
    stuck = ~possible | (~crossed & ~progress & (radius < scale))
    return _Item(
        x=jnp.where(progress & ~crossed, cand, st.x), m=jnp.where(progress & ~crossed, mc, st.m),
        phase=jnp.where(crossed, LOCATE, jnp.where(stuck, DONE, REACH)), it=st.it + 1, radius=radius,
        alpha=st.alpha, a=st.x, b=cand, ma=st.m, mb=mc, tries=jnp.zeros_like(st.tries))


def _after_locate(st: _Item, cand: jax.Array, mc: jax.Array, *, cfg: Settings) -> _Item:
    """Locate: shrink the bracket; on the level -> slide from there; out of tries -> slide from b."""
    above = mc >= cfg.overshoot
    on_level = (jnp.abs(mc - cfg.overshoot) <= cfg.level_tol) & (mc > 0)
    give_up = st.tries + 1 >= cfg.max_locate
    a, ma = jnp.where(above, st.a, cand), jnp.where(above, st.ma, mc)
    b, mb = jnp.where(above, cand, st.b), jnp.where(above, mc, st.mb)
    return _Item(
        x=jnp.where(on_level, cand, jnp.where(give_up, b, a)), m=jnp.where(on_level, mc, jnp.where(give_up, mb, ma)),
        phase=jnp.where(on_level | give_up, SLIDE, LOCATE), it=st.it + 1, radius=st.radius, alpha=st.alpha,
        a=a, b=b, ma=ma, mb=mb, tries=st.tries + 1)


def _after_slide(st: _Item, cand: jax.Array, mc: jax.Array, kkt: jax.Array, *, x0: jax.Array, movable: jax.Array,
                 cfg: Settings) -> _Item:
    """Slide: converged -> done; accepted -> move, grow the step; else halve it, done when it is tiny."""
    off = jnp.abs(st.m - cfg.overshoot)
    closer = _dot((cand - x0) * movable, (cand - x0) * movable) < _dot((st.x - x0) * movable, (st.x - x0) * movable)
    on_level = jnp.abs(mc - cfg.overshoot) <= cfg.level_tol
    accept = (mc >= cfg.overshoot - cfg.level_tol) & jnp.isfinite(mc) & (
        closer | ((off > cfg.level_tol) & (jnp.abs(mc - cfg.overshoot) < off)))
    alpha = jnp.where(accept, jnp.where(on_level, jnp.minimum(1, 2 * st.alpha), st.alpha), 0.5 * st.alpha)
    done = ((kkt <= cfg.tol) & (off <= cfg.level_tol)) | (alpha < cfg.min_step)
    return _Item(
        x=jnp.where(accept & ~done, cand, st.x), m=jnp.where(accept & ~done, mc, st.m),
        phase=jnp.where(done, DONE, SLIDE), it=st.it + 1, radius=st.radius, alpha=alpha,
        a=st.a, b=st.b, ma=st.ma, mb=st.mb, tries=st.tries)


# --------------------------------------------------------------------------- the compiled batch


def _start(m0: jax.Array, x0: jax.Array, cfg: Settings) -> _Item:
    """Items already past the level are done at x0; the others start reaching."""
    batch = m0.shape[0]
    zero_i = jnp.zeros((batch,), jnp.int32)
    ones = jnp.ones((batch,), x0.dtype)
    return _Item(x=x0, m=m0, phase=jnp.where(m0 >= cfg.overshoot, DONE, REACH).astype(jnp.int32), it=zero_i,
                 radius=jnp.full((batch,), cfg.max_step, x0.dtype), alpha=ones, a=x0, b=x0, ma=m0, mb=m0, tries=zero_i)


@jit(static_argnames=("static", "cfg"))
def _solve(dynamic: list[Any], static: StaticPart, args: Any, x0: jax.Array, target: jax.Array, *, box: _Box,
           cfg: Settings) -> Counterfactual:
    """Run every item of the batch to its counterfactual; the loop ends when all are done."""
    f = merge_callable(dynamic, static)
    y0 = jax.vmap(lambda x, a: f(x, *a))(x0, args)
    source = jnp.argmax(y0, axis=-1).astype(jnp.int32)
    m0 = jax.vmap(lambda y, t, s: margin_of(y, t, s, cfg.margin))(y0, target, source)
    tasks = _Task(args=args, x0=x0, t=target, s=source)
    step = jax.vmap(lambda task, b, st: _item_step(f, task, st, box=b, cfg=cfg))
    size = cfg.max_steps + 1
    path = jnp.zeros((x0.shape[0], size, *x0.shape[1:]), x0.dtype).at[:, 0].set(x0)
    pm = jnp.zeros((x0.shape[0], size), x0.dtype).at[:, 0].set(m0)
    start = _start(m0, x0, cfg)
    pp = jnp.zeros((x0.shape[0], size), jnp.int32).at[:, 0].set(start.phase)

    def body(carry: tuple[Any, ...]) -> tuple[Any, ...]:
        i, st, path, pm, pp = carry
        new = step(tasks, box, st)
        active = st.phase != DONE
        st = jax.tree.map(lambda n, o: jnp.where(active.reshape(-1, *([1] * (n.ndim - 1))), n, o), new, st)
        return i + 1, st, path.at[:, i + 1].set(st.x), pm.at[:, i + 1].set(st.m), pp.at[:, i + 1].set(st.phase)

    def cond(carry: tuple[Any, ...]) -> jax.Array:
        return (carry[0] < cfg.max_steps) & jnp.any(carry[1].phase != DONE)

    last, st, path, pm, pp = jax.lax.while_loop(cond, body, (jnp.int32(0), start, path, pm, pp))
    x = jnp.where((st.phase == LOCATE)[:, None, None], st.b, st.x)
    return _finish(f, tasks, x, st.it, (last, path, pm, pp), box=box, cfg=cfg)


def _finish(f: Any, tasks: _Task, x: jax.Array, iterations: jax.Array, record: tuple[Any, ...], *, box: _Box,
            cfg: Settings) -> Counterfactual:
    """The result at the final points: margin, prediction, certificate, and the path cut at the last iteration."""
    def one(task: _Task, xi: jax.Array, b: _Box) -> tuple[jax.Array, ...]:
        y, _, c, grads = _rows(f, task, xi, movable=b.movable, cfg=cfg)
        active = c <= c[0] + cfg.level_tol
        return (margin_of(y, task.t, task.s, cfg.margin), jnp.argmax(y) == task.t,
                kkt_residual(xi, task.x0, grads, active, lo=b.lo, hi=b.hi, movable=b.movable))

    m, hit, kkt = jax.vmap(one)(tasks, x, box)
    reached = hit & (m > 0)
    kkt = jnp.where(reached, kkt, jnp.nan)
    d = (x - tasks.x0) * box.movable
    last, path, pm, pp = record
    keep = jnp.arange(path.shape[1]) <= last
    return Counterfactual(
        x=x, reached=reached, distance=jnp.sqrt(jnp.sum(d * d, axis=(1, 2))), margin=m, kkt=kkt,
        converged=reached & (kkt <= cfg.tol), iterations=iterations, target=tasks.t, source=tasks.s,
        path=jnp.where(keep[None, :, None, None], path, x[:, None]), path_margin=jnp.where(keep[None], pm, m[:, None]),
        path_phase=jnp.where(keep[None], pp, DONE))


# --------------------------------------------------------------------------- the public function


def counterfactual(
    f: Any,
    x0: Any,
    target: Any,
    *,
    args: Any = (),
    select: Select = None,
    bounds: tuple[Any, Any] | None = None,
    key: Any = None,  # noqa: ARG001 (accepted for symmetry with simec / simexp: the method is deterministic)
    margin: str = "other",
    overshoot: float = 1e-3,
    tol: float = 1e-2,
    level_tol: float | None = None,
    max_steps: int = 200,
    max_locate: int = 20,
    min_step: float = 1e-9,
    rows: int = 3,
    max_step: float = float("inf"),
) -> Counterfactual:
    """The closest input to x0 (n, d) / (B, n, d) that f assigns to ``target``, with its certificate.

    f(x, *args) -> logits (k,). ``target``: a class, or one per item (B,). ``args`` carry the
    batch axis first when x0 is batched; ``select`` the explored tokens (as for ``simec``);
    ``bounds`` (lo, hi) the box. ``margin``: "other" (f_t - max_{j != t} f_j, the default)
    or "source" (f_t - f_s, s the class at x0). ``overshoot``: the margin, in logit units,
    the counterfactual keeps on the target's side (so the class has changed beyond the
    rounding of the outputs); ``level_tol`` (default overshoot / 2): how close to it the
    slide stays; ``tol``: the KKT residual at which the slide stops; ``max_steps``: the
    iteration budget of all phases together; ``min_step``: the relative step below which a
    phase gives up; ``rows``: with ``margin="other"``, how many of the best other classes the
    reach and the slide keep behind the target at once (3: a point where up to three other
    classes tie, as at a kink of the best-other margin, is handled; one where more tie needs
    more, at 2^rows small solves per step); ``max_step``: the first reach step's largest length (the trust
    radius; inf: DeepFool's whole linear step. A small one follows the margin's ascent, which may
    cross the boundary closer to x0, or stall at a local maximum of the margin). ``key`` is
    accepted for symmetry with ``simec`` / ``simexp``:
    the method is deterministic. An item that cannot reach its target within the box and the budget
    comes back with ``reached`` False and its last point. Works under ``jit`` and ``vmap``
    (checks that need values are skipped on traced inputs).
    """
    arr = check_float_array("x0", x0, (2, 3))
    check_finite("x0", arr)
    check_option("margin", margin, MARGINS)
    cfg = Settings(margin=margin, overshoot=check_real("overshoot", overshoot, positive=True),
                   tol=check_real("tol", tol, positive=True),
                   level_tol=check_real("level_tol", overshoot / 2 if level_tol is None else level_tol, positive=True),
                   max_steps=check_count("max_steps", max_steps), max_locate=check_count("max_locate", max_locate),
                   min_step=check_real("min_step", min_step, positive=True), rows=check_count("rows", rows),
                   max_step=max_step if max_step == float("inf") else check_real("max_step", max_step, positive=True))
    if cfg.level_tol >= cfg.overshoot:
        raise ValueError(f"level_tol must be below overshoot ({cfg.overshoot}), got {cfg.level_tol}: "
                         "the counterfactual's margin must stay positive")
    batched = arr.ndim == 3
    xb = jnp.asarray(arr) if batched else jnp.asarray(arr)[None]
    if 0 in xb.shape:
        raise ValueError(f"x0 must be non-empty, got shape {tuple(arr.shape)}")
    args_b = batch_args(args, xb.shape[0], batched)
    k = output_size(f, xb[0], jax.tree.map(lambda a: a[0], args_b))
    classes = item_targets(target, xb.shape[0], k)
    dynamic, static = split_callable(f)
    check_source(merge_callable(dynamic, static), args_b, xb, classes)
    lo, hi = item_bounds(bounds, xb, select)
    out = _solve(dynamic, static, args_b, xb, classes, box=_Box(lo, hi, explored(select, xb, lo, hi)), cfg=cfg)
    return out if batched else jax.tree.map(lambda v: v[0], out)


__all__ = ["MARGINS", "Counterfactual", "counterfactual", "kkt_residual", "margin_of"]
