"""Metrics over one exploration run (docs/method.md section 9), one module per kind of metric.

Every function here is pure numpy over per-iteration arrays of one run, so it works on
what the engine saves (numpy or JAX arrays alike) and needs no model. Conventions:

* ``T`` is the number of saved iterations (the starting point included), ``k`` the
  number of classes (outputs of ``head``), ``n`` the number of token/patch positions and
  ``d`` the embedding width.
* ``scores`` means logits *or* probabilities, shape (T, k): the arg-max and the class
  ranking are the same for both because softmax is strictly increasing. ``probs`` means
  probabilities (rows in [0, 1] summing to 1); use :func:`softmax` on logits first.
* Bad input (wrong rank, empty arrays, NaN/inf, a probability row that does not sum to
  one) raises ``ValueError`` naming the argument.

Interpretations of the paper's metrics that it leaves open, made here once:

* **Ties.** A class pair counts as an inversion between two iterations only when the
  pair is strictly ordered in both and the order flips; a tie at either iteration is not
  an inversion. Spearman uses average ranks for ties (as ``scipy.stats.spearmanr``).
* **Explored volume.** For explored token i, the T vectors x_i(t) (d,) are centred and
  reduced by PCA to the smallest number n_i of principal components whose explained
  variance reaches the requested fraction (90 %). With r_ij = max_t y_ij(t) - min_t
  y_ij(t) the extent of the projected cloud along component j, the paper's
  ``Delta_i = (max_t x_i - min_t x_i)^(1/n)`` is read as the geometric mean of those
  extents, ``Delta_i = (prod_j r_ij)^(1/n_i)``: the edge of the n_i-dimensional cube
  with the same volume as the token's bounding box in PCA coordinates, so that tokens
  with different n_i contribute comparable lengths. The run's volume is
  ``prod_i Delta_i`` over the explored tokens.
* **Volume ratio, per patch (the paper's rho_V).** For patch/token i,
  ``rho_V,i = (Delta_i^SiMExp / Delta_i^SiMEC)^n_i`` undoes the 1/n root: it is the
  ratio of the two runs' bounding-box volumes in PCA coordinates. That ratio needs both
  runs measured along the same axes with the same n_i, so for each token one PCA is
  fitted on the pooled points of both runs and both are measured along its n_i
  components: ``log rho_V,i = sum_j (log r_ij^SiMExp - log r_ij^SiMEC)``. The paper's
  figure ("in the order of tens", MNIST 99.3 at eta 1) is the **mean of rho_V,i over
  the explored patches** (and then over inputs), :attr:`VolumeRatio.rho_v`. The product
  of the per-patch ratios over all patches of an input is a different quantity (1e19
  to 1e107 on our runs): it is kept, in log space, only as
  :attr:`VolumeRatio.log_product_over_tokens`.
* **Embedding vs interpretation distance.** Wasserstein-1 between two class
  distributions with the 0/1 ground distance (classes are unordered: moving mass
  between any two different classes costs 1) equals the total variation distance,
  half the L1 distance. That is what :func:`wasserstein1_01` computes.
* **Catch-up.** See :func:`catch_up`: an embedding prediction change at saved
  iteration t (to class c) is *caught up* when the interpretation's prediction changes
  to c at some saved iteration s with t <= s <= t + window.
* **Top-class probability correlation.** Pearson correlation between the two runs'
  own top-class probability series (max_c p_t[c]): how well the interpretation's
  confidence tracks the embedding's.
"""

from __future__ import annotations

from manifold_jax.analysis.classification import (
    Inversions,
    original_class_probability,
    prediction_change_steps,
    prediction_changes,
    predictions,
    ranking_inversions,
    ranking_spearman,
    softmax,
    top_class_probability,
)
from manifold_jax.analysis.interpretation import (
    CatchUp,
    catch_up,
    pearson,
    top_probability_correlation,
    total_variation,
    wasserstein1_01,
)
from manifold_jax.analysis.paths import path_summary, stop_sentence
from manifold_jax.analysis.summary import json_ready, summarize
from manifold_jax.analysis.timing import time_per_iteration_per_token
from manifold_jax.analysis.volume import ExploredVolume, VolumeRatio, explored_volume, mean_rho_v, volume_ratio

__all__ = [
    "CatchUp",
    "ExploredVolume",
    "Inversions",
    "VolumeRatio",
    "catch_up",
    "explored_volume",
    "json_ready",
    "mean_rho_v",
    "original_class_probability",
    "path_summary",
    "pearson",
    "prediction_change_steps",
    "prediction_changes",
    "predictions",
    "ranking_inversions",
    "ranking_spearman",
    "softmax",
    "stop_sentence",
    "summarize",
    "time_per_iteration_per_token",
    "top_class_probability",
    "top_probability_correlation",
    "total_variation",
    "volume_ratio",
    "wasserstein1_01",
]
