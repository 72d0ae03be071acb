"""Training of the embedded models: loss goes down, runs are deterministic, saved runs reload."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import manifold_jax.models as mm
from manifold_jax.cli import main
from manifold_jax.data import mnist_split
from manifold_jax.models.embedded import training_record
from manifold_jax.training import evaluate_vit, train_mnist_vit, train_topic_head
from tests.models_helpers import minilm_dir

# A reduced ViT (7x7 patches: 16 + CLS tokens, 2 layers) so that a run takes seconds.
SMALL = dataclasses.replace(mm.MNIST_VIT, patch_size=7, hidden_size=32, num_layers=2, num_heads=2, mlp_dim=64)
QUICK = dict(
    epochs=1, batch_size=32, n_train=512, n_test=200, learning_rate=1e-2, warmup_epochs=0.25, max_shift=1,
    progress=False,
)


def _same_params(a: mm.ViT, b: mm.ViT) -> bool:
    return all(jax.tree.leaves(jax.tree.map(lambda u, v: bool(np.array_equal(u, v)), a.params, b.params)))


# one process runs the whole module, so the trained runs (a session fixture) are built once
pytestmark = pytest.mark.xdist_group("training")


@pytest.fixture(scope="session")  # built once per process, however xdist interleaves modules
def quick_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[mm.ViT, dict]]:
    saved = tmp_path_factory.mktemp("vit_run")
    return {
        "init": train_mnist_vit(SMALL, seed=0, **{**QUICK, "epochs": 0}),
        "a": train_mnist_vit(SMALL, seed=0, save=saved, **QUICK),
        "b": train_mnist_vit(SMALL, seed=0, **QUICK),
        "other_seed": train_mnist_vit(SMALL, seed=1, **QUICK),
        "dir": saved,  # type: ignore[dict-item]
    }


def test_one_epoch_reduces_the_training_loss(quick_runs: dict) -> None:
    split = mnist_split(0)
    images, labels = split.train_images[:512], split.train_labels[:512]
    before = evaluate_vit(quick_runs["init"][0], images, labels)["loss"]
    after = evaluate_vit(quick_runs["a"][0], images, labels)["loss"]
    # initial logits are ~0 (init std 0.02): cross-entropy log(10) = 2.30
    assert abs(before - np.log(10)) < 0.1
    assert after < before - 0.05, (before, after)
    metrics = quick_runs["a"][1]
    assert len(metrics["train_loss"]) == 1 and np.isfinite(metrics["train_loss"][0])
    assert metrics["hyperparameters"]["n_train"] == 512 and len(metrics["epoch_seconds"]) == 1


def test_training_is_deterministic_for_a_seed(quick_runs: dict) -> None:
    assert _same_params(quick_runs["a"][0], quick_runs["b"][0])
    assert quick_runs["a"][1]["train_loss"] == quick_runs["b"][1]["train_loss"]
    assert not _same_params(quick_runs["a"][0], quick_runs["other_seed"][0])
    assert not _same_params(quick_runs["a"][0], quick_runs["init"][0])


def test_saved_run_reloads_with_its_record(quick_runs: dict) -> None:
    directory: Path = quick_runs["dir"]
    model, metrics = quick_runs["a"]
    assert {p.name for p in directory.iterdir()} == {"config.json", "model.safetensors", "training.json"}
    loaded = mm.load(directory)
    images = mnist_split(0).test_images[:8]
    np.testing.assert_array_equal(np.asarray(loaded(images)), np.asarray(model(images)))
    record = json.loads((directory / "training.json").read_text())
    assert record["test_accuracy"] == metrics["test_accuracy"]
    assert record["hyperparameters"]["config"]["patch_size"] == 7
    assert "train_mnist_vit(ViTConfig(" in record["command"] and "seed=0" in record["command"]


def test_bad_training_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="28x28x1"):
        train_mnist_vit(mm.CIFAR10_VIT, progress=False)
    with pytest.raises(ValueError, match="fewer than one batch"):
        train_mnist_vit(SMALL, n_train=10, batch_size=32, progress=False)


@pytest.fixture(scope="module")
def encoder() -> mm.Bert:
    return mm.load(minilm_dir(), task="encoder")


def test_topic_head_fits_and_is_deterministic(encoder: mm.Bert) -> None:
    a, ma = train_topic_head(encoder, seed=0, steps=100, progress=False)
    b, mb = train_topic_head(encoder, seed=0, steps=100, progress=False)
    np.testing.assert_array_equal(np.asarray(a.weight), np.asarray(b.weight))
    np.testing.assert_array_equal(np.asarray(a.bias), np.asarray(b.bias))
    assert ma["loss"] == mb["loss"]
    # the objective at W = 0 is log(3) = 1.0986; 100 Adam steps must go well below it
    assert ma["final_objective"] < 0.5 * np.log(3), ma["final_objective"]
    assert ma["train_accuracy"] >= 0.95
    assert ma["hyperparameters"]["base_encoder"] == "custom" and ma["command"] is None
    assert isinstance(a, mm.SentenceClassifier) and a.labels == ("sport", "politics", "science")
    # the head really is multinomial logistic regression on the pooled features
    split_features = a.sentence_embeddings(["The striker scored twice."])
    np.testing.assert_allclose(
        np.asarray(split_features @ a.weight.T + a.bias), np.asarray(a(["The striker scored twice."])), atol=1e-5
    )
    assert float(jnp.linalg.norm(split_features)) == pytest.approx(1.0, abs=1e-6)
    assert float(jnp.linalg.norm(a.weight)) > 1.0


def test_train_mnist_vit_paper_from_the_command_line(workdir: Path) -> None:
    """0 epochs: the initialised paper-shape model (2x2 patches, 197 tokens of 48), saved with its record."""
    from manifold_jax.training import MNIST_VIT_PAPER_EPOCHS

    main(["train", "mnist-vit-paper", "--epochs", "0", "--out", "paper"])
    model = mm.load("paper")
    assert model.config == mm.MNIST_VIT and model.config.patch_size == 2
    x0, _ = model.embed(mnist_split(0).test_images[:1])
    assert x0.shape == (1, 197, 48)
    record = json.loads((workdir / "paper" / "training.json").read_text())
    assert record["model"] == "mnist-vit-paper" and record["hyperparameters"]["epochs"] == 0
    assert len(record["test_predictions"]) == 1000
    assert record["test_accuracy"] == np.mean(np.asarray(record["test_predictions"]) == mnist_split(0).test_labels)
    assert training_record("mnist-vit-paper")["hyperparameters"]["epochs"] == MNIST_VIT_PAPER_EPOCHS  # the shipped
