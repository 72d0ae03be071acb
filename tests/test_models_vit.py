"""ViT ports: the paper's ViT (presets, random init, save/load) and HF ViTForImageClassification."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import manifold_jax.models as mm
from manifold_jax.models.vit import patchify, unpatchify
from manifold_jax.models.weights import flatten
from tests.models_helpers import random_images, rounding_tol, save_random_hf_vit


@pytest.fixture(scope="module")
def mnist_vit() -> mm.ViT:
    return mm.ViT.create(mm.MNIST_VIT, jax.random.key(0))


@pytest.fixture(scope="module")
def hf_vit(tmp_path_factory: pytest.TempPathFactory) -> tuple[mm.ViT, Any]:
    directory = tmp_path_factory.mktemp("hf_vit")
    torch_model = save_random_hf_vit(directory)
    return mm.load(directory), torch_model


def _torch_logits(torch_model: Any, images: np.ndarray, mean: float = 0.5, std: float = 0.5) -> np.ndarray:
    pixels = torch.tensor((images - mean) / std).permute(0, 3, 1, 2)
    with torch.no_grad():
        return torch_model(pixel_values=pixels).logits.numpy()


# ---------------------------------------------------------------------------- configs


def test_paper_presets() -> None:
    m, c = mm.MNIST_VIT, mm.CIFAR10_VIT
    assert (m.image_size, m.num_channels, m.patch_size, m.hidden_size) == (28, 1, 2, 48)
    assert (m.num_layers, m.num_heads, m.mlp_dim, m.num_classes, m.num_patches) == (4, 4, 192, 10, 196)
    assert (c.image_size, c.num_channels, c.patch_size, c.hidden_size) == (32, 3, 2, 384)
    assert (c.num_layers, c.num_heads, c.mlp_dim, c.num_classes, c.num_patches) == (6, 8, 512, 10, 256)
    assert m.hidden_act == c.hidden_act == "gelu_tanh" and not m.patch_bias
    assert c.labels[0] == "airplane" and m.labels == tuple("0123456789")
    hash(m)  # hashable: it is static metadata of the model pytree


def test_patchify_is_inverted_by_unpatchify_and_orders_patches_row_major() -> None:
    images = random_images((2, 8, 8, 3))
    patches = patchify(jnp.asarray(images), 2)
    assert patches.shape == (2, 16, 12)
    np.testing.assert_array_equal(np.asarray(patches[0, 1]), images[0, 0:2, 2:4].reshape(-1))
    np.testing.assert_array_equal(np.asarray(unpatchify(patches, 8, 2, 3)), images)


# ---------------------------------------------------------------------- paper's ViT


def test_random_mnist_vit_embed_head_forward(mnist_vit: mm.ViT) -> None:
    images = random_images((3, 28, 28))
    x0, ctx = mnist_vit.embed(images)
    assert x0.shape == (3, 197, 48) and ctx["pixels"].shape == (3, 28, 28, 1)
    np.testing.assert_array_equal(np.asarray(ctx["token_mask"][0]), np.arange(197) > 0)
    x0_c, _ = mnist_vit.embed(images[..., None])  # (B, H, W, 1) is the same input
    np.testing.assert_array_equal(np.asarray(x0_c), np.asarray(x0))
    # the embedding is [CLS; patches @ W] + pos, no bias
    w, pos = mnist_vit.params["patch_embed"]["kernel"], mnist_vit.params["position"]
    assert set(mnist_vit.params["patch_embed"]) == {"kernel"}
    expected = np.asarray(patchify(jnp.asarray(images[..., None]), 2) @ w + pos[1:])
    np.testing.assert_allclose(np.asarray(x0[:, 1:]), expected, atol=rounding_tol(expected))
    head = np.asarray(jax.vmap(mnist_vit.head)(x0, ctx))
    full = np.asarray(mnist_vit(images))
    assert head.shape == (3, 10)
    np.testing.assert_allclose(head, full, rtol=0, atol=rounding_tol(full))
    with pytest.raises(ValueError, match=r"\(B, 28, 28, 1\)"):
        mnist_vit.embed(random_images((3, 32, 32)))


def test_vit_is_a_pytree_of_its_params_and_differentiable(mnist_vit: mm.ViT) -> None:
    assert isinstance(mnist_vit, mm.ExplorableModel)
    leaves = jax.tree.leaves(mnist_vit)
    assert len(leaves) == len(flatten(mnist_vit.params))
    x0, ctx = mnist_vit.embed(random_images((2, 28, 28)))
    one = jax.tree.map(lambda a: a[0], ctx)
    jaxpr = jax.make_jaxpr(lambda m, x, c: m.head(x, c))(mnist_vit, x0[0], one)
    assert len(jaxpr.jaxpr.invars) == len(leaves) + 1 + len(one), "weights must be traced as arguments"
    jac = jax.jit(jax.vmap(jax.jacrev(lambda m, x, c: m.head(x, c), argnums=1), in_axes=(None, 0, 0)))(
        mnist_vit, x0, ctx
    )
    assert jac.shape == (2, 10, 197, 48) and bool(jnp.all(jnp.isfinite(jac)))


def test_cifar10_preset_builds(tmp_path: Path) -> None:
    model = mm.ViT.create(mm.CIFAR10_VIT, jax.random.key(1))
    logits = model(random_images((1, 32, 32, 3)))
    assert logits.shape == (1, 10) and model.labels == mm.CIFAR10_VIT.labels
    assert model.params["position"].shape == (257, 384)


def test_save_and_load_round_trip(mnist_vit: mm.ViT, tmp_path: Path) -> None:
    mnist_vit.save(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "manifold_vit"
    loaded = mm.load(tmp_path)
    assert isinstance(loaded, mm.ViT) and loaded.config == mnist_vit.config
    jax.tree.map(np.testing.assert_array_equal, loaded.params, mnist_vit.params)
    images = random_images((2, 28, 28))
    np.testing.assert_array_equal(np.asarray(loaded(images)), np.asarray(mnist_vit(images)))
    encoder = mm.load(tmp_path, task="encoder")  # the classifier is a head: dropped, not an error
    assert "classifier" not in encoder.params and encoder.head(encoder.embed(images)[0][0], {}).shape == (197, 48)


# --------------------------------------------------------------------------- decoding


@pytest.mark.parametrize("which", ["paper", "hf"])
def test_pseudo_inverse_decoder_round_trip(which: str, mnist_vit: mm.ViT, hf_vit: tuple[mm.ViT, Any]) -> None:
    model = mnist_vit if which == "paper" else hf_vit[0]
    size, channels = model.config.image_size, model.config.num_channels
    images = random_images((3, size, size, channels), seed=2)
    x0, ctx = model.embed(images)
    decoded = model.decode(x0, ctx)
    assert decoded.shape == images.shape
    assert float(np.abs(decoded - images).max()) <= 1e-5


def test_decoder_replaces_only_explored_patches_and_clips(hf_vit: tuple[mm.ViT, Any]) -> None:
    model, _ = hf_vit
    images = random_images((1, 8, 8, 3), seed=3)
    x0, ctx = model.embed(images)
    x = np.asarray(x0).copy()
    x[0, 1] += 100.0  # patch 0 (rows 0-1, cols 0-1): explored, far out of range
    x[0, 2] += 100.0  # patch 1: not explored
    token_mask = np.asarray(ctx["token_mask"]).copy()
    token_mask[0, 2] = False
    decoded = model.decode(jnp.asarray(x), {**ctx, "token_mask": jnp.asarray(token_mask)})
    assert decoded.min() >= 0.0 and decoded.max() <= 1.0
    assert not np.allclose(decoded[0, 0:2, 0:2], images[0, 0:2, 0:2], atol=1e-3)
    untouched = np.ones((8, 8), bool)
    untouched[0:2, 0:2] = False
    np.testing.assert_allclose(decoded[0][untouched], images[0][untouched], atol=1e-5)
    np.testing.assert_array_equal(decoded[0, 0:2, 2:4], images[0, 0:2, 2:4])  # the original pixels


# ----------------------------------------------------------------------------- bounds


@pytest.mark.parametrize("which", ["paper", "hf"])
def test_theoretical_box_contains_images_and_is_attained(
    which: str, mnist_vit: mm.ViT, hf_vit: tuple[mm.ViT, Any]
) -> None:
    model = mnist_vit if which == "paper" else hf_vit[0]
    c = model.config
    images = random_images((4, c.image_size, c.image_size, c.num_channels), seed=4)
    x0, _ = model.embed(images)
    lo, hi = model.bounds("theoretical")
    assert lo.shape == hi.shape == x0.shape[1:]
    tol = rounding_tol(x0, lo, hi, ulps=4 * c.patch_dim)
    assert float(jnp.max(lo - x0)) <= tol and float(jnp.max(x0 - hi)) <= tol
    np.testing.assert_array_equal(np.asarray(lo[0]), np.asarray(hi[0]))
    np.testing.assert_allclose(np.asarray(lo[0]), np.asarray(x0[0, 0]), atol=tol)
    # tight: for output dimension j the image with pixel 1 where W[:, j] >= 0 (0 elsewhere) reaches hi_j
    j = 5
    w = np.asarray(model.params["patch_embed"]["kernel"])[:, j]
    patch = (w >= 0).astype(np.float32)
    patches = jnp.broadcast_to(jnp.asarray(patch), (1, c.num_patches, c.patch_dim))
    best = np.asarray(unpatchify(patches, c.image_size, c.patch_size, c.num_channels))
    x_best, _ = model.embed(best)
    np.testing.assert_allclose(np.asarray(x_best[0, 1:, j]), np.asarray(hi[1:, j]), rtol=0, atol=tol)
    x_worst, _ = model.embed(1.0 - best)
    np.testing.assert_allclose(np.asarray(x_worst[0, 1:, j]), np.asarray(lo[1:, j]), rtol=0, atol=tol)


def test_measured_box(mnist_vit: mm.ViT) -> None:
    images = random_images((5, 28, 28), seed=5)
    x0, _ = mnist_vit.embed(images)
    lo, hi = mnist_vit.bounds("measured", data=images)
    assert bool(jnp.all((lo <= x0) & (x0 <= hi)))
    lo_t, hi_t = mnist_vit.bounds("theoretical")
    tol = rounding_tol(x0, ulps=16)
    assert float(jnp.max(lo_t - lo)) <= tol and float(jnp.max(hi - hi_t)) <= tol
    with pytest.raises(ValueError, match="needs data"):
        mnist_vit.bounds("measured")


# -------------------------------------------------------------------------- HF parity


def test_hf_vit_logits_match_transformers(hf_vit: tuple[mm.ViT, Any], record_property: Any) -> None:
    model, torch_model = hf_vit
    images = random_images((4, 8, 8, 3), seed=6)
    x0, ctx = model.embed(images)
    ours = np.asarray(model.forward(x0, ctx))
    theirs = _torch_logits(torch_model, images)
    diff = float(np.abs(ours - theirs).max())
    record_property("hf_vit_max_abs_diff", diff)
    print(f"ViTForImageClassification logits, max abs diff: {diff:.3g}")
    assert ours.shape == (4, 5) and float(np.abs(theirs).max()) > 0.05
    assert diff <= 1e-5, f"ViT logits differ by {diff:.3g} (> 1e-5)"
    head = np.asarray(jax.vmap(model.head)(x0, ctx))
    np.testing.assert_allclose(head, ours, rtol=0, atol=rounding_tol(ours))
    assert model.labels == tuple(f"LABEL_{i}" for i in range(5))


def test_hf_vit_uses_the_processor_normalisation(tmp_path: Path) -> None:
    torch_model = save_random_hf_vit(tmp_path, seed=1)
    (tmp_path / "preprocessor_config.json").write_text(
        json.dumps({"do_normalize": True, "image_mean": [0.2, 0.3, 0.4], "image_std": [0.25, 0.5, 0.75]})
    )
    model = mm.load(tmp_path)
    assert model.config.image_mean == (0.2, 0.3, 0.4) and model.config.image_std == (0.25, 0.5, 0.75)
    images = random_images((2, 8, 8, 3), seed=7)
    mean, std = np.array([0.2, 0.3, 0.4], np.float32), np.array([0.25, 0.5, 0.75], np.float32)
    theirs = _torch_logits(torch_model, images, mean, std)
    assert float(np.abs(np.asarray(model(images)) - theirs).max()) <= 1e-5
    override = mm.load(tmp_path, image_mean=[0.5], image_std=[0.5])
    assert override.config.image_mean == (0.5, 0.5, 0.5)
    assert float(np.abs(np.asarray(override(images)) - _torch_logits(torch_model, images)).max()) <= 1e-5
