"""Flax (linen) ports of the Transformers the paper explores, split at the input embeddings.

``load(path_or_id, task=...)`` reads an HF checkpoint directory (BERT, ViT), one of
our own saved ViTs or sentence classifiers, or an embedded model by name
(``load("mnist-vit")``, ``load("minilm-topics")``, see :data:`EMBEDDED`) and returns
a model object implementing :class:`~manifold_jax.models.base.ExplorableModel`:
``embed``, ``head`` (pure, one item), ``decode``, ``bounds``, ``labels``. Models are
pytrees whose leaves are the parameters, so ``jax.jit`` / ``jax.vmap`` / ``jax.jacrev`` trace the weights as arguments.
"""

from .base import BoundsKind, Context, ExplorableModel, Task
from .bert import Bert, BertConfig, BertModule, load_bert
from .embedded import EMBEDDED, EmbeddedModel, embedded_path, training_record
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
from .sentence import EncoderNotFoundError, SentenceClassifier, load_sentence_classifier, minilm_path
from .vit import CIFAR10_VIT, MNIST_VIT, PixelViT, ViT, ViTConfig, ViTModule, load_manifold_vit

__all__ = [
    "CIFAR10_VIT",
    "EMBEDDED",
    "MNIST_VIT",
    "SUPPORTED_MODEL_TYPES",
    "Bert",
    "BertConfig",
    "BertModule",
    "BoundsKind",
    "Context",
    "EmbeddedModel",
    "EncoderNotFoundError",
    "ExplorableModel",
    "MissingHeadError",
    "MissingWeightsError",
    "ModelError",
    "PixelViT",
    "SentenceClassifier",
    "ShapeMismatchError",
    "Task",
    "UnexpectedWeightsError",
    "UnsupportedModelError",
    "ViT",
    "ViTConfig",
    "ViTModule",
    "WeightsNotFoundError",
    "embedded_path",
    "load",
    "load_bert",
    "load_hf_vit",
    "load_manifold_vit",
    "load_sentence_classifier",
    "minilm_path",
    "training_record",
]
