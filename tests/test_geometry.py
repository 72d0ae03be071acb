"""The pullback geometry against independent references: numpy/scipy linear algebra."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

import manifold_jax as mj
from manifold_jax.geometry import gram_spectrum, jacobian, numerical_floor
from tests.toy_models import linear_map, toy_classifier

METHODS = ["dense", "gram", "svd", "matfree"]


def _softmax(y: np.ndarray) -> np.ndarray:
    e = np.exp(y - y.max())
    return e / e.sum()


def _reference_metric(name: str, y: np.ndarray) -> np.ndarray:
    """G (k, k) written from its definition, independently of manifold_jax.output_metrics."""
    p = _softmax(y)
    fisher = np.diag(p) - np.outer(p, p)
    return {"euclidean": np.eye(len(y)), "softmax": fisher.T @ fisher, "fisher_rao": fisher}[name]


def _reference_blocks(jac: np.ndarray, g_out: np.ndarray, blocks: str) -> list[np.ndarray]:
    """Dense J^T G J per block from a (k, m, d) Jacobian, in float64 numpy."""
    k, m, d = jac.shape
    if blocks == "joint":
        j = jac.reshape(k, m * d)
        return [j.T @ g_out @ j]
    return [jac[:, i].T @ g_out @ jac[:, i] for i in range(m)]


def _principal_sines(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Sines of the principal angles between the row spaces of u and v (scipy)."""
    return np.sin(scipy.linalg.subspace_angles(u.T, v.T))


@pytest.mark.parametrize("blocks", ["token", "joint"])
@pytest.mark.parametrize("metric", ["euclidean", "softmax", "fisher_rao"])
@pytest.mark.parametrize("x64", [False, True])
def test_backends_agree_with_numpy_on_a_random_jacobian(blocks: str, metric: str, x64: bool) -> None:
    n, d, k = 4, 12, 5
    with jax.enable_x64(x64):
        f, a = linear_map(jax.random.PRNGKey(0), n, d, k)
        dtype = jnp.float64 if x64 else jnp.float32
        x0 = jax.random.normal(jax.random.PRNGKey(1), (n, d), dtype)
        select = [0, 2, 3]
        jac = np.asarray(a, np.float64).reshape(k, n, d)[:, select]
        y0 = np.asarray(a, np.float64) @ np.asarray(x0, np.float64).reshape(-1)
        ref = _reference_blocks(jac, _reference_metric(metric, y0), blocks)
        # eigenvalues relative to the block's largest: float32 ~ 1e-5, float64 ~ 1e-10
        rtol = 1e-10 if x64 else 1e-5
        eps = float(jnp.finfo(dtype).eps)
        spectra = {
            m: mj.spectrum(f, x0, select=select, blocks=blocks, output_metric=metric,
                           method=m, key=jax.random.PRNGKey(2))
            for m in METHODS
        }
        for b, g in enumerate(ref):
            lam_ref, vec_ref = np.linalg.eigh(g)
            lam_ref, vec_ref = lam_ref[::-1], vec_ref[:, ::-1]
            top = lam_ref[0]
            # compare the eigenvectors that the dtype resolves: eigenvalues above 1e3 eps lambda_max
            rank = int((lam_ref > 1e3 * eps * top).sum())
            gap = lam_ref[rank - 1] - lam_ref[rank]
            for name, spec in spectra.items():
                lam = np.asarray(spec.eigenvalues[b], np.float64)
                assert spec.eigenvalues.dtype == dtype
                p = min(len(lam), k)
                err = np.abs(lam[:p] - lam_ref[:p]).max() / top
                assert err <= rtol, f"{name}: eigenvalue error {err:.2e} > {rtol:.0e} (relative to lambda_max)"
                visible = np.asarray(spec.eigenvectors[b, :rank], np.float64)
                sines = _principal_sines(visible, vec_ref[:, :rank].T)
                # Davis-Kahan: a perturbation of size ~eps lambda_max (forming and factoring the
                # metric in the working dtype) tilts the subspace by at most ||E|| / gap
                bound = 1e3 * eps * top / gap
                assert sines.max() <= bound, f"{name}: principal angle sine {sines.max():.2e} > {bound:.1e}"


def test_jacrev_equals_jacfwd_on_a_transformer() -> None:
    f, x0 = toy_classifier(jax.random.PRNGKey(0))
    mask = jnp.ones((x0.shape[0],), bool)
    index, valid = jnp.array([1, 3, 4]), jnp.array([True, True, True])
    y_r, j_r = jax.jit(lambda x: jacobian(f, x, (mask,), index, valid, "rev"))(x0)
    y_f, j_f = jax.jit(lambda x: jacobian(f, x, (mask,), index, valid, "fwd"))(x0)
    # same function, differently compiled: equal up to float32 rounding of O(1) logits
    np.testing.assert_allclose(y_r, y_f, rtol=0, atol=1e-5 * float(jnp.abs(y_r).max()))
    scale = float(jnp.abs(j_r).max())
    # both are exact derivatives evaluated in float32: they differ by rounding only
    assert float(jnp.abs(j_r - j_f).max()) <= 1e-5 * scale
    full = jax.jit(jax.jacrev(f))(x0, mask)[:, index]
    np.testing.assert_allclose(j_r, full, rtol=0, atol=1e-6 * scale)


def test_auto_mode_picks_forward_for_few_coordinates() -> None:
    from manifold_jax.geometry import resolve_mode

    assert resolve_mode("auto", k=10, coordinates=768) == "rev"
    assert resolve_mode("auto", k=30522, coordinates=768) == "fwd"
    with pytest.raises(ValueError, match=r"mode='sideways'.*'auto', 'rev', 'fwd'"):
        resolve_mode("sideways", 1, 1)


@pytest.mark.parametrize("blocks", ["token", "joint"])
def test_transformer_spectrum_matches_numpy_eigh_of_explicit_metric(blocks: str) -> None:
    with jax.enable_x64(True):
        f, x0 = toy_classifier(jax.random.PRNGKey(3), n=6, d=8, k=3)
        x0 = x0.astype(jnp.float64)
        mask = jnp.ones((6,), bool)
        select = np.array([False, True, True, False, True, True])
        jac = np.asarray(jax.jit(jax.jacrev(f))(x0, mask), np.float64)[:, select]
        y0 = np.asarray(f(x0, mask), np.float64)
        ref = _reference_blocks(jac, _reference_metric("fisher_rao", y0), blocks)
        metric_dense = mj.pullback_metric(f, x0, mask, select=select, blocks=blocks, output_metric="fisher_rao")
        for method in METHODS:
            spec = mj.spectrum(f, x0, mask, select=select, blocks=blocks, output_metric="fisher_rao",
                               method=method, key=jax.random.PRNGKey(0))
            for b, g in enumerate(ref):
                lam_ref = np.linalg.eigvalsh(g)[::-1]
                lam = np.asarray(spec.eigenvalues[b])
                p = min(len(lam), 2)  # Fisher-Rao on 3 classes has rank 2
                np.testing.assert_allclose(lam[:p], lam_ref[:p], rtol=1e-10, atol=1e-12 * lam_ref[0])
                np.testing.assert_allclose(metric_dense[b], g, rtol=1e-10, atol=1e-14 * lam_ref[0])


def test_gram_masks_numerically_zero_eigenvalues_in_float32() -> None:
    """A softmax-trained head has logits summing to a constant: J has rank k - 1.

    Recovering eigenvectors as A^T u / sigma would blow the null one up; it must come
    back as a zero row, and every other row must be orthonormal.
    """
    f, x0 = toy_classifier(jax.random.PRNGKey(1), k=4, centered=True)
    mask = jnp.ones((8,), bool)
    spec = mj.spectrum(f, x0, mask, method="gram")
    lam, vecs = np.asarray(spec.eigenvalues), np.asarray(spec.eigenvectors)
    assert np.isfinite(lam).all() and np.isfinite(vecs).all()
    floor = numerical_floor(np.float32)
    assert (lam[:, -1] <= floor * lam[:, 0]).all(), "the rank-deficient direction must be numerically zero"
    np.testing.assert_array_equal(vecs[:, -1], 0.0)
    gram = np.einsum("bpd,bqd->bpq", vecs[:, :3], vecs[:, :3])
    np.testing.assert_allclose(gram, np.broadcast_to(np.eye(3), gram.shape), atol=5e-3)


def test_gram_spectrum_of_a_zero_block_is_zero_not_nan() -> None:
    spec = gram_spectrum(jnp.zeros((2, 3, 10)))
    assert np.isfinite(np.asarray(spec.eigenvectors)).all()
    np.testing.assert_array_equal(spec.eigenvalues, 0.0)


def test_matfree_handles_a_zero_operator_and_a_rank_deficient_one() -> None:
    n, d, k = 2, 40, 3
    a = np.array(jax.random.normal(jax.random.PRNGKey(0), (k, n * d)))
    a[:, :d] = 0.0  # token 0 cannot be seen at all
    a[2, d:] = a[0, d:] + a[1, d:]  # token 1's block has rank 2
    a = jnp.asarray(a)
    spec = mj.spectrum(lambda x: a @ x.reshape(-1), jnp.ones((n, d)), method="matfree", key=jax.random.PRNGKey(1))
    lam = np.asarray(spec.eigenvalues)
    assert np.isfinite(lam).all() and np.isfinite(np.asarray(spec.eigenvectors)).all()
    np.testing.assert_allclose(lam[0], 0.0, atol=1e-6)
    ref = np.linalg.eigvalsh(np.asarray(a[:, d:]).T @ np.asarray(a[:, d:]))[::-1][:3]
    np.testing.assert_allclose(lam[1], ref, atol=1e-5 * ref[0])


def test_output_metric_factors_reproduce_their_tensors() -> None:
    y = jnp.array([0.3, -1.2, 2.0, 0.1])
    p = _softmax(np.asarray(y, np.float64))
    jac_softmax = np.asarray(jax.jacobian(jax.nn.softmax)(y), np.float64)
    np.testing.assert_allclose(mj.metric_tensor("fisher_rao", y), np.diag(p) - np.outer(p, p), atol=1e-6)
    np.testing.assert_allclose(mj.metric_tensor("softmax", y), jac_softmax.T @ jac_softmax, atol=1e-6)
    np.testing.assert_allclose(mj.metric_tensor("euclidean", y), np.eye(4), atol=0)


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"x": np.full((3, 4), np.nan)}, ValueError, "x must be finite"),
        ({"x": np.ones((2, 3, 4))}, ValueError, "x must be 2-D"),
        ({"x": np.ones((3, 4), dtype=complex)}, TypeError, "x must be a real floating-point"),
        ({"method": "qr"}, ValueError, "method='qr'.*'dense', 'gram', 'svd', 'matfree'"),
        ({"blocks": "pairs"}, ValueError, "blocks='pairs'.*'token', 'joint'"),
        ({"output_metric": "cosine"}, ValueError, "output_metric='cosine'"),
        ({"select": np.zeros(3, bool)}, ValueError, "selects no position"),
        ({"select": [0, 7]}, ValueError, "index 7, out of range for 3 positions"),
        ({"select": [1, 1]}, ValueError, "repeats an index"),
        ({"select": np.ones(4, bool)}, ValueError, r"boolean mask of shape \(4,\); expected \(3,\)"),
        ({"method": "matfree"}, ValueError, "needs.*key|pass key="),
        ({"rank": 0}, ValueError, "rank must be a positive integer"),
    ],
)
def test_spectrum_rejects_bad_input(kwargs: dict, error: type, pattern: str) -> None:
    x = kwargs.pop("x", np.ones((3, 4), np.float32))
    with pytest.raises(error, match=pattern):
        mj.spectrum(lambda x: x.sum(0), x, **kwargs)


def test_spectrum_rejects_a_model_that_does_not_return_a_vector() -> None:
    with pytest.raises(ValueError, match=r"f must return a vector of shape \(k,\), got \(3, 4\)"):
        mj.spectrum(lambda x: x * 2, np.ones((3, 4), np.float32))
