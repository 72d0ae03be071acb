"""Every spectrum backend on random per-token Jacobians: time and agreement with exact eigenvalues."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks.measure import median_time
from benchmarks.specs import SEED


def spectrum_table(ds: list[int], ks: list[int], n: int, repeats: int, budget: float,
                   matfree_bytes: float = 2 * 2**30, matfree_flops: float = 2e11,
                   dense_once_from: int = 768) -> list[dict[str, Any]]:
    """Every spectrum backend on random per-token Jacobians (k, n, d), float32, CPU/GPU.

    f(x) = sum_{i,j} J[:, i, j] x[i, j] is linear, so J is exact and known; each token's
    block has singular values log-spaced from 1 to 1e-2 (condition 100, squared 1e4 by
    the Gram and dense paths). Times one jitted ``geometry.block_spectrum`` call over all
    n tokens (the engine's own call: the Jacobian of f, then the backend; "matfree" uses
    J-vector products instead). Agreement: the top min(k, d) eigenvalues of every token
    against float64 ``numpy.linalg.svd`` of the same J (exact) and against "dense".
    ``budget``: seconds; a backend whose first call exceeds it is not called again (its
    time is that call's, compile included: an upper bound, repeats 0). ``matfree_bytes``:
    "matfree" cells whose per-token tangents would exceed it are skipped (they run out of
    memory: see the note in the code); ``matfree_flops``: so are cells whose operator
    products would exceed this many flops at the full iteration cap. ``dense_once_from``:
    from this d on, "dense" is timed at the first k only (its cost does not depend on k).
    """
    import jax
    import jax.numpy as jnp

    from manifold_jax.geometry import MATFREE_ITERS as matfree_iters

    rows = []
    rng = np.random.default_rng(SEED)
    for d in ds:
        for k in ks:
            p = min(k, d)
            s = np.logspace(0, -2, p)
            jac = np.empty((k, n, d), np.float32)
            for i in range(n):
                u, _ = np.linalg.qr(rng.standard_normal((k, p)))
                v, _ = np.linalg.qr(rng.standard_normal((d, p)))
                jac[:, i, :] = (u * s) @ v.T
            exact = np.stack([np.linalg.svd(jac[:, i, :].astype(np.float64), compute_uv=False)[:p] ** 2
                              for i in range(n)])
            x = jnp.zeros((n, d), jnp.float32)
            index, valid = jnp.arange(n), jnp.ones(n, bool)
            jj = jnp.asarray(jac)
            key = jax.random.key(SEED)

            jac_only = _jacobian_program(index, valid)
            jax.block_until_ready(jac_only(jj, x))  # compile
            jac_s = median_time(functools.partial(_wait, jac_only, jj, x), repeats)
            dense_vals: np.ndarray | None = None
            for method in ("dense", "gram", "svd", "matfree"):
                row: dict[str, Any] = {"d": d, "k": k, "n": n, "method": method, "jacobian_seconds": jac_s}
                if method == "dense" and d >= dense_once_from and k != ks[0]:
                    # n eigh of d x d: its cost does not depend on k, and at d = 768 one call
                    # takes minutes on 2 cores; timed at the first k only
                    row.update({"skipped": f"d x d eigh, same cost as k = {ks[0]}: not rerun",
                                "seconds": float("nan")})
                    rows.append(row)
                    continue
                if method == "matfree" and 5 * p < d and n * matfree_iters * 3 * p * 4 * k * n * d > matfree_flops:
                    work = n * matfree_iters * 3 * p * 4 * k * n * d
                    row.update({"skipped": f"~{work / 1e12:.1f} TFLOP of operator products (n tokens x "
                                           f"{matfree_iters} LOBPCG iterations x 3p products of 4knd)",
                                "seconds": float("nan")})
                    rows.append(row)
                    continue
                if method == "matfree" and 5 * p < d:
                    # LOBPCG on each token's operator, vmapped over the n tokens: every operator
                    # product carries a whole (n, d) tangent, for a block of up to 3p vectors
                    need = n * 3 * p * n * d * 4
                    if need > matfree_bytes:
                        row.update({"skipped": f"needs ~{need / 2**30:.0f} GiB (n x 3p x n x d tangents)",
                                    "seconds": float("nan")})
                        rows.append(row)
                        continue
                fn = _spectrum_program(method, index, valid)
                start = time.perf_counter()
                vals = np.asarray(jax.block_until_ready(fn(jj, x, key)))
                first = time.perf_counter() - start
                if first > budget:  # too slow to repeat: one call, compile included (an upper bound)
                    sec, reps, compile_s = first, 0, float("nan")
                else:
                    reps = repeats
                    sec = median_time(functools.partial(_wait, fn, jj, x, key), reps)
                    compile_s = max(first - sec, 0.0)
                top = vals[:, :p].astype(np.float64)
                lam_max = exact[:, :1]
                row.update({"seconds": sec, "compile_s": compile_s, "repeats": reps,
                            "err_vs_exact": float(np.max(np.abs(top - exact) / lam_max)),
                            "err_rel_each": float(np.max(np.abs(top - exact) / exact))})
                if method == "dense":
                    dense_vals = top
                if dense_vals is not None:
                    row["err_vs_dense"] = float(np.max(np.abs(top - dense_vals) / lam_max))
                rows.append(row)
    return rows


def _wait(fn: Callable[..., Any], *args: Any) -> Any:
    """Call ``fn`` and wait for its result (JAX dispatches asynchronously)."""
    import jax

    return jax.block_until_ready(fn(*args))


def _spectrum_program(method: str, index: Any, valid: Any) -> Callable[..., Any]:
    """The jitted spectrum of the linear map z -> J z with one backend: (J, x, key) -> eigenvalues."""
    import jax
    import jax.numpy as jnp

    from manifold_jax.geometry import block_spectrum
    from manifold_jax.output_metrics import euclidean

    @jax.jit
    def call(j: jax.Array, point: jax.Array, key: jax.Array) -> jax.Array:
        def f(z: jax.Array) -> jax.Array:
            return jnp.einsum("knd,nd->k", j, z)

        return block_spectrum(f, point, (), index, valid, metric=euclidean, blocks="token",
                              method=method, key=key)[1].eigenvalues

    return call


def _jacobian_program(index: Any, valid: Any) -> Callable[..., Any]:
    """The jitted per-token Jacobian of the linear map z -> J z: (J, x) -> J."""
    import jax
    import jax.numpy as jnp

    from manifold_jax.geometry import jacobian

    @jax.jit
    def call(j: jax.Array, point: jax.Array) -> jax.Array:
        def f(z: jax.Array) -> jax.Array:
            return jnp.einsum("knd,nd->k", j, z)

        return jacobian(f, point, (), index, valid)[1]

    return call
