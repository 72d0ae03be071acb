"""The explored volume of a run and the paper's volume ratio rho_V (per patch, SiMExp over SiMEC)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from manifold_jax.analysis.checks import VARIANCE_RTOL, as_array


@dataclass(frozen=True)
class ExploredVolume:
    """Explored volume of one run (see the module docstring for the definition)."""

    tokens: np.ndarray
    """(m,) int64: the explored token positions measured, in order."""
    n_components: np.ndarray
    """(m,) int64: PCA components kept per token (0 when the token never moved)."""
    log_delta: np.ndarray
    """(m,) float64: log Delta_i, -inf for a token with zero extent."""
    log_volume: float
    """sum_i log Delta_i (natural log), -inf when some token has zero extent."""

    @property
    def delta(self) -> np.ndarray:
        """(m,) Delta_i = (prod_j r_ij)^(1/n_i)."""
        return np.exp(self.log_delta)

    @property
    def volume(self) -> float:
        """prod_i Delta_i (``inf``/``0.0`` where it leaves float64 range; use ``log_volume``)."""
        with np.errstate(over="ignore", under="ignore"):
            return float(np.exp(self.log_volume))


def _points(points: npt.ArrayLike, name: str, token_mask: npt.ArrayLike | None) -> tuple[np.ndarray, np.ndarray]:
    """Check points (T, n, d) with T >= 2 and return them with the selected token indices."""
    x = as_array(points, name, 3)
    t, n, _ = x.shape
    if t < 2:
        raise ValueError(f"{name}: needs at least 2 iterations to measure an extent, got {t}")
    if token_mask is None:
        return x, np.arange(n, dtype=np.int64)
    m = np.asarray(token_mask)
    if m.shape != (n,):
        raise ValueError(f"token_mask: expected shape ({n},) to match {name}, got {m.shape}")
    if m.dtype != bool:
        if not np.all(np.isin(m, (0, 1))):
            raise ValueError("token_mask: must be boolean (or 0/1)")
        m = m.astype(bool)
    idx = np.flatnonzero(m).astype(np.int64)
    if idx.size == 0:
        raise ValueError("token_mask: selects no token")
    return x, idx


def _check_variance(variance: float) -> float:
    v = float(variance)
    if not (0.0 < v <= 1.0) or math.isnan(v):
        raise ValueError(f"variance: must be a fraction in (0, 1], got {variance}")
    return v


def _pca(clouds: np.ndarray, variance: float) -> tuple[np.ndarray, np.ndarray]:
    """PCA of a stack of point clouds (m, T, d).

    Returns the principal axes (m, d, r) with r = min(T, d) (columns sorted by explained
    variance) and the number of components (m,) that reach ``variance`` of the total
    variance of each cloud (0 for a cloud with no variance).
    """
    centred = clouds - clouds.mean(axis=1, keepdims=True)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    var = s**2
    total = var.sum(axis=1)
    n_comp = np.zeros(clouds.shape[0], dtype=np.int64)
    for i in range(clouds.shape[0]):
        if total[i] <= 0.0:
            continue
        frac = np.cumsum(var[i]) / total[i]
        m = int(np.searchsorted(frac, variance - VARIANCE_RTOL, side="left")) + 1
        n_comp[i] = min(m, int(np.count_nonzero(var[i] > 0)))
    return np.swapaxes(vt, 1, 2), n_comp


def _log_extents(cloud: np.ndarray, axes: np.ndarray) -> np.ndarray:
    """log of max_t - min_t of ``cloud`` (T, d) projected on ``axes`` (d, m), (m,)."""
    proj = cloud @ axes
    ext = proj.max(axis=0) - proj.min(axis=0)
    with np.errstate(divide="ignore"):
        return np.log(ext)


def explored_volume(
    points: npt.ArrayLike, token_mask: npt.ArrayLike | None = None, variance: float = 0.9
) -> ExploredVolume:
    """Volume of the region one run explored, per docs/method.md section 9.

    ``points``: (T, n, d) explored embeddings over the run; ``token_mask``: (n,) bool,
    the explored tokens (all when None); ``variance``: fraction of each token's variance
    the kept PCA components must explain. For every selected token i it fits a PCA on
    x_i(0..T-1), keeps the n_i leading components, measures the extents r_ij of the
    projected cloud and sets ``Delta_i = (prod_j r_ij)^(1/n_i)`` (geometric-mean edge);
    the volume is ``prod_i Delta_i``, returned also as its log. It measures how far an
    exploration travelled within the directions it actually used, ignoring the
    (d - n_i) directions it barely touched, which would otherwise zero the volume.
    Caveat: where kept components have equal variances the principal axes are not
    unique (any rotation within the tied subspace is a valid PCA) and the extents,
    hence Delta_i, depend on the axes the SVD returns.
    """
    x, idx = _points(points, "points", token_mask)
    v = _check_variance(variance)
    clouds = np.ascontiguousarray(np.swapaxes(x[:, idx, :], 0, 1))  # (m, T, d)
    axes, n_comp = _pca(clouds, v)
    log_delta = np.full(idx.size, -np.inf)
    for i in range(idx.size):
        if n_comp[i] == 0:
            continue
        log_delta[i] = _log_extents(clouds[i], axes[i, :, : n_comp[i]]).mean()
    return ExploredVolume(idx, n_comp, log_delta, float(log_delta.sum()))


@dataclass(frozen=True)
class VolumeRatio:
    """rho_V between a SiMExp and a SiMEC run, per explored patch/token (see the module docstring)."""

    tokens: np.ndarray
    """(m,) int64: token positions compared."""
    n_components: np.ndarray
    """(m,) int64: components of the pooled PCA kept per token."""
    per_token_log_ratio: np.ndarray
    """(m,) float64: log rho_V,i = n_i (log Delta_i^SiMExp - log Delta_i^SiMEC), natural log."""

    @property
    def per_token_ratio(self) -> np.ndarray:
        """(m,) rho_V,i: the paper's volume ratio of each patch/token (``inf`` beyond float64)."""
        with np.errstate(over="ignore", under="ignore"):
            return np.exp(self.per_token_log_ratio)

    @property
    def log_rho_v(self) -> float:
        """log of :attr:`rho_v`, computed as a log-mean-exp (finite where rho_v overflows)."""
        logs = self.per_token_log_ratio
        top = float(np.max(logs))
        if not math.isfinite(top):
            return top
        return top + math.log(float(np.mean(np.exp(logs - top))))

    @property
    def rho_v(self) -> float:
        """The paper's rho_V for this input: the mean of the per-patch ratios over the explored patches."""
        with np.errstate(over="ignore", under="ignore"):
            return float(np.exp(self.log_rho_v))

    @property
    def geometric_mean(self) -> float:
        """exp(mean_i log rho_V,i): the per-patch ratio of a typical patch, robust to one outlier."""
        with np.errstate(over="ignore", under="ignore"):
            return float(np.exp(np.mean(self.per_token_log_ratio)))

    @property
    def log_product_over_tokens(self) -> float:
        """sum_i log rho_V,i: the log of the product of the per-patch ratios over all explored
        patches (the ratio of the whole input's box volumes; not the paper's rho_V)."""
        return float(np.sum(self.per_token_log_ratio))

    @property
    def log10_product_over_tokens(self) -> float:
        """:attr:`log_product_over_tokens` in base 10, the readable order of magnitude."""
        return self.log_product_over_tokens / math.log(10.0)


def volume_ratio(
    points_simexp: npt.ArrayLike,
    points_simec: npt.ArrayLike,
    token_mask: npt.ArrayLike | None = None,
    variance: float = 0.9,
) -> VolumeRatio:
    """rho_V,i = (Delta_i^SiMExp / Delta_i^SiMEC)^n_i per explored token, computed in log space.

    ``points_simexp``: (T1, n, d), ``points_simec``: (T2, n, d), two runs from the same
    start; ``token_mask``: (n,) bool. Per token, one PCA is fitted on the pooled points
    of both runs (so both are measured along the same n_i axes), and the token's log
    ratio is ``sum_j log(r_ij^SiMExp / r_ij^SiMEC)``: the log ratio of the two
    bounding-box volumes. How much more room leaving the class explores than staying in
    it, patch by patch; :attr:`VolumeRatio.rho_v` averages it over the patches as the
    paper does. A token where neither run moved has ratio 1; one where only SiMEC has
    zero extent has ratio +inf.
    """
    xe, idx = _points(points_simexp, "points_simexp", token_mask)
    xc, _ = _points(points_simec, "points_simec", token_mask)
    if xe.shape[1:] != xc.shape[1:]:
        raise ValueError(
            f"points_simec: token/width shape {xc.shape[1:]} differs from points_simexp's {xe.shape[1:]}"
        )
    v = _check_variance(variance)
    te = xe.shape[0]
    pooled = np.ascontiguousarray(np.swapaxes(np.concatenate([xe[:, idx], xc[:, idx]], axis=0), 0, 1))
    axes, n_comp = _pca(pooled, v)
    per_token = np.zeros(idx.size)
    for i in range(idx.size):
        if n_comp[i] == 0:
            continue
        a = axes[i, :, : n_comp[i]]
        le = _log_extents(pooled[i, :te], a)
        lc = _log_extents(pooled[i, te:], a)
        with np.errstate(invalid="ignore"):
            diff = le - lc
        # both zero along a component: neither run moved there, ratio 1
        diff = np.where(np.isneginf(le) & np.isneginf(lc), 0.0, diff)
        per_token[i] = diff.sum()
    return VolumeRatio(idx, n_comp, per_token)


def mean_rho_v(ratios: list[VolumeRatio] | tuple[VolumeRatio, ...]) -> float:
    """The paper's rho_V over several inputs: the mean of rho_V,i over every explored
    patch of every input (patches pooled, so each patch weighs the same)."""
    if not ratios:
        raise ValueError("ratios: give at least one VolumeRatio")
    logs = np.concatenate([r.per_token_log_ratio for r in ratios])
    return VolumeRatio(np.arange(logs.size), np.zeros(logs.size, np.int64), logs).rho_v
