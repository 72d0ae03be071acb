"""Reliability: nothing outside a study is touched, no study gets stuck, every error is named.

One small reference study (a tiny random HF ViT, two MNIST digits, 20 steps in chunks of 10,
labels that carry HTML) is run once; every damaged, attacked or killed copy must come back to
it bit for bit, or be refused in one line without touching anything outside the study.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import manifold_jax as mj
from manifold_jax.cli import main
from manifold_jax.explore import Adaptive, ExploreConfig
from manifold_jax.explore.problem import replace_state
from manifold_jax.report import build_report, markdown_text
from manifold_jax.study import (
    MnistImage,
    StudyDamagedError,
    StudySpec,
    Text,
    TextTooLongError,
    atomic,
    load_study,
    prepare,
    run_study,
)
from manifold_jax.study.errors import OutsideStudyError
from manifold_jax.study.manifest import Manifest
from tests.models_helpers import save_random_family, save_random_gpt2, save_random_hf_vit
from tests.study_checks import fails_in_one_line, same_results

pytestmark = pytest.mark.xdist_group("study")

ROOT = Path(__file__).resolve().parents[1]
CRASH = Path(__file__).resolve().parent / "crash_run.py"
KILLED = 137
LABELS = ("<script>alert(0)</script>", "<img src=x onerror=alert(1)>", "<b>a|b</b>", "[x](javascript:alert(3))")
"""Class names carrying HTML and a link: whichever class the report names, it must name it inert."""
OPTIONS = {"eta": 5.0, "save_every": 5, "chunk_size": 10}


def quiet(_: str) -> None:
    return None


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("rel_vit")
    save_random_hf_vit(path, image_size=28, patch_size=4, num_channels=1, hidden_size=16,
                       num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, num_labels=4)
    return str(path)


def _spec(model: str, **kw: object) -> StudySpec:
    base: dict[str, object] = dict(model=model, inputs=(MnistImage(0), MnistImage(1000)), steps=20, select="q3",
                                   options=OPTIONS, labels=LABELS)
    base.update(kw)
    return StudySpec(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def whole(tiny_vit: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference study, run uninterrupted and reported."""
    out = tmp_path_factory.mktemp("rel_whole") / "study"
    run_study(_spec(tiny_vit), out, progress=False, echo=quiet)
    build_report(out, echo=quiet)
    return out


def _copy(whole: Path, where: Path) -> Path:
    out = where / "study"
    shutil.copytree(whole, out)
    return out


def _tree(root: Path) -> dict[str, bytes | None]:
    """Every entry under ``root`` (links not followed) with its bytes (None for a folder)."""
    out: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            out[os.path.relpath(os.path.join(dirpath, name), root)] = None
        for name in filenames:
            out[os.path.relpath(os.path.join(dirpath, name), root)] = Path(dirpath, name).read_bytes()
    return out


def _crash(what: str, count: int, argv: list[str], **env_vars: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a subprocess that dies like kill -9 at the count-th write of ``what``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **env_vars}
    return subprocess.run([sys.executable, str(CRASH), what, str(count), "--", *argv], env=env,
                          capture_output=True, text=True, timeout=600)


# --------------------------------------------------------------------------- 1. symbolic links


def _outside(where: Path) -> Path:
    """A folder of the user's beside the study: files, a subfolder, numbered folders, an orbax-like name."""
    outside = where / "outside"
    (outside / "notes").mkdir(parents=True)
    (outside / "important.txt").write_text("keep me")
    (outside / "notes" / "n.txt").write_text("mine")
    (outside / "7").mkdir()
    (outside / "7" / "data").write_text("numbered")
    (outside / "20.orbax-checkpoint-tmp-1").mkdir()
    return outside


def test_a_resume_never_deletes_through_a_linked_checkpoints_folder(
    whole: Path, workdir: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """simec/checkpoints replaced by a link to a folder of the user's: the resume refuses in one
    line and the folder keeps every file (before: it was emptied)."""
    out = _copy(whole, workdir / "runs")
    outside = _outside(workdir)
    before = _tree(outside)
    for rel in ("simec/trajectory.npz", "simec/chunks/00000020.npz"):  # the resume must go through the checkpoints
        (out / rel).unlink()
    shutil.rmtree(out / "simec" / "checkpoints")
    (out / "simec" / "checkpoints").symlink_to(Path("../../../outside"), target_is_directory=True)
    assert (out / "simec" / "checkpoints" / "important.txt").is_file()
    fails_in_one_line(["explore", "--resume", "runs/study", "--quiet", "--no-report"], capsys,
           "simec/checkpoints: a symbolic link leads out of the study")
    with pytest.raises(OutsideStudyError):
        run_study(None, out, resume=True, progress=False, echo=quiet)
    assert _tree(outside) == before


def test_a_resume_deletes_only_its_own_files_in_its_checkpoints_folder(whole: Path, tmp_path: Path) -> None:
    """A file and a folder of the user's inside a real checkpoints folder stay; orbax's leftover goes."""
    out = _copy(whole, tmp_path)
    checkpoints = out / "simec" / "checkpoints"
    (checkpoints / "important.txt").write_text("keep me")
    (checkpoints / "notes").mkdir()
    (checkpoints / "notes" / "n.txt").write_text("mine")
    (checkpoints / "20.orbax-checkpoint-tmp-1").mkdir()
    (out / "simec/trajectory.npz").unlink()
    run_study(None, out, resume=True, progress=False, echo=quiet)
    assert (checkpoints / "important.txt").read_text() == "keep me"
    assert (checkpoints / "notes" / "n.txt").read_text() == "mine"
    assert not (checkpoints / "20.orbax-checkpoint-tmp-1").exists()
    same_results(whole, out)


def test_linked_figures_and_run_folders_receive_nothing(whole: Path, tmp_path: Path) -> None:
    out = _copy(whole, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.rmtree(out / "figures")
    (out / "figures").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(OutsideStudyError, match="figures"):
        build_report(out, echo=quiet)
    assert list(elsewhere.iterdir()) == []
    # a run folder moved out and linked back: the resume neither reads, writes nor deletes there
    moved = tmp_path / "simexp_elsewhere"
    shutil.move(out / "simexp", moved)
    (moved / "trajectory.npz").unlink()
    before = _tree(moved)
    (out / "simexp").symlink_to(moved, target_is_directory=True)
    with pytest.raises(OutsideStudyError, match="simexp"):
        run_study(None, out, resume=True, progress=False, echo=quiet)
    assert _tree(moved) == before
    # a link that stays inside the study is followed
    (out / "simexp").unlink()
    shutil.move(moved, out / "simexp_real")
    (out / "simexp").symlink_to(Path("simexp_real"), target_is_directory=True)
    (out / "figures").unlink()
    run_study(None, out, resume=True, progress=False, echo=quiet)
    same_results(whole, out)


# --------------------------------------------------------------------------- 2. the last chunk, then a kill


def test_a_kill_between_the_last_chunk_and_the_trajectory_writes_no_nan(
    whole: Path, workdir: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """Every chunk written, then killed before trajectory.npz: the resume times nothing, so it writes
    no timing (before: seconds_per_iteration NaN, and every report failed); the report works."""
    out = _copy(whole, workdir)
    for rel in ("simec/trajectory.npz", "simec/timing.json", "simec/baseline.npz", "simec/interpretation.npz"):
        (out / rel).unlink()
    lines: list[str] = []
    run_study(None, out, resume=True, progress=False, echo=lines.append)
    assert "simec: resuming at iteration 20 of 20" in lines, lines
    assert not (out / "simec/timing.json").exists()
    metrics = build_report(out, echo=quiet)
    assert "timing" not in metrics["inputs"][0]["simec"]
    assert metrics["inputs"][0]["simexp"]["timing"]["total_seconds"] > 0
    same_results(whole, out)
    # a NaN timing written by an earlier version (and recorded): report names it, a resume repairs it
    files = Manifest.load(out)
    atomic.write_text(out / "simec/timing.json", '{"seconds_per_iteration": NaN, '
                                                  '"seconds_per_iteration_per_token": NaN}')
    files.record(out / "simec/timing.json")
    fails_in_one_line(["report", "study", "--no-figures"], capsys,
           "simec/timing.json: seconds_per_iteration must be a finite number >= 0, got nan; rebuild it with: "
           "manifold-jax explore --resume")
    lines.clear()
    run_study(None, out, resume=True, progress=False, echo=lines.append)
    assert ("simec/timing.json: seconds_per_iteration must be a finite number >= 0, got nan; removed (the report "
            "shows no timing for this run)") in lines, lines
    build_report(out, figures=False, echo=quiet)


# --------------------------------------------------------------------------- 3. the manifest checks itself


def test_a_flipped_character_in_the_manifest_is_detected_and_rebuilt(
    whole: Path, workdir: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    out = _copy(whole, workdir)
    path = out / "manifest.json"
    text = path.read_text()
    recorded = json.loads(text)["files"]["spec.json"]
    flipped = recorded[:10] + ("0" if recorded[10] != "0" else "1") + recorded[11:]
    path.write_text(text.replace(recorded, flipped))
    assert json.loads(path.read_text())["files"]["spec.json"] == flipped  # still valid JSON, one character off
    with pytest.raises(StudyDamagedError, match=r"manifest\.json: fails its own checksum"):
        load_study(out)
    fails_in_one_line(["report", "study"], capsys,
                      "manifest.json: fails its own checksum (it changed after it was written); "
                      "rebuild it with: manifold-jax explore --resume")
    lines: list[str] = []
    run_study(None, out, resume=True, progress=False, echo=lines.append)
    assert ("manifest.json fails its own checksum (it changed after it was written); rebuilt from the files that "
            "verify by loading") in lines, lines
    same_results(whole, out)
    rebuilt = Manifest.load(out)
    assert not rebuilt.damaged
    for rel in ("spec.json", "inputs.npz", "simec/trajectory.npz", "simexp/interpretation.npz"):
        assert rebuilt.check(out / rel) == "ok", rel
    # damage found after the rebuild is still damage
    data = bytearray((out / "simec/trajectory.npz").read_bytes())
    data[len(data) // 2] ^= 0x10
    (out / "simec/trajectory.npz").write_bytes(bytes(data))
    with pytest.raises(StudyDamagedError, match=r"simec/trajectory\.npz: the file fails its checksum"):
        load_study(out)


# --------------------------------------------------------------------------- 4. validate, then write


def test_pixels_with_measured_bounds_are_refused_before_anything_is_written(
    tiny_vit: str, workdir: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    fails_in_one_line(["explore", "--model", tiny_vit, "--mnist", "0", "--steps", "10", "--space", "pixels", "--bounds",
            "measured", "--out", "runs/x", "--quiet"], capsys,
           "bounds='measured' is measured on embeddings; in space='pixels'")
    assert not (workdir / "runs").exists()


def test_an_engine_check_fails_before_the_first_write(tiny_vit: str, workdir: Path) -> None:
    """The box pins a selected token (lo == hi there): before, spec.json, inputs.npz and simec/ were
    written and every resume repeated the error; now nothing is written."""
    from manifold_jax.study import inputs as study_inputs

    real = study_inputs.study_bounds

    def pinned(model: object, spec: StudySpec, x0: jax.Array) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = real(model, spec, x0)  # type: ignore[misc]
        hi = hi.copy()
        hi[:] = lo
        return lo, hi

    study_inputs.study_bounds = pinned  # type: ignore[assignment]
    try:
        with pytest.raises(ValueError, match="lo == hi at every coordinate of selected token"):
            run_study(_spec(tiny_vit), "runs/x", progress=False, echo=quiet)
    finally:
        study_inputs.study_bounds = real
    assert not (workdir / "runs" / "x").exists()


# --------------------------------------------------------------------------- 5. one length rule


@pytest.fixture(scope="module")
def tiny_roberta(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A random RoBERTa classifier with 8 position rows: 6 tokens (<s> ... </s>), positions start at pad + 1 = 2."""
    path = tmp_path_factory.mktemp("rel_roberta")
    save_random_family(path, "RobertaForSequenceClassification", max_position_embeddings=8)
    return str(path)


def test_a_roberta_text_is_refused_or_explored_whole_never_cut_silently(tiny_roberta: str) -> None:
    from manifold_jax.models import load

    model = load(tiny_roberta)
    tok = model.tokenizer
    words = ["a", "b", "c", "d", "e", "f", "g", "h"]  # one token each
    texts = {len(tok(" ".join(words[:i]))["input_ids"]): " ".join(words[:i]) for i in range(1, len(words) + 1)}
    fits, over = texts[6], texts[7]  # 6 tokens: what the model takes; 7: one more (it fits the 8 position rows)

    def spec(text: str, **kw: object) -> StudySpec:
        return StudySpec(model=tiny_roberta, inputs=(Text(text),), steps=10, options={"save_every": 10},
                         runs=("simec",), **kw)  # type: ignore[arg-type]

    prepared = prepare(spec(fits))
    ids = np.asarray(prepared.ctx["input_ids"])[0]
    np.testing.assert_array_equal(ids, tok(fits)["input_ids"])  # whole: its end is kept
    with pytest.raises(TextTooLongError, match="input 0 has 7 tokens, more than the 6 the model takes"):
        prepare(spec(over))
    with pytest.warns(UserWarning, match="cut from 7 to 6 tokens"):
        prepare(spec(over, max_length=6))
    with pytest.raises(ValueError, match="max_length=7 exceeds the 6 positions"):
        prepare(spec(over, max_length=7))


def test_a_word_on_a_model_with_two_positions_is_refused_by_its_length(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """Before: "hello" became <s></s> and the error spoke of an empty selection."""
    save_random_family(tmp_path / "m", "RobertaForSequenceClassification", max_position_embeddings=4)
    fails_in_one_line(["explore", "--model", str(tmp_path / "m"), "--text", "hello", "--steps", "10", "--out",
            str(tmp_path / "o")], capsys, "tokens, more than the 2 the model takes")
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- 6. every error named


def test_cli_model_config_errors_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = tmp_path / "gpt2"
    save_random_gpt2(base)
    for name, value, says in (("n_layer", "1", "config.json: TypeError: Field 'n_layer' expected int"),
                              ("n_positions", 0, "config.json: n_positions must be a positive integer, got 0")):
        model = tmp_path / name
        shutil.copytree(base, model)
        config = json.loads((model / "config.json").read_text())
        config[name] = value
        (model / "config.json").write_text(json.dumps(config))
        fails_in_one_line(["explore", "--model", str(model), "--text", "the game", "--steps", "10", "--out",
                str(tmp_path / "o")], capsys, says)
    bare = tmp_path / "bare"
    save_random_gpt2(bare, tokenizer=False)
    err = fails_in_one_line(["explore", "--model", str(bare), "--text", "the game", "--steps", "10", "--out",
                  str(tmp_path / "o")], capsys, "has no tokenizer (tokenizer.json, or vocab.txt, or vocab.json")
    assert "embed_ids" not in err


def _toy() -> tuple[object, jax.Array, jax.Array]:
    w = jax.random.normal(jax.random.PRNGKey(3), (8, 2))

    def f(x: jax.Array) -> jax.Array:
        return jnp.tanh(x.reshape(-1) @ w)

    x0 = jax.random.normal(jax.random.PRNGKey(4), (2, 4))
    return f, x0, jax.random.PRNGKey(5)


def test_api_errors_name_the_argument() -> None:
    f, x0, key = _toy()
    fixed = {"steps": 2, "key": key, "step_rule": "fixed"}
    with pytest.raises(ValueError, match="goal equals x0 on the selected tokens"):
        mj.simec(f, x0, goal=x0, **fixed)
    with pytest.raises(ValueError, match=r"goal lies 2\.8.e\+30 from x0 \(item 0\); distances beyond .* overflow "
                                         "float32"):
        mj.simec(f, x0, goal=x0 + 1e30, **fixed)
    with pytest.raises(ValueError, match=r"target output of shape \(3,\); f has 2 outputs"):
        mj.simexp(f, x0, target=np.ones(3, np.float32), **fixed)
    with pytest.raises(ValueError, match=r"tol=1e\+300: the tolerance must be a positive finite number within "
                                         "float32's range"):
        mj.simexp(f, x0, steps=2, key=key, step_rule="adaptive", tol=1e300)
    with pytest.raises(ValueError, match=r"Adaptive\(grow\) must lie within float32's range"):
        Adaptive(grow=1e300)
    with pytest.raises(TypeError, match="x0 must be a floating-point array of float32 or float64"):
        mj.simec(f, x0.astype(jnp.float16), steps=2, key=key)
    with pytest.raises(TypeError, match="key must be a threefry key"):
        mj.simec(f, x0, steps=2, key=jax.random.key(0, impl="rbg"))
    for fn in (mj.spectrum, mj.pullback_metric):
        with pytest.raises(TypeError, match="x must be a floating-point array"):
            fn(f, np.ones((2, 4), np.int32))
    for eta in (jnp.float32(2.0), np.float32(2.0)):
        assert ExploreConfig(algorithm="simec", eta=eta).eta == 2.0


def test_step_checks_its_inputs() -> None:
    f, x0, key = _toy()
    state = mj.init_state(x0, key, f=f)
    cfg = ExploreConfig(algorithm="simexp", step_rule="fixed")
    current = int(jnp.argmax(state.anchor))
    cases = [
        ({"state": replace_state(state, anchor=jnp.zeros(3))}, ValueError, r"state.anchor has shape \(3,\)"),
        ({"target": jnp.ones(3)}, ValueError, r"target as outputs must have shape \(2,\)"),
        ({"state": replace_state(state, x=jnp.ones((2, 4), jnp.int32))}, TypeError, "state.x must be a float32"),
        ({"target": 99}, ValueError, r"target class 99 is out of range: f has 2 outputs \(0..1\)"),
        ({"target": current}, ValueError, f"target class {current} is already the predicted class"),
        ({"bounds": (1.0, -1.0)}, ValueError, "bounds: lo exceeds hi"),
        ({"state": replace_state(state, anchor=jnp.full(2, jnp.nan))}, ValueError, "state.anchor must be finite"),
    ]
    for given, error, says in cases:
        kwargs = {"state": state, **given}
        with pytest.raises(error, match=says):
            mj.step(f, kwargs.pop("state"), cfg, **kwargs)
    nxt, _ = mj.step(f, state, cfg, target=1 - current)  # a valid call still steps
    assert int(nxt.iteration) == 1


def test_models_load_of_a_refused_pickle_gives_no_unsafe_advice(tiny_vit: str, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from manifold_jax.models import load
    from manifold_jax.models.errors import ModelError

    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_vit, pickled)
    (pickled / "model.safetensors").unlink()
    torch.save({"weight": torch.zeros(2), "payload": _Payload()}, pickled / "pytorch_model.bin")
    with pytest.raises(ModelError) as info:
        load(str(pickled))
    assert "refused: the pickle holds objects beyond tensors" in str(info.value)
    assert "weights_only" not in str(info.value)


class _Payload:
    """An object a weights-only unpickler must refuse (it would run ``print`` when loaded)."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("this must never run",))


# --------------------------------------------------------------------------- 7. report.md escapes user text


def test_report_md_escapes_user_text_and_labels(whole: Path) -> None:
    text = (whole / "report.md").read_text()
    shown = [label for label in LABELS if markdown_text(label) in text]
    assert shown, "the report names some class"
    for raw in LABELS:
        assert raw not in text
    assert "<" not in text and "](" not in text.replace("\\](", "")
    assert markdown_text("a <b>|[c](javascript:d)\n# e") == r"a &lt;b&gt;\|\[c\](javascript:d) \# e"


# --------------------------------------------------------------------------- 8. the counterfactual resumes


COUNTERFACTUAL_STUDY = ["--mnist", "0", "1000", "--steps", "10", "--select", "all", "--eta", "5", "--save-every", "2",
                        "--chunk-size", "2", "--algorithm", "simec", "--counterfactual", "--no-baseline", "--quiet",
                        "--no-report"]


def test_an_interrupted_counterfactual_is_computed_again_bit_identically(tiny_vit: str, workdir: Path) -> None:
    """The counterfactual run is one compiled call (mj.counterfactual): killed while its certificate
    is written, after its path, the resume computes it again and the study equals an uninterrupted one."""
    reference = workdir / "reference"
    main(["explore", "--model", tiny_vit, *COUNTERFACTUAL_STUDY, "--out", str(reference)])
    proc = _crash("counterfactual/certificate.json", 1, ["explore", "--model", tiny_vit, *COUNTERFACTUAL_STUDY,
                                                         "--out", "killed"])
    assert proc.returncode == KILLED, proc.stderr[-3000:]
    assert not (workdir / "killed" / "counterfactual" / "certificate.json").is_file()
    run_study(None, "killed", resume=True, progress=False, echo=lambda _: None)
    same_results(reference, workdir / "killed")
    for name in ("certificate.json", "trajectory.npz"):
        assert (reference / "counterfactual" / name).read_bytes() == (workdir / "killed" / "counterfactual" /
                                                                       name).read_bytes(), name


# --------------------------------------------------------------------------- 9. nits


def test_a_deleted_checkpoint_is_said(whole: Path, tmp_path: Path) -> None:
    out = _copy(whole, tmp_path)
    (out / "simec/trajectory.npz").unlink()
    shutil.rmtree(out / "simec/checkpoints/20")
    lines: list[str] = []
    run_study(None, out, resume=True, progress=False, echo=lines.append)
    assert ("simec: checkpoint 20 is missing, so the copy of its state saved with chunk 00000020.npz is used; "
            "continuing from iteration 20, 0 step(s) to compute") in lines, lines
    same_results(whole, out)


def test_out_flag_errors_and_help(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fails_in_one_line(["explore", "--model", "mnist-vit", "--mnist", "0", "--out", ""], capsys,
           "--out: expected a directory path, got an empty string")
    with pytest.raises(SystemExit):
        main(["explore", "--help"])
    assert "missing parent folders" in " ".join(capsys.readouterr().out.split())


# --------------------------------------------------------------------------- kill -9 at random moments


CAMPAIGN_STUDY = ["--mnist", "0", "--steps", "12", "--select", "q3", "--eta", "5", "--save-every", "2",
                  "--chunk-size", "4", "--algorithm", "simec", "--quiet", "--no-report"]
"""A small study (one digit, SiMEC and its baseline, 3 chunks): about 25 writes and checkpoints per run."""


@pytest.mark.slow
def test_kill_nine_at_random_moments_then_resume_is_bit_identical(
    tiny_vit: str, workdir: Path, full_size: bool,
) -> None:
    """A fixed seed draws 5 moments (10 with --full: the n-th file write or checkpoint of a process);
    each process dies there like kill -9 (the file torn, nothing cleaned up) and the next one resumes;
    the last resume completes the study, which equals an uninterrupted run bit for bit."""
    kills = 10 if full_size else 5
    reference = workdir / "reference"
    main(["explore", "--model", tiny_vit, *CAMPAIGN_STUDY, "--out", str(reference)])
    rng = np.random.default_rng(20261204)
    start = ["explore", "--model", tiny_vit, *CAMPAIGN_STUDY, "--out", "study"]
    resume = ["explore", "--resume", "study", "--quiet", "--no-report"]
    # the processes share compiled programs through JAX's cache on disk (what they compute is the same)
    cache = {"JAX_COMPILATION_CACHE_DIR": str(workdir / "jax-cache"), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
             "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
    killed, moments = 0, []
    for _ in range(3 * kills):
        moment = int(rng.integers(1, 6))
        proc = _crash("any", moment, start if not (workdir / "study" / "spec.json").exists() else resume, **cache)
        if proc.returncode == 0:
            break  # the study finished before this moment came
        assert proc.returncode == KILLED, proc.stderr[-3000:]
        killed += 1
        moments.append(moment)
        if killed == kills:
            break
    assert killed >= 3 * kills // 5, f"only {killed} kills landed ({moments})"
    print(f"kill -9 campaign: {killed} kills at moments {moments}")
    run_study(None, "study", resume=True, progress=False, echo=quiet)
    assert not [p for p in (workdir / "study").rglob("*") if atomic.is_temporary(p)]
    same_results(reference, workdir / "study")
