"""``load()``: dispatch, weight formats, and the errors that name what is wrong."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

import manifold_jax.models as mm
from manifold_jax.models.weights import flatten
from tests.models_helpers import SENTENCES, minilm_dir, save_random_bert, save_random_hf_vit


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("bert_cls")
    save_random_bert(directory, "BertForSequenceClassification")
    return directory


def _edit_weights(src: Path, dst: Path, edit: Callable[[dict[str, np.ndarray]], object]) -> Path:
    """Copy the checkpoint directory src to dst with ``edit(weights)`` applied to its tensors."""
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.name != "model.safetensors":
            (dst / f.name).write_bytes(f.read_bytes())
    weights = load_file(src / "model.safetensors")
    edit(weights)
    save_file(weights, dst / "model.safetensors")
    return dst


def test_unknown_model_type_lists_the_supported_ones(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5"}))
    with pytest.raises(mm.UnsupportedModelError,
                       match=r"'t5'.*bert, roberta, distilbert, gpt2, vit, deit, manifold_vit"):
        mm.load(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["X"]}))
    with pytest.raises(mm.UnsupportedModelError, match=r"no model_type.*bert"):
        mm.load(tmp_path)


def test_unknown_task_is_named(bert_dir: Path) -> None:
    with pytest.raises(mm.UnsupportedModelError, match=r"'summarise'.*classification, mlm, encoder"):
        mm.load(bert_dir, task="summarise")


def test_missing_weight_is_named(bert_dir: Path, tmp_path: Path) -> None:
    name = "bert.encoder.layer.1.output.dense.weight"
    broken = _edit_weights(bert_dir, tmp_path, lambda w: w.pop(name))
    with pytest.raises(mm.MissingWeightsError, match=r"encoder\.layer\.1\.output\.dense\.weight") as err:
        mm.load(broken)
    assert not isinstance(err.value, mm.MissingHeadError)


def test_unexpected_weights_are_named(bert_dir: Path, tmp_path: Path) -> None:
    def add(w: dict) -> None:
        w["bert.encoder.layer.0.attention.self.rotary.weight"] = np.zeros((2, 2), np.float32)
        w["bert.encoder.layer.7.output.dense.bias"] = np.zeros((32,), np.float32)  # only 2 layers

    broken = _edit_weights(bert_dir, tmp_path, add)
    with pytest.raises(mm.UnexpectedWeightsError, match=r"layer\.0\.attention\.self\.rotary\.weight.*layer\.7\.output"):
        mm.load(broken)


def test_shape_mismatch_names_weight_expected_and_got(bert_dir: Path, tmp_path: Path) -> None:
    def shrink(w: dict) -> None:
        w["bert.encoder.layer.0.intermediate.dense.weight"] = np.zeros((48, 32), np.float32)

    broken = _edit_weights(bert_dir, tmp_path, shrink)
    with pytest.raises(
        mm.ShapeMismatchError, match=r"layer\.0\.intermediate\.dense\.weight.*expected \(32, 64\), got \(32, 48\)"
    ):
        mm.load(broken)


def test_missing_head_raises_unless_initialised_on_request() -> None:
    with pytest.raises(mm.MissingHeadError, match=r"classifier\.weight.*init_missing_head=True"):
        mm.load(minilm_dir(), task="classification")
    with pytest.raises(mm.MissingHeadError, match=r"cls\.predictions\.transform\.dense\.weight"):
        mm.load(minilm_dir(), task="mlm")
    with pytest.warns(UserWarning, match=r"classifier\.weight.*classifier\.bias|classifier\.bias.*classifier\.weight"):
        model = mm.load(minilm_dir(), task="classification", init_missing_head=True, num_labels=3,
                        key=jax.random.key(0))
    assert model.labels == ("LABEL_0", "LABEL_1", "LABEL_2")
    x0, ctx = model.embed(SENTENCES[:2])
    assert jax.vmap(model.head)(x0, ctx).shape == (2, 3)
    # the pooler was in the checkpoint: loaded, not re-initialised
    encoder = mm.load(minilm_dir(), task="encoder")
    np.testing.assert_array_equal(np.asarray(model.params["embeddings"]["word"]["embedding"]),
                                  np.asarray(encoder.params["embeddings"]["word"]["embedding"]))
    reference = load_file(Path(minilm_dir()) / "model.safetensors")
    np.testing.assert_array_equal(np.asarray(model.params["pooler"]["kernel"]), reference["pooler.dense.weight"].T)
    with pytest.raises(ValueError, match="key"):
        mm.load(minilm_dir(), task="classification", init_missing_head=True, num_labels=3)


def test_unprefixed_and_prefixed_names_load_the_same(bert_dir: Path, tmp_path: Path) -> None:
    def strip(w: dict) -> None:
        for name in [n for n in w if n.startswith("bert.")]:
            w[name[len("bert.") :]] = w.pop(name)

    stripped = _edit_weights(bert_dir, tmp_path, strip)
    a, b = mm.load(bert_dir), mm.load(stripped)
    jax.tree.map(np.testing.assert_array_equal, a.params, b.params)


def test_pytorch_bin_loads_like_safetensors(tmp_path: Path) -> None:
    safe = tmp_path / "safe"
    torch_model = save_random_hf_vit(safe)
    binary = tmp_path / "bin"
    binary.mkdir()
    (binary / "config.json").write_text((safe / "config.json").read_text())
    torch.save(torch_model.state_dict(), binary / "pytorch_model.bin")
    a, b = mm.load(safe), mm.load(binary)
    jax.tree.map(np.testing.assert_array_equal, a.params, b.params)


def test_no_weights_and_no_directory_are_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "manifold_vit"}))
    with pytest.raises(mm.WeightsNotFoundError, match=r"model\.safetensors"):
        mm.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a checkpoint directory"):
        mm.load(tmp_path / "nowhere")


def test_local_directories_never_touch_the_hub(bert_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the hub was contacted for a local directory")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert isinstance(mm.load(bert_dir), mm.Bert)


def test_unknown_names_name_the_embedded_models_without_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """A near miss of an embedded name and a name that is no hub id are refused in one line naming the
    embedded models, without contacting the hub; offline, a hub id is looked up in the local cache only."""
    import huggingface_hub

    calls: list[dict[str, object]] = []

    def offline_snapshot(*args: object, **kwargs: object) -> None:
        calls.append(kwargs)
        raise OSError("not in the cache\n(a second line)")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline_snapshot)
    for name in ("mnist_vit", "Minilm_Topics", "not a model!"):
        with pytest.raises(FileNotFoundError) as err:
            mm.load(name)
        message = str(err.value)
        assert "\n" not in message and "mnist-vit, mnist-vit-paper, minilm-topics" in message, message
    assert calls == []
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match=r"cannot be reached.*mnist-vit, mnist-vit-paper, minilm-topics") as err:
        mm.load("some-org/some-model")
    assert "\n" not in str(err.value) and [c["local_files_only"] for c in calls] == [True]


def test_manifold_vit_missing_head_and_num_labels(tmp_path: Path) -> None:
    model = mm.ViT.create(mm.MNIST_VIT, jax.random.key(0), task="encoder")
    model.save(tmp_path)
    with pytest.raises(mm.MissingHeadError, match=r"classifier\.kernel"):
        mm.load(tmp_path)
    with pytest.warns(UserWarning, match=r"classifier"):
        clf = mm.load(tmp_path, init_missing_head=True, num_labels=4, key=jax.random.key(1))
    assert clf.labels == ("0", "1", "2", "3") and clf.params["classifier"]["kernel"].shape == (48, 4)
    assert set(flatten(clf.params)) - set(flatten(model.params)) == {"classifier/kernel", "classifier/bias"}


def test_raw_mlm_state_dict_with_tied_decoder_loads_and_untied_is_refused(tmp_path: Path) -> None:
    """A raw ``state_dict()`` of BertForMaskedLM carries the tied decoder copies
    (``cls.predictions.decoder.weight`` / ``.bias``): accepted when tied, refused when not."""
    safe = tmp_path / "safe"
    torch_model = save_random_bert(safe, "BertForMaskedLM")
    state = torch_model.state_dict()
    assert "cls.predictions.decoder.weight" in state
    tied = tmp_path / "tied"
    tied.mkdir()
    for f in safe.iterdir():
        if f.name != "model.safetensors":
            (tied / f.name).write_bytes(f.read_bytes())
    torch.save(state, tied / "pytorch_model.bin")
    a, b = mm.load(safe, task="mlm"), mm.load(tied, task="mlm")
    jax.tree.map(np.testing.assert_array_equal, a.params, b.params)
    state = {k: v.clone() for k, v in state.items()}
    state["cls.predictions.decoder.weight"] += 1.0
    torch.save(state, tied / "pytorch_model.bin")
    with pytest.raises(mm.UnsupportedModelError, match=r"cls\.predictions\.decoder\.weight.*untied"):
        mm.load(tied, task="mlm")
