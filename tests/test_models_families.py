"""RoBERTa, DistilBERT and DeiT on the shared ports: parity with transformers on random weights,
the registry's dispatch, and options refused by the families they do not apply to."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np
import pytest
import torch

import manifold_jax.models as mm
from tests.models_helpers import (
    MLM_SENTENCES,
    SENTENCES,
    random_images,
    rounding_tol,
    save_random_family,
    save_random_gpt2,
)

TOL = 1e-5
"""Logits of magnitude ~1 through 2 float32 layers of width 32-64: a few ulps, far below the O(0.1)
change a swapped or dropped weight makes (every parameter is perturbed, see models_helpers)."""


def _text_parity(model: mm.Bert, torch_model: Any, texts: list[str]) -> tuple[float, np.ndarray, Any]:
    x0, ctx = model.embed(texts)
    ours = np.asarray(model.forward(x0, ctx))
    enc = model.tokenizer(texts, padding=True, return_tensors="pt")
    inputs = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        theirs = torch_model(**inputs).logits.numpy()
    if ours.ndim == 3:  # MLM logits: compare at real tokens only
        mask = np.asarray(ctx["attention_mask"]).astype(bool)
        return float(np.abs(ours - theirs)[mask].max()), theirs, ctx
    return float(np.abs(ours - theirs).max()), theirs, ctx


@pytest.mark.parametrize(
    ("architecture", "task", "texts"),
    [
        ("RobertaForSequenceClassification", "classification", SENTENCES),
        ("RobertaForMaskedLM", "mlm", [t.replace("[MASK]", "<mask>") for t in MLM_SENTENCES]),
        ("DistilBertForSequenceClassification", "classification", SENTENCES),
        ("DistilBertForMaskedLM", "mlm", MLM_SENTENCES),
    ],
)
def test_text_family_matches_transformers(
    tmp_path: Path, architecture: str, task: str, texts: list[str], record_property: Any
) -> None:
    torch_model = save_random_family(tmp_path, architecture)
    model = mm.load(tmp_path, task=task)
    assert isinstance(model, mm.TextModel)
    diff, theirs, ctx = _text_parity(model, torch_model, texts)
    record_property(f"{architecture}_max_abs_diff", diff)
    print(f"{architecture} logits, max abs diff: {diff:.3g}")
    assert float(np.abs(theirs).max()) > 0.05
    assert diff <= TOL
    x0, _ = model.embed(texts)
    head = np.asarray(jax.vmap(model.head)(x0, ctx))
    if task == "classification":
        np.testing.assert_allclose(head, theirs, rtol=0, atol=TOL)
    else:  # the frozen top-5 at the mask are the reference's, in order
        rows = theirs[np.arange(len(texts)), np.asarray(ctx["mask_position"])]
        np.testing.assert_array_equal(np.asarray(ctx["topk"]), np.argsort(-rows, axis=1)[:, :5])
    # decoding the unmodified embeddings gives the tokens back, inside the exact vocabulary box
    np.testing.assert_array_equal(model.decode(x0, ctx, method="nearest"), np.asarray(ctx["input_ids"]))
    lo, hi = model.bounds("theoretical", x0.shape[1])
    assert bool(((x0 >= lo - 1e-6) & (x0 <= hi + 1e-6)).all())


@pytest.mark.parametrize("architecture", ["DeiTForImageClassificationWithTeacher", "DeiTForImageClassification"])
def test_deit_matches_transformers(tmp_path: Path, architecture: str, record_property: Any) -> None:
    """DeiT: CLS + distillation token + patches; with a teacher head the logits are the mean of
    the two heads. Images in [0, 1], normalised inside embed (HF's default 0.5 / 0.5)."""
    torch_model = save_random_family(tmp_path, architecture)
    model = mm.load(tmp_path)
    images = random_images((3, 8, 8, 3))
    x0, ctx = model.embed(images)
    assert x0.shape == (3, 16 + 2, 32) and not bool(np.asarray(ctx["token_mask"])[:, :2].any())
    ours = np.asarray(model.forward(x0, ctx))
    pixels = torch.tensor((images - 0.5) / 0.5).permute(0, 3, 1, 2)
    with torch.no_grad():
        theirs = torch_model(pixel_values=pixels).logits.numpy()
    diff = float(np.abs(ours - theirs).max())
    record_property(f"{architecture}_max_abs_diff", diff)
    print(f"{architecture} logits, max abs diff: {diff:.3g}")
    assert diff <= TOL
    np.testing.assert_allclose(np.asarray(jax.vmap(model.head)(x0, ctx)), ours, rtol=0,
                               atol=rounding_tol(ours, ulps=32))
    np.testing.assert_allclose(model.decode(x0, ctx), images, rtol=0, atol=1e-5)  # pinv of the patch embedding
    lo, hi = model.bounds("theoretical")
    assert bool(((x0 >= lo - 1e-5) & (x0 <= hi + 1e-5)).all())


def test_options_that_do_not_apply_are_refused(tmp_path: Path) -> None:
    save_random_gpt2(tmp_path / "gpt2")
    with pytest.raises(mm.UnsupportedModelError, match=r"option num_labels does not apply to GPT-2.*max_length, top_k"):
        mm.load(tmp_path / "gpt2", num_labels=3)
    with pytest.raises(mm.UnsupportedModelError,
                       match=r"unknown task 'classification' for GPT-2; supported: lm, lm-top5"):
        mm.load(tmp_path / "gpt2", task="classification")
    assert mm.load(tmp_path / "gpt2", task="lm-top5").top_k == 5
    assert mm.family_of(tmp_path / "gpt2").study_task == "lm-top5"
    with pytest.raises(mm.UnsupportedModelError, match=r"option max_length does not apply to manifold-jax ViT"):
        mm.load("mnist-vit", max_length=12)
    for option in ({"num_labels": 4}, {"init_missing_head": True}, {"key": jax.random.key(0)}):
        with pytest.raises(mm.UnsupportedModelError, match=rf"option {next(iter(option))} does not apply to sentence"):
            mm.load("minilm-topics", **option)
    with pytest.raises(mm.UnsupportedModelError, match=r"option top_k does not apply to BERT"):
        mm.load(mm.minilm_path(), task="encoder", top_k=5)


def test_cli_explores_a_causal_lm_prompt_through_its_top5_head(workdir: Path) -> None:
    """``--text`` on a GPT-2 directory: no --task needed, the study uses the frozen top-5 head."""
    import json

    from manifold_jax.cli import main

    save_random_gpt2(workdir / "gpt2")
    out = workdir / "study"
    main(["explore", "--model", "gpt2", "--text", "The striker scored", "--steps", "2",
          "--save-every", "1", "--chunk-size", "2", "--algorithm", "simec", "--no-baseline", "--no-report",
          "--quiet", "--out", "study"])
    spec = json.loads((out / "spec.json").read_text())
    assert spec["task"] == "lm-top5" and spec["labels"] == ["top1", "top2", "top3", "top4", "top5"]
    with np.load(out / "simec" / "trajectory.npz") as data:
        assert data["y"].shape == (1, 3, 5)
