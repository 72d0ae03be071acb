"""Full-vocabulary geometry: matrix-free metric products, the matrix-free spectrum against the
dense one on a small vocabulary, and SiMEC / SiMExp on a causal LM's next-token distribution."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import manifold_jax as mj
import manifold_jax.models as mm
from manifold_jax.geometry import block_spectrum
from manifold_jax.output_metrics import (
    euclidean,
    fisher_rao,
    metric_product,
    metric_rank,
    metric_tensor,
    softmax_euclidean,
)
from tests.models_helpers import save_random_gpt2

RANK = 6
"""Top eigenpairs the matrix-free solver computes (5 * RANK must stay under the block's dimension)."""


@pytest.fixture(scope="module")
def lm(tmp_path_factory: pytest.TempPathFactory) -> tuple[mm.GPT2, jax.Array, dict[str, jax.Array]]:
    """A tiny random GPT-2 (V = 400, d = 32) and one prompt of 7 tokens: the joint block has
    D = 224 coordinates and the Fisher metric rank up to min(V - 1, D) = 224 (no exact null space)."""
    directory: Path = tmp_path_factory.mktemp("gpt2_geometry")
    save_random_gpt2(directory)
    model = mm.load(directory)
    x0, ctx = model.embed(["The striker scored twice in the final."])
    one = {k: v[0] for k, v in ctx.items()}
    return model, x0[0], one


@pytest.mark.parametrize("metric", [euclidean, softmax_euclidean, fisher_rao])
def test_metric_products_equal_the_dense_metric(metric: Any) -> None:
    """G w without L against L L^T w, in float64 (exact up to rounding: 1e-12)."""
    with jax.enable_x64(True):
        y = jax.random.normal(jax.random.key(0), (37,), jnp.float64) * 3
        w = jax.random.normal(jax.random.key(1), (37,), jnp.float64)
        dense = metric_tensor(metric, y) @ w
        np.testing.assert_allclose(np.asarray(metric_product(metric, y, w)), np.asarray(dense), rtol=0, atol=1e-12)
        assert metric_rank(metric, y) == 37

        def custom(v: jax.Array) -> jax.Array:  # a user's factor (k, 2): the L (L^T w) fallback
            return jnp.stack([v, jnp.ones_like(v)], axis=1)

        np.testing.assert_allclose(
            np.asarray(metric_product(custom, y, w)), np.asarray(metric_tensor(custom, y) @ w), rtol=0, atol=1e-12
        )
        assert metric_rank(custom, y) == 2


def test_matfree_never_forms_a_vocabulary_sized_matrix() -> None:
    """A linear head with k = 20,000 outputs (G would be 1.6 GB in float32): the compiled matrix-free
    spectrum's temporaries stay under 50 MB, the size of a few k x D Jacobian-free buffers."""
    k, n, d = 20_000, 4, 16
    w = jax.random.normal(jax.random.key(0), (k, n * d)) / 8

    def head(x: jax.Array) -> jax.Array:
        return w @ jnp.tanh(x).reshape(-1)

    def run(x: jax.Array) -> Any:
        return block_spectrum(
            head, x, (), jnp.arange(n), jnp.ones((n,), bool), metric=fisher_rao, blocks="joint",
            method="matfree", rank=4, key=jax.random.key(1),
        )[1]

    x = jax.random.normal(jax.random.key(2), (n, d))
    compiled = jax.jit(run).lower(x).compile()
    temp = compiled.memory_analysis().temp_size_in_bytes
    assert temp < 50e6, f"matrix-free spectrum holds {temp / 1e6:.0f} MB of temporaries (G alone is 1600 MB)"


def test_matfree_top_spectrum_matches_dense_on_a_small_vocabulary(lm: Any) -> None:
    """Top eigenvalues of the joint Fisher pullback metric of the tiny GPT-2 (V = 400), float32.

    The dense reference ("gram": k = 400 VJPs, eigh of the 400 x 400 Gram matrix) carries an error
    of ~k eps lambda_max ~ 5e-5 lambda_max at worst and measured ~3e-7; LOBPCG stops at a residual
    of ~eps-level, whose eigenvalue error is second order in it. 1e-4 of lambda_max bounds both
    with a margin while a wrong product (a missing G, a transposed J) is off by O(1)."""
    model, x0, ctx = lm
    dense = mj.spectrum(model.head, x0, ctx, blocks="joint", output_metric="fisher_rao", method="gram")
    free = mj.spectrum(
        model.head, x0, ctx, blocks="joint", output_metric="fisher_rao", method="matfree", rank=RANK,
        key=jax.random.key(0),
    )
    top_dense = np.asarray(dense.eigenvalues)[0, :RANK]
    top_free = np.asarray(free.eigenvalues)[0]
    rel = np.abs(top_free - top_dense) / top_dense[0]
    print(f"tiny GPT-2 joint Fisher spectrum: matfree vs dense, max relative difference {rel.max():.2g}")
    assert top_free.shape == (RANK,)
    assert rel.max() <= 1e-4
    # the eigenvectors span the same space (principal angles ~ 0) where the gaps are not tiny
    overlap = np.abs(np.asarray(free.eigenvectors)[0, :3] @ np.asarray(dense.eigenvectors)[0, :3].T)
    np.testing.assert_allclose(np.sort(np.linalg.svd(overlap, compute_uv=False)), 1.0, atol=1e-3)


def test_simec_keeps_and_simexp_moves_the_next_token_distribution(lm: Any) -> None:
    """SiMEC / SiMExp over the FULL vocabulary through the public API (matrix-free, Fisher-Rao).

    Along a unit direction v the total-variation distance of the next-token distribution changes
    at a rate <= sqrt(v^T g v) / 2 (Cauchy-Schwarz on sum |dp| = sum sqrt(p) |dp| / sqrt(p)). SiMEC's
    v is a Gaussian projected off the top RANK eigenvectors: uniform in the other D - RANK
    dimensions, so v^T g v concentrates at the mean tail eigenvalue sum_{i>RANK} lambda_i / (D - RANK)
    (here ~200 dimensions: fluctuations well under 2x). Its TV change is then bounded by
    sqrt(mean tail) / 2 times the distance walked, x3 for those fluctuations, the second-order
    terms and the spectrum changing along the path. SiMExp follows top eigenvectors, whose rate
    sqrt(lambda_i), i <= RANK, is larger: it must move the distribution several times more
    (measured ~40x; asserted 5x).
    """
    model, x0, ctx = lm
    p0 = np.asarray(jax.nn.softmax(model.head(x0, ctx)))
    options: dict[str, Any] = {
        "steps": 10, "save_every": 1, "key": jax.random.key(3), "args": (ctx,), "spectrum": "matfree",
        "output_metric": "fisher_rao", "rank": RANK, "blocks": "joint", "eta": 10.0,
    }
    stay = mj.simec(model.head, x0, **options)
    leave = mj.simexp(model.head, x0, **options)
    assert stay.y.shape == (11, model.config.vocab_size)  # the full next-token logits
    assert not stay.status.any() and not leave.status.any()

    def tv(traj: mj.Trajectory) -> float:
        return float(0.5 * np.abs(np.asarray(jax.nn.softmax(jnp.asarray(traj.y[-1]))) - p0).sum())

    walked = float(np.linalg.norm(stay.x[-1] - np.asarray(x0)))
    lam = np.asarray(mj.spectrum(model.head, x0, ctx, blocks="joint", output_metric="fisher_rao").eigenvalues)[0]
    path = float(stay.step[:-1].sum())  # the last record is the step a continuation would take
    tail = lam[RANK:].sum() / (lam.size - RANK)  # gram holds all min(k, D) = D eigenvalues here
    bound = 3 * 0.5 * np.sqrt(tail) * path
    print(f"TV of the next-token distribution: SiMEC {tv(stay):.2g} (bound {bound:.2g}, walked {walked:.3g}), "
          f"SiMExp {tv(leave):.2g}")
    assert walked > 0.01
    assert tv(stay) <= bound
    assert tv(leave) >= 5 * tv(stay)


def test_counterfactual_of_the_next_token_is_a_certified_closest_point(lm: Any) -> None:
    """``mj.counterfactual`` on a causal LM: the closest prompt embedding whose next token is the
    runner-up token, over the full vocabulary (V = 400), every token explored.

    Checked independently of the solver's own certificate: the model's next token at x is the
    target; the margin f_t - f_s there is positive and under 1e-2 logits (the overshoot 1e-3 plus
    the level tolerance); and x - x0 is parallel to the margin's gradient at x, the first-order
    condition of the closest point of {f_t = f_s} without a box. A KKT residual r (the part of
    x - x0 off the gradient, relative) is sin of their angle, so cos >= sqrt(1 - r^2) >= 0.9999
    at the solver's tol 1e-2; 0.999 (2.6 degrees) leaves room for the float32 gradient."""
    model, x0, ctx = lm
    logits = np.asarray(model.head(x0, ctx))
    source, target = (int(i) for i in np.argsort(logits)[::-1][:2])
    cf = mj.counterfactual(model.head, x0, target, args=(ctx,), margin="source")
    assert bool(cf.reached) and bool(cf.converged)
    y = np.asarray(model.head(cf.x, ctx))
    assert int(y.argmax()) == target
    assert 0 < y[target] - y[source] < 1e-2
    grad = np.asarray(jax.grad(lambda z: model.head(z, ctx)[target] - model.head(z, ctx)[source])(cf.x)).ravel()
    step = np.asarray(cf.x - x0).ravel()
    cos = step @ grad / (np.linalg.norm(step) * np.linalg.norm(grad))
    print(f"next-token counterfactual: token {source} -> {target}, L2 {float(cf.distance):.4g}, "
          f"kkt {float(cf.kkt):.2g}, cos(x - x0, grad m) {cos:.6f}")
    assert cos >= 0.999
    np.testing.assert_allclose(float(cf.distance), np.linalg.norm(step), rtol=1e-5)
