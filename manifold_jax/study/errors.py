"""Errors of the study layer. Each carries the facts (paths, field names, input index) so that
the command line can phrase them with its own flags; the messages themselves name API arguments.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class StudyExistsError(FileExistsError):
    """The output directory already holds something and neither overwrite nor resume was asked for."""

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(
            f"output directory {path} is not empty; pass overwrite=True to replace it or resume=True to continue it"
        )


class NotAStudyError(FileNotFoundError):
    """A directory that holds no study (no spec.json), or an output path that is not a directory."""

    def __init__(self, path: Path, reason: str = "spec.json is missing") -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path} is not a study directory ({reason})")


class StudyDamagedError(ValueError):
    """A study file fails its checksum or does not have the shape its study implies."""

    def __init__(self, path: Path, reason: str, recoverable: bool = True) -> None:
        self.path = path
        self.reason = reason
        self.recoverable = recoverable
        hint = "; resuming the study rebuilds it" if recoverable else ""
        super().__init__(f"{path}: {reason}{hint}")


class StudyIncompleteError(ValueError):
    """A study some of whose explorations have not finished (``missing``: algorithm -> steps done)."""

    def __init__(self, path: Path, missing: dict[str, int], steps: int) -> None:
        self.path = path
        self.missing = missing
        self.steps = steps
        runs = ", ".join(f"{a} ({done} of {steps} steps)" for a, done in missing.items())
        super().__init__(f"{path}: unfinished run(s): {runs}; resume the study, or report with partial=True")


class ModalityError(ValueError):
    """An input whose kind (text or image) is not what the model takes."""

    def __init__(self, index: int, kind: str, modality: str, model: str) -> None:
        self.index = index
        self.kind = kind
        self.modality = modality
        self.model = model
        article = "an" if modality == "image" else "a"
        super().__init__(f"input {index} is {'an image' if kind == 'image' else 'a text'}, "
                         f"but {model} is {article} {modality} model")


class TextTooLongError(ValueError):
    """A text with more tokens than the model has positions (or than ``max_length``)."""

    def __init__(self, index: int, tokens: int, limit: int, positions: int) -> None:
        self.index = index
        self.tokens = tokens
        self.limit = limit
        self.positions = positions
        super().__init__(
            f"input {index} has {tokens} tokens, more than the {limit} the model takes; "
            f"shorten it, or pass max_length=N (at most {positions}) to cut it"
        )


class ResumeConflictError(ValueError):
    """Options given to a resume that differ from the study's own (``fields``: their names)."""

    def __init__(self, path: Path, fields: Sequence[str]) -> None:
        self.path = path
        self.fields = tuple(fields)
        super().__init__(
            f"{path}: resuming continues the study as its spec.json says; these options differ from it: "
            f"{', '.join(self.fields)} (start a new study to change them)"
        )


class InputsChangedError(ValueError):
    """The inputs rebuilt from spec.json (model, files) differ from those the study saved."""

    def __init__(self, path: Path, what: str) -> None:
        self.path = path
        super().__init__(f"{path}: the {what} rebuilt from spec.json differ from inputs.npz (did the model or an "
                         "input file change?); start a new study")


class OutsideStudyError(ValueError):
    """A path inside a study that a symbolic link leads out of it: never written or deleted through."""

    def __init__(self, path: Path, root: Path, target: Path) -> None:
        self.path = path
        self.root = root
        self.target = target
        super().__init__(f"{path}: a symbolic link leads out of the study {root} (to {target}); a study never writes "
                         "or deletes through it: replace the link with a folder of the study")
