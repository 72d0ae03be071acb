"""Pullback geometry: the metric g = J^T G J that a model induces on its input embeddings.

For f: x (n, d) -> y (k,) with output metric G = L L^T, the Jacobian J = dy/dx has k rows,
so g has rank <= k and almost all of the input space is null: moving along a null
direction leaves y unchanged to first order. Everything here works on the small factor
A = L^T J (r x D) rather than on g (D x D): g's non-zero spectrum is A's squared singular
spectrum, obtained from the r x r Gram matrix A A^T ("gram"), a thin SVD of A ("svd"), or
without forming J at all from metric-vector products g v = J^T G (J v) ("matfree"). The
dense D x D eigendecomposition of the paper ("dense") is kept for validation.

Blocks: ``"token"`` splits the selected coordinates per token, g_i = J_i^T G J_i (d x d)
for each selected token i (the reference code); ``"joint"`` forms one metric on all
selected coordinates (m * d).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental.sparse.linalg import lobpcg_standard

from manifold_jax._callables import filter_jit
from manifold_jax._checks import (
    check_count,
    check_finite,
    check_float_array,
    check_option,
    check_optional_count,
    is_concrete,
)
from manifold_jax.output_metrics import OutputMetric, metric_product, metric_rank, resolve_output_metric
from manifold_jax.selection import Select, token_selection

Method = Literal["dense", "gram", "svd", "matfree"]
Blocks = Literal["token", "joint"]
Mode = Literal["auto", "rev", "fwd"]
METHODS: tuple[str, ...] = ("dense", "gram", "svd", "matfree")
BLOCKS: tuple[str, ...] = ("token", "joint")
MODES: tuple[str, ...] = ("auto", "rev", "fwd")

MATFREE_ITERS = 30
"""Default LOBPCG iteration cap; a rank-k operator converges in a couple of iterations."""


class Spectrum(NamedTuple):
    """Eigenpairs of each metric block, eigenvalues descending.

    eigenvalues: (nb, p); eigenvectors: (nb, p, D), row j belongs to eigenvalue j.
    nb is the number of selected tokens ("token" blocks) or 1 ("joint"); D is d or m * d;
    p is D for "dense" and min(rank, D) for the reduced methods, whose eigenvectors of
    numerically-zero eigenvalues are returned as zero rows ("gram") or as arbitrary
    orthonormal completions ("svd", "matfree").
    """

    eigenvalues: jax.Array
    eigenvectors: jax.Array


def numerical_floor(dtype: Any) -> float:
    """Relative level (of a block's largest eigenvalue) below which eigenvalues are noise.

    The Gram matrix squares singular values, so its eigenvalues carry an absolute error of
    about r * eps * lambda_max; 100 eps keeps a margin above that for r up to ~100.
    """
    return 100.0 * float(jnp.finfo(dtype).eps)


def output_size(f: Callable[..., jax.Array], x: jax.Array, args: tuple[Any, ...]) -> int:
    """k, the length of f's output vector, found without running f; checks it is a vector."""
    out = jax.eval_shape(f, x, *args)
    if not hasattr(out, "shape") or len(out.shape) != 1:
        shape = getattr(out, "shape", type(out).__name__)
        raise ValueError(f"f must return a vector of shape (k,), got {shape}")
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise ValueError(f"f must return floating-point outputs, got dtype {out.dtype}")
    if out.shape[0] == 0:
        raise ValueError("f returns an empty output vector (k = 0): there is no metric to pull back")
    return int(out.shape[0])


def resolve_mode(mode: str, k: int, coordinates: int) -> str:
    """Reverse mode (k VJPs) unless the explored coordinates are fewer than the outputs."""
    check_option("mode", mode, MODES)
    if mode == "auto":
        return "rev" if k <= coordinates else "fwd"
    return mode


def _with_aux(y: jax.Array) -> tuple[jax.Array, jax.Array]:
    return y, y


def jacobian(
    f: Callable[..., jax.Array],
    x: jax.Array,
    args: tuple[Any, ...],
    index: jax.Array,
    valid: jax.Array,
    mode: str = "auto",
) -> tuple[jax.Array, jax.Array]:
    """Output y (k,) and its Jacobian w.r.t. the selected tokens, J (k, m, d).

    ``index`` (m,) names the selected positions of x (n, d); columns of tokens whose
    ``valid`` flag is False (batch padding) are zeroed so that they are exactly null.
    """
    m, d = index.shape[0], x.shape[-1]
    k = output_size(f, x, args)
    if resolve_mode(mode, k, m * d) == "rev":
        jac, y = jax.jacrev(lambda z: _with_aux(f(z, *args)), has_aux=True)(x)
        jac = jac[:, index]
    else:
        def restricted(xs: jax.Array) -> tuple[jax.Array, jax.Array]:
            return _with_aux(f(x.at[index].set(xs), *args))

        jac, y = jax.jacfwd(restricted, has_aux=True)(x[index])
    return y, jac * valid[None, :, None].astype(jac.dtype)


def factor_blocks(jac: jax.Array, factor: jax.Array, blocks: str) -> jax.Array:
    """A = L^T J per block: (m, r, d) for "token" blocks, (1, r, m * d) for "joint"."""
    a = jnp.einsum("kr,kmd->mrd", factor, jac)
    if blocks == "token":
        return a
    m, r, d = a.shape
    return jnp.transpose(a, (1, 0, 2)).reshape(1, r, m * d)


def min_norm_solve(a: jax.Array, r: jax.Array) -> jax.Array:
    """The minimum-norm least-squares solution of a dx = r: dx = a^T (a a^T)^+ r, a (k, D), r (k,).

    (a a^T)^+ comes from the eigendecomposition of the k x k Gram matrix, with eigenvalues
    under the dtype's numerical floor (100 eps of the largest) treated as zero: a softmax
    head's Jacobian has rank k - 1, and dividing by its rounding-noise eigenvalue would
    send the step to infinity. O(k^2 D).
    """
    lam, u = jnp.linalg.eigh(a @ a.T)
    keep = lam > numerical_floor(a.dtype) * jnp.maximum(lam[-1], 0.0)
    coef = (u.T @ r) / jnp.where(keep, lam, 1.0)
    return a.T @ (u @ jnp.where(keep, coef, 0.0))


def measured_outputs(y: jax.Array, on: str) -> jax.Array:
    """What a level set keeps: the logits themselves ("logits") or softmax(y) ("probabilities")."""
    return jax.nn.softmax(y) if on == "probabilities" else y


def measure_jacobian(y: jax.Array, jac: jax.Array, on: str) -> jax.Array:
    """d phi / dx = (d phi / dy) J for phi of :func:`measured_outputs`; jac (k, ...) -> (k, ...)."""
    if on != "probabilities":
        return jac
    p = jax.nn.softmax(y)
    dphi = jnp.diag(p) - jnp.outer(p, p)
    return jnp.tensordot(dphi, jac, axes=1)


def dense_spectrum(a: jax.Array) -> Spectrum:
    """Full eigendecomposition of g = A^T A (the paper's literal algorithm): O(D^3)."""
    g = jnp.einsum("...ri,...rj->...ij", a, a)
    lam, vecs = jnp.linalg.eigh(g)
    return Spectrum(lam[..., ::-1], jnp.swapaxes(vecs[..., ::-1], -1, -2))


def gram_spectrum(a: jax.Array) -> Spectrum:
    """Non-zero spectrum of A^T A from the r x r Gram matrix A A^T: O(r^2 D).

    Eigenvectors are recovered as v = A^T u / sigma; below the numerical floor sigma is
    noise and the division would amplify it, so those rows are returned as zeros.
    """
    r, dim = a.shape[-2], a.shape[-1]
    p = min(r, dim)
    lam, u = jnp.linalg.eigh(jnp.einsum("...id,...jd->...ij", a, a))
    lam, u = lam[..., ::-1][..., :p], u[..., ::-1][..., :p]
    top = jnp.maximum(lam[..., :1], 0.0)
    keep = lam > numerical_floor(a.dtype) * top
    sigma = jnp.sqrt(jnp.where(keep, lam, 1.0))
    vecs = jnp.einsum("...rp,...rd->...pd", u, a) / sigma[..., None]
    return Spectrum(lam, jnp.where(keep[..., None], vecs, 0.0))


def svd_spectrum(a: jax.Array) -> Spectrum:
    """Non-zero spectrum of A^T A from the thin SVD of A: O(r^2 D), never squares sigma."""
    _, s, vt = jnp.linalg.svd(a, full_matrices=False)
    return Spectrum(s**2, vt)


REDUCED_SPECTRA: dict[str, Callable[[jax.Array], Spectrum]] = {
    "dense": dense_spectrum,
    "gram": gram_spectrum,
    "svd": svd_spectrum,
}


def _top_eigenpairs(
    apply: Callable[[jax.Array], jax.Array], dim: int, p: int, key: jax.Array, dtype: Any, iters: int
) -> Spectrum:
    """Top-p eigenpairs of a symmetric PSD operator v (dim,) -> g v, matrix-free (LOBPCG).

    Why LOBPCG (``jax.experimental.sparse.linalg.lobpcg_standard``) rather than matfree's
    Lanczos: it ships with JAX (no dependency); it is a block method, so each iteration is
    ONE batched product on p vectors (a vmapped jvp + vjp, which XLA runs as a single wide
    pass through the model, on CPU as on GPU) where Lanczos makes p-times-more sequential
    single-vector products; and in float32 it keeps its block orthonormal by Rayleigh-Ritz
    on every iteration, where plain Lanczos loses orthogonality and needs full
    re-orthogonalisation for eigenvectors as accurate. A pullback metric has a few large
    eigenvalues and a fast-decaying tail, the case where LOBPCG converges in a few
    iterations. LOBPCG needs 5p < dim; smaller operators are materialised from dim products.
    An exactly-zero operator is shifted by the identity (LOBPCG divides by its norm).
    """
    block = jax.vmap(apply, in_axes=1, out_axes=1)
    if 5 * p >= dim:
        lam, vecs = jnp.linalg.eigh(block(jnp.eye(dim, dtype=dtype)))
        return Spectrum(lam[::-1][:p], vecs[:, ::-1][:, :p].T)
    start = jax.random.normal(key, (dim, p), jnp.float32).astype(dtype)  # the same draw in every precision
    zero = jnp.all(block(start) == 0)
    shift = jnp.where(zero, 1.0, 0.0).astype(dtype)
    theta, vecs, _ = lobpcg_standard(lambda v: block(v) + shift * v, start, m=iters)
    order = jnp.argsort(-theta)
    return Spectrum(theta[order] - shift, vecs[:, order].T)


def matfree_spectrum(
    f: Callable[..., jax.Array],
    x: jax.Array,
    args: tuple[Any, ...],
    index: jax.Array,
    valid: jax.Array,
    metric: OutputMetric,
    blocks: str,
    rank: int | None,
    key: jax.Array,
    iters: int = MATFREE_ITERS,
) -> tuple[jax.Array, Spectrum]:
    """Output y and the top spectrum of each block from g v = J^T G (J v), never forming J nor G.

    One linearisation of f serves every product: a JVP gives J v (k,), the metric's
    matrix-free product G w (:func:`~manifold_jax.output_metrics.metric_product`: O(k) for
    the built-in metrics), the transposed linear map gives J^T w. Nothing of size k x k,
    k x r or k x D is ever formed, so k may be a full vocabulary (50,257): memory is the
    linearisation's residuals plus p tangents of the outputs. ``rank`` (default: the
    column count of G's factor, i.e. the whole non-zero spectrum; pass a small rank when k
    is large) eigenpairs per block, capped at the block's dimension. With k > D the metric
    may have no exact null space: the caller's relative threshold then decides which of
    the top ``rank`` eigenpairs count as visible, and every direction orthogonal to the
    visible ones counts as null (the distribution barely sees it when lambda_rank is under
    the threshold).
    """
    y, lin = jax.linearize(lambda z: f(z, *args), x)
    lin_t = jax.linear_transpose(lin, x)
    m, d = index.shape[0], x.shape[-1]
    mask = valid[:, None].astype(x.dtype)
    columns = metric_rank(metric, y) if rank is None else rank

    def apply_selected(v: jax.Array) -> jax.Array:
        tangent = jnp.zeros_like(x).at[index].set(v * mask)
        (back,) = lin_t(metric_product(metric, y, lin(tangent)))
        return back[index] * mask

    if blocks == "token":
        p = min(columns, d)

        def token_block(i: jax.Array, kk: jax.Array) -> Spectrum:
            def apply_token(v: jax.Array) -> jax.Array:
                return apply_selected(jnp.zeros((m, d), x.dtype).at[i].set(v))[i]

            return _top_eigenpairs(apply_token, d, p, kk, x.dtype, iters)

        # one token at a time: vmapping the solver over tokens would hold m full-size tangents
        return y, jax.lax.map(lambda a: token_block(*a), (jnp.arange(m), jax.random.split(key, m)))
    dim = m * d
    p = min(columns, dim)
    spec = _top_eigenpairs(
        lambda v: apply_selected(v.reshape(m, d)).reshape(dim), dim, p, key, x.dtype, iters
    )
    return y, Spectrum(spec.eigenvalues[None], spec.eigenvectors[None])


def block_spectrum(
    f: Callable[..., jax.Array],
    x: jax.Array,
    args: tuple[Any, ...],
    index: jax.Array,
    valid: jax.Array,
    *,
    metric: OutputMetric,
    blocks: str,
    method: str,
    mode: str = "auto",
    rank: int | None = None,
    key: jax.Array | None = None,
    iters: int = MATFREE_ITERS,
) -> tuple[jax.Array, Spectrum]:
    """Output y (k,) and the spectrum of every metric block at x: the engine's one call."""
    if method == "matfree":
        if key is None:
            raise ValueError("spectrum method 'matfree' starts from random vectors: pass key=")
        return matfree_spectrum(f, x, args, index, valid, metric, blocks, rank, key, iters)
    y, jac = jacobian(f, x, args, index, valid, mode)
    return y, REDUCED_SPECTRA[method](factor_blocks(jac, metric(y), blocks))


def prepare_point(x: Any, select: Select, blocks: str, method: str | None) -> tuple[jax.Array, jax.Array, jax.Array]:
    """x as a JAX array and the selection as (index (m,), valid (m,)); works on traced x.

    A traced boolean mask (a selection computed inside the caller's ``jit`` or ``vmap``)
    keeps a block per position, its unselected ones exactly null.
    """
    arr = check_float_array("x", x, (2,))
    if not jnp.issubdtype(arr.dtype, jnp.floating):
        raise TypeError(f"x must be a floating-point array (float32 or float64), got dtype {arr.dtype}")
    check_finite("x", arr)
    check_option("blocks", blocks, BLOCKS)
    if method is not None:
        check_option("method", method, METHODS)
    n = arr.shape[0]
    if select is not None and not is_concrete(select):
        mask = jnp.asarray(select)
        if mask.dtype != jnp.bool_ or mask.shape != (n,):
            raise ValueError(
                f"a traced select must be a boolean mask of shape ({n},), got {mask.dtype} {tuple(mask.shape)}; "
                "indices must be known outside jit/vmap"
            )
        return jnp.asarray(arr), jnp.arange(n, dtype=jnp.int32), mask
    sel = token_selection(select, n, None)
    return jnp.asarray(arr), jnp.asarray(sel.index[0]), jnp.asarray(sel.valid[0])


@filter_jit(static_argnames=("metric", "blocks", "method", "mode", "rank", "iters"))
def _spectrum_at(
    f: Callable[..., jax.Array],
    x: jax.Array,
    args: tuple[Any, ...],
    index: jax.Array,
    valid: jax.Array,
    key: jax.Array | None,
    *,
    metric: OutputMetric,
    blocks: str,
    method: str,
    mode: str,
    rank: int | None,
    iters: int,
) -> Spectrum:
    y, spec = block_spectrum(
        f, x, args, index, valid, metric=metric, blocks=blocks, method=method,
        mode=mode, rank=rank, key=key, iters=iters,
    )
    # a non-finite output makes the whole spectrum meaningless, even where J itself is finite
    finite = jnp.isfinite(y).all()
    return Spectrum(jnp.where(finite, spec.eigenvalues, jnp.nan), jnp.where(finite, spec.eigenvectors, jnp.nan))


def spectrum(
    f: Callable[..., jax.Array],
    x: Any,
    *args: Any,
    select: Select = None,
    blocks: Blocks = "token",
    output_metric: str | OutputMetric = "euclidean",
    method: Method = "gram",
    mode: Mode = "auto",
    rank: int | None = None,
    key: jax.Array | None = None,
    iters: int = MATFREE_ITERS,
) -> Spectrum:
    """Eigenvalues (descending) and eigenvectors of each pullback-metric block at x (n, d).

    ``select`` picks the tokens (mask (n,), indices, or None for all); ``blocks`` chooses
    per-token blocks or one joint block; ``method`` the backend ("dense", "gram", "svd",
    "matfree": the latter needs ``key`` and returns the top ``rank`` eigenpairs).
    A pure function: it works under the caller's ``jit``, ``vmap`` and ``grad``. Where f(x)
    is not finite, every eigenvalue is NaN (eagerly: a ValueError).
    """
    xj, index, valid = prepare_point(x, select, blocks, method)
    metric = resolve_output_metric(output_metric)
    output_size(f, xj, args)
    rank = check_optional_count("rank", rank)
    iters = check_count("iters", iters)
    spec = _spectrum_at(
        f, xj, args, index, valid, key,
        metric=metric, blocks=blocks, method=method,
        mode=check_option("mode", mode, MODES), rank=rank, iters=iters,
    )
    if is_concrete((spec, xj)) and not bool(jnp.isfinite(spec.eigenvalues).all()):
        raise ValueError("the pullback spectrum at x is not finite: f(x) or its Jacobian holds NaN/inf")
    return spec


def pullback_metric(
    f: Callable[..., jax.Array],
    x: Any,
    *args: Any,
    select: Select = None,
    blocks: Blocks = "token",
    output_metric: str | OutputMetric = "euclidean",
    mode: Mode = "auto",
) -> jax.Array:
    """The dense pullback metric g = J^T G J per block: (m, d, d) or (1, m d, m d).

    For validation and small problems; the engine never forms it unless asked to.
    """
    xj, index, valid = prepare_point(x, select, blocks, None)
    output_size(f, xj, args)
    return _pullback_at(
        f, xj, args, index, valid,
        metric=resolve_output_metric(output_metric), blocks=blocks,
        mode=check_option("mode", mode, MODES),
    )


@filter_jit(static_argnames=("metric", "blocks", "mode"))
def _pullback_at(
    f: Callable[..., jax.Array],
    x: jax.Array,
    args: tuple[Any, ...],
    index: jax.Array,
    valid: jax.Array,
    *,
    metric: OutputMetric,
    blocks: str,
    mode: str,
) -> jax.Array:
    y, jac = jacobian(f, x, args, index, valid, mode)
    a = factor_blocks(jac, metric(y), blocks)
    return jnp.einsum("...ri,...rj->...ij", a, a)
