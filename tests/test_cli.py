"""The command line: one-line errors with a non-zero exit, and nothing overwritten silently."""

from __future__ import annotations

from pathlib import Path

import pytest

from manifold_jax.cli import main
from tests.models_helpers import save_random_hf_vit


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("cli_vit")
    save_random_hf_vit(path, image_size=28, patch_size=4, num_channels=1, hidden_size=16,
                       num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, num_labels=3)
    return str(path)


def _fails(argv: list[str], capsys: pytest.CaptureFixture[str], pattern: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, f"expected a one-line error, got:\n{err}"
    assert pattern in err, err
    return err


def test_missing_image_file(tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_vit: str) -> None:
    _fails(["explore", "--model", tiny_vit, "--image", str(tmp_path / "nope.png"), "--out", str(tmp_path / "o")],
           capsys, "nope.png: file not found")


def test_unknown_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _fails(["explore", "--model", str(tmp_path / "no-such-model"), "--text", "hello", "--out", str(tmp_path / "o")],
           capsys, "no-such-model")


def test_selection_out_of_range(tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_vit: str) -> None:
    _fails(["explore", "--model", tiny_vit, "--mnist", "1", "--select", "3,99", "--steps", "10",
            "--out", str(tmp_path / "o")], capsys, "position 99 is out of range")


def test_a_file_that_is_not_an_image(tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_vit: str) -> None:
    bad = tmp_path / "notes.png"
    bad.write_text("this is text, not a PNG")
    _fails(["explore", "--model", tiny_vit, "--image", str(bad), "--out", str(tmp_path / "o")],
           capsys, "could not read")


def test_empty_text(tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_vit: str) -> None:
    _fails(["explore", "--model", tiny_vit, "--text", "   ", "--out", str(tmp_path / "o")], capsys, "input 0 is empty")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    _fails(["explore", "--model", tiny_vit, "--text-file", str(empty), "--out", str(tmp_path / "o")],
           capsys, "no non-empty line")


def test_no_inputs_and_bad_option_values(tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_vit: str) -> None:
    _fails(["explore", "--model", tiny_vit, "--out", str(tmp_path / "o")], capsys, "no inputs")
    _fails(["explore", "--model", tiny_vit, "--mnist", "5000", "--out", str(tmp_path / "o")], capsys, "images 0..4999")
    _fails(["explore", "--model", tiny_vit, "--mnist", "1", "--steps", "15", "--save-every", "10",
            "--out", str(tmp_path / "o")], capsys, "multiple of save_every")
    with pytest.raises(SystemExit) as exit_info:
        main(["explore", "--select", "half"])
    assert exit_info.value.code == 2  # argparse's own usage error


def test_existing_output_is_kept_without_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_vit: str) -> None:
    out = tmp_path / "o"
    out.mkdir()
    keep = out / "notes.txt"
    keep.write_text("earlier results")
    _fails(["explore", "--model", tiny_vit, "--mnist", "1", "--steps", "10", "--out", str(out)], capsys, "--overwrite")
    assert keep.read_text() == "earlier results"
    _fails(["demo", "--out", str(out)], capsys, "--overwrite")
    assert keep.read_text() == "earlier results"
    main(["explore", "--model", tiny_vit, "--mnist", "1", "--steps", "10", "--save-every", "5", "--out", str(out),
          "--overwrite", "--quiet", "--no-baseline"])
    assert not keep.exists() and (out / "report.md").is_file()


def test_resume_of_a_directory_without_a_study(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _fails(["explore", "--resume", str(tmp_path)], capsys, "spec.json is missing")
    _fails(["report", str(tmp_path)], capsys, "not a study directory")


def test_train_topic_head_from_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _fails(["train", "minilm-topics", "--epochs", "3", "--out", str(tmp_path / "a")], capsys, "--epochs applies to mnist-vit")
    main(["train", "minilm-topics", "--out", str(tmp_path / "head")])
    assert {p.name for p in (tmp_path / "head").iterdir()} >= {"config.json", "training.json"}
    assert "'test_accuracy'" in capsys.readouterr().out
