"""Errors raised while loading or using a model port; every message names the culprits."""

from __future__ import annotations


class ModelError(ValueError):
    """Base class of the model-port errors (a ValueError, so generic handlers still work)."""


class UnsupportedModelError(ModelError):
    """The checkpoint's model_type / architecture or the requested task is not ported."""


class WeightsNotFoundError(ModelError, FileNotFoundError):
    """The directory holds no readable weight file."""


class UnexpectedWeightsError(ModelError):
    """The checkpoint holds weights the architecture does not have."""


class MissingWeightsError(ModelError):
    """The checkpoint lacks weights the model needs."""


class MissingHeadError(MissingWeightsError):
    """The checkpoint lacks the requested task head (pass init_missing_head=True to initialise it)."""


class ShapeMismatchError(ModelError):
    """A weight's shape differs from the one the config implies."""
