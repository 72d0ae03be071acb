"""Studies: SiMEC / SiMExp explorations of a real model on real inputs, kept in a directory.

``spec`` (what is asked, validated), ``inputs`` (model, embedded inputs, selection, box),
``storage`` (the directory: atomic writes, the manifest, verified reads), ``checkpoints``
(orbax), ``orchestrate`` (run and resume). A study is continued after an interruption,
a crash or damage to its files and equals an uninterrupted run bit for bit.
"""

from manifold_jax import atomic
from manifold_jax.study.errors import (
    InputsChangedError,
    ModalityError,
    NotAStudyError,
    ResumeConflictError,
    StudyDamagedError,
    StudyExistsError,
    StudyIncompleteError,
    TextTooLongError,
)
from manifold_jax.study.inputs import (
    MEASURED_IMAGES,
    ModelLoadError,
    Prepared,
    StudyWarning,
    load_inputs,
    load_model,
    prepare,
    study_bounds,
)
from manifold_jax.study.manifest import study_root
from manifold_jax.study.orchestrate import run_study
from manifold_jax.study.spec import (
    BOUNDS,
    COUNTERFACTUAL,
    RUNS,
    SPACES,
    STUDY_SELECTIONS,
    TARGETS,
    TASKS,
    ImageFile,
    MnistImage,
    StudyInput,
    StudySpec,
    Text,
)
from manifold_jax.study.storage import Study, load_study, load_trajectory, save_trajectory

__all__ = [
    "BOUNDS",
    "COUNTERFACTUAL",
    "MEASURED_IMAGES",
    "RUNS",
    "SPACES",
    "STUDY_SELECTIONS",
    "TARGETS",
    "TASKS",
    "ImageFile",
    "InputsChangedError",
    "MnistImage",
    "ModalityError",
    "ModelLoadError",
    "NotAStudyError",
    "Prepared",
    "ResumeConflictError",
    "Study",
    "StudyDamagedError",
    "StudyExistsError",
    "StudyIncompleteError",
    "StudyInput",
    "StudySpec",
    "StudyWarning",
    "Text",
    "TextTooLongError",
    "atomic",
    "load_inputs",
    "load_model",
    "load_study",
    "load_trajectory",
    "prepare",
    "run_study",
    "save_trajectory",
    "study_bounds",
    "study_root",
]
