"""Flax (linen) ports of the Transformers the paper explores, split at the input embeddings.

``load(path_or_id, task=...)`` reads an HF checkpoint directory (BERT, ViT) or one of
our own saved ViTs and returns a model object implementing
:class:`~manifold_jax.models.base.ExplorableModel`: ``embed``, ``head`` (pure, one
item), ``decode``, ``bounds``, ``labels``. Models are pytrees whose leaves are the
parameters, so ``jax.jit`` / ``jax.vmap`` / ``jax.jacrev`` trace the weights as arguments.
"""

from .base import BoundsKind, Context, ExplorableModel, Task
from .bert import Bert, BertConfig, BertModule, load_bert
from .errors import (
    MissingHeadError,
    MissingWeightsError,
    ModelError,
    ShapeMismatchError,
    UnexpectedWeightsError,
    UnsupportedModelError,
    WeightsNotFoundError,
)
from .hf_vit import load_hf_vit
from .loading import SUPPORTED_MODEL_TYPES, load
from .vit import CIFAR10_VIT, MNIST_VIT, ViT, ViTConfig, ViTModule, load_manifold_vit

__all__ = [
    "CIFAR10_VIT",
    "MNIST_VIT",
    "SUPPORTED_MODEL_TYPES",
    "Bert",
    "BertConfig",
    "BertModule",
    "BoundsKind",
    "Context",
    "ExplorableModel",
    "MissingHeadError",
    "MissingWeightsError",
    "ModelError",
    "ShapeMismatchError",
    "Task",
    "UnexpectedWeightsError",
    "UnsupportedModelError",
    "ViT",
    "ViTConfig",
    "ViTModule",
    "WeightsNotFoundError",
    "load",
    "load_bert",
    "load_hf_vit",
    "load_manifold_vit",
]
