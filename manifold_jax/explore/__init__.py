"""SiMEC and SiMExp: walks through the input space along null or visible metric directions.

An exploration integrates x' = h v(x) from x0, with v a unit direction of the pullback
metric (geometry.py): SiMEC (Algorithm 1 of arXiv 2410.06019) moves along directions the
model cannot see and stays in the equivalence class of x0; SiMExp (Algorithm 2) moves
along directions it can see and leaves it. By default the step is the paper's, as the
authors' code runs it; the options of :mod:`~manifold_jax.explore.options` turn it into
numerical continuation (a corrector back onto the level set, coherent directions,
arc-length and adaptive steps, the box as an active set, targets, goals, stop events).

Modules: ``options`` (the frozen configuration) and the option objects with their
behaviour, ``step_size`` (step rules), ``corrector`` (Newton), ``events`` (stop events),
``directions`` (direction rules per block), ``guides`` (targets and goals); ``problem``
(one checked, batched problem and the explicit state), ``iteration`` (one pure step of
one item: predict, correct, control, finish), ``loop`` (the compiled, chunked, vmapped
loop), ``trajectory`` (the Trajectory it returns), ``counterfactuals`` (the closest input
of a target class, with its KKT certificate).
"""

from manifold_jax.explore.corrector import newton_correction
from manifold_jax.explore.counterfactuals import Counterfactual, counterfactual
from manifold_jax.explore.devices import process_items
from manifold_jax.explore.iteration import NONFINITE, REJECTED, STALLED, STOPPED, UNCONVERGED, step
from manifold_jax.explore.loop import check_exploration, explore, in_slices, simec, simexp, slice_size
from manifold_jax.explore.options import (
    ALGORITHMS,
    AUTO_BATCH_ROWS,
    BOX_POLICIES,
    DIRECTIONS,
    NULL_DIRECTIONS,
    STEP_RULES,
    Absolute,
    Adaptive,
    Coherent,
    Distance,
    ExploreConfig,
    Fixed,
    Flip,
    Newton,
    Paper,
    ProbabilityLevel,
    Reference,
    Relative,
)
from manifold_jax.explore.problem import ExplorationState, Problem, init_state, prepare, prepare_problem
from manifold_jax.explore.trajectory import RECORD_FIELDS, Trajectory, combine

__all__ = [
    "ALGORITHMS",
    "AUTO_BATCH_ROWS",
    "BOX_POLICIES",
    "DIRECTIONS",
    "NONFINITE",
    "NULL_DIRECTIONS",
    "RECORD_FIELDS",
    "REJECTED",
    "STALLED",
    "STEP_RULES",
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
    "Paper",
    "ProbabilityLevel",
    "Problem",
    "Reference",
    "Relative",
    "Trajectory",
    "check_exploration",
    "combine",
    "counterfactual",
    "explore",
    "in_slices",
    "init_state",
    "newton_correction",
    "prepare",
    "prepare_problem",
    "process_items",
    "simec",
    "simexp",
    "slice_size",
    "step",
]
