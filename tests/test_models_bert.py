"""BERT port: parity with transformers (PyTorch), the head/forward split, decoding, bounds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

import manifold_jax.models as mm
from manifold_jax.models import bert_vocab
from manifold_jax.models.weights import flatten
from tests.models_helpers import MLM_SENTENCES, SENTENCES, minilm_dir, rounding_tol, save_random_bert

# ------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def minilm() -> mm.Bert:
    return mm.load(minilm_dir(), task="encoder")


@pytest.fixture(scope="module")
def random_mlm(tmp_path_factory: pytest.TempPathFactory) -> tuple[mm.Bert, Any]:
    directory = tmp_path_factory.mktemp("bert_mlm")
    torch_model = save_random_bert(directory, "BertForMaskedLM", hidden_act="gelu_new")
    return mm.load(directory, task="mlm"), torch_model


@pytest.fixture(scope="module")
def random_classifier(tmp_path_factory: pytest.TempPathFactory) -> tuple[mm.Bert, Any]:
    directory = tmp_path_factory.mktemp("bert_cls")
    torch_model = save_random_bert(directory, "BertForSequenceClassification")
    return mm.load(directory, task="classification"), torch_model


def _torch_inputs(model: mm.Bert, texts: list[str]) -> dict[str, torch.Tensor]:
    return dict(model.tokenizer(texts, padding=True, return_tensors="pt"))


# --------------------------------------------------------------------------- parity


def test_minilm_last_hidden_state_matches_transformers(minilm: mm.Bert, record_property: Any) -> None:
    """Real MiniLM-L6 on a padded batch; compared at unmasked positions only (HF also
    computes padded query rows, which no output uses and whose values are arbitrary)."""
    x0, ctx = minilm.embed(SENTENCES)
    mask = np.asarray(ctx["attention_mask"]).astype(bool)
    assert len(set(mask.sum(1))) == len(SENTENCES), "the batch must really be padded"
    ours = np.asarray(minilm.forward(x0, ctx))
    reference = transformers.BertModel.from_pretrained(minilm_dir()).eval()
    with torch.no_grad():
        theirs = reference(**_torch_inputs(minilm, SENTENCES)).last_hidden_state.numpy()
    diff = float(np.abs(ours - theirs)[mask].max())
    record_property("minilm_max_abs_diff", diff)
    print(f"MiniLM-L6 last hidden state, max abs diff at unmasked positions: {diff:.3g}")
    assert diff <= 1e-4, f"MiniLM last hidden state differs by {diff:.3g} (> 1e-4)"


@pytest.mark.parametrize("activation", ["gelu", "gelu_new", "relu"])
def test_random_classifier_logits_match_transformers(
    tmp_path: Path, activation: str, record_property: Any
) -> None:
    torch_model = save_random_bert(tmp_path, "BertForSequenceClassification", hidden_act=activation)
    model = mm.load(tmp_path, task="classification")
    x0, ctx = model.embed(SENTENCES)
    ours = np.asarray(model.forward(x0, ctx))
    with torch.no_grad():
        theirs = torch_model(**_torch_inputs(model, SENTENCES)).logits.numpy()
    diff = float(np.abs(ours - theirs).max())
    record_property(f"bert_cls_{activation}_max_abs_diff", diff)
    print(f"BertForSequenceClassification ({activation}) logits, max abs diff: {diff:.3g}")
    assert ours.shape == (len(SENTENCES), 3)
    assert float(np.abs(theirs).max()) > 0.05, "degenerate reference logits would make the check vacuous"
    assert diff <= 1e-5, f"classifier logits differ by {diff:.3g} (> 1e-5)"


def test_random_mlm_logits_match_transformers(random_mlm: tuple[mm.Bert, Any], record_property: Any) -> None:
    model, torch_model = random_mlm
    x0, ctx = model.embed(MLM_SENTENCES)
    ours = np.asarray(model.forward(x0, ctx))
    with torch.no_grad():
        theirs = torch_model(**_torch_inputs(model, MLM_SENTENCES)).logits.numpy()
    mask = np.asarray(ctx["attention_mask"]).astype(bool)
    diff = float(np.abs(ours - theirs)[mask].max())
    record_property("bert_mlm_max_abs_diff", diff)
    print(f"BertForMaskedLM (gelu_new) logits at unmasked positions, max abs diff: {diff:.3g}")
    assert diff <= 1e-5, f"MLM logits differ by {diff:.3g} (> 1e-5)"
    # the frozen top-5 are the reference's top-5 at the mask position, in order
    rows = theirs[np.arange(len(MLM_SENTENCES)), np.asarray(ctx["mask_position"])]
    np.testing.assert_array_equal(np.asarray(ctx["topk"]), np.argsort(-rows, axis=1)[:, :5])


# ---------------------------------------------------------------- head == full model


def test_classifier_head_equals_full_forward(random_classifier: tuple[mm.Bert, Any]) -> None:
    model, _ = random_classifier
    x0, ctx = model.embed(SENTENCES)
    head = np.asarray(jax.vmap(model.head)(x0, ctx))
    full = np.asarray(model.forward(x0, ctx))
    assert head.shape == (len(SENTENCES), 3)
    np.testing.assert_allclose(head, full, rtol=0, atol=rounding_tol(full))


def test_mlm_head_equals_full_logits_at_mask_restricted_to_topk(random_mlm: tuple[mm.Bert, Any]) -> None:
    model, _ = random_mlm
    x0, ctx = model.embed(MLM_SENTENCES)
    head = np.asarray(jax.vmap(model.head)(x0, ctx))
    full = np.asarray(model.forward(x0, ctx))  # (B, n, V)
    rows = full[np.arange(len(MLM_SENTENCES)), np.asarray(ctx["mask_position"])]
    expected = np.take_along_axis(rows, np.asarray(ctx["topk"]), axis=1)
    assert head.shape == (len(MLM_SENTENCES), 5)
    np.testing.assert_allclose(head, expected, rtol=0, atol=rounding_tol(expected, ulps=32))
    # frozen: moving x changes the logits, not which tokens they belong to
    moved = jax.vmap(model.head)(x0 + 0.3, ctx)
    assert moved.shape == (len(MLM_SENTENCES), 5)
    assert model.labels == ("top1", "top2", "top3", "top4", "top5")
    tokens = model.topk_tokens(ctx)
    assert tokens[0] == tuple(model.tokenizer.convert_ids_to_tokens(np.asarray(ctx["topk"])[0].tolist()))


def test_model_is_a_pytree_of_its_params_and_jits_as_an_argument(random_classifier: tuple[mm.Bert, Any]) -> None:
    model, _ = random_classifier
    assert isinstance(model, mm.ExplorableModel)
    leaves = jax.tree.leaves(model)
    assert len(leaves) == len(flatten(model.params))
    x0, ctx = model.embed(SENTENCES[:2])
    one = jax.tree.map(lambda a: a[0], ctx)
    head = jax.jit(lambda m, x, c: m.head(x, c))
    jaxpr = jax.make_jaxpr(lambda m, x, c: m.head(x, c))(model, x0[0], one)
    assert len(jaxpr.jaxpr.invars) == len(leaves) + 1 + len(one), "weights must be traced as arguments"
    np.testing.assert_allclose(np.asarray(head(model, x0[0], one)), np.asarray(model.head(x0[0], one)), atol=1e-6)
    jac = jax.jacrev(model.head)(x0[0], one)
    assert jac.shape == (3, *x0.shape[1:])
    # padded keys are masked: the logits do not depend on the embeddings at padding
    pad = ~np.asarray(one["attention_mask"]).astype(bool)
    assert pad.any()
    assert float(jnp.abs(jac[:, pad]).max()) == 0.0


def test_token_mask_marks_real_non_special_tokens(minilm: mm.Bert) -> None:
    x0, ctx = minilm.embed(SENTENCES)
    ids = np.asarray(ctx["input_ids"])
    special = np.isin(ids, minilm.tokenizer.all_special_ids)
    expected = np.asarray(ctx["attention_mask"]).astype(bool) & ~special
    np.testing.assert_array_equal(np.asarray(ctx["token_mask"]), expected)
    assert x0.shape == (*ids.shape, 384)
    # fixed-length padding on request
    x_fixed, _ = minilm.embed(SENTENCES, max_length=32)
    assert x_fixed.shape == (len(SENTENCES), 32, 384)
    np.testing.assert_allclose(np.asarray(x_fixed[:, : x0.shape[1]]), np.asarray(x0), atol=1e-6)


# --------------------------------------------------------------------------- decoding


def test_nearest_token_decoder_recovers_real_sentences(minilm: mm.Bert) -> None:
    x0, ctx = minilm.embed(SENTENCES)
    ids = minilm.decode(x0, ctx)  # encoder model: no MLM head -> nearest token
    np.testing.assert_array_equal(ids, np.asarray(ctx["input_ids"]))
    texts = minilm.detokenize(ids)
    assert texts == minilm.tokenizer.batch_decode(np.asarray(ctx["input_ids"]).tolist(), skip_special_tokens=True)
    assert "guitar" in texts[0]


def test_nearest_token_decoder_replaces_only_explored_positions(minilm: mm.Bert) -> None:
    texts = SENTENCES[:2]
    x0, ctx = minilm.embed(texts)
    cat = minilm.tokenizer.convert_tokens_to_ids("cat")
    # position 2 of item 0 now holds the exact embedding "cat" would have there
    cat_ids = np.asarray(ctx["input_ids"]).copy()
    cat_ids[0, 2] = cat
    x_cat, _ = minilm.embed_ids(cat_ids, ctx["token_type_ids"], ctx["attention_mask"])
    x = np.asarray(x0).copy()
    x[0, 2] = np.asarray(x_cat)[0, 2]
    # position 3 is garbage but not explored; [CLS] is garbage too and special
    x[0, 3] += 5.0
    x[0, 0] += 5.0
    token_mask = np.asarray(ctx["token_mask"]).copy()
    token_mask[0, 3] = False
    ids = minilm.decode(jnp.asarray(x), {**ctx, "token_mask": jnp.asarray(token_mask)})
    expected = np.asarray(ctx["input_ids"]).copy()
    expected[0, 2] = cat
    np.testing.assert_array_equal(ids, expected)


def test_nearest_token_decoder_returns_words_unless_asked_for_the_whole_vocabulary(minilm: mm.Bert) -> None:
    x0, ctx = minilm.embed(SENTENCES[:1])
    pad_ids = np.asarray(ctx["input_ids"]).copy()
    pad_ids[0, 2] = minilm.tokenizer.pad_token_id
    unused_ids = np.asarray(ctx["input_ids"]).copy()
    unused_ids[0, 2] = minilm.tokenizer.convert_tokens_to_ids("[unused80]")
    for ids_in in (pad_ids, unused_ids):
        x_special, _ = minilm.embed_ids(ids_in, ctx["token_type_ids"], ctx["attention_mask"])
        x = np.asarray(x0).copy()
        x[0, 2] = np.asarray(x_special)[0, 2]  # exactly a special entry's embedding
        words = minilm.decode(jnp.asarray(x), ctx)
        everything = minilm.decode(jnp.asarray(x), ctx, vocabulary="all")
        assert everything[0, 2] == ids_in[0, 2]
        token = minilm.tokenizer.convert_ids_to_tokens(int(words[0, 2]))
        assert words[0, 2] not in minilm.tokenizer.all_special_ids and not token.startswith("[unused"), token


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> mm.Bert:
    """A random BertModel with a 97-token vocabulary (a prime: chunks never divide it)."""
    directory = tmp_path_factory.mktemp("bert_tiny")
    save_random_bert(directory, "BertModel", vocab_size=97, type_vocab_size=2)
    return mm.load(directory, task="encoder")


def _all_candidates(model: mm.Bert, n: int) -> np.ndarray:
    """(T, V, n, d) embedding-module outputs of every token at every position and type."""
    return np.asarray(model._apply(jnp.arange(model.config.vocab_size), n, method="candidates"))


def test_chunked_vocabulary_scans_match_brute_force(tiny_bert: mm.Bert) -> None:
    n = 6
    cand = _all_candidates(tiny_bert, n)
    lo, hi = bert_vocab.vocab_box(tiny_bert, n, 10)
    np.testing.assert_allclose(np.asarray(lo), cand.min((0, 1)), rtol=0, atol=rounding_tol(cand))
    np.testing.assert_allclose(np.asarray(hi), cand.max((0, 1)), rtol=0, atol=rounding_tol(cand))
    # nearest token of noisy points, per position and token type, against a direct search
    rng = np.random.default_rng(1)
    types = rng.integers(0, 2, size=(3, n)).astype(np.int32)
    truth = rng.integers(0, 97, size=(3, n))
    x = cand[types, truth, np.arange(n)] + 0.05 * rng.standard_normal((3, n, cand.shape[-1]))
    everything = jnp.ones((cand.shape[1],), bool)
    found = np.asarray(
        bert_vocab.nearest_tokens(tiny_bert, jnp.asarray(x, jnp.float32), jnp.asarray(types), everything, 10)
    )
    vocab = np.arange(cand.shape[1])
    options = cand[types[:, :, None], vocab[None, None, :], np.arange(n)[None, :, None]]  # (B, n, V, d)
    dist = ((x[:, :, None, :] - options) ** 2).sum(-1)
    np.testing.assert_array_equal(found, dist.argmin(-1))
    assert (found == truth).mean() > 0.5, "the noise should not hide most tokens"


def test_mlm_decoder_returns_valid_ids_and_keeps_unexplored(random_mlm: tuple[mm.Bert, Any]) -> None:
    model, _ = random_mlm
    x0, ctx = model.embed(MLM_SENTENCES)
    ids = model.decode(x0, ctx)  # task mlm: arg-max of its own MLM head
    original = np.asarray(ctx["input_ids"])
    keep = ~np.asarray(ctx["token_mask"])
    assert ids.shape == original.shape and np.issubdtype(ids.dtype, np.integer)
    assert ids.min() >= 0 and ids.max() < model.config.vocab_size
    np.testing.assert_array_equal(ids[keep], original[keep])
    mask_id = model.tokenizer.mask_token_id
    assert (ids == mask_id).sum() == len(MLM_SENTENCES), "the [MASK] is never explored"
    expected = np.asarray(model.forward(x0, ctx)).argmax(-1)
    np.testing.assert_array_equal(ids[~keep], expected[~keep])


def test_classifier_decodes_through_a_separate_mlm_model(
    random_classifier: tuple[mm.Bert, Any], random_mlm: tuple[mm.Bert, Any]
) -> None:
    classifier, mlm = random_classifier[0], random_mlm[0]
    x0, ctx = classifier.embed(SENTENCES)
    ids = classifier.decode(x0, ctx, mlm=mlm)
    explored = np.asarray(ctx["token_mask"])
    expected = np.asarray(mlm.forward(x0, ctx)).argmax(-1)
    np.testing.assert_array_equal(ids[explored], expected[explored])
    np.testing.assert_array_equal(ids[~explored], np.asarray(ctx["input_ids"])[~explored])
    with pytest.raises(ValueError, match="task='mlm'"):
        classifier.decode(x0, ctx, method="mlm")


# ----------------------------------------------------------------------------- bounds


def test_real_embeddings_lie_in_the_vocabulary_box(minilm: mm.Bert) -> None:
    x0, _ = minilm.embed(SENTENCES)
    lo, hi = minilm.bounds("theoretical", data=SENTENCES)
    assert lo.shape == hi.shape == x0.shape[1:]
    tol = rounding_tol(x0)
    assert float(jnp.max(lo - x0)) <= tol and float(jnp.max(x0 - hi)) <= tol
    assert bool(jnp.all(lo <= hi))
    # rows do not depend on n: a box for n = 4 is the first rows of the longer one
    lo4, hi4 = minilm.bounds("theoretical", data=4)
    np.testing.assert_allclose(np.asarray(lo4), np.asarray(lo[:4]), atol=tol)
    np.testing.assert_allclose(np.asarray(hi4), np.asarray(hi[:4]), atol=tol)


def test_measured_box_contains_its_data_and_lies_in_the_vocabulary_box(minilm: mm.Bert) -> None:
    x0, _ = minilm.embed(SENTENCES)
    lo_m, hi_m = minilm.bounds("measured", data=SENTENCES)
    assert bool(jnp.all((lo_m <= x0) & (x0 <= hi_m)))  # exact: min/max of the same values
    lo_t, hi_t = minilm.bounds("theoretical", data=SENTENCES)
    tol = rounding_tol(x0)
    assert float(jnp.max(lo_t - lo_m)) <= tol and float(jnp.max(hi_m - hi_t)) <= tol
    with pytest.raises(ValueError, match="needs data"):
        minilm.bounds("measured")


# ----------------------------------------------------------------------------- errors


def test_mlm_texts_need_exactly_one_mask_token(random_mlm: tuple[mm.Bert, Any]) -> None:
    model, _ = random_mlm
    with pytest.raises(ValueError, match=r"exactly one \[MASK\].*text 0 has 0"):
        model.embed(["no mask here", "one [MASK] here"])
    with pytest.raises(ValueError, match=r"text 1 has 2"):
        model.embed(["one [MASK] here", "two [MASK] [MASK]"])
