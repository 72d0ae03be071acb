"""Flax (linen) ports of the Transformers the paper explores, split at the input embeddings.

``load(path_or_id, task=...)`` reads an HF checkpoint directory (BERT, RoBERTa,
DistilBERT, GPT-2, ViT, DeiT: dispatched on config.json's ``model_type`` through
:mod:`~manifold_jax.models.registry`), one of
our own saved ViTs or sentence classifiers, or an embedded model by name
(``load("mnist-vit")``, ``load("minilm-topics")``, see :data:`EMBEDDED`) and returns
a model object implementing :class:`~manifold_jax.models.base.ExplorableModel`:
``embed``, ``head`` (pure, one item), ``decode``, ``bounds``, ``labels``. The ports share
their common part (:mod:`~manifold_jax.models.port`: ``bounds``, the flax plumbing, the text
helpers), and each family's loader is a declarative :class:`PortSpec`
(:mod:`~manifold_jax.models.port_spec`: config, weight names, module, model). Models are
pytrees whose leaves are the parameters, so ``jax.jit`` / ``jax.vmap`` / ``jax.jacrev`` trace the weights as arguments.
"""

from .base import BoundsKind, Context, ExplorableModel, Task, TextModel
from .bert import Bert, BertConfig, BertModule, load_bert
from .distilbert import load_distilbert
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
from .gpt2 import GPT2, GPT2Config, GPT2Module, load_gpt2
from .hf_vit import load_hf_deit, load_hf_vit
from .loading import SUPPORTED_MODEL_TYPES, family_of, load
from .port_spec import PortSpec
from .registry import FAMILIES, Family
from .roberta import load_roberta
from .sentence import EncoderNotFoundError, SentenceClassifier, load_sentence_classifier, minilm_path
from .vit import PixelViT, ViT, load_manifold_vit
from .vit_modules import CIFAR10_VIT, MNIST_VIT, ViTConfig, ViTModule

__all__ = [
    "CIFAR10_VIT",
    "EMBEDDED",
    "FAMILIES",
    "GPT2",
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
    "Family",
    "GPT2Config",
    "GPT2Module",
    "MissingHeadError",
    "MissingWeightsError",
    "ModelError",
    "PixelViT",
    "PortSpec",
    "SentenceClassifier",
    "ShapeMismatchError",
    "Task",
    "TextModel",
    "UnexpectedWeightsError",
    "UnsupportedModelError",
    "ViT",
    "ViTConfig",
    "ViTModule",
    "WeightsNotFoundError",
    "embedded_path",
    "family_of",
    "load",
    "load_bert",
    "load_distilbert",
    "load_gpt2",
    "load_hf_deit",
    "load_hf_vit",
    "load_manifold_vit",
    "load_roberta",
    "load_sentence_classifier",
    "minilm_path",
    "training_record",
]
