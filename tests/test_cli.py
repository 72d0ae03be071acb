"""The command line: one-line errors with a non-zero exit, and nothing overwritten silently.

Every test runs in a fresh working directory (the ``workdir`` fixture) and names its outputs
with relative paths, as a user does.

Every error case asserts exit status 2, exactly one line on stderr and no traceback.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import numpy as np
import pytest

from manifold_jax.cli import _parser, main
from manifold_jax.study import MnistImage, StudySpec, atomic
from tests.models_helpers import save_random_hf_vit
from tests.study_checks import fails_in_one_line


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("cli_vit")
    save_random_hf_vit(path, image_size=28, patch_size=4, num_channels=1, hidden_size=16,
                       num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, num_labels=3)
    return str(path)


def test_missing_image_file(workdir: Path, capsys: pytest.CaptureFixture[str], tiny_vit: str) -> None:
    fails_in_one_line(["explore", "--model", tiny_vit, "--image", "nope.png", "--out", "o"],
           capsys, "nope.png: file not found")


def test_unknown_model(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fails_in_one_line(["explore", "--model", "no-such-model", "--text", "hello", "--out", "o"],
           capsys, "no-such-model")


def test_selection_out_of_range(workdir: Path, capsys: pytest.CaptureFixture[str], tiny_vit: str) -> None:
    fails_in_one_line(["explore", "--model", tiny_vit, "--mnist", "1", "--select", "3,99", "--steps", "10",
            "--out", "o"], capsys, "position 99 is out of range")


def test_a_file_that_is_not_an_image(workdir: Path, capsys: pytest.CaptureFixture[str], tiny_vit: str) -> None:
    bad = workdir / "notes.png"
    bad.write_text("this is text, not a PNG")
    fails_in_one_line(["explore", "--model", tiny_vit, "--image", str(bad), "--out", "o"],
           capsys, "could not read")


def test_an_image_folder_is_explored_in_name_order(workdir: Path, capsys: pytest.CaptureFixture[str],
                                                   tiny_vit: str) -> None:
    import matplotlib.image as mpimg

    from manifold_jax.data import mnist_images
    from manifold_jax.study import load_study

    images = mnist_images([7, 3, 5])[0]
    digits = workdir / "digits"
    digits.mkdir()
    for name, image in zip(("b.png", "a.png", "c.png"), images, strict=True):
        mpimg.imsave(digits / name, image, cmap="gray", vmin=0.0, vmax=1.0)
    (digits / "notes.txt").write_text("not an image")
    (digits / "sub").mkdir()
    main(["explore", "--model", tiny_vit, "--image-dir", "digits", "--steps", "2", "--save-every", "1",
          "--no-baseline", "--out", "runs/folder"])
    study = load_study("runs/folder")
    assert [Path(str(i.path)).name for i in study.spec.inputs] == ["a.png", "b.png", "c.png"]
    # the same inputs as the files named one by one, in that order
    main(["explore", "--model", tiny_vit, "--image", "digits/a.png", "digits/b.png", "digits/c.png", "--steps", "2",
          "--save-every", "1", "--no-baseline", "--out", "runs/files"])
    np.testing.assert_array_equal(study.inputs["x0"], load_study("runs/files").inputs["x0"])
    empty = workdir / "empty"
    empty.mkdir()
    fails_in_one_line(["explore", "--model", tiny_vit, "--image-dir", "empty", "--out", "o"], capsys,
                      "--image-dir empty: no image file")
    fails_in_one_line(["explore", "--model", tiny_vit, "--image-dir", "nowhere", "--out", "o"], capsys,
                      "--image-dir nowhere: folder not found")


def test_empty_text(workdir: Path, capsys: pytest.CaptureFixture[str], tiny_vit: str) -> None:
    fails_in_one_line(["explore", "--model", tiny_vit, "--text", "   ", "--out", "o"], capsys, "the text is empty")
    empty = workdir / "empty.txt"
    empty.write_text("\n\n")
    fails_in_one_line(["explore", "--model", tiny_vit, "--text-file", str(empty), "--out", "o"],
           capsys, "no non-empty line")


def test_no_inputs_and_bad_option_values(workdir: Path, capsys: pytest.CaptureFixture[str], tiny_vit: str) -> None:
    fails_in_one_line(["explore", "--model", tiny_vit, "--out", "o"], capsys, "no inputs")
    fails_in_one_line(["explore", "--model", tiny_vit, "--mnist", "5000", "--out", "o"], capsys, "images 0..4999")
    fails_in_one_line(["explore", "--model", tiny_vit, "--mnist", "1", "--steps", "15", "--save-every", "10",
            "--out", "o"], capsys, "multiple of save_every")
    with pytest.raises(SystemExit) as exit_info:
        main(["explore", "--select", "half"])
    assert exit_info.value.code == 2  # argparse's own usage error


def test_existing_output_is_kept_without_overwrite(workdir: Path, capsys: pytest.CaptureFixture[str],
                                                     tiny_vit: str) -> None:
    out = workdir / "o"
    out.mkdir()
    keep = out / "notes.txt"
    keep.write_text("earlier results")
    fails_in_one_line(["explore", "--model", tiny_vit, "--mnist", "1", "--steps", "10", "--out", str(out)], capsys,
                      "--overwrite")
    assert keep.read_text() == "earlier results"
    fails_in_one_line(["demo", "--out", str(out)], capsys, "--overwrite")
    assert keep.read_text() == "earlier results"
    main(["explore", "--model", tiny_vit, "--mnist", "1", "--steps", "10", "--save-every", "5", "--out", str(out),
          "--overwrite", "--quiet", "--no-baseline"])
    assert not keep.exists() and (out / "report.md").is_file()


def test_resume_of_a_directory_without_a_study(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fails_in_one_line(["explore", "--resume", "."], capsys, "spec.json is missing")
    fails_in_one_line(["report", "."], capsys, "not a study directory")


def test_train_topic_head_from_the_command_line(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fails_in_one_line(["train", "minilm-topics", "--epochs", "3", "--out", "a"], capsys,
           "--epochs applies to mnist-vit")
    main(["train", "minilm-topics", "--out", "head"])
    assert {p.name for p in (workdir / "head").iterdir()} >= {"config.json", "training.json"}
    assert "'test_accuracy'" in capsys.readouterr().out


# --------------------------------------------------------------------------- typed inputs


def test_an_input_of_the_wrong_kind_names_the_model_kind(workdir: Path, capsys: pytest.CaptureFixture[str],
                                                          tiny_vit: str) -> None:
    fails_in_one_line(["explore", "--model", tiny_vit, "--text", "mnist:5", "--out", "o"], capsys,
           f"error: --text 'mnist:5': {tiny_vit} is an image model; give --mnist, --image or --image-dir")
    fails_in_one_line(["explore", "--model", "minilm-topics", "--mnist", "3", "--out", "o"], capsys,
           "error: --mnist 3: minilm-topics is a text model; give --text or --text-file")
    assert not (workdir / "o").exists()


def test_a_mistyped_model_names_the_embedded_ones(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = fails_in_one_line(["explore", "--model", "mnist_vit", "--mnist", "3", "--out", "o"], capsys,
                 "embedded models: mnist-vit, mnist-vit-paper, minilm-topics. Did you mean 'mnist-vit'?")
    assert err.count("(") == err.count(")"), err


def test_an_unquoted_sentence_is_warned_about(workdir: Path, capsys: pytest.CaptureFixture[str], tiny_vit: str) -> None:
    """--text The striker scored twice. gives four one-word texts: one warning line says so (the image
    model then refuses them, which ends the command early)."""
    with pytest.raises(SystemExit):
        main(["explore", "--model", tiny_vit, "--text", "The", "striker", "scored", "twice.", "--out", "o"])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "warning: --text got 4 one-word texts ('The striker scored twice.')" in err[0], err
    with pytest.raises(SystemExit):
        main(["explore", "--model", tiny_vit, "--text", "One sentence.", "Another one.", "--out", "o"])
    assert "warning" not in capsys.readouterr().err


def test_select_must_not_repeat_a_position(workdir: Path, capsys: pytest.CaptureFixture[str], tiny_vit: str) -> None:
    fails_in_one_line(["explore", "--model", tiny_vit, "--mnist", "1", "--select", "3,3", "--out", "o"],
           capsys, "argument --select: '3,3' repeats position(s) 3")


# --------------------------------------------------------------------------- resume


def test_resume_refuses_what_would_change_the_study(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    study = workdir / "s"
    study.mkdir()
    spec = StudySpec(model="m", inputs=(MnistImage(1),), steps=100, options={"save_every": 10})
    (study / "spec.json").write_text(spec.to_json())
    for flags in (["--eta", "3"], ["--model", "mnist-vit"], ["--out", "x"], ["--mnist", "2"],
                  ["--option", "mode=rev"], ["--space", "pixels"]):
        fails_in_one_line(["explore", "--resume", str(study), *flags], capsys,
               f"continues the study as its spec.json says; {flags[0]} cannot change it")
    fails_in_one_line(["explore", "--resume", str(study), "--steps", "50"], capsys,
           f"--steps 50: the study in {study} has 100 steps; --resume can only continue it to more")


# --------------------------------------------------------------------------- files and disks


def test_out_on_a_file_and_a_full_or_read_only_disk(workdir: Path, capsys: pytest.CaptureFixture[str], tiny_vit: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    afile = workdir / "results.txt"
    afile.write_text("not a directory")
    fails_in_one_line(["explore", "--model", tiny_vit, "--mnist", "1", "--steps", "10", "--out", str(afile)], capsys,
           f"error: --out {afile}: it is a file, not a directory")
    for code, says in ((errno.ENOSPC, "no space left on the device"), (errno.EROFS, "the file system is read-only")):
        def failing(temporary: Path, path: Path, code: int = code) -> None:
            raise OSError(code, "os message", str(path))

        monkeypatch.setattr(atomic, "commit", failing)
        out = workdir / f"o{code}"
        fails_in_one_line(["explore", "--model", tiny_vit, "--mnist", "1", "--steps", "10", "--save-every", "5",
                "--out", str(out)], capsys, f"error: {out}/spec.json: {says}")
        assert not out.exists(), "the run removes the directory it created"


def test_broken_checkpoints_are_named_in_one_line(workdir: Path, capsys: pytest.CaptureFixture[str],
                                                  tiny_vit: str) -> None:
    def broken(name: str) -> Path:
        path = workdir / name
        shutil.copytree(tiny_vit, path)
        return path

    corrupt = broken("corrupt")
    (corrupt / "model.safetensors").write_bytes(b"\x00\x01garbage" * 10)
    fails_in_one_line(["explore", "--model", str(corrupt), "--mnist", "1", "--out", "o"], capsys,
           f"{corrupt}/model.safetensors: not a readable safetensors file")
    bad_json = broken("bad_json")
    (bad_json / "config.json").write_text('{"model_type": "vit", ')
    fails_in_one_line(["explore", "--model", str(bad_json), "--mnist", "1", "--out", "o"], capsys,
           f"{bad_json}/config.json: not valid JSON")
    torch = pytest.importorskip("torch")
    pickled = broken("pickled")
    (pickled / "model.safetensors").unlink()
    torch.save({"weight": torch.zeros(2), "payload": _Payload()}, pickled / "pytorch_model.bin")
    fails_in_one_line(["explore", "--model", str(pickled), "--mnist", "1", "--out", "o"], capsys,
           f"{pickled}/pytorch_model.bin: refused: the pickle holds objects beyond tensors")
    with pytest.raises(Exception, match=r"not valid JSON|Expecting"):
        main(["explore", "--model", str(bad_json), "--mnist", "1", "--out", "o", "--debug"])


class _Payload:
    """An object a weights-only unpickler must refuse (it would run ``print`` when loaded)."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("this must never run",))


def test_numbers_out_of_range_are_one_line_errors(workdir: Path, capsys: pytest.CaptureFixture[str],
                                                   tiny_vit: str) -> None:
    common = ["explore", "--model", tiny_vit, "--mnist", "1", "--out", "o"]
    fails_in_one_line([*common, "--steps", "1e11"], capsys, "argument --steps: invalid int value: '1e11'")
    fails_in_one_line([*common, "--steps", "100000000000"], capsys, "steps must be an integer in 1..2147483647")
    fails_in_one_line([*common, "--seed", "4294967296"], capsys, "seed must be an integer in 0..4294967295")
    fails_in_one_line([*common, "--eta", "1e400"], capsys, "eta must be a positive finite number")
    fails_in_one_line([*common, "--option", "bogus=1"], capsys, "options: unknown engine option(s) 'bogus'")


def test_the_engine_flags_are_the_config_fields_with_a_help_text(capsys: pytest.CaptureFixture[str]) -> None:
    """Each ExploreConfig field whose metadata has a help text is a flag (its choices, its type); the
    others go through --option; the help shows the study's defaults."""
    from manifold_jax.study.run_config import ENGINE_FIELDS, STUDY_DEFAULTS

    subcommands = next(a for a in _parser()._actions if a.dest == "command")
    explore = subcommands.choices["explore"]  # type: ignore[attr-defined]
    actions = {a.dest: a for a in explore._actions}
    flagged = [f for f in ENGINE_FIELDS if "help" in f.metadata]
    assert {"eta", "threshold", "step_rule", "save_every", "corrector", "tol", "stop"} <= {f.name for f in flagged}
    for f in ENGINE_FIELDS:
        if "help" not in f.metadata:
            assert f.name not in actions, f.name
            continue
        action = actions[f.name]
        assert action.default is None and action.help.startswith(f.metadata["help"])
        if "choices" in f.metadata:
            assert tuple(action.choices) == tuple(f.metadata["choices"])
    assert f"(default {STUDY_DEFAULTS['save_every']})" in actions["save_every"].help
    parse = explore.parse_args
    assert parse(["--threshold", "reference"]).threshold == "reference"
    assert parse(["--threshold", "1e-3", "--tol", "1e-5"]).threshold == 1e-3
    fails_in_one_line(["explore", "--threshold", "loose"], capsys, "argument --threshold: 'loose': a number")


def test_parser_choices_come_from_the_library() -> None:
    from manifold_jax.explore import ALGORITHMS, STEP_RULES
    from manifold_jax.geometry import BLOCKS, METHODS
    from manifold_jax.output_metrics import OUTPUT_METRICS
    from manifold_jax.study import BOUNDS, TASKS

    explore = _parser().parse_args(["explore"])  # the defaults are None: the library fills them in
    assert all(getattr(explore, name) is None for name in ("steps", "eta", "select", "spectrum", "threshold"))
    subcommands = next(a for a in _parser()._actions if a.dest == "command")
    actions = {a.dest: a for a in subcommands.choices["explore"]._actions}  # type: ignore[attr-defined]
    assert tuple(actions["spectrum"].choices) == METHODS
    assert tuple(actions["step_rule"].choices) == STEP_RULES
    assert tuple(actions["bounds"].choices) == BOUNDS
    assert tuple(actions["blocks"].choices) == BLOCKS
    assert tuple(actions["task"].choices) == TASKS
    assert tuple(actions["output_metric"].choices) == tuple(OUTPUT_METRICS)
    assert tuple(actions["algorithm"].choices) == (*ALGORITHMS, "both")
