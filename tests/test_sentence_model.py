"""SentenceClassifier: head/forward split, parity with transformers + hand pooling, pytree, save/load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

import manifold_jax as mj
import manifold_jax.models as mm
from manifold_jax.models.sentence import HEAD_FILE, l2_normalize, mean_pool
from tests.models_helpers import SENTENCES, minilm_dir


@pytest.fixture(scope="module")
def encoder() -> mm.Bert:
    return mm.load(minilm_dir(), task="encoder")


@pytest.fixture(scope="module")
def classifier(encoder: mm.Bert) -> mm.SentenceClassifier:
    """A random head of scale ~1 on unit-norm embeddings: logits of O(1), not O(0.01),
    so a swapped or dropped term shows far above the tolerances."""
    k, d = 3, encoder.config.hidden_size
    w = jax.random.normal(jax.random.key(0), (k, d)) * (10.0 / np.sqrt(d))  # rows of norm ~10
    b = jnp.asarray([0.1, -0.2, 0.3])
    return mm.SentenceClassifier(encoder, w, b, class_names=("a", "b", "c"))


def test_head_on_each_item_equals_batched_forward(classifier: mm.SentenceClassifier) -> None:
    x0, ctx = classifier.embed(SENTENCES)
    assert len(set(np.asarray(ctx["attention_mask"]).sum(1))) == len(SENTENCES), "batch must be padded"
    per_item = np.asarray(jax.vmap(classifier.head)(x0, ctx))
    batched = np.asarray(classifier.forward(x0, ctx))
    assert per_item.shape == (len(SENTENCES), 3)
    # same float32 operations, vmapped or not: agreement to a few ulps of the O(1) logits
    np.testing.assert_allclose(per_item, batched, rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(classifier(SENTENCES)), batched, rtol=0, atol=1e-6)
    assert np.abs(batched).max() > 0.1, "degenerate logits would make the check vacuous"


def test_logits_match_transformers_with_hand_pooling(classifier: mm.SentenceClassifier, record_property: Any) -> None:
    """Independent reference: transformers' BertModel on the same padded batch, mean pooling
    over the attention mask and L2 normalisation written out in torch, the same head.

    Tolerance: the hidden states agree to ~1e-5 (float32 through 6 layers; the BERT port
    test bounds them by 1e-4); pooling and normalising average that error, and the head
    (row norms ~10 here) can amplify a 1e-6 error of the unit vector to ~1e-5."""
    texts = SENTENCES
    ours = np.asarray(classifier(texts))
    tok = classifier.tokenizer(texts, padding=True, return_tensors="pt")
    reference = transformers.BertModel.from_pretrained(minilm_dir()).eval()
    with torch.no_grad():
        hidden = reference(**tok).last_hidden_state
        m = tok["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
        unit = pooled / pooled.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        weight, bias = torch.tensor(np.asarray(classifier.weight)), torch.tensor(np.asarray(classifier.bias))
        theirs = (unit @ weight.T + bias).numpy()
    diff = float(np.abs(ours - theirs).max())
    record_property("sentence_classifier_max_abs_diff", diff)
    print(f"SentenceClassifier logits vs torch + hand pooling, max abs diff: {diff:.3g}")
    assert diff <= 1e-4, f"logits differ from the torch reference by {diff:.3g}"
    assert (ours.argmax(1) == theirs.argmax(1)).all()


def test_pooling_ignores_padding_and_normalises() -> None:
    hidden = jnp.asarray([[[1.0, 2.0], [3.0, 4.0], [100.0, -100.0]]])
    mask = jnp.asarray([[1, 1, 0]])
    np.testing.assert_allclose(np.asarray(mean_pool(hidden, mask)), [[2.0, 3.0]])
    unit = np.asarray(l2_normalize(mean_pool(hidden, mask)))
    np.testing.assert_allclose(unit, [[2 / np.sqrt(13), 3 / np.sqrt(13)]], rtol=1e-6)


def test_is_a_pytree_of_arrays_and_jit_traces_weights(classifier: mm.SentenceClassifier) -> None:
    leaves = jax.tree.leaves(classifier)
    assert all(isinstance(a, jax.Array) for a in leaves)
    n_encoder = len(jax.tree.leaves(classifier.encoder))
    assert len(leaves) == n_encoder + 2
    x0, ctx = classifier.embed(SENTENCES[:2])
    one = jax.tree.map(lambda a: a[0], ctx)
    head = jax.jit(lambda m, x, c: m.head(x, c))
    before = np.asarray(head(classifier, x0[0], one))
    shifted = type(classifier)(
        classifier.encoder, classifier.weight, classifier.bias + 1.0, class_names=classifier.class_names
    )
    after = np.asarray(head(shifted, x0[0], one))
    # weights are arguments, not constants baked into the compiled function
    np.testing.assert_allclose(after - before, 1.0, rtol=0, atol=1e-5)
    assert head._cache_size() == 1


def test_satisfies_the_protocol_and_delegates(classifier: mm.SentenceClassifier) -> None:
    assert isinstance(classifier, mm.ExplorableModel)
    assert classifier.labels == ("a", "b", "c") and classifier.modality == "text"
    x0, ctx = classifier.embed(SENTENCES[:2])
    ids = classifier.decode(x0, ctx)
    np.testing.assert_array_equal(ids, np.asarray(ctx["input_ids"]))
    lo, hi = classifier.bounds("theoretical", 8)
    assert lo.shape == hi.shape == (8, classifier.config.hidden_size)


def test_save_and_load_round_trip(classifier: mm.SentenceClassifier, tmp_path: Path) -> None:
    classifier.save(tmp_path)
    assert (tmp_path / HEAD_FILE).is_file() and not (tmp_path / "model.safetensors").exists()
    loaded = mm.load(tmp_path)
    assert isinstance(loaded, mm.SentenceClassifier) and loaded.labels == classifier.labels
    np.testing.assert_array_equal(np.asarray(loaded.weight), np.asarray(classifier.weight))
    np.testing.assert_array_equal(np.asarray(loaded(SENTENCES)), np.asarray(classifier(SENTENCES)))
    with pytest.raises(mm.UnsupportedModelError, match="classification"):
        mm.load(tmp_path, task="mlm")


def test_wrong_head_shapes_are_refused(encoder: mm.Bert) -> None:
    with pytest.raises(mm.ShapeMismatchError, match="hidden size 384"):
        mm.SentenceClassifier(encoder, jnp.zeros((3, 10)), jnp.zeros(3))
    with pytest.raises(mm.ShapeMismatchError, match="2 class names for 3"):
        mm.SentenceClassifier(encoder, jnp.zeros((3, 384)), jnp.zeros(3), class_names=("a", "b"))


def test_simec_on_the_classifier_runs_and_keeps_the_prediction(classifier: mm.SentenceClassifier) -> None:
    """The engine accepts the classifier's head as is (a short smoke run)."""
    x0, ctx = classifier.embed(SENTENCES[:1])
    one = jax.tree.map(lambda a: a[0], ctx)
    traj = mj.simec(classifier.head, x0[0], key=jax.random.key(0), args=(one,), select=one["token_mask"], steps=5)
    assert traj.y.shape[-1] == 3 and np.isfinite(traj.y).all()
    assert np.abs(traj.x[-1] - np.asarray(x0[0])).max() > 0, "SiMEC must move"
    assert (traj.y.argmax(-1) == traj.y[0].argmax()).all()
