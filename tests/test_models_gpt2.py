"""GPT-2 port: parity with transformers' GPT2LMHeadModel, the next-token head, decoding, bounds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np
import pytest
import torch
import transformers

import manifold_jax.models as mm
from manifold_jax.models.gpt2 import GPT2, GPT2Config, gpt2_params
from tests.models_helpers import SENTENCES, rounding_tol, save_random_gpt2


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    directory = tmp_path_factory.mktemp("gpt2")
    return directory, save_random_gpt2(directory)


@pytest.fixture(scope="module")
def gpt2(gpt2_dir: tuple[Path, Any]) -> GPT2:
    return mm.load(gpt2_dir[0])


def _torch_logits(torch_model: Any, enc: dict[str, np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        out = torch_model(
            input_ids=torch.tensor(enc["input_ids"]).long(), attention_mask=torch.tensor(enc["attention_mask"]).long()
        )
    return out.logits.numpy()


def test_small_gpt2_logits_match_transformers(gpt2: GPT2, gpt2_dir: tuple[Path, Any], record_property: Any) -> None:
    """A right-padded batch of real sentences; compared at the real positions (HF computes
    padded rows too, which nothing reads). Tolerance 1e-5 on logits of magnitude ~3: a few
    float32 ulps accumulated over 2 layers, three orders below a wrong or swapped weight (O(0.1))."""
    x0, ctx = gpt2.embed(SENTENCES)
    enc = gpt2.tokenize(SENTENCES)
    mask = enc["attention_mask"].astype(bool)
    assert len(set(mask.sum(1))) == len(SENTENCES), "the batch must really be padded"
    ours = np.asarray(gpt2.forward(x0, ctx))
    theirs = _torch_logits(gpt2_dir[1], enc)
    diff = float(np.abs(ours - theirs)[mask].max())
    record_property("gpt2_small_max_abs_diff", diff)
    print(f"GPT2LMHeadModel (hidden 32, 2 layers, V {gpt2.config.vocab_size}) logits, max abs diff: {diff:.3g}")
    assert float(np.abs(theirs).max()) > 0.5, "degenerate reference logits would make the check vacuous"
    assert diff <= 1e-5
    # the head is the next-token row at the last real position, full vocabulary by default
    head = np.asarray(jax.vmap(gpt2.head)(x0, ctx))
    last = ours[np.arange(len(SENTENCES)), mask.sum(1) - 1]
    assert head.shape == (len(SENTENCES), gpt2.config.vocab_size)
    np.testing.assert_allclose(head, last, rtol=0, atol=rounding_tol(last, ulps=32))


def test_frozen_top_k_head(gpt2_dir: tuple[Path, Any]) -> None:
    model = mm.load(gpt2_dir[0], top_k=5)
    assert model.labels == ("top1", "top2", "top3", "top4", "top5")
    x0, ctx = model.embed(SENTENCES[:2])
    full = np.asarray(model.next_token_probabilities(x0, ctx))
    np.testing.assert_array_equal(np.asarray(ctx["topk"]), np.argsort(-full, axis=1)[:, :5])
    head = np.asarray(jax.vmap(model.head)(x0, ctx))
    logits = np.log(full)  # logits up to a per-row constant
    expected = np.take_along_axis(logits, np.asarray(ctx["topk"]), axis=1)
    np.testing.assert_allclose(head - head[:, :1], expected - expected[:, :1], atol=1e-5)
    # moving the input does not change which tokens the head reads
    _, ctx2 = model.embed_ids(np.asarray(ctx["input_ids"]), None, np.asarray(ctx["attention_mask"]))
    np.testing.assert_array_equal(np.asarray(ctx2["topk"]), np.asarray(ctx["topk"]))
    with pytest.raises(ValueError, match="top_k"):
        mm.load(gpt2_dir[0], top_k=0)


def test_decode_bounds_and_detokenize(gpt2: GPT2) -> None:
    x0, ctx = gpt2.embed(SENTENCES)
    np.testing.assert_array_equal(gpt2.decode(x0, ctx), np.asarray(ctx["input_ids"]))
    assert gpt2.detokenize(gpt2.decode(x0, ctx)) == SENTENCES
    # a point moved toward another token's embedding decodes to that token
    table = np.asarray(gpt2.params["wte"]["embedding"])
    target = 7
    moved = np.asarray(x0).copy()
    moved[0, 1] = table[target] + np.asarray(gpt2.params["wpe"]["embedding"])[1] + 1e-3
    assert gpt2.decode(moved, ctx)[0, 1] == target
    lo, hi = gpt2.bounds("theoretical", x0.shape[1])
    assert lo.shape == hi.shape == x0.shape[1:]
    assert bool(((x0 >= lo) & (x0 <= hi)).all())
    # the box is tight: every bound is attained by some token at that position
    pos = np.asarray(gpt2.params["wpe"]["embedding"])[: x0.shape[1]]
    np.testing.assert_allclose(np.asarray(hi), table.max(0) + pos, rtol=0, atol=1e-6)
    mlo, mhi = gpt2.bounds("measured", SENTENCES)
    assert bool((mlo >= lo - 1e-6).all() and (mhi <= hi + 1e-6).all())


def test_candidate_embeddings_are_what_embed_gives(gpt2: GPT2) -> None:
    """token_embeddings (the verified-sentence search's candidates) equal embed_ids of those tokens at
    those positions, exactly; the word vocabulary drops only the end-of-text token."""
    ids = np.array([[5, 17, 42, 99]], np.int32)
    x0, _ = gpt2.embed_ids(ids)
    cand = np.asarray(gpt2.token_embeddings(jax.numpy.asarray(ids[0]), 4))  # (1, C, n, d)
    assert cand.shape == (1, 4, 4, x0.shape[-1])
    for i in range(4):
        np.testing.assert_array_equal(cand[0, i, i], np.asarray(x0)[0, i])
    words, every = np.asarray(gpt2.vocabulary_mask("words")), np.asarray(gpt2.vocabulary_mask("all"))
    assert every.all() and words.sum() == every.size - len(set(gpt2.tokenizer.all_special_ids))
    with pytest.raises(ValueError, match="vocabulary='some'"):
        gpt2.vocabulary_mask("some")


def test_pytorch_bin_state_dict_loads_like_safetensors(gpt2: GPT2, gpt2_dir: tuple[Path, Any], tmp_path: Path) -> None:
    """A raw ``state_dict()`` (tied lm_head copy, causal-mask buffers if any) through torch.load(weights_only)."""
    for f in gpt2_dir[0].iterdir():
        if f.name != "model.safetensors":
            (tmp_path / f.name).write_bytes(f.read_bytes())
    torch.save(gpt2_dir[1].state_dict(), tmp_path / "pytorch_model.bin")
    jax.tree.map(np.testing.assert_array_equal, mm.load(tmp_path).params, gpt2.params)


def test_bad_ids_and_masks_are_named(gpt2: GPT2) -> None:
    with pytest.raises(ValueError, match="right padding"):
        gpt2.embed_ids(np.ones((1, 4), np.int32), None, np.array([[0, 1, 1, 1]]))
    with pytest.raises(ValueError, match="input_ids must lie"):
        gpt2.embed_ids(np.full((1, 3), gpt2.config.vocab_size))
    with pytest.raises(ValueError, match="exceeds n_positions"):
        gpt2.embed_ids(np.zeros((1, gpt2.config.n_positions + 1), np.int32))
    with pytest.raises(ValueError, match="more than the 2 allowed"):
        gpt2.embed(SENTENCES[:1], max_length=2)


def test_untied_head_and_unported_options_are_refused(gpt2_dir: tuple[Path, Any], tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    weights = load_file(gpt2_dir[0] / "model.safetensors")
    config = GPT2Config.from_hf(transformers.AutoConfig.from_pretrained(gpt2_dir[0]))
    untied = dict(weights, **{"lm_head.weight": weights["transformer.wte.weight"] + 1.0})
    with pytest.raises(mm.UnsupportedModelError, match="untied"):
        gpt2_params(untied, config)
    hf = transformers.GPT2Config(n_embd=32, n_layer=1, n_head=4, reorder_and_upcast_attn=True)
    with pytest.raises(mm.UnsupportedModelError, match="reorder_and_upcast_attn"):
        GPT2Config.from_hf(hf)


@pytest.mark.slow
def test_gpt2_small_shape_logits_match_transformers(full_size: bool, record_property: Any) -> None:
    """GPT-2-small's shape (V 50,257, d 768, 12 heads, 1024 positions) with random weights; CI
    runs 2 of its 12 layers (--full: all 12). Weights go through the same name table in memory.
    Tolerance 1e-4: logits of magnitude ~1 summed over d = 768 products per layer, float32."""
    layers = 12 if full_size else 2
    hf = transformers.GPT2Config(n_layer=layers, initializer_range=0.02)
    torch.manual_seed(0)
    torch_model = transformers.GPT2LMHeadModel(hf).eval()
    weights = {k: v.detach().numpy() for k, v in torch_model.state_dict().items()}
    config = GPT2Config.from_hf(hf)
    model = GPT2(gpt2_params(weights, config), config)
    ids = np.random.default_rng(0).integers(0, hf.vocab_size, size=(2, 16)).astype(np.int32)
    att = np.ones_like(ids)
    att[1, 11:] = 0
    x0, ctx = model.embed_ids(ids, None, att)
    ours = np.asarray(model.forward(x0, ctx))
    theirs = _torch_logits(torch_model, {"input_ids": ids, "attention_mask": att})
    diff = float(np.abs(ours - theirs)[att.astype(bool)].max())
    record_property("gpt2_small_shape_max_abs_diff", diff)
    print(f"GPT2LMHeadModel (GPT-2-small shape, {layers} layers) logits, max abs diff: {diff:.3g}")
    assert diff <= 1e-4
