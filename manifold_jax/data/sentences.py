"""A small labelled English sentence set for a 3-class text task: topic classification.

Task: **sport / politics / science** (labels 0 / 1 / 2). Topic is what a sentence-
embedding model such as MiniLM-L6 (trained for semantic similarity) encodes most
strongly, so a linear head or even nearest-class-centroid on its mean-pooled embedding
separates these classes well, and the class boundary between, say, sport and science is
easy to read in the decoded sentences an exploration produces. (Three-way sentiment
with a neutral class, the obvious alternative, is noisy even for people and is encoded
less clearly by a similarity model.)

The data live in ``manifold_jax/assets/sentences_topics.json``: 70 hand-written
sentences per class (the *pool* that splits are drawn from) and 12 *demo* sentences
(4 per class) that are in no split. All were written for this project.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "SENTENCES_FILE",
    "SentenceSplit",
    "demo_sentences",
    "load_sentences",
    "sentence_split",
]

SENTENCES_FILE = Path(__file__).resolve().parent.parent / "assets" / "sentences_topics.json"
"""The shipped data file."""


@lru_cache(maxsize=4)
def _read(path: Path) -> dict[str, Any]:
    """Parse and check the JSON file (cached)."""
    with open(path, encoding="utf-8") as fh:
        doc = json.load(fh)
    names = doc.get("class_names")
    if not isinstance(names, list) or len(names) < 2:
        raise ValueError(f"{path}: 'class_names' must list at least two classes")
    sentences = doc.get("sentences", {})
    if set(sentences) != set(names):
        raise ValueError(f"{path}: 'sentences' keys {sorted(sentences)} differ from class_names {names}")
    for d in doc.get("demo", []):
        if d.get("label") not in names:
            raise ValueError(f"{path}: demo sentence with unknown label {d.get('label')!r}")
    return doc


def load_sentences(path: Path | str | None = None) -> tuple[list[str], np.ndarray, tuple[str, ...]]:
    """The whole labelled pool: (texts, labels (N,) int64, class_names).

    Texts are grouped by class in ``class_names`` order; labels index ``class_names``.
    ``path`` overrides the shipped file (same JSON layout).
    """
    doc = _read(Path(path) if path is not None else SENTENCES_FILE)
    names = tuple(doc["class_names"])
    texts: list[str] = []
    labels: list[int] = []
    for c, name in enumerate(names):
        for text in doc["sentences"][name]:
            texts.append(text)
            labels.append(c)
    return texts, np.asarray(labels, dtype=np.int64), names


def demo_sentences(path: Path | str | None = None) -> tuple[list[str], np.ndarray, tuple[str, ...]]:
    """Demo sentences kept out of every split: (texts, labels (M,) int64, class_names)."""
    doc = _read(Path(path) if path is not None else SENTENCES_FILE)
    names = tuple(doc["class_names"])
    demo = doc.get("demo", [])
    return [d["text"] for d in demo], np.asarray([names.index(d["label"]) for d in demo], dtype=np.int64), names


@dataclass(frozen=True)
class SentenceSplit:
    """A deterministic, stratified train/test split of the labelled pool."""

    train_texts: list[str]
    train_labels: np.ndarray
    """(N_train,) int64."""
    test_texts: list[str]
    test_labels: np.ndarray
    """(N_test,) int64."""
    class_names: tuple[str, ...]
    seed: int


def sentence_split(
    seed: int = 0, test_fraction: float = 0.25, path: Path | str | None = None
) -> SentenceSplit:
    """Stratified train/test split of the pool, deterministic from ``seed``.

    ``test_fraction`` of each class (rounded, at least one sentence) goes to test; both
    parts are returned in a seeded random order. Uses ``numpy.random.default_rng(seed)``.
    """
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed: must be a non-negative integer, got {seed}")
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction: must be in (0, 1), got {test_fraction}")
    texts, labels, names = load_sentences(path)
    rng = np.random.default_rng(int(seed))
    test_idx: list[np.ndarray] = []
    for c in range(len(names)):
        members = np.flatnonzero(labels == c)
        m = min(members.size - 1, max(1, round(test_fraction * members.size)))
        if m < 1:
            raise ValueError(f"class {names[c]!r} has too few sentences to split")
        test_idx.append(rng.permutation(members)[:m])
    test = np.concatenate(test_idx)
    is_test = np.zeros(labels.size, dtype=bool)
    is_test[test] = True
    train = rng.permutation(np.flatnonzero(~is_test))
    test = rng.permutation(test)
    return SentenceSplit(
        train_texts=[texts[i] for i in train],
        train_labels=labels[train],
        test_texts=[texts[i] for i in test],
        test_labels=labels[test],
        class_names=names,
        seed=int(seed),
    )
