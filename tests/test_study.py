"""Studies on disk: crash safety, integrity, exact resume, loadable results, attribution, baseline.

One reference study (a tiny random HF ViT, two MNIST digits, 60 steps in chunks of 20) is
run once; every interrupted, killed or damaged copy must come back to it bit for bit.
"""

from __future__ import annotations

import errno
import glob
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from manifold_jax.attribution import select_tokens, token_importance
from manifold_jax.baseline import gradient_baseline
from manifold_jax.cli import main
from manifold_jax.report import build_report
from manifold_jax.study import (
    MnistImage,
    ResumeConflictError,
    StudyDamagedError,
    StudyExistsError,
    StudyIncompleteError,
    StudySpec,
    atomic,
    load_study,
    run_study,
)
from manifold_jax.study.manifest import Manifest
from tests.models_helpers import save_random_hf_vit
from tests.study_checks import same_results
from tests.toy_models import toy_classifier

# one process runs the module: the compiled programs and the reference study are built once
pytestmark = pytest.mark.xdist_group("study")

ROOT = Path(__file__).resolve().parents[1]
CRASH = Path(__file__).resolve().parent / "crash_run.py"
KILLED = 137
OPTIONS = {"eta": 5.0, "save_every": 5, "chunk_size": 20}
CLI_STUDY = ["--mnist", "0", "1000", "--steps", "60", "--select", "q3", "--eta", "5", "--save-every", "5",
             "--chunk-size", "20", "--quiet", "--no-report"]
"""The reference study as command-line flags (the model and --out are added)."""


def quiet(_: str) -> None:
    return None


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A random HF ViT for 28x28 grayscale images: 49 patches of 4x4 pixels embedded in 16
    dimensions (a full-rank patch embedding, so decoding is exact), one layer."""
    path = tmp_path_factory.mktemp("tiny_vit")
    save_random_hf_vit(path, image_size=28, patch_size=4, num_channels=1, hidden_size=16,
                       num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, num_labels=4)
    return str(path)


def _spec(model: str, **kw: object) -> StudySpec:
    base: dict[str, object] = dict(model=model, inputs=(MnistImage(0), MnistImage(1000)), steps=60, select="q3",
                                   options=OPTIONS)
    base.update(kw)
    return StudySpec(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def whole(tiny_vit: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference study, run uninterrupted and reported."""
    out = tmp_path_factory.mktemp("whole") / "study"
    run_study(_spec(tiny_vit), out, progress=False, echo=quiet)
    build_report(out, echo=quiet)
    return out


def _copy(whole: Path, tmp_path: Path) -> Path:
    out = tmp_path / "study"
    shutil.copytree(whole, out)
    return out


def _flip_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def _crash(what: str, count: int, argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a subprocess that dies like kill -9 at the count-th write of ``what``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(CRASH), what, str(count), "--", *argv], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == KILLED, f"expected a crash at {what} #{count}:\n{proc.stderr[-3000:]}"
    return proc


# --------------------------------------------------------------------------- what a study holds


def test_study_files_load_back_and_report(whole: Path) -> None:
    study = load_study(whole)
    b, s = 2, 60 // 5 + 1
    assert study.trajectories["simec"].x.shape == (b, s, 50, 16)
    assert study.interpretations["simexp"].inputs.shape == (b, s, 28, 28, 1)
    assert study.baselines["simec"].y.shape == (b, s, 4)
    assert study.spec.labels == tuple(f"LABEL_{i}" for i in range(4))
    # q3: the explored patches are those at or above the third quartile of importance
    imp, sel = study.inputs["importance"], study.inputs["select"]
    for item in range(b):
        cut = np.percentile(imp[item, 1:], 75)
        np.testing.assert_array_equal(sel[item, 1:], imp[item, 1:] >= cut)
        assert not sel[item, 0]
    # the box is honoured and unselected patches never move
    x = study.trajectories["simexp"].x
    assert (x >= study.inputs["lo"][None, None] - 1e-6).all() and (x <= study.inputs["hi"][None, None] + 1e-6).all()
    np.testing.assert_array_equal(x[:, :, ~sel[0]][0], np.broadcast_to(x[0, 0, ~sel[0]], x[0][:, ~sel[0]].shape))
    metrics = json.loads((whole / "metrics.json").read_text())
    assert (whole / "report.md").is_file()
    assert len(list((whole / "figures").glob("*.png"))) == 2 * b
    assert set(metrics["means"]) == {"simec", "simexp", "baseline_simec", "baseline_simexp"}
    assert "volume_ratio" in metrics["inputs"][0]["simexp"]
    # inputs keep their kind in spec.json; every file is in the manifest with its checksum
    spec = json.loads((whole / "spec.json").read_text())
    assert spec["inputs"] == [{"kind": "mnist", "index": 0}, {"kind": "mnist", "index": 1000}]
    manifest = Manifest.load(whole)
    assert {"spec.json", "inputs.npz", "simec/trajectory.npz", "simexp/chunks/00000040.npz", "report.md",
            "figures/input00_exploration.png"} <= set(manifest.files)
    assert all(manifest.check(whole / rel) == "ok" for rel in manifest.files)
    assert sorted(manifest.checkpoints["simexp"]) == ["40", "60"]
    assert not [p for p in whole.rglob("*") if atomic.is_temporary(p)]


def test_interpretation_of_the_start_reproduces_the_input(whole: Path) -> None:
    study = load_study(whole)
    raw = study.inputs["raw"]
    decoded0 = study.interpretations["simec"].inputs[:, 0]
    # the pseudo-inverse of a full-row-rank patch embedding is exact up to float32 rounding
    np.testing.assert_allclose(decoded0, raw, atol=1e-4)
    np.testing.assert_allclose(study.interpretations["simec"].logits[:, 0], study.trajectories["simec"].y[:, 0],
                               atol=1e-4)


# --------------------------------------------------------------------------- interruptions and crashes


def test_interrupted_study_resumes_to_the_uninterrupted_result(
    tiny_vit: str, whole: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ctrl-C (KeyboardInterrupt) while the second SiMExp chunk is written."""
    original = atomic.commit
    calls = {"n": 0}

    def interrupt_on_second_chunk(temporary: Path, path: Path) -> None:
        if path.parent.name == "chunks" and path.parent.parent.name == "simexp":
            calls["n"] += 1
            if calls["n"] == 2:
                raise KeyboardInterrupt
        original(temporary, path)

    monkeypatch.setattr(atomic, "commit", interrupt_on_second_chunk)
    out = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        run_study(_spec(tiny_vit), out, progress=False, echo=quiet)
    monkeypatch.setattr(atomic, "commit", original)
    assert not (out / "simexp" / "trajectory.npz").exists()
    assert not [p for p in out.rglob("*") if atomic.is_temporary(p)], "an interrupted write leaves no temporary"
    with pytest.raises(StudyExistsError, match=r"overwrite=True.*resume=True"):
        run_study(_spec(tiny_vit), out, progress=False, echo=quiet)
    run_study(None, out, resume=True, progress=False, echo=quiet)
    same_results(whole, out)


@pytest.mark.parametrize(("what", "count", "start"), [
    ("inputs.npz", 1, "explore"),
    ("simec/chunks/*", 2, "explore"),
    ("checkpoint", 2, "explore"),
    ("simec/interpretation.npz", 1, "resume"),
    ("report.md", 1, "report"),
], ids=["inputs", "chunk", "checkpoint", "interpretation", "report"])
def test_a_process_killed_at_a_write_point_resumes_bit_identically(
    what: str, count: int, start: str, tiny_vit: str, whole: Path, tmp_path: Path,
) -> None:
    """The process dies like kill -9 while it writes (the file torn, nothing cleaned up);
    a resume (or a rerun of the report) then completes to the uninterrupted result."""
    if start == "explore":
        out = tmp_path / "study"
        _crash(what, count, ["explore", "--model", tiny_vit, *CLI_STUDY, "--out", str(out)])
    else:
        out = _copy(whole, tmp_path)
        if start == "resume":
            (out / what).unlink()  # lost: the resume recomputes it and dies writing it
            _crash(what, count, ["explore", "--resume", str(out), "--quiet", "--no-report"])
        else:
            for name in ("metrics.json", "report.md"):
                (out / name).unlink()
            shutil.rmtree(out / "figures")
            _crash(what, count, ["report", str(out)])
    if what != "checkpoint":
        assert [p for p in out.rglob("*") if atomic.is_temporary(p)], "the killed write left its torn temporary"
    if start == "report":
        build_report(out, echo=quiet)
        for name in ("metrics.json", "report.md", *(f"figures/{p.name}" for p in (whole / "figures").iterdir())):
            assert (out / name).read_bytes() == (whole / name).read_bytes(), name
    else:
        with pytest.raises(StudyExistsError):
            run_study(_spec(tiny_vit), out, progress=False, echo=quiet)
        lines: list[str] = []
        run_study(None, out, resume=True, progress=False, echo=lines.append)
        if what == "checkpoint":  # the torn checkpoint was never recorded: the chunk's copy of the state serves
            assert "simec: resuming at iteration 40 of 60" in lines, lines
    assert not [p for p in out.rglob("*") if atomic.is_temporary(p)]
    same_results(whole, out)


# --------------------------------------------------------------------------- damage


def test_deleted_and_bit_flipped_files_are_detected_and_recovered(whole: Path, tmp_path: Path) -> None:
    out = _copy(whole, tmp_path)
    # simec: a chunk deleted, the trajectory bit-flipped, the inputs bit-flipped
    (out / "simec/chunks/00000040.npz").unlink()
    _flip_bit(out / "simec/trajectory.npz")
    _flip_bit(out / "inputs.npz")
    # simexp: the newest checkpoint truncated, the chunk after it and the trajectory lost,
    # a torn temporary left behind, the interpretation bit-flipped
    for data in glob.glob(str(out / "simexp/checkpoints/40/**/d/*"), recursive=True):
        Path(data).write_bytes(Path(data).read_bytes()[:10])
    (out / "simexp/chunks/00000060.npz").unlink()
    (out / "simexp/trajectory.npz").unlink()
    (out / "simexp/chunks/.00000060.tmp-0123456789ab.npz").write_bytes(b"torn")
    _flip_bit(out / "simexp/interpretation.npz")
    with pytest.raises(StudyDamagedError, match=r"inputs\.npz: the file fails its checksum"):
        load_study(out)
    lines: list[str] = []
    run_study(None, out, resume=True, progress=False, echo=lines.append)
    text = "\n".join(lines)
    assert "removed 1 leftover temporary file(s)" in text
    assert "inputs.npz: the file fails its checksum (it changed after it was written); rebuilt from spec.json" in text
    assert "simec/trajectory.npz: the file fails its checksum" in text
    assert ("simec: chunk 00000040.npz is missing; continuing from iteration 20, 40 step(s) to compute") in text
    assert ("simexp: chunk 00000060.npz is missing; checkpoint 40 is damaged, so the copy of its state saved with "
            "chunk 00000040.npz is used; continuing from iteration 40, 20 step(s) to compute") in text
    assert "simexp/interpretation.npz: the file fails its checksum" in text
    same_results(whole, out)
    assert Manifest.load(out).checkpoints["simexp"].keys() == {"40", "60"}


def test_a_flipped_checkpoint_or_chunk_and_an_unrecorded_chunk(whole: Path, tmp_path: Path) -> None:
    out = _copy(whole, tmp_path)
    # simec: the first chunk bit-flipped (everything after it is recomputed, no gap)
    _flip_bit(out / "simec/chunks/00000020.npz")
    (out / "simec/trajectory.npz").unlink()
    # simexp: checkpoint 40 bit-flipped; chunk 40 written but not recorded (a crash came first)
    for data in glob.glob(str(out / "simexp/checkpoints/40/**/d/*"), recursive=True):
        _flip_bit(Path(data))
    (out / "simexp/chunks/00000060.npz").unlink()
    (out / "simexp/trajectory.npz").unlink()
    manifest = Manifest.load(out)
    manifest.forget(out / "simexp/chunks/00000040.npz")
    with pytest.raises(StudyDamagedError, match=r"simec/trajectory\.npz: the file is missing"):
        load_study(out)
    lines: list[str] = []
    run_study(None, out, resume=True, progress=False, echo=lines.append)
    assert "simec: chunk 00000020.npz fails its checksum; continuing from iteration 0, 60 step(s) to compute" in lines
    assert any(line.startswith("simexp: ") and "checkpoint 40 is damaged" in line for line in lines), lines
    same_results(whole, out)


def test_a_damaged_study_is_refused_by_report_in_one_line(
    whole: Path, workdir: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    out = _copy(whole, workdir)
    _flip_bit(out / "simexp/baseline.npz")
    with pytest.raises(SystemExit) as exit_info:
        main(["report", "study"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"manifold-jax report: error: {out}/simexp/baseline.npz: the file fails its checksum (it changed "
                   f"after it was written); rebuild it with: manifold-jax explore --resume study"), err


def test_a_study_moved_elsewhere_reports_and_resumes_with_relative_paths(
    whole: Path, workdir: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """A finished study copied to another folder is reported and continued there, named relatively from
    the working directory: nothing in it depends on where it was written."""
    moved = workdir / "elsewhere" / "study"
    shutil.copytree(whole, moved)
    main(["report", "elsewhere/study", "--no-figures"])
    assert f"report: {moved}/report.md" in capsys.readouterr().out
    main(["explore", "--resume", "elsewhere/study", "--steps", "65", "--quiet", "--no-report"])
    continued = load_study(moved)
    assert continued.spec.steps == 65 and continued.unfinished == {}
    original = load_study(whole)
    for algorithm in original.spec.runs:
        before, after = original.trajectories[algorithm], continued.trajectories[algorithm]
        assert after.iteration[-1] == 65
        np.testing.assert_array_equal(after.x[:, : before.x.shape[1]], before.x, err_msg=algorithm)
    assert (whole / "spec.json").read_text() != (moved / "spec.json").read_text(), "the copy changed, not the original"


# --------------------------------------------------------------------------- unfinished, continued, failed studies


def test_report_names_the_unfinished_run(whole: Path, workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = _copy(whole, workdir)
    for name in ("simexp/trajectory.npz", "simexp/chunks/00000060.npz"):
        (out / name).unlink()
        Manifest.load(out).forget(out / name)
    with pytest.raises(StudyIncompleteError, match=r"simexp \(40 of 60 steps\)"):
        build_report(out, echo=quiet)
    with pytest.raises(SystemExit) as exit_info:
        main(["report", "study", "--no-figures"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"manifold-jax report: error: {out}: unfinished: simexp (40 of 60 steps); finish it with: "
                   "manifold-jax explore --resume study, or report what is done with --partial"), err
    main(["report", "study", "--no-figures", "--partial"])
    assert "report: unfinished, left out: simexp (40 of 60 steps)" in capsys.readouterr().out
    report = (out / "report.md").read_text()
    assert "Unfinished and left out of this report: simexp (40 of 60 steps)." in report
    assert set(json.loads((out / "metrics.json").read_text())["means"]) == {"simec", "baseline_simec"}


def test_a_resume_continues_the_study_to_more_steps(tiny_vit: str, whole: Path, tmp_path: Path) -> None:
    """A 40-step study continued to 60 steps equals the 60-step study; nothing else may change."""
    out = tmp_path / "study"
    short = _spec(tiny_vit, steps=40)
    run_study(short, out, progress=False, echo=quiet)
    build_report(out, echo=quiet)
    with pytest.raises(ResumeConflictError, match=r"options"):
        run_study(_spec(tiny_vit, steps=60, options={**OPTIONS, "eta": 4.0}), out, resume=True, echo=quiet)
    with pytest.raises(ResumeConflictError, match=r"steps \(the study has 40"):
        run_study(_spec(tiny_vit, steps=20), out, resume=True, echo=quiet)
    lines: list[str] = []
    run_study(_spec(tiny_vit, steps=60), out, resume=True, progress=False, echo=lines.append)
    assert "continuing the study from 40 to 60 steps" in lines
    assert "simec: resuming at iteration 40 of 60" in lines
    assert not (out / "report.md").exists(), "the 40-step report is stale and removed"
    assert load_study(out).spec.steps == 60
    same_results(whole, out)


def test_a_failed_start_leaves_nothing_behind(tiny_vit: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Everything is validated before the first write; a write that fails removes what the run created."""
    out = tmp_path / "new"
    with pytest.raises(ValueError, match="position 50 is out of range"):
        run_study(_spec(tiny_vit, select=(3, 50)), out, progress=False, echo=quiet)
    assert not out.exists()
    existing = tmp_path / "empty"
    existing.mkdir()
    with pytest.raises(ValueError, match="position 0 is not an explorable token"):
        run_study(_spec(tiny_vit, select=(0, 3)), existing, progress=False, echo=quiet)
    assert list(existing.iterdir()) == []

    def disk_full(temporary: Path, path: Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(atomic, "commit", disk_full)
    with pytest.raises(OSError, match="No space left"):
        run_study(_spec(tiny_vit, steps=10, options={"save_every": 5}), out, progress=False, echo=quiet)
    assert not out.exists()
    with pytest.raises(OSError, match="No space left"):
        run_study(_spec(tiny_vit, steps=10, options={"save_every": 5}), existing, progress=False, echo=quiet)
    assert list(existing.iterdir()) == []


# --------------------------------------------------------------------------- attribution and baseline


def test_token_importance_is_the_largest_metric_eigenvalue() -> None:
    f, x0 = toy_classifier(jax.random.PRNGKey(0), n=5, d=8, k=3)
    mask = jnp.ones((5,), bool)
    imp = token_importance(f, x0[None], (mask[None],))
    jac = np.asarray(jax.jacrev(f)(x0, mask), np.float64)
    ref = [np.linalg.eigvalsh(jac[:, i].T @ jac[:, i]).max() for i in range(5)]
    np.testing.assert_allclose(imp[0], ref, rtol=1e-4)


def test_named_selections() -> None:
    imp = np.array([[9.0, 1.0, 2.0, 3.0, 4.0, 5.0]])
    mask = np.array([[False, True, True, True, True, True]])
    assert select_tokens(imp, mask, "one").tolist() == [[False, False, False, False, False, True]]
    assert select_tokens(imp, mask, "q2").tolist() == [[False, False, False, True, True, True]]
    assert select_tokens(imp, mask, "all").tolist() == mask.tolist()
    assert select_tokens(imp, mask, [2, 4]).tolist() == [[False, False, True, False, True, False]]
    with pytest.raises(ValueError, match="position 0 is not an explorable token"):
        select_tokens(imp, mask, [0])
    with pytest.raises(ValueError, match="position 9 is out of range"):
        select_tokens(imp, mask, [9])


def test_gradient_baseline_climbs_or_descends_the_original_class() -> None:
    f, x0 = toy_classifier(jax.random.PRNGKey(7))
    mask = jnp.ones((8,), bool)
    runs_ = {
        d: gradient_baseline(f, x0, key=jax.random.PRNGKey(0), steps=100, step_size=0.05, direction=d,
                             args=(mask,), select=np.arange(1, 8), save_every=10)
        for d in ("stay", "leave")
    }
    c = int(np.argmax(runs_["stay"].y[0]))
    p = {d: np.asarray(jax.nn.softmax(t.y))[:, c] for d, t in runs_.items()}
    assert p["stay"][-1] > p["stay"][0] and p["leave"][-1] < p["leave"][0]
    # each token moves by delta along the unit gradient plus delta of orthogonal noise: sqrt(2) delta
    moved = np.linalg.norm(runs_["stay"].x[1, 1:] - runs_["stay"].x[0, 1:], axis=-1)
    assert np.all(moved <= 10 * np.sqrt(2) * 0.05 + 1e-5)
    np.testing.assert_array_equal(runs_["stay"].x[:, 0], np.broadcast_to(np.asarray(x0[0]), (11, 16)))


def test_the_gradient_baseline_in_chunks_equals_one_chunk(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """The baseline runs in compiled chunks (for its progress bar): the walk, its records and its end
    state equal a run in one chunk; the bar is named."""
    import manifold_jax.baseline as baseline

    f, x0 = toy_classifier(jax.random.PRNGKey(7))
    kw: dict[str, Any] = dict(key=jax.random.PRNGKey(0), steps=60, step_size=0.05, direction="leave",
                              args=(jnp.ones((8,), bool),), select=np.arange(1, 8), save_every=3)
    monkeypatch.setattr(baseline, "_CHUNK_BLOCKS", 6)
    chunked = gradient_baseline(f, x0, progress=True, label="simexp baseline", **kw)  # 20 blocks in chunks of 5
    assert "simexp baseline" in capsys.readouterr().err
    monkeypatch.setattr(baseline, "_CHUNK_BLOCKS", 1000)
    whole = gradient_baseline(f, x0, **kw)
    for name in ("x", "y", "step", "status", "stalls", "distance", "iteration"):
        np.testing.assert_array_equal(getattr(chunked, name), getattr(whole, name), err_msg=name)
    np.testing.assert_array_equal(chunked.final.x, whole.final.x)
    np.testing.assert_array_equal(chunked.final.key, whole.final.key)



def test_a_study_with_a_corrected_simec_and_a_counterfactual(
    tiny_vit: str, workdir: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """The continuation options from the command line: SiMEC with the corrector keeps its logits
    to the tolerance; the counterfactual run takes each digit to the closest point of its runner-up
    class it finds (mj.counterfactual); the run prints where the class changed, its timing counts the
    iterations it ran, the report says where and gives the certificate, and a resume of the finished
    study recomputes nothing."""
    out = workdir / "study"
    # every patch explored: this random one-layer ViT cannot move a digit's runner-up class far
    # enough with the top quarter alone
    flags = ["--algorithm", "simec", "--corrector", "newton", "--tol", "1e-3", "--counterfactual", "--select", "all",
             "--no-baseline", "--out", "study"]
    main(["explore", "--model", tiny_vit, *CLI_STUDY, *flags])
    printed = capsys.readouterr().out
    build_report(out, echo=quiet)
    study = load_study(out)
    assert set(study.trajectories) == {"simec", "counterfactual"}
    cf, simec = study.trajectories["counterfactual"], study.trajectories["simec"]
    targets = study.inputs["target"]
    y0 = simec.y[:, 0]
    np.testing.assert_array_equal(targets, np.argsort(-y0, axis=1)[:, 1])  # the runner-up class
    stops = np.asarray(cf.final.stop_iteration)
    assert (stops > 0).all() and cf.iteration[-1] >= stops.max()
    certificate = json.loads((out / "counterfactual" / "certificate.json").read_text())
    for b, stop in enumerate(stops):
        assert cf.y[b, stop].argmax() == targets[b] and cf.y[b, stop - 1].argmax() != targets[b]
        assert cf.y[b, -1].argmax() == targets[b] and certificate["reached"][b]
        # the path ends at the closest point it found: never farther than where the class changed
        assert certificate["distance"][b] == pytest.approx(float(cf.distance[b, -1]), rel=1e-5)
        assert cf.distance[b, -1] <= cf.distance[b, stop] * (1 + 1e-6)
    # 1e-3 bounds the corrector's own evaluation; the record is the Jacobian program's, which
    # differs by float32 rounding of logits ~1 (~1e-6)
    assert simec.drift.max() <= 1e-3 + 1e-5 and simec.distance[:, -1].min() > 0
    metrics = json.loads((out / "metrics.json").read_text())
    for b, entry in enumerate(metrics["inputs"]):
        path = entry["counterfactual"]["path"]
        assert path["reached_target"] and path["stop_iteration"] == stops[b]
        assert path["stop_distance_from_x0"] == pytest.approx(float(cf.distance[b, stops[b]]), rel=1e-6)
        assert path["certificate"]["kkt"] == certificate["kkt"][b]
    assert "stopped at iteration" in (out / "report.md").read_text()
    assert "closest counterfactual: L2" in (out / "report.md").read_text()
    for b, stop in enumerate(stops):
        label = study.spec.labels[targets[b]]
        assert re.search(rf"counterfactual: input {b} reached class ({targets[b]}|{label}) at iteration {stop}\n",
                         printed), printed
    # one compiled call that ran to the batch's last iteration, not the study's 60 steps
    timing = json.loads((out / "counterfactual" / "timing.json").read_text())
    assert timing["iterations"] == cf.iteration[-1] < 60 and timing["compile_included"] is True
    assert timing["seconds_per_iteration"] == pytest.approx(timing["seconds"] / timing["iterations"])
    for entry in metrics["inputs"]:
        assert entry["counterfactual"]["timing"]["iterations"] == cf.iteration[-1]
        assert entry["counterfactual"]["timing"]["total_seconds"] == pytest.approx(timing["seconds"])
    before = (out / "counterfactual" / "trajectory.npz").read_bytes()
    run_study(None, out, resume=True, progress=False, echo=quiet)
    assert (out / "counterfactual" / "trajectory.npz").read_bytes() == before


def test_a_run_saving_apart_from_the_study_keeps_its_baseline_at_its_own_points(
    tiny_vit: str, tmp_path: Path,
) -> None:
    """A run whose options save every 5 steps in a study that saves every 10: its trajectory and its
    baseline keep the run's points (0, 5, 10), the study loads, and a resume recomputes nothing (the
    baseline was saved with the study-wide saving, which did not fit the run's)."""
    out = tmp_path / "study"
    spec = StudySpec(model=tiny_vit, inputs=(MnistImage(0),), steps=10, select="q3", runs=("simexp",),
                     options={"eta": 5.0, "chunk_size": 10}, run_options={"simexp": {"save_every": 5}})
    run_study(spec, out, progress=False, echo=quiet)
    study = load_study(out)
    np.testing.assert_array_equal(study.trajectories["simexp"].iteration, [0, 5, 10])
    np.testing.assert_array_equal(study.baselines["simexp"].iteration, [0, 5, 10])
    before = (out / "simexp" / "baseline.npz").read_bytes()
    lines: list[str] = []
    run_study(None, out, resume=True, progress=False, echo=lines.append)
    assert (out / "simexp" / "baseline.npz").read_bytes() == before
    assert not any("baseline" in line for line in lines), lines
