"""Pixel-space ViTs (``ViT.pixel_space()``): exact decoding, the same map as in embedding space,
and explorations whose every saved point is an image the model classifies as the exploration says."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pytest
import torch

import manifold_jax as mj
import manifold_jax.models as mm
from manifold_jax import analysis
from manifold_jax.cli import main
from manifold_jax.interpret import interpret
from tests.models_helpers import random_images, rounding_tol, save_random_hf_vit

# one process: the engine test and the CLI study compile the same exploration program once
pytestmark = pytest.mark.xdist_group("pixel_space")


@pytest.fixture(scope="module")
def hf_vit(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, mm.ViT, Any]:
    """A random HF ViTForImageClassification (8x8x3 images, 2x2 patches: 12 pixels per patch for
    5 classes, so every patch block has a null space), with its bias and 0.5 / 0.5 normalisation."""
    directory = tmp_path_factory.mktemp("hf_vit_pixels")
    torch_model = save_random_hf_vit(directory)
    return str(directory), mm.load(directory), torch_model


@pytest.fixture(scope="module")
def paper_vit() -> mm.ViT:
    """The paper's ViT (bias-free patch embedding), small: 8x8x1 images, 4x4 patches, hidden 16."""
    config = mm.ViTConfig(image_size=8, num_channels=1, patch_size=4, hidden_size=16, num_layers=1,
                          num_heads=2, mlp_dim=32, num_classes=3)
    return mm.ViT.create(config, jax.random.key(0))


def _images(model: Any, count: int, seed: int) -> np.ndarray:
    c = model.config
    return random_images((count, c.image_size, c.image_size, c.num_channels), seed=seed)


@pytest.mark.parametrize("which", ["paper", "hf"])
def test_embed_then_decode_returns_the_images_exactly(which: str, paper_vit: mm.ViT, hf_vit: Any) -> None:
    model = (paper_vit if which == "paper" else hf_vit[1]).pixel_space()
    images = _images(model, 3, seed=1)
    x0, ctx = model.embed(images)
    c = model.config
    assert x0.shape == (3, c.num_patches, c.patch_dim) and bool(np.all(ctx["token_mask"]))
    np.testing.assert_array_equal(model.decode(x0, ctx), images)
    lo, hi = model.bounds()
    np.testing.assert_array_equal(np.asarray(lo), 0.0)
    np.testing.assert_array_equal(np.asarray(hi), 1.0)
    assert lo.shape == x0.shape[1:]
    assert model.pixel_space() is model and model.labels == model.vit.labels and model.modality == "image"
    assert isinstance(model, mm.ExplorableModel)


@pytest.mark.parametrize("which", ["paper", "hf"])
def test_pixel_head_is_the_embedding_head(which: str, paper_vit: mm.ViT, hf_vit: Any) -> None:
    """The pixel-space head runs the very float32 operations of embed-then-head (normalising
    commutes exactly with cutting the image into patches), so the two may differ only where XLA
    orders a reduction differently: a few float32 ulps of the logits (``rounding_tol``, 8 ulps)."""
    vit = paper_vit if which == "paper" else hf_vit[1]
    pixels = vit.pixel_space()
    images = _images(vit, 4, seed=2)
    x_pix, ctx_pix = pixels.embed(images)
    x_emb, ctx_emb = vit.embed(images)
    batched = lambda m, x, c: jax.vmap(m.head)(x, c)  # noqa: E731
    ours = np.asarray(jax.jit(batched)(pixels, x_pix, ctx_pix))
    theirs = np.asarray(jax.jit(batched)(vit, x_emb, ctx_emb))
    assert float(np.abs(theirs).max()) > 0.05
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=rounding_tol(theirs))


def test_pixel_head_matches_transformers_on_the_raw_image(hf_vit: Any) -> None:
    """Against the PyTorch ViTForImageClassification fed the processor-normalised image: the
    same 1e-5 bound as the embedding-space parity test (float32, two layers of O(1) values)."""
    _, vit, torch_model = hf_vit
    model = vit.pixel_space()
    images = _images(vit, 4, seed=3)
    x0, ctx = model.embed(images)
    ours = np.asarray(jax.jit(lambda m, x, c: jax.vmap(m.head)(x, c))(model, x0, ctx))
    with torch.no_grad():
        theirs = torch_model(pixel_values=torch.tensor((images - 0.5) / 0.5).permute(0, 3, 1, 2)).logits.numpy()
    diff = float(np.abs(ours - theirs).max())
    print(f"pixel-space ViTForImageClassification logits, max abs diff: {diff:.3g}")
    assert diff <= 1e-5


def test_explorations_stay_images_the_model_classifies_as_explored(hf_vit: Any) -> None:
    """SiMEC and SiMExp through the public engine with the pixel box: every saved point is an
    image in [0, 1] (SiMExp's long steps do reach the bounds, so the box is exercised), and the
    decoded image, re-embedded and re-predicted, gives the exploration's logits. The two
    computations are the same float32 map compiled into different programs (the primal of a
    VJP inside the loop, a plain vmapped head outside): differences are rounding, bounded by
    64 ulps of the logits; the class agreement is exact and the Wasserstein-1 distance ~1e-7."""
    _, vit, _ = hf_vit
    model = vit.pixel_space()
    x0, ctx = model.embed(_images(vit, 2, seed=4))
    # one eta for both: SiMEC and SiMExp then share one compiled program (and the CLI test below reuses it)
    options = dict(args=(ctx,), select=ctx["token_mask"], bounds=model.bounds(), steps=20, save_every=5, eta=50.0)
    runs = {
        "simec": mj.simec(model.head, x0, key=jax.random.PRNGKey(0), **options),
        "simexp": mj.simexp(model.head, x0, key=jax.random.PRNGKey(1), **options),
    }
    at_bound = 0
    for name, traj in runs.items():
        assert traj.x.shape == (2, 5, *x0.shape[1:])  # iterations 0, 5, ..., 20
        assert float(traj.x.min()) >= 0.0 and float(traj.x.max()) <= 1.0, name
        at_bound += int(np.sum((traj.x[:, 1:] == 0.0) | (traj.x[:, 1:] == 1.0)))
        found = interpret(model, traj.x, ctx)
        assert found.inputs.shape == (2, 5, 8, 8, 3)
        decoded = model.decode(traj.x.reshape(-1, *x0.shape[1:]), ctx).reshape(found.inputs.shape)
        np.testing.assert_array_equal(found.inputs, decoded)
        np.testing.assert_allclose(found.logits, traj.y, rtol=0, atol=rounding_tol(traj.y, ulps=64))
        np.testing.assert_array_equal(np.argmax(found.logits, -1), np.argmax(traj.y, -1))
        distance = analysis.wasserstein1_01(analysis.softmax(found.logits), analysis.softmax(traj.y))
        assert float(np.max(distance)) <= 1e-5, name
    assert at_bound > 0, "SiMExp never reached the pixel box: the clipping went untested"
    moved = np.abs(runs["simexp"].x[:, -1] - np.asarray(x0)).max()
    assert moved > 0.1


def test_study_in_pixel_space_from_the_cli(hf_vit: Any, workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory, vit, _ = hf_vit
    from PIL import Image

    paths = []
    for i, image in enumerate(_images(vit, 2, seed=5)):
        paths.append(f"img{i}.png")
        Image.fromarray((image * 255).round().astype(np.uint8)).save(paths[-1])
    out = workdir / "study"
    # the demo test covers a whole pixel-space study with its report; here the CLI option and the files
    main(["explore", "--model", directory, "--image", *paths, "--space", "pixels", "--algorithm", "simexp",
          "--steps", "10", "--save-every", "5", "--eta", "50", "--no-baseline", "--no-report", "--quiet",
          "--out", "study"])  # the engine options of the test above: its compiled program serves
    spec = json.loads((out / "spec.json").read_text())
    assert spec["space"] == "pixels"
    from manifold_jax.study import load_study

    study = load_study(out)
    traj, interp = study.trajectories["simexp"], study.interpretations["simexp"]
    assert traj.x.shape == (2, 3, 16, 12) and traj.x.min() >= 0 and traj.x.max() <= 1
    np.testing.assert_array_equal(interp.inputs[:, 0], study.inputs["raw"])
    np.testing.assert_array_equal(np.argmax(interp.logits, -1), np.argmax(traj.y, -1))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["explore", "--model", "minilm-topics", "--text", "A goal.", "--space", "pixels",
              "--out", "t"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "space='pixels' needs a ViT" in err[0]
