"""manifold-jax: explore the input space of Transformers through their pullback geometry.

The geometry (pullback metric, spectra) lives in :mod:`manifold_jax.geometry`, the SiMEC /
SiMExp loop in :mod:`manifold_jax.explore`, the Flax ports in :mod:`manifold_jax.models`.
"""

from manifold_jax.explore import (
    NONFINITE,
    REJECTED,
    STALLED,
    STOPPED,
    UNCONVERGED,
    Absolute,
    Adaptive,
    Coherent,
    Counterfactual,
    Distance,
    ExplorationState,
    ExploreConfig,
    Fixed,
    Flip,
    Newton,
    ProbabilityLevel,
    Relative,
    Trajectory,
    combine,
    counterfactual,
    explore,
    init_state,
    process_items,
    simec,
    simexp,
    step,
)
from manifold_jax.explore.corrector import newton_correction
from manifold_jax.geometry import Spectrum, pullback_metric, spectrum
from manifold_jax.output_metrics import euclidean, fisher_rao, metric_tensor, softmax_euclidean

__version__ = "0.1.0"

__all__ = [
    "NONFINITE",
    "REJECTED",
    "STALLED",
    "STOPPED",
    "UNCONVERGED",
    "Absolute",
    "Adaptive",
    "Coherent",
    "Counterfactual",
    "Distance",
    "ExplorationState",
    "ExploreConfig",
    "Fixed",
    "Flip",
    "Newton",
    "ProbabilityLevel",
    "Relative",
    "Spectrum",
    "Trajectory",
    "combine",
    "counterfactual",
    "euclidean",
    "explore",
    "fisher_rao",
    "init_state",
    "metric_tensor",
    "newton_correction",
    "process_items",
    "pullback_metric",
    "simec",
    "simexp",
    "softmax_euclidean",
    "spectrum",
    "step",
]
